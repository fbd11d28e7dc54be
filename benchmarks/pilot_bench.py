"""Pilot benchmark (issue 7): from a pilot's start to its job's start, with /cvmfs mounted, local provider, on a
warm and on a cold node, and how long 20 pilots submitted at once take to reach their jobs; against baselines
measured in the same run.

The site is ``cvmfs-pilot demo``'s (src/cvmfs_pilot/factory/demo.py, whose steps are reused): the demo repository
published and served on loopback by a thread of this process, the python-engine client distribution built into
its staging area, and a factory whose entry (provider ``local``) has GLIDEIN_CVMFS=required, one repository
(demo.cvmfs-pilot.org; not the config repository, which the demo also mounts), the demo's validation script
(check_disk.sh) and keys tarball, and a payload of one command, ``date +%s.%N``: the job's first instruction
prints the time. Pilots are submitted with ``cvmfs-pilot submit --config factory.toml --entry demo-local --count
N`` as the unprivileged user (``cvmfspilot`` when run as root, as the demo does); the mode (userns) and engine
(python, from the staged distribution) are the pilot's own choice. Every pilot must succeed in mode userns with
engine python.

Times: *submit* is taken just before the ``submit`` process is started; *bootstrap start* is when the pilot's
process (``/bin/sh glidein_startup.sh``, whose pid the record keeps) started, from /proc/PID/stat (10 ms ticks);
the report gives the runtime's start and every step's (ms); the job's start is the time it printed. The pilots'
caches are below this benchmark's directory (XDG_CACHE_HOME, inherited from ``submit`` by the local provider):
the distribution cache, and with it the client cache (the python distribution's default.local puts
CVMFS_CACHE_BASE inside the unpacked distribution).

(1) warm node: distribution and client cache from a first pilot; --runs pilots one after the other.
(2) cold node: a new, empty cache directory for each of --cold-runs pilots (the distribution downloaded from
    loopback, unpacked, the repository's catalog fetched).
(3) --burst pilots (default 20) from one ``submit --count``, warm node: submit to the last job's start, to the last
    pilot's end, and each pilot's bootstrap start to job start.
Baselines, interleaved with (1) and (2): the job as a plain subprocess of the user; ``cvmfs-pilot node exec`` of
the same job with the same repository, distribution and client options (the node layer alone), from the
installed package and from the pilot runtime zipapp that the pilots run.
CPU time: this process is a child subreaper, so it inherits the detached pilots (and whatever they leave), reaps
them and counts their CPU time (user + system, with everything they started). The breakdown of bootstrap start to
runtime start times its parts on their own; the report's steps give the rest. The PATH given to the pilots is a
batch system's usual one. Nothing is left behind: caches, records and work directories are below one temporary
directory, removed at the end, with any process of the user that still uses it.

    .venv/bin/python benchmarks/pilot_bench.py [--runs 10] [--cold-runs 5] [--burst 20]
"""

import argparse
import compileall
import contextlib
import ctypes
import hashlib
import io
import json
import os
import pwd
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cvmfs_pilot.client.cache_db import process_start_time  # noqa: E402
from cvmfs_pilot.factory import demo  # noqa: E402
from support.fuse_env import leftovers_removed  # noqa: E402

PYTHON = sys.executable
CLI = [PYTHON, "-m", "cvmfs_pilot"]
JOB = ["date", "+%s.%N"]
REPO = demo.DEMO_REPO
WARM_TARGET, COLD_TARGET = 1.0, 3.0
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # what a batch system gives its jobs
TICK = os.sysconf("SC_CLK_TCK")
POLL = 0.02
TIMEOUT = 180
PR_SET_CHILD_SUBREAPER = 36
# For the breakdown of bootstrap start -> runtime start: what the runtime imports before it starts the report
RUNTIME_IMPORTS = "import cvmfs_pilot.cli, cvmfs_pilot.glidein.cli"
BOOTSTRAP_IMPORTS = "import hashlib, json, os, sys, time, urllib.request"  # glidein_startup.sh's downloader


def stats(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(s):
    return "{:.3f} s (min {:.3f}, max {:.3f}, n={})".format(s["median"], s["min"], s["max"], s["n"])


def boot_epoch():
    """The epoch time of boot, as /proc/PID/stat's start times count from it."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def become_subreaper():
    """Pilots outlive ``submit`` (the local provider detaches them): as a subreaper this process inherits them,
    and what they leave, so that it reaps them and counts their CPU time."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap():
    """Reap every ended child (pilots and their servers, inherited as a subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def children_cpu():
    """CPU seconds (user + system) of every reaped child and its reaped descendants so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Site:
    """The demo's site, set up in work, and the user who runs the pilots."""

    def __init__(self, work, user):
        self.work = work
        self.user = user
        self.server = None
        self.caches = 0
        self.pilot_pids = []  # (pid, start time) of every pilot submitted, for the cleanup

    def setup(self):
        said = io.StringIO()  # what publishing and building print, shown only if they fail
        try:
            with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
                srv, keys = demo.publish_repositories(self.work)
                self.server, self.base_url = demo.serve(srv)
                demo.build_distribution(srv / "dists")
        except (OSError, RuntimeError):
            sys.stderr.write(said.getvalue())
            raise
        self.dist_sha256 = hashlib.sha256((srv / "dists" / "index.json").read_bytes()).hexdigest()
        self.config = demo.write_factory(self.work, self.user, self.base_url, keys, srv, payload=[JOB],
                                         config_repository=False)
        demo._cli(self.user, "factory", "stage", "--config", self.config)
        self.runtime = srv / "staging" / "files" / "cvmfs-pilot.pyz"
        self.node_keys = self.work / "node-keys"  # what the pilot's keys tarball holds, for node exec
        self.node_keys.mkdir()
        shutil.copy(str(keys / (REPO + ".pub")), str(self.node_keys))
        self.node_work = self.work / "node-work"
        self.node_work.mkdir()
        for path in (self.node_keys, self.node_work):
            demo._chown_tree(str(path), self.user)
        self.pilot_python = shutil.which("python3", path=PATH)

    def cache_home(self):
        """A new empty XDG_CACHE_HOME for the user."""
        self.caches += 1
        path = self.work / "cache-{}".format(self.caches)
        path.mkdir()
        demo._chown_tree(str(path), self.user)
        return path

    def environ(self, cache_home):
        return dict(os.environ, PATH=PATH, XDG_CACHE_HOME=str(cache_home))

    # -- pilots ---------------------------------------------------------------------------------------------

    def submit(self, count, cache_home):
        """Submit count pilots; (time just before submit, when submit returned, [record directories])."""
        reap()
        cpu = children_cpu()
        before = time.time()
        result = demo._as_user(self.user, CLI + ["submit", "--config", self.config, "--entry", demo.ENTRY,
                                                 "--count", str(count)],
                               env=self.environ(cache_home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               universal_newlines=True, timeout=TIMEOUT)
        returned = time.time()
        self.submit_cpu = children_cpu() - cpu
        if result.returncode != 0:
            raise RuntimeError("submit failed:\n" + result.stdout)
        directories = [Path(line.split()[-1]) for line in result.stdout.splitlines() if " local job " in line]
        if len(directories) != count:
            raise RuntimeError("submit did not list {} pilots:\n{}".format(count, result.stdout))
        for directory in directories:
            details = json.loads((directory / "pilot.json").read_text())["details"]
            self.pilot_pids.append((details["pid"], details["start_time"]))
        return before, returned, directories

    def wait(self, directories):
        """Wait until every pilot has written its report and its process has ended; {directory: when that was
        seen} (to POLL seconds)."""
        details = {d: json.loads((d / "pilot.json").read_text())["details"] for d in directories}
        seen = {}
        deadline = time.monotonic() + TIMEOUT
        while len(seen) < len(directories):
            reap()
            for directory in directories:
                if directory in seen or not (directory / "report.json").exists():
                    continue
                if process_start_time(details[directory]["pid"]) != details[directory]["start_time"]:
                    seen[directory] = time.time()
            if time.monotonic() > deadline:
                raise RuntimeError("{} of {} pilots did not end within {} s".format(
                    len(directories) - len(seen), len(directories), TIMEOUT))
            time.sleep(POLL)
        return seen

    def pilots(self, count, cache_home):
        """Submit count pilots and wait for them; (submit time, submit returned, [timings of each pilot]).
        self.pilot_cpu: the CPU seconds of the pilots and all they started (the submit command's apart)."""
        before, returned, directories = self.submit(count, cache_home)
        cpu = children_cpu()
        seen = self.wait(directories)
        reap()
        self.pilot_cpu = children_cpu() - cpu
        return before, returned, [timings(d, before, seen[d]) for d in directories]

    # -- baselines ------------------------------------------------------------------------------------------

    def job_start(self, command, cache_home):
        """Seconds from just before starting command as the user to the job's printed time; self.job_cpu: the
        CPU seconds of command and all it started."""
        reap()
        cpu = children_cpu()
        before = time.time()
        result = demo._as_user(self.user, command, env=self.environ(cache_home), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, universal_newlines=True, timeout=TIMEOUT,
                               cwd=str(self.node_work))
        reap()
        self.job_cpu = children_cpu() - cpu
        if result.returncode != 0:
            raise RuntimeError("{} failed (exit status {}):\n{}\n{}".format(" ".join(command), result.returncode,
                                                                            result.stdout, result.stderr))
        return float(result.stdout.strip().splitlines()[-1]) - before

    def node_exec(self, runtime=False):
        """node exec of the job with the pilot's repository, distribution and client options; from the installed
        package, or (runtime) from the staged pilot runtime with the python3 the pilots use."""
        start = [self.pilot_python, str(self.runtime)] if runtime else CLI
        return start + ["node", "exec", "--work-dir", str(self.node_work), "--repos", REPO, "--staging",
                        self.base_url + "dists/", "--index-sha256", self.dist_sha256,
                        "-o", "CVMFS_HTTP_PROXY=DIRECT", "-o", "CVMFS_SERVER_URL={}cvmfs/@fqrn@".format(self.base_url),
                        "-o", "CVMFS_KEYS_DIR={}".format(self.node_keys), "--"] + JOB

    # -- the end --------------------------------------------------------------------------------------------

    def close(self):
        """End what is left of the pilots (a run cut short), check that nothing is left, stop the server."""
        for pid, start_time in self.pilot_pids:
            if process_start_time(pid) == start_time:
                try:
                    os.killpg(pid, signal.SIGTERM)  # a session leader: its group has its pid
                except OSError:
                    pass
        deadline = time.monotonic() + 30
        while any(process_start_time(p) == s for p, s in self.pilot_pids) and time.monotonic() < deadline:
            reap()
            time.sleep(0.1)
        left = leftovers_removed(self.work, self.user.pw_uid if self.user else os.getuid())
        reap()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        return left

    def timed(self, command, env=None):
        """Seconds that command takes as the user."""
        before = time.perf_counter()
        result = demo._as_user(self.user, command, env=env or self.environ(self.work), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, universal_newlines=True, timeout=TIMEOUT,
                               cwd=str(self.node_work))
        seconds = time.perf_counter() - before
        if result.returncode != 0:
            raise RuntimeError("{} failed: {}".format(" ".join(command), result.stderr))
        return seconds

    def precompiled_runtime(self):
        """The pilot runtime unpacked and byte-compiled (by this python, which is the pilots' one), readable by
        the user."""
        path = self.work / "runtime-precompiled"
        with zipfile.ZipFile(str(self.runtime)) as archive:
            archive.extractall(str(path))
        compileall.compile_dir(str(path), quiet=1)
        for dirpath, dirnames, filenames in os.walk(str(path)):
            for name in dirnames + filenames:
                os.chmod(os.path.join(dirpath, name), 0o755 if name in dirnames else 0o644)
        return path


def _seconds(stamp):
    return demo._seconds(stamp)


def timings(directory, submitted, seen):
    """One pilot's times (epoch seconds) from its record and report."""
    record = json.loads((directory / "pilot.json").read_text())
    report = json.loads((directory / "report.json").read_text())
    cvmfs = report.get("cvmfs") or {}
    if report.get("outcome") != "success" or (cvmfs.get("mode"), cvmfs.get("engine")) != ("userns", "python"):
        raise RuntimeError("pilot {} did not succeed in mode userns with engine python: {}\n{}".format(
            record["id"], json.dumps(report, indent=1), (directory / "stderr").read_text()[-2000:]))
    steps = {step["name"]: step for step in report["steps"]}
    t = {"submit": submitted, "seen_ended": seen,
         "bootstrap": boot_epoch() + record["details"]["start_time"] / TICK,
         "runtime": _seconds(report["started"]), "ended": _seconds(report["ended"]),
         "cvmfs": _seconds(steps["cvmfs"]["started"]), "payload": _seconds(steps["payload 0"]["started"]),
         "job": float(report["payload"][0]["stdout_tail"].split()[-1])}
    t["inner"] = t["cvmfs"] + steps["cvmfs"]["duration"]  # the report's cvmfs step lasts until the inner part started
    t["steps"] = [(step["name"], _seconds(step["started"]) - t["bootstrap"], step["duration"])
                  for step in report["steps"]]
    return t


PHASES = (("submit", "bootstrap", "submit -> bootstrap start (the submit command, the local provider)"),
          ("bootstrap", "runtime", "bootstrap start -> runtime start (sh, python3 checks, index and runtime "
                                   "downloaded and verified, runtime imports)"),
          ("runtime", "cvmfs", "runtime start -> cvmfs step (staging area, files, glidein_config, "
                               "check_disk.sh)"),
          ("cvmfs", "inner", "cvmfs step: probe, decide, distribution, mount, namespace, inner part started"),
          ("inner", "payload", "inner part start -> payload started"),
          ("payload", "job", "payload started -> the job's first instruction"),
          ("job", "ended", "job -> report written (cleanup, work directory removed)"))


def spans(pilots, start, end):
    return stats([p[end] - p[start] for p in pilots])


def breakdown(pilots, indent="    "):
    lines = []
    for start, end, what in PHASES:
        s = spans(pilots, start, end)
        lines.append("{}{:>6.3f} s  {} (min {:.3f}, max {:.3f})".format(indent, s["median"], what, s["min"], s["max"]))
    return lines


def step_table(pilots, indent="    "):
    """Median start (from the bootstrap's start) and duration of each report step."""
    names = [name for name, _, _ in pilots[0]["steps"]]
    lines = []
    for name in names:
        found = [[(at, took) for n, at, took in p["steps"] if n == name] for p in pilots]
        found = [f[0] for f in found if f]
        lines.append("{}+{:6.3f} s  {:6.3f} s  {}".format(indent, statistics.median(at for at, _ in found),
                                                          statistics.median(took for _, took in found), name))
    return lines


def measure(site, args):
    r = {}
    warm_home = site.cache_home()
    # prime: the distribution downloaded and unpacked, the client cache filled, by a first pilot; node exec's
    # first runs compile nothing new but make sure the baselines work
    site.pilots(1, warm_home)
    for runtime in (False, True):
        site.job_start(site.node_exec(runtime), warm_home)

    # (1) warm node, the baselines interleaved
    warm, plain, node, node_pyz, submit_s = [], [], [], [], []
    cpu = {"node": [], "node_pyz": [], "pilot": [], "submit": []}
    for _ in range(args.runs):
        plain.append(site.job_start(JOB, warm_home))
        node.append(site.job_start(site.node_exec(), warm_home))
        cpu["node"].append(site.job_cpu)
        node_pyz.append(site.job_start(site.node_exec(runtime=True), warm_home))
        cpu["node_pyz"].append(site.job_cpu)
        before, returned, (pilot,) = site.pilots(1, warm_home)
        warm.append(pilot)
        submit_s.append(returned - before)
        cpu["pilot"].append(site.pilot_cpu)
        cpu["submit"].append(site.submit_cpu)
    r.update(warm=warm, plain=stats(plain), node=stats(node), node_pyz=stats(node_pyz), submit_one=stats(submit_s),
             cpu={key: stats(values) for key, values in cpu.items()})

    # (2) cold node: new caches for every pilot (and for every cold node exec)
    cold, cold_node, cold_cpu = [], [], []
    for _ in range(args.cold_runs):
        home = site.cache_home()
        _, _, (pilot,) = site.pilots(1, home)
        check_cold(home)
        cold.append(pilot)
        cold_cpu.append(site.pilot_cpu)
        shutil.rmtree(str(home))
        home = site.cache_home()
        cold_node.append(site.job_start(site.node_exec(runtime=True), home))
        check_cold(home)
        shutil.rmtree(str(home))
    r.update(cold=cold, cold_node_pyz=stats(cold_node), cold_cpu=stats(cold_cpu))

    # (3) a burst, warm node
    before, returned, burst = site.pilots(args.burst, warm_home)
    r["burst"] = {"pilots": burst, "submit_returned": returned - before,
                  "last_bootstrap": max(p["bootstrap"] for p in burst) - before,
                  "last_job": max(p["job"] for p in burst) - before,
                  "last_end": max(max(p["ended"] for p in burst), max(p["seen_ended"] for p in burst)) - before,
                  "last_report": max(p["ended"] for p in burst) - before, "cpu": site.pilot_cpu,
                  "submit_cpu": site.submit_cpu}

    # breakdown of bootstrap start -> runtime start, each part on its own as the user (medians)
    pyz = site.runtime
    compiled = site.precompiled_runtime()
    python = site.pilot_python
    parts = {"sh": ["/bin/sh", "-c", ":"],
             "python_check": [python, "-c", "import sys; sys.exit(sys.version_info < (3, 6))"],
             "downloader_imports": [python, "-I", "-c", BOOTSTRAP_IMPORTS],
             "runtime_imports_pyz": [python, "-I", "-c", "import sys; sys.path.insert(0, {!r}); {}".format(
                 str(pyz), RUNTIME_IMPORTS)],
             "runtime_imports_pyc": [python, "-I", "-c", "import sys; sys.path.insert(0, {!r}); {}".format(
                 str(compiled), RUNTIME_IMPORTS)]}
    timed = {name: [] for name in parts}
    for _ in range(args.runs):
        for name, command in parts.items():
            timed[name].append(site.timed(command))
    r["parts"] = {name: stats(values) for name, values in timed.items()}
    return r


def check_cold(home):
    """The run used this new cache: a distribution unpacked in it, with a client cache inside."""
    dists = home / "cvmfs-pilot" / "distributions"
    unpacked = [p for p in dists.iterdir() if len(p.name) == 64 and p.is_dir()] if dists.is_dir() else []
    if not unpacked or not any(files for _, _, files in os.walk(str(unpacked[0] / "var" / "lib" / "cvmfs"))):
        raise RuntimeError("the cold run did not unpack a distribution with its client cache in {}".format(home))


def report(r, args, user_name):
    warm, cold, burst = r["warm"], r["cold"], r["burst"]
    w = spans(warm, "bootstrap", "job")
    ws = spans(warm, "submit", "job")
    c = spans(cold, "bootstrap", "job")
    cs = spans(cold, "submit", "job")
    b = spans(burst["pilots"], "bootstrap", "job")
    plain = r["plain"]["median"]
    print("pilots as user {}, {} CPUs (load average {:.2f} at the end); local provider; GLIDEIN_CVMFS=required, "
          "repository {}; mode userns, engine python (the staged python distribution), chosen by the pilot; "
          "payload {!r}".format(user_name, os.cpu_count(), os.getloadavg()[0], REPO, " ".join(JOB)))
    print("(1) warm node (distribution and client cache present), {} pilots one after the other:".format(len(warm)))
    print("    bootstrap start -> job start: " + fmt(w))
    print("    submit -> job start:          " + fmt(ws) + "; the submit command itself {}".format(
        fmt(r["submit_one"])))
    print("    submit -> pilot ended:        " + fmt(spans(warm, "submit", "seen_ended")))
    print("    where the time goes (bootstrap start -> job start, medians):")
    print("\n".join(breakdown(warm, "      ")))
    print("    the report's steps (median start after the bootstrap's start, median duration):")
    print("\n".join(step_table(warm, "      ")))
    print("    baselines: the job as a plain subprocess {}; node exec (installed package) {}; node exec from the "
          "pilot runtime zipapp {}".format(fmt(r["plain"]), fmt(r["node"]), fmt(r["node_pyz"])))
    print("    ratios: pilot / node exec {:.2f}; pilot / node exec from the zipapp {:.2f}; pilot / plain job {:.0f}; "
          "pilot overhead over the node layer {:.3f} s".format(
              w["median"] / r["node"]["median"], w["median"] / r["node_pyz"]["median"], w["median"] / plain,
              w["median"] - r["node_pyz"]["median"]))
    cpu = r["cpu"]
    print("    CPU time (user + system, the process and all it started; medians): a pilot {:.2f} s (the submit "
          "command {:.2f} s more); node exec {:.2f} s, from the zipapp {:.2f} s".format(
              cpu["pilot"]["median"], cpu["submit"]["median"], cpu["node"]["median"], cpu["node_pyz"]["median"]))
    parts = r["parts"]
    print("    bootstrap start -> runtime start, each part on its own as the user (medians): sh {:.3f} s; the "
          "python3 version check {:.3f} s; the downloader's interpreter and imports {:.3f} s; the runtime's imports "
          "from the zipapp {:.3f} s, {:.3f} s from an unpacked byte-compiled copy".format(
              parts["sh"]["median"], parts["python_check"]["median"], parts["downloader_imports"]["median"],
              parts["runtime_imports_pyz"]["median"], parts["runtime_imports_pyc"]["median"]))
    print("(2) cold node (new distribution and client cache for each), {} pilots:".format(len(cold)))
    print("    bootstrap start -> job start: " + fmt(c))
    print("    submit -> job start:          " + fmt(cs))
    print("    where the time goes (medians):")
    print("\n".join(breakdown(cold, "      ")))
    print("    baseline: node exec from the zipapp, new caches {}; cold / warm pilot {:.2f}; CPU time of a pilot "
          "{:.2f} s".format(fmt(r["cold_node_pyz"]), c["median"] / w["median"], r["cold_cpu"]["median"]))
    n = len(burst["pilots"])
    print("(3) {} pilots from one submit --count {}, warm node, {} CPUs:".format(n, n, os.cpu_count()))
    print("    submit returned after {:.3f} s; the last pilot's bootstrap started {:.3f} s after submit".format(
        burst["submit_returned"], burst["last_bootstrap"]))
    print("    submit -> every job started {:.3f} s; -> every pilot ended {:.3f} s (last report {:.3f} s)".format(
        burst["last_job"], burst["last_end"], burst["last_report"]))
    print("    per pilot, bootstrap start -> job start: " + fmt(b))
    print("    CPU time of the {} pilots {:.1f} s ({:.2f} s each; submit {:.2f} s): at least {:.1f} s of work for "
          "each of the {} CPUs".format(n, burst["cpu"], burst["cpu"] / n, burst["submit_cpu"],
                                       (burst["cpu"] + burst["submit_cpu"]) / os.cpu_count(), os.cpu_count()))
    print("    where the time goes per pilot (medians):")
    print("\n".join(breakdown(burst["pilots"], "      ")))
    print()
    print("summary (local pilots as an unprivileged user, GLIDEIN_CVMFS=required, one repository, mode userns, "
          "engine python; {} CPUs):".format(os.cpu_count()))
    print("  warm node   bootstrap start -> job {:.2f} s median ({:.2f}-{:.2f}); submit -> job {:.2f} s   "
          "target <= {:g} s".format(w["median"], w["min"], w["max"], ws["median"], WARM_TARGET))
    print("  cold node   bootstrap start -> job {:.2f} s median ({:.2f}-{:.2f}); submit -> job {:.2f} s   "
          "target <= {:g} s".format(c["median"], c["min"], c["max"], cs["median"], COLD_TARGET))
    print("  {} at once  submit -> all {} jobs started {:.2f} s, all pilots ended {:.2f} s; per pilot {:.2f} s "
          "median ({:.2f}-{:.2f}); CPU {:.2f} s per pilot".format(n, n, burst["last_job"], burst["last_end"],
                                                                 b["median"], b["min"], b["max"], burst["cpu"] / n))
    print("  baselines   plain job {:.3f} s; node exec {:.2f} s, from the pilot's zipapp {:.2f} s (cold {:.2f} s); "
          "warm pilot / node exec (zipapp) {:.2f}".format(
              plain, r["node"]["median"], r["node_pyz"]["median"], r["cold_node_pyz"]["median"],
              w["median"] / r["node_pyz"]["median"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="warm pilots, and baseline runs (default 10)")
    parser.add_argument("--cold-runs", type=int, default=5, help="cold pilots (default 5)")
    parser.add_argument("--burst", type=int, default=20, help="pilots submitted at once (default 20)")
    args = parser.parse_args()
    if os.geteuid() == 0:
        user = demo._prepare_machine(demo.DEMO_USER)
        user_name = user.pw_name
    else:
        user, user_name = None, pwd.getpwuid(os.getuid()).pw_name
    become_subreaper()
    work = Path(tempfile.mkdtemp(prefix="pilot-bench-", dir="/tmp"))
    os.chmod(str(work), 0o755)
    site = Site(work, user)
    results = None
    try:
        site.setup()
        results = measure(site, args)
    finally:
        left = site.close()
        if left:
            print("removed leftovers: " + "; ".join(left), file=sys.stderr)
        shutil.rmtree(str(work), ignore_errors=True)
    report(results, args, user_name)


if __name__ == "__main__":
    main()
