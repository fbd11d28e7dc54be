"""Mounting and unmounting FUSE file systems without libfuse, in the two ways Linux offers:

* the setuid helper ``fusermount3`` (or libfuse 2's ``fusermount``): it opens ``/dev/fuse``, mounts it and
  passes the descriptor back over a socket (``_FUSE_COMMFD``, SCM_RIGHTS). Needs no privilege;
* ``mount(2)`` called by this process: as real root, or as root of a user + mount namespace it has entered (the
  mount is then visible only inside that namespace).

:func:`mount` picks one as libfuse does; :func:`enter_user_namespace` enters such a namespace (for tests; the node
layer builds its own). Mounts are read-only, nosuid, nodev, with ``default_permissions`` (the kernel checks mode
bits itself) and appear as ``cvmfs2 on MOUNTPOINT type fuse``, as the real client's do.
"""

import array
import ctypes
import errno
import logging
import os
import re
import shutil
import socket
import stat
import subprocess

log = logging.getLogger(__name__)

FUSE_DEVICE = "/dev/fuse"
FSNAME = "cvmfs2"
FUSERMOUNT_NAMES = ("fusermount3", "fusermount")
FALLBACK_PATH = "/usr/bin:/bin:/usr/local/bin:/usr/sbin:/sbin"

FUSERMOUNT = "fusermount"  # method names
SYSCALL = "mount(2)"

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 2
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CAP_SYS_ADMIN = 21
ROOT_MODE = stat.S_IFDIR  # written in octal into the mount data: rootmode=40000


class MountError(OSError):
    """Mounting or unmounting failed; the message says why and what to do."""

    def __init__(self, code, message):
        OSError.__init__(self, code, message)

    def __str__(self):
        return self.strerror


class Mount(object):
    """A mounted FUSE file system: ``fd`` (close-on-exec) serves ``mountpoint``; ``method`` is FUSERMOUNT or
    SYSCALL, and :meth:`unmount` undoes it the same way."""

    def __init__(self, fd, mountpoint, method):
        self.fd = fd
        self.mountpoint = mountpoint
        self.method = method

    def unmount(self, lazy=True):
        unmount(self.mountpoint, lazy, use_fusermount=self.method == FUSERMOUNT)

    def close(self):
        """Close the descriptor: once every copy is closed, the kernel aborts the connection."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# -- libc -----------------------------------------------------------------------------------------------------

_libc = None


def libc():
    """libc via ctypes, loaded once (not with ctypes.util.find_library, which runs ldconfig)."""
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        libc.unshare.argtypes = [ctypes.c_int]
        _libc = libc
    return _libc


def check_result(result, what, hint=""):
    if result == -1:
        code = ctypes.get_errno()
        raise MountError(code, "{} failed: {}{}".format(what, os.strerror(code), hint))


def _encode(path):
    return os.fsencode(path)


# -- detection ------------------------------------------------------------------------------------------------

def find_fusermount():
    """The path of fusermount3 (preferred) or fusermount, searched in PATH and the usual system directories,
    or None."""
    search = os.pathsep.join(p for p in (os.environ.get("PATH", ""), FALLBACK_PATH) if p)
    for name in FUSERMOUNT_NAMES:
        path = shutil.which(name, path=search)
        if path:
            return path
    return None


def has_cap_sys_admin():
    """Whether this process holds CAP_SYS_ADMIN in its user namespace (root, or root of an entered one)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    except OSError:
        pass
    return os.geteuid() == 0


def available_methods():
    """The ways this process can mount, in the order :func:`mount` tries them: SYSCALL with CAP_SYS_ADMIN,
    FUSERMOUNT with a setuid-root helper (or as root). Empty if ``/dev/fuse`` is not usable."""
    if not os.access(FUSE_DEVICE, os.R_OK | os.W_OK):
        return []
    methods = []
    if has_cap_sys_admin():
        methods.append(SYSCALL)
    helper = find_fusermount()
    if helper is not None:
        info = os.stat(helper)
        if (info.st_mode & stat.S_ISUID and info.st_uid == 0) or os.geteuid() == 0:
            methods.append(FUSERMOUNT)
    return methods


def _unescape_mountinfo(field):
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def mount_table():
    """``(mount point, file system type)`` of each mount of this process's mount namespace (from
    /proc/self/mountinfo)."""
    table = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split(" ")
            if "-" in fields[4:]:
                table.append((_unescape_mountinfo(fields[4]), fields[fields.index("-", 4) + 1]))
    return table


def mount_points():
    """The mount points of this process's mount namespace."""
    return [point for point, _ in mount_table()]


def is_mounted(mountpoint):
    return canonical_mountpoint(mountpoint) in mount_points()


def canonical_mountpoint(path):
    """The absolute path with symlinks resolved in its parent only: the mount point itself is never touched,
    since a dead or hung FUSE mount would fail or block."""
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


# -- mounting -------------------------------------------------------------------------------------------------

def _fuse_options(allow_other):
    return ["default_permissions"] + (["allow_other"] if allow_other else [])


def mount(mountpoint, allow_other=False):
    """Mount an empty FUSE file system at mountpoint and return the Mount: with mount(2) when this process
    holds CAP_SYS_ADMIN, falling back to fusermount when that is refused (EPERM), as libfuse does; otherwise
    with fusermount."""
    if has_cap_sys_admin():
        try:
            return mount_in_current_namespace(mountpoint, allow_other)
        except MountError as exc:
            if exc.errno != errno.EPERM or find_fusermount() is None:
                raise
            log.info("%s; trying fusermount", exc)
    return mount_with_fusermount(mountpoint, allow_other)


def mount_in_current_namespace(mountpoint, allow_other=False):
    """mount(2) of ``/dev/fuse`` at mountpoint in this process's mount namespace: works as root, or as root of a
    user + mount namespace this process has entered (Linux 4.18+). The mount is owned by this process's uid and
    gid."""
    mountpoint = canonical_mountpoint(mountpoint)
    fd = _open_fuse_device()
    data = ",".join(["fd={}".format(fd), "rootmode={:o}".format(ROOT_MODE), "user_id={}".format(os.getuid()),
                     "group_id={}".format(os.getgid())] + _fuse_options(allow_other))
    try:
        check_result(libc().mount(FSNAME.encode(), _encode(mountpoint), b"fuse", MS_RDONLY | MS_NOSUID | MS_NODEV,
                          data.encode()),
               "mount(2) of a FUSE file system at {}".format(mountpoint),
               "; it needs root, or root of a user + mount namespace on Linux 4.18 or newer, and an existing "
               "directory as mount point")
    except BaseException:
        os.close(fd)
        raise
    return Mount(fd, mountpoint, SYSCALL)


def _open_fuse_device():
    try:
        return os.open(FUSE_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise MountError(exc.errno, "cannot open {}: {}; the node needs the fuse kernel module and a {} that "
                                    "everyone may read and write (mode 0666)".format(FUSE_DEVICE, exc.strerror,
                                                                                     FUSE_DEVICE))


def mount_with_fusermount(mountpoint, allow_other=False, helper=None):
    """Mount through the setuid helper (fusermount3 or fusermount) and receive the ``/dev/fuse`` descriptor it
    opened. The caller must own, or be able to write, the mount point."""
    mountpoint = canonical_mountpoint(mountpoint)
    helper = helper or find_fusermount()
    if helper is None:
        raise MountError(errno.ENOENT, "neither fusermount3 nor fusermount was found in PATH or {}; install "
                                       "fuse3 (or fuse), or mount as root or inside a user namespace".format(
                                           FALLBACK_PATH))
    options = ",".join(["ro", "nosuid", "nodev", "fsname=" + FSNAME] + _fuse_options(allow_other))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours:
        try:
            environment = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
            process = subprocess.Popen([helper, "-o", options, "--", mountpoint], env=environment,
                                       pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
        except OSError as exc:
            raise MountError(exc.errno, "cannot run {}: {}".format(helper, exc.strerror))
        finally:
            theirs.close()
        try:
            fd = receive_fd(ours)
        finally:
            _, messages = process.communicate()
    if fd is None or process.returncode != 0:
        if fd is not None:
            os.close(fd)
        raise MountError(errno.EIO, "{} could not mount {} (exit status {}): {}".format(
            helper, mountpoint, process.returncode, messages.strip() or "no message"))
    return Mount(fd, mountpoint, FUSERMOUNT)


def receive_fd(sock):
    """The one file descriptor sent over a Unix socket with SCM_RIGHTS (close-on-exec), or None at EOF."""
    int_size = array.array("i").itemsize
    _, ancillary, _, _ = sock.recvmsg(1, socket.CMSG_SPACE(int_size), getattr(socket, "MSG_CMSG_CLOEXEC", 0))
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % int_size])
    for extra in fds[1:]:
        os.close(extra)
    if not fds:
        return None
    os.set_inheritable(fds[0], False)
    return fds[0]


# -- unmounting -----------------------------------------------------------------------------------------------

def unmount(mountpoint, lazy=False, use_fusermount=None):
    """Unmount mountpoint: with umount2(2) when this process holds CAP_SYS_ADMIN, else (or with use_fusermount)
    through fusermount -u. lazy (MNT_DETACH, ``-z``): detach it now even if busy; it goes away when its last
    user leaves. Raises MountError."""
    mountpoint = canonical_mountpoint(mountpoint)
    if use_fusermount is None:
        use_fusermount = not has_cap_sys_admin()
    if not use_fusermount:
        try:
            check_result(libc().umount2(_encode(mountpoint), MNT_DETACH if lazy else 0), "umount2 of {}".format(mountpoint))
            return
        except MountError as exc:
            if exc.errno not in (errno.EPERM, errno.EINVAL) or find_fusermount() is None:
                raise
    _fusermount_unmount(mountpoint, lazy)


def _fusermount_unmount(mountpoint, lazy):
    helper = find_fusermount()
    if helper is None:
        raise MountError(errno.ENOENT, "cannot unmount {}: neither fusermount3 nor fusermount was found in PATH "
                                       "or {}".format(mountpoint, FALLBACK_PATH))
    command = [helper, "-u"] + (["-z"] if lazy else []) + ["--", mountpoint]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, universal_newlines=True)
    _, messages = process.communicate()
    if process.returncode != 0:
        code = errno.EBUSY if "busy" in messages else errno.EIO
        raise MountError(code, "{} could not unmount {}: {}".format(" ".join(command[:-2]), mountpoint,
                                                                    messages.strip() or "no message"))


# -- user namespaces ------------------------------------------------------------------------------------------

def _write_proc(path, text):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def enter_user_namespace():
    """Make this process root of a new user namespace (its uid and gid mapped to 0) with a new mount namespace
    whose mounts are all private, so that :func:`mount_in_current_namespace` works. Call it while the process
    is single-threaded (unshare(2) refuses threaded callers), e.g. in a fresh child process."""
    uid, gid = os.geteuid(), os.getegid()
    check_result(libc().unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(CLONE_NEWUSER|CLONE_NEWNS)",
           "; user namespaces may be disabled (user.max_user_namespaces = 0, "
           "kernel.unprivileged_userns_clone = 0, an AppArmor or seccomp policy), or the process has threads")
    try:
        if os.path.exists("/proc/self/setgroups"):
            _write_proc("/proc/self/setgroups", "deny")
        _write_proc("/proc/self/uid_map", "0 {} 1".format(uid))
        _write_proc("/proc/self/gid_map", "0 {} 1".format(gid))
    except OSError as exc:
        raise MountError(exc.errno, "cannot write the user namespace's id maps: {}; a security policy (such as "
                                    "Ubuntu's apparmor_restrict_unprivileged_userns) denies it".format(
                                        exc.strerror))
    check_result(libc().mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "making / private in the mount namespace")
