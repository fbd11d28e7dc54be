"""tests/support/squid.py: a real squid caches on a loopback port and leaves nothing behind."""

import urllib.request
from pathlib import Path

from support.http_faults import ContentServer
from support.squid import SHARED_MEMORY, squid_proxy


def processes_mentioning(word):
    """Pids of the live processes whose command line contains word, from /proc."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if word.encode() in cmdline.read_bytes() and "Z" not in (cmdline.parent / "stat").read_text():
                pids.append(int(cmdline.parent.name))
        except OSError:  # the process ended while we looked
            continue
    return pids


def get_via(proxy, url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    with opener.open(url, timeout=10) as response:
        return response.headers, response.read()


def test_squid_caches_and_stops_completely(tmp_path):
    with ContentServer({"/a": b"cached\n"}) as origin:
        with squid_proxy(tmp_path) as proxy:
            service = "cvmfspilotsquid" + proxy.rsplit(":", 1)[1]
            assert len(processes_mentioning(service)) == 1
            assert get_via(proxy, origin.url + "/a")[1] == b"cached\n"
            headers, body = get_via(proxy, origin.url + "/a")
            assert body == b"cached\n" and "HIT" in headers["X-Cache"]
            assert len(origin.requests) == 1
        assert processes_mentioning(service) == []
        assert list(SHARED_MEMORY.glob(service + "-*")) == []
    assert "TCP_MEM_HIT/200" in (tmp_path / "access.log").read_text()
    assert "Exiting normally" in (tmp_path / "cache.log").read_text()
