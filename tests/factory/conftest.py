"""Fixtures for the factory's tests (helpers: support/factory_env.py)."""

import pytest

from cvmfs_pilot.factory import load_config
from cvmfs_pilot.factory import staging as factory_staging
from support.factory_env import FAKE_PILOT, write_factory


@pytest.fixture
def factory_dir(tmp_path):
    """A directory with the base factory.toml and its scripts."""
    write_factory(tmp_path)
    return tmp_path


@pytest.fixture
def config(factory_dir):
    return load_config(factory_dir / "factory.toml")


@pytest.fixture
def fake_bootstrap(monkeypatch):
    """Stage the stand-in bootstrap instead of the real glidein_startup.sh."""
    monkeypatch.setattr(factory_staging, "bootstrap_bytes", lambda: FAKE_PILOT.encode())
