"""Fixtures for the FUSE tests: a published tree served by nginx, mounted as the unprivileged user. Whatever a
test leaves mounted or running is removed afterwards and reported as an error."""

import pytest

from support.fuse_env import FuseEnv, leftovers, leftovers_removed, wait_for


@pytest.fixture
def make_fuse_env(unprivileged, tmp_path, nginx):
    """``make_fuse_env(ttl=240) -> FuseEnv``; at most one per test."""
    made = []

    def make(**kwargs):
        made.append(FuseEnv(unprivileged, unprivileged.scratch(tmp_path), tmp_path, nginx, **kwargs))
        return made[-1]

    yield make
    for env in made:
        # a server stops on its own shortly after its file system is unmounted
        wait_for(lambda: leftovers(env.scratch, unprivileged.uid) == ([], []), 5)
        left = leftovers_removed(env.scratch, unprivileged.uid)
        assert not left, "the test left behind: {}".format("; ".join(left))


@pytest.fixture
def fuse_env(make_fuse_env):
    return make_fuse_env()
