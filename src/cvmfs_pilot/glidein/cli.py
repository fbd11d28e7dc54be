"""``cvmfs-pilot glidein``: the pilot runtime that glidein_startup.sh starts (``run``), and the part of it that
runs inside the CVMFS environment (``continue``). See docs/glidein.md."""

import argparse
import logging
import sys


def _parser(prog):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    running = commands.add_parser("run", help="the whole pilot (the arguments of glidein_startup.sh)")
    running.add_argument("-factory", required=True, metavar="URL[,URL...]")
    running.add_argument("-factory-sha256", required=True, metavar="HEX")
    running.add_argument("-entry", required=True)
    running.add_argument("-frontend", metavar="URL[,URL...]")
    running.add_argument("-frontend-sha256", metavar="HEX")
    running.add_argument("-id", dest="pilot_id")
    running.add_argument("-work-dir", help="where the pilot makes its private work directory")
    running.add_argument("-runtime-work-dir", help=argparse.SUPPRESS)  # the one glidein_startup.sh made
    running.add_argument("-credential", help="a bearer token or X.509 proxy sent with the job")
    running.add_argument("-report", help="write the final report (JSON) here too")
    running.add_argument("-debug", action="store_true", help="keep the work directory")
    inner = commands.add_parser("continue", help=argparse.SUPPRESS)
    inner.add_argument("state")
    return parser


def main(argv, prog="cvmfs-pilot glidein"):
    args = _parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="{}: %(message)s".format(prog))
    if args.command == "continue":
        from cvmfs_pilot.glidein import inner  # the inner part needs none of the outer part's imports
        return inner.run_inner(args.state)
    from cvmfs_pilot.glidein import pilot
    arguments = pilot.PilotArguments(args.factory, args.factory_sha256, args.entry, args.frontend,
                                     args.frontend_sha256, args.pilot_id, args.work_dir, args.runtime_work_dir,
                                     args.credential, args.report, args.debug)
    sys.exit(pilot.Pilot(arguments).run())
