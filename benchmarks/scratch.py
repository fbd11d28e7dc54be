"""A scratch directory on a fresh file system, for benchmarks that create tens of thousands of files.

The root file system of these machines is ext4 without a journal. There, to allocate an inode the kernel skips
every inode deleted in the last minutes (``recently_deleted()`` in fs/ext4/ialloc.c reads the inode table for each
candidate), so after a test run or an earlier benchmark removed a few hundred thousand files, creating a file costs
up to about a millisecond of CPU, and more the more was deleted: a ratio measured there depends on what the
machine did in the minutes before. A worker node's scratch space is a journaled file system that behaves the same
from one run to the next.

So, run as root, a benchmark works in a fresh journaled ext4 on a loop device (a sparse image in /var/tmp), unmounted
and removed afterwards; otherwise, or when loop devices are not available, in a temporary directory, and it says so.
"""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

IMAGE_BYTES = 12 * 1024 ** 3  # sparse: only what is written takes space
BYTES_PER_INODE = 4096  # the trees are mostly small files


@contextlib.contextmanager
def scratch_directory(prefix, directory=None):
    """A new empty directory (removed afterwards): in ``directory`` when given, else on a fresh file system."""
    if directory is not None:
        with _temporary(prefix, directory) as path:
            yield path
        return
    holder = tempfile.mkdtemp(prefix=prefix, dir="/var/tmp")
    try:
        mount_point = _mount_fresh_ext4(holder)
        if mount_point is None:
            with _temporary(prefix, None) as path:
                yield path
            return
        try:
            yield mount_point
        finally:
            subprocess.run(["umount", mount_point], check=True)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def _mount_fresh_ext4(holder):
    """Mount a new ext4 on a loop device at ``holder``/mnt; its path, or None (with the reason printed)."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        print("note: measuring in a temporary directory of this machine's disk (a fresh file system needs root and "
              "mkfs.ext4); file creation costs there depend on what was deleted in the minutes before",
              file=sys.stderr)
        return None
    image, mount_point = os.path.join(holder, "image.ext4"), os.path.join(holder, "mnt")
    with open(image, "wb") as f:
        f.truncate(IMAGE_BYTES)
    os.mkdir(mount_point)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", "-i", str(BYTES_PER_INODE), image],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
    mounted = made.returncode == 0 and subprocess.run(
        ["mount", "-o", "loop", image, mount_point], stderr=subprocess.PIPE, universal_newlines=True)
    if not mounted or mounted.returncode != 0:
        print("note: cannot mount a fresh ext4 on a loop device ({}); measuring in a temporary directory of this "
              "machine's disk instead".format((made.stderr if made.returncode else mounted.stderr).strip()),
              file=sys.stderr)
        return None
    return mount_point


@contextlib.contextmanager
def _temporary(prefix, directory):
    path = tempfile.mkdtemp(prefix=prefix, dir=directory)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
