"""The python engine: the node tier as a zipapp that any python3 >= 3.6 runs, with nothing else installed."""

import glob
import io
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from cvmfs_pilot.dist.runner import Request, build_staging
from cvmfs_pilot.node.safe_extract import extract_tarball
from cvmfs_pilot.dist.staging import Staging
from cvmfs_pilot.dist.zipapp_engine import build_zipapp
from support.repo import publish_tree

FQRN = "dist-python.cvmfs-pilot.org"
PYTHONS = ["/usr/bin/python3"] + sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.6*/bin/python3.6")))[:1]


def test_the_zipapp_holds_the_node_tier_only_and_is_reproducible(tmp_path):
    data = build_zipapp()
    assert data.startswith(b"#!/usr/bin/env python3\n")
    assert build_zipapp() == data
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert names[0] == "__main__.py"
    assert {"cvmfs_pilot/__init__.py", "cvmfs_pilot/cli.py", "cvmfs_pilot/cvmfs/manifest.py",
            "cvmfs_pilot/client/session.py"} <= set(names)
    assert not [n for n in names if n.split("/")[1:2] in (["publish"], ["dist"], ["factory"]) or
                "__pycache__" in n]
    assert all(n.endswith(".py") or n.startswith("cvmfs_pilot/glidein/helpers/") for n in names)


@pytest.mark.parametrize("python", PYTHONS)
def test_the_python_distribution_reads_a_repository_with_a_bare_python(python, mirror, nginx, keys_dir, tmp_path,
                                                                        fetcher):
    source = tmp_path / "tree"
    (source / "sw").mkdir(parents=True)
    (source / "sw" / "hello.txt").write_text("hello from the python engine\n")
    srv = tmp_path / "srv"
    publish_tree(source, srv / FQRN, FQRN, keys_dir)
    server_url = nginx(srv) + "/@fqrn@"

    staging = tmp_path / "staging"
    build_staging(staging, Request(("none",), ("el9-x86_64",), str(mirror.upstream)), fetcher=fetcher)
    entry = next(e for e in Staging(staging).read_index() if e.engine == "python")

    # what the node layer will do: unpack safely, fill in the placeholder, add the site's repository
    dist = tmp_path / "clean" / "dist"
    dist.mkdir(parents=True)
    extract_tarball(staging / (entry.name + ".tar.gz"), dist)
    default_local = dist / "etc/cvmfs/default.local"
    default_local.write_text(default_local.read_text().replace("@DIST_ROOT@", str(dist)))
    (dist / "etc/cvmfs/config.d").mkdir()
    (dist / "etc/cvmfs/config.d" / (FQRN + ".conf")).write_text(
        'CVMFS_SERVER_URL="{}"\nCVMFS_HTTP_PROXY=DIRECT\n'.format(server_url))
    (dist / "etc/cvmfs/keys").mkdir()
    (dist / "etc/cvmfs/keys" / (FQRN + ".pub")).write_bytes((keys_dir / (FQRN + ".pub")).read_bytes())

    def run(*args):
        return subprocess.run([python, "cvmfs-pilot.pyz", "fs", args[0], "--config-dir", "etc/cvmfs"] +
                              list(args[1:]), cwd=dist, env={}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=60)

    info = run("info", FQRN)
    assert info.returncode == 0, info.stderr
    assert "repository:        {}".format(FQRN) in info.stdout
    assert "revision:" in info.stdout and str(dist / "var/lib/cvmfs") in info.stdout
    cat = run("cat", FQRN, "/sw/hello.txt")
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout == "hello from the python engine\n"
    assert not Path(dist, "__pycache__").exists()
