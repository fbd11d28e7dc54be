"""Repositories and a client configuration for ``node exec`` tests, used as the unprivileged user.

Three repositories are published once per module: ``config.exec.test`` (the config repository, whose
``etc/cvmfs/config.d/two.exec.test.conf`` alone says where ``two.exec.test`` is served), ``one.exec.test`` and
``two.exec.test``. An :class:`ExecEnv` gives each test a scratch directory the user owns, with ``etc/`` (a
configuration root naming the config repository), ``work/`` (the pilot's work directory) and ``cache/``.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cvmfs_pilot.client.export import FORK_THRESHOLD

from support.fuse_env import leftovers, leftovers_removed, wait_for
from support.repo import make_keys, publish_tree

PYTHON = sys.executable
NODE = [PYTHON, "-m", "cvmfs_pilot", "node"]
CONFIG_REPO, ONE, TWO = "config.exec.test", "one.exec.test", "two.exec.test"
REPOSITORIES = (CONFIG_REPO, ONE, TWO)
MANY_FILES = FORK_THRESHOLD + 20  # one.exec.test/many: enough for an export to fork worker processes


def _write_tree(source, files):
    for name, content in files.items():
        path = Path(source) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def publish_content_repositories(root):
    """Keys for all three repositories below root/keys; one and two published below root/srv."""
    root = Path(root)
    contents = {ONE: {"hello.txt": "hello from one\n", "bin/tool.sh": "#!/bin/sh\necho tool of one\n",
                      "data/big.bin": os.urandom(300_000)},
                TWO: {"greeting.txt": "greetings from two\n"}}
    contents[ONE].update(("many/f{:03d}".format(i), "{}\n".format(i)) for i in range(MANY_FILES))
    for fqrn in REPOSITORIES:
        make_keys(root / "keys", fqrn)
    for fqrn, files in contents.items():
        _write_tree(root / "src" / fqrn, files)
        for script in (root / "src" / fqrn).glob("bin/*.sh"):
            script.chmod(0o755)
        publish_tree(root / "src" / fqrn, root / "srv" / fqrn, fqrn, root / "keys")
    return root


def publish_config_repository(published, source, storage_root, base_url):
    """The config repository (keys from published), whose config.d file alone says where two.exec.test is
    served (base_url)."""
    _write_tree(source, {"etc/cvmfs/config.d/{}.conf".format(TWO): 'CVMFS_SERVER_URL="{}/@fqrn@"\n'.format(
        base_url)})
    publish_tree(source, Path(storage_root) / CONFIG_REPO, CONFIG_REPO, Path(published) / "keys")


class ExecEnv:
    def __init__(self, unprivileged, scratch, published_root, base_url):
        self.unprivileged = unprivileged
        self.scratch = Path(scratch)
        self.base_url = base_url
        self.keys = Path(published_root) / "keys"
        self.etc = self.scratch / "etc"
        self.work = self.scratch / "work"
        self.cache = self.scratch / "cache"
        for path in (self.etc / "config.d", self.etc / "default.d", self.etc / "keys", self.work, self.cache):
            path.mkdir(parents=True, exist_ok=True)
        for fqrn in REPOSITORIES:
            shutil.copy(self.keys / (fqrn + ".pub"), self.etc / "keys" / (fqrn + ".pub"))
        (self.etc / "default.d" / "50-test.conf").write_text("CVMFS_CONFIG_REPOSITORY={}\n".format(CONFIG_REPO))
        (self.etc / "default.local").write_text(
            "CVMFS_HTTP_PROXY=DIRECT\nCVMFS_CACHE_BASE={}\nCVMFS_TIMEOUT=2\nCVMFS_TIMEOUT_DIRECT=2\n"
            "CVMFS_BACKOFF_INIT=0.05\nCVMFS_BACKOFF_MAX=0.1\n".format(self.cache))
        for fqrn in (CONFIG_REPO, ONE):
            (self.etc / "config.d" / (fqrn + ".conf")).write_text(
                'CVMFS_SERVER_URL="{}/@fqrn@"\n'.format(base_url))
        unprivileged.own(self.scratch)

    def node(self, *args):
        return NODE + list(args)

    def exec_command(self, job, repos=(ONE,), *options):
        return self.node("exec", "--work-dir", str(self.work), "--config-dir", str(self.etc),
                         "--repos", ",".join(repos), *options, "--", *job)

    def environ(self, extra=None):
        env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
        user = self.unprivileged.user
        if user is not None:
            env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
        env.update(extra or {})
        return env

    def run(self, command, timeout=120, env=None):
        return self.unprivileged.run(command, cwd=str(self.scratch), env=self.environ(env), timeout=timeout)

    def popen(self, command, env=None, **kwargs):
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("universal_newlines", True)
        user = self.unprivileged.user
        if user is not None:
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        return subprocess.Popen(command, cwd=str(self.scratch), env=self.environ(env), **kwargs)

    def leftovers(self):
        return leftovers(self.scratch, self.unprivileged.uid)

    def assert_clean(self, timeout=10):
        """Nothing of the pilot remains: no process of the user using the scratch directory, no mount below
        it, no run directory or mount directory in the work directory."""
        wait_for(lambda: self.leftovers() == ([], []), timeout)
        left = leftovers_removed(self.scratch, self.unprivileged.uid)
        assert not left, "left behind: {}".format("; ".join(left))
        assert sorted(os.listdir(self.work)) == [], "left in the work directory: {}".format(os.listdir(self.work))


def wait_for_file(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise AssertionError("{} did not appear within {} s".format(path, timeout))
        time.sleep(0.05)


def kill9(pid):
    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def exec_published(tmp_path_factory):
    """Keys of the three repositories, and one and two published."""
    return publish_content_repositories(tmp_path_factory.mktemp("exec-published"))


@pytest.fixture
def exec_env(exec_published, unprivileged, nginx, tmp_path):
    """An ExecEnv: the three repositories served by nginx, a configuration and a work directory for the user.
    Whatever a test leaves running or mounted fails it."""
    storage = tmp_path / "srv"
    shutil.copytree(exec_published / "srv", storage)
    base_url = nginx(storage)
    publish_config_repository(exec_published, tmp_path / "src-config", storage, base_url)
    env = ExecEnv(unprivileged, unprivileged.scratch(tmp_path), exec_published, base_url)
    yield env
    env.assert_clean()
