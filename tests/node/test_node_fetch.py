"""Fetching a client distribution on demand (node fetch): a real staging area, built by the server tier from the
stand-in mirror, served by nginx or file://; the node tier downloads, verifies, unpacks and caches it."""

import glob
import hashlib
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from cvmfs_pilot.dist.fetch import Fetcher
from cvmfs_pilot.dist.runner import Request, build_staging
from cvmfs_pilot.node import cli, dist_fetch, safe_extract, staging_index
from cvmfs_pilot.node.dist_fetch import Downloader, FetchError
from cvmfs_pilot.node.staging_index import StagingIndexError
from support.nginx import nginx_serving
from support.yum import build_mirror, mirrored_definitions

SRC = Path(__file__).resolve().parents[2] / "src"
PYTHON36 = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.6*/bin/python3.6")))[:1]
NODE_PYTHON = PYTHON36[0] if PYTHON36 else "/usr/bin/python3"


@pytest.fixture(scope="module")
def built_staging(tmp_path_factory):
    """A staging area for source none on el9-x86_64 (cvmfs2 and python engines), built once per module."""
    mirror = tmp_path_factory.mktemp("mirror")
    build_mirror(mirror, tmp_path_factory.mktemp("rpmbuild"))
    staging = tmp_path_factory.mktemp("built") / "staging"
    with nginx_serving(mirror, tmp_path_factory.mktemp("mirror-nginx")) as base_url:
        upstream = mirrored_definitions(base_url, tmp_path_factory.mktemp("upstream") / "upstream.json")
        build_staging(staging, Request(("none",), ("el9-x86_64",), str(upstream)),
                      fetcher=Fetcher(attempts=2, backoff=0.01, timeout=30))
    return staging


class Area(object):
    """A test's own copy of the staging area, below tmp_path/srv/staging."""

    def __init__(self, root):
        self.root = root
        self.index_bytes = (root / "index.json").read_bytes()
        self.sha256 = hashlib.sha256(self.index_bytes).hexdigest()
        self.entries = json.loads(self.index_bytes.decode())["distributions"]

    def entry(self, engine):
        return next(e for e in self.entries if e["engine"] == engine)

    @property
    def file_url(self):
        return self.root.as_uri() + "/"


@pytest.fixture
def area(built_staging, tmp_path):
    root = tmp_path / "srv" / "staging"
    shutil.copytree(str(built_staging), str(root), symlinks=True)
    return Area(root)


def quick(mirrors):
    return Downloader(mirrors, attempts=2, backoff=0.01, timeout=10)


def fetch(area_or_urls, sha256, cache, engine="python", **kwargs):
    urls = [area_or_urls.file_url] if isinstance(area_or_urls, Area) else area_or_urls
    downloader = kwargs.pop("downloader", None) or quick(urls)
    result = dist_fetch.fetch(urls, sha256, ("el9",), "x86_64", engine, kwargs.pop("source", "none"), str(cache),
                              downloader=downloader)
    return result, downloader


def cache_listing(cache):
    return sorted(p.name for p in Path(cache).iterdir()) if Path(cache).exists() else []


def dead_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return "http://127.0.0.1:{}/staging/".format(port)


# -- fetch, verify, unpack, reuse ---------------------------------------------------------------------------------

def test_fetch_over_http_verifies_unpacks_and_the_next_pilot_reuses_it(area, nginx, tmp_path):
    base = nginx(area.root.parent) + "/staging/"
    cache = tmp_path / "cache"
    entry = area.entry("python")

    first, downloader = fetch([base], area.sha256, cache)
    assert downloader.requests == 2  # index.json and the tarball
    assert not first.reused
    assert first.path == str(cache / entry["sha256"])
    assert first.entry.name == entry["name"]
    assert first.dist["engine"] == "python" and first.dist["entry_point"] == "cvmfs-pilot.pyz"
    local = (cache / entry["sha256"] / "etc/cvmfs/default.local").read_text()
    assert "@DIST_ROOT@" not in local
    assert "CVMFS_CACHE_BASE={}/var/lib/cvmfs".format(first.path) in local
    assert (cache / "indexes" / (area.sha256 + ".json")).read_bytes() == area.index_bytes
    leftovers = [n for n in cache_listing(cache) if n.startswith(".")]
    assert leftovers == []
    stamp = os.stat(first.path).st_mtime_ns, os.stat(os.path.join(first.path, "cvmfs-pilot.pyz")).st_mtime_ns

    again, downloader = fetch([base], area.sha256, cache)
    assert downloader.requests == 0  # index and distribution both from the cache
    assert again.reused and again.path == first.path and again.dist == first.dist
    assert (os.stat(first.path).st_mtime_ns,
            os.stat(os.path.join(first.path, "cvmfs-pilot.pyz")).st_mtime_ns) == stamp

    shutil.rmtree(str(cache / "indexes"))  # another pilot: the index again, not the distribution
    third, downloader = fetch([base], area.sha256, cache)
    assert downloader.requests == 1 and third.reused


def test_the_cvmfs2_engine_is_chosen_for_the_platform_and_keeps_its_relative_links(area, tmp_path):
    result, _ = fetch(area, area.sha256, tmp_path / "cache", engine=None)
    assert result.entry.engine == "cvmfs2" and result.entry.platform == "el9"
    root = Path(result.path)
    assert os.access(str(root / "usr/bin/cvmfs2"), os.X_OK)
    links = [p for p in root.rglob("*") if p.is_symlink()]
    assert links
    for link in links:
        assert not os.readlink(str(link)).startswith("/")
        assert str(link.resolve()).startswith(str(root) + "/")
    assert "@DIST_ROOT@" not in (root / "etc/cvmfs/default.local").read_text()


def test_the_unpacked_python_engine_runs_from_the_cache(area, tmp_path):
    result, _ = fetch(area, area.sha256, tmp_path / "cache")
    run = subprocess.run(["python3", "cvmfs-pilot.pyz", "--version"], cwd=result.path, env={"PATH": "/usr/bin:/bin"},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("cvmfs-pilot ")


def test_concurrent_pilots_unpack_once(area, tmp_path):
    cache = tmp_path / "cache"
    results, errors = [], []

    def pilot():
        try:
            results.append(fetch(area, area.sha256, cache)[0])
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=pilot) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len({r.path for r in results}) == 1
    assert sorted(r.reused for r in results) == [False, True, True, True]


# -- refusals -----------------------------------------------------------------------------------------------------

def test_a_wrong_index_hash_is_refused(area, tmp_path):
    cache = tmp_path / "cache"
    wrong = hashlib.sha256(b"another index").hexdigest()
    with pytest.raises(FetchError, match="no staging index with SHA-256 " + wrong):
        fetch(area, wrong, cache)
    assert [n for n in cache_listing(cache) if n != "indexes"] == []
    with pytest.raises(FetchError, match="not a SHA-256"):
        fetch(area, "abc", cache)


def test_an_index_that_moved_on_is_found_under_indexes_and_a_tampered_one_refused(area, tmp_path):
    (area.root / "index.json").write_bytes(area.index_bytes.replace(b'"format"', b' "format"', 1))
    assert (area.root / "indexes" / (area.sha256 + ".json")).exists()
    result, downloader = fetch(area, area.sha256, tmp_path / "cache")
    assert result.entry.name == area.entry("python")["name"] and downloader.requests == 3

    (area.root / "indexes" / (area.sha256 + ".json")).write_bytes(area.index_bytes + b"\n")
    with pytest.raises(FetchError, match="SHA-256"):
        fetch(area, area.sha256, tmp_path / "cache2")


def test_a_tampered_tarball_is_refused_before_anything_is_unpacked(area, tmp_path):
    entry = area.entry("python")
    tarball = area.root / (entry["name"] + ".tar.gz")
    data = bytearray(tarball.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tarball.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match="SHA-256 .* is not the {} the index gives".format(entry["sha256"])):
        fetch(area, area.sha256, cache)
    assert set(cache_listing(cache)) == {"indexes", entry["sha256"] + ".lock"}

    tarball.write_bytes(bytes(data) + b"more")  # a different size is refused as well
    with pytest.raises(FetchError, match="larger than the"):
        fetch(area, area.sha256, cache)
    assert set(cache_listing(cache)) == {"indexes", entry["sha256"] + ".lock"}


def test_a_forged_index_with_a_hostile_tarball_is_refused_by_the_extractor(area, tmp_path):
    """Even with hashes that match (an index the pilot was given), the extraction rules still hold."""
    hostile = tmp_path / "hostile.tar.gz"
    with tarfile.open(str(hostile), "w:gz") as tar:
        add(tar, "dist.json", data=b"{}")
        add(tar, "escape", kind=tarfile.SYMTYPE, link="../../../outside")
    data = hostile.read_bytes()
    name = "python-none-any-noarch-0.1.0-000000000000"
    (area.root / (name + ".tar.gz")).write_bytes(data)
    index = {"format": 1, "distributions": [
        {"name": name, "engine": "python", "source": "none", "platform": "any", "arch": "noarch",
         "version": "0.1.0", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}]}
    index_bytes = json.dumps(index).encode()
    (area.root / "index.json").write_bytes(index_bytes)
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match="refused: escape: symbolic link target"):
        fetch(area, hashlib.sha256(index_bytes).hexdigest(), cache)
    assert set(cache_listing(cache)) == {"indexes", hashlib.sha256(data).hexdigest() + ".lock"}


# -- mirrors ------------------------------------------------------------------------------------------------------

def test_mirror_failover_when_the_first_is_dead_or_serves_a_bad_copy(area, nginx, tmp_path):
    base = nginx(area.root.parent) + "/staging/"
    result, downloader = fetch([dead_url(), base], area.sha256, tmp_path / "cache1")
    assert not result.reused and downloader.requests == 4  # the dead mirror once per file

    bad = tmp_path / "bad" / "staging"
    shutil.copytree(str(area.root), str(bad))
    tarball = bad / (area.entry("python")["name"] + ".tar.gz")
    tarball.write_bytes(tarball.read_bytes()[:-1] + b"x")
    result, _ = fetch([bad.as_uri(), area.file_url], area.sha256, tmp_path / "cache2")
    assert result.entry.name == area.entry("python")["name"]


def test_all_mirrors_failing_names_each_one(area, tmp_path):
    dead = dead_url()
    missing = (tmp_path / "nothing").as_uri()
    downloader = Downloader([dead, missing], attempts=3, backoff=0.01, timeout=5)
    with pytest.raises(FetchError) as caught:
        fetch([dead, missing], area.sha256, tmp_path / "cache", downloader=downloader)
    message = str(caught.value)
    assert dead + "index.json" in message and missing + "/index.json" in message
    # the dead one is retried (3 attempts, index.json and indexes/), the missing file:// one asked once per file
    assert downloader.requests == 2 * 3 + 2


def test_http_proxy_is_honoured(area, nginx, tmp_path, monkeypatch):
    proxy = nginx(area.root.parent)  # not a proxy: every request through it fails, which shows it is used
    monkeypatch.setenv("http_proxy", proxy.rsplit("/cvmfs", 1)[0])
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(["http://staging.invalid/staging/"], area.sha256, tmp_path / "cache")


# -- the node-tier extractor ----------------------------------------------------------------------------------------

def add(tar, name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = link
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def crafted(tmp_path, *entries):
    path = tmp_path / "crafted.tar.gz"
    with tarfile.open(str(path), "w:gz", format=tarfile.GNU_FORMAT) as tar:
        for entry in entries:
            add(tar, *entry[:1], **entry[1])
    root = tmp_path / "root"
    root.mkdir()
    return path, root


@pytest.mark.parametrize("entries, error", [
    ([("/etc/passwd", {})], "absolute path"),
    ([("a/../../x", {})], "contains '..'"),
    ([("x", {"kind": tarfile.SYMTYPE, "link": "../outside"})], "points outside"),
    ([("x", {"kind": tarfile.SYMTYPE, "link": "/etc"})], "absolute symbolic link target"),
    ([("d", {"kind": tarfile.DIRTYPE, "mode": 0o755}), ("d/up", {"kind": tarfile.SYMTYPE, "link": ".."}),
      ("x", {"kind": tarfile.SYMTYPE, "link": "d/up/.."})], "followed through the tree, points outside"),
    ([("a", {"kind": tarfile.SYMTYPE, "link": "b/.."}), ("b", {"kind": tarfile.SYMTYPE, "link": "c/.."}),
      ("c", {"kind": tarfile.SYMTYPE, "link": "."})], "followed through the tree, points outside"),
    ([("link", {"kind": tarfile.SYMTYPE, "link": "."}), ("link/f", {"data": b"x"})],
     "written through the symbolic link link"),
    ([("null", {"kind": tarfile.CHRTYPE})], "device entries are not allowed"),
    ([("disk", {"kind": tarfile.BLKTYPE})], "device entries are not allowed"),
    ([("pipe", {"kind": tarfile.FIFOTYPE})], "FIFO entries are not allowed"),
    ([("hard", {"kind": tarfile.LNKTYPE, "link": "missing"})], "not a regular file extracted before it"),
], ids=["absolute", "dotdot", "escaping-symlink", "absolute-symlink", "escape-through-a-link-chain",
        "escape-through-links-to-links", "write-through-symlink", "char-device", "block-device", "fifo",
        "dangling-hardlink"])
def test_the_extractor_refuses_crafted_tarballs(tmp_path, entries, error):
    path, root = crafted(tmp_path, *entries)
    with pytest.raises(safe_extract.ArchiveRejected, match=error):
        safe_extract.extract_tarball(str(path), str(root))
    assert not (tmp_path / "outside").exists() and not (tmp_path / "x").exists()


def test_the_extractor_drops_setuid_setgid_and_sticky_bits_and_keeps_good_links(tmp_path):
    path, root = crafted(tmp_path, ("bin", {"kind": tarfile.DIRTYPE, "mode": 0o1777}),
                         ("bin/su", {"data": b"#!/bin/sh\n", "mode": 0o6755}),
                         ("bin/sh", {"kind": tarfile.SYMTYPE, "link": "su"}),
                         ("lib", {"kind": tarfile.SYMTYPE, "link": "bin/../bin"}),
                         ("copy", {"kind": tarfile.LNKTYPE, "link": "bin/su"}))
    assert safe_extract.extract_tarball(str(path), str(root)) == 5
    assert stat.S_IMODE(os.stat(str(root / "bin/su")).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(str(root / "bin")).st_mode) == 0o777
    assert os.readlink(str(root / "bin/sh")) == "su"
    assert os.stat(str(root / "copy")).st_ino == os.stat(str(root / "bin/su")).st_ino


def test_a_damaged_archive_is_rejected(tmp_path):
    path = tmp_path / "damaged.tar.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    (tmp_path / "root").mkdir()
    with pytest.raises(safe_extract.ArchiveRejected, match="damaged archive"):
        safe_extract.extract_tarball(str(path), str(tmp_path / "root"))


# -- the index ----------------------------------------------------------------------------------------------------

def entry(engine, source, platform, arch):
    return staging_index.Entry("{}-{}-{}-{}-1-abc".format(engine, source, platform, arch), engine, source, platform,
                               arch, "1", 1, "0" * 64)


STAGED = [entry("cvmfs2", "osg", "el8", "x86_64"), entry("cvmfs2", "osg", "el9", "x86_64"),
          entry("cvmfs2", "osg", "el9", "aarch64"), entry("python", "osg", "any", "noarch"),
          entry("python", "none", "any", "noarch")]


def test_choosing_the_distribution_follows_the_platform_preference():
    choose = staging_index.choose
    assert choose(STAGED, None, "osg", ("el9",), "x86_64").platform == "el9"
    assert choose(STAGED, "cvmfs2", "osg", ("el8", "el9"), "x86_64").platform == "el8"
    assert choose(STAGED, None, "osg", ("el10",), "x86_64").engine == "python"
    assert choose(STAGED, "python", "osg", ("el9",), "x86_64").engine == "python"
    assert choose(STAGED, None, "none", (), "ppc64le").name == "python-none-any-noarch-1-abc"
    with pytest.raises(StagingIndexError, match=r"engine cvmfs2, source osg, platform el10, arch x86_64\); the "
                                                r"staging area has: cvmfs2-osg-el8-x86_64, cvmfs2-osg-el9-x86_64"):
        choose(STAGED, "cvmfs2", "osg", ("el10",), "x86_64")
    with pytest.raises(StagingIndexError, match="engine python, source egi"):
        choose(STAGED, "python", "egi", ("el9",), "x86_64")
    with pytest.raises(StagingIndexError, match="give the source"):
        choose(STAGED, None, None, ("el9",), "x86_64")
    assert choose(STAGED, "cvmfs2", None, ("el9",), "x86_64").source == "osg"


@pytest.mark.parametrize("change, error", [
    (lambda d: d.update(format=2), "format"),
    (lambda d: d["distributions"][0].update(name="../etc/passwd"), "not a valid distribution name"),
    (lambda d: d["distributions"][0].update(sha256="ABC"), "invalid sha256"),
    (lambda d: d["distributions"][0].update(size="12"), "invalid size"),
    (lambda d: d["distributions"][0].pop("engine"), "invalid 'engine'"),
    (lambda d: d.pop("distributions"), "no list of distributions"),
])
def test_a_malformed_index_is_refused(area, change, error):
    record = json.loads(area.index_bytes.decode())
    assert len(staging_index.parse_index(area.index_bytes)) == len(record["distributions"]) == 2
    change(record)
    with pytest.raises(StagingIndexError, match=error):
        staging_index.parse_index(json.dumps(record).encode())


# -- the command --------------------------------------------------------------------------------------------------

def test_node_fetch_command_prints_the_path_under_the_oldest_python(area, tmp_path):
    cache = tmp_path / "cache"
    command = [NODE_PYTHON, "-m", "cvmfs_pilot", "node", "fetch", "--staging", "{},{}".format(
        dead_url(), area.file_url), "--index-sha256", area.sha256, "--engine", "python", "--cache", str(cache)]
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == str(cache / area.entry("python")["sha256"]) + "\n"

    wrong = subprocess.run(command[:-5] + ["0" * 64, "--cache", str(cache)], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert wrong.returncode == 2 and "no staging index with SHA-256 " + "0" * 64 in wrong.stderr


def test_node_fetch_command_in_process(area, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert cli.main(["fetch", "--staging", area.file_url, "--index-sha256", area.sha256, "--source", "none",
                     "--engine", "python", "--cache", str(cache)]) == 0
    assert capsys.readouterr().out.strip() == str(cache / area.entry("python")["sha256"])
    assert cli.main(["fetch", "--staging", area.file_url, "--index-sha256", area.sha256, "--source", "egi",
                     "--cache", str(cache)]) == 2
    assert "no staged distribution fits this node" in capsys.readouterr().err
