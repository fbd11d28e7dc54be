"""``cvmfs-pilot node``: probe this worker node, decide how to provide /cvmfs on it, and fetch the client
distribution it needs."""

import argparse
import json
import os
import sys

from cvmfs_pilot.node import decide, dist_fetch, osinfo, probe

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
    return parser


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


def main(argv, prog="cvmfs-pilot node"):
    args = _parser(prog).parse_args(argv)
    try:
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
    except (ValueError, OSError, dist_fetch.FetchError) as exc:
        sys.stderr.write("{}: {}\n".format(prog, exc))
        return 2
