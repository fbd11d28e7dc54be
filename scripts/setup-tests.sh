#!/usr/bin/env bash
# Test-machine preparation, as root, after scripts/setup.sh:
#  - an unprivileged user that the tests run node-side code as (pilots never run as root);
#  - /dev/fuse usable by everyone: these machines ship it 0600, while real worker nodes have 0666, which is
#    what lets an unprivileged pilot mount FUSE file systems at all. Making it 0666 here reproduces a real node;
#  - Debian's Slurm and munge, for the tests that submit pilots to a real batch system: only the packages here,
#    the tests' `slurm` fixture starts the cluster (scripts/setup-slurm.sh --start) and stops it at the end.
set -euo pipefail
bash "$(dirname "${BASH_SOURCE[0]}")/setup-slurm.sh" --install
user="${CVMFS_PILOT_TEST_USER:-cvmfspilot}"
if ! id "$user" >/dev/null 2>&1; then
    echo "setup-tests: creating unprivileged test user $user"
    useradd --create-home --shell /bin/bash "$user"
fi
if [ -e /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != "666" ]; then
    echo "setup-tests: chmod 0666 /dev/fuse (shipped 0600 here; real worker nodes have 0666)"
    chmod 0666 /dev/fuse
fi
# The unprivileged user must reach the project's code and virtual environment.
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
while [ "$dir" != "/" ]; do
    perms=$(stat -c %A "$dir")
    case "${perms:9:1}" in
        x|t) ;;
        *) echo "setup-tests: allowing others to traverse $dir"; chmod o+x "$dir" ;;
    esac
    dir="$(dirname "$dir")"
done
