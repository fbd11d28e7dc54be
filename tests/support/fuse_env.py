"""Mounting repositories in tests as the unprivileged user, and making sure nothing is left behind.

A :class:`FuseEnv` holds a scratch directory the test user can use (``src/`` a source tree it owns, ``etc/`` a
client configuration, ``cache/``, mount points, ``out/`` for results), publishes ``src`` into a storage directory
that nginx serves, and runs ``cvmfs-pilot fs`` as the user. :func:`leftovers_removed` kills the user's processes
that mention the scratch directory and lazily unmounts whatever is mounted below it.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.client_env import write_config
from support.repo import make_keys, publish_tree

PYTHON = sys.executable
FS = [PYTHON, "-m", "cvmfs_pilot", "fs"]
# Run a shell script as root of a new user + mount namespace (the user's ids mapped to 0).
IN_NAMESPACE = [PYTHON, "-c", "import os, sys\n"
                              "from cvmfs_pilot.fuse.mount import enter_user_namespace\n"
                              "enter_user_namespace()\n"
                              "os.execvp('sh', ['sh', '-c', sys.argv[1]])\n"]


def make_tree(root):
    """A source tree with what a file system can hold that CernVM-FS publishes."""
    root = Path(root)
    for directory in ("bin", "data", "links", "modes", "names", "deep/a/b/c/d/e", "many", "empty-dir",
                      "nested/inner"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "README.txt").write_text("a tree for the FUSE tests\n")
    (root / "bin" / "hello.sh").write_text("#!/bin/sh\necho \"hello from $(basename \"$0\") with $# args\"\n")
    os.chmod(root / "bin" / "hello.sh", 0o755)
    (root / "data" / "small.bin").write_bytes(os.urandom(1000))
    (root / "data" / "chunked.bin").write_bytes(os.urandom(300_000))  # many chunks with the test chunk sizes
    (root / "data" / "two-mb.bin").write_bytes(os.urandom(2 * 1024 * 1024 + 17))
    (root / "data" / "empty").write_bytes(b"")
    (root / "data" / "hard-a").write_bytes(os.urandom(5000))
    os.link(root / "data" / "hard-a", root / "data" / "hard-b")
    (root / "data" / "tagged.txt").write_text("tagged\n")
    os.setxattr(root / "data" / "tagged.txt", "user.origin", b"fuse test")
    os.symlink("../data/small.bin", root / "links" / "relative")
    os.symlink("/etc/hostname", root / "links" / "absolute")
    os.symlink("nowhere", root / "links" / "dangling")
    os.symlink("../data", root / "links" / "directory")
    for name, mode in (("private", 0o600), ("read-only", 0o444), ("script", 0o700)):
        (root / "modes" / name).write_text("#!/bin/sh\necho {}\n".format(name))
        os.chmod(root / "modes" / name, mode)
    for name in ("with space", "ünïcödé", ".hidden", "semi;colon"):
        (root / "names" / name).write_text(name + "\n")
    (root / "deep" / "a" / "b" / "c" / "d" / "e" / "leaf.txt").write_text("leaf\n")
    for i in range(400):  # several READDIR pages
        (root / "many" / "file-with-a-longish-name-{:04d}".format(i)).write_bytes(b"x" * i)
    (root / "nested" / ".cvmfscatalog").write_bytes(b"")
    (root / "nested" / "inner" / "file.txt").write_text("in a nested catalog\n")
    return root


class FuseEnv:
    def __init__(self, unprivileged, scratch, storage_root, nginx, fqrn="fuse.example.org", ttl=240,
                 make_src=make_tree):
        self.unprivileged = unprivileged
        self.scratch = Path(scratch)
        self.fqrn = fqrn
        self.ttl = ttl
        for name in ("src", "cache", "mnt", "mnt2", "out"):
            (self.scratch / name).mkdir()
        self.src = make_src(self.scratch / "src")
        self.keys = make_keys(Path(storage_root) / "keys", fqrn)
        self.storage_root = Path(storage_root) / "srv"
        self.storage = self.storage_root / fqrn
        self.publish()
        unprivileged.own(self.scratch)
        self.base_url = nginx(self.storage_root)
        self.config_dir = self.configure(self.scratch / "etc")

    @property
    def mnt(self):
        return self.scratch / "mnt"

    def configure(self, config_dir, server_url=None, extra=None, fqrn=None, pubkey=None):
        fqrn = fqrn or self.fqrn
        return write_config(config_dir, fqrn, server_url or self.base_url + "/@fqrn@",
                            pubkey or self.keys / (fqrn + ".pub"), self.scratch / "cache", extra=extra)

    def publish(self):
        publish_tree(self.src, self.storage, self.fqrn, self.keys, ttl=self.ttl)

    def fs(self, *args, config_dir=None, **kwargs):
        """``cvmfs-pilot fs ARGS`` as the user, in scratch; mount gets ``--config-dir`` and an absolute mount
        point."""
        args = list(args)
        if args[0] == "mount":
            args[1:1] = ["--config-dir", str(config_dir or self.config_dir)]
            args[-1] = str(self.scratch / args[-1])
        return self.unprivileged.run(FS + args, cwd=str(self.scratch), **kwargs)

    def popen(self, command, **kwargs):
        """A process as the user (stdout and stderr piped, text)."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("universal_newlines", True)
        kwargs.setdefault("cwd", str(self.scratch))
        env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}  # as in production
        user = self.unprivileged.user
        if user is not None:
            env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        return subprocess.Popen(command, env=env, **kwargs)

    def sh(self, script, timeout=120):
        return self.unprivileged.run(["sh", "-c", script], cwd=str(self.scratch), timeout=timeout)

    def server_pids(self, mountpoint):
        """The ``fs mount`` processes serving mountpoint."""
        return [pid for pid, cmdline, _ in user_processes(self.unprivileged.uid)
                if b"cvmfs_pilot fs mount" in cmdline and cmdline.rstrip().endswith(os.fsencode(str(mountpoint)))]


def user_processes(uid):
    """``(pid, command line, paths it uses: cwd and open files)`` of the user's processes."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        base = "/proc/" + entry
        try:
            if os.stat(base).st_uid != uid:
                continue
            with open(base + "/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ")
            paths = [os.readlink(base + "/cwd")]
            for fd in os.listdir(base + "/fd"):
                try:
                    paths.append(os.readlink("{}/fd/{}".format(base, fd)))
                except OSError:
                    pass
        except OSError:
            continue
        yield int(entry), cmdline, paths


def fuse_mounts_below(directory):
    prefix = str(directory).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as mountinfo:
        points = [line.split(" ")[4] for line in mountinfo]
    return [point for point in points if point.startswith(prefix)]


def leftovers(scratch, uid):
    """``(pids, mount points)``: the user's processes that mention or use scratch, and the mounts below it."""
    needle = str(scratch)
    pids = [pid for pid, cmdline, paths in user_processes(uid)
            if os.fsencode(needle) in cmdline or any(path.startswith(needle) for path in paths)]
    return pids, fuse_mounts_below(scratch)


def leftovers_removed(scratch, uid):
    """Kill the user's processes that mention or use scratch, lazily unmount what is below it; what was found."""
    pids, points = leftovers(scratch, uid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for point in points:
        command = ["umount", "-l"] if os.geteuid() == 0 else ["fusermount3", "-u", "-z"]
        subprocess.run(command + [point], check=False)
    return ["process {}".format(pid) for pid in pids] + ["mount " + point for point in points]


def wait_for(condition, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
