"""Content hashes, their textual form and the object paths they name (cvmfs-format.md §2).

A content hash is an algorithm plus a 20-byte digest. Its text form is lowercase hex followed by the algorithm id
(nothing for SHA-1, ``-rmd160``, ``-shake128``); an object path adds the two-character fan-out directory and an
optional one-letter suffix naming the kind of object.
"""

import hashlib

from ._ripemd160 import RIPEMD160

# Algorithm numbers as the real client numbers them (they are also stored in catalog flags, minus one).
MD5 = 0
SHA1 = 1
RMD160 = 2
SHAKE128 = 3

ALGORITHM_IDS = {SHA1: "", RMD160: "-rmd160", SHAKE128: "-shake128"}
ALGORITHM_NAMES = {SHA1: "sha1", RMD160: "rmd160", SHAKE128: "shake128"}
ALGORITHMS_BY_NAME = {name: algo for algo, name in ALGORITHM_NAMES.items()}
DIGEST_SIZE = 20

# Object suffixes (crypto/hash.h).
SUFFIX_NONE = ""
SUFFIX_CATALOG = "C"
SUFFIX_HISTORY = "H"
SUFFIX_CERTIFICATE = "X"
SUFFIX_METAINFO = "M"
SUFFIX_PARTIAL = "P"


def _ripemd160_factory():
    try:
        hashlib.new("ripemd160")
    except ValueError:
        return RIPEMD160
    return lambda data=b"": hashlib.new("ripemd160", data)


_new_ripemd160 = _ripemd160_factory()


class _Shake128:
    """SHAKE-128 with a fixed 160-bit output, so that it behaves like the other digests."""

    def __init__(self, data=b""):
        self._h = hashlib.shake_128(data)

    def update(self, data):
        self._h.update(data)

    def digest(self):
        return self._h.digest(DIGEST_SIZE)

    def hexdigest(self):
        return self.digest().hex()

    def copy(self):
        other = _Shake128()
        other._h = self._h.copy()
        return other


def new_hasher(algorithm):
    """A hashlib-style object (``update``/``digest``) for a content-hash algorithm."""
    if algorithm == SHA1:
        return hashlib.sha1()
    if algorithm == RMD160:
        return _new_ripemd160()
    if algorithm == SHAKE128:
        return _Shake128()
    raise ValueError("unsupported content hash algorithm {!r}".format(algorithm))


def algorithm_from_name(name):
    """Map ``sha1``/``rmd160``/``shake128`` (as ``CVMFS_HASH_ALGORITHM`` spells them) to the algorithm number."""
    try:
        return ALGORITHMS_BY_NAME[name.lower()]
    except KeyError:
        raise ValueError("unknown hash algorithm {!r}; use one of {}".format(
            name, ", ".join(sorted(ALGORITHMS_BY_NAME))))


class ContentHash(object):
    """An immutable (algorithm, digest) pair."""

    __slots__ = ("algorithm", "digest")

    def __init__(self, algorithm, digest):
        if algorithm not in ALGORITHM_IDS:
            raise ValueError("unsupported content hash algorithm {!r}".format(algorithm))
        digest = bytes(digest)
        if len(digest) != DIGEST_SIZE:
            raise ValueError("a content hash digest has {} bytes, not {}".format(DIGEST_SIZE, len(digest)))
        object.__setattr__(self, "algorithm", algorithm)
        object.__setattr__(self, "digest", digest)

    def __setattr__(self, name, value):
        raise AttributeError("ContentHash is immutable")

    def __reduce__(self):
        return ContentHash, (self.algorithm, self.digest)

    @classmethod
    def of(cls, data, algorithm=SHA1):
        """The hash of ``data`` (the stored bytes of an object)."""
        h = new_hasher(algorithm)
        h.update(data)
        return cls(algorithm, h.digest())

    @classmethod
    def parse(cls, text):
        """Parse the textual form (``<40 hex>[-rmd160|-shake128]``); no suffix allowed."""
        if not isinstance(text, str):
            raise ValueError("a content hash must be text, got {!r}".format(type(text).__name__))
        hexpart, dash, algo_id = text.partition("-")
        algorithm = SHA1
        if dash:
            for algo, ident in ALGORITHM_IDS.items():
                if ident == "-" + algo_id:
                    algorithm = algo
                    break
            else:
                raise ValueError("content hash {!r} has an unknown algorithm id '-{}'".format(text, algo_id))
        if len(hexpart) != 2 * DIGEST_SIZE or hexpart.lower() != hexpart:
            raise ValueError("content hash {!r} is not {} lowercase hex digits".format(text, 2 * DIGEST_SIZE))
        try:
            digest = bytes.fromhex(hexpart)
        except ValueError:
            raise ValueError("content hash {!r} is not hexadecimal".format(text))
        return cls(algorithm, digest)

    @classmethod
    def parse_with_suffix(cls, text):
        """Parse ``<hash><suffix>`` as it appears in object file names; returns ``(ContentHash, suffix)``."""
        suffix = ""
        if text and text[-1] in "CHXMPLT":
            text, suffix = text[:-1], text[-1]
        return cls.parse(text), suffix

    def hex(self):
        """Lowercase hex digest plus the algorithm id: the form manifests and nested-catalog rows use."""
        return self.digest.hex() + ALGORITHM_IDS[self.algorithm]

    def object_path(self, suffix=SUFFIX_NONE):
        """Path of the object relative to the repository base: ``data/ab/cdef...[-algo][suffix]``."""
        text = self.hex()
        return "data/" + text[:2] + "/" + text[2:] + suffix

    def cache_path(self):
        """Path of the decompressed object in a client cache: ``ab/cdef...[-algo]`` (no suffix)."""
        text = self.hex()
        return text[:2] + "/" + text[2:]

    def __eq__(self, other):
        return isinstance(other, ContentHash) and self.algorithm == other.algorithm and self.digest == other.digest

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash((self.algorithm, self.digest))

    def __repr__(self):
        return "ContentHash({!r})".format(self.hex())

    def __str__(self):
        return self.hex()

