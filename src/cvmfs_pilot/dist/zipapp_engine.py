"""The python engine: the node tier of this installation packed as one zipapp, run by any python3 >= 3.6.

``python3 cvmfs-pilot.pyz fs info REPO`` is ``cvmfs-pilot fs info REPO``. The archive holds the package root
modules, every node-tier package present (see cvmfs_pilot/__init__.py) and the node tier's data files (NODE_DATA);
the server tier (publish, dist, factory) is never packed. Entries are sorted and dated 1980-01-01, so the same
sources give the same bytes.
"""

import io
import zipfile
from pathlib import Path

import cvmfs_pilot

NODE_PACKAGES = ("cvmfs", "client", "fuse", "node", "glidein")
ROOT_MODULES = ("__init__.py", "__main__.py", "cli.py")
NODE_DATA = ("glidein/helpers",)  # directories of non-Python files the node tier reads with pkgutil.get_data
SHEBANG = b"#!/usr/bin/env python3\n"
MAIN = b"import sys\n\nfrom cvmfs_pilot.cli import main\n\nsys.exit(main())\n"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def node_tier_files(package_dir=None):
    """[(name in the archive, path)] of the node tier's Python files and NODE_DATA files, sorted by name."""
    package_dir = Path(package_dir or Path(cvmfs_pilot.__file__).parent)
    files = [("cvmfs_pilot/" + name, package_dir / name) for name in ROOT_MODULES]
    for package in NODE_PACKAGES:
        directory = package_dir / package
        if not (directory / "__init__.py").is_file():
            continue
        for path in directory.rglob("*.py"):
            if "__pycache__" not in path.parts:
                files.append(("cvmfs_pilot/" + path.relative_to(package_dir).as_posix(), path))
    for directory in NODE_DATA:
        for path in (package_dir / directory).glob("*"):
            if path.is_file() and not path.name.startswith("."):
                files.append(("cvmfs_pilot/" + path.relative_to(package_dir).as_posix(), path))
    return sorted(files)


def build_zipapp(package_dir=None):
    """The zipapp's bytes: a shebang line, then a zip archive with ``__main__.py`` and the node tier."""
    buffer = io.BytesIO()
    buffer.write(SHEBANG)
    with zipfile.ZipFile(buffer, "w") as archive:
        entries = [("__main__.py", MAIN)] + [(name, path.read_bytes()) for name, path in
                                             node_tier_files(package_dir)]
        for name, data in entries:
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()
