"""The FUSE wire format: struct sizes, reply packing, READDIR records, INIT negotiation (no kernel involved)."""

import struct

import pytest

from cvmfs_pilot.fuse import protocol as p

KERNEL_6_8_FLAGS = 0x73FFFFFB  # everything a 7.39 kernel offers (INIT_EXT included)


def test_struct_sizes_match_fuse_h():
    sizes = {p.IN_HEADER: 40, p.OUT_HEADER: 16, p.ATTR: 88, p.ENTRY_OUT: 128, p.ATTR_OUT_HEAD: 16,
             p.OPEN_OUT: 16, p.READ_IN: 40, p.RELEASE_IN: 24, p.FORGET_ONE: 16, p.KSTATFS: 80, p.DIRENT: 24,
             p.INIT_OUT_22: 24, p.INIT_OUT: 64, p.NOTIFY_INVAL_INODE_OUT: 24, p.NOTIFY_INVAL_ENTRY_OUT: 16}
    assert {layout.format: layout.size for layout in sizes} == {layout.format: size for layout, size in
                                                                 sizes.items()}
    assert all(layout.format.startswith("=") for layout in sizes)
    assert p.OPCODE_NAMES[p.READDIRPLUS] == "READDIRPLUS" and p.OPCODE_NAMES[p.STATX] == "STATX"


def test_entry_and_attr_replies():
    attr = p.pack_attr(ino=7, size=100, blocks=1, mtime_ns=1_600_000_000_123_456_789, mode=0o100644, nlink=1,
                       uid=1000, gid=1000, rdev=0, blksize=131072)
    fields = p.ATTR.unpack(attr)
    assert fields[:6] == (7, 100, 1, 1_600_000_000, 1_600_000_000, 1_600_000_000)
    assert fields[6:9] == (123_456_789,) * 3 and fields[9:] == (0o100644, 1, 1000, 1000, 0, 131072, 0)
    old = p.ATTR.unpack(p.pack_attr(1, 0, 0, -1_500_000_000, 0o40755, 2, 0, 0, 0, 4096))
    assert old[4] == -2 and old[7] == 500_000_000  # before 1970: negative seconds, positive nanoseconds
    entry = p.pack_entry_out(42, attr, 21600, 1.5)
    assert len(entry) == 128
    assert p.ENTRY_OUT_HEAD.unpack_from(entry) == (42, 0, 21600, 1, 0, 500_000_000)
    assert entry[40:] == attr
    attr_out = p.pack_attr_out(attr, 3600)
    assert len(attr_out) == 104 and p.ATTR_OUT_HEAD.unpack_from(attr_out) == (3600, 0, 0)
    assert p.OPEN_OUT.unpack(p.pack_open_out(9, p.FOPEN_KEEP_CACHE)) == (9, 2, 0)
    statfs = p.pack_statfs(10, 5, 5, 0, 0, 4096, 255, 4096)
    assert len(statfs) == 80 and statfs[-24:] == bytes(24)


def test_dirents_are_padded_to_eight_bytes():
    for name in (b"a", b"1234567", b"12345678", "ünï".encode("utf-8") * 10):
        record = p.pack_dirent(5, 3, name, p.dirent_type(0o100644))
        assert len(record) % 8 == 0 and len(record) == p.dirent_size(len(name))
        assert p.DIRENT.unpack_from(record) == (5, 3, len(name), 8)
        assert record[24:24 + len(name)] == name and record[24 + len(name):] == bytes(len(record) - 24 - len(name))
    assert p.dirent_type(0o40755) == 4 and p.dirent_type(0o120777) == 10


def test_direntplus_records_and_the_lookups_they_count():
    attr = p.pack_attr(3, 0, 0, 0, 0o100644, 1, 0, 0, 0, 4096)
    records = [p.pack_direntplus(p.ZERO_ENTRY_OUT, 1, 1, b".", 4),
               p.pack_direntplus(p.pack_entry_out(7, attr, 1, 1), 1, 2, b"..", 4),  # never counted
               p.pack_direntplus(p.pack_entry_out(11, attr, 1, 1), 3, 3, b"file", 8),
               p.pack_direntplus(p.ZERO_ENTRY_OUT, 4, 4, b"skipped", 8),
               p.pack_direntplus(p.pack_entry_out(12, attr, 1, 1), 5, 5, b"x" * 100, 8)]
    for record, name in zip(records, (b".", b"..", b"file", b"skipped", b"x" * 100)):
        assert len(record) == p.direntplus_size(len(name)) and len(record) % 8 == 0
        assert record[152:152 + len(name)] == name
    assert p.direntplus_nodeids(b"".join(records)) == [11, 12]


def test_notifications():
    assert p.NOTIFY_INVAL_INODE_OUT.unpack(p.pack_notify_inval_inode(9, -1, 0)) == (9, -1, 0)
    body = p.pack_notify_inval_entry(1, b"name")
    assert p.NOTIFY_INVAL_ENTRY_OUT.unpack_from(body) == (1, 4, 0) and body[16:] == b"name\0"


def test_init_for_rhel7_kernels_uses_the_24_byte_reply():
    offered = p.ASYNC_READ | p.POSIX_LOCKS | p.ATOMIC_O_TRUNC | p.BIG_WRITES | p.AUTO_INVAL_DATA | \
        p.DO_READDIRPLUS | p.READDIRPLUS_AUTO
    connection = p.negotiate_init(p.InitRequest(7, 22, 131072, offered))
    assert connection.minor == 22 and not connection.retry and len(connection.reply) == 24
    major, minor, readahead, flags, background, congestion, max_write = p.INIT_OUT_22.unpack(connection.reply)
    assert (major, minor, readahead) == (7, 22, 131072)
    assert flags == p.ASYNC_READ | p.DO_READDIRPLUS | p.READDIRPLUS_AUTO
    assert background == p.MAX_BACKGROUND and max_write == 4096
    assert connection.max_pages == 0


def test_init_for_new_kernels():
    request = p.InitRequest.parse(struct.pack("=5I44x", 7, 39, 131072, KERNEL_6_8_FLAGS, 0x3F))
    assert request.minor == 39 and request.flags2 == 0x3F
    connection = p.negotiate_init(request)
    assert connection.minor == 38 and len(connection.reply) == 64
    fields = p.INIT_OUT.unpack(connection.reply)
    assert fields[:3] == (7, 38, 131072)
    assert fields[3] == p.WANTED_FLAGS and not fields[3] & (p.AUTO_INVAL_DATA | p.WRITEBACK_CACHE | p.INIT_EXT)
    assert fields[7:11] == (1, 256, 0, 0)  # time_gran, max_pages, map_alignment, flags2
    assert connection.flags & p.MAX_PAGES and connection.max_pages == 256
    assert p.negotiate_init(p.InitRequest(7, 23, 65536, p.ASYNC_READ)).reply[:16] == struct.pack(
        "=4I", 7, 23, 65536, p.ASYNC_READ)


def test_init_only_sets_flags_the_kernel_offered():
    connection = p.negotiate_init(p.InitRequest(7, 31, 131072, p.ASYNC_READ | p.CACHE_SYMLINKS))
    assert connection.flags == p.ASYNC_READ | p.CACHE_SYMLINKS and connection.max_pages == 0
    assert p.INIT_OUT.unpack(connection.reply)[8] == 0


def test_init_version_edges():
    newer = p.negotiate_init(p.InitRequest(8, 0, 131072, 0))
    assert newer.retry and p.INIT_OUT_22.unpack(newer.reply)[:2] == (7, 38)
    for major, minor in ((7, 11), (6, 40)):
        with pytest.raises(p.ProtocolError, match="needs 7.12"):
            p.negotiate_init(p.InitRequest(major, minor, 0, 0))
