"""The staging area: distributions, the signed index of them, and the builder's own state (docs/staging.md).

Files (all below the staging directory, which a web server exposes):

* ``<name>.tar.gz`` and ``<name>.json`` (its dist.json) for every distribution;
* ``index.json``, the current distributions, and ``index.json.sha256`` (``<hex>  index.json``), the hash a
  pilot is given; every index version also as ``indexes/<sha256>.json``, so that a pilot given an older hash
  can still verify the index it was given;
* ``build-state.json``: what the last build asked for and saw upstream (for ``dist update``; not for pilots);
* ``.lock`` (one builder at a time) and ``.work-*`` (a running build's scratch space).

Every file is written to a temporary name, flushed to disk and renamed into place; distributions first, the
index last, so a reader never sees an index naming files that are not there. Files that no current index
refers to are retired: kept for the grace period (running pilots may still fetch them), then deleted.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import StagingError
from .upstream import DistKey

INDEX = "index.json"
INDEX_SHA256 = "index.json.sha256"
INDEX_HISTORY = "indexes"
STATE = "build-state.json"
LOCK = ".lock"
WORK_PREFIX = ".work-"
FORMAT = 1
DISTRIBUTION_FILE = re.compile(r"(cvmfs2|python)-[A-Za-z0-9_.+~^-]+\.(tar\.gz|json)\Z")
HISTORY_FILE = re.compile(r"[0-9a-f]{64}\.json\Z")


@dataclass(frozen=True)
class IndexEntry:
    """One distribution as index.json lists it; its files are ``<name>.tar.gz`` and ``<name>.json``."""

    name: str
    engine: str
    source: str
    platform: str
    arch: str
    version: str
    size: int
    sha256: str
    build_time: str  # UTC, ISO 8601 with a Z

    @property
    def key(self):
        return DistKey(self.engine, self.source, self.platform, self.arch)

    @property
    def files(self):
        return (self.name + ".tar.gz", self.name + ".json")


def utc_iso(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def index_bytes(entries, updated):
    document = {"format": FORMAT, "updated": updated,
                "distributions": [asdict(entry) for entry in sorted(entries, key=lambda e: e.key)]}
    return (json.dumps(document, indent=2) + "\n").encode()


def _fsync_directory(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(target, data, mode=0o644):
    """Write bytes to the path target through a temporary file beside it (flushed to disk) and a rename; a
    reader sees the old file or the new one, never a part. Creates missing parent directories."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=WORK_PREFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(target.parent)


class Staging:
    """A staging directory. Reading needs nothing; changing it needs :meth:`locked`."""

    BUSY = "another 'dist build' or 'dist update' is running on {}; wait for it to finish"
    SCRATCH_DIRECTORIES = (".", INDEX_HISTORY)  # where a killed writer may have left WORK_PREFIX files

    def __init__(self, directory):
        self.directory = Path(directory)

    def path(self, name):
        return self.directory / name

    # -- reading ----------------------------------------------------------------------------------------------

    def read_index(self):
        """The IndexEntry list of index.json ([] when there is none yet)."""
        try:
            document = json.loads(self.path(INDEX).read_bytes())
            return [IndexEntry(**entry) for entry in document["distributions"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StagingError("{}: unreadable or not an index of this cvmfs-pilot ({}); move it away and run "
                               "'dist build' again".format(self.path(INDEX), exc)) from None

    def index_sha256(self):
        """(the SHA-256 of index.json, the one index.json.sha256 states), either None if missing."""
        try:
            actual = hashlib.sha256(self.path(INDEX).read_bytes()).hexdigest()
        except FileNotFoundError:
            actual = None
        try:
            stated = self.path(INDEX_SHA256).read_text().split()[0]
        except (FileNotFoundError, IndexError):
            stated = None
        return actual, stated

    def read_state(self):
        """build-state.json as a dict ({} when there is none yet)."""
        try:
            state = json.loads(self.path(STATE).read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StagingError("{}: unreadable ({}); remove it and run 'dist build' again".format(
                self.path(STATE), exc)) from None
        if state.get("format") != FORMAT:
            raise StagingError("{}: written by another version of cvmfs-pilot; remove it and run 'dist build' "
                               "again".format(self.path(STATE)))
        return state

    # -- changing ---------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self):
        """Hold the staging area's lock (failing at once if another builder holds it); stale scratch space
        of a killed build is removed on entry."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock = open(self.path(LOCK), "a")
        except OSError as exc:
            raise StagingError("cannot use {} as staging area: {}".format(self.directory, exc.strerror)) from None
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise StagingError(self.BUSY.format(self.directory)) from None
                raise
            for stale in [path for scratch in self.SCRATCH_DIRECTORIES
                          for path in self.path(scratch).glob(WORK_PREFIX + "*")]:
                if stale.is_dir() and not stale.is_symlink():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)
            yield self

    def work_directory(self):
        """A new scratch directory inside the staging area (same file system, so results move by rename)."""
        return Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=self.directory))

    def write_atomically(self, name, data):
        """Write bytes to the file name (relative to the staging area) through a temporary file and rename."""
        write_atomically(self.path(name), data)

    def add_distribution(self, name, tarball, description):
        """Move a packed tarball into place as <name>.tar.gz and write <name>.json beside it."""
        os.chmod(tarball, 0o644)
        os.replace(tarball, self.path(name + ".tar.gz"))
        self.write_atomically(name + ".json", description)

    def publish_index(self, entries, now):
        """Write the index of entries (if it differs from the current one); returns its SHA-256."""
        current = {entry.name: entry for entry in self.read_index()}
        if current == {entry.name: entry for entry in entries} and self.path(INDEX).exists():
            actual, stated = self.index_sha256()
            if actual == stated:
                return actual
        return self.write_index(index_bytes(entries, utc_iso(now)))

    def write_index(self, data):
        """Publish index bytes, after the files they name: ``indexes/<sha256>.json``, ``index.json``, then
        ``index.json.sha256``. Returns the SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        self.write_atomically("{}/{}.json".format(INDEX_HISTORY, digest), data)
        self.write_atomically(INDEX, data)
        self.write_atomically(INDEX_SHA256, "{}  {}\n".format(digest, INDEX).encode())
        return digest

    def write_state(self, state):
        """Write build-state.json if it changed."""
        data = (json.dumps(dict(state, format=FORMAT), indent=2, sort_keys=True) + "\n").encode()
        try:
            if self.path(STATE).read_bytes() == data:
                return
        except FileNotFoundError:
            pass
        self.write_atomically(STATE, data)

    def retire_and_prune(self, entries, retired, grace_seconds, now):
        """Note files no current index refers to in retired ({relative path: time first seen unreferenced})
        and delete those retired for at least grace_seconds. Returns the deleted paths."""
        keep = {name for entry in entries for name in entry.files}
        actual, _ = self.index_sha256()
        candidates = [p.name for p in self.directory.iterdir() if DISTRIBUTION_FILE.match(p.name)]
        if self.path(INDEX_HISTORY).is_dir():
            candidates += ["{}/{}".format(INDEX_HISTORY, p.name) for p in self.path(INDEX_HISTORY).iterdir()
                           if HISTORY_FILE.match(p.name)]
        keep.add("{}/{}.json".format(INDEX_HISTORY, actual))
        unreferenced = set(candidates) - keep
        for name in list(retired):
            if name not in unreferenced:
                del retired[name]
        deleted = []
        for name in sorted(unreferenced):
            since = retired.setdefault(name, now)
            if now - since >= grace_seconds:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path(name))
                del retired[name]
                deleted.append(name)
        return deleted
