"""The contract distribution (support/contract_dist.py): a staging area built by the real builder whose cvmfs2
el9-x86_64 distribution runs our engine behind the upstream cvmfs2 command line. Nothing is mounted here."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cvmfs_pilot.dist.zipapp_engine import build_zipapp
from cvmfs_pilot.node import dist_fetch

SRC = Path(__file__).resolve().parents[2] / "src"
SYSTEM_PYTHON = "/usr/bin/python3"  # what the unprivileged user can run (pyenv's lies below /root)


def fetch(contract_staging, cache):
    return dist_fetch.fetch([contract_staging.file_url], contract_staging.index_sha256, ("el9",), "x86_64",
                            engine="cvmfs2", cache=str(cache),
                            downloader=dist_fetch.Downloader([contract_staging.file_url], attempts=1))


def contract_env(dist, **extra):
    """The environment the node layer gives cvmfs2: the distribution's libraries first."""
    env = dict(os.environ, **extra)
    env["LD_LIBRARY_PATH"] = "{0}/usr/lib64:{0}/usr/lib".format(dist)
    return env


def run(command, **kwargs):
    return subprocess.run([str(c) for c in command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=60, check=False, **kwargs)


def assert_mount_help(result):
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: cvmfs-pilot fs mount [-h] [-f] [-o OPTIONS]"), result.stdout
    assert "fqrn mountpoint" in result.stdout and "config=FILE[:FILE...]" in result.stdout


def test_the_staging_area_lists_exactly_one_cvmfs2_el9_x86_64_distribution(contract_staging):
    staging = contract_staging.directory
    index_bytes = (staging / "index.json").read_bytes()
    assert hashlib.sha256(index_bytes).hexdigest() == contract_staging.index_sha256
    assert (staging / "index.json.sha256").read_text() == "{}  index.json\n".format(contract_staging.index_sha256)
    entries = json.loads(index_bytes)["distributions"]
    cvmfs2 = [e for e in entries if e["engine"] == "cvmfs2"]
    assert cvmfs2 == [contract_staging.entry]
    entry = contract_staging.entry
    assert (entry["source"], entry["platform"], entry["arch"], entry["version"]) == ("none", "el9", "x86_64",
                                                                                     "2.13.2")
    assert entry["name"].startswith("cvmfs2-none-el9-x86_64-2.13.2-")
    # dist build always adds the python engine of each source it builds: that is the only other entry
    assert [(e["engine"], e["source"]) for e in entries if e["engine"] != "cvmfs2"] == [
        ("python", "none")]
    tarball = contract_staging.tarball
    assert tarball.stat().st_size == entry["size"]
    assert hashlib.sha256(tarball.read_bytes()).hexdigest() == entry["sha256"]
    # reachable by anyone (the unprivileged user fetches it)
    for path in list(staging.parents)[:3] + [staging, staging / "indexes"]:
        assert path.stat().st_mode & 0o005 == 0o005, path
    for path in [tarball, staging / "index.json", staging / "index.json.sha256"]:
        assert path.stat().st_mode & 0o004, path


def test_the_unpacked_cvmfs2_runs_our_engine(contract_staging, tmp_path):
    fetched = fetch(contract_staging, tmp_path / "cache")
    dist = Path(fetched.path)
    assert fetched.entry.name == contract_staging.name and not fetched.reused
    assert fetched.dist["entry_point"] == "usr/bin/cvmfs2"
    assert fetched.dist["library_dirs"] == ["usr/lib64", "usr/lib"]
    assert [p["name"] for p in fetched.dist["packages"]] == ["cvmfs", "cvmfs-libs", "cvmfs-fuse3", "fuse3-libs"]

    # the zipapp is the working tree's, byte for byte, and the one the builder puts in the python engine
    pyz = dist / "usr/libexec/cvmfs-pilot/cvmfs-pilot.pyz"
    assert pyz.read_bytes() == contract_staging.zipapp == build_zipapp()
    python_entry = next(e for e in contract_staging.index["distributions"] if e["engine"] == "python")
    python_dist = json.loads((contract_staging.directory / (python_entry["name"] + ".json")).read_bytes())
    assert hashlib.sha256(pyz.read_bytes()).hexdigest() == python_dist["zipapp_sha256"]

    # the rest of the stand-in layout, and what the builder adds
    assert "CVMFS_CACHE_BASE=/var/lib/cvmfs\n" in (dist / "etc/cvmfs/default.conf").read_text()
    assert "CVMFS_CACHE_BASE={}/var/lib/cvmfs\n".format(dist) in (dist / "etc/cvmfs/default.local").read_text()
    assert (dist / "usr/lib64/libfuse3.so.3").exists() and (dist / "usr/lib64/libcvmfs_fuse3.so.2.13.2").exists()
    assert (dist / "usr/bin/cvmfs2").read_text().startswith("#!/bin/sh\n")

    # cvmfs2's arguments reach `fs mount`
    assert_mount_help(run([dist / "usr/bin/cvmfs2", "--help"], env=contract_env(dist)))
    result = run([sys.executable, pyz, "fs", "--help"], env=contract_env(dist))
    assert result.returncode == 0 and "mount" in result.stdout, result.stderr
    # a failure is a non-zero status with a message (refused while parsing the options: nothing is mounted)
    result = run([dist / "usr/bin/cvmfs2", "-o", "config=/nonexistent.conf,frobnicate", "example.org",
                  tmp_path / "mnt"], env=contract_env(dist))
    assert result.returncode == 1
    assert "cvmfs-pilot fs: error: unknown mount option 'frobnicate'" in result.stderr
    assert not (tmp_path / "mnt").exists()


def test_cvmfs2_finds_its_zipapp_however_it_is_called(contract_staging, tmp_path):
    unpacked = Path(fetch(contract_staging, tmp_path / "cache").path)
    dist = tmp_path / "moved dir" / "dist"  # relocated, with a space in the path
    shutil.copytree(str(unpacked), str(dist), symlinks=True)
    env = contract_env(dist)
    assert_mount_help(run([dist / "usr/bin/cvmfs2", "--help"], env=env))
    assert_mount_help(run(["./bin/cvmfs2", "--help"], env=env, cwd=dist / "usr"))
    assert_mount_help(run(["cvmfs2", "--help"], env=dict(env, PATH="{}:{}".format(dist / "usr/bin",
                                                                                   os.environ["PATH"]))))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "cvmfs2").symlink_to(dist / "usr/bin/cvmfs2")
    assert_mount_help(run([tmp_path / "elsewhere" / "cvmfs2", "--help"], env=env))

    # and says so when its zipapp is gone
    (dist / "usr/libexec/cvmfs-pilot/cvmfs-pilot.pyz").unlink()
    result = run([dist / "usr/bin/cvmfs2", "--help"], env=env)
    assert result.returncode == 1 and "cvmfs-pilot.pyz is missing" in result.stderr


def test_the_unprivileged_user_fetches_and_runs_it(contract_staging, unprivileged, tmp_path):
    scratch = unprivileged.scratch(tmp_path)
    unprivileged.own(scratch)
    cache = scratch / "cache"
    script = ("import sys; sys.path.insert(0, {src!r}); from cvmfs_pilot.node import dist_fetch; "
              "print(dist_fetch.fetch([{url!r}], {sha!r}, ('el9',), 'x86_64', engine='cvmfs2', "
              "cache={cache!r}).path)").format(src=str(SRC), url=contract_staging.file_url,
                                                 sha=contract_staging.index_sha256, cache=str(cache))
    env = dict(os.environ, PATH="/usr/local/bin:/usr/bin:/bin")
    result = unprivileged.run([SYSTEM_PYTHON, "-c", script], env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    dist = Path(result.stdout.strip())
    assert dist.parent == cache and dist.stat().st_uid == unprivileged.uid
    result = unprivileged.run([str(dist / "usr/bin/cvmfs2"), "--help"], env=contract_env(dist, PATH=env["PATH"]),
                              timeout=60)
    assert_mount_help(result)
