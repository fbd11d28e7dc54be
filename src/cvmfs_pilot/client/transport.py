"""HTTP/1.1 GETs over persistent connections, directly or through a proxy, and reads of ``file://`` URLs.

This is transport only: it reports what happened (a :class:`Response`, or a :class:`TransportError`) and never
decides what to try next; that is :mod:`cvmfs_pilot.client.download`'s job.

* Connections are kept alive in a thread-safe pool keyed by the (host, port) they go to: the server's, or the
  proxy's. A request takes a connection out of the pool, so each connection serves one request at a time, and
  puts it back only when the response was read to its end and the server lets it stay open. A connection that
  fails, or whose response was abandoned, is closed. A request on a reused connection that the peer had closed
  meanwhile is sent again once on a new connection.
* Through a proxy the request line carries the absolute URL; the ``Host`` header is always the server's.
* Headers as the real client sends them: ``Connection: Keep-Alive``, ``User-Agent: cvmfs-pilot <version>`` and
  an empty ``Pragma:``; the caller's headers replace these by name.
* Redirects (301, 302, 303, 307, 308) are followed, at most :data:`MAX_REDIRECTS` times and only to the same
  scheme, since Stratum servers may redirect; any other redirect is returned as the response.
* ``file://`` URLs are read from the local file system; a missing file gives status 404. No proxy applies.
"""

import http.client
import socket
import threading
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

from .. import __version__
from .proxies import DIRECT

USER_AGENT = "cvmfs-pilot " + __version__
BLOCK_SIZE = 64 * 1024
MAX_IDLE_PER_ENDPOINT = 16  # idle connections kept per (host, port); more are closed
MAX_REDIRECTS = 3
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
DRAIN_LIMIT = 64 * 1024  # bodies of responses not passed on are read up to this size to keep the connection

# A reused connection that fails this way before any response arrived was closed by the peer while idle.
_STALE_CONNECTION_ERRORS = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class TransportError(OSError):
    """A request failed below HTTP: name resolution, connection, timeout, a broken or truncated response, or a
    local file that cannot be read. ``name_resolution`` is true when a host name could not be resolved."""

    def __init__(self, message, name_resolution=False):
        OSError.__init__(self, message)
        self.name_resolution = name_resolution


class Response(object):
    """What a GET received: the final ``url`` (after redirects), ``status``, ``reason`` and ``headers`` (an
    :class:`http.client.HTTPMessage`; ``headers.get(name)`` ignores case). The body has gone to the caller."""

    __slots__ = ("url", "status", "reason", "headers")

    def __init__(self, url, status, reason, headers):
        self.url = url
        self.status = status
        self.reason = reason
        self.headers = headers


class ConnectionPool(object):
    """Idle persistent connections by endpoint ``(host, port)``."""

    def __init__(self):
        self._idle = {}
        self._lock = threading.Lock()
        self._closed = False

    def take(self, endpoint, timeout):
        """``(connection, reused)``: an idle connection to endpoint, or a new (not yet connected) one."""
        with self._lock:
            idle = self._idle.get(endpoint)
            connection = idle.pop() if idle else None
        if connection is None:
            return http.client.HTTPConnection(endpoint[0], endpoint[1], timeout=timeout), False
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        return connection, True

    def give_back(self, endpoint, connection):
        with self._lock:
            idle = self._idle.setdefault(endpoint, [])
            if not self._closed and len(idle) < MAX_IDLE_PER_ENDPOINT:
                idle.append(connection)
                return
        connection.close()

    def close(self):
        """Close the idle connections; connections given back later are closed too."""
        with self._lock:
            self._closed = True
            connections = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for connection in connections:
            connection.close()


class Transport(object):
    """GETs of ``http://`` and ``file://`` URLs; safe to use from several threads at once."""

    def __init__(self):
        self._pool = ConnectionPool()

    def get(self, url, on_block, proxy=DIRECT, headers=None, byte_range=None, timeout=10.0):
        """GET ``url``, passing the body of a 2xx response to ``on_block(bytes)`` block by block.

        ``proxy`` is DIRECT or ``http://host:port``; ``headers`` a dict of extra request headers;
        ``byte_range`` an inclusive ``(first, last)`` byte range; ``timeout`` the seconds allowed for the
        connection and for each read. Returns the :class:`Response`; raises :class:`TransportError`.
        Exceptions of ``on_block`` propagate unchanged (the connection is then closed).
        """
        if url.startswith("file:"):
            return _get_file(url, on_block, byte_range)
        redirects = 0
        while True:
            response = self._get_http(url, on_block, proxy, headers, byte_range, timeout)
            target = _redirect_target(response)
            if target is None or redirects == MAX_REDIRECTS:
                return response
            url = target
            redirects += 1

    def close(self):
        """Close the idle connections."""
        self._pool.close()

    def _get_http(self, url, on_block, proxy, headers, byte_range, timeout):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise TransportError("cannot GET {}: only http:// and file:// URLs are supported".format(url))
        if proxy == DIRECT:
            endpoint = (parts.hostname, _port(parts, url))
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
        else:
            proxy_parts = urlsplit(proxy)
            endpoint = (proxy_parts.hostname, _port(proxy_parts, proxy))
            target = url.partition("#")[0]
        request_headers = _request_headers(parts.netloc, headers, byte_range)

        connection, reused = self._pool.take(endpoint, timeout)
        try:
            try:
                response = _exchange(connection, target, request_headers, endpoint, timeout)
            except TransportError as error:
                if not (reused and isinstance(error.__cause__, _STALE_CONNECTION_ERRORS)):
                    raise
                connection.close()
                connection = http.client.HTTPConnection(endpoint[0], endpoint[1], timeout=timeout)
                response = _exchange(connection, target, request_headers, endpoint, timeout)
            if 200 <= response.status < 300:
                _stream(response, on_block, timeout)
                complete = True
            else:
                complete = _drain(response, timeout)
        except BaseException:
            connection.close()
            raise
        if complete and not response.will_close:
            self._pool.give_back(endpoint, connection)
        else:
            connection.close()
        return Response(url, response.status, response.reason, response.msg)


def _port(parts, url):
    try:
        return parts.port or 80
    except ValueError:
        raise TransportError("{} has an invalid port".format(url))


def _request_headers(netloc, extra, byte_range):
    headers = [("Host", netloc), ("Connection", "Keep-Alive"), ("User-Agent", USER_AGENT), ("Pragma", "")]
    if byte_range is not None:
        headers.append(("Range", "bytes={}-{}".format(*byte_range)))
    if extra:
        replaced = set(name.lower() for name in extra)
        headers = [(name, value) for name, value in headers if name.lower() not in replaced]
        headers.extend(extra.items())
    return headers


def _exchange(connection, target, headers, endpoint, timeout):
    """Send the request and read the response head; network errors become TransportError (cause kept)."""
    try:
        connection.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        return connection.getresponse()
    except (OSError, http.client.HTTPException) as error:
        raise _transport_error(error, "{}:{}".format(*endpoint), timeout) from error


def _stream(response, on_block, timeout):
    """Pass the body to on_block and check its length against Content-Length."""
    expected = None
    if response.chunked is False and response.getheader("Content-Length") is not None:
        expected = response.length
    received = 0
    while True:
        block = _read(response, BLOCK_SIZE, timeout)
        if not block:
            break
        received += len(block)
        on_block(block)
    if expected is not None and received < expected:
        raise TransportError("the connection closed after {} of {} body bytes".format(received, expected))


def _drain(response, timeout):
    """Read and discard a body not passed on; True if it ended within DRAIN_LIMIT bytes."""
    received = 0
    while received <= DRAIN_LIMIT:
        block = _read(response, BLOCK_SIZE, timeout)
        if not block:
            return True
        received += len(block)
    return False


def _read(response, size, timeout):
    try:
        return response.read(size)
    except (OSError, http.client.HTTPException) as error:
        raise _transport_error(error, "reading the body", timeout) from error


def _transport_error(error, where, timeout):
    """A TransportError that says in plain words what went wrong ``where``."""
    if isinstance(error, TransportError):
        return error
    if isinstance(error, socket.gaierror):
        return TransportError("{}: cannot resolve the host name ({})".format(where, error.strerror),
                              name_resolution=True)
    if isinstance(error, socket.timeout):
        return TransportError("{}: no answer within {:g} s".format(where, timeout))
    if isinstance(error, ConnectionRefusedError):
        return TransportError("{}: connection refused".format(where))
    if isinstance(error, http.client.RemoteDisconnected):
        return TransportError("{}: the connection closed without a response".format(where))
    if isinstance(error, http.client.IncompleteRead):
        return TransportError("{}: the connection closed after {} bytes of a chunk".format(
            where, len(error.partial)))
    if isinstance(error, OSError) and error.strerror:
        return TransportError("{}: {}".format(where, error.strerror))
    return TransportError("{}: {}".format(where, error or type(error).__name__))


def _redirect_target(response):
    """The URL to follow a redirect to, or None when the response is not a redirect to follow."""
    if response.status not in REDIRECT_STATUSES:
        return None
    location = response.headers.get("Location")
    if not location:
        return None
    target = urljoin(response.url, location.strip())
    if urlsplit(target).scheme != urlsplit(response.url).scheme:
        return None
    return target


def _get_file(url, on_block, byte_range):
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise TransportError("cannot read {}: file URLs on other hosts are not supported".format(url))
    path = url2pathname(parts.path)
    try:
        stream = open(path, "rb")
    except (FileNotFoundError, NotADirectoryError):
        return Response(url, 404, "Not Found", http.client.HTTPMessage())
    except OSError as error:
        raise TransportError("cannot open {}: {}".format(path, error.strerror))
    with stream:
        status, reason, remaining = 200, "OK", None
        if byte_range is not None:
            status, reason, remaining = 206, "Partial Content", byte_range[1] - byte_range[0] + 1
            stream.seek(byte_range[0])
        while remaining is None or remaining > 0:
            try:
                block = stream.read(BLOCK_SIZE if remaining is None else min(BLOCK_SIZE, remaining))
            except OSError as error:
                raise TransportError("cannot read {}: {}".format(path, error.strerror))
            if not block:
                break
            if remaining is not None:
                remaining -= len(block)
            on_block(block)
    return Response(url, status, reason, http.client.HTTPMessage())
