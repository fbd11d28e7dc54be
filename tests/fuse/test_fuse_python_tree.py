"""A repository of a Python installation (this interpreter's binary and standard library), mounted as the
unprivileged user: real tools see the same as on a squashfuse_ll mount of a squashfs image of the same tree, and
the published interpreter starts from the mount and imports its standard library from there."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from support.fuse_env import PYTHON

PROBE = Path(__file__).resolve().parent.parent / "support" / "tree_probe.py"
VERSION = "python{}.{}".format(*sys.version_info[:2])
IMPORTS = "import json, re, decimal, sqlite3, email.parser, http.client, xml.dom.minidom, asyncio, unittest"


def python_installation(root):
    """A self-contained prefix: ``bin/pythonX.Y`` and ``lib/pythonX.Y`` (the interpreter finds its standard
    library relative to its own location)."""
    root = Path(root)
    (root / "bin").mkdir(parents=True)
    shutil.copy2(os.path.realpath(getattr(sys, "_base_executable", sys.executable)), str(root / "bin" / VERSION))
    shutil.copytree(sysconfig.get_paths()["stdlib"], str(root / "lib" / VERSION), symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "site-packages", "dist-packages", "test"))
    return root


SCRIPT = """
set -e
fs() {{ {python} -m cvmfs_pilot fs "$@"; }}
trap 'fs umount mnt; fusermount3 -u mnt2' EXIT
fs mount --config-dir etc {fqrn} mnt
squashfuse_ll image.sqfs mnt2
{python} {probe} mnt > out/ours.json
{python} {probe} mnt2 > out/squash.json
mnt/bin/{version} -S -c '{imports}; print(json.__file__)' > out/python.txt
"""


def test_python_installation_matches_squashfuse_and_runs_from_the_mount(make_fuse_env):
    env = make_fuse_env(make_src=python_installation)
    image = env.scratch / "image.sqfs"
    subprocess.run(["mksquashfs", str(env.src), str(image), "-no-progress", "-quiet"], check=True)
    env.unprivileged.own(image)
    script = SCRIPT.format(python=PYTHON, probe=PROBE, fqrn=env.fqrn, version=VERSION, imports=IMPORTS)
    result = env.sh(script, timeout=300)
    assert result.returncode == 0, result.stderr
    out = env.scratch / "out"
    ours, squash = (json.loads((out / name).read_text()) for name in ("ours.json", "squash.json"))
    assert len(ours["sha256"]) > 500
    for field in ("sha256", "walk", "links", "hardlinks", "tar", "stat"):
        assert ours[field] == squash[field], field
    assert (out / "python.txt").read_text().strip() == str(env.scratch / "mnt" / "lib" / VERSION / "json" /
                                                           "__init__.py")
