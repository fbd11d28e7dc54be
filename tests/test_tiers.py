"""scripts/check_tiers.py: the real tree passes, and each kind of violation in a synthetic tree is caught."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CHECKER = Path(__file__).resolve().parent.parent / "scripts" / "check_tiers.py"
CLEAN_TREE = {
    "cvmfs/hashing.py": "import hashlib\n",
    "cvmfs/catalog.py": "import sqlite3\nfrom . import hashing\nfrom .hashing import hashlib\n",
    "client/fetch.py": "import urllib.request\nfrom ..cvmfs import catalog\nfrom cvmfs_pilot import __version__\n",
    "fuse/ops.py": "from ..client import fetch\nfrom ..cvmfs.catalog import sqlite3\n",
    "node/mount.py": "from ..fuse import ops\nfrom cvmfs_pilot.client import fetch\n",
    "glidein/pilot.py": "import importlib\nops = importlib.import_module('cvmfs_pilot.fuse.ops')\n",
    "cli.py": """\
        import importlib
        from . import __version__
        NODE_COMMAND_MODULES = {"mount": ("cvmfs_pilot.node.mount", "mount repositories")}
        SERVER_COMMAND_MODULES = {"repo": ("cvmfs_pilot.publish.cli", "publish repositories"),
                                  "dist": "cvmfs_pilot.dist.cli", "submit": "cvmfs_pilot.dist.cli:submit_main"}
        def load(module):
            return importlib.import_module(module)
        """,
    "__main__.py": "from .cli import run\n",
    "publish/cli.py": "import numpy\nfrom dataclasses import dataclass\nif (n := 1):\n    pass\n",
}


def run_checker(*args, cwd=None):
    result = subprocess.run([sys.executable, str(CHECKER), *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, check=False)
    return result.returncode, result.stdout


def check_tree(tmp_path, files):
    """Write the clean tree plus files (relative to src/cvmfs_pilot) into tmp_path and run the checker on it."""
    package = tmp_path / "src" / "cvmfs_pilot"
    for relative, text in {"__init__.py": '"""Root."""\n', **CLEAN_TREE, **files}.items():
        path = package / relative
        for directory in [path.parent, *path.parent.parents]:
            if directory == package.parent:
                break
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "__init__.py").touch()
        path.write_text(textwrap.dedent(text))
    return run_checker("--root", str(tmp_path / "src"), cwd=tmp_path)


def test_real_tree_passes():
    code, output = run_checker()
    assert code == 0, output
    assert "Minimum required versions" in output  # vermin's report is shown


def test_clean_synthetic_tree_passes(tmp_path):
    code, output = check_tree(tmp_path, {})
    assert code == 0, output


@pytest.mark.parametrize("relative, text, expected", [
    ("cvmfs/net.py", "import requests\n",
     "src/cvmfs_pilot/cvmfs/net.py:1: import requests: 'requests' is not in the standard library"),
    ("client/sign.py", "import os\n\ndef sign():\n    from cryptography import x509\n",
     "src/cvmfs_pilot/client/sign.py:4: from cryptography import x509: 'cryptography' is not in the standard"),
    ("client/keys.py", "from ..publish import keys\n",
     "src/cvmfs_pilot/client/keys.py:1: from ..publish import keys: the node tier must not import the server"),
    ("client/keys.py", "from .. import publish\n",
     "keys.py:1: from .. import publish: the node tier must not import the server tier"),
    ("node/keys.py", "from cvmfs_pilot.dist import wheel\n",
     "keys.py:1: from cvmfs_pilot.dist import wheel: the node tier must not import the server tier"),
    ("glidein/load.py", "import importlib\nimportlib.import_module('cvmfs_pilot.factory.jobs')\n",
     "load.py:2: importlib.import_module('cvmfs_pilot.factory.jobs'): the node tier must not import the server"),
    ("glidein/load.py", "__import__('yaml')\n",
     "load.py:1: __import__('yaml'): 'yaml' is not in the standard library"),
    ("glidein/load.py", "import importlib\nname = 'x'\nimportlib.import_module(name)\n",
     "load.py:3: importlib.import_module(name): computes the module name, which cannot be checked"),
    ("cli.py", "SERVER_COMMAND_MODULES = {'repo': ('requests', 'HTTP')}\n",
     "cli.py:1: SERVER_COMMAND_MODULES['repo']: 'requests' is not a module of cvmfs_pilot.publish"),
    ("cli.py", "SERVER_COMMAND_MODULES = {'repo': 'cvmfs_pilot.client.fetch'}\n",
     "cli.py:1: SERVER_COMMAND_MODULES['repo']: 'cvmfs_pilot.client.fetch' is not a module of cvmfs_pilot.publish"),
    ("cli.py", "SERVER_COMMAND_MODULES = {'repo': 'cvmfs_pilot.client.fetch:run'}\n",
     "cli.py:1: SERVER_COMMAND_MODULES['repo']: 'cvmfs_pilot.client.fetch' is not a module of cvmfs_pilot.publish"),
    ("cli.py", "NAME = 'cvmfs_pilot.publish.cli'\nSERVER_COMMAND_MODULES = {'repo': NAME}\n",
     "cli.py:2: SERVER_COMMAND_MODULES['repo']: must be a literal dict mapping each command group to a module name"),
    ("cli.py", "NODE_COMMAND_MODULES = {'keys': ('cvmfs_pilot.publish.keys', 'keys')}\n",
     "cli.py:1: NODE_COMMAND_MODULES['keys']: the node tier must not import the server tier"),
    ("cli.py", "NODE_COMMAND_MODULES = {'get': ('requests', 'fetch')}\n",
     "cli.py:1: NODE_COMMAND_MODULES['get']: 'requests' is not in the standard library"),
    ("cli.py", "import importlib\nimportlib.import_module('cvmfs_pilot.publish.cli')\n",
     "cli.py:2: importlib.import_module('cvmfs_pilot.publish.cli'): the node tier must not import the server"),
    ("client/ops.py", "from ..fuse import ops\n",
     "client/ops.py:1: from ..fuse import ops: the client layer may import only cvmfs, client"),
    ("cvmfs/up.py", "import cvmfs_pilot.client.fetch\n",
     "cvmfs/up.py:1: import cvmfs_pilot.client.fetch: the cvmfs layer may import only cvmfs"),
    ("fuse/up.py", "def f():\n    from cvmfs_pilot import node\n",
     "fuse/up.py:2: from cvmfs_pilot import node: the fuse layer may import only cvmfs, client, fuse"),
    ("__init__.py", "from . import cli\n",
     "__init__.py:1: from . import cli: every module imports the package root"),
    ("cvmfs/deep.py", "from .... import x\n", "deep.py:1: from .... import x: climbs above the top-level package"),
    ("tools.py", "import os\n", "src/cvmfs_pilot/tools.py:1: cvmfs_pilot.tools belongs to no tier"),
])
def test_import_violation_is_reported(tmp_path, relative, text, expected):
    code, output = check_tree(tmp_path, {relative: text})
    assert code == 1, output
    assert expected in output, output


@pytest.mark.parametrize("text, feature", [
    ("if (n := 1):\n    pass\n", "L1: named expressions require"),
    ("import dataclasses\n", "'dataclasses' module requires"),
    ("from dataclasses import dataclass\n", "'dataclasses' module requires"),
])
def test_python_36_violation_is_reported_with_vermin_output(tmp_path, text, feature):
    code, output = check_tree(tmp_path, {"node/new.py": text})
    assert code == 1, output
    assert "src/cvmfs_pilot/node/new.py" in output and feature in output, output
    assert "vermin:0: node-tier code that Python 3.6 cannot run" in output


def test_missing_package_is_a_usage_error(tmp_path):
    code, output = run_checker("--root", str(tmp_path))
    assert code == 2
    assert "there is no cvmfs_pilot package in" in output
