"""The file system object on its own (no kernel): nodeids and lookup counts, listings, reads, extended attributes,
and what a reload to a newer revision invalidates."""

import errno
import os
import time

import pytest

from cvmfs_pilot.fuse import filesystem as filesystem_module
from cvmfs_pilot.fuse import protocol as p
from cvmfs_pilot.fuse.filesystem import CACHE_TIMEOUT, CvmfsFileSystem

from support.client_env import open_with, write_config
from support.fuse_env import make_tree
from support.repo import make_keys, publish_tree

FQRN = "fs.example.org"


class RecordingNotifier:
    def __init__(self):
        self.calls = []

    def notify_inval_entry(self, parent, name):
        self.calls.append(("entry", parent, name))
        return True

    def notify_inval_inode(self, nodeid, offset=0, length=0):
        self.calls.append(("inode", nodeid, offset, length))
        return True


@pytest.fixture
def served(tmp_path, nginx):
    keys = make_keys(tmp_path / "keys", FQRN)
    src = make_tree(tmp_path / "src")
    (src / "data" / "changed.txt").write_text("first\n")
    (src / "data" / "gone.txt").write_text("gone soon\n")
    storage = tmp_path / "srv" / FQRN
    publish_tree(src, storage, FQRN, keys, ttl=1)
    config = write_config(tmp_path / "etc", FQRN, nginx(tmp_path / "srv") + "/@fqrn@", keys / (FQRN + ".pub"),
                          tmp_path / "cache")
    return dict(src=src, storage=storage, keys=keys, config=config)


def start(served, offered=p.WANTED_FLAGS):
    notifier = RecordingNotifier()
    fs = CvmfsFileSystem(open_with(served["config"], FQRN), reload_interval=3600)
    fs.init(p.negotiate_init(p.InitRequest(7, 38, 131072, offered)), notifier)
    fs.notifications = notifier.calls
    return fs


@pytest.fixture
def filesystem(served):
    """With file handles (a kernel without NO_OPEN_SUPPORT)."""
    fs = start(served)
    yield fs
    fs.close()


def lookup(fs, parent, name):
    reply = fs.lookup(parent, name)
    nodeid, _, entry_valid = p.ENTRY_OUT_HEAD.unpack_from(reply)[:3]
    return nodeid, entry_valid, p.ATTR.unpack_from(reply, 40)


def resolve(fs, path):
    nodeid = p.ROOT_ID
    for name in path.strip("/").split("/"):
        nodeid = lookup(fs, nodeid, name.encode())[0]
    return nodeid


def parse_dirents(reply, plus=False):
    records, position = [], 0
    head = p.ENTRY_OUT_SIZE if plus else 0
    while position < len(reply):
        nodeid = p.ENTRY_OUT_HEAD.unpack_from(reply, position)[0] if plus else None
        ino, offset, namelen, kind = p.DIRENT.unpack_from(reply, position + head)
        start = position + head + p.DIRENT.size
        records.append((reply[start:start + namelen], ino, offset, kind, nodeid))
        position += (p.direntplus_size if plus else p.dirent_size)(namelen)
    return records


def list_all(fs, fh, size=4096, plus=False):
    records, offset = [], 0
    while True:
        page = parse_dirents((fs.readdirplus if plus else fs.readdir)(fh, offset, size), plus)
        if not page:
            return records
        assert all(len(record[0]) for record in page)
        records += page
        offset = page[-1][2]


def test_lookups_count_and_forget(filesystem):
    fs = filesystem
    data, valid, attr = lookup(fs, p.ROOT_ID, b"data")
    assert data > p.ROOT_ID and valid == CACHE_TIMEOUT
    assert attr[0] == fs.repository.stat("/data").st_ino and attr[9] & 0o170000 == 0o040000
    assert lookup(fs, p.ROOT_ID, b"data")[0] == data
    assert p.ATTR.unpack_from(fs.getattr(data), 16) == attr
    hard_a, _, attr_a = lookup(fs, data, b"hard-a")
    hard_b, _, attr_b = lookup(fs, data, b"hard-b")
    assert hard_a != hard_b and attr_a[0] == attr_b[0] and attr_a[10] == 2  # hard links share st_ino
    fs.forget([(data, 2)])
    with pytest.raises(OSError) as stale:
        fs.getattr(data)
    assert stale.value.errno == errno.ESTALE
    again = lookup(fs, p.ROOT_ID, b"data")[0]
    assert again > hard_b  # nodeids are never reused
    negative, valid, _ = lookup(fs, again, b"no-such-file")
    assert negative == 0 and valid == CACHE_TIMEOUT
    with pytest.raises(OSError) as notdir:
        fs.lookup(resolve(fs, "/README.txt"), b"x")
    assert notdir.value.errno == errno.ENOTDIR


def test_listings_in_pages(filesystem, served):
    fs = filesystem
    many = resolve(fs, "/many")
    fh = p.OPEN_OUT.unpack(fs.opendir(many, os.O_RDONLY))[0]
    records = list_all(fs, fh)
    names = [record[0] for record in records]
    assert names[:2] == [b".", b".."] and len(names) == 402
    assert names[2:] == sorted(os.fsencode(name) for name in os.listdir(str(served["src"] / "many")))
    assert [record[2] for record in records] == list(range(1, 403))  # each cookie: the position after it
    assert all(record[3] == 8 for record in records[2:])
    assert list_all(fs, fh, size=100)[5][0] == names[5]  # one record per request still works
    fs.releasedir(fh)
    fh = p.OPEN_OUT.unpack(fs.opendir(many, os.O_RDONLY))[0]
    plus = list_all(fs, fh, size=8192, plus=True)
    assert [record[0] for record in plus] == names
    assert plus[0][4] == plus[1][4] == 0  # . and .. carry no entry
    children = [record[4] for record in plus[2:]]
    assert all(children) and len(set(children)) == 400
    assert lookup(fs, many, names[7])[0] == children[5]  # the same node a lookup finds
    fs.forget([(nodeid, 1) for nodeid in children] + [(children[5], 1)])  # READDIRPLUS and lookup counted
    assert lookup(fs, many, names[7])[0] != children[5]
    fs.releasedir(fh)


def test_reads_and_attributes(filesystem, served):
    fs = filesystem
    chunked = resolve(fs, "/data/chunked.bin")
    fh = p.OPEN_OUT.unpack(fs.open(chunked, os.O_RDONLY))
    assert fh[1] == p.FOPEN_KEEP_CACHE
    expected = (served["src"] / "data" / "chunked.bin").read_bytes()
    for offset, size in ((0, 4096), (4000, 131072), (299_990, 4096), (300_000, 10)):
        assert fs.read(chunked, fh[0], offset, size) == expected[offset:offset + size]
    fs.release(fh[0])
    with pytest.raises(OSError) as rofs:
        fs.open(chunked, os.O_RDWR)
    assert rofs.value.errno == errno.EROFS
    tagged = resolve(fs, "/data/tagged.txt")
    assert fs.getxattr(tagged, b"user.origin") == b"fuse test"
    assert fs.getxattr(tagged, b"user.fqrn") == FQRN.encode()
    assert b"user.revision" in fs.listxattr(tagged)
    with pytest.raises(OSError) as missing:
        fs.getxattr(tagged, b"security.selinux")
    assert missing.value.errno == errno.ENODATA
    assert fs.readlink(resolve(fs, "/links/relative")) == b"../data/small.bin"
    with pytest.raises(OSError) as write:
        fs.access(tagged, p.W_OK)
    assert write.value.errno == errno.EROFS
    blocks, bfree, _, _, _, bsize, namelen, _ = p.KSTATFS.unpack(fs.statfs(p.ROOT_ID))[:8]
    assert blocks > 0 and bsize == 4096 and namelen == 255


def test_reload_invalidates_what_changed(filesystem, served):
    fs, src = filesystem, served["src"]
    data = resolve(fs, "/data")
    changed = lookup(fs, data, b"changed.txt")[0]
    unchanged = lookup(fs, data, b"small.bin")[0]
    gone = lookup(fs, data, b"gone.txt")[0]
    assert lookup(fs, data, b"new.txt")[0] == 0  # a cached negative entry
    fh = p.OPEN_OUT.unpack(fs.opendir(data, os.O_RDONLY))[0]
    list_all(fs, fh)
    fs.releasedir(fh)
    old_file = p.OPEN_OUT.unpack(fs.open(changed, os.O_RDONLY))[0]
    (src / "data" / "changed.txt").write_text("second revision\n")
    (src / "data" / "new.txt").write_text("new\n")
    (src / "data" / "gone.txt").unlink()
    publish_tree(src, served["storage"], FQRN, served["keys"], ttl=1)
    time.sleep(1.1)
    fs.reload()
    assert fs.repository.manifest.revision == 2
    calls = fs.notifications
    assert ("entry", data, b"changed.txt") in calls and ("entry", data, b"gone.txt") in calls
    assert ("entry", data, b"new.txt") in calls and ("inode", data, 0, 0) in calls
    assert not [call for call in calls if call[1] == unchanged or call[2:3] == (b"small.bin",)]
    assert fs.read(changed, old_file, 0, 100) == b"first\n"  # an open file keeps its revision
    new_changed, _, attr = lookup(fs, data, b"changed.txt")
    assert new_changed != changed and attr[1] == len("second revision\n")
    assert lookup(fs, data, b"small.bin")[0] == unchanged
    assert lookup(fs, data, b"new.txt")[0] > 0 and lookup(fs, data, b"gone.txt")[0] == 0
    with pytest.raises(OSError):
        fs.readlink(gone)
    fs.release(old_file)


def test_without_open_reads_go_by_node(served, monkeypatch):
    monkeypatch.setattr(filesystem_module, "MAX_OPEN_NODES", 2)
    fs = start(served, p.WANTED_FLAGS | p.NO_OPEN_SUPPORT)
    try:
        chunked = resolve(fs, "/data/chunked.bin")
        with pytest.raises(OSError) as local:
            fs.open(chunked, os.O_RDONLY)
        assert local.value.errno == errno.ENOSYS  # the kernel opens files itself from now on
        names = ["data/chunked.bin", "data/small.bin", "data/two-mb.bin", "README.txt", "data/hard-a"]
        nodes = {name: resolve(fs, "/" + name) for name in names}
        for _ in range(2):  # more files than stay open: the least recently read are closed and reopened
            for name, nodeid in nodes.items():
                expected = (served["src"] / name).read_bytes()
                assert fs.read(nodeid, 0, 0, 1 << 20) + fs.read(nodeid, 0, 1 << 20, 4 << 20) == expected
        fs.forget([(nodeid, 1) for nodeid in nodes.values()])
        with pytest.raises(OSError) as forgotten:
            fs.read(nodes["README.txt"], 0, 0, 10)
        assert forgotten.value.errno == errno.ESTALE
    finally:
        fs.close()
