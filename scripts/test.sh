#!/usr/bin/env bash
# Set up what the test suite needs on a fresh Debian/Ubuntu machine, then run it:
#   pq with its test and bench extras in .venv (scripts/lib/venv.sh), PostgreSQL's TimescaleDB extension (built from
#   Debian's source package, see scripts/setup-timescaledb.sh), Debian's Chromium for the browser tests.
# Arguments go to pytest:  scripts/test.sh -k storage -x
# PostgreSQL tests use PQ_TEST_POSTGRES_URL (default: the local server); each run creates and
# drops its own database.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo

# pq and its test extras go into the checkout's own virtual environment (.venv), never the system Python;
# the bench extra too, because tests/test_bench_quick.py runs every `pq bench` suite.
source scripts/lib/venv.sh
pq_ensure_venv test,bench

if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing Debian's chromium for the browser tests"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

echo "== PostgreSQL + TimescaleDB"
scripts/setup-timescaledb.sh

if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
  echo "== starting Mosquitto"
  $SUDO mosquitto -d -c /etc/mosquitto/mosquitto.conf || echo "   (no Mosquitto: MQTT output tests will skip)"
fi

export PQ_TEST_POSTGRES_URL=${PQ_TEST_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/postgres}
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$PWD/var/numba-cache}

echo "== pytest"
set +e
"$PY" -m pytest "$@"
rc=$?
set -e
# 5 = nothing collected (a -k selection that matches no test): not a failure of the code.
[ "$rc" -eq 5 ] && rc=0
exit "$rc"
