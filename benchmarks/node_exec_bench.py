"""node exec benchmark (issue 6): how long ``cvmfs-pilot node exec`` takes to start a job, and what the user
namespace costs the job's file accesses, against baselines measured in the same run.

Three repositories are published and served by nginx on loopback (as tests/support/exec_env.py makes them):
``config.exec.test`` (the config repository, which ``node exec`` always mounts first), ``one.exec.test`` (a tree
of ``--files`` small files) and ``two.exec.test`` (configured only by a file inside the config repository). The
staging area is the contract one of tests/support/contract_dist.py, built by the real builder and served by the
same nginx. Everything node-side runs as the unprivileged test user (``cvmfspilot`` when run as root).

(1) warm start: from just before spawning ``node exec --repos one,two`` (mode chosen by the probe, python engine)
    to the job writing its timestamp (``date +%s.%N``), client cache warm; without a distribution (this
    installation's engine), with ``--staging`` and the python engine distribution already in the cache, with
    each mode forced, and run from a copy of the package compiled beforehand (the unprivileged user cannot write
    .pyc files beside these sources, and a zipapp holds none: every Python process of the pilot otherwise
    compiles what it imports). Baselines: the same job as a plain subprocess; ``fs mount`` of one and two alone
    (fusermount3).
(2) cold start: empty client cache (new CVMFS_CACHE_BASE) and empty distribution cache, the python engine
    distribution downloaded from nginx (``--staging http://127.0.0.1:PORT/... --index-sha256 HEX``).
(3) per-operation cost in a warm mount: ``os.stat``, and ``os.open`` + ``os.read`` + ``os.close``, over the
    files of one.exec.test, inside ``node exec --mode userns`` against the same repository mounted by
    ``fs mount`` outside any namespace, and the same tree on local disk.

A breakdown of the warm start follows (each part measured on its own): the interpreter with node exec's imports,
a server's imports with and without .pyc files, the probe, one ``fs mount``; with ``--trace``, the timeline of one
warm start from strace (every process start, mount and unmount).

    .venv/bin/python benchmarks/node_exec_bench.py [--runs 10] [--cold-runs 5] [--ops 10000] [--trace]
"""

import argparse
import compileall
import json
import os
import pwd
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.contract_dist import build_contract_staging, make_world_readable  # noqa: E402
from support.exec_env import CONFIG_REPO, ONE, REPOSITORIES, TWO, ExecEnv, publish_config_repository  # noqa: E402
from support.fuse_env import leftovers_removed  # noqa: E402
from support.nginx import nginx_serving  # noqa: E402
from support.repo import make_keys, publish_tree  # noqa: E402
from support.unprivileged import TEST_USER, Unprivileged  # noqa: E402

PYTHON = sys.executable
CLI = [PYTHON, "-m", "cvmfs_pilot"]
JOB = ["date", "+%s.%N"]
BOOT = "import sys; sys.path.insert(0, sys.argv.pop(1)); from cvmfs_pilot.cli import main; sys.exit(main())"
PACKAGE = Path(__file__).resolve().parent.parent / "src" / "cvmfs_pilot"
WARM_TARGET, COLD_TARGET = 0.5, 2.0
ROUNDS = 3  # of (3)

# Run by the unprivileged user, outside and inside node exec: per-operation times over a tree, after a warm-up.
LOOP = r"""
import json, os, sys, time
root, ops = sys.argv[1], int(sys.argv[2])
REPEAT = 5
files = sorted(os.path.join(d, n) for d, _, names in os.walk(root) for n in names)  # regular files only


def read(path):
    fd = os.open(path, os.O_RDONLY)
    os.read(fd, 1 << 16)
    os.close(fd)


started = time.perf_counter()
for path in files:  # first stat on this mount; the listing's READDIRPLUS has already given the attributes
    os.stat(path)
first_stat_s = time.perf_counter() - started
started = time.perf_counter()
for path in files:  # first open and read: the server answers OPEN and READ
    read(path)
first_open_s = time.perf_counter() - started
paths = [files[i % len(files)] for i in range(ops)]
stat_s = open_s = float("inf")
for _ in range(REPEAT):  # the best of REPEAT, against other load on the machine
    started = time.perf_counter()
    for path in paths:
        os.stat(path)
    stat_s = min(stat_s, time.perf_counter() - started)
    started = time.perf_counter()
    for path in paths:
        read(path)
    open_s = min(open_s, time.perf_counter() - started)
print(json.dumps({"files": len(files), "stat_us": stat_s / ops * 1e6, "open_us": open_s / ops * 1e6,
                  "first_stat_us": first_stat_s / len(files) * 1e6,
                  "first_open_us": first_open_s / len(files) * 1e6}))
"""

# For the breakdown: the modules node exec imports (the server tier aside), timed in a fresh interpreter.
NODE_IMPORTS = "import cvmfs_pilot.cli, cvmfs_pilot.node.cli"
SERVER_IMPORTS = "import cvmfs_pilot.cli, cvmfs_pilot.fuse.cli, cvmfs_pilot.client.session, cvmfs_pilot.fuse.server"


def publish_repositories(root, files):
    """Keys for the three repositories below root/keys; one (files small files and hello.txt) and two published
    below root/srv; the source trees below root/src."""
    root = Path(root)
    for fqrn in REPOSITORIES:
        make_keys(root / "keys", fqrn)
    one = root / "src" / ONE
    (one / "hello.txt").parent.mkdir(parents=True)
    (one / "hello.txt").write_text("hello from one\n")
    per_directory = 50
    for i in range(files):
        path = one / "d{:02d}".format(i // per_directory) / "f{:04d}.dat".format(i)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(100 + (i * 397) % 4000))
    two = root / "src" / TWO
    two.mkdir(parents=True)
    (two / "greeting.txt").write_text("greetings from two\n")
    for fqrn in (ONE, TWO):
        publish_tree(root / "src" / fqrn, root / "srv" / fqrn, fqrn, root / "keys")
    return one


def stats(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(s, unit="s"):
    return "{:.3f} {} (min {:.3f}, max {:.3f}, n={})".format(s["median"], unit, s["min"], s["max"], s["n"])


class Bench:
    def __init__(self, env, staging_url, index_sha256, precompiled):
        self.env = env
        self.staging_url = staging_url
        self.index_sha256 = index_sha256
        self.precompiled = precompiled  # a copy of the package with its .pyc files
        self.fresh = 0

    def user_dir(self, name):
        """A new empty directory the user owns, below the scratch directory."""
        self.fresh += 1
        path = self.env.scratch / "{}-{}".format(name, self.fresh)
        path.mkdir()
        self.env.unprivileged.own(path)
        return path

    def exec_args(self, *options, repos=(ONE, TWO)):
        return self.env.exec_command(JOB, list(repos), *options)

    def precompiled_exec_args(self):
        """node exec run from the precompiled copy (its servers and probe trials then run from it too)."""
        command = self.exec_args()
        assert command[:3] == [PYTHON, "-m", "cvmfs_pilot"]
        return [PYTHON, "-c", BOOT, str(self.precompiled)] + command[3:]

    def staging_args(self, cache):
        return ["--staging", self.staging_url, "--index-sha256", self.index_sha256, "--cache", str(cache),
                "--engine", "python"]

    def job_start(self, command, env=None):
        """(seconds to the job's timestamp, seconds to the end, stderr) of one run as the user."""
        before = time.time()
        process = self.env.popen(command, env=env)
        out, err = process.communicate(timeout=120)
        ended = time.time()
        if process.returncode != 0:
            raise RuntimeError("{} failed (exit status {}):\n{}\n{}".format(" ".join(command), process.returncode,
                                                                            out, err))
        stamp = float(out.strip().splitlines()[-1])
        return stamp - before, ended - before, err

    def timed_user(self, command):
        started = time.perf_counter()
        result = self.env.run(command)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError("{} failed (exit status {}):\n{}\n{}".format(" ".join(map(str, command)),
                                                                            result.returncode, result.stdout,
                                                                            result.stderr))
        return seconds, result

    def fs_mount(self, fqrn, mountpoint):
        return self.timed_user(CLI + ["fs", "mount", "--config-dir", str(self.env.etc), fqrn, str(mountpoint)])[0]

    def fs_umount(self, mountpoint):
        return self.timed_user(CLI + ["fs", "umount", str(mountpoint)])[0]

    def loop(self, root, ops):
        """LOOP's results over root, run as the user outside node exec."""
        return last_json(self.timed_user([PYTHON, str(self.env.scratch / "loop.py"), str(root), str(ops)])[1])


def measure(bench, args, native_tree):
    env = bench.env
    r = {}
    # prime: client cache warm for all three repositories, the distribution in its cache, the mode the probe
    # chooses
    _, _, err = bench.job_start(bench.exec_args("-v"))
    chosen = re.findall(r"mode (\S+), engine (\S+)", err)
    r["mode"], r["engine"] = chosen[-1] if chosen else ("?", "?")
    dist_cache = bench.user_dir("dist-cache")
    bench.job_start(bench.exec_args(*bench.staging_args(dist_cache)))

    # (1) warm start; the variants interleaved, so that a change in the machine's load affects all alike
    variants = {"plain": lambda: JOB, "warm": bench.exec_args,
                "warm_dist": lambda: bench.exec_args(*bench.staging_args(dist_cache)),
                "warm_userns": lambda: bench.exec_args("--mode", "userns"),
                "warm_fusermount": lambda: bench.exec_args("--mode", "fusermount"),
                "warm_pyc": bench.precompiled_exec_args}
    starts = {name: [] for name in variants}
    totals = {name: [] for name in variants}
    mounts = []
    for _ in range(args.runs):
        for name, command in variants.items():
            start, total, _ = bench.job_start(command())
            starts[name].append(start)
            totals[name].append(total)
        points = [bench.user_dir("mnt") for _ in (ONE, TWO)]
        mounts.append(sum(bench.fs_mount(fqrn, point) for fqrn, point in zip((ONE, TWO), points)))
        for point in points:
            bench.fs_umount(point)
    for name in variants:
        r[name], r[name + "_total"] = stats(starts[name]), stats(totals[name])
    r["fs_mount"] = stats(mounts)

    # (2) cold start: new client cache, new distribution cache, the distribution from nginx
    colds, cold_totals = [], []
    for _ in range(args.cold_runs):
        client_cache, dist_cache = bench.user_dir("client-cache"), bench.user_dir("dist-cache")
        start, total, _ = bench.job_start(bench.exec_args(*bench.staging_args(dist_cache),
                                                          "-o", "CVMFS_CACHE_BASE={}".format(client_cache),
                                                          "-o", "CVMFS_HTTP_PROXY=DIRECT"))
        colds.append(start)
        cold_totals.append(total)
        if not any(files for _, _, files in os.walk(client_cache)):
            raise RuntimeError("the cold start did not use its new client cache {}".format(client_cache))
        if not [name for name in os.listdir(dist_cache) if len(name) == 64]:
            raise RuntimeError("the cold start did not unpack a distribution in {}".format(dist_cache))
        shutil.rmtree(client_cache)
        shutil.rmtree(dist_cache)
    r["cold"], r["cold_total"] = stats(colds), stats(cold_totals)

    # (3) per-operation cost: outside (fs mount, fusermount3), inside node exec --mode userns, local disk
    (env.scratch / "loop.py").write_text(LOOP)

    def outside():
        mountpoint = bench.user_dir("mnt")
        bench.fs_mount(ONE, mountpoint)
        try:
            return bench.loop(mountpoint, args.ops)
        finally:
            bench.fs_umount(mountpoint)

    def inside():
        return last_json(bench.timed_user(env.exec_command([PYTHON, str(env.scratch / "loop.py"), "/cvmfs/" + ONE,
                                                            str(args.ops)], [ONE], "--mode", "userns"))[1])

    outside()  # puts every file's content in the client cache
    rounds = {"outside": [], "inside": [], "native": []}
    for _ in range(ROUNDS):  # alternated, each metric the median of the rounds
        rounds["outside"].append(outside())
        rounds["inside"].append(inside())
        rounds["native"].append(bench.loop(native_tree, args.ops))
    for name, results in rounds.items():
        r[name] = {key: statistics.median(result[key] for result in results) for key in results[0]}

    # breakdown of the warm start, each part on its own
    r["python_bare"] = stats([bench.timed_user([PYTHON, "-I", "-c", "pass"])[0] for _ in range(args.runs)])
    r["node_imports"] = stats([bench.timed_user([PYTHON, "-I", "-c", NODE_IMPORTS])[0] for _ in range(args.runs)])
    r["server_imports"] = stats([bench.timed_user([PYTHON, "-I", "-c", SERVER_IMPORTS])[0]
                                 for _ in range(args.runs)])
    compiled = {"PYTHONPYCACHEPREFIX": str(bench.user_dir("pycache")), "PYTHONDONTWRITEBYTECODE": ""}
    env.run([PYTHON, "-c", SERVER_IMPORTS], env=compiled)
    r["server_imports_pyc"] = stats([_timed_env(bench, [PYTHON, "-c", SERVER_IMPORTS], compiled)
                                     for _ in range(args.runs)])
    r["probe"] = stats([bench.timed_user(CLI + ["node", "probe", "--json", "--work-dir", str(env.work),
                                                "--repos", ",".join([ONE, TWO])])[0] for _ in range(args.runs)])
    single = []
    for _ in range(args.runs):
        point = bench.user_dir("mnt")
        single.append(bench.fs_mount(ONE, point))
        bench.fs_umount(point)
    r["fs_mount_one"] = stats(single)
    r["timeline"] = trace_warm_start(bench) if args.trace else None
    env.assert_clean()
    return r


def trace_warm_start(bench):
    """One warm start under strace (execve, mount, unshare, umount2, exit_group of every process): [(seconds
    from node exec's execve, event)], or a reason string when strace cannot be used."""
    strace = shutil.which("strace")
    if strace is None:
        return "strace is not installed"
    output = bench.env.scratch / "strace.txt"
    user = bench.env.unprivileged.user
    command = [strace, "--seccomp-bpf", "-f", "-ttt", "-qq", "-s", "200", "-v", "-e", "signal=none", "-o",
               str(output), "-e", "trace=execve,mount,unshare,umount2,exit_group"]
    command += ["-u", user.pw_name] if user is not None else []
    result = subprocess.run(command + bench.exec_args(), cwd=str(bench.env.scratch), env=bench.env.environ(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    if result.returncode != 0:
        return "strace failed: " + result.stderr.strip()[-300:]
    return timeline(output.read_text())


def timeline(text):
    events, labels, first = [], {}, None
    for line in text.splitlines():
        match = re.match(r"(\d+) +(\d+\.\d+) (\w+)\((.*)", line)
        if not match or "resumed>" in line or line.rstrip().endswith(("ENOENT (No such file or directory)",
                                                                      "EACCES (Permission denied)")):
            continue
        pid, when, call, rest = match.group(1), float(match.group(2)), match.group(3), match.group(4)
        first = when if first is None else first
        label = None
        if call == "execve":
            if "node\", \"exec" in rest:
                label = "node exec"
            elif "\"fs\", \"mount\"" in rest:
                label = "server " + re.findall(r"\"([^\"]+)\", \"/cvmfs/", rest)[0] if "/cvmfs/" in rest \
                    else "server"
            elif "\"userns\"" in rest or "\"fuse-userns\"" in rest:
                label = "probe trial " + ("fuse-userns" if "fuse-userns" in rest else "userns")
            elif "\"stat\"" in rest and "trial" in rest:
                label = "probe trial stat"
            elif rest.startswith("\"/usr/bin/date\"") or rest.startswith("\"/bin/date\""):
                label = "job (date)"
            if label:
                labels[pid] = label
                events.append((when - first, label + " starts (execve)"))
        elif call == "mount" and "\"fuse\"" in rest and "/cvmfs/" in rest:
            events.append((when - first, "mount(2) of " + rest.split("\"")[3]))
        elif call == "umount2" and "/cvmfs/" in rest:
            events.append((when - first, "umount2 of " + rest.split("\"")[1]))
        elif call == "unshare" and "CLONE_NEWUSER" in rest and pid not in labels:
            flags = rest.split(")")[0]
            events.append((when - first, "{}: unshare({})".format(
                "the job's nested user namespace" if "CLONE_NEWNS" not in flags else "the pilot's namespaces",
                flags)))
        elif call == "exit_group" and pid in labels and labels[pid] != "job (date)":
            events.append((when - first, labels[pid] + " ends"))
    return events


def last_json(result):
    return json.loads(result.stdout.strip().splitlines()[-1])


def _timed_env(bench, command, extra):
    started = time.perf_counter()
    result = bench.env.run(command, env=extra)
    if result.returncode != 0:
        raise RuntimeError("{} failed: {}".format(" ".join(command), result.stderr))
    return time.perf_counter() - started


def report(r, args, files):
    plain = r["plain"]["median"]
    print("node exec as user {}, {} CPUs; repositories {} (the config repository, mounted first), {} ({} files) "
          "and {}; mode {}, engine {} (chosen by the probe)".format(
              TEST_USER if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name, os.cpu_count(), CONFIG_REPO,
              ONE, files, TWO, r["mode"], r["engine"]))
    print("(1) warm start, to the job's first instruction (client cache warm):")
    for key, what in (("warm", "node exec, no distribution"),
                      ("warm_dist", "node exec --staging, distribution cached"),
                      ("warm_userns", "node exec --mode userns"), ("warm_fusermount", "node exec --mode fusermount"),
                      ("warm_pyc", "node exec, node tier precompiled (.pyc)")):
        print("    {:<42} {}; to exit {:.3f} s".format(what + ":", fmt(r[key]), r[key + "_total"]["median"]))
    print("    baselines: plain subprocess {}; fs mount of {} and {} (fusermount3, one after the other) {}".format(
        fmt(r["plain"]), ONE, TWO, fmt(r["fs_mount"])))
    print("    ratios: node exec / plain subprocess {:.0f}; node exec / fs mount of the two {:.2f} "
          "(target <= {} s)".format(r["warm"]["median"] / plain, r["warm"]["median"] / r["fs_mount"]["median"],
                                    WARM_TARGET))
    print("(2) cold start (new client cache, distribution downloaded from nginx and unpacked): " + fmt(r["cold"]) +
          "; to exit {:.3f} s; cold / warm (with distribution) {:.2f} (target <= {} s)".format(
              r["cold_total"]["median"], r["cold"]["median"] / r["warm_dist"]["median"], COLD_TARGET))
    o, i, n = r["outside"], r["inside"], r["native"]
    print("(3) per operation over the {} files of {}, client cache warm, after listing them (readdirplus); "
          "medians of {} rounds:".format(o["files"], ONE, ROUNDS))
    print("    {:<45} {:>10} {:>10} {:>10}   {}".format("", "inside", "outside", "local disk", "inside/outside"))
    for key, what in (("first_stat_us", "first os.stat of each file (fresh mount)"),
                      ("first_open_us", "first open + read + close of each file"),
                      ("stat_us", "os.stat, warm (best of 5 x {})".format(args.ops)),
                      ("open_us", "open + read + close, warm (best of 5 x {})".format(args.ops))):
        print("    {:<45} {:7.1f} us {:7.1f} us {:7.1f} us   {:.2f}".format(what, i[key], o[key], n[key],
                                                                         i[key] / o[key]))
    print("breakdown of the warm start (each part measured on its own as the user, medians):")
    print("    python -I -c pass {:.3f} s; importing what node exec imports {:.3f} s; what a server imports {:.3f} s, "
          "{:.3f} s with .pyc".format(r["python_bare"]["median"], r["node_imports"]["median"],
                                     r["server_imports"]["median"], r["server_imports_pyc"]["median"]))
    print("    node probe --json (a process, with its 2 trial processes) {:.3f} s; fs mount of {} alone {:.3f} "
          "s".format(r["probe"]["median"], ONE, r["fs_mount_one"]["median"]))
    if isinstance(r["timeline"], str):
        print("timeline of a warm start: not available ({})".format(r["timeline"]))
    elif r["timeline"]:
        print("timeline of one warm start (strace --seccomp-bpf, seconds from node exec's execve):")
        for when, event in r["timeline"]:
            print("    {:6.3f}  {}".format(when, event))
    print()
    print("summary (node exec of a job with {} and {} mounted, after the config repository {}; mode {}, "
          "engine {}; {} CPUs):".format(ONE, TWO, CONFIG_REPO, r["mode"], r["engine"], os.cpu_count()))
    print("  warm start     {:.2f} s median ({:.2f}-{:.2f})                                        target <= {:g} s"
          .format(r["warm"]["median"], r["warm"]["min"], r["warm"]["max"], WARM_TARGET))
    print("                 {:.2f} s with --staging (distribution cached); {:.2f} s with the node tier precompiled"
          .format(r["warm_dist"]["median"], r["warm_pyc"]["median"]))
    print("  cold start     {:.2f} s median ({:.2f}-{:.2f}); new client cache, distribution downloaded    "
          "target <= {:g} s".format(r["cold"]["median"], r["cold"]["min"], r["cold"]["max"], COLD_TARGET))
    print("  per operation  inside/outside the namespace: stat {:.2f}, open+read+close {:.2f} (warm: {:.1f} and "
          "{:.1f} us inside); first access {:.2f}, {:.2f}".format(
              i["stat_us"] / o["stat_us"], i["open_us"] / o["open_us"], i["stat_us"], i["open_us"],
              i["first_stat_us"] / o["first_stat_us"], i["first_open_us"] / o["first_open_us"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="warm runs of each kind (default 10)")
    parser.add_argument("--cold-runs", type=int, default=5, help="cold runs (default 5)")
    parser.add_argument("--ops", type=int, default=10000, help="operations of each kind in (3) (default 10000)")
    parser.add_argument("--files", type=int, default=500, help="files in one.exec.test (default 500)")
    parser.add_argument("--trace", action="store_true",
                        help="also show the timeline of one warm start, from strace (process starts, mounts)")
    args = parser.parse_args()
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(TEST_USER)
        except KeyError:
            sys.exit("user {!r} does not exist; run scripts/setup-tests.sh as root first".format(TEST_USER))
    else:
        user = None
    unprivileged = Unprivileged(user)
    base = Path(tempfile.mkdtemp(prefix="node-exec-bench-", dir="/tmp"))
    env = None
    try:
        os.chmod(base, 0o755)
        srv = base / "srv"
        native_tree = publish_repositories(base / "published", args.files)
        shutil.copytree(base / "published" / "srv", srv)
        staging = build_contract_staging(srv, base / "dist-work")
        shutil.rmtree(base / "dist-work")
        with nginx_serving(srv, base / "nginx") as base_url:
            publish_config_repository(base / "published", base / "src-config", srv, base_url)
            make_world_readable(base / "published" / "src")
            env = ExecEnv(unprivileged, base / "scratch", base / "published", base_url)
            precompiled = base / "precompiled"
            shutil.copytree(PACKAGE, precompiled / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__"))
            compileall.compile_dir(str(precompiled), quiet=1)
            make_world_readable(precompiled)
            bench = Bench(env, base_url + "/staging/", staging.index_sha256, precompiled)
            results = measure(bench, args, native_tree)
    finally:
        if env is not None:
            left = leftovers_removed(env.scratch, unprivileged.uid)
            if left:
                print("removed leftovers: " + "; ".join(left), file=sys.stderr)
        shutil.rmtree(str(base), ignore_errors=True)
    report(results, args, args.files)


if __name__ == "__main__":
    main()
