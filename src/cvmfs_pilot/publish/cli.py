"""``cvmfs-pilot repo``: keys, publish, resign, check and serve."""

import argparse
import sys

from cvmfs_pilot.cvmfs.compression import COMPRESSION_BY_NAME
from cvmfs_pilot.cvmfs.hashing import algorithm_from_name

from .chunking import ChunkSizes
from .errors import PublishError
from .keys import KeySetError


def _chunk_sizes(text):
    try:
        minimum, average, maximum = (int(v) for v in text.split(","))
        return ChunkSizes(minimum, average, maximum)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected MIN,AVG,MAX in bytes with 32 <= MIN < AVG < MAX ({})".format(
            exc))


def _positive(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def build_parser(prog):
    parser = argparse.ArgumentParser(prog=prog, description="Write and maintain CernVM-FS repositories.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    keys = commands.add_parser("keys", help="create a repository's master key, signing key and certificate")
    keys.add_argument("fqrn")
    keys.add_argument("--out", required=True, metavar="DIR", help="directory for FQRN.{masterkey,pub,key,crt}")

    pub = commands.add_parser("publish", help="publish a directory tree as the next revision")
    pub.add_argument("source", metavar="SRC")
    pub.add_argument("storage", metavar="STORAGE", help="the directory a web server exposes as <base>/cvmfs/FQRN")
    pub.add_argument("--name", required=True, metavar="FQRN")
    pub.add_argument("--keys", required=True, metavar="DIR")
    pub.add_argument("--hash", default="sha1", choices=["sha1", "rmd160", "shake128"])
    pub.add_argument("--compression", default="zlib", choices=sorted(COMPRESSION_BY_NAME))
    chunking = pub.add_mutually_exclusive_group()
    chunking.add_argument("--chunk-sizes", type=_chunk_sizes, default=ChunkSizes(), metavar="MIN,AVG,MAX")
    chunking.add_argument("--no-chunking", action="store_true")
    pub.add_argument("--ttl", type=_positive, default=240, metavar="S", help="catalog TTL in seconds")
    pub.add_argument("--whitelist-days", type=_positive, default=30, metavar="N",
                     help="validity of a whitelist this publish creates or renews")
    pub.add_argument("--meta-info", metavar="FILE", help="repository meta-information (JSON)")
    pub.add_argument("--workers", type=_positive, metavar="N", help="worker processes (default: all cores)")

    resign = commands.add_parser("resign", help="renew the whitelist and re-sign the manifest")
    resign.add_argument("storage", metavar="STORAGE")
    resign.add_argument("--keys", required=True, metavar="DIR")
    resign.add_argument("--whitelist-days", type=_positive, default=30, metavar="N")

    check = commands.add_parser("check", help="verify a repository completely")
    check.add_argument("storage", metavar="STORAGE")
    check.add_argument("--name", required=True, metavar="FQRN")
    check.add_argument("--pubkey", required=True, metavar="PUB", help="master public key(s), ':'-separated")

    serve = commands.add_parser("serve", help="serve a directory over HTTP (for demos and tests)")
    serve.add_argument("directory", metavar="DIR", help="served as http://127.0.0.1:PORT/...")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--bind", default="127.0.0.1")
    return parser


def _run(args):
    if args.command == "keys":
        from .keys import generate_keys, key_paths
        generate_keys(args.fqrn, args.out)
        print("wrote " + ", ".join(str(p) for p in key_paths(args.out, args.fqrn).values()))
    elif args.command == "publish":
        from .publisher import PublishOptions, publish
        options = PublishOptions(algorithm=algorithm_from_name(args.hash),
                                 compression=COMPRESSION_BY_NAME[args.compression],
                                 chunk_sizes=None if args.no_chunking else args.chunk_sizes, ttl=args.ttl,
                                 whitelist_days=args.whitelist_days, meta_info=args.meta_info,
                                 workers=args.workers)
        print(publish(args.source, args.storage, args.name, args.keys, options).summary())
    elif args.command == "resign":
        from .resign import resign
        print(resign(args.storage, args.keys, args.whitelist_days))
    elif args.command == "check":
        from .check import check
        print(check(args.storage, args.name, args.pubkey.split(":")).summary())
    elif args.command == "serve":
        from .serve import make_server
        server = make_server(args.directory, args.port, bind=args.bind)
        host, port = server.server_address[:2]
        print("serving {} at http://{}:{}/ (Ctrl-C stops)".format(args.directory, host, port), flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    return 0


def main(argv, prog):
    args = build_parser(prog).parse_args(argv)
    try:
        return _run(args)
    except (PublishError, KeySetError) as exc:
        print("{}: error: {}".format(prog, exc), file=sys.stderr)
        return 1
