"""Exporting a subtree of a repository to a local directory (``fs get``): the fallback for nodes without FUSE.

Directories, regular files (with their permission bits and modification times), symlinks (targets as ``readlink``
shows them) and FIFOs are recreated; device files and sockets are skipped with a warning. Files are fetched by a
pool of threads. Nothing existing is overwritten, and no name from a catalog can lead outside the target.
"""

import concurrent.futures
import errno
import logging
import os
import stat as statmod

from cvmfs_pilot.cvmfs import paths

from .repository import RepositoryError

log = logging.getLogger(__name__)

WORKERS = 8


class ExportReport(object):
    def __init__(self):
        self.directories = 0
        self.files = 0
        self.bytes = 0
        self.symlinks = 0
        self.skipped = 0


def _safe_name(name, directory):
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise RepositoryError(errno.EIO, "directory {} of the repository lists an unsafe name {!r}; refusing "
                                         "to export it".format(directory or "/", name))
    return name


def _copy_file(repository, found, target, st):
    """Write the file of ``found`` (``(entry, loaded catalog)``) to a new file ``target``."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with repository.open_entry(*found) as source:
            source.copy_to(fd)
        os.fchmod(fd, statmod.S_IMODE(st.st_mode) & 0o777)
        os.utime(fd, ns=(st.st_mtime_ns, st.st_mtime_ns))
    finally:
        os.close(fd)
    return st.st_size


def export(repository, path, destination, workers=WORKERS):
    """Copy the subtree at repository ``path`` into directory ``destination`` (created if missing)."""
    root = paths.normalize(path)
    report = ExportReport()
    st = repository.stat(root)
    if not statmod.S_ISDIR(st.st_mode):
        os.makedirs(destination, exist_ok=True)
        name = _safe_name(root.rsplit("/", 1)[-1], paths.parent(root))
        report.bytes += _copy_file(repository, repository.entry(root), os.path.join(destination, name), st)
        report.files += 1
        return report
    os.makedirs(destination, exist_ok=True)
    directories = []  # (target, st) to stamp with mtimes after their contents are written
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending = []
        stack = [(root, destination, st)]
        while stack:
            directory, target, dir_st = stack.pop()
            if directory != root:
                os.mkdir(target, 0o700)
            directories.append((target, dir_st))
            report.directories += 1
            for entry, loaded in repository.listdir_entries(directory):
                name = _safe_name(entry.name, directory)
                child_path = paths.join(directory, name)
                child_target = os.path.join(target, name)
                child = repository.stat_entry(entry, loaded)
                mode = child.st_mode
                if statmod.S_ISDIR(mode):
                    stack.append((child_path, child_target, child))
                elif statmod.S_ISREG(mode):
                    pending.append(pool.submit(_copy_file, repository, (entry, loaded), child_target, child))
                elif statmod.S_ISLNK(mode):
                    os.symlink(repository.readlink(child_path), child_target)
                    report.symlinks += 1
                elif statmod.S_ISFIFO(mode):
                    os.mkfifo(child_target, statmod.S_IMODE(mode) & 0o777)
                else:
                    log.warning("%s: device files and sockets cannot be exported; skipped", child_path)
                    report.skipped += 1
        for future in pending:
            report.bytes += future.result()
            report.files += 1
    for target, dir_st in reversed(directories):
        os.chmod(target, statmod.S_IMODE(dir_st.st_mode) & 0o777 | 0o700)
        os.utime(target, ns=(dir_st.st_mtime_ns, dir_st.st_mtime_ns))
    return report
