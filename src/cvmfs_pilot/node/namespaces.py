"""Unprivileged user, mount and PID namespaces, and the private root in which ``/cvmfs`` exists although the host
has none (ctypes; glibc has no ``pivot_root`` wrapper, and Python 3.6 no ``os.unshare``).

The private root is a tmpfs into which every top-level entry of the host's root is bound (directories
recursively, files singly, symbolic links recreated), except ``/cvmfs``, which becomes a tmpfs of its own for the
repositories, and ``/proc``, which is a new proc mount with a PID namespace (the host's bound otherwise, where
/proc is masked). After ``pivot_root`` the host's root is detached entirely; the tmpfs leaves nothing on disk.
"""

import ctypes
import errno
import os
import platform
import signal
import stat

from cvmfs_pilot.fuse.mount import (CLONE_NEWNS, CLONE_NEWUSER, MNT_DETACH, MS_NODEV, MS_NOSUID, MS_PRIVATE,
                                    MS_RDONLY, MS_REC, MountError, check_result, libc)

CLONE_NEWPID = 0x20000000
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_UNBINDABLE = 0x20000
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
NR_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "ppc64": 203, "i686": 217}
CVMFS = "cvmfs"
PROC = "proc"


def _path(path):
    return os.fsencode(path)


def prctl(option, value):
    check_result(libc().prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0),
                              ctypes.c_ulong(0)), "prctl({})".format(option))


def die_with_parent():
    """SIGKILL this process when its parent ends (PR_SET_PDEATHSIG). Call it in a freshly forked child, and
    check afterwards that the parent is still there (it may have died before)."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def become_subreaper():
    """Orphaned descendants (daemonised servers, a job's background processes) become this process's children."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def unshare(flags, what):
    check_result(libc().unshare(flags), "unshare({})".format(what),
                 "; user namespaces may be disabled (user.max_user_namespaces = 0, "
                 "kernel.unprivileged_userns_clone = 0, an AppArmor or seccomp policy), or the process has threads")


def _write(path, text):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())  # one write per map file, as the kernel requires
    finally:
        os.close(fd)


def write_id_maps(pid, inside_uid, outside_uid, inside_gid, outside_gid):
    """Map one uid and one gid of the user namespace of ``pid`` ("self" or a number); setgroups is denied
    first, as unprivileged maps require."""
    base = "/proc/{}/".format(pid)
    try:
        if os.path.exists(base + "setgroups"):
            try:
                _write(base + "setgroups", "deny")
            except PermissionError:
                pass  # inherited "deny" from the parent namespace, which cannot be written again
        _write(base + "uid_map", "{} {} 1".format(inside_uid, outside_uid))
        _write(base + "gid_map", "{} {} 1".format(inside_gid, outside_gid))
    except OSError as exc:
        raise MountError(exc.errno, "cannot write the id maps of a user namespace ({}): {}; a security policy "
                                    "(such as Ubuntu's apparmor_restrict_unprivileged_userns) denies it".format(
                                        base, exc.strerror))


def enter(uid, gid, pid_namespace):
    """Make this (single-threaded) process root of a new user and mount namespace, with all mounts private;
    with pid_namespace, its next child becomes PID 1 of a new PID namespace."""
    flags = CLONE_NEWUSER | CLONE_NEWNS | (CLONE_NEWPID if pid_namespace else 0)
    unshare(flags, "CLONE_NEWUSER|CLONE_NEWNS" + ("|CLONE_NEWPID" if pid_namespace else ""))
    write_id_maps("self", 0, uid, 0, gid)
    mount(b"none", "/", None, MS_REC | MS_PRIVATE, what="making / private")


def mount(source, target, fstype, flags, data=None, what=None):
    check_result(libc().mount(source if isinstance(source, bytes) else _path(source), _path(target),
                              fstype.encode() if fstype else None, flags, data.encode() if data else None),
                 what or "mount of {} on {}".format(fstype or source, target))


def umount(target, lazy=False):
    check_result(libc().umount2(_path(target), MNT_DETACH if lazy else 0), "umount2 of {}".format(target))


def pivot_root(new_root, put_old):
    number = NR_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise MountError(errno.ENOSYS, "pivot_root: unknown system call number on {}".format(platform.machine()))
    libc().syscall.restype = ctypes.c_long
    check_result(libc().syscall(ctypes.c_long(number), _path(new_root), _path(put_old)), "pivot_root")


def _bind_entry(name, new_root, host_root="/"):
    """Reproduce the host's top-level entry name inside new_root; False if it cannot be (unreadable, special)."""
    source = os.path.join(host_root, name)
    target = os.path.join(new_root, name)
    try:
        info = os.lstat(source)
        if stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(source), target)
            return True
        if stat.S_ISDIR(info.st_mode):
            os.mkdir(target)
            mount(source, target, None, MS_BIND | MS_REC)
            return True
        if stat.S_ISREG(info.st_mode):
            with open(target, "w"):
                pass
            mount(source, target, None, MS_BIND)
            return True
    except OSError:
        return False
    return False


def _remount_read_only(path):
    """Remount a tmpfs we own read-only (keeping its other flags)."""
    mount(b"none", path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
          what="read-only remount of {}".format(path))


def _remount_writable(path):
    mount(b"none", path, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV, what="remount of {}".format(path))


def build_private_root(new_root, repositories, pid_namespace):
    """Build the private root at new_root (an empty directory) and pivot into it: afterwards ``/`` shows the
    host's entries, ``/cvmfs/<repo>`` exists for each repository (empty, read-only tmpfs), and the host's root
    is no longer reachable. The caller is root of the user and mount namespace (and, with pid_namespace, PID 1
    of a PID namespace). Returns the host entries that could not be reproduced."""
    mount(b"tmpfs", new_root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", what="tmpfs for the private root")
    mount(b"none", new_root, None, MS_UNBINDABLE, what="making the private root unbindable")
    skipped = []
    for name in sorted(os.listdir("/")):
        if name in (CVMFS, PROC):
            continue
        if not _bind_entry(name, new_root):
            skipped.append("/" + name)
    cvmfs = os.path.join(new_root, CVMFS)
    os.mkdir(cvmfs)
    mount(b"tmpfs", cvmfs, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", what="tmpfs for /cvmfs")
    for repository in repositories:
        os.mkdir(os.path.join(cvmfs, repository))
    _remount_read_only(cvmfs)
    proc = os.path.join(new_root, PROC)
    os.mkdir(proc)
    if pid_namespace:
        mount(b"proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, what="a new /proc for the PID namespace")
    else:
        mount("/proc", proc, None, MS_BIND | MS_REC, what="binding the host's /proc")
    os.chdir(new_root)
    pivot_root(".", ".")
    umount(".", lazy=True)  # the host's root, stacked on ours by pivot_root(".", ".")
    os.chdir("/")
    _remount_read_only("/")
    return skipped


def add_repository_directory(repository):
    """Create /cvmfs/<repository> in the private root (for a repository mounted later)."""
    path = os.path.join("/", CVMFS, repository)
    if os.path.isdir(path):
        return path
    _remount_writable("/" + CVMFS)
    try:
        os.mkdir(path)
    finally:
        _remount_read_only("/" + CVMFS)
    return path
