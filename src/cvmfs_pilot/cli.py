"""The ``cvmfs-pilot`` command: a dispatcher to command groups.

Node-tier groups run with any Python 3.6+. Server-tier groups (Python >= 3.10 with the ``server`` extra) are
loaded only when invoked, through the one table below; the node tier never imports them otherwise.
"""

import importlib
import sys

from . import __version__

# group name -> (module with a ``main(argv, prog)`` function, or "module:function" naming another such function,
#                one-line description)
NODE_COMMAND_MODULES = {
    "fs": ("cvmfs_pilot.fuse.cli", "mount repositories, or read them without mounting (mount, umount, info, ls, "
                                   "stat, cat, get)"),
    "node": ("cvmfs_pilot.node.cli", "probe this worker node, provide /cvmfs to a command, clean up (probe, decide, "
                                     "fetch, exec, cleanup)"),
    "glidein": ("cvmfs_pilot.glidein.cli", "the pilot runtime that glidein_startup.sh starts (run)"),
}
SERVER_COMMAND_MODULES = {
    "repo": ("cvmfs_pilot.publish.cli", "publish, sign, check and serve CernVM-FS repositories"),
    "dist": ("cvmfs_pilot.dist.cli", "build, update and list client distributions in a staging area"),
    "factory": ("cvmfs_pilot.factory.cli:factory_main", "stage the factory's files for pilots (stage)"),
    "submit": ("cvmfs_pilot.factory.cli:submit_main", "submit pilots to a factory entry (local, Slurm, HTCondor)"),
    "status": ("cvmfs_pilot.factory.cli:status_main", "show the factory's pilots and their reports"),
    "remove": ("cvmfs_pilot.factory.cli:remove_main", "remove pilots from their batch systems"),
    "demo": ("cvmfs_pilot.factory.demo", "the whole system on this machine: repositories, distribution, factory, "
                                         "local pilots whose jobs read /cvmfs"),
}
SERVER_PYTHON = (3, 10)


def usage():
    lines = ["usage: cvmfs-pilot GROUP ...", "", "command groups:"]
    for name, (_, text) in sorted(list(NODE_COMMAND_MODULES.items()) + list(SERVER_COMMAND_MODULES.items())):
        lines.append("  {:<10} {}".format(name, text))
    lines += ["", "'cvmfs-pilot GROUP --help' describes a group's commands."]
    return "\n".join(lines)


def _load_server_group(name, module):
    if sys.version_info < SERVER_PYTHON:
        sys.exit("cvmfs-pilot {}: needs Python {}.{} or newer (this is {}); server-side commands run on the "
                 "repository or factory host, not on worker nodes".format(
                     name, SERVER_PYTHON[0], SERVER_PYTHON[1], sys.version.split()[0]))
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        sys.exit("cvmfs-pilot {}: a server-side dependency is missing ({}); install with "
                 "'pip install cvmfs-pilot[server]'".format(name, exc))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print("cvmfs-pilot", __version__)
        return 0
    name = argv[0]
    if name in NODE_COMMAND_MODULES:
        target = NODE_COMMAND_MODULES[name][0]
        module = importlib.import_module(target.partition(":")[0])
    elif name in SERVER_COMMAND_MODULES:
        target = SERVER_COMMAND_MODULES[name][0]
        module = _load_server_group(name, target.partition(":")[0])
    else:
        sys.stderr.write("cvmfs-pilot: unknown command group {!r}\n\n{}\n".format(name, usage()))
        return 2
    return getattr(module, target.partition(":")[2] or "main")(argv[1:], "cvmfs-pilot " + name)
