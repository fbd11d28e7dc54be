"""The ``local`` provider: each pilot is a detached process on this host, in a session of its own.

The record keeps the pid and the process's start time (/proc/PID/stat field 22), so that a pid reused by another
process is never taken for the pilot. Removing sends SIGTERM to the pilot's process group and SIGKILL to what is
left after ``kill_after`` seconds (provider option, default 60).
"""

import os
import shlex
import signal
import subprocess
import time

from cvmfs_pilot.client.cache_db import process_start_time

from ..config import DEFAULT_KILL_AFTER
from ..errors import SubmitError
from . import ENDED, RUNNING, Provider

SHELL = "/bin/sh"
POLL_SECONDS = 0.1
_children = {}  # pid -> Popen of pilots started by this process, polled so that none stays a zombie


def _group_members(pgid):
    """Pids of the live (not zombie) processes in process group pgid."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != pgid:
                continue
        except OSError:
            continue
        if process_start_time(int(entry)) is not None:
            members.append(int(entry))
    return members


class LocalProvider(Provider):
    name = "local"

    def submission(self, record):
        return [SHELL] + list(record.command)

    def describe(self, record):
        return shlex.join(self.submission(record))

    def submit(self, record):
        try:
            with open(record.stdout_path, "ab") as out, open(record.stderr_path, "ab") as err:
                process = subprocess.Popen(self.submission(record), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                           cwd=str(record.directory), start_new_session=True, close_fds=True)
        except OSError as exc:
            raise SubmitError("cannot start {}: {}".format(SHELL, exc.strerror)) from None
        _children[process.pid] = process
        record.details = {"pid": process.pid, "start_time": process_start_time(process.pid)}
        return str(process.pid)

    def _alive(self, record):
        pid, start_time = record.details.get("pid"), record.details.get("start_time")
        child = _children.get(pid)
        if child is not None and child.poll() is not None:
            del _children[pid]
        return start_time is not None and process_start_time(pid) == start_time

    def batch_state(self, record):
        return RUNNING if self._alive(record) else ENDED

    def cancel(self, record):
        """SIGTERM to the pilot's process group, SIGKILL to its members left after kill_after seconds; waits
        until the group is empty (or 10 more seconds)."""
        if not self._alive(record):
            return
        pgid = record.details["pid"]  # a session leader: its process group has its pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + self.options.get("kill_after", DEFAULT_KILL_AFTER)
        while time.monotonic() < deadline:
            self._alive(record)  # reaps the pilot if it is our child
            if not _group_members(pgid):
                return
            time.sleep(POLL_SECONDS)
        for pid in _group_members(pgid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while _group_members(pgid) and time.monotonic() < deadline:
            self._alive(record)
            time.sleep(POLL_SECONDS)


PROVIDER = LocalProvider
