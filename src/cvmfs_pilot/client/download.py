"""Download policy of the client (§7): which server and proxy to ask, failover, retries, backoff and verification.

The servers (``CVMFS_SERVER_URL``) form a ring, and the proxies (see :mod:`cvmfs_pilot.client.proxies`) form
failover groups of load-balanced proxies. The current server and proxy are shared by all threads, so one
thread's failover spares the others the broken route.

How a failed attempt is classified:

* **Host failures** move every thread to the next server of the ring. They are HTTP 400, 404 and 5xx answers
  (the server lacks the file or is broken), and any failure of a DIRECT connection or of a ``file://`` URL.
* **Proxy failures** are everything else that fails through a proxy: the proxy cannot be reached, resolved or
  times out, the transfer breaks, any answer that the proxy itself generated (it has an ``X-Squid-Error``
  header, or a ``Proxy-Status`` header with an ``error=`` parameter; squid marks its 502/503/504 pages so), and
  any other error status. A proxy failure burns the proxy. The next proxy is chosen at random among the
  unburned ones of the group; when the group is used up, the next group takes over. Once a download has tried
  as many proxies as there are, its next proxy failure counts as a host failure, and the proxies start again
  from the first group.
* **Transient failures** (connection refused or reset, timeouts, truncated transfers) are first retried on the
  same route, ``max_retries`` times per download, after a backoff. The backoff starts at random in
  ``[0, backoff_init]`` s and doubles up to ``backoff_max`` s.
* **Bad data** (a content hash mismatch, an invalid zlib stream, an unexpected size, a body above the limit) is
  asked for once more, with ``Pragma: no-cache`` and ``Cache-Control: no-cache``, because a proxy may hold a
  corrupted copy. From then on the download sends these headers, and bad data counts as a failure of the
  route: of the proxy, or of the host when DIRECT. The real client always blames the host here. Blaming the
  proxy also cures a proxy that corrupts in transit; a damaged server copy still leads to the next host once
  every proxy has failed.

``CVMFS_PROXY_RESET_AFTER`` seconds after the proxies were first switched, the first group comes back with no
proxy burned. ``CVMFS_HOST_RESET_AFTER`` seconds after the server was first switched, the first server comes
back. A value of 0 means never.

The ``@fqrn@`` in server URLs is normally replaced by the configuration layer (§7); any left is replaced here.
Local I/O errors (writing ``out``) are not download failures: they propagate as they are.
"""

import copy
import errno
import logging
import random
import threading
import time
from collections import namedtuple

from ..cvmfs.compression import DecompressionError, StreamDecompressor
from ..cvmfs.hashing import new_hasher
from .proxies import DIRECT
from .transport import Transport, TransportError

log = logging.getLogger(__name__)

NO_CACHE_HEADERS = {"Pragma": "no-cache", "Cache-Control": "no-cache"}
HOST_ERROR_STATUSES = (400, 404)  # and every 5xx

Attempt = namedtuple("Attempt", "url proxy error")
Attempt.__doc__ = "One failed request: the URL, the proxy it went through (or DIRECT), and what went wrong."


class DownloadError(OSError):
    """No server or proxy delivered a file. An OSError with ``errno`` EIO, so file-system code answers EIO.

    ``attempts`` lists the failed :class:`Attempt` objects in order; the message lists them too."""

    def __init__(self, message, attempts):
        OSError.__init__(self, message)
        self.errno = errno.EIO
        self.attempts = attempts


class DownloadOptions(object):
    """Timeouts, retries and reset intervals in seconds; the defaults are the real client's (§7).

    The keyword arguments and attributes are the names in :attr:`PARAMETERS`, each set by the configuration
    parameter next to it. ``max_servers`` keeps only the first servers of the list; 0 keeps all.
    ``proxy_reset_after`` and ``host_reset_after`` of 0 never go back to the first proxy group or server."""

    PARAMETERS = (  # (attribute, configuration parameter, type, default)
        ("timeout", "CVMFS_TIMEOUT", float, 5.0),
        ("timeout_direct", "CVMFS_TIMEOUT_DIRECT", float, 10.0),
        ("max_retries", "CVMFS_MAX_RETRIES", int, 1),
        ("backoff_init", "CVMFS_BACKOFF_INIT", float, 2.0),
        ("backoff_max", "CVMFS_BACKOFF_MAX", float, 10.0),
        ("proxy_reset_after", "CVMFS_PROXY_RESET_AFTER", float, 300.0),
        ("host_reset_after", "CVMFS_HOST_RESET_AFTER", float, 1800.0),
        ("max_servers", "CVMFS_MAX_SERVERS", int, 0),
    )

    def __init__(self, **values):
        for name, parameter, kind, default in self.PARAMETERS:
            value = values.pop(name, default)
            if not isinstance(value, (int, float)) or value < 0 or (kind is int and value != int(value)):
                raise ValueError("{} must be a non-negative {}, not {!r}".format(
                    parameter, "integer" if kind is int else "number of seconds", value))
            setattr(self, name, kind(value))
        if values:
            raise TypeError("unknown download options: {}".format(", ".join(sorted(values))))
        if self.timeout == 0 or self.timeout_direct == 0:
            raise ValueError("CVMFS_TIMEOUT and CVMFS_TIMEOUT_DIRECT must be above 0 seconds")

    @classmethod
    def from_config(cls, config):
        """The options set by the ``CVMFS_*`` parameters of the mapping ``config`` (text values, as in the
        configuration files); parameters it lacks keep their defaults."""
        values = {}
        for name, parameter, kind, _ in cls.PARAMETERS:
            text = config.get(parameter)
            if text is None or not text.strip():
                continue
            try:
                values[name] = kind(text.strip())
            except ValueError:
                raise ValueError("{}={!r} is not {}".format(
                    parameter, text, "an integer" if kind is int else "a number of seconds"))
        return cls(**values)


class _Failure(Exception):
    """One attempt failed. ``blame_proxy``: a proxy failure rather than a host failure; ``transient``: the
    same route may be retried after a backoff; ``bad_data``: a no-cache request may cure it."""

    def __init__(self, message, blame_proxy, transient=False, bad_data=False):
        Exception.__init__(self, message)
        self.blame_proxy = blame_proxy
        self.transient = transient
        self.bad_data = bad_data


class _BadData(Exception):
    """Raised while streaming: the received bytes cannot be right."""


class Downloader(object):
    """Fetches files of the repository ``fqrn`` from ``servers`` (base URLs, ``http://`` or ``file://``)
    through ``proxy_groups`` (from :func:`cvmfs_pilot.client.proxies.proxy_groups`); safe for many threads.

    ``clock`` (monotonic seconds) times the reset intervals; tests pass a fake one.
    """

    def __init__(self, servers, proxy_groups, fqrn, options=None, clock=time.monotonic):
        self.fqrn = fqrn
        self.options = options or DownloadOptions()
        servers = [server.strip().replace("@fqrn@", fqrn).rstrip("/") for server in servers]
        if self.options.max_servers:
            servers = servers[:self.options.max_servers]
        if not servers:
            raise ValueError("no server to download {} from; set CVMFS_SERVER_URL".format(fqrn))
        for server in servers:
            if not server.startswith(("http://", "file://")):
                raise ValueError("CVMFS_SERVER_URL entry {!r} is neither an http:// nor a file:// URL".format(
                    server))
        if not proxy_groups or not all(proxy_groups):
            raise ValueError("proxy_groups must be non-empty groups of proxies; use [[DIRECT]] for none")
        self._servers = servers
        self._groups = [list(group) for group in proxy_groups]
        self._proxy_count = sum(len(group) for group in self._groups)
        self._clock = clock
        self._random = random.Random()
        self._transport = Transport()
        self._lock = threading.Lock()
        self._host_index = 0
        self._host_switched_at = None
        self._group_index = 0
        self._burned = set()
        self._proxy = self._random.choice(self._groups[0])
        self._proxies_switched_at = None

    @property
    def current_host(self):
        """The server base URL that downloads go to now."""
        with self._lock:
            self._apply_resets()
            return self._servers[self._host_index]

    @property
    def current_proxy(self):
        """The proxy that downloads go through now: DIRECT or ``http://host:port``."""
        with self._lock:
            self._apply_resets()
            return self._proxy

    def close(self):
        """Close the idle connections."""
        self._transport.close()

    def forked(self):
        """A Downloader with the same servers, proxies, options and current route for a child process after
        fork(): with its own connections and locks (those of this one belong to the parent)."""
        with self._lock:
            other = copy.copy(self)
            other._groups = [list(group) for group in self._groups]
            other._burned = set(self._burned)
        other._transport = Transport()
        other._lock = threading.Lock()
        other._random = random.Random()
        return other

    def fetch_bytes(self, path, max_size):
        """The content of the file ``path`` (relative to the repository base, e.g. ``.cvmfspublished``), at
        most ``max_size`` bytes; not verified (signed files are verified by their readers)."""
        def attempt(url, proxy, headers):
            chunks = []
            size = 0

            def on_block(block):
                nonlocal size
                size += len(block)
                if size > max_size:
                    raise _BadData("the file is larger than the limit of {} bytes".format(max_size))
                chunks.append(block)

            self._request(url, proxy, headers, on_block)
            return b"".join(chunks)

        return self._fetch(path, attempt)

    def fetch_object(self, content_hash, suffix, compression, out, expected_size=None):
        """Fetch the object ``content_hash`` + ``suffix`` into the binary file ``out``, decompressed.

        The stored bytes are verified against ``content_hash`` as they stream in; ``compression`` is
        :data:`cvmfs_pilot.cvmfs.compression.ZLIB` or ``NONE``; ``expected_size``, when given, is the
        decompressed size. ``out`` is truncated before each attempt, and left empty when the download fails:
        its content is verified only when this returns. Returns the number of bytes written.

        A body that cannot be decompressed, or expands too much, is still read to its end: when its hash is
        wrong too, the error says so (corrupted in transit or in storage) rather than blaming zlib."""
        path = content_hash.object_path(suffix)

        def attempt(url, proxy, headers):
            out.seek(0)
            out.truncate()
            hasher = new_hasher(content_hash.algorithm)
            decompressor = StreamDecompressor(compression)
            size = 0
            problem = None  # the first decompression or size error; writing stops there, hashing goes on

            def write(data):
                nonlocal size
                size += len(data)
                if expected_size is not None and size > expected_size:
                    raise _BadData("the object expands beyond its expected {} bytes".format(expected_size))
                out.write(data)

            def on_block(block):
                nonlocal problem
                hasher.update(block)
                if problem is None:
                    try:
                        write(decompressor.feed(block))
                    except (_BadData, DecompressionError) as error:
                        problem = error

            self._request(url, proxy, headers, on_block)
            try:
                if hasher.digest() != content_hash.digest:
                    raise _BadData("content hash mismatch: the received bytes hash to {}, not {}".format(
                        hasher.digest().hex(), content_hash.digest.hex()))
                if problem is not None:
                    raise problem
                write(decompressor.finish())
                if expected_size is not None and size != expected_size:
                    raise _BadData("the object has {} bytes, not the expected {}".format(size, expected_size))
            except (_BadData, DecompressionError) as error:
                raise _Failure(str(error), proxy != DIRECT, bad_data=True)
            out.flush()
            return size

        try:
            return self._fetch(path, attempt)
        except DownloadError:
            out.seek(0)
            out.truncate()
            raise

    def _fetch(self, path, attempt):
        """Run ``attempt(url, proxy, headers)`` along the routes until one returns; the failover loop."""
        attempts = []
        corrupted = False
        hosts_tried = proxies_tried = retries = 0
        backoff = 0.0
        headers = None
        while True:
            host_index, host, proxy = self._route()
            url = host + "/" + path
            if url.startswith("file:"):
                proxy = DIRECT
            try:
                return attempt(url, proxy, headers)
            except _Failure as failure:
                attempts.append(Attempt(url, proxy, str(failure)))
                log.debug("GET %s via %s failed: %s", url, proxy, failure)
                corrupted = corrupted or failure.bad_data
                if failure.bad_data and headers is None:
                    headers = NO_CACHE_HEADERS
                    continue
                if failure.transient and retries < self.options.max_retries:
                    retries += 1
                    backoff = self._next_backoff(backoff)
                    time.sleep(backoff)
                    continue
                if failure.blame_proxy:
                    proxies_tried += 1
                    if proxies_tried < self._proxy_count:
                        self._burn(proxy, failure)
                        continue
                    proxies_tried = 0
                    self._reset_proxies(proxy)
                hosts_tried += 1
                if hosts_tried >= len(self._servers):
                    raise DownloadError(self._give_up_message(path, attempts, corrupted), attempts)
                self._switch_host(host_index, failure)

    def _request(self, url, proxy, headers, on_block):
        """One GET whose 200 body goes to on_block; any failure becomes a :class:`_Failure`."""
        via_proxy = proxy != DIRECT
        timeout = self.options.timeout if via_proxy else self.options.timeout_direct
        try:
            response = self._transport.get(url, on_block, proxy=proxy, headers=headers, timeout=timeout)
        except TransportError as error:
            raise _Failure(str(error), via_proxy, transient=not error.name_resolution)
        except (_BadData, DecompressionError) as error:
            raise _Failure(str(error), via_proxy, bad_data=True)
        if response.status != 200:
            raise _Failure(_describe_status(response), via_proxy and _proxy_generated(response))

    def _route(self):
        """``(host_index, host, proxy)`` to use now."""
        with self._lock:
            self._apply_resets()
            return self._host_index, self._servers[self._host_index], self._proxy

    def _apply_resets(self):
        now = self._clock()
        switched_at = self._proxies_switched_at
        if switched_at is not None and 0 < self.options.proxy_reset_after <= now - switched_at:
            log.info("proxies: back to the first group after %g s", self.options.proxy_reset_after)
            self._first_proxy_group()
        switched_at = self._host_switched_at
        if switched_at is not None and 0 < self.options.host_reset_after <= now - switched_at:
            log.info("servers: back to %s after %g s", self._servers[0], self.options.host_reset_after)
            self._host_index = 0
            self._host_switched_at = None

    def _burn(self, proxy, failure):
        """Mark ``proxy`` failed and choose the next one, unless another thread has switched already."""
        with self._lock:
            if proxy != self._proxy:
                return
            self._burned.add(proxy)
            unburned = [p for p in self._groups[self._group_index] if p not in self._burned]
            if not unburned:
                self._group_index = (self._group_index + 1) % len(self._groups)
                self._burned = set()
                unburned = self._groups[self._group_index]
            self._proxy = self._random.choice(unburned)
            if self._proxies_switched_at is None:
                self._proxies_switched_at = self._clock()
            log.warning("proxy %s failed (%s); switching to %s", proxy, failure, self._proxy)

    def _reset_proxies(self, proxy):
        """Back to the first proxy group, every proxy having failed (unless another thread has switched)."""
        with self._lock:
            if proxy == self._proxy:
                self._first_proxy_group()

    def _first_proxy_group(self):
        self._group_index = 0
        self._burned = set()
        self._proxy = self._random.choice(self._groups[0])
        self._proxies_switched_at = None

    def _switch_host(self, host_index, failure):
        """Move to the server after ``host_index``, unless another thread has moved on already."""
        with self._lock:
            if host_index != self._host_index:
                return
            self._host_index = (host_index + 1) % len(self._servers)
            if self._host_index == 0:
                self._host_switched_at = None
            elif self._host_switched_at is None:
                self._host_switched_at = self._clock()
            log.warning("server %s failed (%s); switching to %s", self._servers[host_index], failure,
                        self._servers[self._host_index])

    def _next_backoff(self, previous):
        if previous == 0:
            return self._random.uniform(0, self.options.backoff_init)
        return min(2 * previous, self.options.backoff_max)

    def _give_up_message(self, path, attempts, corrupted):
        lines = ["no server or proxy delivered {}/{} ({} attempts):".format(self.fqrn, path, len(attempts))]
        for item in attempts:
            route = "directly" if item.proxy == DIRECT else "via proxy " + item.proxy
            lines.append("  {} {}: {}".format(item.url, route, item.error))
        lines.append("Check CVMFS_SERVER_URL and CVMFS_HTTP_PROXY, and that this node can reach the servers and "
                     "proxies (network, firewall, DNS).")
        if corrupted:
            lines.append("Wrong data that comes through every route points at a damaged copy on the server.")
        return "\n".join(lines)


def _proxy_generated(response):
    """Whether an error answer coming through a proxy is the proxy's (blame the proxy) or the server's."""
    if response.headers.get("X-Squid-Error"):
        return True
    if "error=" in (response.headers.get("Proxy-Status") or ""):
        return True
    return response.status not in HOST_ERROR_STATUSES and response.status < 500


def _describe_status(response):
    text = "HTTP {} {}".format(response.status, response.reason).rstrip()
    squid_error = response.headers.get("X-Squid-Error")
    if squid_error:
        text += " (X-Squid-Error: {})".format(squid_error)
    return text
