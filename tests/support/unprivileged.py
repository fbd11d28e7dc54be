"""Running parts of a test as an unprivileged user.

CI runs as root; ``scripts/setup-tests.sh`` creates the user named by ``CVMFS_PILOT_TEST_USER`` (default
``cvmfspilot``). Run by an ordinary user, the tests use that user itself.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

TEST_USER = os.environ.get("CVMFS_PILOT_TEST_USER", "cvmfspilot")


class Unprivileged:
    def __init__(self, user):
        self.user = user  # a pwd entry, or None when we are unprivileged already
        self._scratch = []

    @property
    def uid(self):
        return self.user.pw_uid if self.user else os.getuid()

    def scratch(self, tmp_path):
        """A directory the user can reach: pytest's tmp_path sits below a root-only directory."""
        if self.user is None:
            return tmp_path
        path = Path(tempfile.mkdtemp(prefix="cvmfs-pilot-test-", dir="/tmp"))
        os.chmod(path, 0o755)
        self._scratch.append(path)
        return path

    def own(self, path):
        """Give ``path`` and everything below it to the user."""
        if self.user is None:
            return
        for dirpath, dirnames, filenames in os.walk(path):
            for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
                os.lchown(name, self.user.pw_uid, self.user.pw_gid)

    def run(self, command, **kwargs):
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("universal_newlines", True)
        kwargs.setdefault("timeout", 300)
        if self.user is not None:
            kwargs.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
            env = dict(kwargs.pop("env", os.environ))
            env.update(HOME=self.user.pw_dir, USER=self.user.pw_name, LOGNAME=self.user.pw_name)
            kwargs["env"] = env
        return subprocess.run(command, **kwargs)

    def cleanup(self):
        for path in self._scratch:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def unprivileged():
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(TEST_USER)
        except KeyError:
            pytest.fail("test user {!r} does not exist; run scripts/setup-tests.sh as root first".format(TEST_USER))
    else:
        user = None
    helper = Unprivileged(user)
    yield helper
    helper.cleanup()
