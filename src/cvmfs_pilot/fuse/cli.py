"""``cvmfs-pilot fs``: mount repositories (``mount``, ``umount``), and read them without mounting (``info``, ``ls``,
``stat``, ``cat``, ``get``: :mod:`cvmfs_pilot.client.cli`).

``fs mount [-f] [-o OPTION[,OPTION...]] FQRN MOUNTPOINT`` takes the arguments of the real client's ``cvmfs2``, so
that the node layer drives both engines the same way. Options:

* ``config=FILE[:FILE...]``: configuration files. cvmfs2 then reads only these; here their assignments are
  applied as overrides on top of the usual chain below ``--config-dir`` (default /etc/cvmfs, which need not
  exist), so a file that sets every parameter the repository needs gives the same result;
* ``debug``: log every request (to stderr in the foreground, and to the file CVMFS_DEBUGLOG names);
* ``allow_other``: let other users in (through fusermount only with ``user_allow_other`` in /etc/fuse.conf).

Without ``-f`` the command returns once the mount answers, with the server left running in the background (exit
status 0), or fails with the reason (1), as cvmfs2 does. With ``-f`` it serves in the foreground. Either way the
server stops when the repository is unmounted, and on SIGTERM or SIGINT unmounts it lazily first. Log files, as
with cvmfs2: CVMFS_USYSLOG (messages) and CVMFS_DEBUGLOG (also every request).

``fs umount MOUNTPOINT`` unmounts; if the mount is busy (even with its server killed), it is detached lazily and
disappears when the last process using it leaves.
"""

import errno
import logging
import os
import signal
import sys

from cvmfs_pilot.client import cli as client_cli
from cvmfs_pilot.client.cache import CacheError
from cvmfs_pilot.client.config import DEFAULT_CONFIG_DIR, ConfigurationError
from cvmfs_pilot.client.repository import error_text
from cvmfs_pilot.client.session import open_repository
from cvmfs_pilot.client.shellvars import ShellVariables

from . import mount as mounting
from .filesystem import CvmfsFileSystem
from .protocol import ProtocolError
from .server import FuseServer

log = logging.getLogger(__name__)

DESCRIPTION = "Mount CernVM-FS repositories, or read them without mounting."
SHUTDOWN_GRACE = 5.0  # seconds a stopping server keeps serving processes still inside a lazily unmounted mount
READY = b"ready"
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


class MountOptions(object):
    """The ``-o`` options of ``fs mount``."""

    def __init__(self, config_files=(), debug=False, allow_other=False):
        self.config_files = list(config_files)
        self.debug = debug
        self.allow_other = allow_other

    @classmethod
    def parse(cls, values):
        """From the ``-o`` arguments (each a comma-separated list); ValueError for an unknown option."""
        options = cls()
        for value in values:
            for option in (o.strip() for o in value.split(",")):
                key, _, argument = option.partition("=")
                if key == "config" and argument:
                    options.config_files += [os.path.abspath(f) for f in argument.split(":") if f]
                elif option == "debug":
                    options.debug = True
                elif option == "allow_other":
                    options.allow_other = True
                elif option:
                    raise ValueError("unknown mount option {!r}; supported: config=FILE[:FILE...], debug, "
                                     "allow_other".format(option))
        return options


def _add_commands(commands):
    mount = commands.add_parser("mount", help="mount a repository (arguments as for cvmfs2)")
    mount.add_argument("-f", dest="foreground", action="store_true",
                       help="serve in the foreground (default: return once mounted, serving in the background)")
    mount.add_argument("-o", dest="mount_options", action="append", default=[], metavar="OPTIONS",
                       help="comma-separated: config=FILE[:FILE...], debug, allow_other")
    mount.add_argument("--config-dir", default=DEFAULT_CONFIG_DIR, metavar="DIR",
                       help="configuration root (default %(default)s)")
    mount.add_argument("fqrn")
    mount.add_argument("mountpoint")
    umount = commands.add_parser("umount", help="unmount a repository (lazily if it is busy)")
    umount.add_argument("mountpoint")


def build_parser(prog):
    return client_cli.build_parser(prog, DESCRIPTION, _add_commands)


def main(argv, prog):
    args = build_parser(prog).parse_args(argv)
    if args.command == "mount":
        return mount_command(args, prog)
    if args.command == "umount":
        return umount_command(args, prog)
    return client_cli.run(args, prog)


def _fail(prog, exc):
    sys.stderr.write("{}: error: {}\n".format(prog, error_text(exc)))
    return 1


# -- fs umount --------------------------------------------------------------------------------------------------

def umount_command(args, prog):
    mountpoint = mounting.canonical_mountpoint(args.mountpoint)
    if not mounting.is_mounted(mountpoint):
        return _fail(prog, "{} is not a mount point".format(mountpoint))
    try:
        mounting.unmount(mountpoint)
    except mounting.MountError as exc:
        try:
            mounting.unmount(mountpoint, lazy=True)
        except mounting.MountError as lazy_exc:
            return _fail(prog, lazy_exc)
        sys.stderr.write("{}: {} was busy ({}); detached it lazily: it disappears when the last process using it "
                         "leaves\n".format(prog, mountpoint, exc))
    return 0


# -- fs mount ---------------------------------------------------------------------------------------------------

def mount_command(args, prog):
    try:
        options = MountOptions.parse(args.mount_options)
    except ValueError as exc:
        return _fail(prog, exc)
    args.mountpoint = os.path.abspath(args.mountpoint)
    args.config_dir = os.path.abspath(args.config_dir)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("{}: %(levelname)s: %(message)s".format(prog)))
    handler.setLevel(logging.DEBUG if options.debug else logging.WARNING)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG if options.debug else logging.INFO)

    def serve(announce):
        try:
            return _serve(args, options, announce)
        except (OSError, ValueError, ProtocolError, CacheError) as exc:  # ValueError: configuration, keys, catalogs
            return _fail(prog, exc)

    if args.foreground:
        return serve(lambda: None)
    return _in_background(serve)


def _in_background(serve):
    """Run ``serve(announce)`` in a daemon (new session, cwd /): this process waits until it calls ``announce()``
    (the mount answers) and returns 0, or returns 1 if it ends without. ``announce`` points the daemon's
    standard streams to /dev/null, so that whoever waits for this command's output is not held up."""
    readable, writable = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(readable)
        code = 1
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            os.chdir("/")
            code = serve(lambda: _detach(writable))
        except BaseException:
            logging.getLogger(__name__).exception("the mount server failed")
        finally:
            logging.shutdown()
            os._exit(code)
    os.close(writable)
    answer = b""
    while True:
        chunk = os.read(readable, 64)
        if not chunk:
            break
        answer += chunk
    os.close(readable)
    os.waitpid(child, 0)
    return 0 if answer == READY else 1


def _detach(ready_fd):
    sys.stdout.flush()
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    os.write(ready_fd, READY)
    os.close(ready_fd)


def config_file_overrides(files, environ):
    """The assignments of ``-o config=`` files, later files winning, as configuration overrides."""
    variables = ShellVariables(dict(environ))
    for path in files:
        if not os.path.exists(path):
            raise ConfigurationError("the configuration file {} (-o config=) does not exist".format(path))
        variables.source(path)
    for warning in variables.warnings:
        log.warning("%s", warning)
    return {name: setting.value for name, setting in variables.settings.items()}


def _log_to_files(config, debug):
    """Log to CVMFS_USYSLOG (messages) and CVMFS_DEBUGLOG (everything), as cvmfs2 does; True if debugging."""
    root = logging.getLogger()
    debug = debug or bool(config.get("CVMFS_DEBUGLOG"))
    for key, level in (("CVMFS_USYSLOG", logging.INFO), ("CVMFS_DEBUGLOG", logging.DEBUG)):
        path = config.get(key)
        if path:
            try:
                handler = logging.FileHandler(path)
            except OSError as exc:
                raise ConfigurationError("cannot open the log file {} named by {} ({}): {}".format(
                    path, key, config.origin(key), exc.strerror))
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            handler.setLevel(level)
            root.addHandler(handler)
    if debug:
        root.setLevel(logging.DEBUG)
    return debug


class _Wakeup(object):
    """A pipe that wakes the main thread: written by signals (set_wakeup_fd) and by the server's events."""

    def __init__(self):
        self.readable, self.writable = os.pipe()
        os.set_blocking(self.writable, False)
        self.signals = []
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, self._on_signal)
        signal.set_wakeup_fd(self.writable)

    def _on_signal(self, number, frame):
        self.signals.append(number)

    def poke(self):
        try:
            os.write(self.writable, b"x")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def wait(self):
        os.read(self.readable, 256)

    def close(self):
        signal.set_wakeup_fd(-1)
        os.close(self.readable)
        os.close(self.writable)


def _serve(args, options, announce):
    """Open the repository, mount it, serve until unmounted or signalled; the exit status."""
    wakeup = _Wakeup()
    try:
        overrides = config_file_overrides(options.config_files, os.environ)
        repository = open_repository(args.fqrn, args.config_dir, overrides)
        try:
            debug = _log_to_files(repository.config, options.debug)
            filesystem = CvmfsFileSystem(repository)
        except BaseException:
            repository.close()
            raise
        if wakeup.signals:
            filesystem.close()
            return 1
        try:
            if mounting.is_mounted(args.mountpoint):
                raise mounting.MountError(errno.EBUSY, "{} is already a mount point; unmount it first (fs umount)"
                                          .format(args.mountpoint))
            mount = mounting.mount(args.mountpoint, options.allow_other)
        except BaseException:
            filesystem.close()
            raise
        return _run_mounted(args, mount, filesystem, debug, wakeup, announce)
    finally:
        wakeup.close()


def _run_mounted(args, mount, filesystem, debug, wakeup, announce):
    server = FuseServer(mount.fd, filesystem, debug=debug, on_change=wakeup.poke)
    server.start()
    announced = False
    try:
        while not server.stopped.is_set() and not wakeup.signals:
            if server.ready.is_set() and not announced:
                revision = filesystem.repository.manifest.revision
                sys.stdout.write("mounted {} (revision {}) on {}\n".format(args.fqrn, revision, mount.mountpoint))
                sys.stdout.flush()
                log.info("mounted %s revision %d on %s (%s)", args.fqrn, revision, mount.mountpoint, mount.method)
                announce()
                announced = True
            wakeup.wait()
        if not server.stopped.is_set() or server.error is not None:  # else the kernel has unmounted it already
            if wakeup.signals:
                log.info("signal %d: unmounting %s", wakeup.signals[0], mount.mountpoint)
            try:
                mount.unmount(lazy=True)
            except mounting.MountError as exc:
                log.warning("%s", exc)
            if not server.join(SHUTDOWN_GRACE):
                log.warning("%s is still in use after %.0f s; stopping anyway", mount.mountpoint, SHUTDOWN_GRACE)
        if server.error is not None:
            raise server.error
        log.info("%s unmounted", mount.mountpoint)
        return 0 if announced else 1
    finally:
        filesystem.close()
        server.close()
        mount.close()
