#!/usr/bin/env bash
# Build and enable the TimescaleDB extension (Apache edition) for the local PostgreSQL on
# Debian/Ubuntu, from the distribution's own source package: Debian 12 has no binary package and
# the machine may reach no other repository. Idempotent: when the extension is already loadable it
# only makes sure PostgreSQL preloads it and is running, which takes well under a second.
#
# Usage: sudo scripts/setup-timescaledb.sh            (PG_VERSION defaults to the installed cluster)
set -euo pipefail

PG_VERSION=${PG_VERSION:-$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)}
if [ -z "$PG_VERSION" ]; then
  echo "setup-timescaledb: no PostgreSQL cluster under /etc/postgresql; install postgresql first" >&2
  exit 1
fi
PG_CONFIG=/usr/lib/postgresql/$PG_VERSION/bin/pg_config
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo

ensure_running() {
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main start 2>/dev/null || true
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && return 0
    sleep 0.5
  done
  echo "setup-timescaledb: PostgreSQL $PG_VERSION did not come up on 127.0.0.1:5432" >&2
  return 1
}

preload() {
  local conf=/etc/postgresql/$PG_VERSION/main/conf.d/timescaledb.conf
  if ! grep -qs "timescaledb" "$conf"; then
    echo "shared_preload_libraries = 'timescaledb'" | $SUDO tee "$conf" >/dev/null
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main restart
  fi
}

pkglib=$("$PG_CONFIG" --pkglibdir 2>/dev/null || true)
if [ -n "$pkglib" ] && ls "$pkglib"/timescaledb*.so >/dev/null 2>&1; then
  preload
  ensure_running
  echo "setup-timescaledb: TimescaleDB already installed for PostgreSQL $PG_VERSION"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Source packages only from the newer suite: the binary packages keep coming from the machine's release.
uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
uri=${uri:-http://deb.debian.org/debian}
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie main" \
  | $SUDO tee /etc/apt/sources.list.d/trixie-src.list >/dev/null
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  "postgresql-server-dev-$PG_VERSION" cmake libssl-dev >/dev/null
cd "$work"
apt-get source --download-only timescaledb >/dev/null
tar xf timescaledb_*.orig.tar.xz
cd timescaledb-*/
./bootstrap -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DAPACHE_ONLY=1 -DWARNINGS_AS_ERRORS=OFF \
  -DPG_CONFIG="$PG_CONFIG" >/dev/null
make -C build -j"$(nproc)" >/dev/null
$SUDO make -C build install >/dev/null
preload
ensure_running
echo "setup-timescaledb: TimescaleDB built and enabled for PostgreSQL $PG_VERSION"
