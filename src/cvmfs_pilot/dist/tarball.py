"""Packing a distribution tree into a reproducible ``.tar.gz``.

Entries come in a fixed order (each directory, its files and links sorted by name, then its subdirectories
sorted by name), are owned by 0:0 without names, dated ENTRY_MTIME,
and hard-linked files stay hard links; the gzip header has no name and no time. So the same tree gives the same
bytes, and the name of a distribution can follow from its inputs.
"""

import gzip
import hashlib
import os
import tarfile
from typing import NamedTuple

ENTRY_MTIME = 946684800  # 2000-01-01T00:00:00Z
COMPRESS_LEVEL = 6


class Packed(NamedTuple):
    size: int
    sha256: str


class _HashingWriter:
    def __init__(self, f):
        self._f = f
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, data):
        self._f.write(data)
        self.size += len(data)
        self.digest.update(data)
        return len(data)

    def flush(self):
        self._f.flush()


def _walk(tree):
    """Every path below tree relative to it, in the order of the module docstring."""
    for directory, subdirectories, files in os.walk(tree):
        subdirectories.sort()
        relative = os.path.relpath(directory, tree)
        if relative != ".":
            yield relative
        for name in sorted(files + [d for d in subdirectories if os.path.islink(os.path.join(directory, d))]):
            yield os.path.normpath(os.path.join(relative, name))
        subdirectories[:] = [d for d in subdirectories if not os.path.islink(os.path.join(directory, d))]


def pack(tree, target):
    """Write tree as a gzip-compressed tarball to the file target (created); returns its size and SHA-256."""
    with open(target, "wb") as raw:
        out = _HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=COMPRESS_LEVEL) as gz:
            with tarfile.TarFile(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for relative in _walk(tree):
                    path = os.path.join(tree, relative)
                    info = tar.gettarinfo(path, relative)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mtime = ENTRY_MTIME
                    if info.isreg():
                        with open(path, "rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
        raw.flush()
        os.fsync(raw.fileno())
    return Packed(out.size, out.digest.hexdigest())
