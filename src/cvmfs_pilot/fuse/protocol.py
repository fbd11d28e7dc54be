"""The FUSE kernel protocol (``linux/fuse.h``, 7.12 to 7.38): constants, struct layouts, reply builders and the
INIT negotiation. Pure: no I/O.

All layouts use ``=`` (host byte order, no alignment padding); their sizes are checked at import. Replies are
bytes without the 16-byte ``fuse_out_header``, which the server adds.
"""

import struct

MAJOR = 7
MAX_MINOR = 38  # the newest protocol minor this module implements
MIN_MINOR = 12  # notifications (INVAL_INODE/INVAL_ENTRY) exist from 7.12
COMPAT_22_MINOR = 22  # kernels up to 7.22 (RHEL 7) take the 24-byte init_out
ROOT_ID = 1

# -- opcodes ----------------------------------------------------------------------------------------------------

LOOKUP = 1
FORGET = 2
GETATTR = 3
SETATTR = 4
READLINK = 5
SYMLINK = 6
MKNOD = 8
MKDIR = 9
UNLINK = 10
RMDIR = 11
RENAME = 12
LINK = 13
OPEN = 14
READ = 15
WRITE = 16
STATFS = 17
RELEASE = 18
FSYNC = 20
SETXATTR = 21
GETXATTR = 22
LISTXATTR = 23
REMOVEXATTR = 24
FLUSH = 25
INIT = 26
OPENDIR = 27
READDIR = 28
RELEASEDIR = 29
FSYNCDIR = 30
GETLK = 31
SETLK = 32
SETLKW = 33
ACCESS = 34
CREATE = 35
INTERRUPT = 36
BMAP = 37
DESTROY = 38
IOCTL = 39
POLL = 40
NOTIFY_REPLY = 41
BATCH_FORGET = 42
FALLOCATE = 43
READDIRPLUS = 44
RENAME2 = 45
LSEEK = 46
COPY_FILE_RANGE = 47
SETUPMAPPING = 48
REMOVEMAPPING = 49
SYNCFS = 50
TMPFILE = 51
STATX = 52

OPCODE_NAMES = {globals()[name]: name for name in (
    "LOOKUP FORGET GETATTR SETATTR READLINK SYMLINK MKNOD MKDIR UNLINK RMDIR RENAME LINK OPEN READ WRITE STATFS "
    "RELEASE FSYNC SETXATTR GETXATTR LISTXATTR REMOVEXATTR FLUSH INIT OPENDIR READDIR RELEASEDIR FSYNCDIR GETLK "
    "SETLK SETLKW ACCESS CREATE INTERRUPT BMAP DESTROY IOCTL POLL NOTIFY_REPLY BATCH_FORGET FALLOCATE READDIRPLUS "
    "RENAME2 LSEEK COPY_FILE_RANGE SETUPMAPPING REMOVEMAPPING SYNCFS TMPFILE STATX").split()}

# Requests that change the file system: a read-only one answers EROFS.
WRITE_OPCODES = frozenset((SETATTR, SYMLINK, MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, WRITE, SETXATTR,
                           REMOVEXATTR, CREATE, FALLOCATE, RENAME2, COPY_FILE_RANGE, TMPFILE))
# Requests the kernel sends without expecting a reply.
NO_REPLY_OPCODES = frozenset((FORGET, BATCH_FORGET, NOTIFY_REPLY))

# -- INIT flags (fuse_init_in.flags / fuse_init_out.flags) ------------------------------------------------------

ASYNC_READ = 1 << 0
POSIX_LOCKS = 1 << 1
ATOMIC_O_TRUNC = 1 << 3
EXPORT_SUPPORT = 1 << 4
BIG_WRITES = 1 << 5
AUTO_INVAL_DATA = 1 << 12
DO_READDIRPLUS = 1 << 13
READDIRPLUS_AUTO = 1 << 14
WRITEBACK_CACHE = 1 << 16
NO_OPEN_SUPPORT = 1 << 17
PARALLEL_DIROPS = 1 << 18
ABORT_ERROR = 1 << 21
MAX_PAGES = 1 << 22
CACHE_SYMLINKS = 1 << 23
NO_OPENDIR_SUPPORT = 1 << 24
EXPLICIT_INVAL_DATA = 1 << 25
INIT_EXT = 1 << 30

# What a read-only server of immutable content asks for (each only if the kernel offers it): concurrent
# readahead, READDIRPLUS when it pays off, parallel lookups in one directory, 1 MiB requests, cached symlink
# targets, and a page cache that attribute refreshes never drop implicitly. Deliberately absent: AUTO_INVAL_DATA
# (drops caches on every attribute change), write-path, lock and ACL flags.
WANTED_FLAGS = (ASYNC_READ | DO_READDIRPLUS | READDIRPLUS_AUTO | PARALLEL_DIROPS | MAX_PAGES | CACHE_SYMLINKS |
                EXPLICIT_INVAL_DATA)

MAX_PAGES_WANTED = 256  # 1 MiB READ requests with 4 KiB pages
MAX_BACKGROUND = 64  # asynchronous requests (readahead) in flight; the kernel default is 12
CONGESTION_THRESHOLD = 48
MAX_WRITE = 4096  # the minimum: nothing is ever written, but it sizes the kernel's read-buffer check
MIN_READ_BUFFER = 8192  # FUSE_MIN_READ_BUFFER
READ_BUFFER_SIZE = max(MIN_READ_BUFFER, MAX_WRITE + 4096)

# -- other flags ----------------------------------------------------------------------------------------------

FOPEN_DIRECT_IO = 1 << 0
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_CACHE_DIR = 1 << 3  # 7.28
GETATTR_FH = 1 << 0

NOTIFY_INVAL_INODE = 2
NOTIFY_INVAL_ENTRY = 3

R_OK, W_OK, X_OK = 4, 2, 1

# -- struct layouts -------------------------------------------------------------------------------------------

_ATTR = "QQQqqqIIIIIIIIII"  # ino size blocks atime mtime ctime, *nsec x3 mode nlink uid gid rdev blksize flags

IN_HEADER = struct.Struct("=IIQQIIIHH")  # len opcode unique nodeid uid gid pid total_extlen padding
OUT_HEADER = struct.Struct("=IiQ")  # len error unique
ATTR = struct.Struct("=" + _ATTR)
ENTRY_OUT = struct.Struct("=QQQQII" + _ATTR)  # nodeid generation entry_valid attr_valid *_nsec, attr
ENTRY_OUT_HEAD = struct.Struct("=QQQQII")
ATTR_OUT_HEAD = struct.Struct("=QII")  # attr_valid attr_valid_nsec dummy, then attr
GETATTR_IN = struct.Struct("=IIQ")  # getattr_flags dummy fh
OPEN_IN = struct.Struct("=II")  # flags open_flags
OPEN_OUT = struct.Struct("=QII")  # fh open_flags padding
READ_IN = struct.Struct("=QQIIQII")  # fh offset size read_flags lock_owner flags padding
RELEASE_IN = struct.Struct("=QIIQ")  # fh flags release_flags lock_owner
FORGET_IN = struct.Struct("=Q")  # nlookup
BATCH_FORGET_IN = struct.Struct("=II")  # count dummy, then count x FORGET_ONE
FORGET_ONE = struct.Struct("=QQ")  # nodeid nlookup
GETXATTR_IN = struct.Struct("=II")  # size padding
GETXATTR_OUT = struct.Struct("=II")  # size padding
ACCESS_IN = struct.Struct("=II")  # mask padding
INTERRUPT_IN = struct.Struct("=Q")  # unique
KSTATFS = struct.Struct("=QQQQQIIII24x")  # blocks bfree bavail files ffree bsize namelen frsize padding spare
DIRENT = struct.Struct("=QQII")  # ino off namelen type, then the name
INIT_IN = struct.Struct("=IIII")  # major minor max_readahead flags
INIT_IN_FLAGS2 = struct.Struct("=I")  # at offset 16 of the 64-byte init_in (7.36)
INIT_OUT_22 = struct.Struct("=IIIIHHI")  # major minor max_readahead flags max_background congestion max_write
INIT_OUT = struct.Struct("=IIIIHHIIHHI28x")  # ... time_gran max_pages map_alignment flags2 unused
NOTIFY_INVAL_INODE_OUT = struct.Struct("=Qqq")  # ino off len
NOTIFY_INVAL_ENTRY_OUT = struct.Struct("=QII")  # parent namelen flags, then the name and a NUL

_SIZES = {IN_HEADER: 40, OUT_HEADER: 16, ATTR: 88, ENTRY_OUT: 128, ATTR_OUT_HEAD: 16, GETATTR_IN: 16,
          OPEN_IN: 8, OPEN_OUT: 16, READ_IN: 40, RELEASE_IN: 24, FORGET_IN: 8, BATCH_FORGET_IN: 8, FORGET_ONE: 16,
          GETXATTR_IN: 8, GETXATTR_OUT: 8, ACCESS_IN: 8, INTERRUPT_IN: 8, KSTATFS: 80, DIRENT: 24, INIT_IN: 16,
          INIT_OUT_22: 24, INIT_OUT: 64, NOTIFY_INVAL_INODE_OUT: 24, NOTIFY_INVAL_ENTRY_OUT: 16}
for _layout, _size in _SIZES.items():
    if _layout.size != _size:
        raise ImportError("FUSE struct {!r} packs to {} bytes instead of {}".format(_layout.format, _layout.size,
                                                                                      _size))

ENTRY_OUT_SIZE = ENTRY_OUT.size
DIRENT_NAME_OFFSET = DIRENT.size  # 24
DIRENTPLUS_NAME_OFFSET = ENTRY_OUT_SIZE + DIRENT.size  # 152
ZERO_ENTRY_OUT = bytes(ENTRY_OUT_SIZE)  # a READDIRPLUS record that the kernel must not link

# -- replies --------------------------------------------------------------------------------------------------

S_IFMT = 0o170000


def pack_attr(ino, size, blocks, mtime_ns, mode, nlink, uid, gid, rdev, blksize):
    """``fuse_attr`` with atime = ctime = mtime."""
    seconds, nanoseconds = divmod(mtime_ns, 1000000000)
    return ATTR.pack(ino, size, blocks, seconds, seconds, seconds, nanoseconds, nanoseconds, nanoseconds, mode,
                     nlink, uid, gid, rdev, blksize, 0)


def _split_seconds(seconds):
    whole = int(seconds)
    return whole, int((seconds - whole) * 1e9)


def pack_entry_out(nodeid, attr, entry_valid, attr_valid, generation=0):
    """``fuse_entry_out`` around a packed attr; nodeid 0 with an entry_valid is a cached negative entry."""
    entry_s, entry_ns = _split_seconds(entry_valid)
    attr_s, attr_ns = _split_seconds(attr_valid)
    return ENTRY_OUT_HEAD.pack(nodeid, generation, entry_s, attr_s, entry_ns, attr_ns) + attr


def pack_attr_out(attr, attr_valid):
    attr_s, attr_ns = _split_seconds(attr_valid)
    return ATTR_OUT_HEAD.pack(attr_s, attr_ns, 0) + attr


def pack_open_out(fh, open_flags):
    return OPEN_OUT.pack(fh, open_flags, 0)


def pack_statfs(blocks, bfree, bavail, files, ffree, bsize, namelen, frsize):
    return KSTATFS.pack(blocks, bfree, bavail, files, ffree, bsize, namelen, frsize, 0)


def pack_getxattr_size(size):
    """The answer to a GETXATTR/LISTXATTR with size 0: how large the value is."""
    return GETXATTR_OUT.pack(size, 0)


def dirent_type(mode):
    """The ``d_type`` of a mode (DT_DIR 4, DT_REG 8, DT_LNK 10, ...)."""
    return (mode & S_IFMT) >> 12


def _padding(length):
    return b"\0" * (-length & 7)


def pack_dirent(ino, offset, name, dtype):
    """One READDIR record: ``fuse_dirent`` + name, zero-padded to a multiple of 8 bytes. ``offset`` is the
    cookie of the entry after this one."""
    return DIRENT.pack(ino, offset, len(name), dtype) + name + _padding(DIRENT.size + len(name))


def pack_direntplus(entry_out, ino, offset, name, dtype):
    """One READDIRPLUS record: ``fuse_entry_out`` + ``fuse_dirent`` + name, padded to 8 bytes."""
    return (entry_out + DIRENT.pack(ino, offset, len(name), dtype) + name +
            _padding(DIRENTPLUS_NAME_OFFSET + len(name)))


def dirent_size(name_length):
    return (DIRENT.size + name_length + 7) & ~7


def direntplus_size(name_length):
    return (DIRENTPLUS_NAME_OFFSET + name_length + 7) & ~7


def direntplus_nodeids(reply):
    """The nodeids that a READDIRPLUS reply links (the lookups it counts): non-zero, except ``.`` and ``..``."""
    nodeids = []
    position = 0
    while position + DIRENTPLUS_NAME_OFFSET <= len(reply):
        nodeid = ENTRY_OUT_HEAD.unpack_from(reply, position)[0]
        namelen = DIRENT.unpack_from(reply, position + ENTRY_OUT_SIZE)[2]
        name_start = position + DIRENTPLUS_NAME_OFFSET
        name = reply[name_start:name_start + namelen]
        if nodeid and name not in (b".", b".."):
            nodeids.append(nodeid)
        position += direntplus_size(namelen)
    return nodeids


def pack_notify_inval_inode(nodeid, offset, length):
    """The body of NOTIFY_INVAL_INODE: offset -1 drops only attributes; offset >= 0 also the cached pages from
    there (length <= 0: to the end), for a directory its cached listing."""
    return NOTIFY_INVAL_INODE_OUT.pack(nodeid, offset, length)


def pack_notify_inval_entry(parent, name):
    return NOTIFY_INVAL_ENTRY_OUT.pack(parent, len(name), 0) + name + b"\0"


# -- INIT -----------------------------------------------------------------------------------------------------

class ProtocolError(Exception):
    """The kernel speaks a protocol version this server cannot serve."""


class InitRequest(object):
    """A decoded ``fuse_init_in``."""

    __slots__ = ("major", "minor", "max_readahead", "flags", "flags2")

    def __init__(self, major, minor, max_readahead, flags, flags2=0):
        self.major = major
        self.minor = minor
        self.max_readahead = max_readahead
        self.flags = flags
        self.flags2 = flags2

    @classmethod
    def parse(cls, body):
        major, minor, max_readahead, flags = INIT_IN.unpack_from(body)
        flags2 = 0
        if flags & INIT_EXT and len(body) >= INIT_IN.size + INIT_IN_FLAGS2.size:
            flags2 = INIT_IN_FLAGS2.unpack_from(body, INIT_IN.size)[0]
        return cls(major, minor, max_readahead, flags, flags2)


class Connection(object):
    """What INIT settled: the protocol minor both sides speak, the flags in force, the flags the kernel offered
    (some, such as NO_OPEN_SUPPORT, are only advertisements) and request limits. ``reply`` is the init_out to
    send (24 bytes up to 7.22, 64 bytes after). ``retry`` is true when the kernel offered a major above 7: the
    reply only announces 7, and the kernel sends INIT again."""

    __slots__ = ("minor", "flags", "offered", "max_readahead", "max_pages", "reply", "retry")

    def __init__(self, minor, flags, offered, max_readahead, max_pages, reply, retry=False):
        self.minor = minor
        self.flags = flags
        self.offered = offered
        self.max_readahead = max_readahead
        self.max_pages = max_pages
        self.reply = reply
        self.retry = retry

    def kernel_offers(self, flag):
        return bool(self.offered & flag)


def negotiate_init(request):
    """The Connection for an InitRequest: minor = min(kernel, 38); only flags that the kernel offered and this
    server wants; max_readahead echoed; max_pages 256 with MAX_PAGES. Raises ProtocolError for kernels older
    than 7.12 or a major below 7."""
    if request.major > MAJOR:
        return Connection(MAX_MINOR, 0, request.flags, 0, 0, INIT_OUT_22.pack(MAJOR, MAX_MINOR, 0, 0, 0, 0, 0),
                          retry=True)
    if request.major < MAJOR or request.minor < MIN_MINOR:
        raise ProtocolError("the kernel speaks FUSE {}.{}; this server needs {}.{} or newer (Linux 2.6.31+)".format(
            request.major, request.minor, MAJOR, MIN_MINOR))
    minor = min(request.minor, MAX_MINOR)
    flags = request.flags & WANTED_FLAGS
    max_pages = MAX_PAGES_WANTED if flags & MAX_PAGES else 0
    if minor <= COMPAT_22_MINOR:
        reply = INIT_OUT_22.pack(MAJOR, minor, request.max_readahead, flags, MAX_BACKGROUND, CONGESTION_THRESHOLD,
                                 MAX_WRITE)
    else:
        reply = INIT_OUT.pack(MAJOR, minor, request.max_readahead, flags, MAX_BACKGROUND, CONGESTION_THRESHOLD,
                              MAX_WRITE, 1, max_pages, 0, 0)
    return Connection(minor, flags, request.flags, request.max_readahead, max_pages, reply)
