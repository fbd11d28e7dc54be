"""Reading the source tree that a publish turns into a revision: one directory at a time, with every name and
attribute checked before anything is written."""

import errno
import fnmatch
import os
import stat as statmod

from cvmfs_pilot.cvmfs import paths

from .errors import PublishError

CATALOG_MARKER = ".cvmfscatalog"
DIRTAB = ".cvmfsdirtab"
XATTR_NAMESPACE = "user."


class SourceEntry:
    """One directory entry of the source tree with everything the catalog needs (except content hashes)."""

    __slots__ = ("name", "path", "abspath", "st", "symlink", "xattrs")

    def __init__(self, name, path, abspath, st, symlink, xattrs):
        self.name = name
        self.path = path  # canonical repository path
        self.abspath = abspath
        self.st = st
        self.symlink = symlink
        self.xattrs = xattrs

    @property
    def mode(self):
        return self.st.st_mode


def _check_name(raw_name, directory_abspath):
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError:
        raise PublishError("{}: the name is not valid UTF-8; CernVM-FS catalogs store names as UTF-8 text. "
                           "Rename it (for example with convmv) and publish again".format(
                               _shown(directory_abspath, raw_name)))
    if "\n" in name or "\r" in name:
        raise PublishError("{!r}: the name contains a line break, which CernVM-FS clients and tools cannot "
                           "handle; rename it and publish again".format(_shown(directory_abspath, raw_name)))
    return name


def _shown(directory_abspath, raw_name):
    """A source path for messages, whatever the encoding of its last name."""
    return os.path.join(os.fsencode(directory_abspath), raw_name).decode("utf-8", "backslashreplace")


def read_xattrs(abspath, what):
    """The ``user.*`` extended attributes of a source entry (not following symlinks)."""
    try:
        names = os.listxattr(abspath, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return None
        raise PublishError("{}: cannot list extended attributes: {}".format(what, exc.strerror))
    values = {}
    for name in names:
        if not name.startswith(XATTR_NAMESPACE):
            continue
        try:
            values[name] = os.getxattr(abspath, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno == errno.ENODATA:  # removed between list and get
                continue
            raise PublishError("{}: cannot read extended attribute {}: {}".format(what, name, exc.strerror))
    return values or None


def scan_directory(abspath, path):
    """The entries of one source directory, sorted by name, each lstat'ed and validated."""
    try:
        dir_fd = os.open(abspath, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise _unreadable_directory(abspath, exc)
    try:
        return _scan(dir_fd, abspath, path)
    finally:
        os.close(dir_fd)


def _unreadable_directory(abspath, exc):
    return PublishError("cannot read directory {}: {}; make it readable or remove it from the source".format(
        abspath, exc.strerror))


def _scan(dir_fd, abspath, path):
    """:func:`scan_directory` on the open directory ``dir_fd``: names are looked up relative to it."""
    try:
        raw_names = sorted(os.fsencode(name) for name in os.listdir(dir_fd))
    except OSError as exc:
        raise _unreadable_directory(abspath, exc)
    prefix = abspath.rstrip("/") + "/"
    entries = []
    for raw in raw_names:
        name = _check_name(raw, abspath)
        entry_abspath = prefix + name
        try:
            st = os.lstat(raw, dir_fd=dir_fd)
        except FileNotFoundError:
            continue  # removed while we read the directory; it is simply not part of this revision
        except OSError as exc:
            raise PublishError("cannot stat {}: {}".format(entry_abspath, exc.strerror))
        symlink = ""
        if statmod.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(raw, dir_fd=dir_fd)
            except OSError as exc:
                raise PublishError("cannot read symlink {}: {}".format(entry_abspath, exc.strerror))
            try:
                symlink = target.decode("utf-8")
            except UnicodeDecodeError:
                raise PublishError("{}: the symlink target is not valid UTF-8; CernVM-FS catalogs store targets "
                                   "as UTF-8 text".format(entry_abspath))
        xattrs = read_xattrs(entry_abspath, entry_abspath) if not statmod.S_ISLNK(st.st_mode) else None
        entries.append(SourceEntry(name, paths.join(path, name), entry_abspath, st, symlink, xattrs))
    return entries


class Dirtab:
    """Rules of a ``.cvmfsdirtab``: glob patterns of directories that get their own nested catalog, ``!`` lines
    excluding, ``#`` comments. Components match one by one (``*`` never crosses ``/``); hidden directories never
    match, as with the real server."""

    def __init__(self, text=""):
        self.include = []
        self.exclude = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            target = self.include
            if line.startswith("!"):
                target, line = self.exclude, line[1:].strip()
            target.append([p for p in line.split("/") if p])

    @staticmethod
    def _matches(pattern, components):
        return len(pattern) == len(components) and all(fnmatch.fnmatchcase(c, p)
                                                       for c, p in zip(components, pattern))

    def wants_catalog(self, path):
        components = [c for c in path.split("/") if c]
        if not components or components[-1].startswith("."):
            return False
        if not any(self._matches(p, components) for p in self.include):
            return False
        return not any(self._matches(p, components) for p in self.exclude)

    @classmethod
    def load(cls, source_root):
        try:
            with open(os.path.join(source_root, DIRTAB), "rb") as f:
                return cls(f.read().decode("utf-8", "replace"))
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise PublishError("cannot read {}: {}".format(os.path.join(source_root, DIRTAB), exc.strerror))
