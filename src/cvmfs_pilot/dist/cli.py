"""``cvmfs-pilot dist``: build, update and list the client distributions of a staging area.

On a terminal, progress bars and a summary table (rich); otherwise one plain line per event, for logs. Exit
status: 0 when every distribution was built or is unchanged, 1 when any failed or the run could not start (and
for list, when index.json does not match index.json.sha256), 2 for bad arguments.
"""

import argparse
import os
import re
import sys
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .errors import DistError
from .runner import (BUILT, DEFAULT_GRACE_HOURS, FAILED, SKIPPED, UNCHANGED, Reporter, Request, build_staging,
                     update_staging)
from .staging import INDEX, INDEX_SHA256, Staging
from .upstream import SHIPPED, Target, Upstream

VERSION = re.compile(r"[0-9][0-9A-Za-z.+~^_]*\Z")
STATUS_STYLE = {BUILT: "green", UNCHANGED: "dim", FAILED: "bold red", SKIPPED: "yellow"}


def _list(text):
    return [item.strip() for item in text.split(",") if item.strip()]


def _version(text):
    if not VERSION.match(text):
        raise argparse.ArgumentTypeError("{!r} is not a cvmfs version such as 2.13.2".format(text))
    return text


def _hours(text):
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be zero or more")
    return value


def build_parser(prog):
    parser = argparse.ArgumentParser(prog=prog, description="Build and stage CernVM-FS client distributions.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    build = commands.add_parser("build", help="build the distributions of the given sources and platforms")
    build.add_argument("--staging", required=True, metavar="DIR", help="the staging area (a web server's "
                                                                       "directory)")
    build.add_argument("--sources", type=_list, metavar="LIST",
                       help="comma-separated sources: osg, egi, default, none (default: all defined)")
    build.add_argument("--platforms", type=_list, metavar="LIST",
                       help="comma-separated platform-architecture pairs such as el9-x86_64,el8-aarch64 "
                            "(default: all defined); 'none' builds only the python engine, which needs no "
                            "download when the source brings no configuration package")
    build.add_argument("--upstream", metavar="FILE",
                       help="upstream definitions replacing the shipped {}".format(SHIPPED.name))
    build.add_argument("--cvmfs-version", type=_version, metavar="X.Y.Z",
                       help="this cvmfs version instead of the newest each source ships")
    build.add_argument("--grace-hours", type=_hours, default=DEFAULT_GRACE_HOURS, metavar="H",
                       help="keep replaced distributions this long for running pilots (default %(default)g)")
    update = commands.add_parser("update", help="rebuild what changed upstream since the last build")
    update.add_argument("--staging", required=True, metavar="DIR")
    listing = commands.add_parser("list", help="show what is staged")
    listing.add_argument("--staging", required=True, metavar="DIR")
    return parser


def _request(args):
    upstream = Upstream.load(args.upstream)
    if args.platforms == ["none"]:
        targets = []
    else:
        targets = args.platforms or [str(Target(platform.name, arch)) for platform in upstream.platforms.values()
                                     for arch in platform.arches]
    return Request(sources=tuple(args.sources or upstream.sources), targets=tuple(targets),
                   upstream=os.path.abspath(args.upstream) if args.upstream else None,
                   cvmfs_version=args.cvmfs_version, grace_hours=args.grace_hours)


def _megabytes(size):
    return "{:.1f} MB".format(size / 1e6)


class PlainReporter(Reporter):
    """One line per stage and per finished distribution."""

    def __init__(self, prog, out):
        self.prog = prog
        self.out = out

    def stage(self, text):
        self.out.write("{}: {}\n".format(self.prog, text))
        self.out.flush()

    def finish(self, outcome):
        if outcome.status == BUILT:
            detail = "{} ({}, {:.1f} s)".format(outcome.name, _megabytes(outcome.size), outcome.seconds)
        elif outcome.status == UNCHANGED:
            detail = outcome.name
        else:
            detail = outcome.message
        self.out.write("{}: {}: {}: {}\n".format(self.prog, outcome.key, outcome.status, detail))
        self.out.flush()


class RichReporter(Reporter):
    """A progress bar per distribution being built, on the console; a line per finished one."""

    def __init__(self, console):
        self.console = console
        self.progress = Progress(TextColumn("{task.description:<34}"), BarColumn(), DownloadColumn(),
                                 TextColumn("{task.fields[step]:<12}"), TimeElapsedColumn(), console=console,
                                 transient=True)
        self._tasks = {}

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def stage(self, text):
        self.progress.console.print("[bold]{}[/bold]".format(escape(text)))

    def start(self, key, total_bytes):
        self._tasks[key] = self.progress.add_task(str(key), total=total_bytes or None, step="")

    def step(self, key, text):
        self.progress.update(self._tasks[key], step=text)

    def advance(self, key, nbytes):
        self.progress.advance(self._tasks[key], nbytes)

    def finish(self, outcome):
        task = self._tasks.pop(outcome.key, None)
        if task is not None:
            self.progress.remove_task(task)
        if outcome.status in (BUILT, FAILED):
            style = STATUS_STYLE[outcome.status]
            detail = outcome.message if outcome.status == FAILED else "{} ({}, {:.1f} s)".format(
                outcome.name, _megabytes(outcome.size), outcome.seconds)
            self.progress.console.print("[{}]{:<9}[/] {} {}".format(style, outcome.status, outcome.key,
                                                                  escape(detail)), highlight=False)


def _summary_line(report):
    counts = {status: sum(1 for o in report.outcomes if o.status == status)
              for status in (BUILT, UNCHANGED, FAILED, SKIPPED)}
    rate = report.downloaded / 1e6 / report.seconds if report.seconds else 0.0
    text = ("{built} built, {unchanged} unchanged, {failed} failed, {skipped} skipped in {seconds:.1f} s; "
            "downloaded {down} ({rate:.1f} MB/s), wrote {written}; index sha256 {sha}").format(
        seconds=report.seconds, down=_megabytes(report.downloaded), rate=rate, written=_megabytes(report.written),
        sha=report.index_sha256, **counts)
    if report.deleted:
        text += "; pruned {} old files".format(len(report.deleted))
    return text


def _print_summary(report, console, prog, out):
    if console is None:
        out.write("{}: {}\n".format(prog, _summary_line(report)))
        return
    table = Table(title="distributions", title_justify="left")
    for column in ("distribution", "status", "version", "size", "time", "name or reason"):
        table.add_column(column, overflow="fold", no_wrap=column in ("distribution", "status"))
    for outcome in report.outcomes:
        table.add_row(str(outcome.key), "[{}]{}[/]".format(STATUS_STYLE[outcome.status], outcome.status),
                      escape(outcome.version), _megabytes(outcome.size) if outcome.size else "",
                      "{:.1f} s".format(outcome.seconds) if outcome.status == BUILT else "",
                      escape(outcome.message if outcome.status in (FAILED, SKIPPED) else outcome.name))
    console.print(table)
    console.print(escape(_summary_line(report)), highlight=False)


def _list_staging(directory, console, out):
    staging = Staging(directory)
    entries = staging.read_index()
    if not entries:
        out.write("{} holds no distributions yet; run 'cvmfs-pilot dist build --staging {}'\n".format(
            directory, directory))
        return 0
    actual, stated = staging.index_sha256()
    state = staging.read_state()
    retired = state.get("retired", {})
    grace = state.get("request", {}).get("grace_hours", DEFAULT_GRACE_HOURS)
    columns = ("engine", "source", "platform", "arch", "version", "size", "built (UTC)", "name")
    rows = [(e.engine, e.source, e.platform, e.arch, e.version, _megabytes(e.size), e.build_time, e.name)
            for e in sorted(entries, key=lambda e: e.key)]
    if console is not None:
        table = Table(title=escape("{} distributions in {}".format(len(entries), directory)), title_justify="left")
        for column in columns:
            table.add_column(column, no_wrap=column != "name", overflow="fold")
        for row in rows:
            table.add_row(*(escape(value) for value in row))
        console.print(table)
    else:
        widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]
        for row in [columns] + rows:
            out.write("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() + "\n")
    if actual == stated:
        check = "matches {}".format(INDEX_SHA256)
    else:
        check = "DIFFERS from {} ({}); run 'dist update'".format(INDEX_SHA256, stated)
    out.write("{} sha256 {} ({})\n".format(INDEX, actual, check))
    if retired:
        oldest = min(retired.values()) + grace * 3600
        out.write("{} replaced files kept for running pilots; the first is pruned after {} UTC\n".format(
            len(retired), time.strftime("%Y-%m-%d %H:%M", time.gmtime(oldest))))
    return 0 if actual == stated else 1


def _run(args, reporter):
    if args.command == "build":
        return build_staging(args.staging, _request(args), reporter)
    return update_staging(args.staging, reporter)


def main(argv, prog):
    args = build_parser(prog).parse_args(argv)
    console = Console() if sys.stdout.isatty() else None
    try:
        if args.command == "list":
            return _list_staging(args.staging, console, sys.stdout)
        if console is None:
            report = _run(args, PlainReporter(prog, sys.stdout))
        else:
            with RichReporter(console) as reporter:
                report = _run(args, reporter)
    except DistError as exc:
        print("{}: error: {}".format(prog, exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print("{}: error: {}: {}".format(prog, exc.filename or "", exc.strerror or exc), file=sys.stderr)
        return 1
    _print_summary(report, console, prog, sys.stdout)
    return 1 if report.failed else 0
