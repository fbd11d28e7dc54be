"""The node tier on the oldest Python it supports: every node-tier module imports under Python 3.6, and the client
reads a repository with it. vermin checks the syntax statically in CI; this runs the code for real wherever a
Python 3.6 interpreter exists (pyenv on the project's machines; a plain Debian 12 has none)."""

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cvmfs_pilot.client.export import FORK_THRESHOLD

from support.client_env import write_config
from support.repo import make_keys, publish_tree

SRC = Path(__file__).resolve().parent.parent / "src"
NODE_TIER = ("cvmfs", "client", "fuse", "node", "glidein")


def _python36():
    found = shutil.which("python3.6")
    candidates = [found] if found and "shims" not in found else []
    pyenv = shutil.which("pyenv")
    roots = [os.environ.get("PYENV_ROOT", ""), os.path.expanduser("~/.pyenv")]
    if pyenv:
        roots.append(subprocess.run([pyenv, "root"], stdout=subprocess.PIPE,
                                    universal_newlines=True).stdout.strip())
    for root in filter(None, roots):
        candidates += sorted(glob.glob(os.path.join(root, "versions", "3.6*", "bin", "python3.6")))
    for candidate in candidates:
        if subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 6)"]).returncode == 0:
            return candidate
    return None


PYTHON36 = _python36()
pytestmark = pytest.mark.skipif(PYTHON36 is None, reason="no Python 3.6 interpreter on this machine")


def _run36(args, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run([PYTHON36] + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120, **kwargs)


def _published(src, fqrn, tmp_path):
    """``src`` published as ``fqrn`` below ``tmp_path``, read through file://; the client configuration."""
    keys = make_keys(tmp_path / "keys", fqrn)
    publish_tree(src, tmp_path / "srv" / fqrn, fqrn, keys)
    return write_config(tmp_path / "etc", fqrn, "file://{}/@fqrn@".format(tmp_path / "srv"), keys / (fqrn + ".pub"),
                        tmp_path / "cache")


def test_every_node_tier_module_imports_under_python36():
    modules = ["cvmfs_pilot", "cvmfs_pilot.cli"]
    for package in NODE_TIER:
        for path in sorted((SRC / "cvmfs_pilot" / package).glob("*.py")):
            modules.append("cvmfs_pilot.{}.{}".format(package, path.stem).replace(".__init__", ""))
    result = _run36(["-c", "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"] + modules)
    assert result.returncode == 0, result.stderr
    assert len(modules) > 20


def test_the_client_reads_a_repository_under_python36(tmp_path):
    fqrn = "py36.example.org"
    src = tmp_path / "src"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "hello").write_bytes(b"hello from 3.6\n")
    (src / "big").write_bytes(os.urandom(50_000))
    (src / "many").mkdir()
    for i in range(FORK_THRESHOLD + 10):  # enough for fs get to fork worker processes
        (src / "many" / "f{}".format(i)).write_bytes(b"%d\n" % i)
    config = _published(src, fqrn, tmp_path)
    cat = _run36(["-m", "cvmfs_pilot", "fs", "cat", fqrn, "/dir/hello", "--config-dir", str(config)])
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout == "hello from 3.6\n"
    out = tmp_path / "export"
    get = _run36(["-m", "cvmfs_pilot", "fs", "get", fqrn, "/", "--to", str(out), "--config-dir", str(config), "-v"])
    assert get.returncode == 0, get.stderr
    assert "worker processes" in get.stderr
    assert (out / "big").read_bytes() == (src / "big").read_bytes()
    assert all((out / "many" / "f{}".format(i)).read_bytes() == b"%d\n" % i for i in range(FORK_THRESHOLD + 10))


def test_node_exec_runs_a_job_with_cvmfs_under_python36(tmp_path):
    """The whole node exec path (namespaces, private root, our engine, the job's nested namespace) on 3.6."""
    fqrn = "py36.example.org"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "hello").write_text("hello from node exec on 3.6\n")
    config = _published(tmp_path / "src", fqrn, tmp_path)
    work = tmp_path / "work"
    result = _run36(["-m", "cvmfs_pilot", "node", "exec", "--work-dir", str(work), "--config-dir", str(config),
                     "--repos", fqrn, "--mode", "userns", "--", "cat", "/cvmfs/{}/hello".format(fqrn)])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from node exec on 3.6\n"
    assert os.listdir(str(work)) == []


def test_a_pilot_runs_its_job_with_cvmfs_under_python36(tmp_path):
    """glidein_startup.sh started with Python 3.6 (CVMFS_PILOT_PYTHON): the whole pilot, its CVMFS step and its
    job on the oldest Python the node tier supports."""
    from cvmfs_pilot.factory import load_config, stage

    fqrn = "py36.example.org"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "hello").write_text("hello from a pilot on 3.6\n")
    config = _published(tmp_path / "src", fqrn, tmp_path)
    staging = tmp_path / "factory" / "staging"
    (tmp_path / "factory.toml").write_text("\n".join([
        "[factory]", 'name = "py36"', 'work_dir = "{}"'.format(tmp_path / "factory"),
        'staging_urls = ["file://{}/"]'.format(staging), "[factory.attributes]", 'GLIDEIN_CVMFS = "required"',
        'GLIDEIN_CVMFS_REPOS = "{}"'.format(fqrn), 'GLIDEIN_CVMFS_CONFIG_DIR = "{}"'.format(config),
        "[entries.e]", 'provider = "local"', "[entries.e.payload]",
        'commands = [["cat", "/cvmfs/{}/hello"], ["sh", "-c", "readlink /proc/$PPID/exe"]]'.format(fqrn)]) + "\n")
    index_sha256, _ = stage(load_config(tmp_path / "factory.toml"))
    result = subprocess.run(["/bin/sh", str(staging / "files" / "glidein_startup.sh"), "-factory",
                             "file://{}/".format(staging), "-factory-sha256", index_sha256, "-entry", "e",
                             "-work-dir", str(tmp_path / "pilots"), "-report", str(tmp_path / "report.json")],
                            env=dict(os.environ, CVMFS_PILOT_PYTHON=PYTHON36), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["payload"][0]["stdout_tail"] == "hello from a pilot on 3.6\n"
    assert report["cvmfs"]["mode"] == "userns"
    # the payload's parent is the pilot's inner part: Python 3.6
    assert os.path.realpath(report["payload"][1]["stdout_tail"].strip()) == os.path.realpath(PYTHON36)
    assert os.listdir(str(tmp_path / "pilots")) == []
