"""Trials that may fail badly (a kernel that hangs on a dead FUSE mount, a security policy that kills the
caller), each run in a child process with a timeout so that the pilot itself never hangs or crashes.

:func:`run` starts ``sys.executable`` on this module's :func:`main`; the child prints one JSON line, ``{"ok":
true, ...}`` or ``{"ok": false, "errno": N, "error": "what failed"}``. The child leaves nothing behind: its
namespaces and the mounts in them vanish when it exits, and the parent removes the directories it made.
"""

import json
import os
import subprocess
import sys
import tempfile

import cvmfs_pilot
from cvmfs_pilot.fuse import mount

USER_NAMESPACE = "userns"   # unshare(USER|NS), write the id maps, make / private
FUSE_IN_USER_NAMESPACE = "fuse-userns"   # the same, then open /dev/fuse and mount(2) it on a directory
STAT = "stat"   # stat a path and list it (a directory of /cvmfs answers)

_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); from cvmfs_pilot.node.trial import main; "
         "sys.exit(main(sys.argv[2:]))")
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(cvmfs_pilot.__file__)))


def run(trial, argument="", timeout=10.0):
    """Run one trial in a child and return its result dict; a timeout, crash or unreadable answer gives
    ``{"ok": None, "error": ...}`` (the trial could not decide)."""
    command = [sys.executable, "-I", "-c", _BOOT, _PACKAGE_ROOT, trial, argument]
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, universal_newlines=True)
    except OSError as exc:
        return {"ok": None, "error": "cannot start {}: {}".format(sys.executable, exc.strerror)}
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        try:
            child.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            pass  # stuck in the kernel (a hung mount): nothing more we can do; it is reaped when it returns
        return {"ok": None, "error": "no answer within {:g} s".format(timeout)}
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": None, "error": "the trial process ended with status {} and no result: {}".format(
            child.returncode, err.strip()[-500:] or "no message")}


def run_fuse_in_user_namespace(timeout=10.0):
    """:data:`FUSE_IN_USER_NAMESPACE` on a fresh temporary directory, which is removed afterwards."""
    directory = tempfile.mkdtemp(prefix="cvmfs-pilot-probe-")
    try:
        return run(FUSE_IN_USER_NAMESPACE, directory, timeout)
    finally:
        try:
            os.rmdir(directory)
        except OSError:
            pass  # still in use by a child stuck in the kernel


def _user_namespace(_):
    mount.enter_user_namespace()
    return {}


def _fuse_in_user_namespace(directory):
    mount.enter_user_namespace()
    mounted = mount.mount_in_current_namespace(directory)
    mounted.close()  # aborts the connection; the mount itself vanishes with this process's namespace
    return {}


def _stat(path):
    info = os.stat(path)
    return {"entries": len(os.listdir(path)), "mode": info.st_mode}


TRIALS = {USER_NAMESPACE: _user_namespace, FUSE_IN_USER_NAMESPACE: _fuse_in_user_namespace, STAT: _stat}


def main(argv):
    trial, argument = argv
    try:
        result = dict(TRIALS[trial](argument), ok=True)
    except OSError as exc:
        result = {"ok": False, "errno": exc.errno, "error": str(exc)}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0
