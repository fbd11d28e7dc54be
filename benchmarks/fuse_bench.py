"""FUSE benchmark (issue 4): our mount against squashfuse_ll over a squashfs image of the same tree and against
the native directory, all measured in one run.

Corpora: a Python installation (``--tree``) and one 1 GiB file. Our repositories are served by nginx on loopback.
(a) warm metadata walk: ``lstat`` of every entry, after one warm-up walk;
(b) reading every file once on a fresh mount (our local cache warm);
(c) start-up of the published Python interpreter importing a dozen standard modules, cold (empty cache, HTTP from
    nginx) and warm (fresh mount, warm cache);
(d) sequential read of the 1 GiB file on a fresh mount (our local cache warm).

    .venv/bin/python benchmarks/fuse_bench.py --tree /path/to/python/installation
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cvmfs_pilot.publish.chunking import ChunkSizes  # noqa: E402
from support.client_env import write_config  # noqa: E402
from support.nginx import nginx_serving  # noqa: E402
from support.repo import make_keys, publish_tree  # noqa: E402

PY_FQRN, BIG_FQRN = "py.bench.org", "big.bench.org"
IMPORTS = "import json, re, decimal, fractions, email.parser, http.client, sqlite3, xml.dom.minidom, " \
          "argparse, logging, asyncio, unittest"
BLOCK = 1024 * 1024


def run(command, **kwargs):
    return subprocess.run(command, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, **kwargs)


class OurMount:
    def __init__(self, fqrn, config, mountpoint):
        self.args = (fqrn, str(config), str(mountpoint))

    def __enter__(self):
        fqrn, config, mountpoint = self.args
        os.makedirs(mountpoint, exist_ok=True)
        run([sys.executable, "-m", "cvmfs_pilot", "fs", "mount", "--config-dir", config, fqrn, mountpoint])
        return Path(mountpoint)

    def __exit__(self, *exc):
        run([sys.executable, "-m", "cvmfs_pilot", "fs", "umount", self.args[2]])


class SquashMount:
    def __init__(self, image, mountpoint):
        self.image, self.mountpoint = str(image), str(mountpoint)

    def __enter__(self):
        os.makedirs(self.mountpoint, exist_ok=True)
        run(["squashfuse_ll", self.image, self.mountpoint])
        return Path(self.mountpoint)

    def __exit__(self, *exc):
        run(["fusermount3", "-u", self.mountpoint])


def walk(root):
    count = 0
    for dirpath, dirnames, filenames in os.walk(str(root)):
        for name in dirnames + filenames:
            os.lstat(os.path.join(dirpath, name))
            count += 1
    return count


def read_all(root):
    total = 0
    for dirpath, _, filenames in os.walk(str(root)):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb", buffering=0) as f:
                while True:
                    data = f.read(BLOCK)
                    total += len(data)
                    if len(data) < BLOCK:
                        break
    return total


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def python_start(root, python_relative):
    return timed(run, [str(root / python_relative), "-S", "-c", IMPORTS])[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", required=True, help="a Python installation (prefix with bin/python3.X)")
    parser.add_argument("--big-mb", type=int, default=1024)
    args = parser.parse_args()
    tree = Path(args.tree).resolve()
    pythons = sorted(p.name for p in (tree / "bin").glob("python3.*") if not p.name.endswith("-config"))
    python_relative = Path("bin") / pythons[0]
    work = Path(tempfile.mkdtemp(prefix="fuse-bench-"))
    results = {}
    try:
        big_dir = work / "big-src"
        big_dir.mkdir()
        with open(big_dir / "big.bin", "wb") as f:
            for i in range(args.big_mb):
                f.write(os.urandom(BLOCK) if i % 2 else (b"%08d " % i) * (BLOCK // 9) + b"\n" * (BLOCK % 9))
        for fqrn, source in ((PY_FQRN, tree), (BIG_FQRN, big_dir)):
            keys = make_keys(work / ("keys-" + fqrn), fqrn)
            publish_tree(source, work / "srv" / fqrn, fqrn, keys, chunk_sizes=ChunkSizes(), workers=os.cpu_count())
            run(["mksquashfs", str(source), str(work / (fqrn + ".sqfs")), "-no-progress", "-quiet"])
        with nginx_serving(work / "srv", work / "nginx") as base:
            configs = {}
            for fqrn in (PY_FQRN, BIG_FQRN):
                configs[fqrn] = write_config(work / ("etc-" + fqrn), fqrn, base + "/@fqrn@",
                                             work / ("keys-" + fqrn) / (fqrn + ".pub"), work / "cache",
                                             extra={"CVMFS_QUOTA_LIMIT": "-1"})
            ours = lambda fqrn: OurMount(fqrn, configs[fqrn], work / "mnt-ours")  # noqa: E731
            squash = lambda fqrn: SquashMount(work / (fqrn + ".sqfs"), work / "mnt-squash")  # noqa: E731

            # (c) cold start first, while our cache is empty
            with ours(PY_FQRN) as root:
                results["c_cold_ours"] = python_start(root, python_relative)
            with ours(PY_FQRN) as root:
                results["c_warm_ours"] = python_start(root, python_relative)
            with squash(PY_FQRN) as root:
                python_start(root, python_relative)
            with squash(PY_FQRN) as root:
                results["c_squash"] = python_start(root, python_relative)
            results["c_native"] = python_start(tree, python_relative)

            # (a) warm metadata walk
            for name, mount in (("ours", ours(PY_FQRN)), ("squash", squash(PY_FQRN))):
                with mount as root:
                    walk(root)
                    results["a_" + name], results["entries"] = timed(walk, root)
            walk(tree)
            results["a_native"] = timed(walk, tree)[0]

            # (b) every file once on a fresh mount, local cache warm (fill it first)
            for name, mount_of in (("ours", ours), ("squash", squash)):
                with mount_of(PY_FQRN) as root:
                    read_all(root)
                with mount_of(PY_FQRN) as root:
                    results["b_" + name], results["bytes"] = timed(read_all, root)
            results["b_native"] = timed(read_all, tree)[0]

            # (d) the 1 GiB file, sequentially, fresh mount, local cache warm
            for name, mount_of in (("ours", ours), ("squash", squash)):
                with mount_of(BIG_FQRN) as root:
                    read_all(root)
                with mount_of(BIG_FQRN) as root:
                    results["d_" + name] = timed(read_all, root)[0]
    finally:
        for mountpoint in (work / "mnt-ours", work / "mnt-squash"):
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], stderr=subprocess.DEVNULL)
        shutil.rmtree(str(work), ignore_errors=True)

    r = results
    big_mb = args.big_mb * BLOCK / 1e6
    print("tree {} ({} entries, {:.0f} MB in files); big file {:.0f} MB".format(tree, r["entries"], r["bytes"] / 1e6,
                                                                              big_mb))
    print("(a) warm metadata walk: ours {:.2f} s, squashfuse_ll {:.2f} s, native {:.2f} s; ours/squashfuse_ll "
          "{:.2f} (target <= 1.2)".format(r["a_ours"], r["a_squash"], r["a_native"], r["a_ours"] / r["a_squash"]))
    print("(b) read every file, fresh mount, warm cache: ours {:.2f} s, squashfuse_ll {:.2f} s, native {:.2f} s; "
          "ours/squashfuse_ll {:.2f} (target <= 1.5)".format(r["b_ours"], r["b_squash"], r["b_native"],
                                                             r["b_ours"] / r["b_squash"]))
    print("(c) python start-up + 12 imports: ours cold {:.2f} s, ours warm {:.2f} s, squashfuse_ll {:.2f} s, "
          "native {:.2f} s".format(r["c_cold_ours"], r["c_warm_ours"], r["c_squash"], r["c_native"]))
    print("(d) 1 GiB sequential read, fresh mount, warm cache: ours {:.0f} MB/s, squashfuse_ll {:.0f} MB/s; "
          "ratio {:.2f} (target >= 0.8)".format(big_mb / r["d_ours"], big_mb / r["d_squash"],
                                               r["d_squash"] / r["d_ours"]))


if __name__ == "__main__":
    main()
