"""``cvmfs-pilot node``: probe this worker node, decide how to provide /cvmfs on it, fetch the client
distribution it needs, run jobs with the repositories mounted (``exec``) and clean up after a pilot."""

import argparse
import json
import logging
import os
import sys

from cvmfs_pilot.node import cleanup, control, decide, dist_fetch, execute, osinfo, probe, provide, records

RECORD_NAME = "cvmfs-pilot-decision.json"  # written in --work-dir by 'decide'


def _repos(text):
    return [name.strip() for name in text.split(",") if name.strip()]


def _add_probe_options(parser):
    parser.add_argument("--work-dir", default=None,
                        help="the pilot's work directory (free disk; decide writes its record there); default: "
                             "the current directory for probe, no record for decide")
    parser.add_argument("--repos", type=_repos, default=None, metavar="A,B",
                        help="repositories wanted from an existing /cvmfs (default: whatever it lists)")
    parser.add_argument("--proxy", default=None, metavar="CVMFS_HTTP_PROXY",
                        help="proxies to test (default: $CVMFS_HTTP_PROXY, else $http_proxy)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _parser(prog):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    probing = commands.add_parser("probe", help="check what this node offers, with a reason for each result")
    _add_probe_options(probing)
    deciding = commands.add_parser("decide", help="choose the mode and engine, and say why")
    _add_probe_options(deciding)
    deciding.add_argument("--probe-file", help="a recorded 'probe --json' instead of probing this node")
    deciding.add_argument("--require", default=decide.PREFERRED, metavar="LEVEL",
                          help="required, preferred (default), optional or never, in any case")
    deciding.add_argument("--mode", choices=decide.MODES, help="use this mode whatever the probe says")
    deciding.add_argument("--engine", choices=decide.ENGINES, help="use this engine")
    deciding.add_argument("--distributions", metavar="INDEX_JSON",
                          help="the staging area's index.json: the client distributions available")
    deciding.add_argument("--subtree", action="append", default=[], metavar="REPO/PATH",
                          help="a subtree the job declares (makes the export mode possible); repeatable")
    fetching = commands.add_parser("fetch", help="download, verify, unpack and cache the client distribution for "
                                                 "this node from a staging area; prints its path")
    fetching.add_argument("--staging", required=True, type=dist_fetch.mirror_list, metavar="URL[,URL...]",
                          help="base URLs of the staging area, tried in order (http(s)://, file://)")
    fetching.add_argument("--index-sha256", required=True, metavar="HEX", help="the SHA-256 of its index.json")
    fetching.add_argument("--engine", choices=decide.ENGINES,
                          help="default: cvmfs2 when one is staged for this node, else python")
    fetching.add_argument("--source", help="osg, egi, default or none (default: the only one staged)")
    fetching.add_argument("--cache", default=None, metavar="DIR",
                          help="where distributions are kept by hash (default: {})".format(
                              dist_fetch.default_cache()))
    _add_exec_parser(commands)
    cleaning = commands.add_parser("cleanup", help="unmount, stop and remove what a pilot left in its work "
                                                   "directory (idempotent)")
    cleaning.add_argument("--work-dir", default=None, help="the pilot's work directory (default: the current one)")
    requesting = commands.add_parser("request", help="ask the pilot around this job to mount or unmount a "
                                                     "repository (what $CVMFSMOUNT and $CVMFSUMOUNT run)")
    requesting.add_argument("--socket", default=os.environ.get(control.ENV_SOCKET),
                            help="the pilot's control socket (default: $%s)" % control.ENV_SOCKET)
    requesting.add_argument("op", choices=control.OPERATIONS)
    requesting.add_argument("repository")
    return parser


def _add_exec_parser(commands):
    running = commands.add_parser(
        "exec", help="run a command with /cvmfs/<repo> mounted for it, unprivileged",
        description="Probe the node, choose how to provide the repositories (mode and engine), mount them, run "
                    "COMMAND with the user's own ids and environment, forward signals to it, unmount and clean "
                    "up however it ends; exit with COMMAND's status ({} when CVMFS could not be provided and the "
                    "requirement is 'required').".format(execute.EXIT_SETUP_FAILED))
    running.add_argument("--work-dir", default=None,
                         help="the pilot's own work directory (default: the current one); one pilot per directory")
    running.add_argument("--repos", type=_repos, default=[], metavar="A,B",
                         help="repositories to mount (the config repository is mounted first in any case)")
    running.add_argument("--require", default=decide.REQUIRED, metavar="LEVEL",
                         help="required (default), preferred, optional or never, in any case")
    running.add_argument("--mode", choices=decide.MODES, help="use this mode (no fallback)")
    running.add_argument("--engine", choices=decide.ENGINES, help="use this engine")
    running.add_argument("--config-dir", default=None, metavar="DIR",
                         help="client configuration root for the python engine (default: the distribution's, "
                              "else /etc/cvmfs)")
    running.add_argument("-o", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="a client parameter for every repository, over the configuration; repeatable")
    running.add_argument("--staging", type=dist_fetch.mirror_list, metavar="URL[,URL...]",
                         help="staging area to fetch the client distribution from (with --index-sha256)")
    running.add_argument("--index-sha256", metavar="HEX", help="the SHA-256 of the staging area's index.json")
    running.add_argument("--source", help="the distribution's configuration source (osg, egi, default, none)")
    running.add_argument("--dist", metavar="DIR", help="an unpacked client distribution to use instead")
    running.add_argument("--cache", default=None, metavar="DIR", help="where fetched distributions are kept")
    running.add_argument("--subtree", action="append", default=[], metavar="REPO/PATH",
                         help="a subtree the job needs (makes the export mode possible); repeatable")
    running.add_argument("--pid-namespace", choices=("auto", "yes", "no"), default="auto",
                         help="userns mode: a PID namespace (auto: unless /proc is masked)")
    running.add_argument("-v", "--verbose", action="store_true", help="say what is done")
    running.add_argument("job", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the job and its arguments")


def _fetch(args):
    try:
        with open("/etc/os-release") as handle:
            node_os = probe.check_os(handle.read())
    except OSError:
        node_os = probe.check_os("")
    arch = probe.check_arch(os.uname().machine).result
    platforms = osinfo.build_platforms(node_os.details.get("platform"))
    fetched = dist_fetch.fetch(args.staging, args.index_sha256, platforms, arch, args.engine, args.source,
                               args.cache)
    print(fetched.path)
    return 0


def _live_probe(args):
    return probe.probe(os.path.abspath(args.work_dir or os.getcwd()), args.repos, args.proxy)


def _print_probe(result):
    for check in result.checks.values():
        print("{:<24} {:<16} {}".format(check.name, check.result, check.reason))
    for name, value in sorted(result.glidein_attributes().items()):
        print("{} = {}".format(name, value))


def _load_distributions(path):
    if path is None:
        return []
    try:
        with open(path) as handle:
            return json.load(handle)["distributions"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError("cannot read the distributions from {}: {}; give the staging area's index.json".format(
            path, exc))


def _decide(args):
    node = probe.load(args.probe_file) if args.probe_file else _live_probe(args)
    decision = decide.decide(node, args.require, _load_distributions(args.distributions), args.mode,
                             args.engine, args.subtree)
    record = {"decision": decide.to_dict(decision), "probe": node.to_dict()}
    if args.work_dir:
        path = os.path.join(args.work_dir, RECORD_NAME)
        with open(path + ".tmp", "w") as handle:
            json.dump(record, handle, indent=2)
        os.replace(path + ".tmp", path)
    if args.json:
        print(json.dumps(record["decision"], indent=2))
    else:
        print("mode {}, engine {}{}".format(decision.mode, decision.engine or "none",
                                            " (FAILED)" if decision.failed else ""))
        for reason in decision.reasons:
            print("  " + reason)
        for name, value in sorted(decision.attributes.items()):
            print("{} = {}".format(name, value))
    return 1 if decision.failed else 0


def _overrides(values):
    overrides = {}
    for value in values:
        key, equals, setting = value.partition("=")
        if not equals or not key.strip().isidentifier():
            raise ValueError("-o {!r}: give KEY=VALUE, such as -o CVMFS_HTTP_PROXY=DIRECT".format(value))
        overrides[key.strip()] = setting
    return overrides


def _exec(args, prog):
    command = args.job[1:] if args.job[:1] == ["--"] else args.job
    if not command:
        raise ValueError("give the command to run after --, e.g. {} exec --repos atlas.cern.ch -- ls "
                         "/cvmfs/atlas.cern.ch".format(prog))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="{}: %(message)s".format(prog))
    if args.staging and not args.index_sha256:
        raise ValueError("--staging needs --index-sha256")
    work_dir = os.path.abspath(args.work_dir or os.getcwd())
    os.makedirs(work_dir, exist_ok=True)
    options = provide.ProvideOptions(work_dir, args.repos, args.require, args.mode, args.engine, args.config_dir,
                                     _overrides(args.overrides), args.staging, args.index_sha256, args.source,
                                     args.dist, args.cache, args.subtree, args.pid_namespace)
    provider = provide.Provider(options)
    for reason in provider.decision.reasons:
        logging.getLogger(prog).info("%s", reason)
    try:
        return provider.run(command)
    except provide.NotProvided as exc:
        sys.stderr.write("{}: {}; the job did not run\n".format(prog, exc))
        return execute.EXIT_SETUP_FAILED


def _cleanup(args):
    for action in cleanup.cleanup(os.path.abspath(args.work_dir or os.getcwd())):
        print(action)
    return 0


def _request(args, prog):
    if not args.socket:
        raise ValueError("no control socket: run this inside 'cvmfs-pilot node exec' (${} is not set)".format(
            control.ENV_SOCKET))
    try:
        print(control.request(args.socket, args.op, args.repository))
    except RuntimeError as exc:
        sys.stderr.write("{}: {}\n".format(prog, exc))
        return 1
    return 0


def main(argv, prog="cvmfs-pilot node"):
    args = _parser(prog).parse_args(argv)
    try:
        if args.command == "exec":
            return _exec(args, prog)
        if args.command == "cleanup":
            return _cleanup(args)
        if args.command == "request":
            return _request(args, prog)
        if args.command == "probe":
            result = _live_probe(args)
            if args.json:
                print(json.dumps(result.to_dict(), indent=2))
            else:
                _print_probe(result)
            return 0
        if args.command == "fetch":
            return _fetch(args)
        return _decide(args)
    except records.PilotBusy as exc:
        sys.stderr.write("{}: {}\n".format(prog, exc))
        return 1
    except (ValueError, OSError, dist_fetch.FetchError) as exc:
        sys.stderr.write("{}: {}\n".format(prog, exc))
        return 2
