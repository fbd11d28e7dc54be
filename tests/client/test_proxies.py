"""cvmfs_pilot.client.proxies: CVMFS_HTTP_PROXY, CVMFS_FALLBACK_PROXY and PAC files."""

import logging

import pytest

from cvmfs_pilot.client.proxies import DIRECT, ProxyConfigError, parse_pac, proxy_groups

PAC_WITH_CONDITIONS = """\
// return "PROXY commented.example.org:1";
function FindProxyForURL(url, host) {
    /* return "PROXY block-comment.example.org:1"; */
    if (shExpMatch(url, "http://*.cern.ch/*")) return "SOCKS socks.example.org:1080";
    if (isInNet(myIpAddress(), "10.0.0.0", "255.0.0.0")) {
        return "PROXY Squid1.example.org:3128; PROXY squid2.example.org:3128; DIRECT";
    }
    return 'DIRECT';
}
"""


def pac_fetcher(files):
    """A fetch_pac function serving ``files`` (url -> text); other URLs fail like unreachable servers."""
    fetched = []

    def fetch(url):
        fetched.append(url)
        if url not in files:
            raise OSError(f"{url}: connection refused")
        return files[url].encode()

    fetch.fetched = fetched
    return fetch


@pytest.mark.parametrize("value, groups", [
    ("DIRECT", [[DIRECT]]),
    ("direct", [[DIRECT]]),
    ("http://squid.example.org:3128", [["http://squid.example.org:3128"]]),
    ("Squid.Example.org:3128/", [["http://squid.example.org:3128"]]),
    (" a:1 | b:2 ; c:3;DIRECT ", [["http://a:1", "http://b:2"], ["http://c:3"], [DIRECT]]),
    ("[::1]:3128|127.0.0.1:8080", [["http://[::1]:3128", "http://127.0.0.1:8080"]]),
])
def test_groups_keep_their_order_and_members(value, groups):
    assert proxy_groups(value) == groups


@pytest.mark.parametrize("value, message", [
    ("", "CVMFS_HTTP_PROXY is empty"),
    ("   ", "CVMFS_HTTP_PROXY is empty"),
    ("a:1;", "empty entry in group 2"),
    ("a:1||b:2", "empty entry in group 1"),
    ("squid.example.org", "has no port; write it as host:port, e.g. squid.example.org:3128"),
    ("http://[::1]", "has no port"),
    ("https://squid.example.org:3128", "unsupported scheme 'https://'"),
    ("socks5://squid.example.org:1080", "unsupported scheme 'socks5://'"),
    ("squid.example.org:31x8", "is not host:port"),
    ("squid.example.org:70000", "invalid port 70000"),
    ("a:1|auto", "'auto' must be a group of its own"),
])
def test_invalid_settings_are_refused_with_the_reason(value, message):
    with pytest.raises(ProxyConfigError, match="CVMFS_HTTP_PROXY") as error:
        proxy_groups(value)
    assert message in str(error.value)


def test_fallback_groups_come_last_and_remove_direct_everywhere(caplog):
    caplog.set_level(logging.WARNING)
    groups = proxy_groups("a:1|DIRECT;DIRECT;b:2", fallback_proxy="fb1:3|fb2:4;DIRECT")
    assert groups == [["http://a:1"], ["http://b:2"], ["http://fb1:3", "http://fb2:4"]]
    assert "removing DIRECT because CVMFS_FALLBACK_PROXY is set" in caplog.text
    assert "fallback proxies cannot be DIRECT" in caplog.text


def test_a_fallback_of_only_direct_leaves_the_regular_direct():
    assert proxy_groups("a:1;DIRECT", fallback_proxy="DIRECT") == [["http://a:1"], [DIRECT]]


def test_direct_alone_with_a_fallback_leaves_only_the_fallback():
    assert proxy_groups("DIRECT", fallback_proxy="fb:3128") == [["http://fb:3128"]]


def test_invalid_fallback_names_its_setting():
    with pytest.raises(ProxyConfigError, match="CVMFS_FALLBACK_PROXY: proxy 'fb' has no port"):
        proxy_groups("DIRECT", fallback_proxy="fb")


def test_auto_takes_the_groups_of_the_first_pac_file_that_names_proxies(caplog):
    caplog.set_level(logging.WARNING)
    fetch = pac_fetcher({"http://wpad-b/wpad.dat": PAC_WITH_CONDITIONS})
    groups = proxy_groups("site:3128;auto;DIRECT", pac_urls="http://wpad-a/wpad.dat; http://wpad-b/wpad.dat",
                          fetch_pac=fetch)
    assert groups == [["http://site:3128"], ["http://squid1.example.org:3128"],
                      ["http://squid2.example.org:3128"], [DIRECT], [DIRECT]]
    assert fetch.fetched == ["http://wpad-a/wpad.dat", "http://wpad-b/wpad.dat"]
    assert "JavaScript is not evaluated" in caplog.text
    assert "return string 2 of 3" in caplog.text


def test_default_pac_url_is_wpad():
    fetch = pac_fetcher({"http://wpad/wpad.dat": 'function FindProxyForURL(u, h) { return "PROXY w:1"; }'})
    assert proxy_groups("auto", fetch_pac=fetch) == [["http://w:1"]]


def test_auto_without_any_usable_pac_file_is_dropped_or_an_error(caplog):
    fetch = pac_fetcher({"http://wpad/none.dat": 'function FindProxyForURL(u, h) { return "SOCKS s:1"; }'})
    urls = "http://wpad/missing.dat;http://wpad/none.dat"
    caplog.set_level(logging.WARNING)
    assert proxy_groups("auto;DIRECT", pac_urls=urls, fetch_pac=fetch) == [[DIRECT]]
    assert "ignoring 'auto'" in caplog.text
    with pytest.raises(ProxyConfigError) as error:
        proxy_groups("auto", pac_urls=urls, fetch_pac=fetch)
    assert "http://wpad/missing.dat: http://wpad/missing.dat: connection refused" in str(error.value)
    assert "http://wpad/none.dat: none of its 1 return strings names a PROXY or DIRECT" in str(error.value)


@pytest.mark.parametrize("script, groups, used, total", [
    ('function FindProxyForURL(url, host) { return "PROXY a:3128; PROXY b:3128; DIRECT"; }',
     [["http://a:3128"], ["http://b:3128"], [DIRECT]], 1, 1),
    (PAC_WITH_CONDITIONS, [["http://squid1.example.org:3128"], ["http://squid2.example.org:3128"], [DIRECT]],
     2, 3),
    # Without the semicolon before the closing brace, in lower case, with an escaped quote elsewhere.
    ('function FindProxyForURL(url, host) { if (host == "a\\"b") return "proxy x:1"\n}', [["http://x:1"]], 1, 1),
    # Expressions are not evaluated: the concatenation is skipped, the plain literal after it is used.
    ('function FindProxyForURL(url, host) { if (x) return "PROXY " + host + ":1"; return "PROXY y:2;"; }',
     [["http://y:2"]], 1, 1),
    # A PROXY entry without a port is skipped, as are HTTPS and SOCKS entries.
    ('function FindProxyForURL(url, host) { return "PROXY noport; HTTPS h:443; SOCKS5 s:1; DIRECT"; }',
     [[DIRECT]], 1, 1),
    ("function FindProxyForURL(url, host) { return proxy; }", [], 0, 0),
    ("", [], 0, 0),
])
def test_pac_parsing(script, groups, used, total):
    assert parse_pac(script) == (groups, used, total)


def test_auto_needs_a_fetch_function():
    with pytest.raises(ValueError, match="no fetch_pac function"):
        proxy_groups("auto")
