"""What a pilot records in its work directory, so that ``node cleanup`` can undo it after a crash or ``kill -9``.

``<work dir>/.cvmfs-pilot/`` (mode 0700) holds ``lock`` (flock'd for the pilot's lifetime), ``state.json``
(mode, mount directory, mounts, server and job processes, each process with its start time so that a reused pid
is never mistaken for ours), the per-repository configuration files, the servers' logs, the control socket and
the ``cvmfs-mount``/``cvmfs-umount`` scripts.
"""

import errno
import fcntl
import json
import os

from cvmfs_pilot.node import atomic_file

RUN_DIR_NAME = ".cvmfs-pilot"
STATE_NAME = "state.json"
LOCK_NAME = "lock"


class PilotBusy(Exception):
    """Another pilot is alive in this work directory."""


def process_start(pid):
    """The start time of process pid (clock ticks since boot, /proc/PID/stat field 22), or None if it is gone."""
    try:
        with open("/proc/{}/stat".format(pid), "rb") as stat:
            text = stat.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # after the command name, which may hold spaces
    return int(fields[19])


def process_record(pid):
    return {"pid": pid, "start": process_start(pid)}


def is_alive(record):
    """Whether the process of a {"pid", "start"} record is still the one recorded."""
    return bool(record) and record.get("start") is not None and process_start(record["pid"]) == record["start"]


class RunDirectory(object):
    def __init__(self, work_dir):
        self.work_dir = os.path.abspath(work_dir)
        self.path = os.path.join(self.work_dir, RUN_DIR_NAME)
        self._lock_fd = None

    def join(self, *names):
        return os.path.join(self.path, *names)

    def acquire(self):
        """Create the directory and hold its lock; PilotBusy if another live pilot holds it."""
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        fd = os.open(self.join(LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            state = self.load() or {}
            raise PilotBusy("another pilot (pid {}) is running in {}; give each pilot a work directory of its "
                            "own".format(state.get("pilot", {}).get("pid", "unknown"), self.work_dir))
        self._lock_fd = fd

    def release(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def load(self):
        try:
            with open(self.join(STATE_NAME)) as handle:
                state = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ValueError("cannot read {}: {}".format(self.join(STATE_NAME), exc))
        return state if isinstance(state, dict) else None

    def save(self, state):
        atomic_file.write_atomically(self.join(STATE_NAME), json.dumps(state, indent=1, sort_keys=True).encode(),
                                     mode=0o600)
