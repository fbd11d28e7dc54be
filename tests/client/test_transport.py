"""cvmfs_pilot.client.transport: GETs over kept-alive connections, redirects, ranges, file:// URLs, errors."""

import pytest

from cvmfs_pilot.client.proxies import DIRECT
from cvmfs_pilot.client.transport import BLOCK_SIZE, MAX_REDIRECTS, Transport, TransportError
from support.http_faults import ContentServer, ForwardProxy, closed_port

BODY = bytes(range(256)) * 1000  # several blocks


@pytest.fixture
def transport():
    transport = Transport()
    yield transport
    transport.close()


def get(transport, url, **kwargs):
    """(Response, body, the sizes of the blocks passed on)."""
    blocks = []
    response = transport.get(url, blocks.append, **kwargs)
    return response, b"".join(blocks), [len(block) for block in blocks]


def test_a_body_arrives_in_blocks_and_the_connection_is_reused(transport):
    with ContentServer({"/a": BODY, "/b": b"b"}) as server:
        response, body, sizes = get(transport, server.url + "/a")
        assert (response.status, body) == (200, BODY)
        assert max(sizes) <= BLOCK_SIZE and len(sizes) > 1
        assert response.headers.get("content-length") == str(len(BODY))
        assert get(transport, server.url + "/missing")[0].status == 404
        assert get(transport, server.url + "/b")[1] == b"b"
        assert server.connections == 1


def test_a_connection_the_server_closed_while_idle_is_replaced(transport):
    with ContentServer({"/a": BODY}) as server:
        get(transport, server.url + "/a")
        server.drop_connections()
        assert get(transport, server.url + "/a")[1] == BODY
        assert server.connections == 2


def test_through_a_proxy_the_request_line_has_the_absolute_url(transport):
    with ContentServer({"/a?x=1": BODY}) as server, ForwardProxy() as proxy:
        response, body, _ = get(transport, server.url + "/a?x=1#fragment", proxy=proxy.url)
        assert (response.status, body) == (200, BODY)
        assert proxy.requests[0].target == server.url + "/a?x=1"
        assert proxy.requests[0].headers["Host"] == server.url[len("http://"):]
        assert server.requests[0].target == "/a?x=1"


def test_extra_headers_replace_the_defaults_by_name_and_ranges_are_asked_for(transport):
    with ContentServer({"/a": BODY}) as server:
        get(transport, server.url + "/a", headers={"pragma": "no-cache", "X-Extra": "1"}, byte_range=(0, 99))
        headers = server.requests[0].headers
    assert headers.get_all("Pragma") == ["no-cache"]
    assert (headers["X-Extra"], headers["Range"], headers["User-Agent"]) == ("1", "bytes=0-99", "cvmfs-pilot 0.1.0")


def test_same_scheme_redirects_are_followed_a_few_times(transport):
    with ContentServer({"/final": BODY}, redirects={"/one": "/two", "/two": "final", "/loop": "/loop",
                                                    "/elsewhere": "https://example.org/final"}) as server:
        response, body, _ = get(transport, server.url + "/one")
        assert (response.status, response.url, body) == (200, server.url + "/final", BODY)
        response, body, _ = get(transport, server.url + "/loop")
        assert (response.status, body) == (302, b"")
        assert len(server.requests) == 3 + MAX_REDIRECTS + 1
        response, body, _ = get(transport, server.url + "/elsewhere")
        assert (response.status, response.headers["Location"]) == (302, "https://example.org/final")


def test_file_urls_read_files_and_ranges(transport, tmp_path):
    (tmp_path / "a").write_bytes(BODY)
    response, body, _ = get(transport, f"file://{tmp_path}/a")
    assert (response.status, body) == (200, BODY)
    response, body, _ = get(transport, f"file://{tmp_path}/a", byte_range=(10, 70000))
    assert (response.status, body) == (206, BODY[10:70001])
    assert get(transport, f"file://{tmp_path}/missing")[0].status == 404
    with pytest.raises(TransportError, match="cannot open .*Is a directory"):
        get(transport, f"file://{tmp_path}")
    with pytest.raises(TransportError, match="file URLs on other hosts are not supported"):
        get(transport, "file://otherhost/a")


def test_network_errors_say_what_happened(transport):
    with closed_port() as port:
        with pytest.raises(TransportError, match=f"^127.0.0.1:{port}: connection refused$") as refused:
            get(transport, f"http://127.0.0.1:{port}/a")
        assert not refused.value.name_resolution
        with pytest.raises(TransportError, match=f"127.0.0.1:{port}: connection refused"):
            get(transport, "http://unused.invalid/a", proxy=f"http://127.0.0.1:{port}")
    with ContentServer(delay=5) as slow:
        with pytest.raises(TransportError, match="no answer within 0.2 s"):
            get(transport, slow.url + "/a", timeout=0.2)
    with pytest.raises(TransportError, match="cannot resolve the host name") as unresolved:
        get(transport, "http://name.invalid/a", proxy=DIRECT)
    assert unresolved.value.name_resolution
    with pytest.raises(TransportError, match="only http:// and file:// URLs"):
        get(transport, "https://example.org/a")


def test_a_truncated_body_is_an_error(transport):
    with ContentServer({"/a": BODY}, truncate=True) as server:
        with pytest.raises(TransportError, match=f"closed after {len(BODY) // 2} of {len(BODY)} body bytes"):
            get(transport, server.url + "/a")


def test_an_exception_of_the_receiver_drops_the_connection(transport):
    def refuse(block):
        raise ValueError("no, thanks")

    with ContentServer({"/a": BODY}) as server:
        with pytest.raises(ValueError, match="no, thanks"):
            transport.get(server.url + "/a", refuse)
        assert get(transport, server.url + "/a")[1] == BODY
        assert server.connections == 2
