"""The factory's commands: ``cvmfs-pilot factory stage``, ``submit``, ``status`` and ``remove``.

Each reads ``factory.toml`` (``--config``, default ./factory.toml). Exit status: 0 done, 1 failed (the message
says why and what to do), 2 bad arguments.
"""

import argparse
import json
import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .config import DEFAULT_CONFIG, load_config
from .errors import FactoryError
from .pilots import active_pilot_ids, describe, remove, status, submit
from .staging import stage_areas

STATE_STYLE = {"queued": "cyan", "running": "green", "held": "yellow", "finished": "", "lost": "bold red",
               "removed": "dim", "unknown": "yellow"}
STATUS_COLUMNS = ("id", "state", "job_id", "submitted", "outcome", "failure_class", "duration", "reason")


def _parser(prog, description):
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", default=DEFAULT_CONFIG, metavar="FILE",
                        help="the factory configuration (default: %(default)s)")
    return parser


def _run(prog, work):
    """Run work(); FactoryError and OSError become one error line and exit status 1."""
    try:
        return work()
    except FactoryError as exc:
        print("{}: error: {}".format(prog, exc), file=sys.stderr)
    except OSError as exc:
        print("{}: error: {}: {}".format(prog, exc.filename or "", exc.strerror or exc), file=sys.stderr)
    return 1


def factory_main(argv, prog):
    parser = _parser(prog, "Stage the factory's files for pilots.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    staging = commands.add_parser("stage", help="write the factory (and frontend) staging areas; print the index "
                                                "hashes")
    staging.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                         help="the factory configuration (default: {})".format(DEFAULT_CONFIG))
    args = parser.parse_args(argv)

    def work():
        for area in stage_areas(load_config(args.config)):
            for name in area.replaced:
                print("{}: warning: {}/files/{} changed; pilots submitted with an older index will refuse it".format(
                    prog, area.directory, name), file=sys.stderr)
            print("{} {}: index sha256 {} ({}) in {}".format(area.kind, area.name, area.index_sha256,
                                                             "written" if area.written else "unchanged",
                                                             area.directory))
        return 0
    return _run(prog, work)


def submit_main(argv, prog):
    parser = _parser(prog, "Submit pilots to an entry of the factory.")
    parser.add_argument("--entry", required=True, metavar="NAME", help="the entry ([entries.NAME])")
    parser.add_argument("--count", type=int, default=1, metavar="N", help="how many pilots (default 1)")
    parser.add_argument("--dry-run", action="store_true",
                        help="submit nothing: print what would be submitted (command or submit description)")
    parser.add_argument("--debug", action="store_true", help="the pilots keep their work directories (-debug)")
    args = parser.parse_args(argv)

    def work():
        config = load_config(args.config)
        records = submit(config, args.entry, args.count, dry_run=args.dry_run, debug=args.debug)
        for record in records:
            if args.dry_run:
                print("# pilot {} ({})\n{}".format(record.id, record.provider, describe(config, record)))
            else:
                print("{} {} job {} {}".format(record.id, record.provider, record.job_id, record.directory))
        return 0
    return _run(prog, work)


def _cell(item, column):
    value = item[column]
    if value is None:
        return ""
    if column == "duration":
        return "{:.1f} s".format(value) if isinstance(value, (int, float)) else str(value)
    return str(value)


def _print_status(items, out):
    if not items:
        out.write("no pilots\n")
        return
    if out.isatty():
        table = Table(title_justify="left")
        for column in STATUS_COLUMNS:
            table.add_column(column.replace("_", " "), overflow="fold", no_wrap=column in ("id", "state"))
        for item in items:
            cells = [escape(_cell(item, column)) for column in STATUS_COLUMNS]
            style = STATE_STYLE.get(item["state"], "")
            cells[1] = "[{}]{}[/]".format(style, cells[1]) if style else cells[1]
            table.add_row(*cells)
        Console(file=out).print(table)
        return
    rows = [[_cell(item, column) for column in STATUS_COLUMNS] for item in items]
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(STATUS_COLUMNS)]
    for row in [list(STATUS_COLUMNS)] + rows:
        out.write("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() + "\n")


def status_main(argv, prog):
    parser = _parser(prog, "Show the factory's pilots: their state and, once they report, their outcome.")
    parser.add_argument("--entry", metavar="NAME", help="only this entry's pilots")
    parser.add_argument("--json", action="store_true", help="a JSON list of objects instead of a table")
    args = parser.parse_args(argv)

    def work():
        items = status(load_config(args.config), args.entry)
        if args.json:
            print(json.dumps(items, indent=2))
        else:
            _print_status(items, sys.stdout)
        return 0
    return _run(prog, work)


def remove_main(argv, prog):
    parser = _parser(prog, "Remove pilots from their batch systems (the pilot gets SIGTERM and cleans up).")
    parser.add_argument("--entry", metavar="NAME", help="every pilot of this entry that is queued or running")
    parser.add_argument("ids", nargs="*", metavar="PILOT_ID", help="pilots to remove")
    args = parser.parse_args(argv)
    if bool(args.entry) == bool(args.ids):
        parser.error("give either --entry NAME or pilot ids")

    def work():
        config = load_config(args.config)
        ids = active_pilot_ids(config, args.entry) if args.entry else args.ids
        for result in remove(config, ids):
            action = "removed" if result["removed"] else "not removed: already {}".format(result["state"])
            print("{} {}".format(result["id"], action))
        if args.entry and not ids:
            print("entry {} has no queued or running pilots".format(args.entry))
        return 0
    return _run(prog, work)
