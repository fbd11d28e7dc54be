"""The extended-attribute blob of catalog entries (§5): ``u8 version=1, u8 count``, then per attribute, sorted by
key, ``u8 keylen, u8 vallen, key, value``. Keys and values are at most 255 bytes; at most 255 attributes."""

VERSION = 1
MAX_LENGTH = 255


class XattrBlobError(ValueError):
    pass


def encode(attributes):
    """``{key(bytes|str): value(bytes)}`` to a blob; None for no attributes."""
    if not attributes:
        return None
    items = []
    for key, value in attributes.items():
        if isinstance(key, str):
            key = key.encode("utf-8", "surrogateescape")
        if not key or len(key) > MAX_LENGTH:
            raise XattrBlobError("extended attribute name {!r} must have 1 to 255 bytes".format(key))
        if len(value) > MAX_LENGTH:
            raise XattrBlobError("extended attribute {!r} has a value of {} bytes; at most 255 can be "
                                 "published".format(key, len(value)))
        items.append((key, bytes(value)))
    if len(items) > MAX_LENGTH:
        raise XattrBlobError("{} extended attributes; at most 255 can be published".format(len(items)))
    items.sort()
    out = bytearray([VERSION, len(items)])
    for key, value in items:
        out += bytes([len(key), len(value)]) + key + value
    return bytes(out)


def decode(blob):
    """A blob to an ordered ``{key(bytes): value(bytes)}``; empty for None."""
    if not blob:
        return {}
    blob = bytes(blob)
    if len(blob) < 2 or blob[0] != VERSION:
        raise XattrBlobError("extended attribute blob has an unknown version")
    count, pos, result = blob[1], 2, {}
    for _ in range(count):
        if pos + 2 > len(blob):
            raise XattrBlobError("extended attribute blob is truncated")
        klen, vlen = blob[pos], blob[pos + 1]
        pos += 2
        if pos + klen + vlen > len(blob):
            raise XattrBlobError("extended attribute blob is truncated")
        result[blob[pos:pos + klen]] = blob[pos + klen:pos + klen + vlen]
        pos += klen + vlen
    if pos != len(blob):
        raise XattrBlobError("extended attribute blob has trailing bytes")
    return result
