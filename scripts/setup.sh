#!/usr/bin/env bash
# Prepare a fresh Debian 12 machine (as root) for cvmfs-pilot: Debian packages, the project's virtual
# environment with the server-tier and test dependencies, and the project itself (editable).
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

debian_packages=(
    python3 python3-venv          # the node tier's interpreter, and the venv for the server tier
    nginx-light                   # the web server that serves repositories in tests and benchmarks
    squid                         # the HTTP proxy of the client tests
    fuse3 squashfuse squashfs-tools  # FUSE mounts and the squashfuse_ll baseline
    rpm createrepo-c              # local yum repositories for the distribution builder's tests
    openssl sqlite3 procps psmisc util-linux attr
)
missing=()
for p in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts nginx and squid on install; the project starts its own instances on loopback ports.
for svc in nginx squid; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
    fi
done

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with /usr/bin/python3"
    /usr/bin/python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
    echo "setup: installing cvmfs-pilot with its server and test dependencies into .venv"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e ".[server,test]"
    rm -f .venv/.installed-*
    touch "$stamp"
fi
# Byte-compile the package once, as root: the processes a pilot starts as an ordinary user (the node tier's
# servers, probes, the job's helpers) cannot write __pycache__ here and would otherwise compile every import.
.venv/bin/python -m compileall -q src/cvmfs_pilot >/dev/null
