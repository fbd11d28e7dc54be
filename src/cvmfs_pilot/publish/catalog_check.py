"""The checks of one catalog database on its own: schema, properties, the entry tree, chunk lists and statistics.

Only what the real format guarantees is checked, so that catalogs written by cvmfs_server pass (the test.cern.ch
fixture, cvmfs 2.2, schema revision 3, passes). Content objects are not read here: every one the catalog references
is handed to a callback together with the size it must decompress to.
"""

import sqlite3
import stat as statmod
from collections import defaultdict
from urllib.parse import quote

from cvmfs_pilot.cvmfs import catalog as fmt
from cvmfs_pilot.cvmfs import paths, xattrs
from cvmfs_pilot.cvmfs.catalog import Catalog, CatalogError
from cvmfs_pilot.cvmfs.compression import NONE, ZLIB
from cvmfs_pilot.cvmfs.hashing import SUFFIX_NONE, SUFFIX_PARTIAL, ContentHash

from .errors import PublishError

ACCEPTED_SCHEMAS = (2.4, 2.5)  # the client also reads pre-2.0 catalogs, which no tool of ours writes or checks
_SCHEMA_EPSILON = 0.0005  # as the client compares schema versions
STATISTICS_REQUIRED_SINCE = 5  # schema revision from which the client refuses a catalog without all 24 counters

_REQUIRED_COLUMNS = {
    "properties": ("key", "value"),
    "catalog": ("md5path_1", "md5path_2", "parent_1", "parent_2", "hardlinks", "hash", "size", "mode", "mtime",
                "flags", "name", "symlink", "uid", "gid"),
    "chunks": ("md5path_1", "md5path_2", "offset", "size", "hash"),
    "nested_catalogs": ("path", "sha1"),
}
# (schema revision from which it is required, table, column; None for the table itself)
_REQUIRED_SINCE = ((1, "nested_catalogs", "size"), (2, "catalog", "xattr"), (4, "bind_mountpoints", None),
                   (STATISTICS_REQUIRED_SINCE, "statistics", None), (7, "catalog", "mtimens"))

_KIND_FLAGS = fmt.FLAG_DIR | fmt.FLAG_FILE | fmt.FLAG_LINK | fmt.FLAG_SPECIAL
_REGULAR_ONLY_FLAGS = fmt.FLAG_CHUNKED | fmt.FLAG_EXTERNAL
_DIRECTORY_ONLY_FLAGS = fmt.FLAG_NESTED_MOUNTPOINT | fmt.FLAG_NESTED_ROOT


class CatalogSummary:
    """What the checker needs from a verified catalog to go on: its nested catalogs and its counters."""

    def __init__(self, schema_revision, nested, statistics, entries, external_files):
        self.schema_revision = schema_revision
        self.nested = nested  # NestedCatalogRef list
        self.statistics = statistics  # all 24 counters as stored, or None if the catalog does not have them all
        self.entries = entries
        self.external_files = external_files


def check_catalog(filename, mount_path, manifest_revision, what, add_object):
    """Check the decompressed catalog ``filename`` mounted at ``mount_path`` ("" for the root catalog).
    ``add_object(content_hash, suffix, size, compression, description)`` is called for each content object it
    references. ``what`` names the catalog in error messages. Raises :class:`PublishError` on the first problem."""
    try:
        with Catalog(filename) as catalog:
            _check_schema(catalog, filename, what)
            _check_properties(catalog, mount_path, manifest_revision, what)
            audit = _EntryAudit(catalog, mount_path, what, add_object)
            audit.run()
            nested = _check_nested(catalog, mount_path, audit.mountpoints, what)
            audit.counters["nested"] = len(nested)
            statistics = _check_statistics(catalog, audit.counters, what)
            return CatalogSummary(catalog.schema_revision, nested, statistics, audit.entries, audit.external_files)
    except (CatalogError, sqlite3.DatabaseError) as exc:
        problem = str(exc).replace(str(filename) + ": ", "").replace(str(filename), "it")  # a scratch file name
        raise PublishError("{}: {}".format(what, problem)) from None


def check_subtree(statistics, children, what):
    """The ``subtree_*`` counters of a catalog must be the sums of its nested catalogs' ``self_*`` and
    ``subtree_*`` counters. ``children`` are the statistics of the nested catalogs."""
    for name in fmt.COUNTER_NAMES:
        expected = sum(child["self_" + name] + child["subtree_" + name] for child in children)
        if statistics["subtree_" + name] != expected:
            raise PublishError("{}: statistics counter subtree_{} is {}, but its nested catalogs add up to {}; the "
                               "catalog is inconsistent, publish the repository again".format(
                                   what, name, statistics["subtree_" + name], expected))


def _check_schema(catalog, filename, what):
    if not any(abs(catalog.schema - accepted) < _SCHEMA_EPSILON for accepted in ACCEPTED_SCHEMAS):
        raise PublishError("{}: catalog schema {} is not one the client reads ({})".format(
            what, catalog.properties.get("schema"), " or ".join(str(s) for s in ACCEPTED_SCHEMAS)))
    revision = catalog.schema_revision
    if not 0 <= revision <= fmt.SCHEMA_REVISION:
        raise PublishError("{}: catalog schema revision {} is unknown (this checker knows 0 to {})".format(
            what, revision, fmt.SCHEMA_REVISION))
    columns = _table_columns(filename, set(_REQUIRED_COLUMNS) | {table for _, table, _ in _REQUIRED_SINCE})
    required = [(table, column) for table, names in _REQUIRED_COLUMNS.items() for column in names]
    required += [(table, column) for since, table, column in _REQUIRED_SINCE if revision >= since]
    for table, column in required:
        if table not in columns:
            raise PublishError("{}: table {} is missing, but schema revision {} requires it".format(
                what, table, revision))
        if column is not None and column not in columns[table]:
            raise PublishError("{}: column {}.{} is missing, but schema revision {} requires it".format(
                what, table, column, revision))


def _table_columns(filename, tables):
    """``{table: {column names}}`` of those of ``tables`` that exist (fixed names, safe to interpolate)."""
    db = sqlite3.connect("file:{}?mode=ro&immutable=1".format(quote(str(filename))), uri=True)
    try:
        found = {}
        for table in tables:
            names = {row[1] for row in db.execute("PRAGMA table_info({})".format(table))}
            if names:
                found[table] = names
        return found
    finally:
        db.close()


def _check_properties(catalog, mount_path, manifest_revision, what):
    if "revision" not in catalog.properties:
        raise PublishError("{}: the properties table has no revision".format(what))
    try:
        revision = catalog.revision
    except ValueError:
        raise PublishError("{}: revision property {!r} is not a number".format(
            what, catalog.properties["revision"])) from None
    if mount_path == paths.ROOT_PATH and revision != manifest_revision:
        raise PublishError("{}: the root catalog is revision {}, but the manifest says revision {}; the manifest "
                           "does not belong to this catalog".format(what, revision, manifest_revision))
    if revision > manifest_revision:
        raise PublishError("{}: catalog revision {} is newer than the manifest's revision {}".format(
            what, revision, manifest_revision))
    if catalog.root_prefix != mount_path:
        if mount_path == paths.ROOT_PATH:
            raise PublishError("{}: the root catalog has root_prefix {!r}; only nested catalogs have one".format(
                what, catalog.root_prefix))
        raise PublishError("{}: root_prefix is {!r}, but the catalog is mounted at {}".format(
            what, catalog.root_prefix, mount_path))


def _check_nested(catalog, mount_path, mountpoints, what):
    """The nested catalogs registered in this catalog, each with its mountpoint entry; and no stray mountpoint."""
    refs = catalog.nested_catalogs()
    registered = set()
    for ref in refs:
        try:
            canonical = paths.normalize(ref.path)
        except ValueError:
            canonical = None
        if canonical != ref.path or ref.path == mount_path or not paths.is_below(ref.path, mount_path):
            raise PublishError("{}: nested catalog path {!r} is not a canonical path below {}".format(
                what, ref.path, mount_path or "/"))
        if ref.path not in mountpoints:
            raise PublishError("{}: nested catalog {} has no mountpoint entry here (a directory with flag {})"
                               .format(what, ref.path, fmt.FLAG_NESTED_MOUNTPOINT))
        registered.add(ref.path)
    stray = sorted(mountpoints - registered)
    if stray:
        raise PublishError("{}: directory {} is marked as a nested catalog mountpoint (flag {}), but no nested "
                           "catalog is registered for it".format(what, stray[0], fmt.FLAG_NESTED_MOUNTPOINT))
    return refs


def _check_statistics(catalog, counters, what):
    """Compare the stored ``self_*`` counters with ``counters``, recomputed from the rows, where the schema
    revision requires statistics. Returns the stored counters if all 24 exist, else None."""
    stored = catalog.statistics()
    complete = all(name in stored for name in fmt.STATISTICS_COUNTERS)
    if catalog.schema_revision < STATISTICS_REQUIRED_SINCE:
        return stored if complete else None
    missing = [name for name in fmt.STATISTICS_COUNTERS if name not in stored]
    if missing:
        raise PublishError("{}: statistics counters {} are missing; schema revision {} requires all {}, and the "
                           "client refuses the catalog without them".format(
                               what, ", ".join(missing), catalog.schema_revision, len(fmt.STATISTICS_COUNTERS)))
    for name in fmt.COUNTER_NAMES:
        if stored["self_" + name] != counters[name]:
            raise PublishError("{}: statistics counter self_{} is {}, but the catalog's rows give {}; the catalog "
                               "is inconsistent, publish the repository again".format(
                                   what, name, stored["self_" + name], counters[name]))
    return stored


def _kind(mode):
    """The kind flags an entry of ``mode`` must have, or None if the mode is no file type."""
    if statmod.S_ISDIR(mode):
        return fmt.FLAG_DIR
    if statmod.S_ISLNK(mode):
        return fmt.FLAG_FILE | fmt.FLAG_LINK
    if statmod.S_ISREG(mode):
        return fmt.FLAG_FILE
    if statmod.S_ISCHR(mode) or statmod.S_ISBLK(mode) or statmod.S_ISFIFO(mode) or statmod.S_ISSOCK(mode):
        return fmt.FLAG_FILE | fmt.FLAG_SPECIAL
    return None


class _EntryAudit:
    """Walks the entry tree of one catalog from its root, checking every row and counting them as the real
    server does."""

    def __init__(self, catalog, mount_path, what, add_object):
        self.catalog = catalog
        self.mount_path = mount_path
        self.what = what
        self.add_object = add_object
        self.counters = dict.fromkeys(fmt.COUNTER_NAMES, 0)
        self.mountpoints = set()
        self.entries = 0
        self.external_files = 0
        self._chunk_rows = defaultdict(list)

    def _fail(self, path, problem):
        raise PublishError("{}: entry {}: {}".format(self.what, path or "/", problem))

    def run(self):
        rows = {}
        children = defaultdict(list)
        for entry, md5, parent in self.catalog.all_entries():
            rows[md5] = (entry, parent)
            children[parent].append(md5)
        self.entries = len(rows)
        for md5_1, md5_2, offset, size, raw_hash in self.catalog.all_chunk_rows():
            self._chunk_rows[(md5_1, md5_2)].append((offset, size, raw_hash))
        root_md5 = paths.md5_pair(self.mount_path)
        visited = {root_md5}
        self._check_root(rows.get(root_md5))
        self._visit(rows[root_md5][0], self.mount_path)
        stack = [(root_md5, self.mount_path)]
        while stack:
            md5, path = stack.pop()
            for child in children.get(md5, ()):
                entry = rows[child][0]
                child_path = paths.join(path, entry.name)
                if not entry.name or "/" in entry.name:
                    self._fail(child_path, "name {!r} is not a file name".format(entry.name))
                if paths.md5_pair(child_path) != child:
                    self._fail(child_path, "its md5path {} is not the MD5 of its path (parent and name)".format(
                        child))
                visited.add(child)
                self._visit(entry, child_path)
                if entry.is_directory:
                    stack.append((child, child_path))
        if len(visited) != len(rows):
            self._report_unreachable(rows, visited)
        if self._chunk_rows:
            raise PublishError("{}: the chunks table has rows for md5path {}, which is not a chunked file of this "
                               "catalog".format(self.what, next(iter(self._chunk_rows))))

    def _check_root(self, root):
        where = self.mount_path or "/"
        if root is None:
            raise PublishError("{}: there is no entry for the catalog's root directory {}".format(self.what, where))
        entry, parent = root
        if self.mount_path == paths.ROOT_PATH:
            if parent != (0, 0) or entry.name:
                self._fail("", "the root entry must have parent (0, 0) and an empty name, not {} and {!r}".format(
                    parent, entry.name))
        else:
            if parent != paths.md5_pair(paths.parent(self.mount_path)):
                self._fail(self.mount_path, "its parent md5path {} is not the MD5 of {}".format(
                    parent, paths.parent(self.mount_path) or "the root"))
            if not entry.flags & fmt.FLAG_NESTED_ROOT:
                self._fail(self.mount_path, "the root of a nested catalog must have flag {} (flags are {})".format(
                    fmt.FLAG_NESTED_ROOT, entry.flags))
        if not entry.is_directory:
            self._fail(self.mount_path, "the catalog's root is not a directory (flags {})".format(entry.flags))

    def _report_unreachable(self, rows, visited):
        for md5, (entry, parent) in rows.items():
            if md5 in visited:
                continue
            if parent not in rows:
                problem = "its parent md5path {} is not in this catalog".format(parent)
            elif not rows[parent][0].is_directory:
                problem = "its parent {!r} is not a directory".format(rows[parent][0].name)
            else:
                problem = "it cannot be reached from the catalog's root"
            raise PublishError("{}: entry named {!r} (md5path {}): {}".format(self.what, entry.name, md5, problem))

    def _visit(self, entry, path):
        """Check one entry at ``path`` and count it."""
        kind = _kind(entry.mode)
        if kind is None:
            self._fail(path, "mode {:o} is no file type".format(entry.mode))
        if entry.flags & _KIND_FLAGS != kind:
            self._fail(path, "flags {} do not match mode {:o} (expected kind flags {})".format(
                entry.flags, entry.mode, kind))
        if entry.flags & _REGULAR_ONLY_FLAGS and kind != fmt.FLAG_FILE:
            self._fail(path, "flags {} mark a chunked or external file, but it is not a regular file".format(
                entry.flags))
        if entry.flags & _DIRECTORY_ONLY_FLAGS and kind != fmt.FLAG_DIR:
            self._fail(path, "flags {} mark a nested catalog mountpoint or root, but it is not a directory".format(
                entry.flags))
        if entry.is_nested_root and path != self.mount_path:
            self._fail(path, "it has the nested catalog root flag {}, but is not the root of this catalog".format(
                fmt.FLAG_NESTED_ROOT))
        if entry.xattr:
            try:
                xattrs.decode(entry.xattr)
            except xattrs.XattrBlobError as exc:
                self._fail(path, str(exc))
            self.counters["xattr"] += 1
        if kind == fmt.FLAG_DIR:
            self.counters["dir"] += 1
            if entry.is_nested_mountpoint:
                self.mountpoints.add(path)
        elif kind == fmt.FLAG_FILE:
            self._regular(entry, path)
        elif kind & fmt.FLAG_LINK:
            self.counters["symlink"] += 1
            target_length = len(entry.symlink.encode("utf-8", "surrogateescape"))
            if not entry.symlink or entry.size != target_length:
                self._fail(path, "symlink size {} is not the length of its target {!r} ({} bytes)".format(
                    entry.size, entry.symlink, target_length))
        else:
            self.counters["special"] += 1

    def _regular(self, entry, path):
        compression = (entry.flags & fmt.COMPRESSION_MASK) >> fmt.COMPRESSION_SHIFT
        if compression not in (ZLIB, NONE):
            self._fail(path, "compression value {} in flags {} is unknown".format(compression, entry.flags))
        counters = self.counters
        counters["regular"] += 1
        counters["file_size"] += entry.size
        external = entry.is_external
        if external:
            counters["external"] += 1
            counters["external_file_size"] += entry.size
            self.external_files += 1
        if entry.is_chunked:
            chunks = self._chunks(entry, path)
            counters["chunked"] += 1
            counters["chunked_size"] += entry.size
            counters["chunks"] += len(chunks)
            if not external:
                for number, (offset, size, content_hash) in enumerate(chunks, 1):
                    self.add_object(content_hash, SUFFIX_PARTIAL, size, compression,
                                    "chunk {} of {} (offset {}, {} bytes)".format(number, path, offset, size))
        elif entry.hash is None:
            self._fail(path, "a regular file that is not chunked needs a content hash, and it has none")
        if entry.hash is not None and not external:  # chunked files may have a legacy whole-file object too
            self.add_object(entry.hash, SUFFIX_NONE, entry.size, compression, "content of {}".format(path))

    def _chunks(self, entry, path):
        """The chunk rows of a chunked file, which must cover ``[0, size)`` without gaps or overlaps."""
        rows = self._chunk_rows.pop(paths.md5_pair(path), None)
        if not rows:
            self._fail(path, "it is marked chunked (flag {}) but has no chunk rows".format(fmt.FLAG_CHUNKED))
        chunks, end = [], 0
        for offset, size, raw_hash in rows:
            if offset != end or size <= 0:
                self._fail(path, "its chunk at offset {} ({} bytes) does not start where the previous chunk ends "
                                 "({}), or is empty".format(offset, size, end))
            try:
                chunks.append((offset, size, ContentHash(entry.hash_algorithm, raw_hash)))
            except (TypeError, ValueError) as exc:
                self._fail(path, "its chunk at offset {} has an invalid hash: {}".format(offset, exc))
            end = offset + size
        if end != entry.size:
            self._fail(path, "its chunks cover {} bytes, but the file has {}".format(end, entry.size))
        return chunks
