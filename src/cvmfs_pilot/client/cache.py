"""The local cache of decompressed objects, shared by the processes (pilots) of one user on a node.

Layout (cvmfs-format.md §7), all private to the user (directories 0700, files 0600)::

    <directory>/00 .. ff/<rest of hex + algo id>   objects, decompressed, no suffix (ContentHash.cache_path())
    <directory>/txn/                               temporary files and lock files
    <directory>/quarantaine/                       corrupted objects, kept for inspection (the newest few)
    <directory>/cachedb                            sizes, crc32s, LRU order and pins (cache_db.py)
    <directory>/cvmfschecksum.<fqrn>               breadcrumbs (breadcrumb.py)

How processes share it safely:

* an object file appears only complete: written in ``txn/``, then renamed into place. The rename happens inside a
  database write transaction that records the object, and every removal (LRU cleanup, quarantine) also happens
  inside one, so files and rows change together. A process killed in between leaves at worst a temporary file
  (removed by the next ``Cache()`` once an hour old) or an object file without a row, which is not trusted and
  is replaced by the next ``store()``.
* ``fetch_lock()`` keeps two processes from downloading the same object at the same time; correctness does not
  depend on it (a second store of an object just replaces the first copy).
* a process that stores many objects at once (an export) may defer its stores (``defer_stores()``): each object
  stays in ``txn/``, complete and verified, usable by that Cache only, until a batch of them is renamed into place
  and recorded in one transaction (``flush_stores()``, every ``STORE_BATCH`` stores or ``STORE_FLUSH_INTERVAL``
  seconds, and ``close()``). Files and rows still change together; other processes just see the objects later
  (and may fetch one of them meanwhile, which is harmless). One transaction per object would make the processes
  of a parallel export queue for the database's write lock.
* removing an object that another process has open is harmless on Linux: the open file stays readable.

The content hash covers the compressed bytes, so a cached (decompressed) file is checked against what was recorded
when it was stored: its size on every ``open()``, its crc32 on the first ``open()`` through a Cache object.

Accesses reach the database in batches (see ``ACCESS_BATCH``), not on every ``open()``; the LRU order is therefore
exact only to within a batch. ``close()`` writes what is pending; a killed process loses at most one batch.
"""

import collections
import contextlib
import io
import itertools
import logging
import os
import threading
import time
import zlib

from cvmfs_pilot.cvmfs.hashing import ContentHash

from . import breadcrumb, lock_file
from .cache_db import CacheDatabase, CacheError, current_process

__all__ = ["Cache", "CacheError", "REGULAR", "CATALOG", "cache_directory"]

log = logging.getLogger(__name__)

# Kinds of object, as the real client's cachedb numbers them.
REGULAR = 0
CATALOG = 1

DATABASE_TIMEOUT = 30.0  # seconds to wait for another process's database lock
TEMP_MAX_AGE = 3600  # seconds: older files in txn/ were left by a crashed process
ACCESS_BATCH = 100  # write accesses when this many objects have been used ...
ACCESS_FLUSH_INTERVAL = 10.0  # ... or when this many seconds have passed since the last write
VERIFIED_MEMORY = 65536  # objects whose crc32 a Cache remembers having checked
EVICTION_BATCH = 256  # objects removed per database transaction during a cleanup
STORE_BATCH = 64  # deferred stores (defer_stores()) recorded per database transaction ...
STORE_FLUSH_INTERVAL = 1.0  # ... or when the oldest of them has waited this many seconds
QUARANTINE_KEEP = 16  # corrupted objects kept in quarantaine/
READ_BLOCK = 1024 * 1024

TEMP_PREFIX = "tmp."
LOCK_SUFFIX = ".lock"
FETCH_LOCKS = "fetchlocks"  # one file for all per-object fetch locks (byte-range locks)
CLEANUP_LOCK = "cleanup" + LOCK_SUFFIX

_TEMP_NUMBERS = itertools.count()  # names of temporary files, with the pid (next() is atomic under the GIL)


def cache_directory(cache_base, fqrn, shared=True):
    """``CVMFS_CACHE_BASE/shared`` (``CVMFS_SHARED_CACHE=yes``, the default) or ``CVMFS_CACHE_BASE/<fqrn>``."""
    return os.path.join(cache_base, "shared" if shared else fqrn)


class Cache(object):
    """The cache in ``directory`` (created if missing). ``quota_limit_bytes``: None for no limit (the real client's
    ``CVMFS_QUOTA_LIMIT=-1``), otherwise bytes (``CVMFS_QUOTA_LIMIT`` is in MB): a store that takes the cache
    above it removes least-recently-used unpinned objects down to half of it. ``verify_on_first_open``: check the
    crc32 of each object the first time this Cache opens it (reads the whole file once).

    A Cache may be shared by the threads of a process, not across fork(): open one in each process. Use it as a
    context manager, or call close(), to record the last accesses.
    """

    def __init__(self, directory, quota_limit_bytes=None, verify_on_first_open=True):
        if quota_limit_bytes is not None and quota_limit_bytes <= 0:
            raise ValueError("the cache quota must be a positive number of bytes, or None for no limit; "
                             "got {!r}".format(quota_limit_bytes))
        self.directory = os.path.abspath(str(directory))
        self.quota_limit_bytes = quota_limit_bytes
        self.verify_on_first_open = verify_on_first_open
        self._txn = os.path.join(self.directory, "txn")
        self._quarantine = os.path.join(self.directory, "quarantaine")
        self._owner = current_process()
        self._pid = self._owner[0]
        self._create_layout()
        self._db = CacheDatabase(os.path.join(self.directory, "cachedb"), DATABASE_TIMEOUT)
        self._fetch_locks = lock_file.KeyedLocks(os.path.join(self.directory, FETCH_LOCKS))
        self._lock = threading.Lock()  # guards the two maps below
        self._verified = collections.OrderedDict()  # keys whose crc32 was checked, oldest first
        self._pending_accesses = collections.OrderedDict()  # keys used since the last write, last used last
        self._last_access_flush = time.monotonic()
        self._pending_stores = collections.OrderedDict()  # key -> _PendingStore (defer_stores()), oldest first
        self._pending_since = None  # monotonic time of the oldest pending store
        self._store_batch = 0  # 0: stores are recorded at once
        self._flush_lock = threading.Lock()  # one flush_stores() at a time
        self._warned_over_quota = False
        self._remove_stale_temp_files()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def forked(self):
        """A Cache of the same directory and settings for a child process forked within :meth:`closed_for_fork`
        (this one belongs to the parent: the child must neither use nor close it)."""
        return Cache(self.directory, self.quota_limit_bytes, self.verify_on_first_open)

    @contextlib.contextmanager
    def closed_for_fork(self):
        """``with cache.closed_for_fork() as safe:`` -- closes the database connection for the block (no other
        thread may use this Cache meanwhile) and opens it again after; ``safe`` tells whether a fork() in the block
        is safe, that is whether no other connection of this process still has the database open.

        SQLite keeps, per process, a record of the locks its connections hold on a file (a WAL connection holds a
        shared lock while open). A child would inherit that record but not the locks, and its own connection would
        then take none: another process could checkpoint and remove the WAL under it."""
        path = self._db.path
        self._db.close()
        try:
            yield not _open_in_this_process(path)
        finally:
            self._db = CacheDatabase(path, DATABASE_TIMEOUT)

    def close(self):
        try:
            self.flush_stores()
        finally:
            self._flush_accesses()
            self._db.close()
            self._fetch_locks.close()

    # -- objects --------------------------------------------------------------------------------------------------

    def path_of(self, content_hash):
        """Where the object is (or would be) cached."""
        return os.path.join(self.directory, content_hash.cache_path())

    def open(self, content_hash):
        """The cached, decompressed object open for reading (binary, unbuffered), or None if it is not cached or
        was found corrupted (then it is moved to quarantaine/ and must be fetched again)."""
        key = content_hash.hex()
        if self._pending_stores:
            f = self._open_pending(key)
            if f is not None:
                return f
        try:
            f = io.FileIO(self.path_of(content_hash), "r")
        except FileNotFoundError:
            return None
        try:
            trusted = self._check(key, f)
        except BaseException:
            f.close()
            raise
        if not trusted:
            f.close()
            return None
        self._note_access(key)
        return f

    def store(self, content_hash, fill, kind=REGULAR, pin=False):
        """Cache an object: ``fill(writer)`` writes its decompressed content with ``writer.write(bytes)`` and raises
        if it is wrong (then nothing is cached and the exception propagates). Replaces any copy already there.
        ``pin``: pin it for this process in the same step, before any cleanup can remove it. Returns its path."""
        self.store_and_open(content_hash, fill, kind, pin).close()
        if self._pending_stores:
            self.flush_stores()  # the path is returned: the object must be there
        return self.path_of(content_hash)

    def store_and_open(self, content_hash, fill, kind=REGULAR, pin=False):
        """Like :meth:`store`, but returns the stored object open for reading (binary, unbuffered, at its start),
        as :meth:`open` would, without opening it again: the file just written."""
        if kind not in (REGULAR, CATALOG):
            raise ValueError("unknown kind of cached object {!r}; use REGULAR or CATALOG".format(kind))
        key = content_hash.hex()
        fd, temp = self._new_temp_file()
        try:
            writer = _Crc32Writer(fd)
            fill(writer)
            os.lseek(fd, 0, os.SEEK_SET)
            stored = io.FileIO(fd, "r")  # owns fd from here on; refuses writes through it
        except BaseException:
            os.close(fd)
            _remove_if_present(temp)
            raise
        item = _PendingStore(key, temp, self.path_of(content_hash), writer.size, writer.crc32, kind)
        try:
            if self._store_batch and kind == REGULAR and not pin:
                self._defer_store(item)
            else:
                self._record_stores([item], pin)
        except BaseException:
            stored.close()
            raise
        return stored

    def defer_stores(self, batch=STORE_BATCH):
        """Record regular, unpinned objects stored from now on in batches of ``batch`` (see the module's
        documentation); 0 records each at once again (after flushing what is pending)."""
        if not batch:
            self.flush_stores()
        self._store_batch = max(int(batch), 0)

    def flush_stores(self, wait=True):
        """Rename the deferred stores into place and record them, in one transaction. Without ``wait``, nothing
        is done if another thread is flushing already."""
        if not self._flush_lock.acquire(blocking=wait):
            return
        try:
            with self._lock:
                batch = list(self._pending_stores.values())
            if batch:
                self._record_stores(batch, pin=False)
        finally:
            self._flush_lock.release()

    def fetch_lock(self, content_hash):
        """``with cache.fetch_lock(h):`` -- only one process (or thread) at a time fetches object ``h``. Check
        ``open()`` again inside: another process may have stored it while this one waited."""
        return self._fetch_locks.hold(content_hash.hex(), int.from_bytes(content_hash.digest[:7], "big"))

    # -- pins -----------------------------------------------------------------------------------------------------

    def pin(self, content_hash):
        """Keep an object (a catalog in use) from being removed by cleanups while this process runs."""
        with self._db.transaction():
            self._db.add_pin(content_hash.hex(), self._owner)

    def unpin(self, content_hash):
        with self._db.transaction():
            self._db.remove_pin(content_hash.hex(), self._owner)

    # -- breadcrumbs ----------------------------------------------------------------------------------------------

    def read_breadcrumb(self, fqrn):
        """``(root ContentHash, timestamp, revision)`` of the newest revision of ``fqrn`` seen, or None (also if
        the breadcrumb is garbage: a warning is logged)."""
        return breadcrumb.read_breadcrumb(self.directory, fqrn)

    def write_breadcrumb(self, fqrn, root_hash, timestamp, revision):
        breadcrumb.write_breadcrumb(self.directory, self._txn, fqrn, root_hash, timestamp, revision)

    # -- usage ----------------------------------------------------------------------------------------------------

    def usage(self):
        """``(bytes, objects, pinned bytes)`` recorded in the cache; pins of processes no longer running do not
        count."""
        total_bytes, objects = self._db.totals()
        return total_bytes, objects, self._db.pinned_bytes()

    # -- internals ------------------------------------------------------------------------------------------------

    def _create_layout(self):
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            for name in ["{:02x}".format(i) for i in range(256)] + ["txn", "quarantaine"]:
                try:
                    os.mkdir(os.path.join(self.directory, name), 0o700)
                except FileExistsError:
                    pass
        except OSError as exc:
            raise CacheError("cannot create the cache directory {}: {}; set CVMFS_CACHE_BASE to a writable "
                             "directory".format(self.directory, exc))

    def _defer_store(self, pending):
        self._remember_verified(pending.key)
        now = time.monotonic()
        with self._lock:
            self._pending_stores[pending.key] = pending
            if self._pending_since is None:
                self._pending_since = now
            due = (len(self._pending_stores) >= self._store_batch
                   or now - self._pending_since >= STORE_FLUSH_INTERVAL)
        if due:
            self.flush_stores(wait=False)  # if another thread is flushing, a later store will

    def _record_stores(self, batch, pin):
        """Rename the temporary files of ``batch`` (``_PendingStore``s, pending or not) into place and record
        them, in one transaction; then clean up if the quota is exceeded. Takes them off the pending stores."""
        try:
            with self._db.transaction():
                stored = []
                for item in batch:
                    try:
                        os.rename(item.temp, item.path)
                    except FileNotFoundError:  # removed as stale by another process (pending for over an hour)
                        continue
                    stored.append(item)
                self._db.put_objects([(item.key, item.size, item.crc32, item.kind) for item in stored])
                if pin:
                    for item in stored:
                        self._db.add_pin(item.key, self._owner)
                total_bytes = self._db.totals()[0] if self.quota_limit_bytes is not None else 0
            for item in stored:
                self._remember_verified(item.key)
        except BaseException:
            for item in batch:
                _remove_if_present(item.temp)
            raise
        finally:
            if self._pending_stores:
                with self._lock:
                    for item in batch:
                        if self._pending_stores.get(item.key) is item:
                            del self._pending_stores[item.key]
                    self._pending_since = time.monotonic() if self._pending_stores else None
        if self.quota_limit_bytes is not None and total_bytes > self.quota_limit_bytes:
            self._clean_up(keep=batch[-1].key)

    def _open_pending(self, key):
        """A deferred store of ``key`` open for reading, or None (also when it has just been recorded)."""
        with self._lock:
            pending = self._pending_stores.get(key)
            if pending is None:
                return None
            try:
                return io.FileIO(pending.temp, "r")
            except FileNotFoundError:  # renamed into place by a flush right now: open() finds it there
                return None

    def _new_temp_file(self):
        """``(fd, path)`` of a new empty file in txn/, open for reading and writing. Names are unique within the
        process (pid and a counter); one left by a crashed process with the same pid is skipped."""
        while True:
            path = os.path.join(self._txn, "{}{}.{}".format(TEMP_PREFIX, self._pid, next(_TEMP_NUMBERS)))
            try:
                return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600), path
            except FileExistsError:
                continue

    def _check(self, key, f):
        """Whether the opened object file ``f`` is what was stored; quarantines it if not."""
        recorded = self._db.lookup(key)
        if recorded is None:
            return False  # being stored by another process right now, or left by a crash: store() replaces it
        size, crc32 = recorded
        opened = os.fstat(f.fileno())
        if opened.st_size != size:
            self._quarantine_object(key, f.name, opened, "it has {} bytes instead of {}".format(opened.st_size, size))
            return False
        if self.verify_on_first_open and not self._was_verified(key):
            actual = _crc32_of(f)
            f.seek(0)
            if actual != crc32:
                self._quarantine_object(key, f.name, opened, "its crc32 is {:08x} instead of {:08x}"
                                        .format(actual, crc32))
                return False
            self._remember_verified(key)
        return True

    def _quarantine_object(self, key, path, opened, reason):
        """Move a corrupted object file out of the way, unless another process has replaced it meanwhile."""
        destination = os.path.join(self._quarantine, "{}.{}".format(key, int(time.time())))
        with self._db.transaction():
            try:
                current = os.stat(path)
            except FileNotFoundError:
                return
            if (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
                return
            os.rename(path, destination)
            self._db.remove_objects([key])
        log.warning("cached object %s is corrupted (%s; a disk or file system fault?): moved to %s, it will be "
                    "fetched again", path, reason, destination)
        self._prune_quarantine()

    def _prune_quarantine(self):
        entries = []
        for name in os.listdir(self._quarantine):
            path = os.path.join(self._quarantine, name)
            try:
                entries.append((os.lstat(path).st_ctime, path))  # ctime: when it was moved here
            except FileNotFoundError:
                pass
        for _, path in sorted(entries, reverse=True)[QUARANTINE_KEEP:]:
            _remove_if_present(path)

    def _was_verified(self, key):
        with self._lock:
            return key in self._verified

    def _remember_verified(self, key):
        with self._lock:
            self._verified[key] = None
            self._verified.move_to_end(key)
            if len(self._verified) > VERIFIED_MEMORY:
                self._verified.popitem(last=False)

    def _note_access(self, key):
        with self._lock:
            self._pending_accesses[key] = None
            self._pending_accesses.move_to_end(key)
            due = (len(self._pending_accesses) >= ACCESS_BATCH
                   or time.monotonic() - self._last_access_flush >= ACCESS_FLUSH_INTERVAL)
        if due:
            self._flush_accesses()

    def _flush_accesses(self):
        with self._lock:
            keys = list(self._pending_accesses)
            self._pending_accesses.clear()
            self._last_access_flush = time.monotonic()
        if not keys:
            return
        try:
            with self._db.transaction():
                self._db.record_accesses(keys)
        except CacheError as exc:  # the LRU order is advisory: losing some accesses is better than failing a read
            log.warning("could not record the use of %d cached objects: %s", len(keys), exc)

    def _clean_up(self, keep):
        """Remove least-recently-used unpinned objects (not ``keep``) until the cache holds at most half of its
        quota. One process cleans at a time; if another is cleaning already, it will bring the total down."""
        lock_path = os.path.join(self._txn, CLEANUP_LOCK)
        lock_fd = lock_file.acquire(lock_path, blocking=False)
        if lock_fd is None:
            return
        try:
            self._flush_accesses()
            target = self.quota_limit_bytes // 2
            with self._db.transaction():
                self._db.remove_dead_pins()
            while self._evict_batch(target, keep):
                pass
        finally:
            lock_file.release(lock_path, lock_fd)

    def _evict_batch(self, target, keep):
        """Remove up to EVICTION_BATCH objects towards ``target`` bytes; whether more must go."""
        with self._db.transaction():
            total_bytes = self._db.totals()[0]
            if total_bytes <= target:
                return False
            victims = []
            for key, size in self._db.least_recently_used(EVICTION_BATCH, keep):
                victims.append(key)
                total_bytes -= size
                if total_bytes <= target:
                    break
            for key in victims:
                _remove_if_present(self.path_of(ContentHash.parse(key)))
            self._db.remove_objects(victims)
        if not victims and total_bytes > self.quota_limit_bytes and not self._warned_over_quota:
            self._warned_over_quota = True
            log.warning("the cache %s holds %d bytes, more than its quota of %d bytes, but what is left is pinned "
                        "by running processes or was just stored; raise CVMFS_QUOTA_LIMIT", self.directory,
                        total_bytes, self.quota_limit_bytes)
        return bool(victims) and total_bytes > target

    def _remove_stale_temp_files(self):
        """Remove what crashed processes left in txn/: files not modified for TEMP_MAX_AGE (lock files only if
        nobody holds them)."""
        now = time.time()
        for name in os.listdir(self._txn):
            path = os.path.join(self._txn, name)
            try:
                if now - os.lstat(path).st_mtime < TEMP_MAX_AGE:
                    continue
            except FileNotFoundError:
                continue
            if name.endswith(LOCK_SUFFIX):
                fd = lock_file.acquire(path, blocking=False)
                if fd is not None:
                    lock_file.release(path, fd)
            else:
                _remove_if_present(path)


class _Crc32Writer(object):
    """Writes to a file descriptor and keeps the size and crc32 of what was written. A writer may start over (a
    download retried from another server) with ``seek(0)`` and ``truncate()``; nothing else moves the position."""

    def __init__(self, fd):
        self._fd = fd
        self.size = 0
        self.crc32 = 0
        self._dirty = False  # whether the file may hold bytes (it starts empty)

    def write(self, data):
        self._dirty = True
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self.crc32 = zlib.crc32(data, self.crc32)
        self.size += len(data)
        return len(data)

    def seek(self, position):
        if position != 0:
            raise ValueError("a cache writer can only start over (seek(0)), not seek to {}".format(position))
        if self._dirty:
            os.lseek(self._fd, 0, os.SEEK_SET)
        self.size = 0
        self.crc32 = 0

    def truncate(self):
        if self.size != 0:
            raise ValueError("truncate() follows seek(0)")
        if self._dirty:  # truncating an empty file would make ext4 flush it at close (auto_da_alloc)
            os.ftruncate(self._fd, 0)
            self._dirty = False

    def flush(self):
        pass


class _PendingStore(object):
    """An object written to ``temp``, verified, to be renamed to ``path`` and recorded."""

    __slots__ = ("key", "temp", "path", "size", "crc32", "kind")

    def __init__(self, key, temp, path, size, crc32, kind):
        self.key = key
        self.temp = temp
        self.path = path
        self.size = size
        self.crc32 = crc32
        self.kind = kind


def _open_in_this_process(path):
    """Whether a file descriptor of this process refers to the file ``path``."""
    target = os.stat(path)
    for fd in os.listdir("/proc/self/fd"):
        try:
            st = os.stat("/proc/self/fd/" + fd)
        except OSError:  # closed meanwhile, or the descriptor of the listing itself
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            return True
    return False


def _crc32_of(f):
    crc32 = 0
    for block in iter(lambda: f.read(READ_BLOCK), b""):
        crc32 = zlib.crc32(block, crc32)
    return crc32


def _remove_if_present(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
