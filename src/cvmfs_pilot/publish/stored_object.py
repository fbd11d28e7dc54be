"""Verifying one stored object as a checker must: read in blocks, hash the stored bytes, decompress with a bound.

Neither a large file nor a hostile zlib stream is ever held in memory; the decompressed bytes go to an optional
sink. A corrupted object is reported as corrupted (hash mismatch) even when its damage also breaks the zlib stream.
"""

import os
import zlib

from cvmfs_pilot.cvmfs.compression import NONE
from cvmfs_pilot.cvmfs.hashing import ContentHash, new_hasher

from .errors import PublishError

READ_BLOCK = 1 << 20
_INFLATE_STEP = 4 << 20  # most bytes one decompress call may produce


class StoredObject:
    """What a verified object turned out to be."""

    __slots__ = ("stored_size", "content_size")

    def __init__(self, stored_size, content_size):
        self.stored_size = stored_size
        self.content_size = content_size


class _Inflater:
    """Decompresses a stream piece by piece, stopping (and remembering why) at the first problem."""

    def __init__(self, compression, bound, sink):
        self._zlib = None if compression == NONE else zlib.decompressobj()
        self._bound = bound
        self._sink = sink
        self.size = 0
        self.problem = None

    def _emit(self, data):
        self.size += len(data)
        if self._bound is not None and self.size > self._bound:
            self.problem = "it expands beyond the expected {} bytes".format(self._bound)
        elif self._sink is not None and data:
            self._sink(data)

    def feed(self, block):
        if self.problem:
            return
        if self._zlib is None:
            self._emit(block)
            return
        if self._zlib.eof:
            self.problem = "its zlib stream is followed by extra bytes"
            return
        try:
            while block and not self.problem:
                self._emit(self._zlib.decompress(block, _INFLATE_STEP))
                block = self._zlib.unconsumed_tail
        except zlib.error as exc:
            self.problem = "it is not a valid zlib stream ({})".format(exc)
            return
        if self._zlib.eof and self._zlib.unused_data and not self.problem:
            self.problem = "its zlib stream is followed by extra bytes"

    def finish(self):
        if self.problem or self._zlib is None:
            return
        try:
            self._emit(self._zlib.flush())
        except zlib.error as exc:
            self.problem = "it is not a valid zlib stream ({})".format(exc)
            return
        if not self._zlib.eof and not self.problem:
            self.problem = "its zlib stream is truncated"


def _blocks(f, what, relative, root):
    while True:
        try:
            block = f.read(READ_BLOCK)
        except OSError as exc:
            raise PublishError("{}: cannot read object {} in {}: {}".format(what, relative, root,
                                                                             exc.strerror)) from None
        if not block:
            return
        yield block


def verify_object(root, content_hash, suffix, compression, what, expected_size=None, limit=None, sink=None):
    """Check object ``content_hash`` + ``suffix`` under storage ``root``: it exists, its stored bytes hash to its
    name, and it decompresses (``compression``) completely to ``expected_size`` bytes if given, else to at most
    ``limit`` bytes if given. Decompressed data is passed to ``sink`` in pieces. ``what`` says what the object is
    for the error message ("content of /a/b"). Returns a :class:`StoredObject`; raises :class:`PublishError`."""
    relative = content_hash.object_path(suffix)
    bound = expected_size if expected_size is not None else limit
    inflater = _Inflater(compression, bound, sink)
    hasher = new_hasher(content_hash.algorithm)
    stored = 0
    try:
        f = open(os.path.join(root, relative), "rb")
    except FileNotFoundError:
        raise PublishError("{}: object {} is missing from {}; restore it from a replica, or publish the repository "
                           "again from its source".format(what, relative, root)) from None
    except OSError as exc:
        raise PublishError("{}: cannot open object {} in {}: {}".format(what, relative, root,
                                                                         exc.strerror)) from None
    with f:
        for block in _blocks(f, what, relative, root):
            stored += len(block)
            hasher.update(block)
            inflater.feed(block)
    actual = ContentHash(content_hash.algorithm, hasher.digest())
    if actual != content_hash:
        raise PublishError("{}: object {} in {} is corrupted: its {} stored bytes hash to {}, not to its name; "
                           "restore it from a replica, or publish the repository again from its source".format(
                               what, relative, root, stored, actual.hex()))
    inflater.finish()
    if inflater.problem:
        raise PublishError("{}: object {} in {} is damaged: {}".format(what, relative, root, inflater.problem))
    if expected_size is not None and inflater.size != expected_size:
        raise PublishError("{}: object {} in {} decompresses to {} bytes instead of the expected {}".format(
            what, relative, root, inflater.size, expected_size))
    return StoredObject(stored, inflater.size)
