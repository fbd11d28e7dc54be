"""cvmfs_pilot.publish.serve: a real server on a loopback port, queried with http.client."""

import http.client
import threading

import pytest

from cvmfs_pilot.publish.serve import make_server

OBJECT = bytes(range(256)) * 4
SECRET = b"outside the served directory\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The port serving a repository-like directory, which has a secret file next to it."""
    tmp_path = tmp_path_factory.mktemp("serve")
    (tmp_path / "secret").write_bytes(SECRET)
    root = tmp_path / "repo"
    (root / "data" / "ab").mkdir(parents=True)
    (root / "data" / "ab" / "cdef").write_bytes(OBJECT)
    (root / ".cvmfspublished").write_bytes(b"Cabc\n--\nsig")
    (root / ".cvmfswhitelist").write_bytes(b"20240101\n")
    (root / "meta.json").write_bytes(b"{}")
    (root / ".cvmfsalt-cdef").symlink_to("data/ab/cdef")
    (root / "escape").symlink_to(tmp_path / "secret")
    (root / "data" / "up").symlink_to("../..")
    server = make_server(root, 0)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def fetch(port, path, method="GET", headers=None):
    """(status, headers as a dict, body) of one request on a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_get_sends_the_file_with_stratum_headers(served):
    status, headers, body = fetch(served, "/data/ab/cdef")
    assert (status, body) == (200, OBJECT)
    assert headers["Content-Length"] == str(len(OBJECT))
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Cache-Control"] == "max-age=259200"
    assert "ETag" not in headers and "Last-Modified" not in headers


@pytest.mark.parametrize("path", ["/.cvmfspublished", "/.cvmfswhitelist", "/meta.json", "/.cvmfsalt-cdef"])
def test_manifest_like_files_expire_after_61_seconds(served, path):
    status, headers, _ = fetch(served, path)
    assert status == 200
    assert headers["Cache-Control"] == "max-age=61"


def test_head_sends_headers_only(served):
    status, headers, body = fetch(served, "/data/ab/cdef", method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == str(len(OBJECT))


def test_query_string_is_ignored(served):
    assert fetch(served, "/data/ab/cdef?nocache=1")[2] == OBJECT


@pytest.mark.parametrize("header, first, last", [
    ("bytes=2-4", 2, 4),
    ("bytes=1000-", 1000, 1023),
    ("bytes=1000-99999", 1000, 1023),
    ("bytes=-3", 1021, 1023),
    ("bytes=-5000", 0, 1023),
])
def test_single_byte_range_gets_206(served, header, first, last):
    status, headers, body = fetch(served, "/data/ab/cdef", headers={"Range": header})
    assert status == 206
    assert body == OBJECT[first:last + 1]
    assert headers["Content-Range"] == f"bytes {first}-{last}/{len(OBJECT)}"
    assert headers["Content-Length"] == str(last - first + 1)


@pytest.mark.parametrize("header", ["bytes=1024-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_range_gets_416(served, header):
    status, headers, _ = fetch(served, "/data/ab/cdef", headers={"Range": header})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{len(OBJECT)}"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=4-2", "lines=1-2", "bytes=x-"])
def test_unusable_range_is_ignored(served, header):
    status, _, body = fetch(served, "/data/ab/cdef", headers={"Range": header})
    assert (status, body) == (200, OBJECT)


def test_connection_is_kept_alive_across_responses(served):
    connection = http.client.HTTPConnection("127.0.0.1", served, timeout=10)
    try:
        statuses = []
        for path in ["/.cvmfspublished", "/missing", "/data/ab/cdef"]:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
            if path == "/.cvmfspublished":
                first_socket = connection.sock
        assert statuses == [200, 404, 200]
        assert connection.sock is first_socket
    finally:
        connection.close()


@pytest.mark.parametrize("path", ["/missing", "/data/ab/missing", "/data/ab/cdef/x"])
def test_missing_file_gets_404(served, path):
    assert fetch(served, path)[0] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_other_methods_get_405(served, method):
    status, headers, _ = fetch(served, "/data/ab/cdef", method=method)
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", [
    "/../secret", "/data/../../secret", "/%2e%2e/secret", "/data/%2E%2E/%2e%2e/secret", "/..%2fsecret",
    "/escape", "/data/up/secret",
])
def test_paths_leaving_the_directory_are_refused(served, path):
    status, _, body = fetch(served, path)
    assert status == 403
    assert SECRET not in body


@pytest.mark.parametrize("path", ["/", "/data", "/data/", "/data/ab/"])
def test_directories_are_not_listed(served, path):
    status, _, body = fetch(served, path)
    assert status == 403
    assert b"cdef" not in body


def test_requests_do_not_write_to_stderr(served, capfd):
    for path in ["/data/ab/cdef", "/missing", "/../secret"]:
        fetch(served, path)
    assert capfd.readouterr().err == ""


def test_serving_a_missing_directory_fails_clearly(tmp_path):
    with pytest.raises(NotADirectoryError, match="cannot serve .*missing: not a directory"):
        make_server(tmp_path / "missing", 0)
