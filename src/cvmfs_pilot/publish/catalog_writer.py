"""Writing one catalog database (schema 2.5 revision 7) with the statistics counters the real client demands."""

import shutil
import sqlite3
import stat as statmod

from cvmfs_pilot.cvmfs import catalog as fmt
from cvmfs_pilot.cvmfs import paths

from .errors import PublishError

_ENTRY_COLUMNS = ("md5path_1, md5path_2, parent_1, parent_2, hardlinks, hash, size, mode, mtime, mtimens, flags, "
                  "name, symlink, uid, gid, xattr")
_INSERT_ENTRY = "INSERT INTO catalog ({}) VALUES ({})".format(_ENTRY_COLUMNS, ", ".join("?" * 16))
_BATCH_ROWS = 1024
_CHUNK_COLUMNS = "md5path_1, md5path_2, offset, size, hash"
_INSERT_CHUNK = "INSERT INTO chunks ({}) VALUES (?, ?, ?, ?, ?)".format(_CHUNK_COLUMNS)


class Counters:
    """The ``self_*`` counters of one catalog and the ``subtree_*`` sums of its nested catalogs."""

    def __init__(self):
        self.self = dict.fromkeys(fmt.COUNTER_NAMES, 0)
        self.subtree = dict.fromkeys(fmt.COUNTER_NAMES, 0)

    def count(self, mode, size, chunk_count, has_xattrs):
        s = self.self
        if statmod.S_ISREG(mode):
            s["regular"] += 1
            s["file_size"] += size
            if chunk_count:
                s["chunked"] += 1
                s["chunked_size"] += size
                s["chunks"] += chunk_count
        elif statmod.S_ISLNK(mode):
            s["symlink"] += 1
        elif statmod.S_ISDIR(mode):
            s["dir"] += 1
        else:
            s["special"] += 1
        if has_xattrs:
            s["xattr"] += 1

    def add_nested(self, child_statistics):
        """Fold a nested catalog's statistics table (``self_*`` and ``subtree_*``) into our subtree counters."""
        for name in fmt.COUNTER_NAMES:
            self.subtree[name] += child_statistics.get("self_" + name, 0) + child_statistics.get("subtree_" + name, 0)

    def as_table(self):
        table = {"self_" + k: v for k, v in self.self.items()}
        table.update({"subtree_" + k: v for k, v in self.subtree.items()})
        return table


def catalog_error(exc, root_prefix):
    """A PublishError for an SQLite failure while writing the catalog at ``root_prefix``."""
    where = root_prefix or "/"
    if "full" in str(exc):
        return PublishError("cannot write the catalog of {}: the file system is full; free space and publish "
                            "again".format(where))
    return PublishError("cannot write the catalog of {}: {}".format(where, exc))


def _fetch(cursor, count):
    return cursor.fetchmany(count) if count else []  # fetchmany(0) would fetch the default arraysize


class _PreviousRows:
    """The rows of the previous revision's catalog (attached as ``previous``), read in order alongside the new
    ones: while the new rows repeat them, nothing needs writing."""

    def __init__(self, db):
        self._db = db
        self._entries = db.execute("SELECT {} FROM previous.catalog ORDER BY rowid".format(_ENTRY_COLUMNS))
        self._chunks = db.execute("SELECT {} FROM previous.chunks ORDER BY rowid".format(_CHUNK_COLUMNS))
        self._entry_count = 0
        self._chunk_count = 0

    @staticmethod
    def usable(db):
        """Whether the attached catalog has exactly the schema just created and no bind mountpoints."""
        schema = "SELECT type, name, tbl_name, sql FROM {}.sqlite_master ORDER BY rowid"
        return (db.execute(schema.format("previous")).fetchall() == db.execute(schema.format("main")).fetchall()
                and db.execute("SELECT 1 FROM previous.bind_mountpoints LIMIT 1").fetchone() is None)

    def repeat(self, rows, chunk_rows):
        """Whether ``rows`` and ``chunk_rows`` are the next previous rows; if so they are consumed."""
        if _fetch(self._entries, len(rows)) != rows or _fetch(self._chunks, len(chunk_rows)) != chunk_rows:
            return False
        self._entry_count += len(rows)
        self._chunk_count += len(chunk_rows)
        return True

    def all_repeated(self):
        """Whether every previous row, nested catalogs included, has been repeated."""
        nested = "SELECT path, sha1, size FROM {}.nested_catalogs ORDER BY rowid"
        return (self._entries.fetchone() is None and self._chunks.fetchone() is None
                and self._db.execute(nested.format("previous")).fetchall()
                == self._db.execute(nested.format("main")).fetchall())

    def close(self):
        """Release the reading statements: a connection closed with a statement still open stays open (and keeps
        its files open) until that statement is garbage-collected."""
        self._entries.close()
        self._chunks.close()

    def copy_repeated(self):
        """Write the repeated rows into the new catalog, as if they had been added one by one."""
        self.close()
        self._db.execute("INSERT INTO catalog ({0}) SELECT {0} FROM previous.catalog ORDER BY rowid LIMIT ?"
                         .format(_ENTRY_COLUMNS), (self._entry_count,))
        self._db.execute("INSERT INTO chunks ({0}) SELECT {0} FROM previous.chunks ORDER BY rowid LIMIT ?"
                         .format(_CHUNK_COLUMNS), (self._chunk_count,))


class CatalogWriter:
    """Builds one catalog file. Rows are added directory by directory; :meth:`finish` writes the properties and
    statistics and closes the database.

    Given the previous revision's catalog file of the same place, rows that repeat it in order are not written:
    at the first difference the repeated ones are copied over, and if there is none the new catalog is a copy of
    the previous one with new properties and statistics."""

    def __init__(self, filename, root_prefix, previous_file=None):
        self.filename = str(filename)
        self.root_prefix = root_prefix
        self._previous_file = previous_file
        self.counters = Counters()
        self.hardlink_groups = 0  # the last hard-link group number handed out in this catalog
        self._db = _open(self.filename)
        if previous_file is not None:
            self._db.execute("ATTACH DATABASE ? AS previous", (str(previous_file),))
        self._db.execute("BEGIN")
        for ddl in fmt.SCHEMA_DDL:
            self._db.execute(ddl)
        self._previous = None  # rows of previous_file, while the new ones repeat them
        if previous_file is not None and _PreviousRows.usable(self._db):
            self._previous = _PreviousRows(self._db)
        self._parent = (None, None)  # the last parent path and its MD5 key
        self._rows = []  # entry rows waiting for one executemany
        self._chunk_rows = []

    def add(self, path, mode, size, mtime, mtimens, flags, content_hash=None, symlink="", uid=0, gid=0,
            hardlinks=1, xattr=None, chunks=()):
        """Add the entry at canonical ``path``. ``chunks`` are :class:`cvmfs.catalog.Chunk` objects."""
        try:
            self._add(path, mode, size, mtime, mtimens, flags, content_hash, symlink, uid, gid, hardlinks, xattr,
                      chunks)
        except sqlite3.Error as exc:
            raise catalog_error(exc, self.root_prefix)

    def _add(self, path, mode, size, mtime, mtimens, flags, content_hash, symlink, uid, gid, hardlinks, xattr,
             chunks):
        md5 = paths.md5_pair(path)
        if path == paths.ROOT_PATH:
            parent = (0, 0)
            name = ""
        else:
            directory, name = path.rsplit("/", 1)
            if directory != self._parent[0]:  # entries come directory by directory
                self._parent = (directory, paths.md5_pair(directory))
            parent = self._parent[1]
        self._rows.append((md5[0], md5[1], parent[0], parent[1], hardlinks,
                           content_hash.digest if content_hash else None, size, mode, mtime, mtimens, flags, name,
                           symlink, uid, gid, xattr))
        self._chunk_rows.extend((md5[0], md5[1], c.offset, c.size, c.hash.digest) for c in chunks)
        self.counters.count(mode, size, len(chunks), xattr is not None)
        if len(self._rows) >= _BATCH_ROWS:
            self._flush()

    def _flush(self):
        if self._previous is not None and not self._previous.repeat(self._rows, self._chunk_rows):
            self._previous.copy_repeated()
            self._previous = None
        if self._previous is None:
            self._db.executemany(_INSERT_ENTRY, self._rows)
            self._db.executemany(_INSERT_CHUNK, self._chunk_rows)
        self._rows, self._chunk_rows = [], []

    def add_nested(self, path, content_hash, size, statistics):
        try:
            self._db.execute("INSERT INTO nested_catalogs (path, sha1, size) VALUES (?, ?, ?)",
                             (path, content_hash.hex(), size))
        except sqlite3.Error as exc:
            raise catalog_error(exc, self.root_prefix)
        self.counters.self["nested"] += 1
        self.counters.add_nested(statistics)

    def finish(self, revision, last_modified, previous_revision=None, ttl=None):
        """Write properties and statistics, commit and close. Returns the statistics table."""
        try:
            return self._finish(revision, last_modified, previous_revision, ttl)
        except sqlite3.Error as exc:
            raise catalog_error(exc, self.root_prefix)

    def _finish(self, revision, last_modified, previous_revision, ttl):
        self._flush()
        if self._previous is not None:
            if self._previous.all_repeated():
                self._reopen_copy_of_previous()
            else:
                self._previous.copy_repeated()
        properties = {
            "schema": fmt.SCHEMA,
            "schema_revision": str(fmt.SCHEMA_REVISION),
            "revision": str(revision),
            "last_modified": str(last_modified),
        }
        if previous_revision is not None:
            properties["previous_revision"] = previous_revision.hex()
        if self.root_prefix != paths.ROOT_PATH:
            properties["root_prefix"] = self.root_prefix
        if ttl is not None:
            properties["TTL"] = str(ttl)
        statistics = self.counters.as_table()
        self._db.executemany("INSERT INTO properties (key, value) VALUES (?, ?)", sorted(properties.items()))
        self._db.executemany("INSERT INTO statistics (counter, value) VALUES (?, ?)", sorted(statistics.items()))
        self._db.execute("COMMIT")
        self._db.close()
        return statistics

    def _reopen_copy_of_previous(self):
        """Replace the (empty) new catalog by a copy of the previous one, without its properties and statistics."""
        self._previous.close()
        self._db.execute("ROLLBACK")
        self._db.close()
        shutil.copyfile(self._previous_file, self.filename)
        self._db = _open(self.filename)
        self._db.execute("BEGIN")
        self._db.execute("DELETE FROM properties")
        self._db.execute("DELETE FROM statistics")

    def abort(self):
        try:
            if self._previous is not None:
                self._previous.close()
            self._db.close()
        except sqlite3.Error:
            pass


def _open(filename):
    db = sqlite3.connect(filename, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")  # a scratch file until finish(); not a persistent setting
    db.execute("PRAGMA synchronous=OFF")
    return db


def same_content(new_file, old_file):
    """Whether two catalog files hold the same entries, chunks and nested catalogs (properties aside).

    Used to keep an unchanged nested catalog's old hash instead of storing a new copy. Only schema revision 7
    catalogs can be compared; anything else counts as changed.
    """
    db = sqlite3.connect(":memory:")
    try:
        db.execute("ATTACH DATABASE ? AS new", (str(new_file),))
        db.execute("ATTACH DATABASE ? AS old", (str(old_file),))
        revision = db.execute("SELECT value FROM old.properties WHERE key='schema_revision'").fetchone()
        if not revision or revision[0] != str(fmt.SCHEMA_REVISION):
            return False
        for table in ("catalog", "chunks", "nested_catalogs"):
            for a, b in (("new", "old"), ("old", "new")):
                row = db.execute("SELECT 1 FROM (SELECT * FROM {a}.{t} EXCEPT SELECT * FROM {b}.{t}) LIMIT 1"
                                 .format(a=a, b=b, t=table)).fetchone()
                if row:
                    return False
        return True
    finally:
        db.close()
