"""Safe tarball extraction (the rules the node will apply to distributions) and the reproducible packer."""

import glob
import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from cvmfs_pilot.node.safe_extract import ArchiveRejected, extract_tarball
from cvmfs_pilot.dist.tarball import pack


def make_tarball(path, members):
    """members: (name, kind, payload, mode) with kind file/dir/symlink/hardlink/chr/fifo."""
    kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
             "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, payload, mode in members:
            info = tarfile.TarInfo(name)
            info.type = kinds[kind]
            info.mode = mode
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                if kind in ("symlink", "hardlink"):
                    info.linkname = payload
                tar.addfile(info)
    return path


@pytest.fixture
def root(tmp_path):
    (tmp_path / "root").mkdir()
    return tmp_path / "root"


@pytest.mark.parametrize("members, message", [
    ([("/etc/evil", "file", b"x", 0o644)], "/etc/evil: absolute path"),
    ([("a/../../evil", "file", b"x", 0o644)], "contains '..'"),
    ([("link", "symlink", "../outside", 0o777)], "link: symbolic link target ../outside points outside"),
    ([("link", "symlink", "/etc/passwd", 0o777)], "link: absolute symbolic link target /etc/passwd"),
    ([("d/a", "symlink", "..", 0o777), ("d/b", "symlink", "a/../..", 0o777)],
     "d/b: the symbolic link, followed through the tree, points outside"),
    ([("lib", "symlink", "usr", 0o777), ("lib/x", "file", b"x", 0o644)],
     "lib/x: would be written through the symbolic link lib"),
    ([("target", "symlink", "elsewhere", 0o777), ("hard", "hardlink", "target", 0o644)],
     "hard: hard link to target, which is not a regular file"),
    ([("hard", "hardlink", "../../etc/passwd", 0o644)], "contains '..'"),
    ([("null", "chr", "", 0o666)], "null: device entries are not allowed"),
    ([("pipe", "fifo", "", 0o666)], "pipe: FIFO entries are not allowed"),
])
def test_crafted_tarballs_are_rejected(tmp_path, root, members, message):
    tarball = make_tarball(tmp_path / "crafted.tar.gz", members)
    with pytest.raises(ArchiveRejected, match=message.replace(".", r"\.").replace("(", r"\(")):
        extract_tarball(tarball, root)
    assert not (tmp_path / "outside").exists() and not (tmp_path / "evil").exists()


def test_setuid_bits_are_dropped_and_links_replaced_not_followed(tmp_path, root):
    tarball = make_tarball(tmp_path / "t.tar.gz", [
        ("bin/su-like", "file", b"x", 0o4755),
        ("bin/sg-like", "file", b"y", 0o2750),
        ("shared", "dir", "", 0o1777),
        ("kept", "file", b"original", 0o644),
        ("alias", "symlink", "kept", 0o777),
        ("alias", "file", b"replacement", 0o600),  # replaces the link; must not write into kept
        ("again", "hardlink", "kept", 0o644),
    ])
    assert extract_tarball(tarball, root) == 7
    assert stat.S_IMODE((root / "bin/su-like").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "bin/sg-like").stat().st_mode) == 0o750
    assert stat.S_IMODE((root / "shared").stat().st_mode) == 0o777
    assert (root / "kept").read_bytes() == b"original"
    assert not (root / "alias").is_symlink() and (root / "alias").read_bytes() == b"replacement"
    assert os.path.samefile(root / "again", root / "kept")


def test_damaged_tarballs_are_rejected(tmp_path, root):
    good = make_tarball(tmp_path / "good.tar.gz", [("file", "file", os.urandom(100000), 0o644)])
    data = good.read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[:len(data) // 2])
    with pytest.raises(ArchiveRejected, match="damaged archive|truncated"):
        extract_tarball(tmp_path / "cut.tar.gz", root)
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b" + os.urandom(1000))
    with pytest.raises(ArchiveRejected, match="damaged archive"):
        extract_tarball(tmp_path / "junk.tar.gz", tmp_path)


def test_packing_is_reproducible_and_round_trips(tmp_path):
    tree = tmp_path / "tree"
    (tree / "usr/lib64").mkdir(parents=True)
    (tree / "usr/lib64/libx.so.1").write_bytes(b"library")
    (tree / "usr/lib64/libx.so").symlink_to("libx.so.1")
    os.link(tree / "usr/lib64/libx.so.1", tree / "usr/lib64/libx-hard.so.1")
    (tree / "bin").mkdir()
    (tree / "bin/tool").write_text("#!/bin/sh\n")
    (tree / "bin/tool").chmod(0o755)
    (tree / "lib").symlink_to("usr/lib64")  # a link to a directory is packed as a link
    first = pack(tree, tmp_path / "a.tar.gz")
    os.utime(tree / "bin/tool", (0, 0))
    second = pack(tree, tmp_path / "b.tar.gz")
    assert first == second and (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    # each directory's files and links, then its subdirectories, by name
    assert list(members) == ["lib", "bin", "bin/tool", "usr", "usr/lib64", "usr/lib64/libx-hard.so.1",
                             "usr/lib64/libx.so", "usr/lib64/libx.so.1"]
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members.values()} == {(0, 0, "", "", 946684800)}
    assert members["usr/lib64/libx.so.1"].islnk() and members["lib"].issym()
    out = tmp_path / "out"
    out.mkdir()
    extract_tarball(tmp_path / "a.tar.gz", out)
    assert (out / "lib/libx.so").read_bytes() == b"library"
    assert stat.S_IMODE((out / "bin/tool").stat().st_mode) == 0o755


PYTHON36 = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.6*/bin/python3.6")))[:1]


@pytest.mark.skipif(not PYTHON36, reason="no Python 3.6 interpreter on this machine")
def test_the_rules_run_on_python36_for_the_node_tier(tmp_path, root):
    tarball = make_tarball(tmp_path / "t.tar.gz", [("ok/file", "file", b"data", 0o4755),
                                                   ("ok/link", "symlink", "../../escape", 0o777)])
    code = ("import sys\nfrom cvmfs_pilot.node.safe_extract import ArchiveRejected, extract_tarball\n"
            "try:\n    extract_tarball(sys.argv[1], sys.argv[2])\nexcept ArchiveRejected as exc:\n    print(exc)\n")
    src = Path(__file__).resolve().parents[2] / "src"
    result = subprocess.run([PYTHON36[0], "-c", code, str(tarball), str(root)], env={"PYTHONPATH": str(src)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
    assert result.stdout == "ok/link: symbolic link target ../../escape points outside the extraction directory\n"
    assert stat.S_IMODE((root / "ok/file").stat().st_mode) == 0o755
