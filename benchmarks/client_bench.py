"""Client benchmark (issue 3): exporting a repository of a Python installation, served by nginx on loopback.

(a) cold export (`fs get` with an empty cache) against a plain concurrent HTTP download of the same objects into
    local files, as any download tool saves them (same number of threads, keep-alive, no verification, no
    decompression, no cache): the ratio of their throughputs;
(b) warm export (everything cached) against copying the source tree natively (`shutil.copytree`).
Both measured in the same run, on a fresh file system (see scratch.py) unless ``--scratch`` names a directory.

    .venv/bin/python benchmarks/client_bench.py --tree DIR [--threads 8] [--scratch DIR]
"""

import argparse
import concurrent.futures
import http.client
import os
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cvmfs_pilot.client import export as export_module  # noqa: E402
from cvmfs_pilot.client.session import open_repository  # noqa: E402
from cvmfs_pilot.publish.chunking import ChunkSizes  # noqa: E402
from support.client_env import write_config  # noqa: E402
from support.nginx import nginx_serving  # noqa: E402
from support.repo import make_keys, publish_tree  # noqa: E402

from scratch import scratch_directory  # noqa: E402

FQRN = "bench-client.cvmfs-pilot.org"


def plain_download(base_url, relative_paths, threads, target):
    """GET every object with ``threads`` keep-alive connections and save it under ``target``; returns
    (seconds, bytes)."""
    host_port = base_url.split("//", 1)[1].split("/", 1)[0]
    prefix = "/" + base_url.split("//", 1)[1].split("/", 1)[1]
    local = threading.local()
    total = [0]
    lock = threading.Lock()

    def get(path):
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection(host_port, timeout=30)
        connection.request("GET", prefix + "/" + path)
        response = connection.getresponse()
        data = response.read()
        with open(os.path.join(target, path.replace("/", "_")), "wb") as f:
            f.write(data)
        size = len(data)
        with lock:
            total[0] += size

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(get, relative_paths))
    return time.perf_counter() - start, total[0]


def data_objects(storage):
    result = []
    for dirpath, _, filenames in os.walk(os.path.join(storage, "data")):
        if not dirpath.endswith("txn"):
            result += [os.path.relpath(os.path.join(dirpath, n), storage) for n in filenames]
    return result


def export_once(config, target):
    start = time.perf_counter()
    with open_repository(FQRN, str(config), {}, environ={}) as repository:
        report = export_module.export(repository, "/", str(target))
    return time.perf_counter() - start, report


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", required=True, help="the directory tree to publish (a Python installation)")
    parser.add_argument("--threads", type=int, default=export_module.WORKERS)
    parser.add_argument("--scratch", metavar="DIR",
                        help="work in a temporary directory under DIR instead of on a fresh file system")
    args = parser.parse_args()
    export_module.WORKERS = args.threads
    with scratch_directory("client-bench-", args.scratch) as scratch:
        work = Path(scratch)
        keys = make_keys(work / "keys", FQRN)
        storage = work / "srv" / FQRN
        publish_tree(args.tree, storage, FQRN, keys, chunk_sizes=ChunkSizes(), workers=os.cpu_count())
        with nginx_serving(work / "srv", work / "nginx") as base:
            config = write_config(work / "etc", FQRN, base + "/@fqrn@", keys / (FQRN + ".pub"), work / "cache",
                                  extra={"CVMFS_QUOTA_LIMIT": "-1"})
            objects = data_objects(str(storage))
            for name in ("plain-warmup", "plain"):
                os.mkdir(str(work / name))
            plain_download(base + "/" + FQRN, objects, args.threads, str(work / "plain-warmup"))  # warm nginx
            os.sync()  # no dirty pages of earlier steps to write back while measuring
            plain_s, plain_bytes = plain_download(base + "/" + FQRN, objects, args.threads, str(work / "plain"))
            os.sync()
            cold_s, report = export_once(config, work / "cold")
            os.sync()
            warm_s, _ = export_once(config, work / "warm")
        os.sync()
        start = time.perf_counter()
        shutil.copytree(args.tree, str(work / "native"), symlinks=True)
        native_s = time.perf_counter() - start
    print("tree: {} ({} files, {:.1f} MB); {} threads".format(args.tree, report.files, report.bytes / 1e6,
                                                              args.threads))
    print("plain concurrent HTTP download of {} objects into files ({:.1f} MB stored): {:.2f} s, {:.1f} MB/s".format(
        len(objects), plain_bytes / 1e6, plain_s, plain_bytes / 1e6 / plain_s))
    print("(a) cold fs get: {:.2f} s, {:.1f} MB/s of stored objects; throughput ratio to plain HTTP: {:.2f} "
          "(target >= 0.8)".format(cold_s, plain_bytes / 1e6 / cold_s, plain_s / cold_s))
    print("(b) warm fs get: {:.2f} s; native copy: {:.2f} s; ratio: {:.2f} (target <= 1.5)".format(
        warm_s, native_s, warm_s / native_s))


if __name__ == "__main__":
    main()
