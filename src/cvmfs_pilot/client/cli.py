"""``cvmfs-pilot fs``: read repositories without mounting them (info, ls, stat, cat, get)."""

import argparse
import logging
import stat as statmod
import sys
import time

from cvmfs_pilot.cvmfs.der import DerError

from .cache import CacheError
from .config import DEFAULT_CONFIG_DIR, ConfigurationError
from .export import export
from .repository import RepositoryError, error_text
from .session import open_repository


def _option(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("expected KEY=VALUE, got {!r}".format(text))
    return key, value


DESCRIPTION = "Read CernVM-FS repositories without mounting them."


def build_parser(prog, description=DESCRIPTION, add_commands=None):
    """The parser of these commands; ``add_commands(subparsers)`` adds more (``fs mount`` and ``fs umount``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config-dir", default=DEFAULT_CONFIG_DIR, metavar="DIR",
                        help="configuration root (default %(default)s)")
    common.add_argument("-o", dest="options", type=_option, action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration parameter (repeatable)")
    common.add_argument("-v", "--verbose", action="store_true", help="log what the client does")
    parser = argparse.ArgumentParser(prog=prog, description=description)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    info = commands.add_parser("info", parents=[common], help="revision, servers, proxy and cache of a repository")
    info.add_argument("fqrn")
    for name, text in (("ls", "list a directory"), ("stat", "show an entry"), ("cat", "write a file to stdout")):
        command = commands.add_parser(name, parents=[common], help=text)
        command.add_argument("fqrn")
        command.add_argument("path", nargs="?" if name == "ls" else None, default="/")
    get = commands.add_parser("get", parents=[common], help="export a subtree to a local directory")
    get.add_argument("fqrn")
    get.add_argument("path")
    get.add_argument("--to", required=True, metavar="DIR")
    if add_commands is not None:
        add_commands(commands)
    return parser


def _mode_string(mode):
    kinds = {statmod.S_IFDIR: "d", statmod.S_IFLNK: "l", statmod.S_IFREG: "-", statmod.S_IFIFO: "p",
             statmod.S_IFSOCK: "s", statmod.S_IFCHR: "c", statmod.S_IFBLK: "b"}
    return statmod.filemode(mode) if statmod.S_IFMT(mode) in kinds else "?" + statmod.filemode(mode)[1:]


def _time(seconds):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def _info(repository, out):
    manifest = repository.manifest
    used, objects, pinned = repository.objects.cache.usage()
    rows = [
        ("repository", repository.fqrn),
        ("revision", "{}{}".format(manifest.revision, " (offline: from the local cache)"
                                   if repository.loader.offline else "")),
        ("published", "{} UTC".format(_time(manifest.timestamp)) if manifest.timestamp else "unknown"),
        ("root catalog", manifest.root_catalog.hex()),
        ("catalog TTL", "{} s".format(repository.ttl)),
        ("server", repository.objects.downloader.current_host),
        ("proxy", repository.objects.downloader.current_proxy),
        ("config repository", repository.config_repository or "none"),
        ("cache", "{} ({:.1f} MB in {} objects, {:.1f} MB pinned)".format(
            repository.objects.cache.directory, used / 1e6, objects, pinned / 1e6)),
    ]
    for key, value in rows:
        out.write("{:<18} {}\n".format(key + ":", value))


def _run(args, out):
    overrides = dict(args.options)
    with open_repository(args.fqrn, args.config_dir, overrides) as repository:
        if args.command == "info":
            _info(repository, out)
        elif args.command == "ls":
            for name, st in repository.listdir(args.path):
                out.write("{} {:>12} {} {}\n".format(_mode_string(st.st_mode), st.st_size, _time(st.st_mtime),
                                                      name))
        elif args.command == "stat":
            st = repository.stat(args.path)
            out.write("mode {} ({:o})\nsize {}\nlinks {}\ninode {}\nowner {}:{}\nmodified {}.{:09d} UTC\n".format(
                _mode_string(st.st_mode), st.st_mode, st.st_size, st.st_nlink, st.st_ino, st.st_uid, st.st_gid,
                _time(st.st_mtime), st.st_mtime_ns % 10**9))
            if statmod.S_ISLNK(st.st_mode):
                out.write("target {}\n".format(repository.readlink(args.path)))
            for key, value in sorted(repository.xattrs(args.path).items()):
                out.write("xattr {}={}\n".format(key, value.decode("utf-8", "backslashreplace")))
        elif args.command == "cat":
            with repository.open_file(args.path) as f:
                offset = 0
                while offset < f.size:
                    data = f.read(offset, 1024 * 1024)
                    out.buffer.write(data)
                    offset += len(data)
            out.flush()
        elif args.command == "get":
            report = export(repository, args.path, args.to)
            out.write("exported {} files ({:.1f} MB), {} directories, {} symlinks from {}:{} to {}{}\n".format(
                report.files, report.bytes / 1e6, report.directories, report.symlinks, args.fqrn, args.path,
                args.to, "; skipped {} device files or sockets".format(report.skipped) if report.skipped else ""))
    return 0


def main(argv, prog):
    return run(build_parser(prog).parse_args(argv), prog)


def run(args, prog):
    """Run one of these commands, parsed by :func:`build_parser`."""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="{}: %(levelname)s: %(message)s".format(prog))
    try:
        return _run(args, sys.stdout)
    except (RepositoryError, ConfigurationError, DerError, CacheError, OSError) as exc:
        sys.stderr.write("{}: error: {}\n".format(prog, error_text(exc)))
        return 1
