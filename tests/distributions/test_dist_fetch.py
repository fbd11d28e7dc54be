"""Downloads: resume with Range, retries, permanent errors, checksum and size checks, file:// URLs."""

import hashlib
import os
import re

import pytest

from cvmfs_pilot.dist.errors import FetchError
from cvmfs_pilot.dist.fetch import Fetcher
from cvmfs_pilot.dist.repodata import Checksum
from support.http_faults import ContentServer, _LoopbackServer, closed_port

BODY = os.urandom(3 * 1024 * 1024 + 17)
CHECKSUM = Checksum("sha256", hashlib.sha256(BODY).hexdigest())


class RangeServer(_LoopbackServer):
    """Serves BODY at /pkg.rpm with Range support. ``cuts``: how many answers to cut off after ``cut_at`` bytes
    (the connection then closes); ``failures``: how many requests to answer with 503 first."""

    def __init__(self, cuts=0, cut_at=1024 * 1024, failures=0, ranges=True):
        super().__init__()
        self.cuts = cuts
        self.cut_at = cut_at
        self.failures = failures
        self.ranges = ranges

    def respond(self, handler):
        if self.failures:
            self.failures -= 1
            handler.send(503, b"busy\n")
            return
        if handler.path != "/pkg.rpm":
            handler.send(404, b"not found\n")
            return
        match = re.match(r"bytes=(\d+)-$", handler.headers.get("Range", ""))
        start = int(match.group(1)) if match and self.ranges else 0
        body = BODY[start:]
        handler.send_response(206 if start else 200)
        if start:
            handler.send_header("Content-Range", "bytes {}-{}/{}".format(start, len(BODY) - 1, len(BODY)))
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if self.cuts:
            self.cuts -= 1
            handler.wfile.write(body[:self.cut_at])
            handler.close_connection = True
            return
        handler.wfile.write(body)


def fetcher():
    return Fetcher(attempts=3, backoff=0.01, timeout=30)


def test_an_interrupted_download_resumes_with_a_range_request(tmp_path):
    with RangeServer(cuts=2) as server:
        progress = []
        fetcher().download(server.url + "/pkg.rpm", str(tmp_path / "pkg"), CHECKSUM, len(BODY), progress.append)
        ranges = [r.headers.get("Range") for r in server.requests]
    assert (tmp_path / "pkg").read_bytes() == BODY and not (tmp_path / "pkg.part").exists()
    assert ranges == [None, "bytes=1048576-", "bytes=2097152-"]
    assert sum(progress) == len(BODY)


def test_a_server_without_ranges_starts_over(tmp_path):
    with RangeServer(cuts=1, ranges=False) as server:
        fetcher().download(server.url + "/pkg.rpm", str(tmp_path / "pkg"), CHECKSUM, len(BODY))
    assert (tmp_path / "pkg").read_bytes() == BODY


def test_server_errors_are_retried_and_missing_files_are_not(tmp_path):
    with RangeServer(failures=2) as server:
        fetcher().download(server.url + "/pkg.rpm", str(tmp_path / "pkg"), CHECKSUM, len(BODY))
        assert len(server.requests) == 3
    with RangeServer(failures=5) as server:
        with pytest.raises(FetchError, match=r"pkg.rpm: failed 3 times \(HTTP 503 Service Unavailable\)"):
            fetcher().download(server.url + "/pkg.rpm", str(tmp_path / "other"), CHECKSUM, len(BODY))
    with RangeServer() as server:
        with pytest.raises(FetchError, match="missing.rpm: HTTP 404 Not Found"):
            fetcher().download(server.url + "/missing.rpm", str(tmp_path / "missing"), CHECKSUM)
        assert len(server.requests) == 1
    with closed_port() as port:
        with pytest.raises(FetchError, match="failed 3 times.*Connection refused"):
            fetcher().read("http://127.0.0.1:{}/repodata/repomd.xml".format(port), 1000)


def test_a_checksum_mismatch_is_fetched_again_without_caches_then_refused(tmp_path):
    with ContentServer({"/pkg.rpm": BODY[:-1] + b"!"}) as server:
        with pytest.raises(FetchError, match="sha256 checksum mismatch .*twice.*it was not used"):
            fetcher().download(server.url + "/pkg.rpm", str(tmp_path / "pkg"), CHECKSUM, len(BODY))
        assert [r.no_cache for r in server.requests] == [False, True]
    assert not (tmp_path / "pkg").exists() and not (tmp_path / "pkg.part").exists()


def test_more_bytes_than_listed_are_refused(tmp_path):
    with ContentServer({"/pkg.rpm": BODY}) as server:
        with pytest.raises(FetchError, match="larger than the 1000 bytes its repository metadata lists"):
            fetcher().download(server.url + "/pkg.rpm", str(tmp_path / "pkg"), None, 1000)
        with pytest.raises(FetchError, match="larger than the 100 bytes expected"):
            fetcher().read(server.url + "/pkg.rpm", 100)


def test_file_urls(tmp_path):
    (tmp_path / "pkg.rpm").write_bytes(BODY)
    fetcher().download((tmp_path / "pkg.rpm").as_uri(), str(tmp_path / "copy"), CHECKSUM, len(BODY))
    assert (tmp_path / "copy").read_bytes() == BODY
    assert fetcher().read((tmp_path / "pkg.rpm").as_uri(), len(BODY)) == BODY
    with pytest.raises(FetchError, match="No such file"):
        fetcher().read((tmp_path / "absent").as_uri(), 10)
