"""Real mounts as the unprivileged user, through fusermount3 and inside a user namespace: what find, ls, stat,
tar, sha256sum, os.walk, readlink and getxattr see equals the published tree; a script runs from the mount;
32 readers at once; the real cvmfs_server's test.cern.ch as well."""

import hashlib
import json
import shutil
import stat
from pathlib import Path

import pytest

from support.client_env import open_with, unpack_fixture, write_config
from support.fuse_env import IN_NAMESPACE, PYTHON

PROBE = Path(__file__).resolve().parent.parent / "support" / "tree_probe.py"
FIXTURE = "test.cern.ch"

SCRIPT = """
set -e
fs() {{ {python} -m cvmfs_pilot fs "$@"; }}
trap 'fs umount mnt; fs umount mnt2' EXIT
fs mount --config-dir etc {fqrn} mnt
fs mount -o config=fixture.conf --config-dir no-such-dir {fixture} mnt2
grep ' {scratch}/mnt' /proc/self/mounts > out/mounts.txt
{python} {probe} src > out/src.json
{python} {probe} mnt --readers 32 > out/mnt.json
(cd mnt2 && find . -printf '%p %y %s %m\\n') > out/fixture.txt
sha256sum mnt2/bar/big > out/fixture-big.txt
mnt/bin/hello.sh one two > out/hello.txt
"""


def _fixture_config(env, shared_dir, tmp_path):
    """Serve test.cern.ch beside our repository; its configuration as one file for ``-o config=``."""
    storage = unpack_fixture(shared_dir, tmp_path / "fixture")
    shutil.move(str(storage), str(env.storage_root / FIXTURE))
    pubkey = shared_dir / "fixtures" / FIXTURE / (FIXTURE + ".pub")
    (env.scratch / "fixture.conf").write_text(
        "CVMFS_SERVER_URL={}/@fqrn@\nCVMFS_HTTP_PROXY=DIRECT\nCVMFS_PUBLIC_KEY={}\nCVMFS_CACHE_BASE={}\n".format(
            env.base_url, pubkey, env.scratch / "cache"))
    return write_config(tmp_path / "fixture-etc", FIXTURE, env.base_url + "/@fqrn@", pubkey, tmp_path / "cache")


def _expected_fixture_listing(shared_dir):
    lines = []
    for line in (shared_dir / "fixtures" / FIXTURE / "expected-listing.txt").read_text().splitlines():
        path, kind, size, mode = line.split()[:4]
        lines.append("{} {} {} {:o}".format("." + path, kind, "-" if kind == "d" else size, int(mode, 8)))
    return sorted(lines + [". d - 755"])


def _fixture_seen(out):
    lines = []
    for line in (out / "fixture.txt").read_text().splitlines():
        path, kind, size, mode = line.split()
        lines.append("{} {} {} {}".format(path, kind, "-" if kind == "d" else size, mode))
    return sorted(lines)


@pytest.mark.parametrize("way", ["fusermount", "namespace"])
def test_real_tools_see_the_published_tree(fuse_env, way, shared_dir, tmp_path):
    env = fuse_env
    fixture_config = _fixture_config(env, shared_dir, tmp_path)
    script = SCRIPT.format(python=PYTHON, probe=PROBE, fqrn=env.fqrn, fixture=FIXTURE, scratch=env.scratch)
    command = ["sh", "-c", script] if way == "fusermount" else IN_NAMESPACE + [script]
    result = env.unprivileged.run(command, cwd=str(env.scratch), timeout=180)
    assert result.returncode == 0, result.stderr
    out = env.scratch / "out"
    mounts = (out / "mounts.txt").read_text().splitlines()
    assert len(mounts) == 2 and all(line.startswith("cvmfs2 ") and " fuse ro,nosuid,nodev" in line
                                    for line in mounts)

    source, mounted = json.loads((out / "src.json").read_text()), json.loads((out / "mnt.json").read_text())
    for field in ("find", "ls", "stat", "tar", "sha256", "walk", "links", "hardlinks"):
        assert mounted[field] == source[field], field
    assert len(mounted["sha256"]) > 400 and mounted["hardlinks"] == [["data/hard-a", "data/hard-b"]]
    assert mounted["links"]["links/relative"] == "../data/small.bin"
    assert mounted["readers"] == [source["sha256"]] * 32
    assert mounted["xattrs"].keys() == source["xattrs"].keys()
    for path, values in mounted["xattrs"].items():
        assert source["xattrs"][path].items() <= values.items(), path
        assert values["user.fqrn"] == env.fqrn and values["user.revision"] == "1"
    assert mounted["xattrs"]["data/tagged.txt"]["user.origin"] == "fuse test"
    assert int(mounted["xattrs"]["data/chunked.bin"]["user.chunks"]) > 1
    assert (out / "hello.txt").read_text() == "hello from hello.sh with 2 args\n"

    assert _fixture_seen(out) == _expected_fixture_listing(shared_dir)
    with open_with(fixture_config, FIXTURE) as repository:
        big = hashlib.sha256(repository.read("/bar/big")).hexdigest()
    assert (out / "fixture-big.txt").read_text().split()[0] == big


def test_executables_and_modes_from_the_mount(fuse_env):
    env = fuse_env
    assert env.fs("mount", env.fqrn, "mnt").returncode == 0
    try:
        result = env.sh("mnt/modes/script && cat mnt/modes/private && {} -c 'import os; print(os.access("
                        "\"mnt/README.txt\", os.W_OK), open(\"mnt/README.txt\").read())'".format(PYTHON))
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["script", "#!/bin/sh", "echo private",
                                              "False a tree for the FUSE tests", ""]
        refused = env.sh("touch mnt/new-file; mkdir mnt/d; rm mnt/README.txt; echo x >> mnt/README.txt")
        assert refused.stderr.count("Read-only file system") == 4
        modes = env.sh("stat -c '%a %U' mnt/modes/private mnt/modes/read-only mnt").stdout.split("\n")
        assert [line.split()[0] for line in modes if line] == ["600", "444", "755"]
        assert stat.S_IMODE((env.src / "modes" / "script").stat().st_mode) == 0o700
    finally:
        assert env.fs("umount", "mnt").returncode == 0
