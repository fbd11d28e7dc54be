"""Fixtures for all tests. This directory is on sys.path, so tests import their helpers as ``support.*``."""

import contextlib
from pathlib import Path

import pytest

from support.nginx import nginx_serving
from support.squid import squid_proxy

# fixtures: `unprivileged`; `exec_published`, `exec_env`; `contract_staging`; `slurm`
pytest_plugins = ["support.unprivileged", "support.exec_env", "support.contract_dist", "support.slurm"]

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_dir():
    """``<project>/../shared``: the team's reference documents and fixtures, which CI always provides."""
    path = PROJECT.parent / "shared"
    if not path.is_dir():
        pytest.fail(f"{path} is missing: the tests need the shared reference and fixtures directory next to the "
                    f"project checkout; put it there (CI always does)", pytrace=False)
    return path


@pytest.fixture
def nginx(tmp_path_factory):
    """A function that starts nginx serving a directory: ``nginx(root_dir) -> base_url`` of root_dir.

    ``<base_url>/<fqrn>/...`` serves ``<root_dir>/<fqrn>/...`` (see support/nginx.py); every nginx started is
    stopped when the test ends.
    """
    with contextlib.ExitStack() as running:
        yield lambda root_dir: running.enter_context(nginx_serving(root_dir, tmp_path_factory.mktemp("nginx")))


@pytest.fixture
def squid(tmp_path_factory):
    """A function that starts a caching squid on a loopback port: ``squid() -> proxy_url``,
    ``http://127.0.0.1:PORT`` (see support/squid.py); every squid started is stopped when the test ends."""
    with contextlib.ExitStack() as running:
        yield lambda: running.enter_context(squid_proxy(tmp_path_factory.mktemp("squid")))


def _key_set(request, tmp_path_factory, name):
    from cvmfs_pilot.publish.keys import generate_keys
    directory = tmp_path_factory.mktemp(name)
    generate_keys(request.module.FQRN, directory)
    return directory


@pytest.fixture(scope="module")
def keys_dir(request, tmp_path_factory):
    """A key set for the test module's ``FQRN``, made once per module; tests that change key files copy them."""
    return _key_set(request, tmp_path_factory, "keys")


@pytest.fixture(scope="module")
def other_keys_dir(request, tmp_path_factory):
    """A second key set for the same repository name: a forger's."""
    return _key_set(request, tmp_path_factory, "other-keys")


@pytest.fixture
def repo(published, tmp_path):
    """A private copy of the test module's ``published`` repository, free to damage."""
    import shutil
    storage = tmp_path / "storage"
    shutil.copytree(str(published), str(storage), symlinks=True)
    return storage
