"""Fetching a client distribution from a staging area on demand, and caching it on the node by its hash.

What docs/staging.md's "What the node layer does" asks, steps 1-5 up to running the entry point:

1. ``index.json`` is downloaded from the mirrors in order (retries with backoff; ``http_proxy`` is honoured as
   urllib does; ``file://`` works too) and must have the SHA-256 the pilot was given; otherwise
   ``indexes/<sha256>.json`` (the index moved on after the pilot was submitted). A verified index is kept in the
   cache under its hash.
2. The entry for this node is chosen (:func:`staging_index.choose`).
3. ``<name>.tar.gz`` is streamed into a temporary file in the cache while hashing it, and refused unless its size
   and SHA-256 are those of the entry: a tampered file is never unpacked.
4. It is unpacked under the rules of :mod:`safe_extract` into a temporary directory, ``@DIST_ROOT@`` is replaced
   in ``etc/cvmfs/default.local``, and the directory is renamed to ``<cache>/<sha256>``. An fcntl lock on
   ``<cache>/<sha256>.lock`` serialises pilots of the node; whoever comes second reuses the finished tree.
"""

import collections
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from http.client import HTTPException

from cvmfs_pilot.node import atomic_file, safe_extract, staging_index

CHUNK = 1 << 20
MAX_INDEX_BYTES = 16 << 20
PERMANENT_HTTP = (401, 403, 404, 410)
INDEX_CACHE = "indexes"

Fetched = collections.namedtuple("Fetched", "path dist entry reused")
Fetched.__doc__ = """``path``: the unpacked distribution; ``dist``: its dist.json; ``entry``: the index entry;
``reused``: whether it was already in the cache (nothing downloaded but, possibly, the index)."""


class FetchError(Exception):
    """The distribution could not be obtained, or what was downloaded was refused."""


class _Refused(Exception):
    """This mirror's copy is wrong (hash, size) or missing: try the next mirror, never retry this one."""


def default_cache():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "cvmfs-pilot", "distributions")


def mirror_list(text):
    """The base URLs of a comma-separated list (a trailing slash is added)."""
    urls = [url.strip() for url in text.split(",") if url.strip()]
    return [url if url.endswith("/") else url + "/" for url in urls]


class Downloader(object):
    """Downloads a file of a staging area from its mirrors, in order, with retries and exponential backoff."""

    def __init__(self, mirrors, attempts=3, backoff=1.0, timeout=60.0):
        if not mirrors:
            raise FetchError("no staging URL given")
        self.mirrors = [m if m.endswith("/") else m + "/" for m in mirrors]
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.timeout = timeout
        self.requests = 0  # made so far, for the record (and the tests)
        # built now, not urllib's module-wide opener: that one reads http_proxy etc. once per process
        self.opener = urllib.request.build_opener()

    def get(self, relative, receive):
        """receive(url, response) consumes a response and returns the result, or raises _Refused. Returns the
        first accepted result; FetchError with every mirror's reason otherwise."""
        reasons = collections.OrderedDict()
        given_up = set()
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            for base in self.mirrors:
                if base in given_up:
                    continue
                url = base + relative
                self.requests += 1
                try:
                    response = self.opener.open(url, timeout=self.timeout)
                    with response:
                        return receive(url, response)
                except _Refused as exc:
                    reasons[base] = str(exc)
                    given_up.add(base)
                except urllib.error.HTTPError as exc:
                    reasons[base] = "HTTP {} {}".format(exc.code, exc.reason)
                    if exc.code in PERMANENT_HTTP:
                        given_up.add(base)
                except urllib.error.URLError as exc:
                    reasons[base] = str(exc.reason)
                    if isinstance(exc.reason, FileNotFoundError):  # file:// URL
                        given_up.add(base)
                except (OSError, HTTPException, socket.timeout) as exc:
                    reasons[base] = "{}: {}".format(type(exc).__name__, exc)
            if len(given_up) == len(self.mirrors):
                break
        raise FetchError("cannot download {} from any staging URL:\n{}".format(
            relative, "\n".join("  {}{}: {}".format(base, relative, why) for base, why in reasons.items())))


def _read_verified(response, url, sha256, limit):
    digest = hashlib.sha256()
    chunks = []
    size = 0
    while True:
        block = response.read(CHUNK)
        if not block:
            break
        size += len(block)
        if size > limit:
            raise _Refused("larger than {} bytes".format(limit))
        digest.update(block)
        chunks.append(block)
    if digest.hexdigest() != sha256:
        raise _Refused("SHA-256 {} is not the expected {}".format(digest.hexdigest(), sha256))
    return b"".join(chunks)


def fetch_index(downloader, index_sha256, cache=None):
    """The verified bytes of the index with this SHA-256: from the cache, else index.json, else
    indexes/<sha256>.json of the mirrors."""
    if not staging_index.is_sha256(index_sha256):
        raise FetchError("--index-sha256 {!r} is not a SHA-256 (64 lowercase hex digits)".format(index_sha256))
    cached = os.path.join(cache, INDEX_CACHE, index_sha256 + ".json") if cache else None
    if cached and os.path.isfile(cached):
        with open(cached, "rb") as handle:
            data = handle.read()
        if hashlib.sha256(data).hexdigest() == index_sha256:
            return data

    def receive(url, response):
        return _read_verified(response, url, index_sha256, MAX_INDEX_BYTES)

    try:
        data = downloader.get("index.json", receive)
    except FetchError as current:
        try:
            data = downloader.get("indexes/{}.json".format(index_sha256), receive)
        except FetchError as archived:
            raise FetchError("no staging index with SHA-256 {} (refusing anything else):\n{}\n{}".format(
                index_sha256, current, archived))
    if cached:
        _write_atomically(cached, data)
    return data


def _write_atomically(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_file.write_atomically(path, data, sync=True)


def _remove(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def download_verified(downloader, relative, sha256, size, directory, suffix=""):
    """Stream the file at relative (below the mirrors) into a temporary file of directory, hashing it; its path
    once its size and SHA-256 are the ones given. FetchError after every mirror failed or was refused."""
    def receive(url, response):
        fd, path = tempfile.mkstemp(dir=directory, prefix=".download-", suffix=suffix)
        try:
            digest = hashlib.sha256()
            received = 0
            with os.fdopen(fd, "wb") as out:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    received += len(block)
                    if received > size:
                        raise _Refused("larger than the {} bytes the index gives".format(size))
                    digest.update(block)
                    out.write(block)
            if received != size:
                raise _Refused("{} bytes, not the {} the index gives (truncated?)".format(received, size))
            if digest.hexdigest() != sha256:
                raise _Refused("SHA-256 {} is not the {} the index gives: refused".format(digest.hexdigest(), sha256))
            return path
        except BaseException:
            _remove(path)
            raise

    return downloader.get(relative, receive)


def _download_tarball(downloader, entry, directory):
    return download_verified(downloader, entry.name + ".tar.gz", entry.sha256, entry.size, directory, ".tar.gz")


def read_dist_json(root):
    try:
        with open(os.path.join(root, "dist.json")) as handle:
            dist = json.load(handle)
    except (OSError, ValueError) as exc:
        raise FetchError("the distribution in {} has no readable dist.json: {}".format(root, exc))
    if not isinstance(dist, dict):
        raise FetchError("the distribution in {}: dist.json is not an object".format(root))
    return dist


def _check_dist(dist, entry):
    for key in ("engine", "source", "platform", "arch"):
        if dist.get(key) != getattr(entry, key):
            raise FetchError("{}: dist.json says {} {!r}, the index {!r}".format(
                entry.name, key, dist.get(key), getattr(entry, key)))


def _relative_path(dist, key, default):
    value = dist.get(key, default)
    parts = value.split("/") if isinstance(value, str) else [".."]
    if not value or value.startswith("/") or ".." in parts:
        raise FetchError("dist.json: {} {!r} is not a relative path inside the distribution".format(key, value))
    return value


def substitute_root(tree, dist, final_root):
    """Replace dist.json's root_placeholder by final_root in config_dir/default.local of the tree (a regular
    file, never through a link)."""
    placeholder = dist.get("root_placeholder") or "@DIST_ROOT@"
    path = os.path.join(tree, _relative_path(dist, "config_dir", "etc/cvmfs"), "default.local")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FetchError("{}: default.local is a symbolic link; refused".format(path))
        raise
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode & 0o777
        text = handle.read().decode("utf-8")
    data = text.replace(placeholder, final_root).encode("utf-8")
    temporary = path + ".tmp"
    with open(temporary, "wb") as out:
        out.write(data)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


class _Lock(object):
    def __init__(self, path):
        self.path = path
        self.handle = None

    def __enter__(self):
        self.handle = open(self.path, "a")
        fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
        self.handle.close()


def install(downloader, entry, cache):
    """The unpacked distribution of entry in the cache (downloaded, verified and unpacked unless there):
    (path, dist.json, reused)."""
    os.makedirs(cache, exist_ok=True)
    final = os.path.join(cache, entry.sha256)
    if os.path.isdir(final):
        return final, read_dist_json(final), True
    with _Lock(final + ".lock"):
        if os.path.isdir(final):  # another pilot finished it while this one waited
            return final, read_dist_json(final), True
        tarball = _download_tarball(downloader, entry, cache)
        work = tempfile.mkdtemp(dir=cache, prefix=".unpack-{}-".format(entry.sha256[:12]))
        try:
            try:
                safe_extract.extract_tarball(tarball, work)
            except safe_extract.ArchiveRejected as exc:
                raise FetchError("{}.tar.gz refused: {}".format(entry.name, exc))
            dist = read_dist_json(work)
            _check_dist(dist, entry)
            substitute_root(work, dist, final)
            os.chmod(work, 0o755)
            os.rename(work, final)
        except BaseException:
            _remove(work)
            raise
        finally:
            _remove(tarball)
    return final, dist, False


def fetch(mirrors, index_sha256, platforms, arch, engine=None, source=None, cache=None, downloader=None):
    """Fetch the distribution for this node from the staging area at mirrors (base URLs, tried in order) whose
    index has SHA-256 index_sha256; platforms: :func:`osinfo.build_platforms` of this node, best first. Returns a
    Fetched. FetchError or StagingIndexError when it cannot."""
    cache = os.path.abspath(cache or default_cache())
    downloader = downloader or Downloader(mirrors)
    entries = staging_index.parse_index(fetch_index(downloader, index_sha256, cache))
    entry = staging_index.choose(entries, engine, source, platforms, arch)
    path, dist, reused = install(downloader, entry, cache)
    return Fetched(path, dist, entry, reused)
