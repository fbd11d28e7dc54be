"""The staging area: the index and its hash, retiring and pruning, the lock, and dist list."""

import hashlib
import json

import pytest

from cvmfs_pilot.dist import cli as dist_cli
from cvmfs_pilot.dist.errors import StagingError
from cvmfs_pilot.dist.staging import IndexEntry, Staging

HOUR = 3600.0


def entry(name, source="osg"):
    return IndexEntry(name=name, engine="cvmfs2", source=source, platform="el9", arch="x86_64", version="2.13.2",
                      size=10, sha256="0" * 64, build_time="2025-01-01T00:00:00Z")


def stage(staging, name):
    for file_name in (name + ".tar.gz", name + ".json"):
        (staging.directory / file_name).write_bytes(b"x")


@pytest.fixture
def staging(tmp_path):
    (tmp_path / "staging").mkdir()
    return Staging(tmp_path / "staging")


def test_the_index_its_hash_and_its_history(staging):
    stage(staging, "cvmfs2-osg-el9-x86_64-2.13.2-aaaaaaaaaaaa")
    first = staging.publish_index([entry("cvmfs2-osg-el9-x86_64-2.13.2-aaaaaaaaaaaa")], 0)
    data = (staging.directory / "index.json").read_bytes()
    assert hashlib.sha256(data).hexdigest() == first
    assert (staging.directory / "index.json.sha256").read_text() == first + "  index.json\n"
    assert (staging.directory / "indexes" / (first + ".json")).read_bytes() == data
    assert json.loads(data)["distributions"][0]["name"] == "cvmfs2-osg-el9-x86_64-2.13.2-aaaaaaaaaaaa"
    assert staging.read_index() == [entry("cvmfs2-osg-el9-x86_64-2.13.2-aaaaaaaaaaaa")]

    mtime = (staging.directory / "index.json").stat().st_mtime_ns
    assert staging.publish_index([entry("cvmfs2-osg-el9-x86_64-2.13.2-aaaaaaaaaaaa")], 10) == first
    assert (staging.directory / "index.json").stat().st_mtime_ns == mtime  # unchanged: not rewritten

    (staging.directory / "index.json.sha256").write_text("junk\n")  # e.g. a crash between the two renames
    assert staging.publish_index([entry("cvmfs2-osg-el9-x86_64-2.13.2-aaaaaaaaaaaa")], 20) != first
    assert staging.index_sha256()[0] == staging.index_sha256()[1]


def test_retired_files_are_kept_for_the_grace_period_and_nothing_else_is_touched(staging):
    old, new = "cvmfs2-osg-el9-x86_64-2.13.1-aaaaaaaaaaaa", "cvmfs2-osg-el9-x86_64-2.13.2-bbbbbbbbbbbb"
    stage(staging, old)
    first = staging.publish_index([entry(old)], 0)
    stage(staging, new)
    second = staging.publish_index([entry(new)], 0)
    (staging.directory / "README.operator").write_text("mine")
    (staging.directory / "notes.json").write_text("{}")
    retired = {}
    assert staging.retire_and_prune([entry(new)], retired, 24 * HOUR, now=1000.0) == []
    assert retired == {old + ".tar.gz": 1000.0, old + ".json": 1000.0, "indexes/{}.json".format(first): 1000.0}
    assert staging.retire_and_prune([entry(new)], retired, 24 * HOUR, now=1000.0 + 23 * HOUR) == []
    deleted = staging.retire_and_prune([entry(new)], retired, 24 * HOUR, now=1000.0 + 24 * HOUR)
    assert sorted(deleted) == sorted([old + ".tar.gz", old + ".json", "indexes/{}.json".format(first)])
    assert retired == {}
    left = sorted(p.name for p in staging.directory.rglob("*") if p.is_file())
    assert left == sorted([new + ".tar.gz", new + ".json", "README.operator", "notes.json", "index.json",
                           "index.json.sha256", second + ".json"])


def test_a_file_referenced_again_is_no_longer_retired(staging):
    name = "cvmfs2-osg-el9-x86_64-2.13.1-aaaaaaaaaaaa"
    stage(staging, name)
    staging.publish_index([], 0)
    retired = {}
    staging.retire_and_prune([], retired, HOUR, now=0.0)
    assert set(retired) == {name + ".tar.gz", name + ".json"}
    staging.publish_index([entry(name)], 0)
    staging.retire_and_prune([entry(name)], retired, HOUR, now=2 * HOUR)
    assert all(key.startswith("indexes/") for key in retired) and (staging.directory / (name + ".tar.gz")).exists()


def test_the_lock_removes_the_scratch_space_of_a_killed_build(staging):
    (staging.directory / ".work-abc" / "tree").mkdir(parents=True)
    (staging.directory / "indexes").mkdir()
    (staging.directory / "indexes" / ".work-tmp").write_text("half-written")
    with staging.locked():
        assert not (staging.directory / ".work-abc").exists()
        assert not (staging.directory / "indexes" / ".work-tmp").exists()
        with pytest.raises(StagingError, match="another 'dist build' or 'dist update' is running"):
            with Staging(staging.directory).locked():
                pass


def test_an_unreadable_index_is_reported(staging):
    (staging.directory / "index.json").write_text("{}")
    with pytest.raises(StagingError, match="index.json: unreadable or not an index.*run 'dist build' again"):
        staging.read_index()


def test_dist_list_shows_a_tampered_index(staging, capsys):
    name = "cvmfs2-osg-el9-x86_64-2.13.2-aaaaaaaaaaaa"
    stage(staging, name)
    staging.publish_index([entry(name)], 0)
    assert dist_cli.main(["list", "--staging", str(staging.directory)], "cvmfs-pilot dist") == 0
    out = capsys.readouterr().out
    assert name in out and "2.13.2" in out and "(matches index.json.sha256)" in out
    index = staging.directory / "index.json"
    index.write_text(index.read_text().replace("2.13.2", "2.99.9"))
    assert dist_cli.main(["list", "--staging", str(staging.directory)], "cvmfs-pilot dist") == 1
    assert "DIFFERS from index.json.sha256" in capsys.readouterr().out


def test_dist_list_of_an_empty_staging_area(tmp_path, capsys):
    assert dist_cli.main(["list", "--staging", str(tmp_path)], "cvmfs-pilot dist") == 0
    assert "holds no distributions yet; run 'cvmfs-pilot dist build" in capsys.readouterr().out
