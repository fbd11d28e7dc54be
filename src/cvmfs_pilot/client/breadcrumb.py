"""The breadcrumb ``cvmfschecksum.<fqrn>`` in the cache directory: the newest revision of a repository that this
cache has seen, ``<root catalog hash>T<timestamp>R<revision>`` (no newline), as the real client writes it.

It lets a client start from the cached root catalog and refuse manifests older than what it has seen. Clients
before revisions were recorded wrote ``<hash>T<timestamp>``; that reads as revision 0.
"""

import logging
import os
import tempfile

from cvmfs_pilot.cvmfs.hashing import ContentHash

log = logging.getLogger(__name__)

PREFIX = "cvmfschecksum."
MAX_SIZE = 256  # a breadcrumb is about 70 bytes; anything longer is garbage


def path_of(directory, fqrn):
    """Where the breadcrumb of ``fqrn`` lives in the cache ``directory``."""
    if not fqrn or "/" in fqrn or "\0" in fqrn or fqrn.startswith("."):
        raise ValueError("{!r} is not a repository name (like atlas.cern.ch)".format(fqrn))
    return os.path.join(directory, PREFIX + fqrn)


def format_breadcrumb(root_hash, timestamp, revision):
    for name, value in (("timestamp", timestamp), ("revision", revision)):
        if not isinstance(value, int) or value < 0:
            raise ValueError("a breadcrumb {} must be an integer >= 0, not {!r}".format(name, value))
    return "{}T{}R{}".format(root_hash.hex(), timestamp, revision)


def parse_breadcrumb(text):
    """``(root ContentHash, timestamp, revision)`` from a breadcrumb's text; ValueError if it is not one."""
    rest = text.strip()
    if "R" in rest:
        rest, _, revision = rest.rpartition("R")
    else:
        revision = "0"
    root, separator, timestamp = rest.partition("T")
    if not separator:
        raise ValueError("no 'T<timestamp>' after the root catalog hash")
    if not (timestamp.isdigit() and revision.isdigit()):
        raise ValueError("the timestamp {!r} or the revision {!r} is not a number".format(timestamp, revision))
    return ContentHash.parse(root), int(timestamp), int(revision)


def read_breadcrumb(directory, fqrn):
    """The breadcrumb of ``fqrn``, or None if there is none or it is unreadable (logged as a warning: the client
    then starts without it, as after a first mount)."""
    path = path_of(directory, fqrn)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SIZE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("ignoring the breadcrumb %s: cannot read it: %s", path, exc)
        return None
    try:
        if len(data) > MAX_SIZE:
            raise ValueError("longer than {} bytes".format(MAX_SIZE))
        return parse_breadcrumb(data.decode("ascii"))
    except ValueError as exc:  # UnicodeDecodeError is one
        log.warning("ignoring the breadcrumb %s: it is not '<root hash>T<timestamp>R<revision>': %s; it will be "
                    "rewritten at the next mount", path, exc)
        return None


def write_breadcrumb(directory, temp_directory, fqrn, root_hash, timestamp, revision):
    """Replace the breadcrumb of ``fqrn`` atomically, through a temporary file (mode 0600) in ``temp_directory``
    (same file system as ``directory``)."""
    path = path_of(directory, fqrn)
    data = format_breadcrumb(root_hash, timestamp, revision).encode("ascii")
    fd, temp = tempfile.mkstemp(prefix="breadcrumb.", dir=temp_directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.rename(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
