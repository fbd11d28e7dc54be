#!/usr/bin/env python3
"""Check the tier rules of cvmfs_pilot (see src/cvmfs_pilot/__init__.py); exit 1 on any violation.

The node tier (packages cvmfs, client, fuse, node, glidein; modules cli, __main__ and the package root) must

* import only standard-library modules (``sys.stdlib_module_names``) and node-tier modules of cvmfs_pilot.
  Every import statement counts, wherever it is, and so do ``importlib.import_module``/``__import__`` calls
  with a literal name. A computed name cannot be checked and is refused, except in the dispatcher cli.py, whose
  tables NODE_COMMAND_MODULES and SERVER_COMMAND_MODULES are checked instead: literal dicts mapping a command
  group to a module name (or to a tuple starting with one; "module:function" names a function other than
  main). A node-table name counts as an import of cli.py; a server-table name must be a server-tier module --
  the one way the node tier reaches the server tier;
* follow the data flow cvmfs -> client -> fuse -> node -> glidein: a layer imports only itself and the layers
  before it. cli and __main__ may import any node-tier module. The package root may import nothing of
  cvmfs_pilot, because every module of the package imports the root implicitly;
* run on Python 3.6, which vermin checks (its output is printed).

The server tier (publish, dist, factory) may import anything; only the node tier's imports of it are checked.
Needs Python >= 3.10 and vermin installed next to the running interpreter.

Usage: check_tiers.py [--root SRC_DIR]    (default: this project's src directory)
Exit status: 0 all rules hold, 1 violations (printed as file:line: message), 2 the check could not run.
"""

import argparse
import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple, Optional

PACKAGE = "cvmfs_pilot"
NODE_LAYERS = ("cvmfs", "client", "fuse", "node", "glidein")  # in data-flow order
ENTRY_MODULES = ("cli", "__main__")
SERVER_PACKAGES = ("publish", "dist", "factory")
ROOT_LAYER = "package root"
ENTRY_LAYER = "entry"
SERVER_LAYER = "server"

DISPATCHER = f"{PACKAGE}.cli"
NODE_TABLE = "NODE_COMMAND_MODULES"
SERVER_TABLE = "SERVER_COMMAND_MODULES"
DYNAMIC_IMPORTERS = ("import_module", "__import__")
VERMIN_ARGS = ("-t=3.6-", "--no-tips", "--violations", "--eval-annotations", "-vvv")  # -vvv: line numbers


def layer_of(module):
    """The layer of a cvmfs_pilot module: one of NODE_LAYERS, ROOT_LAYER, ENTRY_LAYER, SERVER_LAYER, or None."""
    parts = module.split(".")
    if len(parts) == 1:
        return ROOT_LAYER
    if parts[1] in NODE_LAYERS:
        return parts[1]
    if parts[1] in ENTRY_MODULES:
        return ENTRY_LAYER
    if parts[1] in SERVER_PACKAGES:
        return SERVER_LAYER
    return None


def layer_refusal(importer_layer, target):
    """Why a node-tier module of importer_layer may not import the cvmfs_pilot module target, or None."""
    target_layer = layer_of(target)
    if target_layer == SERVER_LAYER:
        return (f"the node tier must not import the server tier ({', '.join(SERVER_PACKAGES)}); move what both "
                f"need into the node tier, or run server commands through cli.py's {SERVER_TABLE}")
    if target_layer is None:
        return f"{target} belongs to no tier"
    if target_layer == ROOT_LAYER or importer_layer == ENTRY_LAYER:
        return None
    if importer_layer == ROOT_LAYER:
        return "every module imports the package root, so the root must not import other cvmfs_pilot modules"
    allowed = NODE_LAYERS[: NODE_LAYERS.index(importer_layer) + 1]
    if target_layer in allowed:
        return None
    return (f"the {importer_layer} layer may import only {', '.join(allowed)} "
            f"(data flow: {' -> '.join(NODE_LAYERS)}); move what both need into one of those")


class SourceFile:
    """One module under the source root: its path, dotted name and layer."""

    def __init__(self, root, path):
        self.path = path
        relative = path.relative_to(root).with_suffix("")
        self.is_package = relative.name == "__init__"
        self.module = ".".join(relative.parts[:-1] if self.is_package else relative.parts)
        self.layer = layer_of(self.module)

    @property
    def package(self):
        """The package that relative imports in this module start from."""
        return self.module if self.is_package else self.module.rpartition(".")[0]


def resolve_relative(source, level, name):
    """The absolute module named by a relative import, or None if it climbs above the top-level package."""
    base = source.package.split(".")
    keep = len(base) - (level - 1)
    if keep < 1:
        return None
    return ".".join(base[:keep] + ([name] if name else []))


class Import(NamedTuple):
    """One import in a module: the absolute module name, or None and the problem that prevents resolving it."""

    line: int
    statement: str
    module: Optional[str]
    problem: Optional[str] = None


def imports_in(source, tree):
    """Yield an Import for every import statement and dynamic import call in a module's syntax tree."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(node.lineno, f"import {alias.name}", alias.name)
        elif isinstance(node, ast.ImportFrom):
            names = ", ".join(alias.name for alias in node.names)
            statement = f"from {'.' * node.level}{node.module or ''} import {names}"
            base = resolve_relative(source, node.level, node.module) if node.level else node.module
            if base is None:
                yield Import(node.lineno, statement, None, "climbs above the top-level package")
            elif base == PACKAGE:
                # `from cvmfs_pilot import client` imports the sub-package, not just the root.
                for alias in node.names:
                    known = alias.name in NODE_LAYERS + ENTRY_MODULES + SERVER_PACKAGES
                    yield Import(node.lineno, statement, f"{PACKAGE}.{alias.name}" if known else PACKAGE)
            else:
                yield Import(node.lineno, statement, base)
        elif isinstance(node, ast.Call) and is_dynamic_import(node):
            if source.module == DISPATCHER and not is_string(name_argument(node)):
                continue  # the dispatcher imports the modules of its tables, which dispatch_violations() checks
            yield dynamic_import(source, node)


def is_dynamic_import(call):
    function = call.func
    if isinstance(function, ast.Name):
        return function.id in DYNAMIC_IMPORTERS
    return (isinstance(function, ast.Attribute) and function.attr in DYNAMIC_IMPORTERS
            and isinstance(function.value, ast.Name) and function.value.id == "importlib")


def is_string(node):
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def name_argument(call):
    return call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "name"), None)


def dynamic_import(source, call):
    """The Import made by an import_module/__import__ call; a leading dot is relative to the calling package."""
    argument = name_argument(call)
    statement = f"{ast.unparse(call.func)}({'' if argument is None else ast.unparse(argument)})"
    if not is_string(argument):
        return Import(call.lineno, statement, None, "computes the module name, which cannot be checked; "
                                                    "use a literal name")
    name = argument.value
    if name.startswith("."):
        stripped = name.lstrip(".")
        name = resolve_relative(source, len(name) - len(stripped), stripped)
        if name is None:
            return Import(call.lineno, statement, None, "climbs above the top-level package")
    return Import(call.lineno, statement, name)


def import_refusal(source, module):
    """Why the node-tier module source may not import module (an absolute name), or None."""
    top = module.split(".")[0]
    if top == PACKAGE:
        return layer_refusal(source.layer, module)
    if top in sys.stdlib_module_names:
        return None
    return (f"'{top}' is not in the standard library, and the node tier uses the standard library only; "
            f"use the standard library, or move this code to the server tier")


def dispatch_entries(tree):
    """Yield (table, line, entry, module name or None) for each entry of the dispatcher's two tables."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, ast.AnnAssign):
            target = node.target
        else:
            continue
        table = target.id if isinstance(target, ast.Name) else None
        if table not in (NODE_TABLE, SERVER_TABLE):
            continue
        if not isinstance(node.value, ast.Dict):
            yield table, node.lineno, table, None
            continue
        for key, value in zip(node.value.keys, node.value.values):
            name = value.elts[0] if isinstance(value, (ast.Tuple, ast.List)) and value.elts else value
            entry = table if key is None else f"{table}[{ast.unparse(key)}]"
            # "module:function" names a function of the module other than main
            module = name.value.partition(":")[0] if is_string(name) and key is not None else None
            yield table, value.lineno, entry, module


def dispatch_violations(source, tree):
    """(line, message) for each dispatcher table entry that is not a literal name of a module of its tier."""
    for table, line, entry, module in dispatch_entries(tree):
        if module is None:
            reason = "must be a literal dict mapping each command group to a module name or a tuple starting with one"
        elif table == SERVER_TABLE:
            is_server = module.split(".")[0] == PACKAGE and layer_of(module) == SERVER_LAYER
            servers = ", ".join(f"{PACKAGE}.{package}" for package in SERVER_PACKAGES)
            reason = None if is_server else f"{module!r} is not a module of {servers}"
        else:
            reason = import_refusal(source, module)
        if reason:
            yield line, f"{entry}: {reason}"


def file_violations(source):
    """(line, message) for each broken import rule in one node-tier file."""
    try:
        tree = ast.parse(source.path.read_bytes(), filename=str(source.path))
    except SyntaxError as error:
        return [(error.lineno or 0, f"cannot be parsed: {error.msg}")]
    violations = []
    for found in imports_in(source, tree):
        reason = found.problem if found.module is None else import_refusal(source, found.module)
        if reason:
            violations.append((found.line, f"{found.statement}: {reason}"))
    if source.module == DISPATCHER:
        violations.extend(dispatch_violations(source, tree))
    return sorted(violations)


def display(path):
    """The path relative to the working directory when it is below it, else absolute."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def vermin_passes(paths):
    """Run vermin over the given files, print its output, and return whether all of them run on Python 3.6."""
    vermin = Path(sys.executable).parent / "vermin"
    if not vermin.exists():
        print(f"check_tiers: {vermin} not found; install the test extras: pip install -e '.[test]'", file=sys.stderr)
        sys.exit(2)
    command = [str(vermin), *VERMIN_ARGS, *paths]
    print(f"$ {' '.join(command[:len(VERMIN_ARGS) + 1])} <{len(paths)} node-tier files>")
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    print(result.stdout.rstrip())
    return result.returncode == 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent / "src",
                        help="source directory that contains the cvmfs_pilot package (default: %(default)s)")
    root = parser.parse_args(argv).root.resolve()
    if not (root / PACKAGE).is_dir():
        parser.error(f"there is no {PACKAGE} package in {root}")

    violations = []
    node_files = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        source = SourceFile(root, path)
        if source.layer is None:
            violations.append((display(path), 1, f"{source.module} belongs to no tier: add its package to a tier "
                                                 f"in {display(Path(__file__))} and src/cvmfs_pilot/__init__.py"))
        elif source.layer != SERVER_LAYER:
            node_files.append(display(path))
            violations.extend((display(path), line, message) for line, message in file_violations(source))

    if node_files and not vermin_passes(node_files):
        violations.append(("vermin", 0, "node-tier code that Python 3.6 cannot run, see vermin's report above"))
    for path, line, message in violations:
        print(f"{path}:{line}: {message}")
    if violations:
        print(f"check_tiers: {len(violations)} violation(s)")
        return 1
    print(f"check_tiers: OK ({len(node_files)} node-tier files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
