"""``fs mount`` options as cvmfs2 takes them, ``-o config=`` files, and which ways to mount a process has."""

import os

import pytest

from cvmfs_pilot.fuse.cli import MountOptions, config_file_overrides

from support.fuse_env import IN_NAMESPACE, PYTHON


def test_mount_options_as_cvmfs2_takes_them():
    options = MountOptions.parse(["config=a.conf:/etc/b.conf,debug", "allow_other"])
    assert options.config_files == [os.path.join(os.getcwd(), "a.conf"), "/etc/b.conf"]
    assert options.debug and options.allow_other
    assert not MountOptions.parse([]).debug
    with pytest.raises(ValueError, match="unknown mount option 'uid=0'"):
        MountOptions.parse(["debug,uid=0"])


def test_config_files_become_overrides(tmp_path):
    first, second = tmp_path / "first.conf", tmp_path / "second.conf"
    first.write_text("CVMFS_HTTP_PROXY=DIRECT\nCVMFS_SERVER_URL='http://a/@fqrn@'\n")
    second.write_text("export CVMFS_SERVER_URL=\"$BASE/@fqrn@\"\n")
    overrides = config_file_overrides([str(first), str(second)], {"BASE": "http://b"})
    assert overrides == {"CVMFS_HTTP_PROXY": "DIRECT", "CVMFS_SERVER_URL": "http://b/@fqrn@"}
    with pytest.raises(ValueError, match="does not exist"):
        config_file_overrides([str(tmp_path / "missing.conf")], {})


def test_available_ways_to_mount(unprivileged, tmp_path):
    code = "from cvmfs_pilot.fuse.mount import available_methods; print(available_methods())"
    plain = unprivileged.run([PYTHON, "-c", code])
    assert plain.stdout == "['fusermount']\n", plain.stderr
    inside = unprivileged.run(IN_NAMESPACE + ["{} -c '{}'".format(PYTHON, code.replace("'", '"'))])
    assert inside.stdout.startswith("['mount(2)'"), inside.stderr
