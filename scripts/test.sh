#!/usr/bin/env bash
# Set everything up on a fresh Debian 12 machine (as root) and run the whole test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
bash scripts/setup-tests.sh
echo "== tier rules (node tier: Python 3.6+, standard library only; no server-tier imports)"
.venv/bin/python scripts/check_tiers.py
echo "== lint (unused and undefined names)"
.venv/bin/ruff check src tests benchmarks scripts
echo "== tests"
exec .venv/bin/python -m pytest "$@"
