"""A read-only view of one repository: lookups through nested catalogs loaded on demand, listings, stat fields as
the real client reports them, symlinks, byte-range reads that fetch only the chunks needed, extended attributes,
and reloading a newer revision after the catalog TTL without disturbing open files."""

import errno
import os
import stat as statmod
import threading
import time

from cvmfs_pilot.cvmfs import paths
from cvmfs_pilot.cvmfs import xattrs as xattr_blob
from cvmfs_pilot.cvmfs.compression import ZLIB
from cvmfs_pilot.cvmfs.hashing import SUFFIX_CATALOG, SUFFIX_NONE, SUFFIX_PARTIAL

from .cache import CATALOG
from .catalog_tree import CatalogTree
from .symlinks import expand


class RepositoryError(OSError):
    """A path cannot be served; ``errno`` says how a file system answers (ENOENT, ENOTDIR, EIO, ...)."""

    def __init__(self, code, message):
        OSError.__init__(self, code, message)


def error_text(exc):
    """What an error says, for a person: an OSError's text with the file it concerns (``str()`` of an OSError
    shows its errno too)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (": {}".format(exc.filename) if exc.filename else "")
    return str(exc) or type(exc).__name__


class Stat(object):
    """The fields of ``struct stat`` that the repository defines. ``uid``/``gid`` of None: the published owner
    (``CVMFS_CLAIM_OWNERSHIP=no``); otherwise the client's user owns everything."""

    __slots__ = ("st_ino", "st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_mtime", "st_mtime_ns",
                 "st_blocks", "st_rdev")

    def __init__(self, inode, entry, uid, gid):
        self.st_ino = inode
        self.st_mode = entry.mode
        self.st_nlink = entry.linkcount or 1
        self.st_uid = entry.uid if uid is None else uid
        self.st_gid = entry.gid if gid is None else gid
        special = statmod.S_ISCHR(entry.mode) or statmod.S_ISBLK(entry.mode)
        self.st_size = 0 if special else entry.size
        self.st_rdev = entry.size if special else 0
        self.st_mtime = entry.mtime
        self.st_mtime_ns = entry.mtime * 10**9 + (entry.mtimens or 0)
        self.st_blocks = (self.st_size + 511) // 512


class Revision(object):
    """One trusted revision (its verified manifest) and its catalogs."""

    def __init__(self, manifest, tree, fetched_at):
        self.manifest = manifest
        self.tree = tree
        self.fetched_at = fetched_at


class Repository(object):
    """``load_revision(previous)`` returns a new trusted Revision (or the previous one when nothing changed); the
    session module builds it from the configuration."""

    def __init__(self, fqrn, objects, load_revision, environ, uid, gid, raw_symlinks=False, config=None,
                 config_repository=None, clock=time.monotonic):
        self.fqrn = fqrn
        self.objects = objects
        self.config = config  # the Configuration it was opened with, for reporting
        self.config_repository = config_repository
        self.loader = load_revision
        self._load_revision = load_revision
        self._environ = environ
        self._uid = uid
        self._gid = gid
        self._raw_symlinks = raw_symlinks
        self._clock = clock
        self._reload_lock = threading.Lock()
        self.revision = load_revision(None)

    # -- revisions ----------------------------------------------------------------------------------------------

    @property
    def manifest(self):
        return self.revision.manifest

    @property
    def ttl(self):
        return self.revision.tree.root.catalog.ttl

    def reload_if_due(self):
        """Look for a newer revision once the root catalog's TTL has passed; True if a newer one is now in use.
        Open files keep reading what they opened (reads go by content hash)."""
        current = self.revision
        if self._clock() - current.fetched_at < self.ttl:
            return False
        with self._reload_lock:
            if self.revision is not current:
                return True
            new = self._load_revision(current)
            changed = new.manifest.root_catalog != current.manifest.root_catalog
            self.revision = new
            return changed

    # -- lookups ------------------------------------------------------------------------------------------------

    def _tree(self):
        return self.revision.tree

    def entry(self, path):
        """``(entry, loaded catalog)`` of a canonical path; RepositoryError(ENOENT) when absent."""
        path = _canonical(path)
        entry, loaded = self._tree().lookup(path)
        if entry is None or entry.is_hidden:
            raise RepositoryError(errno.ENOENT, "{}: no such file or directory in {}".format(path or "/",
                                                                                         self.fqrn))
        return entry, loaded

    def stat(self, path):
        entry, loaded = self.entry(path)
        return Stat(loaded.inode(entry), entry, self._uid, self._gid)

    def stat_entry(self, entry, loaded):
        return Stat(loaded.inode(entry), entry, self._uid, self._gid)

    def listdir(self, path):
        """``[(name, Stat)]`` of a directory, sorted by name."""
        return [(entry.name, self.stat_entry(entry, loaded)) for entry, loaded in self.listdir_entries(path)]

    def listdir_entries(self, path):
        """``[(entry, loaded catalog)]`` of a directory, sorted by name, all from the same revision."""
        entry, _ = self.entry(path)
        if not entry.is_directory:
            raise RepositoryError(errno.ENOTDIR, "{}: not a directory".format(entry.path or "/"))
        return [(child, loaded) for child, loaded in self._tree().listing(entry.path) if not child.is_hidden]

    def readlink(self, path):
        entry, _ = self.entry(path)
        if not entry.is_symlink:
            raise RepositoryError(errno.EINVAL, "{}: not a symbolic link".format(entry.path))
        return entry.symlink if self._raw_symlinks else expand(entry.symlink, self._environ)

    # -- contents -----------------------------------------------------------------------------------------------

    def open_file(self, path):
        return self.open_entry(*self.entry(path))

    def open_entry(self, entry, loaded):
        """An OpenFile for an entry found by :meth:`entry` or :meth:`listdir_entries`."""
        _check_readable(entry)
        chunks = loaded.catalog.chunks(entry) if entry.is_chunked else None
        return OpenFile(self.objects, entry, chunks)

    def file_pieces(self, entry, loaded):
        """``[(content hash, suffix, size)]``: the objects that make up a regular file, in order (its chunks, or
        the whole file), for :func:`copy_objects`; raises as :meth:`open_entry` does."""
        _check_readable(entry)
        if entry.is_chunked:
            return [(chunk.hash, SUFFIX_PARTIAL, chunk.size) for chunk in loaded.catalog.chunks(entry)]
        return [(entry.hash, SUFFIX_NONE, entry.size)]

    def read(self, path, offset=0, size=None):
        with self.open_file(path) as f:
            return f.read(offset, f.size - offset if size is None else size)

    # -- extended attributes ------------------------------------------------------------------------------------

    def xattrs(self, path):
        """The extended attributes of an entry: the ``user.*`` attributes published with it, and the client's
        own (``user.fqrn``, ``user.revision``, ``user.root_hash``, ``user.host``, ``user.proxy``, ``user.hash``,
        ``user.lhash``, ``user.chunks``, ``user.compression``)."""
        entry, loaded = self.entry(path)
        values = {key.decode("utf-8", "surrogateescape"): value
                  for key, value in xattr_blob.decode(entry.xattr).items()}
        downloader = self.objects.downloader
        manifest = self.manifest
        values.update({
            "user.fqrn": self.fqrn,
            "user.revision": str(manifest.revision),
            "user.root_hash": manifest.root_catalog.hex(),
            "user.host": downloader.current_host,
            "user.proxy": downloader.current_proxy,
            "user.lhash": loaded.hash.hex(),
        })
        if entry.is_regular:
            values["user.compression"] = "zlib" if entry.compression == ZLIB else "none"
            if entry.hash is not None:
                values["user.hash"] = entry.hash.hex()
            if entry.is_chunked:
                values["user.chunks"] = str(len(loaded.catalog.chunks(entry)))
        return {k: v if isinstance(v, bytes) else v.encode("utf-8") for k, v in values.items()}

    def close(self):
        self.revision.tree.close()
        self.objects.downloader.close()
        self.objects.cache.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class OpenFile(object):
    """A regular file being read: reads fetch only the objects (or chunks) that cover the requested range."""

    def __init__(self, objects, entry, chunks):
        self.objects = objects
        self.entry = entry
        self.size = entry.size
        self._chunks = chunks
        self._open = {}  # content hash -> open cached object, oldest first
        self._users = {}  # open cached object -> how many reads use it now
        self._retired = set()  # evicted while in use: closed by the last read that uses it
        self._lock = threading.Lock()

    def _acquire(self, content_hash, suffix, expected_size):
        """The open cached object, counted as in use until _release. Reads run in several threads at once, and
        eviction must never close a file that a read is about to pread: its descriptor number could be reused
        by the next file opened, and the read would return that file's bytes."""
        with self._lock:
            f = self._open.get(content_hash)
            if f is not None:
                self._users[f] = self._users.get(f, 0) + 1
                return f
        opened = self.objects.open(content_hash, suffix, self.entry.compression, expected_size)
        with self._lock:
            f = self._open.get(content_hash)
            if f is None:  # else another read opened it meanwhile: use that one
                f, opened = opened, None
                self._open[content_hash] = f
                while len(self._open) > 4:  # a sequential reader needs the current and the next chunk
                    old = self._open.pop(next(iter(self._open)))
                    if self._users.get(old):
                        self._retired.add(old)
                    else:
                        old.close()
            self._users[f] = self._users.get(f, 0) + 1
        if opened is not None:
            opened.close()
        return f

    def _release(self, f):
        with self._lock:
            self._users[f] -= 1
            if self._users[f] == 0:
                del self._users[f]
                if f in self._retired:
                    self._retired.discard(f)
                    f.close()

    def _pread(self, content_hash, suffix, expected_size, size, offset):
        f = self._acquire(content_hash, suffix, expected_size)
        try:
            return os.pread(f.fileno(), size, offset)
        finally:
            self._release(f)

    def read(self, offset, size):
        end = min(offset + max(size, 0), self.size)
        if offset >= end:
            return b""
        if self._chunks is None:
            return self._pread(self.entry.hash, SUFFIX_NONE, self.size, end - offset, offset)
        pieces = []
        for chunk in self._chunks:
            chunk_end = chunk.offset + chunk.size
            if chunk_end <= offset or chunk.offset >= end:
                continue
            start = max(offset, chunk.offset)
            pieces.append(self._pread(chunk.hash, SUFFIX_PARTIAL, chunk.size, min(end, chunk_end) - start,
                                      start - chunk.offset))
        return b"".join(pieces)

    def close(self):
        with self._lock:
            for f in list(self._open.values()) + list(self._retired):
                f.close()
            self._open.clear()
            self._retired.clear()
            self._users.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _check_readable(entry):
    if entry.is_directory:
        raise RepositoryError(errno.EISDIR, "{}: is a directory".format(entry.path or "/"))
    if not entry.is_regular:
        raise RepositoryError(errno.EINVAL, "{}: not a regular file".format(entry.path))
    if entry.is_external:
        raise RepositoryError(errno.EIO, "{}: external files (CVMFS_EXTERNAL_URL) are not supported by this "
                                         "client".format(entry.path))


def copy_objects(objects, pieces, compression, out_fd, path):
    """Write the objects ``pieces`` of the file ``path`` (:meth:`Repository.file_pieces`) one after the other to
    ``out_fd``, fetching (and verifying) those not cached; the kernel copies the bytes."""
    for content_hash, suffix, size in pieces:
        with objects.open(content_hash, suffix, compression, size) as f:
            _copy_object(f, out_fd, size, path, content_hash)


def _copy_object(f, out_fd, size, path, content_hash):
    if not copy_file(f.fileno(), out_fd, size):
        raise RepositoryError(errno.EIO, "{}: cached object {} is shorter than {} bytes".format(
            path, content_hash.hex(), size))


_copy_file_range = getattr(os, "copy_file_range", None)  # Python 3.8+ on Linux


def copy_file(source_fd, out_fd, size):
    """Copy the first ``size`` bytes of ``source_fd`` to ``out_fd`` at its position, in the kernel:
    ``copy_file_range`` (no copy through user space; a reflink where the file system can), else ``sendfile``.
    False if ``source_fd`` is shorter."""
    global _copy_file_range
    offset = 0
    while offset < size and _copy_file_range is not None:
        try:
            sent = _copy_file_range(source_fd, out_fd, size - offset, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
                raise
            if exc.errno != errno.EINVAL:  # not available here, or not between these file systems: stop trying
                _copy_file_range = None
            break
        if sent == 0:
            break  # the end of the source, or a file system that copies nothing: sendfile tells which
        offset += sent
    while offset < size:
        sent = os.sendfile(out_fd, source_fd, offset, size - offset)
        if sent == 0:
            return False
        offset += sent
    return True


def _canonical(path):
    try:
        return paths.normalize(path)
    except ValueError as exc:
        raise RepositoryError(errno.EINVAL, str(exc))


def catalog_loader(objects):
    """``load(content_hash, size) -> filename`` for CatalogTree: fetched, verified, pinned in the cache."""

    def load(content_hash, size):
        return objects.path(content_hash, SUFFIX_CATALOG, ZLIB, expected_size=size or None, kind=CATALOG, pin=True)

    return load


def new_tree(objects, manifest):
    return CatalogTree(catalog_loader(objects), manifest.root_catalog, manifest.root_catalog_size)
