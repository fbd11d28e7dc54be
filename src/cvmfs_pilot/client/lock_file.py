"""Exclusive locks between processes (and threads) on lock files that exist only while a lock is held.

The holder removes the file before it unlocks. A waiter that then gets the lock on the removed file sees that the
path no longer names the file it locked and tries again, so lock files never pile up and removing one is safe.
``flock`` locks belong to an open file, not to a process: two threads of one process exclude each other too, and
the kernel drops the lock of a killed process.
"""

import contextlib
import errno
import fcntl
import os
import random
import threading
import time

DEADLOCK_RETRY_PAUSE = 0.001  # seconds, doubling up to ...
DEADLOCK_RETRY_PAUSE_MAX = 0.05


def acquire(path, blocking=True):
    """Lock ``path`` exclusively, creating it (mode 0600); returns the open descriptor to pass to release(). With
    ``blocking`` false, returns None at once if someone else holds the lock."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if _names_file(path, fd):
            return fd
        os.close(fd)  # the previous holder removed the file while we waited: lock the current one


def release(path, fd):
    """Remove the lock file, then unlock."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.close(fd)


@contextlib.contextmanager
def exclusive(path):
    """``with exclusive(path):`` holds the lock on ``path`` for the block, waiting for it as long as needed."""
    fd = acquire(path)
    try:
        yield
    finally:
        release(path, fd)


def _names_file(path, fd):
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino)


class KeyedLocks(object):
    """Exclusive locks on many keys (object hashes) through one lock file, for threads and processes alike: a
    ``threading`` lock per key within the process, and a POSIX record lock on one byte of the file, at an offset
    derived from the key, between processes. No file is created per lock. The file stays open for the life of the
    object: closing any descriptor of it would drop all of this process's record locks on it (POSIX).

    The kernel's deadlock detection sees processes, not threads: when a thread of process A waits for a byte
    that process B holds while a thread of B waits for another byte that A holds, the second waiter gets EDEADLK
    although the holders are other threads that will release. Callers never wait for a key while holding another
    (the cache's fetch locks do not nest), so this is never a real deadlock: the waiter tries again after a short
    pause."""

    def __init__(self, path):
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._guard = threading.Lock()
        self._local = {}  # key -> [threading lock, users]

    @contextlib.contextmanager
    def hold(self, key, offset):
        """``with locks.hold(key, offset):``; ``offset`` (below 2**62) is the byte locked between processes."""
        with self._guard:
            entry = self._local.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                self._lock_byte(offset)
                try:
                    yield
                finally:
                    fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, offset)
        finally:
            with self._guard:
                entry[1] -= 1
                if not entry[1]:
                    del self._local[key]

    def _lock_byte(self, offset):
        pause = DEADLOCK_RETRY_PAUSE
        while True:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, offset)
                return
            except OSError as exc:
                if exc.errno != errno.EDEADLK:
                    raise
            time.sleep(random.uniform(0, pause))
            pause = min(2 * pause, DEADLOCK_RETRY_PAUSE_MAX)

    def close(self):
        os.close(self._fd)
