"""The read-only CernVM-FS file system that :class:`~.server.FuseServer` serves, on top of a client Repository.

A revision is immutable, so the kernel may cache everything for hours: entries (negative ones too), attributes,
pages (KEEP_CACHE), directory listings (CACHE_DIR) and symlink targets. What makes that safe across revisions:

* A node (nodeid) stands for one catalog entry as it was looked up: its path and, except for directories, its
  content (mode, size, times, owner, link count, content hash or symlink target). A lookup that finds something
  else at the path makes a new node; nodeids are never reused. Reading a node reads exactly its content, even
  after the repository moved on, so the kernel's pages never mix revisions. Directories keep their node across
  revisions; their attributes and listing are refreshed.
* Where the kernel supports it (NO_OPEN_SUPPORT, FUSE 7.23, Linux 3.15+), OPEN is answered ENOSYS once; the
  kernel then opens files itself, keeping their pages (KEEP_CACHE), and sends no more OPEN or RELEASE. READs
  name the node, whose content stays open in a small LRU. Older kernels get a file handle per OPEN.
* After a reload to a newer revision (checked every second by a background thread, due once the catalog TTL
  has passed) the nodes the kernel holds are compared with the new revision: changed or removed entries, and
  negative entries that now exist, get INVAL_ENTRY; directories whose attributes or listing changed get
  INVAL_INODE. Replies computed while a reload is being applied get a one-second timeout instead.

``st_ino`` is the repository's inode number of the revision a node was looked up in: stable within a revision,
shared by hard links. Extended attributes (``user.fqrn``, ``user.revision``, ``user.hash`` ...) always describe
the current revision.
"""

import collections
import errno
import itertools
import logging
import os
import stat as statmod
import threading

from cvmfs_pilot.client.repository import RepositoryError

from . import protocol as p

log = logging.getLogger(__name__)

CACHE_TIMEOUT = 6 * 3600  # seconds the kernel keeps entries and attributes of an immutable revision
RACE_TIMEOUT = 1.0  # for replies computed while a reload is being applied
RELOAD_CHECK_SECONDS = 1.0
RELOAD_RETRY_SECONDS = 60.0  # after a failed reload (say, a revision that does not verify)
BLOCK_SIZE = 4096  # statfs units
IO_BLOCK_SIZE = 128 * 1024  # st_blksize: cp and friends size their buffers from it
NAME_MAX = 255
MAX_NEGATIVE_ENTRIES = 65536  # names remembered as cached negative entries, to invalidate them after a reload
MAX_OPEN_NODES = 128  # nodes whose content stays open for READs without OPEN (1 to 4 descriptors each)
DIRECTORY = statmod.S_IFDIR
DIRECTORY_IDENTITY = (DIRECTORY,)
ZERO_ATTR = bytes(p.ATTR.size)


class Node(object):
    """What the kernel knows as one inode. ``current``: the path still maps to this node."""

    __slots__ = ("nodeid", "parent", "name", "path", "kind", "entry", "loaded", "identity", "attr", "nlookup",
                 "current", "listing_names", "negatives")

    def __init__(self, nodeid, parent, name, path, entry, loaded, identity, attr):
        self.nodeid = nodeid
        self.parent = parent  # nodeid of the directory it was looked up in
        self.name = name  # bytes
        self.path = path  # canonical repository path ("" for the root)
        self.kind = statmod.S_IFMT(entry.mode)
        self.entry = entry
        self.loaded = loaded
        self.identity = identity
        self.attr = attr  # packed fuse_attr
        self.nlookup = 0
        self.current = True
        self.listing_names = None  # directories: the (name, kind) pairs last listed, once READDIR was answered
        self.negatives = None  # directories: names answered as cached negative entries


class DirHandle(object):
    __slots__ = ("node", "listing")

    def __init__(self, node):
        self.node = node
        self.listing = None  # [(name bytes, entry, loaded, Stat)], taken at the first READDIR


def _identity(entry, loaded):
    """What a node's content is: any change makes a new node (directories: only the kind)."""
    if entry.is_directory:
        return DIRECTORY_IDENTITY
    if entry.hash is not None:
        content = entry.hash.digest
    elif entry.is_chunked:  # no bulk hash: the catalog's hash stands in (changes more often than needed)
        content = loaded.hash.digest
    else:
        content = None
    return (entry.mode, entry.size, entry.mtime, entry.mtimens, entry.uid, entry.gid, entry.linkcount,
            entry.symlink, content)


def _attr(st):
    return p.pack_attr(st.st_ino, st.st_size, st.st_blocks, st.st_mtime_ns, st.st_mode, st.st_nlink, st.st_uid,
                       st.st_gid, st.st_rdev, IO_BLOCK_SIZE)


def _same_directory_attributes(old, new):
    return (old.mode, old.mtime, old.mtimens, old.linkcount, old.uid, old.gid, old.size) == (
        new.mode, new.mtime, new.mtimens, new.linkcount, new.uid, new.gid, new.size)


def _name_bytes(name):
    return name.encode("utf-8", "surrogateescape")


def _error(code, message):
    return OSError(code, message)


class CvmfsFileSystem(object):
    """Serves ``repository`` (a client Repository, which this object closes in :meth:`close`)."""

    def __init__(self, repository, reload_interval=RELOAD_CHECK_SECONDS):
        self.repository = repository
        self.reload_interval = reload_interval
        self.connection = None
        self.notifier = None
        self._lock = threading.Lock()  # guards the node maps, lookup counts, negatives, _applied/_generation
        self._applied = repository.revision  # the revision the nodes were last checked against
        self._generation = 0  # counts applied reloads
        self._next_nodeid = itertools.count(p.ROOT_ID + 1)
        self._next_handle = itertools.count(1)
        self._files = {}  # fh -> OpenFile
        self._no_open = False  # the kernel opens files itself; READs name the node
        self._node_files = collections.OrderedDict()  # nodeid -> OpenFile, least recently read first
        self._node_files_lock = threading.Lock()
        self._dirs = {}  # fh -> DirHandle
        self._negative_count = 0
        entry, loaded = repository.entry("")
        root = Node(p.ROOT_ID, p.ROOT_ID, b"", "", entry, loaded, DIRECTORY_IDENTITY,
                    _attr(repository.stat_entry(entry, loaded)))
        root.nlookup = 1  # the kernel never looks the root up nor forgets it
        self._by_id = {p.ROOT_ID: root}
        self._by_path = {"": root}
        self._open_dir_flags = p.FOPEN_KEEP_CACHE
        self._stop = threading.Event()
        self._reloader = None

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def init(self, connection, notifier):
        """Called once INIT is answered: starts the reload thread (notifications go through ``notifier``)."""
        self.connection = connection
        self.notifier = notifier
        self._no_open = connection.kernel_offers(p.NO_OPEN_SUPPORT)
        if connection.minor >= 28:
            self._open_dir_flags |= p.FOPEN_CACHE_DIR
        self._reloader = threading.Thread(target=self._reload_loop, name="fuse-reload")
        self._reloader.daemon = True
        self._reloader.start()

    def destroy(self):
        pass

    def close(self):
        """Stop reloading, close open files and the repository."""
        self._stop.set()
        if self._reloader is not None and self._reloader is not threading.current_thread():
            self._reloader.join(10)
        files, self._files = self._files, {}
        with self._node_files_lock:
            node_files, self._node_files = self._node_files, collections.OrderedDict()
        for f in list(files.values()) + list(node_files.values()):
            f.close()
        self.repository.close()

    # -- nodes ----------------------------------------------------------------------------------------------------

    def _node(self, nodeid):
        node = self._by_id.get(nodeid)
        if node is None:
            raise _error(errno.ESTALE, "nodeid {} is unknown".format(nodeid))
        return node

    def _timeout(self, generation):
        """CACHE_TIMEOUT, unless a reload was applied or is pending since ``generation`` was read. Hold _lock."""
        if generation == self._generation and self._applied is self.repository.revision:
            return CACHE_TIMEOUT
        return RACE_TIMEOUT

    def _register(self, parent, name, path, entry, loaded, attr):
        """The node for ``entry`` at ``path`` (the existing one if it is the same), counted as looked up once.
        Hold _lock."""
        identity = _identity(entry, loaded)
        node = self._by_path.get(path)
        if node is not None and node.identity == identity:
            if node.kind == DIRECTORY:
                node.entry, node.loaded, node.attr = entry, loaded, attr
        else:
            if node is not None:
                node.current = False
            node = Node(next(self._next_nodeid), parent.nodeid, name, path, entry, loaded, identity, attr)
            self._by_id[node.nodeid] = node
            self._by_path[path] = node
        node.nlookup += 1
        return node

    def _child_path(self, parent, name):
        if parent.kind != DIRECTORY:
            raise _error(errno.ENOTDIR, "{} is not a directory".format(parent.path))
        return parent.path + "/" + name.decode("utf-8", "surrogateescape")

    def lookup(self, parent_id, name):
        parent = self._node(parent_id)
        path = self._child_path(parent, name)
        generation = self._generation
        try:
            entry, loaded = self.repository.entry(path)
        except RepositoryError as exc:
            if exc.errno != errno.ENOENT:
                raise
            return self._negative(parent, name, generation, exc)
        attr = _attr(self.repository.stat_entry(entry, loaded))
        with self._lock:
            node = self._register(parent, name, path, entry, loaded, attr)
            timeout = self._timeout(generation)
        return p.pack_entry_out(node.nodeid, node.attr, timeout, timeout)

    def _negative(self, parent, name, generation, exc):
        """A cached negative entry, remembered so that a reload can invalidate it; plain ENOENT when too many
        are remembered."""
        with self._lock:
            if parent.negatives is None:
                parent.negatives = set()
            if name not in parent.negatives:
                if self._negative_count >= MAX_NEGATIVE_ENTRIES:
                    raise exc
                parent.negatives.add(name)
                self._negative_count += 1
            timeout = self._timeout(generation)
        return p.pack_entry_out(0, ZERO_ATTR, timeout, 0)

    def forget(self, pairs):
        forgotten = []
        with self._lock:
            for nodeid, count in pairs:
                node = self._by_id.get(nodeid)
                if node is None or nodeid == p.ROOT_ID:
                    continue
                node.nlookup -= count
                if node.nlookup <= 0:
                    del self._by_id[nodeid]
                    if self._by_path.get(node.path) is node:
                        del self._by_path[node.path]
                    if node.negatives:
                        self._negative_count -= len(node.negatives)
                    forgotten.append(nodeid)
        if self._node_files:
            with self._node_files_lock:
                closing = [self._node_files.pop(nodeid) for nodeid in forgotten if nodeid in self._node_files]
            for f in closing:
                f.close()

    def getattr(self, nodeid):
        node = self._node(nodeid)
        return p.pack_attr_out(node.attr, self._timeout(self._generation))

    def _check_current(self, node):
        """Raise ESTALE unless the repository still has node's content at its path (the kernel then looks the
        path up again)."""
        if node.current and self._applied is self.repository.revision:
            return
        try:
            entry, loaded = self.repository.entry(node.path)
        except RepositoryError:
            entry = None
        if entry is None or _identity(entry, loaded) != node.identity:
            raise _error(errno.ESTALE, "{} changed in revision {}".format(node.path,
                                                                            self.repository.manifest.revision))

    def readlink(self, nodeid):
        node = self._node(nodeid)
        if node.kind != statmod.S_IFLNK:
            raise _error(errno.EINVAL, "{} is not a symbolic link".format(node.path))
        self._check_current(node)
        return self.repository.readlink(node.path).encode("utf-8", "surrogateescape")

    # -- files ----------------------------------------------------------------------------------------------------

    def open(self, nodeid, flags):
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise _error(errno.EROFS, "read-only file system")
        node = self._node(nodeid)
        if self._no_open:
            raise _error(errno.ENOSYS, "the kernel opens files itself")
        fh = next(self._next_handle)
        self._files[fh] = self._open_content(node)
        return p.pack_open_out(fh, p.FOPEN_KEEP_CACHE)

    def _open_content(self, node):
        if node.kind != statmod.S_IFREG:
            raise _error(errno.EISDIR if node.kind == DIRECTORY else errno.EINVAL,
                         "{} is not a regular file".format(node.path))
        return self.repository.open_entry(node.entry, node.loaded)

    def read(self, nodeid, fh, offset, size):
        """From file handle fh, or with fh 0 (the kernel opened the file itself) from the node's content."""
        if fh:
            f = self._files.get(fh)
            if f is None:
                raise _error(errno.EBADF, "file handle {} is not open".format(fh))
        else:
            f = self._node_file(nodeid)
        return f.read(offset, size)

    def _node_file(self, nodeid):
        """The node's content, open; the least recently read beyond MAX_OPEN_NODES are closed. (A read still
        running on one being closed reopens what it needs, which is freed with the OpenFile.)"""
        files = self._node_files
        with self._node_files_lock:
            f = files.get(nodeid)
            if f is not None:
                files.move_to_end(nodeid)
                return f
        f = self._open_content(self._node(nodeid))
        closing = []
        with self._node_files_lock:
            if nodeid in files:
                closing.append(f)
                f = files[nodeid]
            else:
                files[nodeid] = f
                while len(files) > MAX_OPEN_NODES:
                    closing.append(files.popitem(last=False)[1])
        for unused in closing:
            unused.close()
        return f

    def release(self, fh):
        f = self._files.pop(fh, None)
        if f is not None:
            f.close()

    # -- directories ----------------------------------------------------------------------------------------------

    def opendir(self, nodeid, flags):
        node = self._node(nodeid)
        if node.kind != DIRECTORY:
            raise _error(errno.ENOTDIR, "{} is not a directory".format(node.path))
        fh = next(self._next_handle)
        self._dirs[fh] = DirHandle(node)
        return p.pack_open_out(fh, self._open_dir_flags)

    def releasedir(self, fh):
        self._dirs.pop(fh, None)

    def _listing(self, path):
        """``[(name bytes, entry, loaded, Stat)]`` of a directory in the current revision, sorted by name."""
        repository = self.repository
        return [(_name_bytes(entry.name), entry, loaded, repository.stat_entry(entry, loaded))
                for entry, loaded in repository.revision.tree.listing(path) if not entry.is_hidden]

    def _dir_listing(self, fh):
        handle = self._dirs.get(fh)
        if handle is None:
            raise _error(errno.EBADF, "directory handle {} is not open".format(fh))
        if handle.listing is None:
            handle.listing = self._listing(handle.node.path)
            handle.node.listing_names = _listing_names(handle.listing)
        return handle

    def _dot_entries(self, node):
        """The inode numbers of ``.`` and ``..``."""
        parent = self._by_id.get(node.parent, node)
        return ((b".", p.ATTR.unpack_from(node.attr)[0]), (b"..", p.ATTR.unpack_from(parent.attr)[0]))

    def readdir(self, fh, offset, size):
        """Records from cookie ``offset``: 0 and 1 are ``.`` and ``..``, then the listing; each record's cookie is
        the position after it."""
        handle = self._dir_listing(fh)
        listing = handle.listing
        records = []
        used = 0
        position = offset
        if position < 2:
            for position, (name, ino) in enumerate(self._dot_entries(handle.node)[offset:], offset):
                record = p.pack_dirent(ino, position + 1, name, p.dirent_type(DIRECTORY))
                if used + len(record) > size:
                    return b"".join(records)
                records.append(record)
                used += len(record)
            position = 2
        for index in range(position - 2, len(listing)):
            name, _, _, st = listing[index]
            record = p.pack_dirent(st.st_ino, index + 3, name, p.dirent_type(st.st_mode))
            if used + len(record) > size:
                break
            records.append(record)
            used += len(record)
        return b"".join(records)

    def readdirplus(self, fh, offset, size):
        """Like readdir, each record with the entry of a lookup (which it counts); ``.`` and ``..`` without."""
        handle = self._dir_listing(fh)
        listing = handle.listing
        parent = handle.node
        records = []
        used = 0
        position = offset
        if position < 2:
            for position, (name, ino) in enumerate(self._dot_entries(parent)[offset:], offset):
                record = p.pack_direntplus(p.ZERO_ENTRY_OUT, ino, position + 1, name, p.dirent_type(DIRECTORY))
                if used + len(record) > size:
                    return b"".join(records)
                records.append(record)
                used += len(record)
            position = 2
        generation = self._generation
        chosen = []
        for index in range(position - 2, len(listing)):
            record_size = p.direntplus_size(len(listing[index][0]))
            if used + record_size > size:
                break
            chosen.append(index)
            used += record_size
        if not chosen:
            return b"".join(records)
        attrs = [_attr(listing[index][3]) for index in chosen]
        base = parent.path + "/"
        with self._lock:
            timeout = self._timeout(generation)
            for index, attr in zip(chosen, attrs):
                name, entry, loaded, st = listing[index]
                node = self._register(parent, name, base + entry.name, entry, loaded, attr)
                records.append(p.pack_direntplus(p.pack_entry_out(node.nodeid, node.attr, timeout, timeout),
                                                 st.st_ino, index + 3, name, p.dirent_type(st.st_mode)))
        return b"".join(records)

    # -- everything else ------------------------------------------------------------------------------------------

    def statfs(self, nodeid):
        """Sizes of the cache: its quota (CVMFS_QUOTA_LIMIT) and what is left of it, or the cache's file system."""
        cache = self.repository.objects.cache
        if cache.quota_limit_bytes:
            total = cache.quota_limit_bytes
            free = max(0, total - cache.usage()[0])
        else:
            vfs = os.statvfs(cache.directory)
            total, free = vfs.f_blocks * vfs.f_frsize, vfs.f_bavail * vfs.f_frsize
        return p.pack_statfs(total // BLOCK_SIZE, free // BLOCK_SIZE, free // BLOCK_SIZE, 0, 0, BLOCK_SIZE, NAME_MAX,
                             BLOCK_SIZE)

    def getxattr(self, nodeid, name):
        node = self._node(nodeid)
        if not name.startswith(b"user."):  # security.selinux, system.posix_acl_*: asked for by ls and cp
            raise _error(errno.ENODATA, "no such attribute")
        value = self.repository.xattrs(node.path).get(name.decode("utf-8", "surrogateescape"))
        if value is None:
            raise _error(errno.ENODATA, "no such attribute")
        return value

    def listxattr(self, nodeid):
        node = self._node(nodeid)
        return sorted(_name_bytes(name) for name in self.repository.xattrs(node.path))

    def access(self, nodeid, mask):
        node = self._node(nodeid)
        if mask & p.W_OK:
            raise _error(errno.EROFS, "read-only file system")
        if mask & p.X_OK and node.kind == statmod.S_IFREG and not node.entry.mode & 0o111:
            raise _error(errno.EACCES, "not executable")

    # -- reloading ------------------------------------------------------------------------------------------------

    def _reload_loop(self):
        pause = self.reload_interval
        while not self._stop.wait(pause):
            pause = self.reload_interval
            try:
                self.reload()
            except Exception as exc:
                log.warning("%s: looking for a new revision failed (next attempt in %.0f s): %s",
                            self.repository.fqrn, RELOAD_RETRY_SECONDS, exc)
                pause = max(pause, RELOAD_RETRY_SECONDS)

    def reload(self):
        """Switch to a newer revision if one is due, and invalidate what the kernel caches of changed entries.
        Runs in the reload thread (notifications are never sent from a request handler)."""
        repository = self.repository
        old_revision = self._applied.manifest.revision
        changed = repository.reload_if_due()
        revision = repository.revision
        if revision is self._applied:
            return
        if not changed:  # the same catalogs, newly verified
            with self._lock:
                self._applied = revision
            return
        with self._lock:
            nodes = [node for node in self._by_id.values() if node.current]
        stale, directories, appeared = self._compare(nodes)
        with self._lock:
            for node in stale:
                node.current = False
                if self._by_path.get(node.path) is node:
                    del self._by_path[node.path]
            for node, entry, loaded, attr, names in directories:
                node.entry, node.loaded, node.attr, node.listing_names = entry, loaded, attr, names
            for node, name in appeared:
                if node.negatives is not None and name in node.negatives:
                    node.negatives.discard(name)
                    self._negative_count -= 1
            self._applied = revision
            self._generation += 1
        notify = self.notifier
        for node in stale:
            notify.notify_inval_entry(node.parent, node.name)
        for node, name in appeared:
            notify.notify_inval_entry(node.nodeid, name)
        for node, _, _, _, _ in directories:
            notify.notify_inval_inode(node.nodeid, 0, 0)
        log.info("%s: revision %d -> %d; invalidated %d changed entries, %d new names, %d directories",
                 repository.fqrn, old_revision, revision.manifest.revision, len(stale), len(appeared),
                 len(directories))

    def _compare(self, nodes):
        """What changed for the kernel's nodes in the current revision: (stale nodes, directories to refresh as
        (node, entry, loaded, attr, listing names), (directory, name) of negative entries that now exist)."""
        repository = self.repository
        stale, directories, appeared = [], [], []
        for node in nodes:
            try:
                entry, loaded = repository.entry(node.path)
            except RepositoryError:
                entry = loaded = None
            if entry is None or _identity(entry, loaded) != node.identity:
                if node.nodeid != p.ROOT_ID:
                    stale.append(node)
                continue
            if node.kind != DIRECTORY:
                continue
            names = node.listing_names
            if names is not None:
                names = _listing_names(self._listing(node.path))
            if names != node.listing_names or not _same_directory_attributes(node.entry, entry):
                directories.append((node, entry, loaded, _attr(repository.stat_entry(entry, loaded)), names))
            for name in list(node.negatives or ()):
                try:
                    repository.entry(node.path + "/" + name.decode("utf-8", "surrogateescape"))
                except RepositoryError:
                    continue
                appeared.append((node, name))
        return stale, directories, appeared


def _listing_names(listing):
    return tuple((name, statmod.S_IFMT(entry.mode)) for name, entry, _, _ in listing)
