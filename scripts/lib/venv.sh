# Sourced by scripts/demo.sh and scripts/test.sh: make sure the checkout's own virtual environment
# (.venv, or $PQ_VENV) exists and holds pq with the asked-for extras, then export PY to its python.
#
# Never writes to the system Python: a fresh Debian 12 / Ubuntu 24.04 has no pip and marks its
# Python "externally managed" (PEP 668), so pip goes into the venv only. python3-venv comes from apt
# when the interpreter cannot make a venv (sudo when not root). A second run is a hash check: pip
# runs again only when pyproject.toml or the extras changed.

_pq_sudo() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

pq_ensure_venv() {   # usage: pq_ensure_venv [extras]   e.g. pq_ensure_venv test,bench
  local extras=${1:-}
  local venv=${PQ_VENV:-$PWD/.venv}
  local base=${PYTHON:-python3}
  if [ ! -x "$venv/bin/python" ]; then
    if ! command -v "$base" >/dev/null 2>&1 || ! "$base" -c 'import ensurepip, venv' 2>/dev/null; then
      echo "== installing python3-venv (the system Python cannot create a virtual environment)"
      _pq_sudo apt-get update -qq
      _pq_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
    fi
    if ! "$base" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      echo "pq needs Python 3.11 or newer; $base is $("$base" -V 2>&1). Set PYTHON=/path/to/python3.11" >&2
      return 1
    fi
    echo "== creating the virtual environment $venv"
    rm -rf "$venv"
    "$base" -m venv "$venv"
  fi
  # One stamp per extras set, holding the hash of pyproject.toml it was installed from; an install
  # with extras also satisfies the plain one.
  local want stamp="$venv/.pq-installed-${extras:-base}"
  want=$(sha256sum pyproject.toml | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing pq${extras:+[$extras]} into $venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}"
    echo "$want" > "$stamp"
    echo "$want" > "$venv/.pq-installed-base"
  fi
  PY="$venv/bin/python"
  export PATH="$venv/bin:$PATH"
}
