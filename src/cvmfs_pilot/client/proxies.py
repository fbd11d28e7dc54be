"""Proxy settings of the client (§7): ``CVMFS_HTTP_PROXY``, ``CVMFS_FALLBACK_PROXY`` and PAC files.

The result is a list of failover groups, in order. Each group is a list of load-balanced proxies, and each proxy
is either :data:`DIRECT` (no proxy) or a canonical ``http://host:port`` URL.

* ``;`` separates groups and ``|`` separates the proxies of a group. An entry is ``DIRECT`` (in any case),
  ``host:port`` or ``http://host:port``. IPv6 addresses go in brackets: ``[::1]:3128``.
* A group that is exactly ``auto`` is replaced by the groups that the PAC files of ``CVMFS_PAC_URLS`` name. The
  first PAC URL that gives proxies wins. If no PAC URL gives any, the ``auto`` group is dropped with a warning;
  a configuration left without any group is an error.
* ``CVMFS_FALLBACK_PROXY`` groups come after the regular ones. DIRECT is never a fallback proxy and is removed
  from them. When fallback proxies remain, DIRECT is removed from the regular groups as well, as the real client
  does. Groups left empty are dropped.

PAC files are JavaScript, and **this module does not run JavaScript**. It reads the string literals that the
script returns (``return "PROXY a:3128; PROXY b:3128; DIRECT";``) and uses the first one that names a proxy or
DIRECT, whatever the conditions in front of it. Each ``PROXY host:port`` or ``DIRECT`` entry of that string
becomes a failover group of its own, in order, as in PAC semantics. Other entry kinds (``SOCKS``, ``HTTPS``)
are skipped. A warning says which return was used.
"""

import logging
import re

DIRECT = "DIRECT"
AUTO = "auto"
DEFAULT_PAC_URLS = "http://wpad/wpad.dat"

log = logging.getLogger(__name__)

_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]+)$")

# JavaScript tokens, enough to find the string literals that follow ``return`` outside comments.
_JS_TOKEN = re.compile(r"""
      (?P<comment>//[^\n]*|/\*.*?\*/)
    | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    | (?P<word>[A-Za-z_$][A-Za-z0-9_$]*)
    | (?P<other>\S)
""", re.VERBOSE | re.DOTALL)
_JS_ESCAPE = re.compile(r"\\(.)")


class ProxyConfigError(ValueError):
    """A proxy setting cannot be used; the message names the setting and says what to change."""


def proxy_groups(http_proxy, fallback_proxy="", pac_urls=DEFAULT_PAC_URLS, fetch_pac=None):
    """The failover groups of the proxy settings (see the module docstring).

    ``fetch_pac(url) -> bytes`` fetches a PAC file and raises OSError on failure. It is needed only when
    ``http_proxy`` has an ``auto`` group.
    """
    if not http_proxy.strip():
        raise ProxyConfigError("CVMFS_HTTP_PROXY is empty; set it to the site's proxies "
                               "(e.g. 'http://squid1.example.org:3128|http://squid2.example.org:3128') "
                               "or to DIRECT to connect to the servers without a proxy")
    regular = []
    pac_problems = []
    for group in parse_groups(http_proxy, "CVMFS_HTTP_PROXY", allow_auto=True):
        if group != [AUTO]:
            regular.append(group)
            continue
        if fetch_pac is None:
            raise ValueError("CVMFS_HTTP_PROXY has an 'auto' group, but no fetch_pac function was given")
        groups, pac_problems = pac_groups(pac_urls, fetch_pac)
        if not groups:
            log.warning("CVMFS_HTTP_PROXY: ignoring 'auto': no PAC file named a proxy (%s)",
                        "; ".join(pac_problems))
        regular.extend(groups)

    fallback = parse_groups(fallback_proxy, "CVMFS_FALLBACK_PROXY") if fallback_proxy.strip() else []
    fallback, dropped = _without_direct(fallback)
    if dropped:
        log.warning("CVMFS_FALLBACK_PROXY: removing DIRECT; fallback proxies cannot be DIRECT")
    if fallback:
        regular, dropped = _without_direct(regular)
        if dropped:
            log.warning("CVMFS_HTTP_PROXY: removing DIRECT because CVMFS_FALLBACK_PROXY is set")

    groups = regular + fallback
    if not groups:
        detail = " (PAC files: {})".format("; ".join(pac_problems)) if pac_problems else ""
        raise ProxyConfigError("no proxy is left to use: CVMFS_HTTP_PROXY={!r}, CVMFS_FALLBACK_PROXY={!r}{}; "
                               "set CVMFS_HTTP_PROXY to working proxies or to DIRECT".format(
                                   http_proxy, fallback_proxy, detail))
    return groups


def parse_groups(value, setting, allow_auto=False):
    """Split a ``;``/``|`` proxy list into groups of canonical proxies; ``setting`` names it in errors."""
    groups = []
    for group_number, group_text in enumerate(value.split(";"), 1):
        if allow_auto and group_text.strip() == AUTO:
            groups.append([AUTO])
            continue
        group = []
        for entry in group_text.split("|"):
            if not entry.strip():
                raise ProxyConfigError("{}={!r} has an empty entry in group {}; remove the stray ';' or '|'"
                                       .format(setting, value, group_number))
            if entry.strip() == AUTO:
                raise ProxyConfigError("{}={!r}: 'auto' must be a group of its own (between ';'), not one of "
                                       "several proxies joined by '|'".format(setting, value))
            group.append(parse_proxy(entry, setting))
        groups.append(group)
    return groups


def parse_proxy(entry, setting):
    """``DIRECT`` or the canonical ``http://host:port`` of one proxy entry."""
    text = entry.strip()
    if text.upper() == DIRECT:
        return DIRECT
    scheme, separator, address = text.partition("://")
    if not separator:
        scheme, address = "http", text
    if scheme.lower() != "http":
        raise ProxyConfigError("{}: proxy {!r} has the unsupported scheme '{}://'; only http:// proxies and "
                               "DIRECT are supported".format(setting, text, scheme))
    address = address.rstrip("/")
    match = _HOST_PORT.match(address)
    if match is None:
        if ":" not in address.replace("::", ""):
            raise ProxyConfigError("{}: proxy {!r} has no port; write it as host:port, e.g. {}:3128".format(
                setting, text, address or "squid.example.org"))
        raise ProxyConfigError("{}: proxy {!r} is not host:port or http://host:port".format(setting, text))
    host, port = match.group(1).lower(), int(match.group(2))
    if not 0 < port < 65536:
        raise ProxyConfigError("{}: proxy {!r} has the invalid port {}".format(setting, text, port))
    return "http://{}:{}".format(host, port)


def pac_groups(pac_urls, fetch_pac):
    """``(groups, problems)``: the groups of the first PAC file in ``pac_urls`` (``;``-separated) that names
    proxies, and for each URL tried before it, why it gave none."""
    problems = []
    for url in (part.strip() for part in pac_urls.split(";")):
        if not url:
            continue
        try:
            text = fetch_pac(url).decode("utf-8", "replace")
        except OSError as error:
            problems.append("{}: {}".format(url, error))
            continue
        groups, used, total = parse_pac(text)
        if groups:
            log.warning("PAC file %s: JavaScript is not evaluated; using return string %d of %d, the first "
                        "that names proxies: %s", url, used, total,
                        ";".join(group[0] for group in groups))
            return groups, problems
        problems.append("{}: none of its {} return strings names a PROXY or DIRECT".format(url, total))
    if not problems:
        problems.append("CVMFS_PAC_URLS is empty")
    return [], problems


def parse_pac(text):
    """``(groups, used, total)``: the groups of the first return string of the PAC script ``text`` that names
    proxies (``[]`` if none does), its 1-based number ``used`` and the number ``total`` of returns of a single
    string literal. Returns of anything else (concatenations, variables) are not counted: nothing is run."""
    returns = _returned_strings(text)
    for number, value in enumerate(returns, 1):
        groups = [[proxy] for proxy in _pac_entries(value)]
        if groups:
            return groups, number, len(returns)
    return [], 0, len(returns)


def _returned_strings(text):
    """The values of the ``return "...";`` statements of a script, in order."""
    tokens = [(match.lastgroup, match.group()) for match in _JS_TOKEN.finditer(text)
              if match.lastgroup != "comment"]
    strings = []
    for i in range(len(tokens) - 1):
        if tokens[i] != ("word", "return") or tokens[i + 1][0] != "string":
            continue
        after = tokens[i + 2] if i + 2 < len(tokens) else None
        if after is None or after[1] in (";", "}"):
            strings.append(_JS_ESCAPE.sub(r"\1", tokens[i + 1][1][1:-1]))
    return strings


def _pac_entries(value):
    """The proxies of one PAC result string such as ``"PROXY a:3128; DIRECT"``; unusable entries skipped."""
    proxies = []
    for entry in value.split(";"):
        words = entry.split()
        kind = words[0].upper() if words else ""
        if kind == DIRECT and len(words) == 1:
            proxies.append(DIRECT)
        elif kind == "PROXY" and len(words) == 2:
            try:
                proxies.append(parse_proxy(words[1], "PAC entry"))
            except ProxyConfigError as error:
                log.warning("%s; skipping it", error)
    return proxies


def _without_direct(groups):
    """``(groups, dropped)``: the groups without DIRECT entries (empty groups dropped), and whether any was."""
    kept = [[proxy for proxy in group if proxy != DIRECT] for group in groups]
    dropped = any(DIRECT in group for group in groups)
    return [group for group in kept if group], dropped
