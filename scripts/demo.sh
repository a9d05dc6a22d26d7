#!/usr/bin/env bash
# Set up pq on a fresh machine and run the demo on the embedded SQLite store.
# Arguments go to `pq demo` (see `pq demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip install -q --disable-pip-version-check -e .
exec pq demo "$@"
