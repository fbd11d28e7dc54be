"""Downloads of repository metadata and packages over http(s) and file://.

Transient failures (connection errors, timeouts, server errors, transfers cut short) are retried with
exponential backoff; an interrupted download resumes with an HTTP ``Range`` request where the server allows it.
A download whose checksum differs from the expected one is fetched once more from scratch with
``Cache-Control: no-cache`` (a proxy may hold a corrupted copy) and then refused. The usual ``http_proxy``/
``https_proxy``/``no_proxy`` environment variables apply.
"""

import http.client
import os
import re
import time
import urllib.error
import urllib.request

from cvmfs_pilot import __version__

from .errors import FetchError

USER_AGENT = "cvmfs-pilot-dist/" + __version__
TIMEOUT = 30.0  # seconds without progress before a connection counts as failed
ATTEMPTS = 4
BACKOFF = 1.0  # seconds before the first retry; doubled for each further one
CHUNK = 1 << 20
PERMANENT_STATUS = frozenset([400, 401, 403, 404, 405, 410, 414, 451])
CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)\Z")


class _Transient(Exception):
    """A failure worth retrying; status is the HTTP status when the server answered with an error."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class _ChecksumMismatch(Exception):
    """The whole file arrived but its checksum is wrong."""


class Fetcher:
    """Fetches URLs with retries; safe to use from several threads at once."""

    def __init__(self, attempts=ATTEMPTS, backoff=BACKOFF, timeout=TIMEOUT):
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout

    def read(self, url, limit):
        """The content of url (at most limit bytes: a larger answer is an error)."""
        def attempt(no_cache):
            data = bytearray()
            with self._open(url, {}, no_cache) as response:
                try:
                    while len(data) <= limit:
                        block = response.read(CHUNK)
                        if not block:
                            break
                        data += block
                except (OSError, http.client.HTTPException) as exc:
                    raise _Transient("transfer interrupted ({})".format(exc or type(exc).__name__)) from None
            if len(data) > limit:
                raise FetchError("{}: larger than the {} bytes expected of this file; is the URL right?".format(
                    url, limit))
            return bytes(data)
        return self._retrying(url, attempt)

    def download(self, url, target, checksum=None, size=-1, progress=None):
        """Download url into the file target, verifying size (if >= 0) and checksum (a repodata.Checksum).

        A partial download is kept in ``target + ".part"`` between attempts and resumed. progress(nbytes) is
        called as bytes arrive. The target appears only once complete and verified.
        """
        part = target + ".part"

        def attempt(no_cache):
            self._transfer(url, part, size, progress, no_cache)
            if checksum is not None:
                digest = checksum.hasher()
                with open(part, "rb") as f:
                    for block in iter(lambda: f.read(CHUNK), b""):
                        digest.update(block)
                if digest.hexdigest() != checksum.hex:
                    os.unlink(part)
                    if no_cache:
                        raise FetchError(
                            "{}: {} checksum mismatch (expected {}, got {}), twice; the file on the server is not "
                            "the one its repository metadata lists (a corrupted mirror, or a repository being "
                            "updated right now); it was not used, try again later or report it to the "
                            "repository's maintainers".format(url, checksum.type, checksum.hex, digest.hexdigest()))
                    raise _ChecksumMismatch()
            os.replace(part, target)

        self._retrying(url, attempt)

    def _retrying(self, url, attempt):
        """attempt(no_cache) until it succeeds: again at once without caches after a checksum mismatch, after a
        backoff after a transient failure, at most self.attempts times for those."""
        failures = []
        no_cache = False
        while True:
            try:
                return attempt(no_cache)
            except _ChecksumMismatch:
                no_cache = True
                continue
            except _Transient as exc:
                failures.append(str(exc))
            if len(failures) >= self.attempts:
                raise FetchError("{}: failed {} times ({}); check the URL and the network, then run again".format(
                    url, len(failures), "; ".join(dict.fromkeys(failures))))
            time.sleep(self.backoff * 2 ** (len(failures) - 1))

    def _open(self, url, headers, no_cache):
        headers = dict(headers, **{"User-Agent": USER_AGENT})
        if no_cache:
            headers["Cache-Control"] = "no-cache"
        try:
            return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code in PERMANENT_STATUS:
                raise FetchError("{}: HTTP {} {}".format(url, exc.code, exc.reason)) from None
            raise _Transient("HTTP {} {}".format(exc.code, exc.reason), exc.code) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (FileNotFoundError, IsADirectoryError, PermissionError)):
                raise FetchError("{}: {}".format(url, exc.reason)) from None
            raise _Transient(str(exc.reason)) from None
        except (OSError, http.client.HTTPException) as exc:
            raise _Transient(str(exc) or type(exc).__name__) from None

    def _transfer(self, url, part, size, progress, no_cache):
        """Bring part up to the whole file: resume it if the server supports ranges, else start over."""
        have = os.path.getsize(part) if os.path.exists(part) else 0
        if 0 <= size <= have:
            if have == size:
                return
            os.unlink(part)
            have = 0
        try:
            response = self._open(url, {"Range": "bytes={}-".format(have)} if have else {}, no_cache)
        except _Transient as exc:
            if exc.status == 416:  # the range starts at or after the end: start over
                os.unlink(part)
            raise
        with response:
            append = have > 0 and response.status == 206  # file:// answers have no status
            if append:
                match = CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                if not match or int(match.group(1)) != have:
                    os.unlink(part)
                    raise _Transient("the server answered a range request with another range; starting over")
            length = response.headers.get("Content-Length")
            expected = (int(length) if length and length.isdigit() else -1)
            written = 0
            with open(part, "ab" if append else "wb") as out:
                base = have if append else 0
                try:
                    while True:
                        block = response.read(CHUNK)
                        if not block:
                            break
                        out.write(block)
                        written += len(block)
                        if size >= 0 and base + written > size:
                            out.close()
                            os.unlink(part)
                            raise FetchError("{}: larger than the {} bytes its repository metadata lists; it was "
                                             "not used".format(url, size))
                        if progress is not None:
                            progress(len(block))
                except (OSError, http.client.HTTPException) as exc:
                    raise _Transient("transfer interrupted after {} bytes ({})".format(
                        base + written, exc or type(exc).__name__)) from None
            if 0 <= expected != written or 0 <= size != base + written:
                raise _Transient("transfer cut short after {} bytes".format(base + written))
