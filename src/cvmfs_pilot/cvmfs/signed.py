"""Signed text files (manifest and whitelist): ``<body>--\\n<hexhash>\\n<signature>`` (§3, §4)."""

from .hashing import ALGORITHM_IDS, ContentHash

SEPARATOR = b"\n--\n"


class SignedFileError(ValueError):
    """A manifest or whitelist is malformed."""


class SignedFile(object):
    """The three parts of a signed file. ``body`` includes the newline before ``--``."""

    __slots__ = ("body", "hash_text", "signature")

    def __init__(self, body, hash_text, signature):
        self.body = body
        self.hash_text = hash_text
        self.signature = signature

    def body_hash_matches(self):
        """Whether ``hash_text`` is the hash of ``body`` (algorithm taken from the hash's own id)."""
        try:
            expected = ContentHash.parse(self.hash_text)
        except ValueError:
            return False
        return ContentHash.of(self.body, expected.algorithm) == expected

    def serialize(self):
        return self.body + b"--\n" + self.hash_text.encode("ascii") + b"\n" + self.signature


def split_signed(data, what="signed file"):
    """Split raw bytes into a :class:`SignedFile`. An unsigned file (no ``--`` line) has empty hash and signature."""
    if not isinstance(data, bytes):
        raise SignedFileError("{} must be bytes".format(what))
    if data.startswith(b"--\n"):
        raise SignedFileError("{} has no content before its signature".format(what))
    pos = data.find(SEPARATOR)
    if pos < 0:
        if data.endswith(b"\n--"):
            pos = len(data) - 3
        else:
            return SignedFile(data, "", b"")
    body = data[:pos + 1]
    rest = data[pos + len(SEPARATOR):]
    line_end = rest.find(b"\n")
    if line_end < 0:
        hash_line, signature = rest, b""
    else:
        hash_line, signature = rest[:line_end], rest[line_end + 1:]
    try:
        hash_text = hash_line.decode("ascii")
    except UnicodeDecodeError:
        raise SignedFileError("{} has a non-ASCII hash line after '--'".format(what))
    return SignedFile(body, hash_text, signature)


def make_hash_text(body, algorithm):
    """The hex hash (with algorithm id) that a signature covers."""
    if algorithm not in ALGORITHM_IDS:
        raise ValueError("unsupported hash algorithm {!r}".format(algorithm))
    return ContentHash.of(body, algorithm).hex()
