"""Writing one catalog database (schema 2.5 revision 7) with the statistics counters the real client demands."""

import sqlite3
import stat as statmod

from cvmfs_pilot.cvmfs import catalog as fmt
from cvmfs_pilot.cvmfs import paths

from .errors import PublishError

_INSERT_ENTRY = ("INSERT INTO catalog (md5path_1, md5path_2, parent_1, parent_2, hardlinks, hash, size, mode, "
                 "mtime, mtimens, flags, name, symlink, uid, gid, xattr) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_BATCH_ROWS = 1024
_INSERT_CHUNK = "INSERT INTO chunks (md5path_1, md5path_2, offset, size, hash) VALUES (?, ?, ?, ?, ?)"


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


class CatalogWriter:
    """Builds one catalog file. Rows are added directory by directory; :meth:`finish` writes the properties and
    statistics and closes the database."""

    def __init__(self, filename, root_prefix):
        self.filename = str(filename)
        self.root_prefix = root_prefix
        self.counters = Counters()
        self.hardlink_groups = 0  # the last hard-link group number handed out in this catalog
        self._db = sqlite3.connect(self.filename, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")  # a scratch file until finish(); not a persistent setting
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("BEGIN")
        for ddl in fmt.SCHEMA_DDL:
            self._db.execute(ddl)
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

    def abort(self):
        try:
            self._db.close()
        except sqlite3.Error:
            pass


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
