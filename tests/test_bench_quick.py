"""Every ``pq bench SUITE --quick --json`` runs to the end on any machine and keeps the JSON contract.

Each suite runs as a subprocess, as a user or CI would run it (settings only from the environment:
``PQ_*`` stripped, the store a temporary SQLite file or the session's PostgreSQL database, the data
dir and TMPDIR in ``tmp_path``). The test checks what a benchmark owes whatever the machine: exit 0,
readable lines and then one JSON object naming its suite, every figure finite, ``ratio`` > 0 where
the suite measures a baseline, ``loss``/``dropped`` where data flows (0 where the suite's design
guarantees it), p50 <= p99, and no bench rows or temporary directories left behind.

Speed is never asserted here: how fast is the benchmarks' business (README "Benchmarks"), and a
test must pass on a loaded 2-core machine.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

RUN_TIMEOUT_S = 420  # a cold Numba cache compiles the feature kernels first (over a minute when loaded)


@dataclass(frozen=True)
class Suite:
    baseline: bool = False  # measures a baseline in the same run: `ratio` > 0
    flow: tuple[str, ...] = ()  # data flows: these keys must be present
    zero: tuple[str, ...] = ()  # counts the suite's design keeps at 0
    needs_schema: bool = False  # opens the configured store without upgrading it


SUITES = {
    "ingest": Suite(baseline=True, flow=("loss",), zero=("loss", "replay_duplicates_written"), needs_schema=True),
    # subscribers keep only the latest value per item (queuesize 0): loss is measured, not guaranteed
    "simulate": Suite(baseline=True, flow=("loss",)),
    "features": Suite(baseline=True, zero=("parity_mismatches",)),
    "connect": Suite(baseline=True, flow=("loss", "dropped"), zero=("loss", "dropped", "bare_loss")),
    "train": Suite(baseline=True),
    "score": Suite(baseline=True),
    # spool is durable (loss 0); the quick run produces fewer batches than a queue holds (dropped 0)
    "edge": Suite(flow=("loss", "dropped"), zero=("loss", "dropped")),
    "ui": Suite(baseline=True),
}


def _env(tmp_path, database_url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PQ_")}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return env | {"PQ_DATABASE_URL": database_url, "PQ_DATA_DIR": str(tmp_path / "var"),
                  "TMPDIR": str(tmp_path / "tmp")}  # the suites' temporary directories land here


def _pq(tmp_path, database_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pq.cli", *args], capture_output=True, text=True,
                          env=_env(tmp_path, database_url), cwd=tmp_path, timeout=RUN_TIMEOUT_S)


def run_quick(name: str, database_url: str, tmp_path, *extra: str) -> tuple[dict, str]:
    """(JSON figures, stdout) of ``pq bench NAME --quick --json``, after the checks every suite owes."""
    if SUITES[name].needs_schema:
        up = _pq(tmp_path, database_url, "db", "upgrade")
        assert up.returncode == 0, up.stderr[-3000:]
    proc = _pq(tmp_path, database_url, "bench", name, "--quick", "--json", *extra)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    lines = proc.stdout.strip().splitlines()
    assert len(lines) > 1, f"no human-readable lines before the JSON: {proc.stdout!r}"
    figures = json.loads(lines[-1])
    assert isinstance(figures, dict) and figures.get("suite") == name, lines[-1]
    check_contract(name, figures)
    assert not list((tmp_path / "tmp").iterdir()), "temporary files left behind"
    return figures, proc.stdout


def check_contract(name: str, figures: dict) -> None:
    suite = SUITES[name]
    for key, value in figures.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert math.isfinite(value), f"{name}: {key} = {value}"
    if suite.baseline:
        assert isinstance(figures.get("ratio"), (int, float)) and figures["ratio"] > 0, \
            f"{name}: ratio = {figures.get('ratio')!r}"
    for key in suite.flow:
        assert isinstance(figures.get(key), int) and figures[key] >= 0, f"{name}: {key} = {figures.get(key)!r}"
    for key in suite.zero:
        assert figures.get(key) == 0, f"{name}: {key} = {figures.get(key)!r}, expected 0"
    for key, value in figures.items():  # a p50 is not above its p99
        p99 = figures.get(key.replace("p50", "p99")) if re.search(r"(^|_)p50_ms$", key) else None
        if value is not None and p99 is not None:
            assert value <= p99, f"{name}: {key} {value} > p99 {p99}"


def _count(url: str, sql: str, **params) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql), params).scalar())
    finally:
        engine.dispose()


def _bench_rows(url: str, suite: str) -> dict:
    """Rows a suite writes into the configured store, by its own line ids."""
    if suite == "ingest":
        return {"lines": _count(url, "SELECT COUNT(*) FROM lines WHERE id = 'bench-ingest'"),
                "tags": _count(url, "SELECT COUNT(*) FROM tags WHERE line_id = 'bench-ingest'"),
                "samples": _count(url, "SELECT COUNT(*) FROM samples")}
    if suite == "connect":
        return {"lines": _count(url, "SELECT COUNT(*) FROM lines WHERE id LIKE 'bench-connect-%'"),
                "tags": _count(url, "SELECT COUNT(*) FROM tags WHERE line_id LIKE 'bench-connect-%'"),
                "samples": _count(url, "SELECT COUNT(*) FROM samples"),
                "health": _count(url, "SELECT COUNT(*) FROM component_health WHERE component = 'connector:bench-connect'")}
    if suite == "edge":
        out = {t: _count(url, f"SELECT COUNT(*) FROM {t} WHERE line_id LIKE 'bench-edge-%'")
               for t in ("predictions", "parts", "alerts", "component_health", "line_events")}
        return out | {"lines": _count(url, "SELECT COUNT(*) FROM lines WHERE id LIKE 'bench-edge-%'"),
                      "part_features": _count(url, "SELECT COUNT(*) FROM part_features")}
    raise AssertionError(suite)


def _empty(rows: dict, before: dict | None = None) -> dict:
    """What ``rows`` must be after a clean run: no bench rows; shared counts as they were before."""
    shared = ("samples", "part_features")
    return {k: (before or {}).get(k, 0) if k in shared else 0 for k in rows}


# -- every suite, quick, on the embedded store -----------------------------------------------------

@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
@pytest.mark.parametrize("name", sorted(SUITES))
def test_bench_quick(name, tmp_path):
    url = f"sqlite:///{tmp_path / 'pq.db'}"
    figures, stdout = run_quick(name, url, tmp_path)
    if name == "ingest":
        assert figures["store"] == "sqlite" and figures["rows"] > 0
        assert _bench_rows(url, name) == {"lines": 0, "tags": 0, "samples": 0}
    elif name == "connect":
        assert figures["store"] == "sqlite" and "bare asyncua client" in stdout
        assert figures["written"] > 0 and figures["initial_rows"] == figures["expected_initial_rows"] > 0
        assert figures["lag_p50_ms"] <= figures["lag_p99_ms"] <= figures["lag_max_ms"]
        assert 0 < figures["rss_start_mb"] <= figures["rss_peak_mb"]
        assert _bench_rows(url, name) == {"lines": 0, "tags": 0, "samples": 0, "health": 0}
    elif name == "edge":
        assert figures["store"] == "sqlite" and figures["parts"] > 0
        assert figures["stored_predictions"] == figures["parts"]
        rows = _bench_rows(url, name)
        assert rows == _empty(rows)
    elif name == "ui":
        assert figures["store"] == "sqlite" and figures["parts"] > 0
    elif name == "simulate":
        assert figures["values_per_s_1_line"] > 0
    elif name == "score":
        assert figures["explain_p50_ms"] <= figures["explain_p99_ms"] and figures["parts"] > 0


def test_quick_keeps_explicit_options(tmp_path):
    """--quick sets the sizes the user did not give; an explicit option still wins."""
    figures, stdout = run_quick("ingest", f"sqlite:///{tmp_path / 'pq.db'}", tmp_path, "--rows", "3000")
    assert figures["rows"] == 3000
    assert "rows                             3000" in stdout


# -- the suites that talk to the store, on PostgreSQL ---------------------------------------------

@pytest.mark.postgres
@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
@pytest.mark.parametrize("name", ["ingest", "connect", "edge"])
def test_bench_quick_postgres(name, pg_database_url, tmp_path):
    before = _bench_rows(pg_database_url, name)  # other tests of the session may have left rows
    figures, _ = run_quick(name, pg_database_url, tmp_path)
    assert figures["store"] == "postgresql"
    after = _bench_rows(pg_database_url, name)
    assert after == _empty(after, before), f"bench rows left: {after} (before {before})"


@pytest.mark.postgres
@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_bench_quick_ui_postgres_drops_its_database(pg_database_url, tmp_path):
    figures, stdout = run_quick("ui", pg_database_url, tmp_path)
    assert figures["store"] == "postgresql"
    seeded = re.search(r"seeding \S+/(pq_bench_ui_\w+):", stdout)
    assert seeded, stdout
    admin = make_url(pg_database_url).set(database="postgres").render_as_string(hide_password=False)
    assert _count(admin, "SELECT COUNT(*) FROM pg_database WHERE datname = :n", n=seeded.group(1)) == 0
