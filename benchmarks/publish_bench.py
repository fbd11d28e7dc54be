"""Publish benchmark (issue 2): throughput of `repo publish` against the bare cost of compressing and hashing the
same bytes with the same number of worker processes, measured in the same run.

Corpora: a Python installation (tens of thousands of real files; default: this interpreter's ``sys.base_prefix``
unless that is a shared prefix such as /usr, then pass ``--tree``) and a generated tree of a few large files.
Prints files/s, MB/s, the ratio to the baseline, the re-publish time of an unchanged tree relative to the first
publish, and the publisher's peak memory on the full tree and on a tenth of it.

The repositories are written on a fresh file system (see scratch.py) unless ``--scratch`` names a directory.

    .venv/bin/python benchmarks/publish_bench.py [--tree DIR] [--big-mb 300] [--workers N] [--scratch DIR]
"""

import argparse
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import time
import zlib

from scratch import scratch_directory

FQRN = "bench.cvmfs-pilot.org"
PIECE = 8 * 1024 * 1024  # the baseline compresses large files in pieces of the average chunk size


def list_files(tree):
    files = []
    for dirpath, _, filenames in os.walk(tree):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                files.append(path)
    return files


def _compress_and_hash(paths):
    total = 0
    for path in paths:
        with open(path, "rb") as f:
            while True:
                data = f.read(PIECE)
                hashlib.sha1(zlib.compress(data, 6)).digest()
                total += len(data)
                if len(data) < PIECE:
                    break
    return total


def baseline(files, workers):
    """Read, compress and hash every file with a process pool of ``workers``, in batches as the publisher does."""
    batches, batch, size = [], [], 0
    for path in files:
        batch.append(path)
        size += os.path.getsize(path)
        if len(batch) >= 64 or size >= 32 * 1024 * 1024:
            batches.append(batch)
            batch, size = [], 0
    if batch:
        batches.append(batch)
    context = multiprocessing.get_context("fork")
    os.sync()  # no dirty pages of earlier steps to flush while measuring
    start = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        total = sum(pool.map(_compress_and_hash, batches))
    return time.perf_counter() - start, total


def publish(tree, storage, keys, workers):
    """One `repo publish` in a fresh process; returns (seconds, peak RSS of the publisher's main process in MB)."""
    code = ("import resource, sys\n"
            "from cvmfs_pilot.cli import main\n"
            "rc = main(sys.argv[1:])\n"
            "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(rc)\n")
    os.sync()  # no dirty pages of earlier steps to flush while measuring
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, "repo", "publish", tree, storage, "--name", FQRN,
                             "--keys", keys, "--workers", str(workers)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit("publish failed: " + result.stderr)
    rss = [int(line.split()[1]) for line in result.stderr.splitlines() if line.startswith("MAXRSS")][0]
    return seconds, rss / 1024


def generate_big_tree(directory, count, megabytes):
    """Large files of mixed content: half random, half compressible text-like blocks."""
    os.makedirs(directory)
    rng = random.Random(7)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(500)]
    for i in range(count):
        with open(os.path.join(directory, "big{}.bin".format(i)), "wb") as f:
            for _ in range(megabytes):
                if rng.random() < 0.5:
                    f.write(os.urandom(1024 * 1024))
                else:
                    block = b" ".join(rng.choice(words) for _ in range(200_000))
                    f.write(block[:1024 * 1024].ljust(1024 * 1024, b"\n"))


def measure(name, tree, workdir, keys, workers):
    files = list_files(tree)
    baseline(files, workers)  # warm the page cache for both sides
    base_seconds, total = baseline(files, workers)
    storage = os.path.join(workdir, "storage-" + name)
    first, rss = publish(tree, storage, keys, workers)
    again, _ = publish(tree, storage, keys, workers)
    shutil.rmtree(storage)
    return dict(corpus=name, tree=tree, files=len(files), megabytes=round(total / 1e6, 1), workers=workers,
                baseline_s=round(base_seconds, 2), publish_s=round(first, 2),
                files_per_s=round(len(files) / first), mb_per_s=round(total / 1e6 / first, 1),
                ratio_to_baseline=round(first / base_seconds, 2), republish_s=round(again, 2),
                republish_fraction=round(again / first, 3), peak_rss_mb=round(rss, 1))


def tenth_of(tree):
    """The subdirectory of ``tree`` whose file count is closest to a tenth of the whole (for the memory check)."""
    counts = {}
    for dirpath, _, filenames in os.walk(tree, topdown=False):
        counts[dirpath] = counts.get(dirpath, 0) + len(filenames)
        if dirpath != tree:
            parent = os.path.dirname(dirpath)
            counts[parent] = counts.get(parent, 0) + counts[dirpath]
    target = counts[tree] / 10
    return min((d for d in counts if d != tree), key=lambda d: abs(counts[d] - target))


def default_tree():
    prefix = os.path.realpath(sys.base_prefix)
    if prefix in ("/usr", "/usr/local", "/"):
        sys.exit("sys.base_prefix is {}, a shared prefix; pass --tree with a Python installation (for example "
                 "a pyenv version directory)".format(prefix))
    return prefix


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", help="the Python installation to publish (default: sys.base_prefix)")
    parser.add_argument("--big-files", type=int, default=3)
    parser.add_argument("--big-mb", type=int, default=300)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--scratch", metavar="DIR",
                        help="write in a temporary directory under DIR instead of on a fresh file system")
    args = parser.parse_args()
    tree = os.path.realpath(args.tree or default_tree())
    with scratch_directory("publish-bench-", args.scratch) as workdir:
        keys = os.path.join(workdir, "keys")
        subprocess.run([sys.executable, "-m", "cvmfs_pilot", "repo", "keys", FQRN, "--out", keys], check=True,
                       stdout=subprocess.DEVNULL)
        results = [measure("python-installation", tree, workdir, keys, args.workers)]
        small = tenth_of(tree)
        results.append(measure("tenth-of-installation", small, workdir, keys, args.workers))
        big = os.path.join(workdir, "big")
        generate_big_tree(big, args.big_files, args.big_mb)
        results.append(measure("large-files", big, workdir, keys, args.workers))
    header = ("corpus", "files", "megabytes", "workers", "baseline_s", "publish_s", "files_per_s", "mb_per_s",
              "ratio_to_baseline", "republish_fraction", "peak_rss_mb")
    print(" | ".join(header))
    for r in results:
        print(" | ".join(str(r[h]) for h in header))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
