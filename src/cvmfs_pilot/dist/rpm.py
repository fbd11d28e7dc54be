"""Reading RPM files without rpm: the lead, the signature and main headers, and the cpio payload.

Layout: a 96-byte lead; the signature header, padded to a multiple of 8 bytes; the main header; then the
payload, a cpio archive in the "newc" format (magic 070701, or 070702 with checksums) compressed with the
program the PAYLOADCOMPRESSOR tag names (gzip, bzip2, xz, lzma or zstd). Each header is a magic, an index of
(tag, type, offset, count) entries and a data store. Every size, offset and count read from the file is checked
against the file before use. When the main header carries a payload digest, the compressed payload is checked
against it before anything is decompressed.
"""

import bz2
import gzip
import hashlib
import lzma
import struct
import zlib

import zstandard

from .errors import RpmError
from cvmfs_pilot.node.safe_extract import ArchiveRejected, TreeWriter, entry_parts

LEAD = struct.Struct(">4sBBhh66shh16s")
LEAD_MAGIC = b"\xed\xab\xee\xdb"
SIGNATURE_TYPE_HEADER = 5
HEADER_MAGIC = b"\x8e\xad\xe8\x01"
HEADER_INTRO = struct.Struct(">4s4sII")
INDEX_ENTRY = struct.Struct(">iIII")
MAX_INDEX_ENTRIES = 1 << 16
MAX_HEADER_DATA = 0x0FFFFFFF  # rpm's own limit on a header's data store

TYPE_INT32 = 4
TYPE_STRING = 6
TYPE_STRING_ARRAY = 8
TYPE_I18NSTRING = 9

TAG_NAME = 1000
TAG_VERSION = 1001
TAG_RELEASE = 1002
TAG_EPOCH = 1003
TAG_ARCH = 1022
TAG_PAYLOADFORMAT = 1124
TAG_PAYLOADCOMPRESSOR = 1125
TAG_PAYLOADDIGEST = 5092
TAG_PAYLOADDIGESTALGO = 5093

DIGEST_ALGORITHMS = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}

CPIO_HEADER = 110
CPIO_MAGICS = (b"070701", b"070702")
CPIO_STRIPPED_MAGIC = b"07070X"
CPIO_TRAILER = "TRAILER!!!"
MAX_NAME = 4096
MAX_PAYLOAD_BYTES = 8 << 30  # uncompressed; far above any client package, far below a decompression bomb
CHUNK = 1 << 20


def _read_exactly(f, size, what):
    data = f.read(size)
    if len(data) != size:
        raise RpmError("truncated: the file ends inside the {} ({} of {} bytes)".format(what, len(data), size))
    return data


class Header:
    """An RPM header: tags parsed on demand from its index and data store."""

    def __init__(self, entries, data, what):
        self._entries = entries  # tag -> (type, offset, count)
        self._data = data
        self._what = what

    @classmethod
    def read(cls, f, what):
        magic, _, count, size = HEADER_INTRO.unpack(_read_exactly(f, HEADER_INTRO.size, what))
        if magic != HEADER_MAGIC:
            raise RpmError("the {} does not start with the header magic; not an RPM, or damaged".format(what))
        if count > MAX_INDEX_ENTRIES or size > MAX_HEADER_DATA:
            raise RpmError("the {} claims {} entries and {} bytes, beyond rpm's limits; damaged".format(
                what, count, size))
        index = _read_exactly(f, count * INDEX_ENTRY.size, what)
        data = _read_exactly(f, size, what)
        entries = {}
        for tag, kind, offset, number in INDEX_ENTRY.iter_unpack(index):
            if offset >= size and number:
                raise RpmError("the {}: tag {} points beyond the data store; damaged".format(what, tag))
            entries[tag] = (kind, offset, number)
        return cls(entries, data, what)

    def data_size(self):
        return len(self._data)

    def _strings(self, tag, kind, offset, count):
        strings = []
        for _ in range(count):
            end = self._data.find(b"\0", offset)
            if end < 0:
                raise RpmError("the {}: string of tag {} is not terminated; damaged".format(self._what, tag))
            strings.append(self._data[offset:end].decode("utf-8", "surrogateescape"))
            offset = end + 1
        return strings

    def string(self, tag, default=None):
        if tag not in self._entries:
            return default
        kind, offset, count = self._entries[tag]
        if kind not in (TYPE_STRING, TYPE_STRING_ARRAY, TYPE_I18NSTRING) or count < 1:
            raise RpmError("the {}: tag {} is not a string; damaged".format(self._what, tag))
        return self._strings(tag, kind, offset, 1)[0]

    def int32(self, tag, default=None):
        if tag not in self._entries:
            return default
        kind, offset, count = self._entries[tag]
        if kind != TYPE_INT32 or count < 1 or offset + 4 > len(self._data):
            raise RpmError("the {}: tag {} is not a 32-bit number; damaged".format(self._what, tag))
        return struct.unpack_from(">I", self._data, offset)[0]


# What the decompressors raise on damaged or truncated input (bz2 and gzip raise OSError or EOFError).
DECOMPRESSION_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError, zstandard.ZstdError)


def _open_decompressor(name, raw):
    if name == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if name == "xz":
        return lzma.LZMAFile(raw, format=lzma.FORMAT_XZ)
    if name == "lzma":
        return lzma.LZMAFile(raw, format=lzma.FORMAT_ALONE)
    if name == "bzip2":
        return bz2.BZ2File(raw)
    if name == "zstd":
        return zstandard.ZstdDecompressor(max_window_size=1 << 31).stream_reader(raw, read_across_frames=True,
                                                                                  closefd=False)
    raise RpmError("payload compressor {!r} is not supported (gzip, bzip2, xz, lzma, zstd are)".format(name))


class _PayloadStream:
    """The decompressed payload; a decompressor's failure on damaged data becomes an RpmError, wherever the
    read happens (walking the cpio headers, or a caller reading a file's contents)."""

    def __init__(self, name, raw):
        self._name = name
        self._stream = _open_decompressor(name, raw)

    def read(self, size):
        try:
            return self._stream.read(size)
        except DECOMPRESSION_ERRORS as exc:
            raise RpmError("the {} payload is damaged or truncated ({})".format(self._name, exc)) from None

    def close(self):
        self._stream.close()


class CpioEntry:
    """One payload entry. Its data (contents, or the target of a symlink) must be read before the next entry."""

    def __init__(self, name, mode, ino, nlink, size, payload):
        self.name = name
        self.mode = mode
        self.ino = ino
        self.nlink = nlink
        self.size = size
        self._payload = payload

    def read(self, size):
        return self._payload.read_data(size)


class RpmPackage:
    """An open RPM file: ``header`` and the identity tags are read on opening; :meth:`entries` streams the
    payload once. Use as a context manager."""

    def __init__(self, path):
        self.path = path
        self._file = open(path, "rb")
        try:
            self._read_headers()
        except BaseException:
            self._file.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._file.close()

    def _read_headers(self):
        magic, major, _, _, _, _, _, signature_type, _ = LEAD.unpack(_read_exactly(self._file, LEAD.size, "lead"))
        if magic != LEAD_MAGIC:
            raise RpmError("not an RPM file (no RPM lead magic)")
        if major not in (3, 4) or signature_type != SIGNATURE_TYPE_HEADER:
            raise RpmError("RPM format {} with signature type {} is not supported (only v3/v4 with header "
                           "signatures)".format(major, signature_type))
        signature = Header.read(self._file, "signature header")
        _read_exactly(self._file, -signature.data_size() % 8, "signature header padding")
        self.header = Header.read(self._file, "main header")
        header = self.header
        self.name = header.string(TAG_NAME)
        self.version = header.string(TAG_VERSION)
        self.release = header.string(TAG_RELEASE)
        self.arch = header.string(TAG_ARCH)
        if not (self.name and self.version and self.release and self.arch):
            raise RpmError("the main header lacks the name, version, release or architecture")
        self.epoch = header.int32(TAG_EPOCH, 0)
        payload_format = header.string(TAG_PAYLOADFORMAT, "cpio")
        if payload_format != "cpio":
            raise RpmError("payload format {!r} is not supported (only cpio)".format(payload_format))
        self.compressor = header.string(TAG_PAYLOADCOMPRESSOR, "gzip")
        self._payload_digest = header.string(TAG_PAYLOADDIGEST)
        self._payload_algorithm = DIGEST_ALGORITHMS.get(header.int32(TAG_PAYLOADDIGESTALGO, 8))

    def entries(self):
        """Yield each CpioEntry of the payload; RpmError if the payload is damaged or truncated. When the header
        carries a payload digest, the compressed payload is checked against it before anything is unpacked."""
        start = self._file.tell()
        self._verify_payload_digest()
        self._file.seek(start)
        stream = _PayloadStream(self.compressor, self._file)
        payload = _Cpio(stream)
        try:
            while True:
                entry = payload.next_entry()
                if entry is None:
                    break
                yield entry
        finally:
            stream.close()

    def _verify_payload_digest(self):
        if not (self._payload_digest and self._payload_algorithm):
            return
        digest = hashlib.new(self._payload_algorithm)
        for block in iter(lambda: self._file.read(CHUNK), b""):
            digest.update(block)
        if digest.hexdigest() != self._payload_digest:
            raise RpmError("payload {} digest mismatch (the header says {}, the payload has {}); the file is "
                           "damaged".format(self._payload_algorithm, self._payload_digest, digest.hexdigest()))


class _Cpio:
    """The newc cpio stream inside a payload."""

    def __init__(self, stream):
        self._stream = stream
        self._offset = 0
        self._left = 0  # data bytes of the current entry not yet read
        self._pad = 0
        self._total = 0

    def _read(self, size, what):
        data = self._stream.read(size)
        while len(data) < size:
            more = self._stream.read(size - len(data))
            if not more:
                raise RpmError("the payload ends inside {}; the file is truncated".format(what))
            data += more
        self._offset += size
        return data

    def read_data(self, size):
        size = min(size, self._left)
        if not size:
            return b""
        data = self._read(size, "a file's contents")
        self._left -= len(data)
        return data

    def next_entry(self):
        while self._left:
            self.read_data(CHUNK)
        self._read(self._pad, "padding")
        header = self._read(CPIO_HEADER, "a cpio header")
        magic = header[:6]
        if magic == CPIO_STRIPPED_MAGIC:
            raise RpmError("the payload uses rpm's stripped cpio format (packages with files over 4 GiB), which "
                           "is not supported")
        if magic not in CPIO_MAGICS:
            raise RpmError("bad cpio header magic {!r} at payload offset {}; damaged".format(
                magic, self._offset - CPIO_HEADER))
        try:
            fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise RpmError("non-hexadecimal cpio header at payload offset {}; damaged".format(
                self._offset - CPIO_HEADER)) from None
        ino, mode, _, _, nlink, _, size, _, _, _, _, name_size, _ = fields
        if not 1 < name_size <= MAX_NAME:
            raise RpmError("cpio entry name of {} bytes; damaged".format(name_size))
        raw_name = self._read(name_size, "a cpio entry name")
        if raw_name[-1:] != b"\0" or b"\0" in raw_name[:-1]:
            raise RpmError("cpio entry name is not NUL-terminated; damaged")
        name = raw_name[:-1].decode("utf-8", "surrogateescape")
        self._read(-(CPIO_HEADER + name_size) % 4, "padding")
        if name == CPIO_TRAILER:
            return None
        self._total += size
        if self._total > MAX_PAYLOAD_BYTES:
            raise RpmError("the payload unpacks to more than {} GiB; refused".format(MAX_PAYLOAD_BYTES >> 30))
        self._left = size
        self._pad = -size % 4
        return CpioEntry(name, mode, ino, nlink, size, self)


def _relative_link(link_parts, target):
    """An absolute symlink target made relative to the link's directory, as makedist does."""
    return "../" * (len(link_parts) - 1) + target.lstrip("/")


def unpack_rpm(path, root, keep=None):
    """Unpack the payload of the RPM at path into the directory root, under the rules of cvmfs_pilot.node.safe_extract.

    keep(relative_path) -> bool selects entries (default: all but ``.build-id`` directories, as makedist).
    Absolute symlink targets are made relative to the root. Hard-linked files become hard links. Returns the
    RpmPackage's identity (name, epoch, version, release, arch) as a tuple. RpmError when the file is damaged,
    ArchiveRejected when it breaks an extraction rule.
    """
    writer = TreeWriter(root)
    linked = {}  # inode -> [(name, mode)] of hard-linked entries whose data comes with a later entry
    with RpmPackage(path) as package:
        for entry in package.entries():
            parts = entry_parts(entry.name)
            relative = "/".join(parts)
            if not parts or ".build-id" in parts or (keep is not None and not keep(relative)):
                continue
            kind = entry.mode & 0o170000
            if kind == 0o040000:
                writer.directory(relative, entry.mode)
            elif kind == 0o120000:
                if entry.size > MAX_NAME:
                    raise ArchiveRejected("{}: symbolic link target of {} bytes".format(relative, entry.size))
                target = entry.read(entry.size).decode("utf-8", "surrogateescape")
                writer.symlink(relative, _relative_link(parts, target) if target.startswith("/") else target)
            elif kind == 0o100000:
                if entry.nlink > 1 and entry.size == 0:
                    linked.setdefault(entry.ino, []).append((relative, entry.mode))
                    continue
                writer.regular_file(relative, entry.mode, entry, entry.size)
                for other, _ in linked.pop(entry.ino, []):
                    writer.hardlink(other, relative)
            else:
                writer.refuse(relative, "device node, FIFO or socket" if kind else "untyped")
        for links in linked.values():  # hard-linked empty files
            for name, mode in links:
                writer.regular_file(name, mode, None, 0)
    writer.finish()
    return package.name, package.epoch, package.version, package.release, package.arch
