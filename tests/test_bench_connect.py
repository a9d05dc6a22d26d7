"""``pq bench connect``: a short run against the real simulator keeps the JSON contract, loses nothing
and leaves no bench rows behind, on SQLite and (where configured) PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

CONTRACT = ("delivered_samples_per_s", "bare_samples_per_s", "ratio", "loss", "lag_p50_ms", "lag_p99_ms",
            "cpu_pct", "rss_start_mb", "rss_end_mb", "rss_peak_mb")


def _run_bench(database_url: str, tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PQ_")}
    env |= {"PQ_DATABASE_URL": database_url, "PQ_DATA_DIR": str(tmp_path / "var")}
    proc = subprocess.run([sys.executable, "-m", "pq.cli", "bench", "connect", "--duration", "3", "--json"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=80)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) > 1 and "bare asyncua client" in proc.stdout  # human-readable figures first
    return json.loads(lines[-1])


def _check(figures: dict) -> None:
    missing = [k for k in CONTRACT if k not in figures]
    assert not missing, f"JSON lacks {missing}"
    assert figures["suite"] == "connect"
    assert figures["written"] > 300  # 2 lines x 11 continuous signals x 10 Hz x 3 s, plus per-cycle values
    assert figures["loss"] == 0 and figures["dropped"] == 0 and figures["bare_loss"] == 0
    assert figures["initial_rows"] == figures["expected_initial_rows"] == 66
    assert figures["delivered_samples_per_s"] > 0 and figures["ratio"] >= 0.9
    assert 0 < figures["lag_p50_ms"] <= figures["lag_p99_ms"] < 2000
    assert abs(figures["source_offset_ms"]) < 1000  # source timestamps track wall time
    assert 0 < figures["rss_start_mb"] <= figures["rss_peak_mb"]


def _bench_rows(url: str) -> dict:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                "lines": conn.execute(text("SELECT COUNT(*) FROM lines WHERE id LIKE 'bench-connect-%'")).scalar(),
                "tags": conn.execute(text("SELECT COUNT(*) FROM tags WHERE line_id LIKE 'bench-connect-%'")).scalar(),
                "samples": conn.execute(text("SELECT COUNT(*) FROM samples")).scalar(),
                "health": conn.execute(text(
                    "SELECT COUNT(*) FROM component_health WHERE component = 'connector:bench-connect'")).scalar(),
            }
    finally:
        engine.dispose()


@pytest.mark.timeout(90)
def test_bench_connect_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'pq.db'}"
    figures = _run_bench(url, tmp_path)
    _check(figures)
    assert figures["store"] == "sqlite"
    assert _bench_rows(url) == {"lines": 0, "tags": 0, "samples": 0, "health": 0}  # cleaned up


@pytest.mark.timeout(90)
def test_bench_connect_postgres(pg_database_url, tmp_path):
    before = _bench_rows(pg_database_url)["samples"]  # other tests of the session may have left samples
    figures = _run_bench(pg_database_url, tmp_path)
    _check(figures)
    assert figures["store"] == "postgresql"
    rows = _bench_rows(pg_database_url)
    assert rows == {"lines": 0, "tags": 0, "samples": before, "health": 0}  # only the bench's rows removed
