"""Replacing a file atomically: readers see the old contents or the new, never a part, and no temporary file
survives a failure."""

import os
import tempfile


def _umask():
    """The process's umask, read without changing it (Linux >= 4.7); 0o022 where /proc does not say."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def write_atomically(path, data, mode=None, sync=False):
    """Write bytes to path through a temporary file in the same directory and a rename. mode: the new file's
    permissions (default: those of the file it replaces, else 0666 minus the umask); sync: flush it to disk
    before the rename."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
    fd, temporary = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as stream:
            os.fchmod(stream.fileno(), mode)
            stream.write(data)
            if sync:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
