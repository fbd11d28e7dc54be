"""Atomic file replacement: contents, permissions, and nothing left behind on a failure."""

import os
import stat

import pytest

from cvmfs_pilot.node.atomic_file import write_atomically


def test_a_new_file_gets_the_mode_asked_or_0666_minus_the_umask(tmp_path):
    write_atomically(tmp_path / "private", b"secret", mode=0o600)
    assert (tmp_path / "private").read_bytes() == b"secret"
    assert stat.S_IMODE(os.stat(tmp_path / "private").st_mode) == 0o600
    previous = os.umask(0o027)
    try:
        write_atomically(tmp_path / "default", b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "default").st_mode) == 0o640


def test_a_replaced_file_keeps_its_permissions_and_is_a_new_inode(tmp_path):
    path = tmp_path / "config"
    path.write_bytes(b"old")
    os.chmod(path, 0o751)
    inode = os.stat(path).st_ino
    write_atomically(path, b"new", sync=True)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o751
    assert os.stat(path).st_ino != inode  # renamed over, never rewritten in place


def test_a_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "config"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomically(path, "not bytes")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["config"]
