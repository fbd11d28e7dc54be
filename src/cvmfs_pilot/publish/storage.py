"""The repository storage directory (what a web server exposes as ``<base>/cvmfs/<fqrn>``).

Objects are content-addressed and written through ``data/txn`` and ``rename()``, so a reader never sees a partial
object; the manifest is replaced last, so a failed publish leaves the previous revision fully served. One publish
at a time holds an exclusive lock.
"""

import errno
import fcntl
import itertools
import os
import shutil
import tempfile
import zlib
from pathlib import Path

from cvmfs_pilot.cvmfs.compression import decompress
from cvmfs_pilot.cvmfs.hashing import ContentHash, new_hasher
from cvmfs_pilot.cvmfs.manifest import Manifest

from .errors import PublishError

MANIFEST = ".cvmfspublished"
WHITELIST = ".cvmfswhitelist"
MASTER_REPLICA = ".cvmfs_master_replica"
LOCK_NAME = "publish.lock"
JOURNAL_PREFIX = "new-objects."
_temp_names = itertools.count()


def describe_os_error(exc, action):
    """A PublishError for an OSError, with advice for the common causes."""
    advice = {
        errno.ENOSPC: "the file system is full; free space and publish again",
        errno.EDQUOT: "the disk quota is exhausted; free space and publish again",
        errno.EACCES: "check the permissions",
        errno.EPERM: "check the permissions",
        errno.EROFS: "the file system is read-only",
    }.get(exc.errno, "")
    where = " ({})".format(exc.filename) if exc.filename else ""
    message = "{}{}: {}".format(action, where, exc.strerror or exc)
    return PublishError(message + ("; " + advice if advice else ""))


class Storage:
    def __init__(self, root):
        self.root = Path(root)
        self.data = self.root / "data"
        self.txn = self.data / "txn"
        self.journal = None  # open file that records new objects while a publish runs
        self._lock_fd = None

    # -- layout and locking -------------------------------------------------------------------------------------

    def exists(self):
        return (self.root / MANIFEST).exists()

    def create_layout(self):
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.data.mkdir(exist_ok=True)
            for i in range(256):
                (self.data / "{:02x}".format(i)).mkdir(exist_ok=True)
            self.txn.mkdir(exist_ok=True)
        except OSError as exc:
            raise describe_os_error(exc, "cannot create the storage layout in {}".format(self.root))

    def lock(self):
        """Take the exclusive publish lock; a second publisher fails at once with a clear message."""
        path = self.txn / LOCK_NAME
        fd = os.open(str(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise PublishError("another publish or resign of {} is running (process {}); wait for it to finish"
                               .format(self.root, holder))
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def unlock(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- objects ----------------------------------------------------------------------------------------------

    def object_file(self, content_hash, suffix=""):
        return self.root / content_hash.object_path(suffix)

    def has(self, content_hash, suffix=""):
        return self.object_file(content_hash, suffix).exists()

    def put(self, content_hash, suffix, stored_bytes):
        """Store an object's bytes (already compressed and hashed) unless it is there already."""
        write_object(self.root, content_hash.object_path(suffix), stored_bytes, self.journal)

    def put_file_compressed(self, filename, suffix, algorithm, block=4 * 1024 * 1024):
        """Store a local file (a catalog or history database) zlib-compressed, streaming it through
        ``data/txn``; returns its content hash."""
        hasher = new_hasher(algorithm)
        compressor = zlib.compressobj(6)
        fd, tmp = self.temp_file()
        try:
            with os.fdopen(fd, "wb") as out, open(filename, "rb") as f:
                for data in iter(lambda: f.read(block), b""):
                    piece = compressor.compress(data)
                    hasher.update(piece)
                    out.write(piece)
                piece = compressor.flush()
                hasher.update(piece)
                out.write(piece)
            content_hash = ContentHash(algorithm, hasher.digest())
            final = self.object_file(content_hash, suffix)
            if final.exists():
                tmp.unlink()
            else:
                if self.journal is not None:
                    self.journal.write(content_hash.object_path(suffix) + "\n")
                os.chmod(tmp, 0o644)
                os.rename(tmp, final)
            return content_hash
        except BaseException:
            if tmp.exists():
                tmp.unlink()
            raise

    def read(self, content_hash, suffix=""):
        return self.object_file(content_hash, suffix).read_bytes()

    def read_decompressed(self, content_hash, suffix, limit=None):
        return decompress(self.read(content_hash, suffix), limit=limit)

    def temp_file(self, suffix=""):
        """A new temporary file inside ``data/txn`` (same file system as the objects): ``(fd, path)``."""
        fd, name = tempfile.mkstemp(dir=str(self.txn), suffix=suffix)
        return fd, Path(name)

    def clean_txn(self):
        """Remove what an interrupted publish left in ``data/txn``: temporary files, and the objects its journals
        list (written by that publish only, never referenced by a manifest). Call with the lock held."""
        for entry in self.txn.iterdir():
            if entry.name == LOCK_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                self.remove_journaled_objects(entry)
                shutil.rmtree(entry, ignore_errors=True)
            else:
                try:
                    entry.unlink()
                except OSError:
                    pass

    def remove_journaled_objects(self, workdir):
        """Delete the objects listed in the journals (``new-objects.*``) of a failed publish's work directory."""
        for journal in Path(workdir).glob(JOURNAL_PREFIX + "*"):
            with open(journal, encoding="ascii", errors="replace") as f:
                for line in f:
                    relative = line.strip()
                    if relative.startswith("data/") and ".." not in relative:
                        try:
                            (self.root / relative).unlink()
                        except OSError:
                            pass
            journal.unlink()

    # -- signed files -----------------------------------------------------------------------------------------

    def read_manifest(self, expected_fqrn=None):
        path = self.root / MANIFEST
        try:
            return Manifest.parse(path.read_bytes(), expected_fqrn=expected_fqrn)
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise PublishError("{}: {}".format(path, exc))

    def read_signed(self, name):
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None

    def replace_signed(self, name, data):
        """Atomically replace a top-level signed file; everything it names must be durable first."""
        replace_file(self.root / name, data)


def write_object(root, relative_path, stored_bytes, journal=None):
    """Write one object through ``data/txn``; an existing object is left as it is (same content). Returns whether
    this call created it. A new object's path is recorded in ``journal`` first, so that a failed publish can take
    it back."""
    final = os.path.join(str(root), relative_path)
    if os.path.exists(final):
        return False
    if journal is not None:
        journal.write(relative_path + "\n")
    # Temporary names are unique per process; clean_txn() removed any left by earlier, dead processes.
    tmp = os.path.join(str(root), "data", "txn", "{}.{}".format(os.getpid(), next(_temp_names)))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, 0o644)  # whatever the umask: the web server must read it
            f.write(stored_bytes)
        try:
            os.link(tmp, final)  # unlike rename, fails if another worker stored the same object meanwhile
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


def replace_file(path, data):
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)
    dir_fd = os.open(str(path.parent), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
