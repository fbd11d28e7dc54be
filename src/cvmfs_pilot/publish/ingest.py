"""Turning file contents into stored objects: read, chunk, compress, hash, write (the real pipeline's order).

This runs in worker processes; each call handles a batch of files and returns only hashes and chunk lists, so no
file contents travel between processes.
"""

import itertools
import os
import zlib

from cvmfs_pilot.cvmfs.catalog import Chunk
from cvmfs_pilot.cvmfs.compression import NONE, compress
from cvmfs_pilot.cvmfs.hashing import SUFFIX_NONE, SUFFIX_PARTIAL, ContentHash, new_hasher

from .chunking import iter_chunks
from .errors import PublishError
from .storage import JOURNAL_PREFIX, describe_os_error, write_object

# Unchunked files larger than this are compressed as a stream instead of in memory.
STREAM_THRESHOLD = 64 * 1024 * 1024
_READ_BLOCK = 4 * 1024 * 1024


class IngestSettings:
    """What every worker needs to know; picklable. New objects are journaled in ``journal_dir``."""

    def __init__(self, storage_root, algorithm, compression, chunk_sizes, journal_dir):
        self.storage_root = str(storage_root)
        self.algorithm = algorithm
        self.compression = compression
        self.chunk_sizes = chunk_sizes  # None: no chunking
        self.journal_dir = str(journal_dir)


_journals = {}  # journal_dir -> this process's open journal file


def _journal(settings):
    journal = _journals.get(settings.journal_dir)
    if journal is None:
        name = os.path.join(settings.journal_dir, JOURNAL_PREFIX + str(os.getpid()))
        journal = _journals[settings.journal_dir] = open(name, "a", encoding="ascii")
    return journal


class IngestResult:
    __slots__ = ("hash", "chunks", "bytes_stored", "objects_stored")

    def __init__(self, content_hash, chunks, bytes_stored, objects_stored):
        self.hash = content_hash
        self.chunks = chunks
        self.bytes_stored = bytes_stored
        self.objects_stored = objects_stored


def _store(settings, data, suffix):
    stored = compress(data, settings.compression)
    content_hash = ContentHash.of(stored, settings.algorithm)
    written = write_object(settings.storage_root, content_hash.object_path(suffix), stored, _journal(settings))
    return content_hash, len(stored) if written else 0


def _store_stream(settings, f):
    """Compress and hash a large unchunked file block by block into a temporary object, then rename it.
    Returns ``(hash, bytes stored, bytes read)``."""
    hasher = new_hasher(settings.algorithm)
    compressor = None if settings.compression == NONE else zlib.compressobj(6)
    txn = os.path.join(settings.storage_root, "data", "txn")
    tmp = os.path.join(txn, "stream.{}.{}".format(os.getpid(), id(f)))
    stored = read = 0
    try:
        with open(tmp, "wb") as out:
            while True:
                block = f.read(_READ_BLOCK)
                if not block:
                    break
                read += len(block)
                piece = compressor.compress(block) if compressor else block
                hasher.update(piece)
                out.write(piece)
                stored += len(piece)
            if compressor:
                piece = compressor.flush()
                hasher.update(piece)
                out.write(piece)
                stored += len(piece)
        content_hash = ContentHash(settings.algorithm, hasher.digest())
        final = os.path.join(settings.storage_root, content_hash.object_path(SUFFIX_NONE))
        if os.path.exists(final):
            os.unlink(tmp)
            return content_hash, 0, read
        _journal(settings).write(content_hash.object_path(SUFFIX_NONE) + "\n")
        os.chmod(tmp, 0o644)
        os.rename(tmp, final)
        return content_hash, stored, read
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def ingest_file(settings, abspath, expected_size, expected_mtime_ns):
    """Store one regular file; fails if it is not the file the walker saw or if it changes while being read."""
    try:
        fd = os.open(abspath, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise describe_os_error(exc, "cannot read source file {}".format(abspath))
    with os.fdopen(fd, "rb", buffering=0) as f:
        before = os.fstat(fd)
        if before.st_size != expected_size or before.st_mtime_ns != expected_mtime_ns:
            raise PublishError("{}: the file changed while the publish was reading the tree; publish again when "
                               "it is no longer being written".format(abspath))
        sizes = settings.chunk_sizes
        chunks, stored_total, objects = [], 0, 0
        try:
            if sizes is not None and expected_size > sizes.minimum:
                pieces = iter_chunks(f, sizes)
                first = next(pieces)
                second = next(pieces, None)
                if second is None:  # one piece: the real publisher stores such a file unchunked
                    content_hash, stored_total = _store(settings, first[1], SUFFIX_NONE)
                    objects, read_size = int(stored_total > 0), len(first[1])
                else:
                    content_hash, read_size = None, 0
                    for offset, data in itertools.chain((first, second), pieces):
                        chunk_hash, stored = _store(settings, data, SUFFIX_PARTIAL)
                        chunks.append(Chunk(offset, len(data), chunk_hash))
                        stored_total += stored
                        objects += int(stored > 0)
                        read_size += len(data)
            elif expected_size > STREAM_THRESHOLD:
                content_hash, stored_total, read_size = _store_stream(settings, f)
                objects = int(stored_total > 0)
            else:
                data = f.read(expected_size + 1)
                read_size = len(data)
                content_hash, stored_total = _store(settings, data, SUFFIX_NONE)
                objects = int(stored_total > 0)
        except OSError as exc:
            raise describe_os_error(exc, "cannot store the contents of {}".format(abspath))
        after = os.fstat(fd)
    if (after.st_size != expected_size or after.st_mtime_ns != expected_mtime_ns
            or read_size != expected_size):
        raise PublishError("{}: the file changed while it was being published; publish again when it is no "
                           "longer being written".format(abspath))
    return IngestResult(content_hash, chunks, stored_total, objects)


def ingest_batch(settings, items):
    """Worker entry point: ``items`` are ``(abspath, size, mtime_ns)``; returns one IngestResult each."""
    try:
        return [ingest_file(settings, *item) for item in items]
    finally:
        _journal(settings).flush()
