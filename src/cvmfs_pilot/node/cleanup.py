"""``node cleanup``: undo what a pilot left in its work directory, from its records; idempotent.

It ends the job's process group and the servers the pilot recorded (each only if it is still the recorded
process: same pid and start time), unmounts the FUSE mounts below ``<work dir>/cvmfs`` (lazily when busy),
removes the empty mount points and the run directory. It never touches anything outside the work directory:
another pilot's mounts and the host's /cvmfs are out of its reach. A live pilot holds the run directory's lock,
and cleanup refuses to run beside it.
"""

import logging
import os
import signal
import stat

from cvmfs_pilot.fuse import mount as mounting
from cvmfs_pilot.node import decide, records

log = logging.getLogger(__name__)


def _fuse_mounts_below(directory):
    """FUSE mount points below directory in this mount namespace, deepest first."""
    prefix = directory.rstrip("/") + "/"
    found = [point for point, kind in mounting.mount_table() if point.startswith(prefix) and kind.startswith("fuse")]
    return sorted(found, key=len, reverse=True)


def end_job_group(job):
    """SIGKILL what is left of the job's process group (members started after the job, which are ours)."""
    if not job or not job.get("group") or job.get("start") is None:
        return []
    ended = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.getpgid(pid) != job["pid"] or os.stat("/proc/" + entry).st_uid != os.getuid():
                continue
        except OSError:
            continue
        started = records.process_start(pid)
        if started is not None and started >= job["start"]:
            try:
                os.kill(pid, signal.SIGKILL)
                ended.append(pid)
            except OSError:
                pass
    return ended


def unmount_below(mount_dir):
    actions = []
    for point in _fuse_mounts_below(mount_dir):
        try:
            mounting.unmount(point)
        except mounting.MountError:
            try:
                mounting.unmount(point, lazy=True)
            except mounting.MountError as exc:
                log.warning("%s", exc)
                continue
        actions.append("unmounted " + point)
    return actions


def remove_mount_directories(mount_dir):
    """rmdir the (empty) mount points below mount_dir and mount_dir itself; never removes contents."""
    if not os.path.isdir(mount_dir) or os.path.islink(mount_dir):
        return
    for name in os.listdir(mount_dir):
        try:
            os.rmdir(os.path.join(mount_dir, name))
        except OSError:
            pass
    try:
        os.rmdir(mount_dir)
    except OSError:
        pass


def _remove_tree(path):
    """Remove path and what is below, never crossing into another file system (a mount point stays)."""
    device = os.lstat(path).st_dev
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames:
            _remove(os.unlink, os.path.join(dirpath, name))
        for name in dirnames:
            full = os.path.join(dirpath, name)
            try:
                info = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISLNK(info.st_mode):
                _remove(os.unlink, full)
            elif info.st_dev == device:
                _remove(os.rmdir, full)
    _remove(os.rmdir, path)


def _remove(function, path):
    try:
        function(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc.strerror)


def remove_run_directory(run_dir):
    run_dir.release()
    if os.path.isdir(run_dir.path):
        _remove_tree(run_dir.path)


def clean_stale(run_dir, mount_dir, state=None):
    """Undo a dead pilot's leftovers (the caller holds the run directory's lock); what was done."""
    state = state if state is not None else (run_dir.load() or {})
    actions = ["ended process {}".format(pid) for pid in end_job_group(state.get("job"))]
    for server in state.get("servers") or ():
        if records.is_alive(server):
            try:
                os.kill(server["pid"], signal.SIGKILL)
                actions.append("ended server {}".format(server["pid"]))
            except OSError:
                pass
    actions += unmount_below(mount_dir)
    remove_mount_directories(mount_dir)
    for name in os.listdir(run_dir.path):
        if name != records.LOCK_NAME:
            path = run_dir.join(name)
            if os.path.isdir(path) and not os.path.islink(path):
                _remove_tree(path)
            else:
                os.unlink(path)
    return actions


def cleanup(work_dir):
    """Clean up after the pilot of work_dir; the actions taken. records.PilotBusy beside a live pilot."""
    run_dir = records.RunDirectory(work_dir)
    mount_dir = os.path.join(run_dir.work_dir, decide.MOUNT_DIR_NAME)
    if not os.path.isdir(run_dir.path):
        actions = unmount_below(mount_dir)
        remove_mount_directories(mount_dir)
        return actions
    run_dir.acquire()
    try:
        actions = clean_stale(run_dir, mount_dir)
    finally:
        remove_run_directory(run_dir)
    return actions + ["removed " + run_dir.path]
