"""The two engines that serve a repository, both driven through the upstream client's command-line contract:

    ENTRY [-f] -o config=FILE FQRN MOUNTPOINT

* ``cvmfs2``: the upstream binary of a client distribution, with the distribution's libraries on
  ``LD_LIBRARY_PATH``; FILE is the whole configuration chain relocated into the distribution
  (:mod:`relocate`), since cvmfs2 then reads nothing else.
* ``python``: our own client (``cvmfs-pilot fs mount``, from this installation or a python distribution's
  zipapp); FILE holds the pilot's overrides on top of the chain below its configuration directory.

Servers run in the foreground (``-f``) as children of the process that mounts, so that they can be told to die
with it (PR_SET_PDEATHSIG) and are known by pid; a mount counts as done once it appears in the mount table and
answers.
"""

import collections
import errno
import os
import resource
import select
import shlex
import signal
import subprocess
import sys
import time

import cvmfs_pilot
from cvmfs_pilot.client.config import config_repository_name
from cvmfs_pilot.fuse import mount as mounting
from cvmfs_pilot.node import namespaces, relocate

CVMFS2, PYTHON = "cvmfs2", "python"
MOUNT_TIMEOUT = 120.0  # seconds until a repository must answer (the first catalog may be large)
STOP_GRACE = 5.0
_BOOT = "import sys; sys.path.insert(0, sys.argv.pop(1)); from cvmfs_pilot.cli import main; sys.exit(main())"
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(cvmfs_pilot.__file__)))

MountedRepository = collections.namedtuple("MountedRepository", "fqrn mountpoint process log_path")


def self_command():
    """The command line that runs this very cvmfs-pilot (installed, source tree or zipapp) with this Python."""
    return [sys.executable, "-I", "-c", _BOOT, PACKAGE_ROOT]


def _assignments(settings):
    return "".join("{}={}\n".format(key, shlex.quote(str(value))) for key, value in settings)


class PythonEngine(object):
    """Our client. ``command``: how to run cvmfs-pilot; ``config_dir``: the chain's root (/etc/cvmfs, the
    pilot's --config-dir, or a python distribution's etc/cvmfs)."""

    name = PYTHON

    def __init__(self, config_dir, command=None):
        self.config_dir = config_dir
        self.command = list(command or self_command())

    def config_text(self, fqrn, mount_dir, overrides, log_path):
        settings = list(overrides.items()) + [("CVMFS_MOUNT_DIR", mount_dir)]
        return "# cvmfs-pilot node exec: overrides for {}\n{}".format(fqrn, _assignments(settings))

    def config_repository(self, overrides):
        return config_repository_name(self.config_dir, dict(overrides))

    def mount_command(self, fqrn, mountpoint, config_file):
        argv = self.command + ["fs", "mount", "-f", "--config-dir", self.config_dir, "-o",
                               "config=" + config_file, fqrn, mountpoint]
        return argv, dict(os.environ)


class Cvmfs2Engine(object):
    """The upstream client of an unpacked distribution (``dist``: its dist.json)."""

    name = CVMFS2

    def __init__(self, root, dist):
        self.root = root
        self.dist = dist
        self.entry_point = os.path.join(root, dist.get("entry_point") or "usr/bin/cvmfs2")
        self.library_dirs = [os.path.join(root, d) for d in dist.get("library_dirs") or ()]

    def config_repository(self, overrides):
        return overrides.get("CVMFS_CONFIG_REPOSITORY") or relocate.config_repository_of(self.root, self.dist)

    def config_text(self, fqrn, mount_dir, overrides, log_path):
        return relocate.relocated_config(self.root, fqrn, mount_dir, self.config_repository(overrides),
                                         overrides, log_path, _open_files_limit())

    def mount_command(self, fqrn, mountpoint, config_file):
        env = dict(os.environ)
        libraries = os.pathsep.join(self.library_dirs)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libraries, env.get("LD_LIBRARY_PATH")) if p)
        env["CVMFS_LIBRARY_PATH"] = libraries
        return [self.entry_point, "-f", "-o", "config=" + config_file, fqrn, mountpoint], env


def _open_files_limit():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def _die_with_parent():
    namespaces.die_with_parent()


def launch_server(engine, fqrn, mountpoint, config_file, log_path):
    """Start engine's server for fqrn at mountpoint, as a child that dies with this process; the
    MountedRepository (not mounted yet: see wait_until_mounted)."""
    argv, env = engine.mount_command(fqrn, mountpoint, config_file)
    with open(log_path, "ab") as log:
        try:
            process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       preexec_fn=_die_with_parent, close_fds=True)
        except OSError as exc:
            raise mounting.MountError(exc.errno, "cannot run the {} engine ({}): {}".format(
                engine.name, argv[0], exc.strerror))
    return MountedRepository(fqrn, mountpoint, process, log_path)


def wait_until_mounted(engine, mounted, timeout=MOUNT_TIMEOUT):
    """Wait until mounted's mount point is in the mount table and answers; MountError with the server's last
    words if the server ends first or the timeout passes. The kernel flags /proc/self/mountinfo (POLLPRI) on
    every change of the mount table, so a mount is seen as soon as it happens."""
    deadline = time.monotonic() + timeout
    with open("/proc/self/mountinfo", "rb") as table:
        poller = select.poll()
        poller.register(table, select.POLLPRI | select.POLLERR)
        while True:
            table.seek(0)
            table.read()  # consumes the change notification
            if mounting.is_mounted(mounted.mountpoint):
                break
            if mounted.process.poll() is not None:
                raise mounting.MountError(errno.EIO, "the {} engine could not mount {} (exit status {}): {}; its "
                                                     "log is {}".format(engine.name, mounted.fqrn,
                                                                        mounted.process.returncode,
                                                                        _last_words(mounted.log_path),
                                                                        mounted.log_path))
            if time.monotonic() > deadline:
                stop_server(mounted.process)
                raise mounting.MountError(errno.ETIMEDOUT, "the {} engine did not mount {} within {:.0f} s: {}; "
                                                           "its log is {}".format(engine.name, mounted.fqrn, timeout,
                                                                                  _last_words(mounted.log_path),
                                                                                  mounted.log_path))
            poller.poll(100)  # wakes on a mount table change; the timeout notices a server that ended
    os.stat(mounted.mountpoint)  # returns once the server has answered FUSE_INIT
    return mounted


def _last_words(log_path, limit=600):
    try:
        with open(log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - limit))
            text = log.read().decode("utf-8", "replace").strip()
    except OSError:
        return "no log"
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def stop_server(process, grace=STOP_GRACE):
    """Wait for a server that was unmounted to end; SIGTERM, then SIGKILL, if it does not."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None and process.poll() is None:
            try:
                process.send_signal(sig)
            except OSError:
                pass
        try:
            process.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue
