"""Extracting archive entries below a root directory safely: distribution tarballs on the node, and RPM payloads
in the server tier's distribution builder (which imports this module, so both apply the very same rules).

Every entry must satisfy these rules, or the archive is rejected with :class:`ArchiveRejected`, naming the entry
and the rule it breaks:

* its name is relative (no leading ``/``), has no ``..`` component and no NUL; a leading ``./`` is ignored;
* nothing is written through a symbolic link: no directory on the way to an entry may be a symlink, and an
  existing symlink is replaced, never followed;
* it is a regular file, a directory, a symbolic link or (tarballs) a hard link; device nodes, FIFOs and sockets
  are refused;
* a symbolic link's target is relative and, followed through the links of the finished tree, stays inside the
  root (checked per entry, and again for the whole tree by :meth:`TreeWriter.finish`);
* a hard link names a regular file already extracted inside the root;
* only the permission bits rwx are kept: setuid, setgid and sticky bits are dropped (not an error). The owner
  always keeps read access to files and full access to directories; owners and times are not restored.

Node tier: Python 3.6 and the standard library only.
"""

import os
import posixpath
import stat
import tarfile
import zlib

PERMISSIONS = 0o777
MAX_LINK_HOPS = 40  # as Linux's limit on symbolic links followed in one lookup
CHUNK = 1 << 20


class ArchiveRejected(ValueError):
    """An archive breaks one of the extraction rules, or is damaged; nothing of it should be used."""


def entry_parts(name):
    """The components of an entry name, checked: relative, no ``..``, no NUL. The root itself gives []."""
    if "\0" in name:
        raise ArchiveRejected("{!r}: the name contains a NUL character".format(name))
    if name.startswith("/"):
        raise ArchiveRejected("{}: absolute path; archive entries must be relative".format(name))
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ArchiveRejected("{}: the path contains '..', which could reach outside the extraction "
                              "directory".format(name))
    return parts


def _outside(path):
    return path == ".." or path.startswith("../")


class TreeWriter(object):
    """Writes archive entries below root (an existing directory) under the rules of this module."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self._safe_dirs = {()}  # component tuples known to be real directories (not symlinks) below root
        self._links = []  # relative paths of the symbolic links written, for finish()

    def _path(self, parts):
        return os.path.join(self.root, *parts)

    def _parents(self, parts, name):
        """Make sure every parent of parts is a real directory below root, creating missing ones (mode 0755)."""
        for depth in range(1, len(parts)):
            prefix = tuple(parts[:depth])
            if prefix in self._safe_dirs:
                continue
            path = self._path(prefix)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path, 0o755)
            else:
                if stat.S_ISLNK(st.st_mode):
                    raise ArchiveRejected("{}: would be written through the symbolic link {}".format(
                        name, "/".join(prefix)))
                if not stat.S_ISDIR(st.st_mode):
                    raise ArchiveRejected("{}: {} is not a directory".format(name, "/".join(prefix)))
            self._safe_dirs.add(prefix)

    def _clear(self, parts, name):
        """Remove a non-directory at the entry's path so that it can be replaced (never followed)."""
        path = self._path(parts)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return path
        if stat.S_ISDIR(st.st_mode):
            raise ArchiveRejected("{}: a directory of that name already exists".format(name))
        os.unlink(path)
        return path

    def directory(self, name, mode):
        parts = entry_parts(name)
        if not parts:
            return
        self._parents(parts, name)
        path = self._path(parts)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o700)
        else:
            if not stat.S_ISDIR(st.st_mode):
                raise ArchiveRejected("{}: a file or link of that name already exists".format(name))
        os.chmod(path, (mode & PERMISSIONS) | 0o700)
        self._safe_dirs.add(tuple(parts))

    def regular_file(self, name, mode, stream, size):
        """A file of exactly size bytes read from stream (anything with ``read(n)``)."""
        parts = self._file_parts(name)
        path = self._clear(parts, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            remaining = size
            while remaining:
                block = stream.read(min(remaining, CHUNK))
                if not block:
                    raise ArchiveRejected("{}: the archive ends inside this file ({} of {} bytes); it is "
                                          "truncated".format(name, size - remaining, size))
                out.write(block)
                remaining -= len(block)
            os.fchmod(out.fileno(), (mode & PERMISSIONS) | 0o400)

    def symlink(self, name, target):
        parts = self._file_parts(name)
        if not target or "\0" in target:
            raise ArchiveRejected("{}: empty or invalid symbolic link target".format(name))
        if target.startswith("/"):
            raise ArchiveRejected("{}: absolute symbolic link target {}".format(name, target))
        if _outside(posixpath.normpath(posixpath.join("/".join(parts[:-1]), target))):
            raise ArchiveRejected("{}: symbolic link target {} points outside the extraction directory".format(
                name, target))
        os.symlink(target, self._clear(parts, name))
        self._links.append("/".join(parts))

    def hardlink(self, name, existing):
        parts = self._file_parts(name)
        source = entry_parts(existing)
        if not source:
            raise ArchiveRejected("{}: hard link to the extraction directory itself".format(name))
        self._parents(source, existing)
        try:
            st = os.lstat(self._path(source))
        except FileNotFoundError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise ArchiveRejected("{}: hard link to {}, which is not a regular file extracted before it".format(
                name, existing))
        if self._path(source) != self._path(parts):
            os.link(self._path(source), self._clear(parts, name), follow_symlinks=False)

    def refuse(self, name, kind):
        raise ArchiveRejected("{}: {} entries are not allowed (only files, directories and links)".format(
            name, kind))

    def _file_parts(self, name):
        parts = entry_parts(name)
        if not parts:
            raise ArchiveRejected("{!r}: a non-directory entry for the extraction directory itself".format(name))
        self._parents(parts, name)
        return parts

    def finish(self):
        """Check that every symbolic link, followed through the finished tree, stays inside the root."""
        for link in self._links:
            self._resolve(link)

    def _resolve(self, link):
        pending = link.split("/")
        resolved = []
        hops = 0
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    raise ArchiveRejected("{}: the symbolic link, followed through the tree, points outside the "
                                          "extraction directory".format(link))
                resolved.pop()
                continue
            resolved.append(part)
            path = self._path(resolved)
            if not os.path.islink(path):
                continue
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise ArchiveRejected("{}: too many levels of symbolic links".format(link))
            target = os.readlink(path)
            if target.startswith("/"):
                raise ArchiveRejected("{}: leads to an absolute symbolic link target {}".format(link, target))
            resolved.pop()
            pending = target.split("/") + pending


def extract_tarball(path, root):
    """Extract the (optionally compressed) tarball at path into the existing, empty directory root; returns the
    number of entries. ArchiveRejected if it breaks a rule or is damaged: the caller must discard root then."""
    writer = TreeWriter(root)
    count = 0
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.isdir():
                    writer.directory(member.name, member.mode)
                elif member.isreg():
                    writer.regular_file(member.name, member.mode, tar.extractfile(member), member.size)
                elif member.issym():
                    writer.symlink(member.name, member.linkname)
                elif member.islnk():
                    writer.hardlink(member.name, member.linkname)
                else:
                    writer.refuse(member.name, "device" if member.ischr() or member.isblk() else
                                  "FIFO" if member.isfifo() else "special")
                count += 1
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ArchiveRejected("{}: damaged archive ({})".format(path, exc))
    except OSError as exc:
        if exc.errno is not None:  # the file system failed, not the archive
            raise
        raise ArchiveRejected("{}: damaged archive ({})".format(path, exc))
    writer.finish()
    return count
