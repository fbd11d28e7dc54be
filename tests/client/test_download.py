"""cvmfs_pilot.client.download: failover, retries and verification against real servers and proxies on loopback.

nginx and squid are the real programs (see support/nginx.py, support/squid.py); support/http_faults.py has the
servers and proxies that fail on demand.
"""

import contextlib
import errno
import threading
import time

import pytest

from cvmfs_pilot.client.download import DownloadError, DownloadOptions, Downloader
from cvmfs_pilot.client.proxies import DIRECT
from cvmfs_pilot.cvmfs.compression import NONE, ZLIB, compress
from cvmfs_pilot.cvmfs.hashing import SHA1, SHAKE128, SUFFIX_CATALOG, SUFFIX_NONE, ContentHash
from cvmfs_pilot.cvmfs.manifest import Manifest
from cvmfs_pilot.cvmfs.signed import split_signed
from support.http_faults import ContentServer, ForwardProxy, closed_port
from support.repo import make_keys, publish_tree

FQRN = "test.cern.ch"
CONTENT = b"".join(b"line %d of a file in a test repository\n" % i for i in range(3000))


def options(**overrides):
    """Download options with the timeouts and backoffs of a test: short."""
    values = dict(timeout=2.0, timeout_direct=2.0, backoff_init=0.01, backoff_max=0.02)
    values.update(overrides)
    return DownloadOptions(**values)


def stored_object(data, compression=ZLIB, algorithm=SHA1):
    """(ContentHash, stored bytes) of an object holding data."""
    stored = compress(data, compression)
    return ContentHash.of(stored, algorithm), stored


def store(root, data, compression=ZLIB, suffix=SUFFIX_NONE, algorithm=SHA1):
    """Write the object of data into ``root/<FQRN>`` (a directory nginx serves); returns its hash."""
    content_hash, stored = stored_object(data, compression, algorithm)
    path = root / FQRN / content_hash.object_path(suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(stored)
    return content_hash


def served(data, compression=ZLIB, suffix=SUFFIX_NONE):
    """(ContentHash, {request path: stored bytes}) for a ContentServer serving the object at /cvmfs/<FQRN>."""
    content_hash, stored = stored_object(data, compression)
    return content_hash, {f"/cvmfs/{FQRN}/{content_hash.object_path(suffix)}": stored}


def base(server_url):
    return f"{server_url}/cvmfs/@fqrn@"


def fetch(downloader, content_hash, out_path, compression=ZLIB, suffix=SUFFIX_NONE, expected_size=None):
    """Fetch an object into out_path: (bytes written as returned, the file's content)."""
    with open(out_path, "w+b") as out:
        written = downloader.fetch_object(content_hash, suffix, compression, out, expected_size)
    return written, out_path.read_bytes()


@contextlib.contextmanager
def downloading(servers, proxy_groups, **option_overrides):
    downloader = Downloader(servers, proxy_groups, FQRN, options(**option_overrides))
    try:
        yield downloader
    finally:
        downloader.close()


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def root(tmp_path):
    """A directory to publish the repository FQRN into, as ``root/<FQRN>``."""
    path = tmp_path / "www"
    (path / FQRN).mkdir(parents=True)
    return path


@pytest.mark.parametrize("compression, suffix, algorithm", [
    (ZLIB, SUFFIX_NONE, SHA1), (NONE, SUFFIX_NONE, SHA1), (ZLIB, SUFFIX_CATALOG, SHAKE128)])
def test_objects_come_directly_from_nginx(nginx, root, tmp_path, compression, suffix, algorithm):
    content_hash = store(root, CONTENT, compression, suffix, algorithm)
    with downloading([nginx(root) + "/@fqrn@"], [[DIRECT]]) as downloader:
        written, content = fetch(downloader, content_hash, tmp_path / "out", compression, suffix, len(CONTENT))
        assert (written, content) == (len(CONTENT), CONTENT)
        assert downloader.current_proxy == DIRECT
        assert downloader.current_host.endswith("/cvmfs/" + FQRN)


def test_a_published_repository_is_read_through_its_manifest(nginx, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "hello.txt").write_bytes(CONTENT)
    storage = tmp_path / "storage"
    publish_tree(source, storage / FQRN, FQRN, make_keys(tmp_path / "keys", FQRN))
    with downloading([nginx(storage) + "/@fqrn@"], [[DIRECT]]) as downloader:
        manifest = Manifest.parse(downloader.fetch_bytes(".cvmfspublished", 64 * 1024))
        written, catalog = fetch(downloader, manifest.root_catalog, tmp_path / "catalog", ZLIB, SUFFIX_CATALOG,
                                 manifest.root_catalog_size)
        whitelist = split_signed(downloader.fetch_bytes(".cvmfswhitelist", 64 * 1024))
    assert manifest.fqrn == FQRN
    assert catalog.startswith(b"SQLite format 3\0") and written == manifest.root_catalog_size
    assert b"N" + FQRN.encode() in whitelist.body


def test_fetch_bytes_refuses_a_file_above_the_limit(root, nginx):
    (root / FQRN / ".cvmfspublished").write_bytes(b"x" * 100)
    with downloading([nginx(root) + "/@fqrn@"], [[DIRECT]]) as downloader:
        assert downloader.fetch_bytes(".cvmfspublished", 100) == b"x" * 100
        with pytest.raises(DownloadError, match="larger than the limit of 99 bytes"):
            downloader.fetch_bytes(".cvmfspublished", 99)


def test_squid_serves_repeated_requests_from_its_cache(squid, tmp_path):
    content_hash, files = served(CONTENT)
    with ContentServer(files) as origin:
        proxy = squid()
        for attempt in range(2):
            with downloading([base(origin.url)], [[proxy]]) as downloader:
                assert fetch(downloader, content_hash, tmp_path / "out")[1] == CONTENT
                assert downloader.current_proxy == proxy
        assert len(origin.requests) == 1


@contextlib.contextmanager
def failing_server(kind, tmp_path, nginx):
    """The base URL of a server that fails: its port is closed, it answers 404 (nginx without the repository)
    or 500, or it answers too late."""
    if kind == "closed":
        with closed_port() as port:
            yield base(f"http://127.0.0.1:{port}")
    elif kind == "404":
        (tmp_path / "empty").mkdir()
        yield nginx(tmp_path / "empty") + "/@fqrn@"
    else:
        with ContentServer(status=500 if kind == "500" else None, delay=10 if kind == "slow" else 0) as server:
            yield base(server.url)


@pytest.mark.parametrize("kind", ["closed", "404", "500", "slow"])
def test_a_failing_server_makes_every_thread_move_to_the_next(kind, nginx, root, tmp_path):
    content_hash = store(root, CONTENT)
    good = nginx(root) + "/" + FQRN
    with failing_server(kind, tmp_path, nginx) as bad:
        with downloading([bad, good], [[DIRECT]], timeout_direct=0.5) as downloader:
            started = time.monotonic()
            assert fetch(downloader, content_hash, tmp_path / "out")[1] == CONTENT
            assert time.monotonic() - started < 3
            assert downloader.current_host == good
            assert fetch(downloader, content_hash, tmp_path / "again")[1] == CONTENT


def test_squid_errors_blame_squid_and_then_the_host(squid, nginx, root, tmp_path):
    """squid answers 503 with X-Squid-Error when the server is down: a proxy failure; with every proxy failed,
    the next host is tried, through the first proxy again."""
    content_hash = store(root, CONTENT)
    good = nginx(root) + "/" + FQRN
    proxy = squid()
    with closed_port() as port:
        with downloading([base(f"http://127.0.0.1:{port}"), good], [[proxy]]) as downloader:
            assert fetch(downloader, content_hash, tmp_path / "out")[1] == CONTENT
            assert (downloader.current_host, downloader.current_proxy) == (good, proxy)


@contextlib.contextmanager
def failing_proxy(kind):
    """The URL of a proxy that fails in one way."""
    if kind == "closed":
        with closed_port() as port:
            yield f"http://127.0.0.1:{port}"
    elif kind == "slow":
        with ContentServer(delay=10) as server:
            yield server.url
    else:
        status, headers = {"squid-503": (503, [("X-Squid-Error", "ERR_CONNECT_FAIL 111")]),
                           "proxy-status-502": (502, [("Proxy-Status", "proxy.example; error=connection_refused")]),
                           "403": (403, [])}[kind]
        with ForwardProxy(status=status, headers=headers) as proxy:
            yield proxy.url


@pytest.mark.parametrize("kind", ["closed", "slow", "squid-503", "proxy-status-502", "403"])
def test_a_failing_proxy_is_burned_and_the_next_group_takes_over(kind, tmp_path):
    content_hash, files = served(CONTENT)
    with ContentServer(files) as origin, ForwardProxy() as good, failing_proxy(kind) as bad:
        with downloading([base(origin.url), base(origin.url) + "/other"], [[bad], [good.url]],
                         timeout=0.5) as downloader:
            assert fetch(downloader, content_hash, tmp_path / "out")[1] == CONTENT
            assert downloader.current_proxy == good.url
            assert downloader.current_host == base(origin.url).replace("@fqrn@", FQRN)  # no host failure


def test_a_404_through_a_proxy_is_a_host_failure(tmp_path):
    content_hash, files = served(CONTENT)
    with ContentServer() as empty, ContentServer(files) as origin, ForwardProxy() as proxy:
        with downloading([base(empty.url), base(origin.url)], [[proxy.url]]) as downloader:
            assert fetch(downloader, content_hash, tmp_path / "out")[1] == CONTENT
            assert downloader.current_proxy == proxy.url
            assert downloader.current_host == base(origin.url).replace("@fqrn@", FQRN)
        assert len(empty.requests) == 1


def test_a_load_balanced_group_spreads_downloaders_and_skips_dead_members(tmp_path):
    content_hash, files = served(CONTENT)
    with ContentServer(files) as origin, ForwardProxy() as first, ForwardProxy() as second, \
            closed_port() as dead_port:
        dead = f"http://127.0.0.1:{dead_port}"
        for _ in range(30):
            with downloading([base(origin.url)], [[first.url, second.url, dead]], max_retries=0) as downloader:
                assert fetch(downloader, content_hash, tmp_path / "out")[1] == CONTENT
                assert downloader.current_proxy in (first.url, second.url)
        assert first.requests and second.requests


def test_with_every_proxy_dead_each_host_fails_and_the_error_lists_every_attempt(tmp_path):
    content_hash, files = served(CONTENT)
    with ContentServer(files) as one, ContentServer(files) as two, closed_port() as a, closed_port() as b:
        proxies = [f"http://127.0.0.1:{a}", f"http://127.0.0.1:{b}"]
        with downloading([base(one.url), base(two.url)], [proxies]) as downloader:
            with pytest.raises(DownloadError) as raised:
                fetch(downloader, content_hash, tmp_path / "out")
        assert not one.requests and not two.requests
    error = raised.value
    assert isinstance(error, OSError) and error.errno == errno.EIO
    # Host one: a proxy, the same again after a backoff (one retry per download), the other proxy;
    # then host two with both proxies.
    assert [attempt.url.split("/cvmfs/")[0] for attempt in error.attempts] == [one.url] * 3 + [two.url] * 2
    assert {attempt.proxy for attempt in error.attempts[:3]} == set(proxies)
    assert {attempt.proxy for attempt in error.attempts[3:]} == set(proxies)
    message = str(error)
    assert message.startswith(f"no server or proxy delivered {FQRN}/{content_hash.object_path()} (5 attempts):")
    assert f"{one.url}/cvmfs/{FQRN}/{content_hash.object_path()} via proxy {proxies[0]}: " \
           f"127.0.0.1:{a}: connection refused" in message
    assert "Check CVMFS_SERVER_URL and CVMFS_HTTP_PROXY" in message
    assert (tmp_path / "out").read_bytes() == b""


def test_with_every_proxy_dead_a_direct_group_still_works(tmp_path):
    content_hash, files = served(CONTENT)
    with ContentServer(files) as origin, closed_port() as a, closed_port() as b:
        with downloading([base(origin.url)], [[f"http://127.0.0.1:{a}", f"http://127.0.0.1:{b}"], [DIRECT]],
                         max_retries=0) as downloader:
            assert fetch(downloader, content_hash, tmp_path / "out")[1] == CONTENT
            assert downloader.current_proxy == DIRECT


@pytest.mark.parametrize("compression", [ZLIB, NONE])
def test_a_corrupted_cached_copy_is_fetched_again_with_no_cache(compression, tmp_path):
    content_hash, files = served(CONTENT, compression)
    with ContentServer(files) as origin, ForwardProxy(corrupt="unless-no-cache") as proxy:
        with downloading([base(origin.url)], [[proxy.url]]) as downloader:
            written, content = fetch(downloader, content_hash, tmp_path / "out", compression)
    assert (written, content) == (len(CONTENT), CONTENT)
    assert [request.no_cache for request in proxy.requests] == [False, True]
    assert proxy.requests[1].headers["Pragma"] == "no-cache"


@pytest.mark.parametrize("compression", [ZLIB, NONE])
def test_data_corrupted_on_every_route_is_an_error_and_leaves_nothing(compression, tmp_path):
    content_hash, files = served(CONTENT, compression)
    with ContentServer(files) as origin, ForwardProxy(corrupt="always") as proxy:
        with downloading([base(origin.url)], [[proxy.url]]) as downloader:
            with pytest.raises(DownloadError) as raised:
                fetch(downloader, content_hash, tmp_path / "out", compression)
    assert (tmp_path / "out").read_bytes() == b""
    assert [request.no_cache for request in proxy.requests] == [False, True]
    assert [attempt.error.split(":")[0] for attempt in raised.value.attempts] == ["content hash mismatch"] * 2
    assert str(raised.value).endswith("Wrong data that comes through every route points at a damaged copy on "
                                      "the server.")


def test_an_object_with_the_right_hash_but_no_valid_zlib_stream_is_an_error(root, nginx, tmp_path):
    content_hash = store(root, CONTENT, compression=NONE)
    with downloading([nginx(root) + "/@fqrn@"], [[DIRECT]]) as downloader:
        with pytest.raises(DownloadError, match="not a valid zlib stream"):
            fetch(downloader, content_hash, tmp_path / "out", compression=ZLIB)


def test_a_proxy_that_keeps_corrupting_is_burned(tmp_path):
    content_hash, files = served(CONTENT)
    with ContentServer(files) as origin, ForwardProxy(corrupt="always") as proxy:
        with downloading([base(origin.url)], [[proxy.url], [DIRECT]]) as downloader:
            assert fetch(downloader, content_hash, tmp_path / "out")[1] == CONTENT
            assert downloader.current_proxy == DIRECT


def test_a_server_with_a_corrupted_copy_is_a_host_failure(tmp_path):
    content_hash, files = served(CONTENT)
    damaged = {path: stored[:-1] + bytes([stored[-1] ^ 1]) for path, stored in files.items()}
    with ContentServer(damaged) as bad, ContentServer(files) as good:
        with downloading([base(bad.url), base(good.url)], [[DIRECT]]) as downloader:
            assert fetch(downloader, content_hash, tmp_path / "out")[1] == CONTENT
    assert [request.no_cache for request in bad.requests] == [False, True]
    assert [request.no_cache for request in good.requests] == [True]


def test_an_unexpected_size_is_an_error(root, nginx, tmp_path):
    content_hash = store(root, CONTENT)
    with downloading([nginx(root) + "/@fqrn@"], [[DIRECT]]) as downloader:
        with pytest.raises(DownloadError, match=f"has {len(CONTENT)} bytes, not the expected {len(CONTENT) + 1}"):
            fetch(downloader, content_hash, tmp_path / "out", expected_size=len(CONTENT) + 1)
        with pytest.raises(DownloadError, match=f"expands beyond its expected {len(CONTENT) - 1} bytes"):
            fetch(downloader, content_hash, tmp_path / "out", expected_size=len(CONTENT) - 1)
    assert (tmp_path / "out").read_bytes() == b""


def test_the_first_host_comes_back_after_the_host_reset_interval(tmp_path):
    content_hash, files = served(CONTENT)
    clock = FakeClock()
    with ContentServer(files, status=500) as first, ContentServer(files) as second:
        downloader = Downloader([base(first.url), base(second.url)], [[DIRECT]], FQRN,
                                options(host_reset_after=60), clock=clock)
        with contextlib.closing(downloader):
            fetch(downloader, content_hash, tmp_path / "out")
            assert downloader.current_host.startswith(second.url)
            clock.now += 59
            fetch(downloader, content_hash, tmp_path / "out")
            assert (len(first.requests), len(second.requests)) == (1, 2)
            clock.now += 1
            first.status = None
            assert fetch(downloader, content_hash, tmp_path / "out")[1] == CONTENT
            assert (len(first.requests), len(second.requests)) == (2, 2)
            assert downloader.current_host.startswith(first.url)


def test_the_first_proxy_group_comes_back_after_the_proxy_reset_interval(tmp_path):
    content_hash, files = served(CONTENT)
    clock = FakeClock()
    with ContentServer(files) as origin, ForwardProxy(status=503, headers=[("X-Squid-Error", "ERR")]) as first, \
            ForwardProxy() as second:
        downloader = Downloader([base(origin.url)], [[first.url], [second.url]], FQRN,
                                options(proxy_reset_after=30), clock=clock)
        with contextlib.closing(downloader):
            fetch(downloader, content_hash, tmp_path / "out")
            assert downloader.current_proxy == second.url
            clock.now += 29
            fetch(downloader, content_hash, tmp_path / "out")
            assert (len(first.requests), len(second.requests)) == (1, 2)
            clock.now += 1
            assert downloader.current_proxy == first.url
            first.status = None
            assert fetch(downloader, content_hash, tmp_path / "out")[1] == CONTENT
            assert (len(first.requests), len(second.requests)) == (2, 2)


def test_a_reset_interval_of_zero_never_goes_back(tmp_path):
    content_hash, files = served(CONTENT)
    clock = FakeClock()
    with ContentServer(status=404) as first, ContentServer(files) as second:
        downloader = Downloader([base(first.url), base(second.url)], [[DIRECT]], FQRN,
                                options(host_reset_after=0), clock=clock)
        with contextlib.closing(downloader):
            fetch(downloader, content_hash, tmp_path / "out")
            clock.now += 10 ** 6
            assert downloader.current_host.startswith(second.url)


@pytest.mark.parametrize("through_proxy", [False, True])
def test_connections_are_kept_alive(through_proxy, tmp_path):
    hashes = []
    files = {}
    for i in range(10):
        content_hash, more = served(CONTENT + b"%d" % i)
        hashes.append(content_hash)
        files.update(more)
    with ContentServer(files) as origin, ForwardProxy() as proxy:
        with downloading([base(origin.url)], [[proxy.url if through_proxy else DIRECT]]) as downloader:
            for content_hash in hashes:
                fetch(downloader, content_hash, tmp_path / "out")
            with pytest.raises(DownloadError):  # an error answer does not cost the connection either
                downloader.fetch_bytes("missing", 100)
            fetch(downloader, hashes[0], tmp_path / "out")
        assert (proxy if through_proxy else origin).connections == 1
        assert len((proxy if through_proxy else origin).requests) == 12


def test_a_forked_downloader_keeps_the_route_but_opens_its_own_connections(tmp_path):
    content_hash, files = served(CONTENT)
    with ContentServer(status=503) as broken, ContentServer(files) as origin:
        with downloading([base(broken.url), base(origin.url)], [[DIRECT]]) as downloader:
            assert fetch(downloader, content_hash, tmp_path / "out")[1] == CONTENT
            forked = downloader.forked()
            try:
                assert forked.current_host == downloader.current_host and forked.current_host.startswith(origin.url)
                assert fetch(forked, content_hash, tmp_path / "forked")[1] == CONTENT
                assert fetch(downloader, content_hash, tmp_path / "again")[1] == CONTENT
            finally:
                forked.close()
        assert len(broken.requests) == 1  # the forked one went to the working server at once
        assert origin.connections == 2  # one each: the idle connection of the first was not shared


def fetch_concurrently(downloader, hashes, tmp_path, threads=8):
    """Fetch every object from each of ``threads`` threads at once; the list of wrong results is returned."""
    wrong = []

    def work(number):
        for i, content_hash in enumerate(hashes):
            out = tmp_path / f"out-{number}-{i}"
            if fetch(downloader, content_hash, out)[1] != CONTENT + b"%d" % i:
                wrong.append(out)

    workers = [threading.Thread(target=work, args=(number,)) for number in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return wrong


def test_eight_threads_fetch_at_once_through_squid(squid, nginx, root, tmp_path):
    hashes = [store(root, CONTENT + b"%d" % i) for i in range(20)]
    with downloading([nginx(root) + "/@fqrn@"], [[squid()]]) as downloader:
        assert fetch_concurrently(downloader, hashes, tmp_path) == []


def test_eight_threads_share_connections_and_the_failover(tmp_path):
    hashes = []
    files = {}
    for i in range(20):
        content_hash, more = served(CONTENT + b"%d" % i)
        hashes.append(content_hash)
        files.update(more)
    with ContentServer(status=503) as broken, ContentServer(files) as origin:
        with downloading([base(broken.url), base(origin.url)], [[DIRECT]]) as downloader:
            assert fetch_concurrently(downloader, hashes, tmp_path) == []
            assert downloader.current_host.startswith(origin.url)
        assert 1 <= origin.connections <= 8
        assert len(broken.requests) <= 8  # the threads that asked before the switch, at most once each


def test_file_urls_are_read_locally_and_fail_over_like_servers(root, tmp_path):
    content_hash = store(root, CONTENT)
    (root / FQRN / ".cvmfspublished").write_bytes(b"manifest")
    servers = [f"file://{tmp_path}/nowhere/@fqrn@", f"file://{root}/@fqrn@"]
    with downloading(servers, [[DIRECT]]) as downloader:
        assert fetch(downloader, content_hash, tmp_path / "out")[1] == CONTENT
        assert downloader.fetch_bytes(".cvmfspublished", 100) == b"manifest"
        assert downloader.current_host == f"file://{root}/{FQRN}"


def test_requests_carry_the_headers_of_the_real_client(tmp_path):
    content_hash, files = served(CONTENT)
    with ContentServer(files) as origin, ForwardProxy() as proxy:
        for proxy_url in (DIRECT, proxy.url):
            with downloading([base(origin.url)], [[proxy_url]]) as downloader:
                fetch(downloader, content_hash, tmp_path / "out")
        direct, proxied = origin.requests[0], proxy.requests[0]
    url = f"{origin.url}/cvmfs/{FQRN}/{content_hash.object_path()}"
    assert direct.target == url[len(origin.url):] and proxied.target == url
    for request in (direct, proxied):
        assert request.headers["Host"] == origin.url[len("http://"):]
        assert request.headers["User-Agent"] == "cvmfs-pilot 0.1.0"
        assert request.headers["Connection"] == "Keep-Alive"
        assert request.headers["Pragma"] == ""
        assert "Cache-Control" not in request.headers


def test_server_list_handling(tmp_path):
    downloader = Downloader([" http://a/cvmfs/@fqrn@/", "file:///c"], [[DIRECT]], FQRN)
    assert downloader.current_host == f"http://a/cvmfs/{FQRN}"
    content_hash, files = served(CONTENT)
    with ContentServer(status=404) as first, ContentServer(files) as second:
        with downloading([base(first.url), base(second.url)], [[DIRECT]], max_servers=1) as downloader:
            with pytest.raises(DownloadError, match=r"\(1 attempts\)"):
                fetch(downloader, content_hash, tmp_path / "out")
        assert not second.requests
    with pytest.raises(ValueError, match="'https://a/cvmfs/x' is neither an http:// nor a file:// URL"):
        Downloader(["https://a/cvmfs/x"], [[DIRECT]], FQRN)
    with pytest.raises(ValueError, match="no server to download test.cern.ch from; set CVMFS_SERVER_URL"):
        Downloader([], [[DIRECT]], FQRN)
    with pytest.raises(ValueError, match="use \\[\\[DIRECT\\]\\] for none"):
        Downloader(["http://a"], [], FQRN)


def test_options_from_configuration():
    opts = DownloadOptions.from_config({"CVMFS_TIMEOUT": "3", "CVMFS_TIMEOUT_DIRECT": " 0.5 ",
                                        "CVMFS_MAX_RETRIES": "4", "CVMFS_BACKOFF_INIT": "", "CVMFS_MAX_SERVERS": "2"})
    assert (opts.timeout, opts.timeout_direct, opts.max_retries, opts.backoff_init, opts.backoff_max,
            opts.proxy_reset_after, opts.host_reset_after, opts.max_servers) == (3, 0.5, 4, 2, 10, 300, 1800, 2)
    with pytest.raises(ValueError, match="CVMFS_MAX_RETRIES='1.5' is not an integer"):
        DownloadOptions.from_config({"CVMFS_MAX_RETRIES": "1.5"})
    with pytest.raises(ValueError, match="CVMFS_TIMEOUT='soon' is not a number of seconds"):
        DownloadOptions.from_config({"CVMFS_TIMEOUT": "soon"})
    with pytest.raises(ValueError, match="CVMFS_HOST_RESET_AFTER must be a non-negative number"):
        DownloadOptions(host_reset_after=-1)
    with pytest.raises(ValueError, match="must be above 0 seconds"):
        DownloadOptions(timeout=0)
