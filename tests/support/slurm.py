"""A real single-node Slurm cluster for the tests: the session fixture ``slurm``.

The cluster is Debian's Slurm 22.05 configured and started by ``scripts/setup-slurm.sh`` (packages installed by
``scripts/setup-tests.sh``, so pytest never runs apt-get). The fixture runs ``setup-slurm.sh --start --lease
<pytest's pid>`` once per session (fast when the cluster runs already); at the end of the session it cancels
every job it submitted that is still there, and releases the lease: the last session to release a cluster that a
lease started stops it (every remaining job cancelled, then slurmd, slurmctld and munged), so that nothing is
left running after ``.ci/run``, while concurrent test sessions on one machine share the cluster safely. A
cluster started by hand (``bash scripts/setup-slurm.sh``) is left running.

Jobs are submitted as the unprivileged test user (``CVMFS_PILOT_TEST_USER``, default ``cvmfspilot``) when the
tests run as root, otherwise as the invoking user. The helpers, on the object the fixture yields:

    job_id = slurm.submit(script_text, user=None, extra_args=(), env=None)   # sbatch, script on stdin
    slurm.state(job_id)               # PENDING, RUNNING, COMPLETING, COMPLETED, FAILED, CANCELLED, TIMEOUT...
    slurm.wait(job_id, "RUNNING")     # or a set of states; returns the state reached; raises SlurmError
    slurm.cancel(job_id)              # plain scancel as the job's owner; signal=, full=, batch= for the options
    slurm.job(job_id)                 # ``scontrol show job`` as a dict (JobState, ExitCode, StdOut, ...)
    slurm.completion(job_id)          # the job's record in the job completion log (``sacct -c``), or None
    slurm.pids(job_id)                # the job's processes on the node (``scontrol listpids``)
    slurm.output(job_id)              # the job's stdout and stderr (default --output)
    slurm.user_dir()                  # a fresh directory owned by the user below a 0755 directory in /tmp
    slurm.run([...], user=None)       # any command (squeue, sacct...) as the user; user="root" for root

States come from ``squeue -t all`` while slurmctld remembers the job (MinJobAge=300 s after it ends), then from
the job completion log, which only root can read (see scripts/setup-slurm.sh: there is no slurmdbd).
"""

import os
import pwd
import shutil
import signal as signals
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from support.unprivileged import TEST_USER

PROJECT = Path(__file__).resolve().parent.parent.parent
SETUP = PROJECT / "scripts" / "setup-slurm.sh"
STATE_DIR = Path(os.environ.get("CVMFS_PILOT_SLURM_DIR", "/var/lib/cvmfs-pilot-slurm"))
COMMAND_TIMEOUT = 60  # seconds for one Slurm command
SETUP_TIMEOUT = 180  # seconds for setup-slurm.sh --start / --stop
POLL = 0.1

# Base states in which a job is over (squeue's %T shows COMPLETING until every process of the job is gone).
FINAL_STATES = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
    "REVOKED", "SPECIAL_EXIT", "TIMEOUT",
})


class SlurmError(RuntimeError):
    """A Slurm command failed, or a job did not reach the expected state."""


def _user_entry(user):
    if user is None or isinstance(user, pwd.struct_passwd):
        return user
    if isinstance(user, int):
        return pwd.getpwuid(user)
    return pwd.getpwnam(user)


def _has_flag(args, *flags):
    """Whether the sbatch arguments already give one of the options (``-o X``, ``-oX``, ``--output=X``...)."""
    for arg in args:
        for flag in flags:
            if arg == flag or (flag.startswith("--") and arg.startswith(flag + "=")) \
                    or (not flag.startswith("--") and arg.startswith(flag)):
                return True
    return False


class SlurmCluster:
    def __init__(self, user, scratch):
        self.user = user  # pwd entry of the default job owner
        self.node = socket.gethostname().split(".")[0]
        self.partition = "debug"
        self.scratch = scratch  # a root-owned 0755 directory below /tmp
        self.jobs = []  # every job submitted through this object
        self._dirs = 0
        self.output_dir = self.user_dir("output")

    # -- running commands -------------------------------------------------------------------------------------
    def run(self, command, user=None, input=None, check=True, timeout=COMMAND_TIMEOUT, env=None, cwd=None):
        """Run a command as ``user`` (default: the test user; ``"root"`` or any name, uid or pwd entry)."""
        entry = _user_entry(user) or self.user
        kwargs = dict(input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                      timeout=timeout, cwd=str(cwd or self.output_dir))
        base_env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8",
                    "HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name}
        if "SLURM_CONF" in os.environ:
            base_env["SLURM_CONF"] = os.environ["SLURM_CONF"]
        base_env.update(env or {})
        kwargs["env"] = base_env
        if entry.pw_uid != os.geteuid():
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        result = subprocess.run([str(c) for c in command], **kwargs)
        if check and result.returncode != 0:
            raise SlurmError(f"{' '.join(map(str, command))} (as {entry.pw_name}) exited with status "
                             f"{result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def _root(self, command, check=True):
        """A Slurm query as the invoking user (root in CI: it may read everything)."""
        return self.run(command, user=os.geteuid(), check=check)

    # -- jobs -------------------------------------------------------------------------------------------------
    def submit(self, script_text, user=None, extra_args=(), env=None):
        """Submit a batch script (its text, ``#!`` line first) with sbatch as ``user``: the job id (a str).

        Unless extra_args say otherwise, stdout and stderr go to ``<output_dir>/slurm-<id>.out`` (see
        ``output``) and the job starts in ``output_dir``, a directory the test user owns.
        """
        args = list(extra_args)
        defaults = ["--parsable"]
        if not _has_flag(args, "-o", "--output"):
            defaults.append(f"--output={self.output_dir}/slurm-%j.out")
        if not _has_flag(args, "-D", "--chdir"):
            defaults.append(f"--chdir={self.output_dir}")
        result = self.run(["sbatch"] + defaults + args, user=user, input=script_text, env=env)
        job_id = result.stdout.strip().split(";")[0]
        if not job_id:
            raise SlurmError(f"sbatch printed no job id:\n{result.stdout}{result.stderr}")
        self.jobs.append(job_id)
        return job_id

    def state(self, job_id):
        """The job's state: squeue's while slurmctld remembers the job, then the job completion log's."""
        result = self._root(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], check=False)
        lines = result.stdout.split()
        if result.returncode == 0 and lines:
            return lines[0]
        record = self.completion(job_id)
        if record:
            return record["State"].split()[0]
        raise SlurmError(f"job {job_id} is unknown to squeue and to the job completion log: {result.stderr}")

    def job(self, job_id):
        """``scontrol show job`` as a dict; empty once slurmctld has forgotten the job (MinJobAge)."""
        result = self._root(["scontrol", "show", "job", "-o", job_id], check=False)
        if result.returncode != 0:
            return {}
        fields = {}
        for item in result.stdout.strip().split(" "):
            key, sep, value = item.partition("=")
            if sep:
                fields[key] = value
        return fields

    def completion(self, job_id):
        """The job's record in the job completion log (``sacct --completion``, root only), or None."""
        result = self._root(["sacct", "-c", "-n", "-P", "-j", job_id, "-o", "JobID,State,ExitCode,End"],
                            check=False)
        for line in result.stdout.splitlines():
            parts = line.split("|")
            if len(parts) == 4 and parts[0] == str(job_id):
                return dict(zip(("JobID", "State", "ExitCode", "End"), parts))
        return None

    def wait(self, job_id, states, timeout=60):
        """Wait until the job is in one of ``states`` (a state or several): the state reached.

        Fails early if the job ends in another state, and on timeout, with the job's details and output.
        """
        wanted = {states} if isinstance(states, str) else set(states)
        deadline = time.monotonic() + timeout
        state = None
        while True:
            state = self.state(job_id)
            if state in wanted:
                return state
            if state in FINAL_STATES:
                raise SlurmError(f"job {job_id} ended {state}, not {'/'.join(sorted(wanted))}\n"
                                 f"{self.describe(job_id)}")
            if time.monotonic() > deadline:
                raise SlurmError(f"job {job_id} is {state}, not {'/'.join(sorted(wanted))}, after {timeout} s\n"
                                 f"{self.describe(job_id)}")
            time.sleep(POLL)

    def cancel(self, job_id, user=None, signal=None, full=False, batch=False, check=True):
        """scancel as ``user`` (default: the test user, the jobs' owner). Plain, it ends the job: SIGCONT and
        SIGTERM to every process of the job, SIGKILL KillWait (10 s) later. With ``signal`` it only signals
        (``full``: the batch shell and its children too, ``batch``: the batch shell only)."""
        args = ["scancel"]
        if signal is not None:
            name = signal.name if isinstance(signal, signals.Signals) else str(signal)
            args.append(f"--signal={name[3:] if name.startswith('SIG') else name}")
        if full:
            args.append("--full")
        if batch:
            args.append("--batch")
        return self.run(args + [job_id], user=user, check=check)

    def pids(self, job_id):
        """The pids of the job's processes on this node, as proctrack knows them (slurmstepd excluded)."""
        result = self._root(["scontrol", "listpids", job_id], check=False)
        pids = []
        for line in result.stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0].isdigit():
                pids.append(int(fields[0]))
        return pids

    def output(self, job_id):
        """What the job wrote to its default output file (empty if it wrote nothing, or elsewhere)."""
        path = self.output_dir / f"slurm-{job_id}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def describe(self, job_id):
        """The job's details, output and the daemons' log tails, for failure messages."""
        fields = self.job(job_id)
        keys = ("JobState", "Reason", "ExitCode", "RunTime", "NodeList", "StdOut")
        summary = " ".join(f"{k}={fields[k]}" for k in keys if k in fields) or "(unknown to slurmctld)"
        return (f"scontrol show job {job_id}: {summary}\ncompletion record: {self.completion(job_id)}\n"
                f"--- job output ---\n{self.output(job_id) or '(empty)'}\n{self.logs()}")

    def logs(self, lines=20):
        """The last lines of slurmctld's and slurmd's logs."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = STATE_DIR / "log" / name
            try:
                text = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            except OSError as error:
                text = f"({error})"
            parts.append(f"--- {path} ---\n{text}")
        return "\n".join(parts)

    # -- files ------------------------------------------------------------------------------------------------
    def user_dir(self, name=None, user=None):
        """A new directory owned by ``user`` (default: the test user), mode 0755, below the session's 0755
        directory in /tmp."""
        entry = _user_entry(user) or self.user
        self._dirs += 1
        path = self.scratch / f"{self._dirs:03d}-{name or 'dir'}"
        path.mkdir(mode=0o755)
        os.chmod(path, 0o755)
        if entry.pw_uid != os.geteuid():
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return path

    # -- end of session ---------------------------------------------------------------------------------------
    def cancel_all(self, timeout=60):
        """Cancel every job submitted here that is not over, and wait for them to end."""
        active = [job for job in self.jobs if self._active(job)]
        if not active:
            return
        self._root(["scancel"] + active, check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(self._active(job) for job in active):
            time.sleep(POLL)

    def _active(self, job_id):
        try:
            return self.state(job_id) not in FINAL_STATES
        except SlurmError:
            return False


def _script(*args, check=True):
    result = subprocess.run(["bash", str(SETUP), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=SETUP_TIMEOUT)
    if check and result.returncode != 0:
        pytest.fail(f"scripts/setup-slurm.sh {' '.join(args)} failed (status {result.returncode}):\n"
                    f"{result.stdout}", pytrace=False)
    return result


@pytest.fixture(scope="session")
def slurm():
    """The single-node Slurm cluster of scripts/setup-slurm.sh, started for the session: a SlurmCluster."""
    if shutil.which("sbatch") is None or shutil.which("slurmctld", path="/usr/sbin:/usr/bin") is None:
        pytest.fail("Slurm is not installed: run scripts/setup-tests.sh as root (it runs "
                    "scripts/setup-slurm.sh --install)", pytrace=False)
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(TEST_USER)
        except KeyError:
            pytest.fail(f"test user {TEST_USER!r} does not exist; run scripts/setup-tests.sh as root first",
                        pytrace=False)
    else:
        user = pwd.getpwuid(os.geteuid())
    # A lease for this process: the cluster stops when the last session that holds one ends, unless it was
    # started by hand (scripts/setup-slurm.sh --help). Other sessions may share the cluster meanwhile.
    leased = os.geteuid() == 0
    if leased:
        _script("--start", "--lease", str(os.getpid()))  # also when running: applies a changed configuration
    elif _script("--status", check=False).returncode != 0:
        pytest.fail("the Slurm test cluster is not running; start it as root: bash scripts/setup-slurm.sh",
                    pytrace=False)
    scratch = Path(tempfile.mkdtemp(prefix="cvmfs-pilot-slurm-", dir="/tmp"))
    os.chmod(scratch, 0o755)
    cluster = SlurmCluster(user, scratch)
    try:
        yield cluster
    finally:
        cluster.cancel_all()
        if leased:
            _script("--release", str(os.getpid()))
        shutil.rmtree(scratch, ignore_errors=True)
