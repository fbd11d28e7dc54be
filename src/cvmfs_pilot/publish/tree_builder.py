"""Building the catalogs of a new revision from a source tree, one directory at a time.

The walk is depth-first. File contents go to a worker pool in batches; a bounded window of directories waits for
their results, so memory does not grow with the size of the tree. A file whose size and mtime (to the nanosecond)
equal the previous revision's entry is not read again. A nested catalog whose entries did not change keeps its old
hash, as with the real server.
"""

import os
import stat as statmod
from collections import deque

from cvmfs_pilot.cvmfs import catalog as fmt
from cvmfs_pilot.cvmfs import paths, xattrs
from cvmfs_pilot.cvmfs.compression import NONE, compress
from cvmfs_pilot.cvmfs.hashing import SUFFIX_CATALOG, SUFFIX_NONE, ContentHash

from .catalog_writer import CatalogWriter, same_content
from .errors import PublishError
from .ingest import ingest_batch
from .previous import nested_statistics
from .source import CATALOG_MARKER, Dirtab, SourceEntry, read_xattrs, scan_directory

_BATCH_FILES = 64
_BATCH_BYTES = 32 * 1024 * 1024
_WINDOW_FILES = 4096
_WINDOW_DIRECTORIES = 256
_KIND_FLAGS = fmt.FLAG_FILE | fmt.FLAG_LINK | fmt.FLAG_SPECIAL | fmt.FLAG_EXTERNAL


class BuildStats:
    def __init__(self):
        self.files = 0
        self.bytes = 0
        self.files_ingested = 0
        self.bytes_ingested = 0
        self.objects_stored = 0
        self.bytes_stored = 0
        self.catalogs = 0
        self.catalogs_reused = 0


class _Pending:
    """The regular files of one directory whose content hashes are still being computed."""

    __slots__ = ("writer", "rows", "batches")

    def __init__(self, writer):
        self.writer = writer
        self.rows = []  # (row kwargs, ingest slot or None); a slot is (batch index, position in the batch)
        self.batches = []  # futures


def _time_fields(st):
    mtime, mtimens = divmod(st.st_mtime_ns, 10**9)
    return dict(mtime=mtime, mtimens=mtimens)


class TreeBuilder:
    def __init__(self, source_root, storage, settings, pool, previous, revision, timestamp, ttl, workdir):
        self.source_root = os.path.abspath(source_root)
        self.storage = storage
        self.settings = settings
        self.pool = pool
        self.previous = previous
        self.revision = revision
        self.timestamp = timestamp
        self.ttl = ttl
        self.workdir = workdir
        self.dirtab = Dirtab.load(self.source_root)
        self.stats = BuildStats()
        self._pending = deque()
        self._files_in_flight = 0
        self._catalog_count = 0

    # -- the walk ---------------------------------------------------------------------------------------------

    def build(self):
        """Walk the source tree and store all catalogs; returns ``(root hash, root size, statistics)``."""
        root_st = os.stat(self.source_root)
        if not statmod.S_ISDIR(root_st.st_mode):
            raise PublishError("source {} is not a directory".format(self.source_root))
        root = SourceEntry("", paths.ROOT_PATH, self.source_root, root_st, "",
                           read_xattrs(self.source_root, self.source_root))
        writer = self._new_writer(paths.ROOT_PATH)
        try:
            self._directory(root, writer, None)
            return self._finish_catalog(writer)
        except BaseException:
            writer.abort()
            raise

    def _new_writer(self, root_prefix):
        self._catalog_count += 1
        filename = os.path.join(self.workdir, "catalog-{}.db".format(self._catalog_count))
        previous_file = self.previous.catalog_file_at(root_prefix) if self.previous is not None else None
        return CatalogWriter(filename, root_prefix, previous_file)

    def _directory(self, directory, writer, parent_writer):
        """Add ``directory`` (its own row goes to ``parent_writer``, None for the root) and everything below."""
        entries = scan_directory(directory.abspath, directory.path)
        subdirs = [e for e in entries if statmod.S_ISDIR(e.mode)]
        has_marker = any(e.name == CATALOG_MARKER and statmod.S_ISREG(e.mode) for e in entries)
        nested = parent_writer is not None and (has_marker or self.dirtab.wants_catalog(directory.path))
        row = self._common(directory)
        row.update(size=4096, hardlinks=fmt.hardlinks_value(0, 2 + len(subdirs)))
        if parent_writer is not None:
            parent_writer.add(flags=fmt.FLAG_DIR | (fmt.FLAG_NESTED_MOUNTPOINT if nested else 0), **row)
        if nested:
            writer = self._new_writer(directory.path)
            writer.add(flags=fmt.FLAG_DIR | fmt.FLAG_NESTED_ROOT, **row)
        elif parent_writer is None:
            writer.add(flags=fmt.FLAG_DIR, **row)
        try:
            if nested and not has_marker:
                self._add_marker(writer, directory)
            self._children(entries, directory.path, writer)
            for sub in subdirs:
                self._directory(sub, writer, writer)
            if nested:
                content_hash, size, statistics = self._finish_catalog(writer)
                parent_writer.add_nested(directory.path, content_hash, size, statistics)
        except BaseException:
            if nested:
                writer.abort()
            raise

    def _add_marker(self, writer, directory):
        """A directory that a ``.cvmfsdirtab`` rule makes a catalog gets a ``.cvmfscatalog`` entry, as the real
        server materialises it (never written into the source)."""
        content_hash = self._store_small(b"")
        st = directory.st
        writer.add(path=paths.join(directory.path, CATALOG_MARKER), mode=statmod.S_IFREG | 0o644, size=0,
                   uid=st.st_uid, gid=st.st_gid, flags=self._file_flags(content_hash, ()),
                   content_hash=content_hash, **_time_fields(st))

    def _children(self, entries, path, writer):
        """Rows for the non-directory entries of one directory; regular files through the worker pool."""
        old = self.previous.listing(path) if self.previous else {}
        pending = _Pending(writer)
        groups = self._hardlink_groups(entries, writer)
        batch, batch_bytes = [], 0
        ingested_inodes = {}
        for entry in entries:
            st = entry.st
            mode = st.st_mode
            if statmod.S_ISDIR(mode):
                continue
            row = self._common(entry)
            if statmod.S_ISLNK(mode):
                target = entry.symlink.encode("utf-8")
                writer.add(size=len(target), symlink=entry.symlink, flags=fmt.entry_flags(mode), **row)
                continue
            if not statmod.S_ISREG(mode):
                size = st.st_rdev if (statmod.S_ISCHR(mode) or statmod.S_ISBLK(mode)) else 0
                writer.add(size=size, flags=fmt.entry_flags(mode), **row)
                continue
            inode = (st.st_dev, st.st_ino)
            group, links = groups.get(inode, (0, 1))
            row.update(size=st.st_size, hardlinks=fmt.hardlinks_value(group, links))
            self.stats.files += 1
            self.stats.bytes += st.st_size
            previous = old.get(entry.name)
            if previous is not None and self._reusable(st, previous):
                raw_hash, chunks = previous[4:]
                content_hash = ContentHash(self.settings.algorithm, raw_hash) if raw_hash else None
                row.update(content_hash=content_hash, chunks=chunks, flags=self._file_flags(content_hash, chunks))
                pending.rows.append((row, None))
                continue
            if inode in ingested_inodes:  # another name of a hard link already being ingested
                pending.rows.append((row, ingested_inodes[inode]))
                continue
            slot = (len(pending.batches), len(batch))
            ingested_inodes[inode] = slot
            pending.rows.append((row, slot))
            batch.append((entry.abspath, st.st_size, st.st_mtime_ns))
            batch_bytes += st.st_size
            if len(batch) >= _BATCH_FILES or batch_bytes >= _BATCH_BYTES:
                self._submit(pending, batch)
                batch, batch_bytes = [], 0
        if batch:
            self._submit(pending, batch)
        if pending.rows:
            self._pending.append(pending)
            while len(self._pending) > _WINDOW_DIRECTORIES or self._files_in_flight > _WINDOW_FILES:
                self._complete_oldest()

    @staticmethod
    def _hardlink_groups(entries, writer):
        """``{(dev, ino): (group, linkcount)}`` for regular files with several names in this directory: groups
        are per directory, as the real server makes them, numbered per catalog."""
        names = {}
        for entry in entries:
            if statmod.S_ISREG(entry.mode) and entry.st.st_nlink > 1:
                names.setdefault((entry.st.st_dev, entry.st.st_ino), []).append(entry.name)
        groups = {}
        for inode, members in sorted(names.items(), key=lambda item: item[1][0]):
            if len(members) > 1:
                writer.hardlink_groups += 1
                groups[inode] = (writer.hardlink_groups, len(members))
        return groups

    def _submit(self, pending, batch):
        pending.batches.append(self.pool.submit(ingest_batch, self.settings, list(batch)))
        self._files_in_flight += len(batch)

    def _complete_oldest(self):
        pending = self._pending.popleft()
        results = []
        for future in pending.batches:
            batch_results = future.result()
            self._files_in_flight -= len(batch_results)
            results.append(batch_results)
            for result in batch_results:
                self.stats.files_ingested += 1
                self.stats.objects_stored += result.objects_stored
                self.stats.bytes_stored += result.bytes_stored
        for row, slot in pending.rows:
            if slot is None:
                pending.writer.add(**row)
                continue
            result = results[slot[0]][slot[1]]
            self.stats.bytes_ingested += row["size"]
            pending.writer.add(content_hash=result.hash, chunks=result.chunks,
                               flags=self._file_flags(result.hash, result.chunks), **row)

    def _drain(self):
        while self._pending:
            self._complete_oldest()

    # -- rows and objects -------------------------------------------------------------------------------------

    def _common(self, entry):
        st = entry.st
        try:
            blob = xattrs.encode(entry.xattrs) if entry.xattrs else None
        except xattrs.XattrBlobError as exc:
            raise PublishError("{}: {}".format(entry.abspath, exc))
        return dict(path=entry.path, mode=st.st_mode, uid=st.st_uid, gid=st.st_gid, xattr=blob,
                    **_time_fields(st))

    def _file_flags(self, content_hash, chunks):
        return fmt.entry_flags(statmod.S_IFREG, self.settings.algorithm, self.settings.compression,
                               chunked=bool(chunks), has_hash=content_hash is not None)

    def _reusable(self, st, previous):
        """Whether the previous revision's row ``(flags, size, mtime, mtimens, raw hash, chunks)`` for this name
        can stand for the file with status ``st`` without reading it."""
        flags, size, mtime, mtimens, raw_hash, chunks = previous
        if flags & _KIND_FLAGS != fmt.FLAG_FILE or size != st.st_size:  # only a regular, non-external file
            return False
        if (mtime, mtimens or 0) != divmod(st.st_mtime_ns, 10**9):
            return False
        compressed = (flags & fmt.COMPRESSION_MASK) >> fmt.COMPRESSION_SHIFT != 1
        if compressed != (self.settings.compression != NONE) or not (raw_hash or chunks):
            return False
        if ((flags & fmt.HASH_ALGO_MASK) >> fmt.HASH_ALGO_SHIFT) + 1 != self.settings.algorithm:
            return False
        sizes = self.settings.chunk_sizes
        if sizes is None or st.st_size <= sizes.minimum:
            return not chunks
        return bool(chunks) or st.st_size <= sizes.maximum

    def _store_small(self, data):
        stored = compress(data, self.settings.compression)
        content_hash = ContentHash.of(stored, self.settings.algorithm)
        self.storage.put(content_hash, SUFFIX_NONE, stored)
        return content_hash

    def _finish_catalog(self, writer):
        """Complete the catalog of ``writer``: wait for its files, then store it (or keep the previous copy of an
        unchanged nested catalog). Returns ``(hash, uncompressed size, statistics)``."""
        self._drain()
        path = writer.root_prefix
        previous_ref = None
        if self.previous is not None:
            previous_ref = (self.previous.nested_ref(path) if path != paths.ROOT_PATH else None)
        previous_hash = (previous_ref.hash if previous_ref else
                         self.previous.manifest.root_catalog if self.previous and path == paths.ROOT_PATH else None)
        statistics = writer.finish(self.revision, self.timestamp, previous_revision=previous_hash,
                                   ttl=self.ttl if path == paths.ROOT_PATH else None)
        self.stats.catalogs += 1
        if previous_ref is not None:
            old_file = self.previous.catalog_file(previous_ref)
            if same_content(writer.filename, old_file):
                os.unlink(writer.filename)
                self.stats.catalogs_reused += 1
                return previous_ref.hash, previous_ref.size, nested_statistics(old_file)
        size = os.path.getsize(writer.filename)
        content_hash = self.storage.put_file_compressed(writer.filename, SUFFIX_CATALOG, self.settings.algorithm)
        os.unlink(writer.filename)
        return content_hash, size, statistics
