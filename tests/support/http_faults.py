"""HTTP peers on loopback that misbehave on demand, for the download tests.

* :class:`ContentServer` serves files from a dict, or answers every request with a fixed error status, or
  stalls before answering (a slow server), or redirects.
* :class:`ForwardProxy` is a forwarding HTTP proxy that can flip a byte of every body it passes on, or only of
  those not requested with ``Cache-Control: no-cache`` (a proxy holding a corrupted copy), or answer every
  request itself with an error status and headers (as squid does when it fails).
* :func:`closed_port` holds a loopback port that refuses connections (bound, never listening).

The servers speak HTTP/1.1 with keep-alive, count the connections they accept and record every request.
Use them as context managers: leaving stops the server, closes its connections and joins its threads.
"""

import contextlib
import http.client
import http.server
import socket
import threading
from urllib.parse import urlsplit


class Request:
    """One request as a server saw it: the request-line target (absolute through a proxy) and headers."""

    def __init__(self, target, headers):
        self.target = target
        self.headers = headers

    @property
    def no_cache(self):
        return self.headers.get("Cache-Control") == "no-cache"


class _Server(http.server.ThreadingHTTPServer):
    """A threaded server that can close its open connections, so that stopping it never waits for clients."""

    def __init__(self, handler, owner):
        self.owner = owner
        self.closing = threading.Event()
        self._open = set()
        self._open_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler)

    def process_request(self, request, client_address):
        with self._open_lock:
            self._open.add(request)
            self.owner.connections += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def drop_connections(self):
        """Close the open connections (as a server does with idle keep-alive connections)."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls
    timeout = 30  # an idle keep-alive connection ends after this, should a test forget to close its client

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        owner = self.server.owner
        owner.requests.append(Request(self.path, self.headers))
        owner.respond(self)

    def send(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _LoopbackServer:
    """Base: runs a _Server in a thread. ``url``, ``port``, ``connections`` (accepted), ``requests``."""

    def __init__(self):
        self.connections = 0
        self.requests = []
        self._server = _Server(_Handler, self)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.closing.set()
        self._server.drop_connections()
        self._server.server_close()  # joins the connection threads
        self._thread.join()

    def drop_connections(self):
        """Close the open connections, as servers do with idle keep-alive connections; keep serving."""
        self._server.drop_connections()

    def stall(self, seconds):
        """Wait; stop waiting when the server stops. Returns whether the server is stopping."""
        return self._server.closing.wait(seconds)

    def respond(self, handler):
        raise NotImplementedError


class ContentServer(_LoopbackServer):
    """Serves ``files`` (request path -> bytes) with 200, anything else with 404.

    ``status``: answer every request with this error status instead. ``delay``: stall this many seconds before
    answering. ``redirects``: request path -> Location of a 302 answer. ``truncate``: send only the first half
    of each file, then close the connection. All can be changed while running.
    """

    def __init__(self, files=None, status=None, delay=0, redirects=None, truncate=False):
        super().__init__()
        self.files = dict(files or {})
        self.status = status
        self.delay = delay
        self.redirects = dict(redirects or {})
        self.truncate = truncate

    def respond(self, handler):
        if self.delay and self.stall(self.delay):
            return
        path = handler.path
        if self.status is not None:
            handler.send(self.status, b"failing on purpose\n")
        elif path in self.redirects:
            handler.send(302, headers=[("Location", self.redirects[path])])
        elif path in self.files and self.truncate:
            body = self.files[path]
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body[:len(body) // 2])
            handler.close_connection = True
        elif path in self.files:
            handler.send(200, self.files[path], [("Cache-Control", "max-age=259200")])
        else:
            handler.send(404, b"not found\n")


class ForwardProxy(_LoopbackServer):
    """A forwarding proxy. ``corrupt``: None (pass bodies on intact), ``"always"`` (flip a byte of every
    non-empty 200 body) or ``"unless-no-cache"`` (only when the request lacks ``Cache-Control: no-cache``).
    ``status`` and ``headers``: answer every request with this status and these headers instead of forwarding.
    """

    def __init__(self, corrupt=None, status=None, headers=()):
        super().__init__()
        self.corrupt = corrupt
        self.status = status
        self.headers = list(headers)

    def respond(self, handler):
        if self.status is not None:
            handler.send(self.status, b"proxy failing on purpose\n", self.headers)
            return
        target = urlsplit(handler.path)
        if target.scheme != "http":
            handler.send(400, b"absolute http:// URL expected\n")
            return
        upstream = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=10)
        try:
            path = target.path + ("?" + target.query if target.query else "")
            upstream.request("GET", path, headers={"Host": target.netloc})
            answer = upstream.getresponse()
            body = answer.read()
        except OSError:
            handler.send(502, b"upstream unreachable\n", [("X-Squid-Error", "ERR_CONNECT_FAIL 111")])
            return
        finally:
            upstream.close()
        request = self.requests[-1]
        if answer.status == 200 and body and (self.corrupt == "always" or
                                              (self.corrupt == "unless-no-cache" and not request.no_cache)):
            middle = len(body) // 2
            body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:]
        handler.send(answer.status, body)


@contextlib.contextmanager
def closed_port():
    """A loopback port bound by nobody who listens: connecting to it is refused."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]
