"""The single-node Slurm cluster (scripts/setup-slurm.sh, fixture ``slurm``) works for the unprivileged test user
the way pilots will use it: sbatch, job states from squeue and the job completion log, scancel, and the signals
that reach a job's processes.

What scancel does to a batch job here (Slurm 22.05, proctrack/linuxproc, KillWait=10):
  - plain ``scancel``: SIGCONT then SIGTERM to every process of the job, the batch shell included, also those
    in a session or process group of their own; SIGKILL to what is left KillWait seconds later. The job shows
    COMPLETING until its last process is gone, then CANCELLED.
  - ``scancel --signal=SIG --full``: SIG to the batch shell and its children; the job goes on running. (A child
    that called setsid() did not receive it: unlike plain scancel, this does not reach other sessions.)
"""

import os
import time
from pathlib import Path

KILL_WAIT = 10  # slurm.conf's KillWait

# A child process for the job scripts: records the signals it gets in LOG, says it is ready, optionally runs in a
# session of its own, and exits 0 on SIGTERM unless told to ignore it.
CHILD = """\
import os, signal, sys, time
log, tag, mode = sys.argv[1], sys.argv[2], sys.argv[3]
def record(what):
    with open(log, "a") as out:
        out.write("%s %s\\n" % (tag, what))
def handler(number, frame):
    record(signal.Signals(number).name)
    if number == signal.SIGTERM:
        sys.exit(0)
for number in (signal.SIGTERM, signal.SIGCONT, signal.SIGUSR1):
    signal.signal(number, handler)
if mode == "setsid":
    os.setsid()
record("ready")
while True:
    time.sleep(1)
"""


def alive(pid, start_time):
    """Whether process ``pid``, started at ``start_time`` (clock ticks), still runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] not in ("Z", "X") and int(fields[19]) == start_time


def processes(uid, argv):
    """(pid, start time) of the live processes of ``uid`` whose command line is ``argv``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")[:-1]
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if [c.decode(errors="replace") for c in cmdline] == list(argv) and fields[0] not in ("Z", "X"):
            found.append((int(entry.name), int(fields[19])))
    return found


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_a_job_runs_as_the_user_and_completes(slurm):
    work = slurm.user_dir("job")
    assert os.stat(work.parent).st_mode & 0o777 == 0o755
    assert os.stat(work).st_uid == slurm.user.pw_uid
    job = slurm.submit(f"#!/bin/bash\nid -un > {work}/user\necho \"$SLURM_JOB_ID $SLURMD_NODENAME\" > {work}/job\n")
    assert slurm.wait(job, "COMPLETED", timeout=60) == "COMPLETED"
    assert (work / "user").read_text().strip() == slurm.user.pw_name
    assert os.stat(work / "user").st_uid == slurm.user.pw_uid
    assert (work / "job").read_text().split() == [job, slurm.node]
    # The user sees the finished job in squeue (MinJobAge), and the job completion log has it (sacct -c).
    seen = slurm.run(["squeue", "-h", "-t", "all", "-j", job, "-o", "%T %u"]).stdout.split()
    assert seen == ["COMPLETED", slurm.user.pw_name]
    wait_for(lambda: slurm.completion(job) is not None, 10, "the job completion record")
    record = slurm.completion(job)
    assert (record["State"], record["ExitCode"]) == ("COMPLETED", "0:0")


def test_a_failing_job_is_failed_with_its_exit_status(slurm):
    job = slurm.submit("#!/bin/bash\necho about to fail\nexit 3\n")
    assert slurm.wait(job, "FAILED", timeout=60) == "FAILED"
    assert slurm.job(job)["ExitCode"] == "3:0"
    assert slurm.output(job) == "about to fail\n"


def test_several_jobs_run_at_once_on_the_node(slurm):
    jobs = [slurm.submit("#!/bin/bash\nsleep 120\n") for _ in range(3)]
    try:
        for job in jobs:
            slurm.wait(job, "RUNNING", timeout=60)
    finally:
        for job in jobs:
            slurm.cancel(job)
    for job in jobs:
        slurm.wait(job, "CANCELLED", timeout=30)


def test_scancel_ends_a_running_job_and_its_processes(slurm):
    job = slurm.submit("#!/bin/bash\nsleep 300\n")
    slurm.wait(job, "RUNNING", timeout=60)
    wait_for(lambda: processes(slurm.user.pw_uid, ["sleep", "300"]), 10, "the job's sleep")
    (sleep,) = [p for p in processes(slurm.user.pw_uid, ["sleep", "300"]) if p[0] in slurm.pids(job)]
    cancelled = time.monotonic()
    slurm.cancel(job)  # as the user who owns the job
    assert slurm.wait(job, "CANCELLED", timeout=KILL_WAIT + 20) == "CANCELLED"
    # sleep dies of the SIGTERM: the job is over well before KillWait would have SIGKILLed it.
    assert time.monotonic() - cancelled < KILL_WAIT
    assert not alive(*sleep)
    assert "CANCELLED" in slurm.output(job)


def test_scancel_sigterm_reaches_the_job_script_and_every_process(slurm):
    work = slurm.user_dir("signals")
    (work / "child.py").write_text(CHILD)
    log = work / "signals.log"
    job = slurm.submit(f"""#!/bin/bash
trap 'echo "shell TERM" >> {log}; wait; exit 0' TERM
python3 {work}/child.py {log} child same &
python3 {work}/child.py {log} setsid-child setsid &
echo "shell ready" >> {log}
wait
""")
    slurm.wait(job, "RUNNING", timeout=60)
    wait_for(lambda: len([line for line in lines(log) if line.endswith("ready")]) == 3, 20, f"{log} to say ready")
    cancelled = time.monotonic()
    slurm.cancel(job)
    assert slurm.wait(job, "CANCELLED", timeout=KILL_WAIT + 20) == "CANCELLED"
    got = lines(log)
    # The batch shell's trap runs; the children get SIGTERM (Slurm sends SIGCONT first, which a running process
    # may or may not see before it), also the one in its own session.
    assert "shell TERM" in got
    for tag in ("child", "setsid-child"):
        mine = [line.split()[1] for line in got if line.startswith(tag + " ")]
        assert mine[0] == "ready" and mine[-1] == "SIGTERM" and set(mine[1:-1]) <= {"SIGCONT"}, got
    # Everything exited on SIGTERM: no SIGKILL after KillWait was needed.
    assert time.monotonic() - cancelled < KILL_WAIT


def test_processes_that_ignore_sigterm_are_killed_after_killwait(slurm):
    job = slurm.submit("#!/bin/bash\ntrap '' TERM\nsleep 301\n")  # sleep inherits the ignored SIGTERM
    slurm.wait(job, "RUNNING", timeout=60)
    wait_for(lambda: processes(slurm.user.pw_uid, ["sleep", "301"]), 10, "the job's sleep")
    (sleep,) = [p for p in processes(slurm.user.pw_uid, ["sleep", "301"]) if p[0] in slurm.pids(job)]
    cancelled = time.monotonic()
    slurm.cancel(job)
    time.sleep(2)
    assert slurm.state(job) == "COMPLETING" and alive(*sleep)
    assert slurm.wait(job, "CANCELLED", timeout=KILL_WAIT + 20) == "CANCELLED"
    assert KILL_WAIT - 1 <= time.monotonic() - cancelled <= KILL_WAIT + 15
    assert not alive(*sleep)


def test_scancel_signal_full_reaches_the_batch_shell_and_the_job_goes_on(slurm):
    work = slurm.user_dir("usr1")
    (work / "child.py").write_text(CHILD)
    log = work / "signals.log"
    job = slurm.submit(f"""#!/bin/bash
trap 'echo "shell USR1" >> {log}' USR1
python3 {work}/child.py {log} child same &
echo "shell ready" >> {log}
while :; do wait; done
""")
    slurm.wait(job, "RUNNING", timeout=60)
    wait_for(lambda: len([line for line in lines(log) if line.endswith("ready")]) == 2, 20, f"{log} to say ready")
    slurm.cancel(job, signal="USR1", full=True)
    wait_for(lambda: {"shell USR1", "child SIGUSR1"} <= set(lines(log)), 10, f"SIGUSR1 in {log}")
    time.sleep(1)
    assert slurm.state(job) == "RUNNING"
    slurm.cancel(job)
    slurm.wait(job, "CANCELLED", timeout=KILL_WAIT + 20)
