"""RPM reading and unpacking: real packages from rpmbuild with every payload compressor, and crafted ones that
must be rejected (or, for setuid bits, defused)."""

import gzip
import hashlib
import os
import stat
import struct

import pytest

from cvmfs_pilot.dist.errors import RpmError
from cvmfs_pilot.dist.rpm import RpmPackage, unpack_rpm
from cvmfs_pilot.node.safe_extract import ArchiveRejected
from support.yum import Device, StandIn, Symlink, build_rpms

COMPRESSORS = {"gzip": "w6.gzdio", "xz": "w2.xzdio", "zstd": "w3.zstdio", "bzip2": "w9.bzdio",
               "lzma": "w5.lzdio"}


def _build(tmp_path_factory, name, files, modes=None, compressor="w6.gzdio", arch="x86_64"):
    work = tmp_path_factory.mktemp(name)
    package = StandIn(name, "1.2", "3.el9", arch, files, modes or {})
    return build_rpms([package], work / "out", work / "build", compressor)[0]


@pytest.fixture(scope="module")
def plain_rpm(tmp_path_factory):
    return _build(tmp_path_factory, "plain", {"/usr/bin/tool": b"#!/bin/sh\necho tool\n"}, {"/usr/bin/tool": "0755"})


def payload_offset(data):
    """Where the payload of an RPM file starts: after the lead and both headers."""
    offset = 96
    for padded in (True, False):
        count, size = struct.unpack_from(">II", data, offset + 8)
        offset += 16 + 16 * count + size
        if padded:
            offset += -size % 8
    return offset


def cpio_entry(name, mode, data=b"", ino=1, nlink=1):
    encoded = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
    out = b"070701" + b"".join(b"%08X" % value for value in fields) + encoded
    out += bytes(-len(out) % 4) + data
    return out + bytes(-len(data) % 4)


def with_payload(rpm, entries, target, fix_digest=True):
    """A copy of rpm (gzip payload) whose payload is a cpio archive of the given entries; the header's payload
    digest is made to match unless fix_digest is false."""
    payload = gzip.compress(b"".join(entries) + cpio_entry("TRAILER!!!", 0, ino=0))
    return with_raw_payload(rpm, payload, target, fix_digest)


def with_raw_payload(rpm, payload, target, fix_digest=True):
    """A copy of rpm whose payload bytes are replaced, as a crafted package would have them: with a matching
    payload digest in the header unless fix_digest is false."""
    data = rpm.read_bytes()
    start = payload_offset(data)
    headers = data[:start]
    if fix_digest:
        old, new = (hashlib.sha256(p).hexdigest().encode() for p in (data[start:], payload))
        assert headers.count(old) == 1
        headers = headers.replace(old, new)
    target.write_bytes(headers + payload)
    return target


@pytest.mark.parametrize("compressor", sorted(COMPRESSORS))
def test_every_payload_compressor_unpacks(compressor, tmp_path_factory, tmp_path):
    files = {"/usr/lib64/libx.so.1": os.urandom(5000), "/usr/lib64/libx.so": Symlink("/usr/lib64/libx.so.1"),
             "/etc/cvmfs/default.conf": b"CVMFS_QUOTA_LIMIT=4000\n"}
    rpm = _build(tmp_path_factory, "c" + compressor, files, compressor=COMPRESSORS[compressor])
    with RpmPackage(rpm) as package:
        assert (package.name, package.version, package.release, package.arch, package.epoch) == (
            "c" + compressor, "1.2", "3.el9", "x86_64", 0)
        assert package.compressor == compressor
    assert unpack_rpm(rpm, tmp_path) == ("c" + compressor, 0, "1.2", "3.el9", "x86_64")
    assert (tmp_path / "usr/lib64/libx.so.1").read_bytes() == files["/usr/lib64/libx.so.1"]
    assert os.readlink(tmp_path / "usr/lib64/libx.so") == "../../usr/lib64/libx.so.1"
    assert (tmp_path / "etc/cvmfs/default.conf").read_bytes() == files["/etc/cvmfs/default.conf"]


def test_setuid_and_setgid_bits_are_dropped(tmp_path_factory, tmp_path):
    rpm = _build(tmp_path_factory, "setuid", {"/usr/bin/su-like": b"x", "/usr/bin/sg-like": b"y"},
                 {"/usr/bin/su-like": "4755", "/usr/bin/sg-like": "2711"})
    unpack_rpm(rpm, tmp_path)
    assert stat.S_IMODE((tmp_path / "usr/bin/su-like").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "usr/bin/sg-like").stat().st_mode) == 0o711


def test_a_device_node_is_rejected(tmp_path_factory, tmp_path):
    rpm = _build(tmp_path_factory, "device", {"/usr/bin/tool": b"x", "/dev/fake-null": Device("c", 1, 3)})
    with pytest.raises(ArchiveRejected, match="dev/fake-null: device node, FIFO or socket entries are not allowed"):
        unpack_rpm(rpm, tmp_path)
    assert not (tmp_path / "dev/fake-null").exists()


def test_a_symlink_pointing_outside_is_rejected(tmp_path_factory, tmp_path):
    rpm = _build(tmp_path_factory, "escape", {"/usr/lib64/evil": Symlink("../../../../etc/passwd")})
    with pytest.raises(ArchiveRejected, match="usr/lib64/evil: symbolic link target ../../../../etc/passwd points "
                                              "outside"):
        unpack_rpm(rpm, tmp_path)


def test_an_absolute_path_is_rejected(plain_rpm, tmp_path):
    crafted = with_payload(plain_rpm, [cpio_entry("/etc/cron.d/evil", 0o100644, b"* * * * * root x\n")],
                           tmp_path / "crafted.rpm")
    (tmp_path / "root").mkdir()
    with pytest.raises(ArchiveRejected, match="/etc/cron.d/evil: absolute path"):
        unpack_rpm(crafted, tmp_path / "root")


def test_a_dot_dot_path_is_rejected(plain_rpm, tmp_path):
    crafted = with_payload(plain_rpm, [cpio_entry("./usr/../../outside", 0o100644, b"x")], tmp_path / "c.rpm")
    (tmp_path / "root").mkdir()
    with pytest.raises(ArchiveRejected, match=r"\./usr/\.\./\.\./outside: the path contains '\.\.'"):
        unpack_rpm(crafted, tmp_path / "root")
    assert not (tmp_path / "outside").exists()


def test_writing_through_a_symlink_and_escaping_link_chains_are_rejected(plain_rpm, tmp_path):
    (tmp_path / "root").mkdir()
    through = with_payload(plain_rpm, [cpio_entry("./lib", 0o120777, b"usr"),
                                       cpio_entry("./lib/x", 0o100644, b"x")], tmp_path / "through.rpm")
    with pytest.raises(ArchiveRejected, match="lib/x: would be written through the symbolic link lib"):
        unpack_rpm(through, tmp_path / "root")
    (tmp_path / "root2").mkdir()
    chain = with_payload(plain_rpm, [cpio_entry("./d/a", 0o120777, b".."),  # d/a -> the root: fine alone
                                     cpio_entry("./d/b", 0o120777, b"a/../..")],  # lexically "." but really ..
                         tmp_path / "chain.rpm")
    with pytest.raises(ArchiveRejected, match="d/b: the symbolic link, followed through the tree, points "
                                              "outside"):
        unpack_rpm(chain, tmp_path / "root2")


def test_hard_links_and_build_id_links_as_makedist(plain_rpm, tmp_path):
    crafted = with_payload(plain_rpm, [
        cpio_entry("./usr/bin/a", 0o100755, b"", ino=7, nlink=2),
        cpio_entry("./usr/bin/b", 0o100755, b"shared", ino=7, nlink=2),
        cpio_entry("./usr/lib/.build-id/ab/cdef", 0o120777, b"../../../../usr/bin/a"),
    ], tmp_path / "links.rpm")
    (tmp_path / "root").mkdir()
    unpack_rpm(crafted, tmp_path / "root")
    assert (tmp_path / "root/usr/bin/a").read_bytes() == b"shared"
    assert os.path.samefile(tmp_path / "root/usr/bin/a", tmp_path / "root/usr/bin/b")
    assert not (tmp_path / "root/usr/lib").exists()


def test_a_truncated_payload_is_rejected(plain_rpm, tmp_path):
    data = plain_rpm.read_bytes()
    start = payload_offset(data)
    truncated = tmp_path / "truncated.rpm"
    truncated.write_bytes(data[:start + (len(data) - start) // 2])
    (tmp_path / "root").mkdir()
    with pytest.raises(RpmError, match="payload sha256 digest mismatch"):
        unpack_rpm(truncated, tmp_path / "root")
    # Without the digest's protection (a crafted header agrees with the cut payload), the decompressor notices.
    with_raw_payload(plain_rpm, data[start:start + (len(data) - start) // 2], truncated)
    with pytest.raises(RpmError, match="gzip payload is damaged or truncated"):
        unpack_rpm(truncated, tmp_path / "root")
    header_cut = tmp_path / "header-cut.rpm"
    header_cut.write_bytes(data[:start - 10])
    with pytest.raises(RpmError, match="truncated: the file ends inside the main header"):
        RpmPackage(header_cut)


def test_a_payload_that_is_not_the_one_the_header_describes_is_rejected(plain_rpm, tmp_path):
    crafted = with_payload(plain_rpm, [cpio_entry("./usr/bin/tool", 0o100755, b"replaced")], tmp_path / "c.rpm",
                           fix_digest=False)
    (tmp_path / "root").mkdir()
    with pytest.raises(RpmError, match="payload sha256 digest mismatch"):
        unpack_rpm(crafted, tmp_path / "root")


@pytest.mark.parametrize("compressor", sorted(COMPRESSORS))
def test_a_payload_damaged_anywhere_is_rejected_before_unpacking(tmp_path_factory, tmp_path, compressor):
    """Every single damaged byte of the compressed payload is caught by the payload digest before anything is
    unpacked. A crafted package whose digest agrees with the damaged payload gets past that check; then the
    damage may surface in the decompressor (walking the cpio headers, or while a file's contents are read), in the
    cpio parser or in the extraction rules, and must always be an RpmError or ArchiveRejected, never a
    decompressor's own exception (streams without a checksum, like lzma's, may also decode to other contents)."""
    rpm = _build(tmp_path_factory, "damaged-" + compressor,
                 {"/usr/lib/data.bin": bytes(range(256)) * 64, "/usr/bin/tool": b"#!/bin/sh\necho tool\n"},
                 compressor=COMPRESSORS[compressor])
    data = rpm.read_bytes()
    start = payload_offset(data)
    damaged = tmp_path / "damaged.rpm"
    for offset in range(start, len(data)):
        copy = bytearray(data)
        copy[offset] ^= 0xFF
        damaged.write_bytes(bytes(copy))
        root = tmp_path / "root-{}".format(offset)
        root.mkdir()
        with pytest.raises(RpmError, match="payload sha256 digest mismatch"):
            unpack_rpm(damaged, root)
        assert os.listdir(root) == []
        with_raw_payload(rpm, bytes(copy[start:]), damaged)
        try:
            unpack_rpm(damaged, root)
        except (RpmError, ArchiveRejected):
            pass


@pytest.mark.parametrize("mutation, message", [
    (lambda data: b"not an rpm at all" * 10, "not an RPM file"),
    (lambda data: data[:96] + b"\x00" * 16 + data[112:], "does not start with the header magic"),
    (lambda data: data[:104] + struct.pack(">II", 1 << 30, 1 << 30) + data[112:], "beyond rpm's limits"),
])
def test_malformed_headers_are_rejected(plain_rpm, tmp_path, mutation, message):
    bad = tmp_path / "bad.rpm"
    bad.write_bytes(mutation(plain_rpm.read_bytes()))
    with pytest.raises(RpmError, match=message):
        RpmPackage(bad)


def test_garbage_cpio_is_rejected(plain_rpm, tmp_path):
    bad = tmp_path / "bad.rpm"
    with_raw_payload(plain_rpm, gzip.compress(b"070701" + b"zz" * 60), bad)
    (tmp_path / "root").mkdir()
    with pytest.raises(RpmError, match="non-hexadecimal cpio header"):
        unpack_rpm(bad, tmp_path / "root")
