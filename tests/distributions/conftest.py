"""Fixtures for the distribution builder's tests: a local mirror of every upstream repository, served by nginx.

The stand-in packages are built once per session (rpmbuild, createrepo_c); each test gets its own copy of the
mirror, which it may change, behind its own nginx.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from cvmfs_pilot.dist.fetch import Fetcher
from support.yum import build_mirror, create_repo, local_directory, mirrored_definitions


@dataclass
class LocalMirror:
    """A served copy of the stand-in mirror: ``upstream`` is a definitions file pointing at it."""

    root: Path
    base_url: str
    upstream: Path

    def directory(self, upstream_url):
        """The directory of the repository the shipped definitions know by upstream_url."""
        return local_directory(self.root, upstream_url)

    def refresh(self, upstream_url, compression="gz"):
        create_repo(self.directory(upstream_url), compression)


@pytest.fixture(scope="session")
def pristine_mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    build_mirror(root, tmp_path_factory.mktemp("rpmbuild"))
    return root


@pytest.fixture
def mirror(pristine_mirror, nginx, tmp_path):
    root = tmp_path / "mirror"
    shutil.copytree(pristine_mirror, root, symlinks=True)
    base_url = nginx(root)
    return LocalMirror(root, base_url, mirrored_definitions(base_url, tmp_path / "upstream.json"))


@pytest.fixture
def fetcher():
    """A Fetcher that retries quickly."""
    return Fetcher(attempts=2, backoff=0.01, timeout=30)
