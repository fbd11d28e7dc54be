"""The ``slurm`` provider: each pilot is a batch job submitted with sbatch.

Slurm transfers no files: the bootstrap, the credential copy, the work directory and the report stay in the
pilot's record directory, which the compute nodes must see at the same path (a shared file system, as on a
single-node test cluster or a site whose home or scratch file system is shared).

Options (``[entries.NAME.provider_options]``): ``partition``, ``time`` (``HH:MM:SS``), ``extra_args`` (more
sbatch arguments). A job's state comes from ``squeue -t all`` while slurmctld keeps the job (MinJobAge after it
ends), then from accounting (``sacct``), the job completion log (``sacct --completion``, for clusters without
slurmdbd) or ``scontrol show job``, in that order; a job none of them knows any more has ended.
"""

import re
import shlex
import subprocess

from ..errors import ProviderError, SubmitError
from . import ENDED, QUEUED, RUNNING, UNKNOWN, Provider

TIMEOUT = 60
JOB_ID = re.compile(r"[0-9]+(_[0-9]+)?\Z")
QUEUED_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "CONFIGURING"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}


class SlurmUnreachable(Exception):
    """slurmctld did not answer."""


def _run(command):
    """The CompletedProcess of command (text); SlurmUnreachable when the command is missing or hangs."""
    try:
        return subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=TIMEOUT, check=False)
    except FileNotFoundError:
        raise SlurmUnreachable("{} is not installed here; run this on a Slurm submit host".format(command[0])) \
            from None
    except subprocess.TimeoutExpired:
        raise SlurmUnreachable("{} did not answer within {} s".format(shlex.join(command), TIMEOUT)) from None


def _first_word(text):
    """The first state in command output: 'CANCELLED by 1001' -> 'CANCELLED'."""
    for line in text.splitlines():
        if line.split():
            return line.split()[0].rstrip("+")
    return None


def squeue_state(job_id):
    """The state slurmctld reports, or None when it no longer knows the job."""
    result = _run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"])
    if result.returncode == 0:
        return _first_word(result.stdout)
    if "invalid job id" in result.stderr.lower():
        return None
    raise SlurmUnreachable("squeue -j {} failed: {}".format(job_id, result.stderr.strip()))


def sacct_state(job_id, completion=False):
    """The state from accounting (or, with completion, the job completion log), or None when it has none."""
    command = ["sacct", "-n", "-X", "-j", job_id, "-o", "State"]
    if completion:
        command[1:1] = ["--completion"]
    result = _run(command)
    return _first_word(result.stdout) if result.returncode == 0 else None


def scontrol_state(job_id):
    result = _run(["scontrol", "show", "job", job_id])
    match = re.search(r"\bJobState=(\w+)", result.stdout) if result.returncode == 0 else None
    return match.group(1) if match else None


class SlurmProvider(Provider):
    name = "slurm"

    def submission(self, record):
        command = ["sbatch", "--parsable", "--job-name", "cvmfs-pilot-" + record.entry,
                   "--chdir", str(record.directory),
                   "--output", str(record.stdout_path), "--error", str(record.stderr_path)]
        if self.options.get("partition"):
            command += ["--partition", self.options["partition"]]
        if self.options.get("time"):
            command += ["--time", self.options["time"]]
        return command + list(self.options.get("extra_args") or []) + list(record.command)

    def describe(self, record):
        return shlex.join(self.submission(record))

    def submit(self, record):
        command = self.submission(record)
        try:
            result = _run(command)
        except SlurmUnreachable as exc:
            raise SubmitError(str(exc)) from None
        job_id = result.stdout.strip().split(";")[0]
        if result.returncode != 0 or not JOB_ID.match(job_id):
            raise SubmitError("sbatch refused the pilot (exit status {}): {}; check the entry's provider_options "
                              "(partition, time, extra_args)".format(result.returncode,
                                                                      (result.stderr or result.stdout).strip()))
        return job_id

    def batch_state(self, record):
        job_id = record.job_id
        try:
            state = squeue_state(job_id)
        except SlurmUnreachable:
            return UNKNOWN
        if state is None:
            state = sacct_state(job_id) or sacct_state(job_id, completion=True) or scontrol_state(job_id)
        if state in QUEUED_STATES:
            return QUEUED
        if state in RUNNING_STATES:
            return RUNNING
        return ENDED  # COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, ... or forgotten

    def cancel(self, record):
        try:
            result = _run(["scancel", record.job_id])
        except SlurmUnreachable as exc:
            raise ProviderError("cannot remove pilot {} (Slurm job {}): {}".format(record.id, record.job_id,
                                                                                   exc)) from None
        if result.returncode != 0:
            raise ProviderError("scancel {} failed for pilot {}: {}".format(record.job_id, record.id,
                                                                            result.stderr.strip()))


PROVIDER = SlurmProvider
