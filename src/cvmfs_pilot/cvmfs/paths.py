"""Repository paths and their MD5 keys as catalogs store them (§5)."""

import hashlib
import posixpath
import struct

ROOT_PATH = ""  # the repository root in catalogs: the empty string, not "/"
ROOT_MD5_HEX = "d41d8cd98f00b204e9800998ecf8427e"
_MD5_HALVES = struct.Struct("<qq")


def md5_pair(path):
    """The ``(md5path_1, md5path_2)`` integers of a repository path: MD5 split into two signed little-endian
    int64 halves. ``path`` is text (``/a/b``) or bytes."""
    if isinstance(path, str):
        path = path.encode("utf-8", "surrogateescape")
    return _MD5_HALVES.unpack(hashlib.md5(path).digest())


def normalize(path):
    """Canonical catalog form: absolute, no trailing slash, root as ``""``. Rejects ``..`` components."""
    if isinstance(path, bytes):
        path = path.decode("utf-8", "surrogateescape")
    parts = [p for p in path.split("/") if p and p != "."]
    if ".." in parts:
        raise ValueError("repository path {!r} contains '..'".format(path))
    return "/" + "/".join(parts) if parts else ROOT_PATH


def parent(path):
    """Parent of a canonical path; the parent of ``/a`` is the root ``""``."""
    if path == ROOT_PATH:
        raise ValueError("the repository root has no parent")
    head = posixpath.dirname(path)
    return "" if head == "/" else head


def join(directory, name):
    return directory + "/" + name


def is_below(path, prefix):
    """Whether ``path`` is ``prefix`` or inside it, at a ``/`` boundary."""
    return prefix == ROOT_PATH or path == prefix or path.startswith(prefix + "/")
