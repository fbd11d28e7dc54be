"""Fixtures for the node layer's tests."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from support.contract_dist import build_contract_staging, make_world_readable
from support.exec_env import ExecEnv, publish_config_repository, publish_content_repositories


@pytest.fixture(scope="session")
def contract_staging():
    """A staging area (support.contract_dist.ContractStaging) built once per session by the real builder, whose
    cvmfs2 el9-x86_64 distribution runs our engine behind cvmfs2's command line.

    It lies below a fresh 0755 directory in /tmp (pytest's tmp_path_factory sits below a root-only directory
    when the tests run as root) and is world-readable, so the unprivileged test user can fetch it (by file://
    or through nginx) and unpack it. Removed at the end of the session.
    """
    base = Path(tempfile.mkdtemp(prefix="cvmfs-pilot-contract-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        staging = build_contract_staging(base / "srv", base / "work")
        make_world_readable(base)
        yield staging
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def exec_published(tmp_path_factory):
    """Keys of the three node-exec repositories, and one and two published (support.exec_env)."""
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
