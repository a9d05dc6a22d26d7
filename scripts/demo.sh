#!/usr/bin/env bash
# Set up pq on a fresh Debian/Ubuntu machine and run the demo on the embedded SQLite store.
# pq goes into the checkout's own virtual environment (.venv, see scripts/lib/venv.sh), never into
# the system Python. Arguments go to `pq demo` (see `pq demo --help`), e.g. scripts/demo.sh --lines 1
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/venv.sh
pq_ensure_venv
exec "$PY" -m pq.cli demo "$@"
