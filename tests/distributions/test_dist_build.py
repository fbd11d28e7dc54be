"""dist build / update / list end to end, against a local mirror of every upstream repository served by nginx."""

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from rich.console import Console

from cvmfs_pilot.dist import cli as dist_cli
from cvmfs_pilot.dist.errors import DistError, StagingError
from cvmfs_pilot.dist.fetch import Fetcher
from cvmfs_pilot.dist.runner import (BUILT, FAILED, SKIPPED, UNCHANGED, Outcome, Report, Request, build_staging,
                                     update_staging)
from cvmfs_pilot.node.safe_extract import extract_tarball
from cvmfs_pilot.dist.staging import Staging
from cvmfs_pilot.dist.upstream import DistKey, Upstream
from support.yum import Symlink, build_rpms, offered_keys, stand_in

CLI = Path(sys.executable).parent / "cvmfs-pilot"
EPEL10 = "https://download.fedoraproject.org/pub/epel/10/Everything/x86_64/"
OSG_EL9 = "https://repo.opensciencegrid.org/osg/25-main/el9/release/x86_64/"
CVMFS_EL9_AARCH64 = "https://cvmrepo.s3.cern.ch/cvmrepo/yum/cvmfs/EL/9/aarch64/"


def request(mirror, sources=("osg", "egi", "default", "none"), targets=None, **overrides):
    upstream = Upstream.load(mirror.upstream)
    targets = targets or [f"{p.name}-{a}" for p in upstream.platforms.values() for a in p.arches]
    return Request(tuple(sources), tuple(targets), str(mirror.upstream), **overrides)


def statuses(report):
    return {str(o.key): o.status for o in report.outcomes}


def snapshot(directory):
    return {str(p.relative_to(directory)): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in Path(directory).rglob("*")}


def tarball_member(path, name):
    with tarfile.open(path) as tar:
        return tar.extractfile(name).read()


def test_every_offered_pair_builds_and_is_listed(mirror, tmp_path):
    staging = tmp_path / "staging"
    result = subprocess.run([str(CLI), "dist", "build", "--staging", str(staging), "--upstream",
                             str(mirror.upstream)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout
    assert "cvmfs-pilot dist: cvmfs2-egi-el8-x86_64: skipped: egi offers no el8-x86_64 client" in result.stdout
    assert " 0 failed," in result.stdout

    upstream = Upstream.load(mirror.upstream)
    index = json.loads((staging / "index.json").read_bytes())
    entries = {(e["engine"], e["source"], e["platform"], e["arch"]): e for e in index["distributions"]}
    expected = {(k.engine, k.source, k.platform, k.arch) for k in offered_keys(upstream)}
    assert set(entries) == expected and len(expected) == 36

    digest = hashlib.sha256((staging / "index.json").read_bytes()).hexdigest()
    assert (staging / "index.json.sha256").read_text() == f"{digest}  index.json\n"
    assert (staging / "indexes" / f"{digest}.json").read_bytes() == (staging / "index.json").read_bytes()

    for (engine, source, platform, arch), entry in entries.items():
        tarball = staging / (entry["name"] + ".tar.gz")
        assert tarball.stat().st_size == entry["size"]
        assert hashlib.sha256(tarball.read_bytes()).hexdigest() == entry["sha256"]
        described = json.loads(tarball_member(tarball, "dist.json"))
        assert json.loads((staging / (entry["name"] + ".json")).read_bytes()) == described
        assert (described["engine"], described["source"], described["platform"], described["arch"]) == (
            engine, source, platform, arch)
        names = {p["name"] for p in described["packages"]}
        tree = tmp_path / "unpacked" / entry["name"]
        tree.mkdir(parents=True)
        extract_tarball(tarball, tree)
        default_local = (tree / "etc/cvmfs/default.local").read_text()
        assert 'CVMFS_HTTP_PROXY="auto;DIRECT"' in default_local
        assert "CVMFS_CACHE_BASE=@DIST_ROOT@/var/lib/cvmfs" in default_local
        assert upstream.sources[source].pac_urls in default_local
        assert described["config_repository"] == upstream.sources[source].config_repository
        if source == "none":
            assert not (tree / "etc/cvmfs/default.d").exists()
        else:
            assert f"cvmfs-config-{source}" in names
            assert any((tree / "etc/cvmfs/keys").rglob("*.pub"))
        if engine == "python":
            assert (tree / "cvmfs-pilot.pyz").stat().st_mode & 0o111
            assert sorted(p.name for p in tree.iterdir()) == ["cvmfs-pilot.pyz", "dist.json", "etc"]
            continue
        assert described["version"] == ("2.12.3" if source == "egi" and platform == "el9" else "2.13.2")
        assert (tree / "usr/bin/cvmfs2").read_text().endswith(f"stand-in {described['version']}'\n")
        os_release = upstream.platforms[platform].os_release
        assert (tree / "etc/os-release").read_text() == "".join(f'{k}="{v}"\n' for k, v in os_release.items())
        assert os.readlink(tree / "usr/lib64/libcvmfs_fuse.so") == \
            f"../../usr/lib64/libcvmfs_fuse.so.{described['version']}"  # made relative, as makedist does
        assert not (tree / "usr/lib/.build-id").exists()
        fuse = {"el8": "fuse3-libs", "el9": "fuse3-libs", "el10": "fuse3-libs", "suse15": "libfuse3-3"}[platform]
        assert {"cvmfs", "cvmfs-libs", "cvmfs-fuse3", fuse} <= names
        helpers = source in ("osg", "egi") and arch == "x86_64"
        assert ({"cvmfs-x509-helper", "scitokens-cpp"} <= names) == helpers
        authz = tree / "usr/libexec/cvmfs/authz"
        if helpers:
            assert os.readlink(authz / "cvmfs_x509_helper") == ".wrapper"
            assert (authz / ".cvmfs_x509_helper").is_file() and (authz / ".wrapper").stat().st_mode & 0o111
        else:
            assert not authz.exists()

    listing = subprocess.run([str(CLI), "dist", "list", "--staging", str(staging)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=60)
    assert listing.returncode == 0, listing.stdout
    assert all(entry["name"] in listing.stdout for entry in entries.values())
    assert f"index.json sha256 {digest} (matches index.json.sha256)" in listing.stdout


class RecordingFetcher(Fetcher):
    def __init__(self):
        super().__init__(attempts=2, backoff=0.01, timeout=30)
        self.urls = []

    def read(self, url, limit):
        self.urls.append(url)
        return super().read(url, limit)

    def download(self, url, *args, **kwargs):
        self.urls.append(url)
        return super().download(url, *args, **kwargs)


def test_platforms_none_builds_only_the_python_engine_without_any_download(tmp_path):
    """Source none has no configuration package: its python distribution needs nothing from upstream (the
    shipped definitions' URLs are not reachable from the tests, so any download would fail)."""
    staging = tmp_path / "staging"
    result = subprocess.run([str(CLI), "dist", "build", "--staging", str(staging), "--sources", "none",
                             "--platforms", "none"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout
    index = json.loads((staging / "index.json").read_text())
    assert [(d["engine"], d["source"]) for d in index["distributions"]] == [("python", "none")]
    assert "downloaded 0.0 MB" in result.stdout


def test_update_without_upstream_changes_is_quick_and_writes_nothing(mirror, tmp_path, fetcher):
    staging = tmp_path / "staging"
    first = build_staging(staging, request(mirror), fetcher=fetcher)
    assert not first.failed
    before = snapshot(staging)
    recording = RecordingFetcher()
    started = time.monotonic()
    report = update_staging(staging, fetcher=recording)
    elapsed = time.monotonic() - started
    assert set(statuses(report).values()) == {UNCHANGED, SKIPPED}
    assert report.index_sha256 == first.index_sha256
    assert snapshot(staging) == before
    assert elapsed < 2.0
    # only each repository's repomd.xml was read: no package list, no package
    assert len(recording.urls) == len(set(recording.urls)) > 10
    assert all(url.endswith("/repodata/repomd.xml") for url in recording.urls)


def _add_packages(mirror, upstream_url, packages, tmp_path, compressor="w6.gzdio"):
    build_rpms(packages, mirror.directory(upstream_url), tmp_path / "rpmbuild" / packages[0].name, compressor)
    mirror.refresh(upstream_url)


def test_new_package_versions_rebuild_exactly_the_affected_distributions(mirror, tmp_path, fetcher):
    staging = tmp_path / "staging"
    first = build_staging(staging, request(mirror), fetcher=fetcher)
    old_index = {str(e.key): e for e in Staging(staging).read_index()}

    # a new osg configuration (el9 repository), and a new cvmfs for el9-aarch64 only
    _add_packages(mirror, OSG_EL9, [stand_in("cvmfs-config-osg", "2.7", "1.osg25", "noarch")], tmp_path)
    _add_packages(mirror, CVMFS_EL9_AARCH64, [stand_in(name, "2.13.3", "1", "aarch64")
                                              for name in ("cvmfs", "cvmfs-libs", "cvmfs-fuse3")], tmp_path)
    report = update_staging(staging, fetcher=fetcher)

    built = {key for key, status in statuses(report).items() if status == BUILT}
    # osg and egi keep the cvmfs version they ship; default and none take the newest of the cvmfs repository
    assert built == {"cvmfs2-osg-el9-x86_64", "cvmfs2-osg-el9-aarch64", "cvmfs2-osg-el9-ppc64le",
                     "python-osg-any-noarch", "cvmfs2-default-el9-aarch64", "cvmfs2-none-el9-aarch64"}
    assert not report.failed
    new_index = {str(e.key): e for e in Staging(staging).read_index()}
    assert new_index["cvmfs2-none-el9-aarch64"].version == "2.13.3"
    assert new_index["cvmfs2-osg-el9-aarch64"].version == "2.13.2"
    for key, entry in new_index.items():
        assert (entry.name != old_index[key].name) == (key in built)
        if key not in built:
            assert entry == old_index[key]
    # the replaced distributions and the previous index stay for running pilots (grace period)
    for key in built:
        assert all((staging / name).exists() for name in old_index[key].files)
    assert (staging / "indexes" / f"{first.index_sha256}.json").exists()
    assert len(Staging(staging).read_state()["retired"]) == 2 * len(built) + 1

    # a second update finds nothing new
    again = update_staging(staging, fetcher=fetcher)
    assert BUILT not in statuses(again).values()


def test_a_corrupted_package_fails_only_the_distributions_that_use_it(mirror, tmp_path, fetcher):
    # (a package file found elsewhere with the same checksum would be used instead: make a unique one)
    _add_packages(mirror, EPEL10, [stand_in("scitokens-cpp", "1.1.4", "1", "x86_64")], tmp_path)
    scitokens = mirror.directory(EPEL10) / "scitokens-cpp-1.1.4-1.x86_64.rpm"
    original = scitokens.read_bytes()
    scitokens.write_bytes(original[:-100] + bytes(100))  # same size, different bytes
    staging = tmp_path / "staging"
    report = build_staging(staging, request(mirror), fetcher=fetcher)

    failed = {key: o for key, o in ((str(o.key), o) for o in report.outcomes) if o.status == FAILED}
    assert set(failed) == {"cvmfs2-osg-el10-x86_64"}  # the only one with scitokens from EPEL 10
    assert "checksum mismatch" in failed["cvmfs2-osg-el10-x86_64"].message
    assert report.failed
    assert sum(1 for status in statuses(report).values() if status == BUILT) == 35
    assert "cvmfs2-osg-el10-x86_64" not in {str(e.key) for e in Staging(staging).read_index()}

    scitokens.write_bytes(original)  # the mirror is repaired: the next update builds what failed, only that
    report = update_staging(staging, fetcher=fetcher)
    assert {k for k, s in statuses(report).items() if s == BUILT} == {"cvmfs2-osg-el10-x86_64"}
    assert not report.failed


def test_a_crafted_package_fails_its_distributions_with_the_reason(mirror, tmp_path, fetcher):
    evil = stand_in("scitokens-cpp", "1.1.4", "1", "x86_64")
    evil.files["/usr/lib64/libSciTokens.so.0"] = Symlink("../../../../etc/shadow")
    _add_packages(mirror, EPEL10, [evil], tmp_path)
    staging = tmp_path / "staging"
    report = build_staging(staging, request(mirror, sources=("osg",), targets=("el10-x86_64", "el9-x86_64")),
                           fetcher=fetcher)
    failed = [o for o in report.outcomes if o.status == FAILED]
    assert [str(o.key) for o in failed] == ["cvmfs2-osg-el10-x86_64"]
    assert failed[0].message == (
        "scitokens-cpp-1.1.4-1.x86_64 from {}scitokens-cpp-1.1.4-1.x86_64.rpm: usr/lib64/libSciTokens.so.0: "
        "symbolic link target ../../../../etc/shadow points outside the extraction directory; it was not "
        "used".format(mirror.base_url + "/" + EPEL10[len("https://"):]))
    assert not list(staging.glob("cvmfs2-osg-el10-*")) and not list(staging.glob(".work-*"))


def test_a_failure_keeps_the_previous_distribution_in_the_index(mirror, tmp_path, fetcher):
    staging = tmp_path / "staging"
    build_staging(staging, request(mirror, sources=("osg",), targets=("el10-x86_64",)), fetcher=fetcher)
    before = {str(e.key): e.name for e in Staging(staging).read_index()}
    # a new scitokens-cpp whose file then gets damaged on the mirror
    _add_packages(mirror, EPEL10, [stand_in("scitokens-cpp", "1.1.4", "1", "x86_64")], tmp_path)
    newer = mirror.directory(EPEL10) / "scitokens-cpp-1.1.4-1.x86_64.rpm"
    newer.write_bytes(newer.read_bytes()[:-10] + bytes(10))
    report = update_staging(staging, fetcher=fetcher)
    outcome = next(o for o in report.outcomes if str(o.key) == "cvmfs2-osg-el10-x86_64")
    assert outcome.status == FAILED
    assert f"(the index keeps {before['cvmfs2-osg-el10-x86_64']})" in outcome.message
    assert {str(e.key): e.name for e in Staging(staging).read_index()} == before


def test_a_pinned_cvmfs_version_chooses_its_packages(mirror, tmp_path, fetcher):
    staging = tmp_path / "staging"
    report = build_staging(staging, request(mirror, sources=("default",), targets=("el8-x86_64", "el9-x86_64"),
                                            cvmfs_version="2.12.3"), fetcher=fetcher)
    assert not report.failed
    names = {}
    for entry in Staging(staging).read_index():
        described = json.loads((staging / (entry.name + ".json")).read_bytes())
        names[entry.platform] = {p["name"]: p["version"] for p in described["packages"]}
    # cvmfs < 2.13 on el8 runs on fuse2, as makedist builds it; el9 always uses fuse3
    assert names["el8"] == {"cvmfs": "2.12.3", "cvmfs-libs": "2.12.3", "fuse-libs": "2.9.7",
                            "cvmfs-config-default": "2.2"}
    assert names["el9"] == {"cvmfs": "2.12.3", "cvmfs-libs": "2.12.3", "cvmfs-fuse3": "2.12.3",
                            "fuse3-libs": "3.10.2", "cvmfs-config-default": "2.2"}

    missing = build_staging(staging, request(mirror, sources=("none",), targets=("el9-x86_64",),
                                             cvmfs_version="2.11.0"), fetcher=fetcher)
    message = next(o.message for o in missing.outcomes if o.status == FAILED)
    assert "no cvmfs 2.11.0 package for x86_64" in message and "--cvmfs-version" in message


def test_replaced_distributions_are_pruned_after_the_grace_period(mirror, tmp_path, fetcher):
    staging = tmp_path / "staging"
    build_staging(staging, request(mirror, sources=("osg", "none"), targets=("el9-x86_64",)), fetcher=fetcher)
    osg = [e for e in Staging(staging).read_index() if e.source == "osg"]
    first_sha = Staging(staging).index_sha256()[0]

    # no longer asked for: retired, kept for the grace period
    build_staging(staging, request(mirror, sources=("none",), targets=("el9-x86_64",)), fetcher=fetcher)
    assert {e.source for e in Staging(staging).read_index()} == {"none"}
    assert all((staging / name).exists() for e in osg for name in e.files)
    assert (staging / "indexes" / f"{first_sha}.json").exists()

    report = build_staging(staging, request(mirror, sources=("none",), targets=("el9-x86_64",), grace_hours=0),
                           fetcher=fetcher)
    assert sorted(report.deleted) == sorted([name for e in osg for name in e.files] +
                                            [f"indexes/{first_sha}.json"])
    assert not any((staging / name).exists() for e in osg for name in e.files)
    assert Staging(staging).read_state()["retired"] == {}
    assert len(list((staging / "indexes").iterdir())) == 1


def test_unknown_names_and_empty_staging_areas_are_errors(mirror, tmp_path, fetcher):
    with pytest.raises(DistError, match="unknown source.*osgg.*offer default, egi, none, osg"):
        build_staging(tmp_path / "s", request(mirror, sources=("osgg",)), fetcher=fetcher)
    with pytest.raises(DistError, match="unknown platform.*el99"):
        build_staging(tmp_path / "s", request(mirror, targets=("el99-x86_64",)), fetcher=fetcher)
    with pytest.raises(StagingError, match="nothing was built there yet"):
        update_staging(tmp_path / "empty", fetcher=fetcher)
    result = subprocess.run([str(CLI), "dist", "update", "--staging", str(tmp_path / "empty")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert result.returncode == 1 and "run 'cvmfs-pilot dist build' first" in result.stderr


def test_one_builder_at_a_time(mirror, tmp_path, fetcher):
    staging = Staging(tmp_path / "staging")
    with staging.locked():
        with pytest.raises(StagingError, match="another 'dist build' or 'dist update' is running"):
            build_staging(staging.directory, request(mirror, sources=("none",)), fetcher=fetcher)


def test_a_failed_pair_sets_the_exit_status_and_a_terminal_gets_a_table(mirror, tmp_path, monkeypatch,
                                                                        capsys):
    _add_packages(mirror, EPEL10, [stand_in("scitokens-cpp", "1.1.4", "1", "x86_64")], tmp_path)
    scitokens = mirror.directory(EPEL10) / "scitokens-cpp-1.1.4-1.x86_64.rpm"
    scitokens.write_bytes(scitokens.read_bytes()[:-1] + b"!")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    status = dist_cli.main(["build", "--staging", str(tmp_path / "staging"), "--upstream", str(mirror.upstream),
                            "--sources", "osg,none", "--platforms", "el10-x86_64"], "cvmfs-pilot dist")
    output = capsys.readouterr().out
    assert status == 1
    assert "distributions" in output and "cvmfs2-none-el10-x86_64" in output
    assert "checksum mismatch" in output and "1 failed" in output


def test_terminal_output_shows_messages_verbatim():
    console = Console(file=io.StringIO(), width=200, force_terminal=True, color_system=None)
    outcome = Outcome(DistKey("cvmfs2", "osg", "el9", "x86_64"), FAILED,
                      message="file:///mirror/repodata/repomd.xml: [/mirror/repodata] [bold]not found[/bold]")
    dist_cli._print_summary(Report([outcome], seconds=1.0), console, "cvmfs-pilot dist", None)
    with dist_cli.RichReporter(console) as reporter:
        reporter.finish(outcome)
    output = console.file.getvalue()
    assert output.count("[/mirror/repodata] [bold]not found[/bold]") == 2
