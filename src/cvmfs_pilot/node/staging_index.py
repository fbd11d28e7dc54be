"""A staging area's ``index.json`` on the node: parsing it (after its SHA-256 was checked) and choosing the
distribution for this node. See docs/staging.md."""

import collections
import json
import re

FORMAT = 1
CVMFS2, PYTHON = "cvmfs2", "python"
ENGINES = (CVMFS2, PYTHON)
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
FIELDS = ("name", "engine", "source", "platform", "arch", "version")

Entry = collections.namedtuple("Entry", "name engine source platform arch version size sha256")
Entry.__doc__ = """One staged distribution: ``<name>.tar.gz`` has ``size`` bytes and SHA-256 ``sha256``."""


class StagingIndexError(ValueError):
    """The index is malformed, or has no distribution for this node."""


def is_sha256(text):
    return isinstance(text, str) and SHA256_HEX.match(text) is not None


def parse_index(data):
    """The entries of index.json bytes, validated (names safe as file names, hashes and sizes well-formed)."""
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StagingIndexError("index.json is not valid JSON: {}".format(exc))
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise StagingIndexError("index.json is not a staging index of format {} (format {!r})".format(
            FORMAT, record.get("format") if isinstance(record, dict) else None))
    distributions = record.get("distributions")
    if not isinstance(distributions, list):
        raise StagingIndexError("index.json has no list of distributions")
    entries = []
    for number, item in enumerate(distributions):
        where = "index.json distribution #{}".format(number)
        if not isinstance(item, dict):
            raise StagingIndexError("{}: not an object".format(where))
        for key in FIELDS:
            if not isinstance(item.get(key), str) or not item[key]:
                raise StagingIndexError("{}: missing or invalid {!r}".format(where, key))
        if not SAFE_NAME.match(item["name"]):
            raise StagingIndexError("{}: {!r} is not a valid distribution name".format(where, item["name"]))
        size = item.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise StagingIndexError("{} ({}): missing or invalid size".format(where, item["name"]))
        if not is_sha256(item.get("sha256")):
            raise StagingIndexError("{} ({}): missing or invalid sha256".format(where, item["name"]))
        entries.append(Entry(item["name"], item["engine"], item["source"], item["platform"], item["arch"],
                             item["version"], size, item["sha256"]))
    return entries


def describe(entry):
    return "{}-{}-{}-{}".format(entry.engine, entry.source, entry.platform, entry.arch)


def _staged(entries):
    return ", ".join(describe(e) for e in entries) or "nothing"


def choose(entries, engine, source, platforms, arch):
    """The entry for this node. engine: cvmfs2, python or None (cvmfs2 when one fits, else python); source: the
    configuration wanted, or None when the index stages only one for the engine; platforms: those whose cvmfs2
    builds run here, best first (:func:`osinfo.build_platforms`); arch: ``uname -m``. StagingIndexError, listing
    what is staged, when nothing fits."""
    if engine is not None and engine not in ENGINES:
        raise StagingIndexError("unknown engine {!r}; use one of {}".format(engine, ", ".join(ENGINES)))
    if source is None:
        sources = sorted({e.source for e in entries if engine is None or e.engine == engine})
        if len(sources) != 1:
            raise StagingIndexError("give the source (--source): the staging area has {} ({})".format(
                "distributions of several sources" if sources else "no distributions", _staged(entries)))
        source = sources[0]
    platforms = list(platforms or ())
    cvmfs2 = sorted((e for e in entries if e.engine == CVMFS2 and e.source == source and e.arch == arch
                     and e.platform in platforms), key=lambda e: platforms.index(e.platform))
    python = [e for e in entries if e.engine == PYTHON and e.source == source]
    if engine in (None, CVMFS2) and cvmfs2:
        return cvmfs2[0]
    if engine in (None, PYTHON) and python:
        return python[0]
    wanted = "engine {}, source {}".format(engine or "cvmfs2 or python", source)
    if engine != PYTHON:
        wanted += ", platform {}, arch {}".format(" or ".join(platforms) or "(none known for this OS)", arch)
    raise StagingIndexError("no staged distribution fits this node ({}); the staging area has: {}".format(
        wanted, _staged(entries)))
