"""Distribution builder benchmark (issue 5): building 4 sources x 6 platforms from a local mirror served by nginx.

The mirror holds stand-in packages with the upstream names and layout (tests/support/yum.py), each repository
its own, as upstream; ``--scale`` sets their size (1: the cvmfs package carries about 10 MB of library, half of
it incompressible). Measured in one run:

* the first build: seconds; MB of packages the distributions are made of and MB/s; MB actually downloaded
  (a package several distributions share is fetched once) and MB/s; MB of tarballs written and MB/s;
* a no-op update (nothing changed upstream): seconds; the target is under 2 s;
* an update after one new package (a new cvmfs-config-osg for el9): seconds, distributions rebuilt.

    .venv/bin/python benchmarks/dist_bench.py [--scale 1]
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cvmfs_pilot.dist.runner import BUILT, Request, build_staging, update_staging  # noqa: E402
from support.nginx import nginx_serving  # noqa: E402
from support.yum import build_mirror, build_rpms, create_repo, local_directory, mirrored_definitions, \
    stand_in  # noqa: E402

SOURCES = ("osg", "egi", "default", "none")
TARGETS = ("el8-x86_64", "el8-aarch64", "el9-x86_64", "el9-aarch64", "el10-x86_64", "suse15-x86_64")
OSG_EL9 = "https://repo.opensciencegrid.org/osg/25-main/el9/release/x86_64/"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="stand-in package size factor (default 1)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dist-bench-"))
    try:
        started = time.monotonic()
        build_mirror(work / "mirror", work / "rpmbuild", scale=args.scale, workers=os.cpu_count(), shared=False)
        mirror_seconds = time.monotonic() - started
        mirror_mb = sum(p.stat().st_size for p in (work / "mirror").rglob("*.rpm")) / 1e6
        with nginx_serving(work / "mirror", work / "nginx") as base_url:
            upstream = mirrored_definitions(base_url, work / "upstream.json")
            request = Request(SOURCES, TARGETS, str(upstream))
            build = build_staging(work / "staging", request)
            package_mb = sum(package["size"] for o in build.outcomes if o.status == BUILT for package in json.loads(
                (work / "staging" / (o.name + ".json")).read_bytes())["packages"]) / 1e6
            noop_started = time.monotonic()
            noop = update_staging(work / "staging")
            noop_seconds = time.monotonic() - noop_started
            build_rpms([stand_in("cvmfs-config-osg", "2.7", "1.osg25", "noarch", args.scale)],
                       local_directory(work / "mirror", OSG_EL9), work / "rpmbuild-new")
            create_repo(local_directory(work / "mirror", OSG_EL9))
            changed_started = time.monotonic()
            changed = update_staging(work / "staging")
            changed_seconds = time.monotonic() - changed_started
    finally:
        shutil.rmtree(work, ignore_errors=True)
    built = [o for o in build.outcomes if o.status == BUILT]
    result = {
        "sources": len(SOURCES), "platforms": len(TARGETS), "scale": args.scale,
        "mirror_mb": round(mirror_mb, 1), "mirror_build_s": round(mirror_seconds, 1),
        "distributions_built": len(built), "failed": build.failed,
        "build_s": round(build.seconds, 2),
        "package_mb": round(package_mb, 1), "package_mb_per_s": round(package_mb / build.seconds, 1),
        "downloaded_mb": round(build.downloaded / 1e6, 1),
        "download_mb_per_s": round(build.downloaded / 1e6 / build.seconds, 1),
        "written_mb": round(build.written / 1e6, 1),
        "written_mb_per_s": round(build.written / 1e6 / build.seconds, 1),
        "noop_update_s": round(noop_seconds, 3), "noop_update_under_2s": noop_seconds < 2.0,
        "noop_rebuilt": sum(1 for o in noop.outcomes if o.status == BUILT),
        "one_package_update_s": round(changed_seconds, 2),
        "one_package_rebuilt": sorted(str(o.key) for o in changed.outcomes if o.status == BUILT),
    }
    print(json.dumps(result, indent=1))
    return 0 if not build.failed and noop_seconds < 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
