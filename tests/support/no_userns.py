"""Run a command as the test user on a node whose policy refuses unprivileged user namespaces.

Setting ``user.max_user_namespaces=0`` needs CAP_SYS_RESOURCE, which root does not hold on some test machines
(sandboxed VMs). The same refusal as a site policy gives it (Docker's default seccomp profile, a hardened
kernel: ``unshare(CLONE_NEWUSER)`` fails with EPERM) comes from a seccomp filter that root installs before it
drops to the user and execs the command: as no_new_privs is not set, setuid fusermount keeps working, as on
such a node. ``clone3`` gets ENOSYS (its flags are in memory a filter cannot read), so that callers fall back to
``clone``, whose flags it checks. x86_64 only.

Usage (as root): python no_userns.py UID GID -- COMMAND...
"""

import ctypes
import os
import platform
import sys

AUDIT_ARCH_X86_64 = 0xC000003E
NR_UNSHARE, NR_CLONE, NR_CLONE3 = 272, 56, 435
CLONE_NEWUSER = 0x10000000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
EPERM, ENOSYS = 1, 38
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
LD_W_ABS, JEQ_K, JSET_K, RET_K = 0x20, 0x15, 0x45, 0x06


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


PROGRAM = [
    (LD_W_ABS, 0, 0, 4),                  # 0: architecture
    (JEQ_K, 0, 6, AUDIT_ARCH_X86_64),     # 1: other architectures: allow (8)
    (LD_W_ABS, 0, 0, 0),                  # 2: system call number
    (JEQ_K, 6, 0, NR_CLONE3),             # 3: clone3 -> ENOSYS (10)
    (JEQ_K, 1, 0, NR_UNSHARE),            # 4: unshare -> check flags (6)
    (JEQ_K, 0, 2, NR_CLONE),              # 5: clone -> check flags (6), else allow (8)
    (LD_W_ABS, 0, 0, 16),                 # 6: args[0], low 32 bits
    (JSET_K, 1, 0, CLONE_NEWUSER),        # 7: CLONE_NEWUSER -> EPERM (9), else allow (8)
    (RET_K, 0, 0, SECCOMP_RET_ALLOW),     # 8
    (RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM),   # 9
    (RET_K, 0, 0, SECCOMP_RET_ERRNO | ENOSYS),  # 10
]


def refuse_user_namespaces():
    if platform.machine() != "x86_64":
        raise OSError("the seccomp filter is written for x86_64")
    filters = (SockFilter * len(PROGRAM))(*[SockFilter(*instruction) for instruction in PROGRAM])
    program = SockFprog(len(PROGRAM), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, "prctl(PR_SET_SECCOMP): " + os.strerror(error))


def command(uid, gid, argv):
    return [sys.executable, os.path.abspath(__file__), str(uid), str(gid), "--"] + list(argv)


def main(argv):
    uid, gid, separator = int(argv[0]), int(argv[1]), argv[2]
    assert separator == "--"
    refuse_user_namespaces()
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    os.execvp(argv[3], argv[3:])


if __name__ == "__main__":
    main(sys.argv[1:])
