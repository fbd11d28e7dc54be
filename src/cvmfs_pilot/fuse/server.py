"""The FUSE request loop: read requests from ``/dev/fuse``, decode them, call the file system, write the replies.

Worker threads block in ``read()``, each on its own clone of the mounted descriptor (``FUSE_DEV_IOC_CLONE``,
Linux 4.2+) or all on the mounted one; a request stuck on a network fetch ties up one worker while the others
keep answering. Every reply is one ``write``/``writev`` on the descriptor that delivered the request. The first
worker answers INIT before the others start.

The file system object implements (nodeids and file handles are integers, names bytes; errors are OSError):

* ``init(connection, notifier)`` once INIT is answered (``connection``: protocol.Connection; ``notifier``: this
  server, whose ``notify_*`` methods must never be called from a request handler), ``destroy()``;
* ``lookup(parent, name)`` -> packed entry_out (each non-zero nodeid counts one lookup), ``forget(pairs)`` with
  ``[(nodeid, nlookup)]``, ``getattr(nodeid)`` -> attr_out, ``readlink(nodeid)`` -> target;
* ``open(nodeid, flags)`` / ``opendir(nodeid, flags)`` -> open_out, ``read(nodeid, fh, offset, size)`` -> data,
  ``readdir(fh, offset, size)`` / ``readdirplus(fh, offset, size)`` -> packed records, ``release(fh)``,
  ``releasedir(fh)``;
* ``statfs(nodeid)`` -> kstatfs, ``getxattr(nodeid, name)`` -> value, ``listxattr(nodeid)`` -> [names],
  ``access(nodeid, mask)``.

Requests that would write get EROFS, FLUSH and unknown requests ENOSYS (the kernel stops sending FLUSH and the
optional ones). An INTERRUPT answers its target EINTR at once; the worker's own reply then fails with ENOENT and
its side effects (lookup counts, handles) are undone.
"""

import errno
import fcntl
import logging
import os
import platform
import struct
import threading

from . import protocol as p
from .mount import FUSE_DEVICE

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 16
SMALL_REPLY = 4096  # up to this size a reply is joined to its header; larger ones go out with writev
# _IOR(229, 0, uint32_t): direction and size bits sit differently on PowerPC, MIPS, SPARC and Alpha.
FUSE_DEV_IOC_CLONE = (0x4004E500 if platform.machine().startswith(("ppc", "mips", "sparc", "alpha"))
                      else 0x8004E500)


class FuseServer(object):
    """Serves ``filesystem`` on the mounted descriptor ``fd`` with ``workers`` threads.

    :meth:`start` returns at once; ``ready`` is set once INIT is answered, ``stopped`` once serving has ended:
    the file system was unmounted (workers still waiting for the network are left behind: they are daemon
    threads), or INIT failed or a worker broke (then ``error`` says why). ``on_change()`` is called after
    either happens. The descriptor stays the caller's to close.
    """

    def __init__(self, fd, filesystem, workers=DEFAULT_WORKERS, debug=False, on_change=None):
        self.fd = fd
        self.fs = filesystem
        self.workers = max(1, workers)
        self.debug = debug
        self.on_change = on_change
        self.connection = None
        self.error = None
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self._inflight = {}  # unique -> descriptor it came from, for INTERRUPT
        self._threads = []
        self._clones = []
        self._handlers = {
            p.LOOKUP: self._lookup, p.GETATTR: self._getattr, p.READLINK: self._readlink, p.OPEN: self._open,
            p.READ: self._read, p.RELEASE: self._release, p.STATFS: self._statfs, p.GETXATTR: self._getxattr,
            p.LISTXATTR: self._listxattr, p.OPENDIR: self._opendir, p.READDIR: self._readdir,
            p.READDIRPLUS: self._readdirplus, p.RELEASEDIR: self._releasedir, p.ACCESS: self._access,
            p.DESTROY: self._destroy, p.IOCTL: _refuse(errno.ENOTTY), p.INIT: _refuse(errno.EIO),
        }
        for opcode in p.WRITE_OPCODES:
            self._handlers[opcode] = _refuse(errno.EROFS)
        self._undo = {p.LOOKUP: self._undo_lookup, p.READDIRPLUS: self._undo_readdirplus,
                      p.OPEN: self._undo_open, p.OPENDIR: self._undo_opendir}

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def start(self):
        self._spawn(self._first_worker)

    def join(self, timeout=None):
        """Wait until serving has ended; False on timeout."""
        return self.stopped.wait(timeout)

    def close(self):
        """Close the cloned descriptors (call once the workers have ended, or just before exiting)."""
        clones, self._clones = self._clones, []
        for fd in clones:
            os.close(fd)

    def _spawn(self, target, *args):
        thread = threading.Thread(target=self._run_worker, args=(target,) + args,
                                  name="fuse-worker-{}".format(len(self._threads)))
        thread.daemon = True
        self._threads.append(thread)
        thread.start()

    def _run_worker(self, target, *args):
        try:
            target(*args)
        except Exception as exc:
            log.exception("a FUSE worker failed")
            self.error = self.error or exc
        finally:
            if not self.stopped.is_set():
                self.stopped.set()
                self._changed()

    def _changed(self):
        if self.on_change is not None:
            self.on_change()

    def _first_worker(self):
        try:
            self.connection = self._handshake()
        except (OSError, p.ProtocolError) as exc:
            self.error = exc
            return
        self.fs.init(self.connection, self)
        self.ready.set()
        self._changed()
        for _ in range(self.workers - 1):
            self._spawn(self._serve, self._worker_fd())
        self._serve(self.fd)

    def _handshake(self):
        """Answer INIT (anything before it gets EIO); the Connection it settled."""
        while True:
            data = _read_request(self.fd, bytearray(p.READ_BUFFER_SIZE))
            if data is None:
                raise OSError(errno.ENODEV, "the file system was unmounted before FUSE INIT")
            length, opcode, unique = p.IN_HEADER.unpack_from(data)[:3]
            if opcode != p.INIT:
                self._reply_error(self.fd, unique, errno.EIO)
                continue
            request = p.InitRequest.parse(data[p.IN_HEADER.size:length])
            try:
                connection = p.negotiate_init(request)
            except p.ProtocolError:
                self._reply_error(self.fd, unique, errno.EPROTO)
                raise
            self._write(self.fd, p.OUT_HEADER.pack(p.OUT_HEADER.size + len(connection.reply), 0, unique) +
                        connection.reply)
            if not connection.retry:
                log.info("FUSE %d.%d: kernel offered 7.%d, flags %#x; in force %#x, max_readahead %d, max_pages %d",
                         p.MAJOR, connection.minor, request.minor, request.flags, connection.flags,
                         connection.max_readahead, connection.max_pages)
                return connection

    def _worker_fd(self):
        """A clone of the mounted descriptor (its own request queue), or the mounted one where cloning fails."""
        try:
            fd = os.open(FUSE_DEVICE, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return self.fd
        try:
            fcntl.ioctl(fd, FUSE_DEV_IOC_CLONE, struct.pack("=I", self.fd))
        except OSError as exc:
            os.close(fd)
            log.debug("FUSE_DEV_IOC_CLONE failed (%s); workers share one descriptor", exc.strerror)
            return self.fd
        self._clones.append(fd)
        return fd

    # -- the loop -------------------------------------------------------------------------------------------------

    def _serve(self, fd):
        dispatch = self._dispatch
        buffer = bytearray(p.READ_BUFFER_SIZE)  # this worker's, reused: no large allocation per request
        while True:
            data = _read_request(fd, buffer)
            if data is None:
                return
            dispatch(fd, data)

    def _dispatch(self, fd, data):
        length, opcode, unique, nodeid, _, _, _, extlen, _ = p.IN_HEADER.unpack_from(data)
        if extlen:
            data = data[:length - extlen * 8]
        if opcode == p.FORGET:
            self.fs.forget([(nodeid, p.FORGET_IN.unpack_from(data, 40)[0])])
            return
        if opcode == p.BATCH_FORGET:
            count = p.BATCH_FORGET_IN.unpack_from(data, 40)[0]
            self.fs.forget([p.FORGET_ONE.unpack_from(data, 48 + 16 * i) for i in range(count)])
            return
        if opcode == p.INTERRUPT:
            self._interrupt(fd, unique, data)
            return
        if opcode in p.NO_REPLY_OPCODES:
            return
        handler = self._handlers.get(opcode)
        if handler is None:
            self._reply_error(fd, unique, errno.ENOSYS, opcode, nodeid)
            return
        inflight = self._inflight
        inflight[unique] = fd
        try:
            body = handler(nodeid, data)
        except OSError as exc:
            self._reply_error(fd, unique, exc.errno or errno.EIO, opcode, nodeid, exc)
        except Exception:
            log.exception("%s of nodeid %d failed", p.OPCODE_NAMES.get(opcode, opcode), nodeid)
            self._reply_error(fd, unique, errno.EIO, opcode, nodeid)
        else:
            self._reply(fd, unique, body, opcode, nodeid)
        finally:
            del inflight[unique]

    def _reply(self, fd, unique, body, opcode, nodeid):
        if self.debug:
            log.debug("%s nodeid %d (unique %d): %d bytes", p.OPCODE_NAMES.get(opcode, opcode), nodeid, unique,
                      len(body))
        header = p.OUT_HEADER.pack(p.OUT_HEADER.size + len(body), 0, unique)
        try:
            if len(body) <= SMALL_REPLY:
                os.write(fd, header + body)
            else:
                os.writev(fd, (header, body))
        except OSError as exc:
            if exc.errno == errno.ENOENT:  # interrupted, or the caller was killed: the kernel dropped the reply
                undo = self._undo.get(opcode)
                if undo is not None:
                    undo(body)
            elif exc.errno != errno.ENODEV:
                log.error("replying to %s failed: %s", p.OPCODE_NAMES.get(opcode, opcode), exc.strerror)

    def _reply_error(self, fd, unique, code, opcode=None, nodeid=0, exc=None):
        if self.debug and opcode is not None:
            log.debug("%s nodeid %d (unique %d): %s%s", p.OPCODE_NAMES.get(opcode, opcode), nodeid, unique,
                      errno.errorcode.get(code, code), " ({})".format(exc) if exc is not None else "")
        self._write(fd, p.OUT_HEADER.pack(p.OUT_HEADER.size, -code, unique))

    def _write(self, fd, data):
        try:
            os.write(fd, data)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENODEV):
                log.error("writing a FUSE reply failed: %s", exc.strerror)

    def _interrupt(self, fd, unique, data):
        target = p.INTERRUPT_IN.unpack_from(data, 40)[0]
        target_fd = self._inflight.get(target)
        if target_fd is None:  # not registered yet, or answered: the kernel queues it again if still waiting
            self._write(fd, p.OUT_HEADER.pack(p.OUT_HEADER.size, -errno.EAGAIN, unique))
        else:
            if self.debug:
                log.debug("INTERRUPT of unique %d: answering EINTR", target)
            self._write(target_fd, p.OUT_HEADER.pack(p.OUT_HEADER.size, -errno.EINTR, target))

    # -- undoing dropped replies ----------------------------------------------------------------------------------

    def _undo_lookup(self, body):
        nodeid = p.ENTRY_OUT_HEAD.unpack_from(body)[0]
        if nodeid:
            self.fs.forget([(nodeid, 1)])

    def _undo_readdirplus(self, body):
        self.fs.forget([(nodeid, 1) for nodeid in p.direntplus_nodeids(body)])

    def _undo_open(self, body):
        self.fs.release(p.OPEN_OUT.unpack_from(body)[0])

    def _undo_opendir(self, body):
        self.fs.releasedir(p.OPEN_OUT.unpack_from(body)[0])

    # -- decoding -------------------------------------------------------------------------------------------------

    def _lookup(self, nodeid, data):
        return self.fs.lookup(nodeid, data[40:-1])

    def _getattr(self, nodeid, data):
        return self.fs.getattr(nodeid)

    def _readlink(self, nodeid, data):
        return self.fs.readlink(nodeid)

    def _open(self, nodeid, data):
        return self.fs.open(nodeid, p.OPEN_IN.unpack_from(data, 40)[0])

    def _read(self, nodeid, data):
        fh, offset, size = p.READ_IN.unpack_from(data, 40)[:3]
        return self.fs.read(nodeid, fh, offset, size)

    def _release(self, nodeid, data):
        self.fs.release(p.RELEASE_IN.unpack_from(data, 40)[0])
        return b""

    def _opendir(self, nodeid, data):
        return self.fs.opendir(nodeid, p.OPEN_IN.unpack_from(data, 40)[0])

    def _readdir(self, nodeid, data):
        fh, offset, size = p.READ_IN.unpack_from(data, 40)[:3]
        return self.fs.readdir(fh, offset, size)

    def _readdirplus(self, nodeid, data):
        fh, offset, size = p.READ_IN.unpack_from(data, 40)[:3]
        return self.fs.readdirplus(fh, offset, size)

    def _releasedir(self, nodeid, data):
        self.fs.releasedir(p.RELEASE_IN.unpack_from(data, 40)[0])
        return b""

    def _statfs(self, nodeid, data):
        return self.fs.statfs(nodeid)

    def _getxattr(self, nodeid, data):
        size = p.GETXATTR_IN.unpack_from(data, 40)[0]
        return _sized(self.fs.getxattr(nodeid, data[48:-1]), size)

    def _listxattr(self, nodeid, data):
        size = p.GETXATTR_IN.unpack_from(data, 40)[0]
        return _sized(b"".join(name + b"\0" for name in self.fs.listxattr(nodeid)), size)

    def _access(self, nodeid, data):
        self.fs.access(nodeid, p.ACCESS_IN.unpack_from(data, 40)[0])
        return b""

    def _destroy(self, nodeid, data):
        self.fs.destroy()
        return b""

    # -- notifications (never from a request handler: the kernel may wait for locks that a request holds) ----------

    def notify_inval_entry(self, parent, name):
        """Drop the kernel's cached dentry ``name`` in directory ``parent`` (positive or negative)."""
        return self._notify(p.NOTIFY_INVAL_ENTRY, p.pack_notify_inval_entry(parent, name))

    def notify_inval_inode(self, nodeid, offset=0, length=0):
        """Drop the kernel's cached attributes of nodeid and, for offset >= 0, its cached pages or listing."""
        return self._notify(p.NOTIFY_INVAL_INODE, p.pack_notify_inval_inode(nodeid, offset, length))

    def _notify(self, code, body):
        """True if the kernel took it; False if it had nothing cached, or the file system is gone."""
        try:
            os.write(self.fd, p.OUT_HEADER.pack(p.OUT_HEADER.size + len(body), code, 0) + body)
            return True
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENODEV, errno.EBADF, errno.ENOTCONN):
                log.warning("FUSE notification %d failed: %s", code, exc.strerror)
            return False


def _read_request(fd, buffer):
    """The next request from fd (read into ``buffer``, returned as a copy of its length), or None once the file
    system is unmounted (ENODEV) or aborted."""
    view = memoryview(buffer)
    while True:
        try:
            return bytes(view[:os.readv(fd, [buffer])])
        except OSError as exc:
            if exc.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                continue  # ENOENT: the request was interrupted before it was read
            if exc.errno in (errno.ENODEV, errno.ECONNABORTED, errno.EBADF):
                return None
            raise


def _refuse(code):
    def refuse(nodeid, data):
        raise OSError(code, os.strerror(code))
    return refuse


def _sized(value, size):
    """The reply to GETXATTR/LISTXATTR: the length for size 0, the value if it fits, else ERANGE."""
    if size == 0:
        return p.pack_getxattr_size(len(value))
    if len(value) > size:
        raise OSError(errno.ERANGE, "the value has {} bytes, the buffer {}".format(len(value), size))
    return value
