"""Object compression: zlib streams at the default level, as the real publisher writes them (§2)."""

import zlib

ZLIB = 0
NONE = 1
COMPRESSION_NAMES = {ZLIB: "zlib", NONE: "none"}
COMPRESSION_BY_NAME = {name: value for value, name in COMPRESSION_NAMES.items()}


class DecompressionError(ValueError):
    """The stored bytes are not a complete zlib stream, or expand beyond the expected size."""


def compress(data, compression=ZLIB):
    if compression == NONE:
        return bytes(data)
    return zlib.compress(data, 6)


def decompress(data, compression=ZLIB, limit=None):
    """Decompress one stored object. ``limit`` bounds the output (catalog sizes are known in advance)."""
    if compression == NONE:
        return bytes(data)
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit or 0) if limit else d.decompress(data)
    except zlib.error as exc:
        raise DecompressionError("not a valid zlib stream: {}".format(exc))
    if limit and d.unconsumed_tail:
        raise DecompressionError("expands beyond the expected {} bytes".format(limit))
    if not d.eof or d.unused_data:
        raise DecompressionError("zlib stream is truncated or followed by extra bytes")
    return out


class StreamDecompressor(object):
    """Incremental decompression for large objects fetched or read in pieces."""

    def __init__(self, compression=ZLIB):
        self._raw = compression == NONE
        self._d = None if self._raw else zlib.decompressobj()

    def feed(self, data):
        if self._raw:
            return bytes(data)
        try:
            return self._d.decompress(data)
        except zlib.error as exc:
            raise DecompressionError("not a valid zlib stream: {}".format(exc))

    def finish(self):
        if self._raw:
            return b""
        tail = self._d.flush()
        if not self._d.eof or self._d.unused_data:
            raise DecompressionError("zlib stream is truncated or followed by extra bytes")
        return tail
