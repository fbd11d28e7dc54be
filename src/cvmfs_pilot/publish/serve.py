"""A static HTTP server for repository directories, for demos and tests (for production see docs/nginx.md).

It answers like a Stratum server (cvmfs-format.md §1):

* GET and HEAD only: other standard methods get 405, unknown ones 501;
* files only: a directory gets 403 (no listings); a path that leaves the served directory gets 403, also through
  a symbolic link, while links that stay inside (``.cvmfsalt-*`` -> ``data/...``) are followed;
* ``Cache-Control: max-age=61`` for names starting with ``.cvmfs`` and for ``*.json`` (they change with each
  publish), ``max-age=259200`` (3 days) for everything else (content-addressed objects never change);
  no ETag and no Last-Modified;
* every file as ``application/octet-stream``: the CernVM-FS client ignores the type;
* Content-Length always; single byte ranges (206, or 416 with ``Content-Range: bytes */SIZE``), used for
  external files; a multi-range request gets the whole file;
* HTTP/1.1 keep-alive, one thread per connection, idle connections closed after IDLE_TIMEOUT.

Requests and errors are logged to this module's logger at DEBUG level, unexpected failures with their traceback.

    server = make_server("/srv/cvmfs", 8000)       # port 0 picks a free one: server.server_address[1]
    try:
        server.serve_forever()                      # server.shutdown() from another thread stops it
    finally:
        server.server_close()
"""

import logging
import os
import re
import stat
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

log = logging.getLogger(__name__)

SHORT_MAX_AGE = 61  # seconds
LONG_MAX_AGE = 3 * 24 * 3600
CONTENT_TYPE = "application/octet-stream"
IDLE_TIMEOUT = 60  # seconds
BYTE_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)


def max_age(url_path):
    """Seconds a response for url_path may be cached."""
    name = url_path.rpartition("/")[2]
    return SHORT_MAX_AGE if name.startswith(".cvmfs") or name.endswith(".json") else LONG_MAX_AGE


def requested_range(header, size):
    """The (first, last) byte positions a Range header asks for; None to send everything, () if unsatisfiable.

    Only one byte range is honoured; a malformed, inverted or multi-range header is ignored, as RFC 9110 allows.
    """
    match = BYTE_RANGE.fullmatch(header) if header else None
    if not match or match.groups() == ("", ""):
        return None
    first_text, last_text = match.groups()
    if not first_text:  # "-N": the last N bytes
        length = min(int(last_text), size)
        return (size - length, size - 1) if length else ()
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None
    if first >= size:
        return ()
    return first, min(int(last_text), size - 1) if last_text else size - 1


class StaticFileHandler(BaseHTTPRequestHandler):
    """Answers one connection's requests with files under the server's root."""

    protocol_version = "HTTP/1.1"
    server_version = "cvmfs-pilot"
    timeout = IDLE_TIMEOUT

    def do_GET(self):
        self._send_file(with_body=True)

    def do_HEAD(self):
        self._send_file(with_body=False)

    def _refuse_method(self):
        self.close_connection = True  # a request body may follow, unread
        self._send_status(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse_method

    def _send_file(self, with_body):
        url_path = unquote(self.path.partition("?")[0], errors="surrogateescape")
        target = self._file_for(url_path)
        if isinstance(target, HTTPStatus):
            self._send_status(target)
            return
        try:
            file = open(target, "rb")
        except OSError as exc:
            self._send_status(HTTPStatus.FORBIDDEN if isinstance(exc, PermissionError) else HTTPStatus.NOT_FOUND)
            return
        with file:
            size = os.fstat(file.fileno()).st_size
            span = requested_range(self.headers.get("Range"), size)
            if span == ():
                self._send_status(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, {"Content-Range": f"bytes */{size}"})
                return
            first, last = span or (0, size - 1)
            length = last - first + 1
            self.send_response(HTTPStatus.PARTIAL_CONTENT if span else HTTPStatus.OK)
            if span:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Cache-Control", f"max-age={max_age(url_path)}")
            self.end_headers()
            if with_body and length and self.connection.sendfile(file, first, length) != length:
                self.close_connection = True  # the file shrank while being sent: the length we announced is wrong

    def _file_for(self, url_path):
        """The regular file url_path names under the root, or the HTTPStatus to answer instead."""
        if not url_path.startswith("/") or "\0" in url_path:
            return HTTPStatus.BAD_REQUEST
        root = self.server.root
        target = (root / url_path.lstrip("/")).resolve()
        if not target.is_relative_to(root):
            return HTTPStatus.FORBIDDEN
        try:
            mode = target.stat().st_mode
        except OSError:
            return HTTPStatus.NOT_FOUND
        if stat.S_ISDIR(mode):
            return HTTPStatus.FORBIDDEN
        return target if stat.S_ISREG(mode) else HTTPStatus.NOT_FOUND

    def _send_status(self, status, headers=None):
        """A response with no file: the status line as a short text body."""
        body = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, template, *args):
        log.debug("%s %s", self.address_string(), template % args)


class StaticFileServer(ThreadingHTTPServer):
    """Serves the files under root, an absolute path with symbolic links resolved."""

    def __init__(self, root, address):
        self.root = root
        super().__init__(address, StaticFileHandler)

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("%s went away: %s", client_address, sys.exc_info()[1])
        else:
            log.exception("failed to answer %s", client_address)


def make_server(directory, port, bind="127.0.0.1"):
    """A StaticFileServer for directory, listening on bind (an IPv4 address) and port (0: any free port)."""
    root = Path(directory).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"cannot serve {directory}: not a directory; give the directory to publish")
    return StaticFileServer(root, (bind, port))
