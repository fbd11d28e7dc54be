"""File catalogs (§5): the SQLite schema 2.5 revision 7, entry flags, statistics counters, and a reader.

The reader handles every schema revision the real client reads (the fixture repository is revision 3); the
writer (server tier) always creates revision 7 with :data:`SCHEMA_DDL`.
"""

import sqlite3
import stat as statmod
from urllib.parse import quote

from . import paths
from .compression import NONE, ZLIB
from .hashing import SHA1, ContentHash

SCHEMA = "2.5"
SCHEMA_REVISION = 7
DEFAULT_TTL = 240

# Entry flags.
FLAG_DIR = 1
FLAG_NESTED_MOUNTPOINT = 2
FLAG_FILE = 4
FLAG_LINK = 8
FLAG_SPECIAL = 16
FLAG_NESTED_ROOT = 32
FLAG_CHUNKED = 64
FLAG_EXTERNAL = 128
FLAG_BIND_MOUNTPOINT = 0x4000
FLAG_HIDDEN = 0x8000
FLAG_DIRECT_IO = 0x10000
HASH_ALGO_SHIFT = 8
HASH_ALGO_MASK = 0x7 << HASH_ALGO_SHIFT
COMPRESSION_SHIFT = 11
COMPRESSION_MASK = 0x7 << COMPRESSION_SHIFT

SCHEMA_DDL = (
    "CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key));",
    "CREATE TABLE catalog (md5path_1 INTEGER, md5path_2 INTEGER, parent_1 INTEGER, parent_2 INTEGER, "
    "hardlinks INTEGER, hash BLOB, size INTEGER, mode INTEGER, mtime INTEGER, mtimens INTEGER, flags INTEGER, "
    "name TEXT, symlink TEXT, uid INTEGER, gid INTEGER, xattr BLOB, "
    "CONSTRAINT pk_catalog PRIMARY KEY (md5path_1, md5path_2));",
    "CREATE INDEX idx_catalog_parent ON catalog (parent_1, parent_2);",
    "CREATE TABLE chunks (md5path_1 INTEGER, md5path_2 INTEGER, offset INTEGER, size INTEGER, hash BLOB, "
    "CONSTRAINT pk_chunks PRIMARY KEY (md5path_1, md5path_2, offset, size), "
    "FOREIGN KEY (md5path_1, md5path_2) REFERENCES catalog(md5path_1, md5path_2));",
    "CREATE TABLE nested_catalogs (path TEXT, sha1 TEXT, size INTEGER, "
    "CONSTRAINT pk_nested_catalogs PRIMARY KEY (path));",
    "CREATE TABLE bind_mountpoints (path TEXT, sha1 TEXT, size INTEGER, "
    "CONSTRAINT pk_bind_mountpoints PRIMARY KEY (path));",
    "CREATE TABLE statistics (counter TEXT, value INTEGER, CONSTRAINT pk_statistics PRIMARY KEY (counter));",
)

COUNTER_NAMES = ("regular", "symlink", "special", "dir", "nested", "chunked", "chunks", "file_size",
                 "chunked_size", "xattr", "external", "external_file_size")
STATISTICS_COUNTERS = tuple("self_" + n for n in COUNTER_NAMES) + tuple("subtree_" + n for n in COUNTER_NAMES)


class CatalogError(ValueError):
    """A catalog database is unreadable or inconsistent."""


def hardlinks_value(group, linkcount):
    return (group << 32) | linkcount


def split_hardlinks(value):
    """``(group, linkcount)`` of a ``hardlinks`` column value."""
    value = value or 0
    return value >> 32, value & 0xFFFFFFFF


class Chunk(object):
    __slots__ = ("offset", "size", "hash")

    def __init__(self, offset, size, content_hash):
        self.offset = offset
        self.size = size
        self.hash = content_hash

    def __repr__(self):
        return "Chunk({}, {}, {})".format(self.offset, self.size, self.hash)

    def __eq__(self, other):
        return isinstance(other, Chunk) and (self.offset, self.size, self.hash) == (other.offset, other.size,
                                                                                    other.hash)


class Entry(object):
    """One catalog row, decoded. ``path`` is the canonical repository path ("" for the root)."""

    __slots__ = ("path", "name", "mode", "size", "mtime", "mtimens", "flags", "hash", "symlink", "uid", "gid",
                 "hardlink_group", "linkcount", "xattr", "rowid")

    def __init__(self, path, name, mode, size, mtime, mtimens, flags, content_hash, symlink, uid, gid,
                 hardlink_group, linkcount, xattr, rowid=None):
        self.path = path
        self.name = name
        self.mode = mode
        self.size = size
        self.mtime = mtime
        self.mtimens = mtimens
        self.flags = flags
        self.hash = content_hash
        self.symlink = symlink
        self.uid = uid
        self.gid = gid
        self.hardlink_group = hardlink_group
        self.linkcount = linkcount
        self.xattr = xattr
        self.rowid = rowid

    @property
    def is_directory(self):
        return bool(self.flags & FLAG_DIR)

    @property
    def is_symlink(self):
        return bool(self.flags & FLAG_LINK)

    @property
    def is_special(self):
        return bool(self.flags & FLAG_SPECIAL)

    @property
    def is_regular(self):
        return bool(self.flags & FLAG_FILE) and not self.flags & (FLAG_LINK | FLAG_SPECIAL)

    @property
    def is_chunked(self):
        return bool(self.flags & FLAG_CHUNKED)

    @property
    def is_external(self):
        return bool(self.flags & FLAG_EXTERNAL)

    @property
    def is_nested_mountpoint(self):
        return bool(self.flags & FLAG_NESTED_MOUNTPOINT)

    @property
    def is_nested_root(self):
        return bool(self.flags & FLAG_NESTED_ROOT)

    @property
    def is_hidden(self):
        return bool(self.flags & FLAG_HIDDEN)

    @property
    def compression(self):
        return NONE if (self.flags & COMPRESSION_MASK) >> COMPRESSION_SHIFT == 1 else ZLIB

    @property
    def hash_algorithm(self):
        return ((self.flags & HASH_ALGO_MASK) >> HASH_ALGO_SHIFT) + 1

    def __repr__(self):
        return "Entry({!r}, mode={:o}, size={}, flags={})".format(self.path, self.mode, self.size, self.flags)


def entry_flags(mode, hash_algorithm=SHA1, compression=ZLIB, chunked=False, has_hash=False, extra=0):
    """Flags for an entry of the given ``st_mode``, as the real publisher sets them."""
    if statmod.S_ISDIR(mode):
        return FLAG_DIR | extra
    if statmod.S_ISLNK(mode):
        return FLAG_FILE | FLAG_LINK | extra
    if not statmod.S_ISREG(mode):
        return FLAG_FILE | FLAG_SPECIAL | extra
    flags = FLAG_FILE | extra
    if chunked:
        flags |= FLAG_CHUNKED
    if has_hash or chunked:
        flags |= (hash_algorithm - 1) << HASH_ALGO_SHIFT
    if compression == NONE:
        flags |= 1 << COMPRESSION_SHIFT
    return flags


class NestedCatalogRef(object):
    __slots__ = ("path", "hash", "size")

    def __init__(self, path, content_hash, size):
        self.path = path
        self.hash = content_hash
        self.size = size

    def __repr__(self):
        return "NestedCatalogRef({!r}, {}, {})".format(self.path, self.hash, self.size)


class Catalog(object):
    """A read-only view of one catalog database file."""

    def __init__(self, filename):
        self.filename = filename
        try:
            # immutable=1: the file never changes under us (it is content-addressed), so SQLite takes no locks.
            self._db = sqlite3.connect("file:{}?mode=ro&immutable=1".format(_uri_path(filename)), uri=True,
                                       check_same_thread=False)
            self._db.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
            self.properties = dict(self._db.execute("SELECT key, value FROM properties"))
        except sqlite3.DatabaseError as exc:
            raise CatalogError("{} is not a readable catalog: {}".format(filename, exc))
        schema = self.properties.get("schema")
        try:
            self.schema = float(schema)
            self.schema_revision = int(self.properties.get("schema_revision", 0))
        except (TypeError, ValueError):
            raise CatalogError("{} has no valid schema property ({!r})".format(filename, schema))
        if not (2.4 <= self.schema < 2.6):
            raise CatalogError("{} has catalog schema {}, which is not supported (2.4 or 2.5)".format(
                filename, schema))
        columns = ["hash", "size", "mode", "mtime", "flags", "name", "symlink", "uid", "gid", "hardlinks"]
        columns.append("mtimens" if self.schema_revision >= 7 else "NULL")
        columns.append("xattr" if self.schema_revision >= 2 else "NULL")
        self._columns = ", ".join(columns) + ", rowid"
        self._nested = None

    def close(self):
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _query(self, sql, args=()):
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise CatalogError("{}: {}".format(self.filename, exc))

    @property
    def revision(self):
        return int(self.properties.get("revision", 0))

    @property
    def root_prefix(self):
        """The repository path this catalog is mounted at ("" for the root catalog)."""
        return self.properties.get("root_prefix", paths.ROOT_PATH)

    @property
    def ttl(self):
        return int(self.properties.get("TTL", DEFAULT_TTL))

    @property
    def previous_revision(self):
        value = self.properties.get("previous_revision")
        return ContentHash.parse(value) if value else None

    def _entry(self, path, row):
        (raw_hash, size, mode, mtime, flags, name, symlink, uid, gid, hardlinks, mtimens, xattr, rowid) = row
        content_hash = None
        if raw_hash:
            algorithm = ((flags & HASH_ALGO_MASK) >> HASH_ALGO_SHIFT) + 1
            try:
                content_hash = ContentHash(algorithm, raw_hash)
            except ValueError as exc:
                raise CatalogError("{}: entry {!r} has a bad hash: {}".format(self.filename, path, exc))
        group, linkcount = split_hardlinks(hardlinks)
        return Entry(path, name or "", mode, size, mtime, mtimens, flags, content_hash, symlink or "", uid, gid,
                     group, linkcount, xattr, rowid)

    def lookup(self, path):
        """The entry at a canonical repository path, or None."""
        rows = self._query("SELECT {} FROM catalog WHERE md5path_1=? AND md5path_2=?".format(self._columns),
                           paths.md5_pair(path))
        return self._entry(path, rows[0]) if rows else None

    def listing(self, path):
        """The entries directly inside directory ``path``, sorted by name (bytes order)."""
        rows = self._query("SELECT {} FROM catalog WHERE parent_1=? AND parent_2=?".format(self._columns),
                           paths.md5_pair(path))
        entries = [self._entry(paths.join(path, row[5]), row) for row in rows]
        entries.sort(key=lambda e: e.name.encode("utf-8", "surrogateescape"))
        return entries

    def file_rows(self, path):
        """``(name, flags, size, mtime, mtimens, hash)`` of each entry directly inside directory ``path``, undecoded
        and unsorted: the cheap form of :meth:`listing` for comparing many entries at once."""
        mtimens = "mtimens" if self.schema_revision >= 7 else "NULL"
        return self._query("SELECT name, flags, size, mtime, {}, hash FROM catalog WHERE parent_1=? AND "
                           "parent_2=?".format(mtimens), paths.md5_pair(path))

    def chunks(self, entry):
        """The chunks of a chunked file, ordered by offset."""
        rows = self._query("SELECT offset, size, hash FROM chunks WHERE md5path_1=? AND md5path_2=? "
                           "ORDER BY offset", paths.md5_pair(entry.path))
        algorithm = entry.hash_algorithm
        try:
            return [Chunk(offset, size, ContentHash(algorithm, raw)) for offset, size, raw in rows]
        except ValueError as exc:
            raise CatalogError("{}: chunk list of {!r} is invalid: {}".format(self.filename, entry.path, exc))

    def nested_catalogs(self):
        """References to the catalogs nested directly below this one (read once: catalogs never change)."""
        if self._nested is None:
            size_column = "size" if self.schema_revision >= 1 else "0"
            rows = self._query("SELECT path, sha1, {} FROM nested_catalogs ORDER BY path".format(size_column))
            refs = []
            for path, text, size in rows:
                try:
                    refs.append(NestedCatalogRef(path, ContentHash.parse(text), size))
                except ValueError as exc:
                    raise CatalogError("{}: nested catalog {!r}: {}".format(self.filename, path, exc))
            self._nested = refs
        return self._nested

    def find_nested(self, path):
        """The nested-catalog reference responsible for ``path`` (longest prefix at a ``/`` boundary), or None
        if this catalog itself holds it."""
        best = None
        for ref in self.nested_catalogs():
            if paths.is_below(path, ref.path) and (best is None or len(ref.path) > len(best.path)):
                best = ref
        return best

    def statistics(self):
        return dict(self._query("SELECT counter, value FROM statistics"))

    def all_entries(self):
        """Every row as ``(Entry without path, md5path pair, parent pair)``, in rowid order (for checks)."""
        rows = self._query("SELECT {}, md5path_1, md5path_2, parent_1, parent_2 FROM catalog ORDER BY rowid"
                           .format(self._columns))
        for row in rows:
            yield self._entry(None, row[:13]), (row[13], row[14]), (row[15], row[16])

    def all_chunk_rows(self):
        return self._query("SELECT md5path_1, md5path_2, offset, size, hash FROM chunks ORDER BY "
                           "md5path_1, md5path_2, offset")

    def max_rowid(self):
        return self._query("SELECT MAX(rowid) FROM catalog")[0][0] or 0

    def max_hardlink_group(self):
        return self._query("SELECT MAX(hardlinks >> 32) FROM catalog")[0][0] or 0


def _uri_path(filename):
    return quote(str(filename))
