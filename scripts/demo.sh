#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine as root: set everything up, then run `cvmfs-pilot demo`, which
# publishes a demo repository and a config repository, serves them on loopback, builds the python-engine client
# distribution, stages a factory and submits two local pilots as an unprivileged user; their jobs read and run
# files from /cvmfs/demo.cvmfs-pilot.org on this host that has no /cvmfs. It prints a timeline and the reports,
# and removes everything. It makes /dev/fuse usable by users and creates the user cvmfspilot, and says so.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/cvmfs-pilot demo "$@"
