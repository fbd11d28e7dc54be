"""The cache database ``cachedb``: what the local cache holds, in which LRU order, and which processes pin what.

SQLite in WAL mode (so the cache belongs on a local file system, as CernVM-FS's own cache does), shared by all
processes that use the cache. Writers take the write lock at once (``BEGIN IMMEDIATE``), so they queue instead of
deadlocking; every process waits up to ``timeout`` seconds for a lock (SQLite's busy timeout). Nothing is synced to disk: a crashed
process cannot damage the database (an unfinished transaction never becomes part of it), only a power loss can,
and the cache then has to be removed.

A pin belongs to a process, named by its pid and its start time (``/proc/<pid>/stat``), so that the pins of a
killed process, and of an unrelated process that got its pid again, do not count.
"""

import contextlib
import os
import sqlite3
import threading
import time

SCHEMA_VERSION = 1  # PRAGMA user_version

SCHEMA = (
    """CREATE TABLE objects (
        hash TEXT PRIMARY KEY,        -- ContentHash.hex(): hex digest plus algorithm id
        size INTEGER NOT NULL,        -- bytes of the decompressed object file
        crc32 INTEGER NOT NULL,       -- zlib.crc32 of the decompressed content
        kind INTEGER NOT NULL,        -- cache.REGULAR or cache.CATALOG
        access_seq INTEGER NOT NULL   -- LRU order: larger means used more recently
    )""",
    "CREATE INDEX objects_by_access ON objects (access_seq)",
    """CREATE TABLE pins (
        hash TEXT NOT NULL,
        pid INTEGER NOT NULL,
        start_time INTEGER NOT NULL,  -- field 22 of /proc/<pid>/stat: tells a recycled pid apart
        PRIMARY KEY (hash, pid, start_time)
    )""",
    "CREATE TABLE totals (bytes INTEGER NOT NULL, objects INTEGER NOT NULL)",
    "INSERT INTO totals VALUES (0, 0)",
    # Triggers keep the totals exact in every transaction, whoever writes.
    """CREATE TRIGGER objects_added AFTER INSERT ON objects BEGIN
        UPDATE totals SET bytes = bytes + NEW.size, objects = objects + 1; END""",
    """CREATE TRIGGER objects_removed AFTER DELETE ON objects BEGIN
        UPDATE totals SET bytes = bytes - OLD.size, objects = objects - 1; END""",
    """CREATE TRIGGER objects_resized AFTER UPDATE OF size ON objects BEGIN
        UPDATE totals SET bytes = bytes - OLD.size + NEW.size; END""",
    "PRAGMA user_version = {}".format(SCHEMA_VERSION),
)


class CacheError(Exception):
    """The cache cannot be used; the message says what failed and what to do."""


def process_start_time(pid):
    """When process ``pid`` started (clock ticks after boot), or None if it is not running or is a zombie."""
    try:
        with open("/proc/{}/stat".format(pid), "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()  # the command name in parentheses may hold anything
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])  # field 22 overall; fields[0] is field 3


def current_process():
    """This process as a pin owner: ``(pid, start time)``."""
    pid = os.getpid()
    start_time = process_start_time(pid)
    if start_time is None:
        raise CacheError("cannot read /proc/{}/stat: the cache needs the Linux /proc file system to tell running "
                         "processes apart; mount /proc".format(pid))
    return pid, start_time


class CacheDatabase(object):
    """The ``cachedb`` file. Methods that change it must run inside ``with db.transaction():``; one connection is
    shared by the threads of a process, one at a time. A connection must not cross fork(): see Cache.closed_for_fork."""

    def __init__(self, path, timeout):
        self.path = path
        self.timeout = timeout
        self._pid = os.getpid()
        self._lock = threading.RLock()
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))  # SQLite would create it 0644
            # timeout sets SQLite's busy timeout; isolation_level None: transactions are explicit.
            self._connection = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                                               check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise CacheError("cannot open the cache database {}: {}; the cache directory must be writable by this "
                             "user".format(path, exc))
        try:
            self._use_wal(timeout)
            self._connection.execute("PRAGMA synchronous = OFF")
            self._ensure_schema()
        except BaseException as exc:
            self._connection.close()
            if isinstance(exc, sqlite3.Error):
                raise CacheError("cannot use the cache database {}: {}; if it is damaged (after a power loss), "
                                 "remove the cache directory {} and start again"
                                 .format(path, exc, os.path.dirname(path)))
            raise

    def _use_wal(self, timeout):
        """Put the database in WAL mode (commits append; no journal file per store). The mode is stored in the
        file, so only the first user switches it; switching needs a moment when no other connection writes, and
        SQLite does not wait for that by itself, so this retries until ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    self._connection.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def close(self):
        with self._lock:
            self._connection.close()

    @contextlib.contextmanager
    def transaction(self):
        """Hold the database's write lock (and this connection) for the block; commit at its end, roll back if it
        raises."""
        with self._lock:
            self._check_process()
            try:
                self._connection.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise CacheError("cannot lock the cache database {} for writing within {} s: {}; another process "
                                 "holds it; if this persists, look for hung processes using the cache"
                                 .format(self.path, self.timeout, exc))
            try:
                yield
                self._connection.execute("COMMIT")
            except BaseException:
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
                raise

    # -- objects --------------------------------------------------------------------------------------------------

    def lookup(self, key):
        """``(size, crc32)`` recorded for an object, or None."""
        rows = self._query("SELECT size, crc32 FROM objects WHERE hash = ?", (key,))
        return rows[0] if rows else None

    def put_objects(self, rows):
        """Record objects ``[(key, size, crc32, kind)]`` as the most recently used ones, the last most recently (in
        a transaction)."""
        if not rows:
            return
        seq = self._next_access_seq()
        for key, size, crc32, kind in rows:
            updated = self._connection.execute("UPDATE objects SET size = ?, crc32 = ?, kind = ?, access_seq = ? "
                                               "WHERE hash = ?", (size, crc32, kind, seq, key)).rowcount
            if not updated:
                self._connection.execute("INSERT INTO objects (hash, size, crc32, kind, access_seq) "
                                         "VALUES (?, ?, ?, ?, ?)", (key, size, crc32, kind, seq))
            seq += 1

    def remove_objects(self, keys):
        """Forget objects (in a transaction)."""
        self._connection.executemany("DELETE FROM objects WHERE hash = ?", [(key,) for key in keys])

    def record_accesses(self, keys):
        """Mark objects as used, the last key most recently (in a transaction)."""
        first = self._next_access_seq()
        self._connection.executemany("UPDATE objects SET access_seq = ? WHERE hash = ?",
                                     [(first + i, key) for i, key in enumerate(keys)])

    def least_recently_used(self, count, keep):
        """Up to ``count`` unpinned objects other than ``keep``, least recently used first: ``[(key, size)]``."""
        return self._query("SELECT hash, size FROM objects WHERE hash NOT IN (SELECT hash FROM pins) AND hash != ? "
                           "ORDER BY access_seq LIMIT ?", (keep, count))

    def totals(self):
        """``(bytes, objects)`` recorded."""
        return self._query("SELECT bytes, objects FROM totals")[0]

    def _next_access_seq(self):
        return self._query("SELECT coalesce(max(access_seq), 0) + 1 FROM objects")[0][0]

    # -- pins -----------------------------------------------------------------------------------------------------

    def add_pin(self, key, owner):
        """Pin an object for the process ``owner`` = ``(pid, start time)`` (in a transaction)."""
        self._connection.execute("INSERT OR IGNORE INTO pins (hash, pid, start_time) VALUES (?, ?, ?)",
                                 (key,) + tuple(owner))

    def remove_pin(self, key, owner):
        """Drop ``owner``'s pin of an object, if any (in a transaction)."""
        self._connection.execute("DELETE FROM pins WHERE hash = ? AND pid = ? AND start_time = ?",
                                 (key,) + tuple(owner))

    def remove_dead_pins(self):
        """Drop the pins of processes that are no longer running (in a transaction)."""
        for owner in self._query("SELECT DISTINCT pid, start_time FROM pins"):
            if process_start_time(owner[0]) != owner[1]:
                self._connection.execute("DELETE FROM pins WHERE pid = ? AND start_time = ?", owner)

    def pinned_bytes(self):
        """Bytes of the cached objects that running processes pin."""
        rows = self._query("SELECT pins.hash, objects.size, pins.pid, pins.start_time "
                           "FROM pins JOIN objects ON objects.hash = pins.hash")
        running = {}
        pinned = {}
        for key, size, pid, start_time in rows:
            if (pid, start_time) not in running:
                running[pid, start_time] = process_start_time(pid) == start_time
            if running[pid, start_time]:
                pinned[key] = size
        return sum(pinned.values())

    # -- internals ------------------------------------------------------------------------------------------------

    def _query(self, sql, parameters=()):
        """All rows at once: a statement left half-read would keep the database's read lock."""
        with self._lock:
            self._check_process()
            return self._connection.execute(sql, parameters).fetchall()

    def _check_process(self):
        if os.getpid() != self._pid:
            raise CacheError("the cache database {} was opened by process {} and cannot be used after fork(); "
                             "open the cache again in process {}".format(self.path, self._pid, os.getpid()))

    def _ensure_schema(self):
        with self.transaction():
            version = self._query("PRAGMA user_version")[0][0]
            if version == SCHEMA_VERSION:
                return
            if version != 0 or self._query("SELECT count(*) FROM sqlite_master")[0][0]:
                raise CacheError("{} is not a cvmfs-pilot cache database of schema version {} (it has version {}; "
                                 "it may belong to another CernVM-FS client); use another cache directory or "
                                 "remove this one".format(self.path, SCHEMA_VERSION, version))
            for statement in SCHEMA:
                self._connection.execute(statement)
