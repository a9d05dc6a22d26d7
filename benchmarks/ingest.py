"""``pq bench ingest``: pq's idempotent ingest path against the plain ways, in the same run.

Writes N samples into the configured store under a scratch line (``bench-ingest``) and removes
them, its tags and the line afterwards (and leftovers of an interrupted run before). On PostgreSQL
the baselines are psycopg's own binary ``COPY`` (``write_row``, not idempotent: the ceiling) and
``executemany`` of plain INSERTs; on SQLite, SQLAlchemy Core executemany inserts. ``loss`` = rows
offered to pq's path minus rows the store then holds; ``ratio`` = pq's rows/s over executemany's.
``--quick``: small sizes, same path and JSON keys.
"""

from __future__ import annotations

import time

import click
import numpy as np
import pandas as pd
from sqlalchemy import func, insert, select

from benchmarks.output import emit, json_option, quick_option
from benchmarks.scratch import delete_lines
from pq.storage import schema
from pq.storage.catalog import TagDef, ensure_tags
from pq.storage.engine import Store
from pq.storage.samples import write_samples

__all__ = ["ingest"]

_TAGS = 20
_LINE = "bench-ingest"  # scratch line: never a plant line's id


def _frame(tag_ids: np.ndarray, n: int, start: pd.Timestamp) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({
        "tag_id": tag_ids[np.arange(n) % len(tag_ids)],
        "ts": start + pd.to_timedelta(np.arange(n) // len(tag_ids) * 100, unit="ms"),
        "value": rng.normal(200, 5, n),
        "status": np.zeros(n, np.int64),
    })


def _delete_bench_rows(store: Store) -> None:
    """Samples, tags and the line of ``bench-ingest``."""
    delete_lines(store, _LINE)  # no wildcard: this one line


def _stored(store: Store, tag_ids: np.ndarray) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(schema.samples)
                                .where(schema.samples.c.tag_id.in_(tag_ids.tolist()))).scalar_one())


def _ours(store: Store, frame: pd.DataFrame, batch: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(frame), batch):
        write_samples(store, frame.iloc[i:i + batch])
    return len(frame) / (time.perf_counter() - t0)  # what reached the store is counted apart: loss


def _rows(frame: pd.DataFrame) -> list[tuple]:
    return list(zip(frame.tag_id.tolist(), frame.ts.dt.to_pydatetime().tolist(), frame.value.tolist(),
                    frame.status.tolist()))


def _timed_on_raw_connection(store: Store, write) -> float:
    """Seconds ``write(cursor)`` plus commit take on a raw psycopg connection."""
    raw = store.engine.raw_connection()
    try:
        t0 = time.perf_counter()
        with raw.driver_connection.cursor() as cur:
            write(cur)
        raw.driver_connection.commit()
        return time.perf_counter() - t0
    finally:
        raw.close()


def _pg_copy(store: Store, frame: pd.DataFrame) -> float:
    rows = _rows(frame)

    def write(cur):
        with cur.copy("COPY samples (tag_id, ts, value, status) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "timestamptz", "float8", "int8"])
            for row in rows:
                copy.write_row(row)

    return len(rows) / _timed_on_raw_connection(store, write)


def _pg_executemany(store: Store, frame: pd.DataFrame) -> float:
    rows = _rows(frame)
    sql = "INSERT INTO samples (tag_id, ts, value, status) VALUES (%s, %s, %s, %s)"
    return len(rows) / _timed_on_raw_connection(store, lambda cur: cur.executemany(sql, rows))


def _core_executemany(store: Store, frame: pd.DataFrame) -> float:
    rows = [dict(tag_id=t, ts=ts, value=v, status=s) for t, ts, v, s in _rows(frame)]
    t0 = time.perf_counter()
    with store.engine.begin() as conn:
        conn.execute(insert(schema.samples), rows)
    return len(rows) / (time.perf_counter() - t0)


@click.command()
@click.option("-n", "--rows", default=2_000_000, show_default=True, help="Samples written by pq's path.")
@click.option("--baseline-rows", default=200_000, show_default=True,
              help="Samples written by each baseline (executemany is slow; its rate is what counts).")
@click.option("--batch", default=100_000, show_default=True, help="Samples per write_samples call.")
@quick_option({"--rows": 20_000, "--baseline-rows": 5_000, "--batch": 5_000})
@json_option
def ingest(rows: int, baseline_rows: int, batch: int, quick: bool, as_json: bool):
    """Ingest rows/s: pq's idempotent path vs raw COPY and executemany, same run, same store."""
    from pq.cli import open_store

    store = open_store()
    _delete_bench_rows(store)  # an interrupted run's rows would turn writes into duplicates
    ids = ensure_tags(store, _LINE, [TagDef(f"bench{i}_c", "°C") for i in range(3 * _TAGS)])
    tag_ids = np.array([ids[f"bench{i}_c"] for i in range(3 * _TAGS)])
    start = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(days=2)
    try:
        figures: dict = {"store": store.dialect, "timescaledb": store.timescale_edition or "none", "rows": rows}
        figures["pq_rows_per_s"] = _ours(store, _frame(tag_ids[:_TAGS], rows, start), batch)
        figures["loss"] = rows - _stored(store, tag_ids[:_TAGS])
        replay = _frame(tag_ids[:_TAGS], min(rows, batch), start)
        t0 = time.perf_counter()
        result = write_samples(store, replay)
        figures["pq_replay_rows_per_s"] = len(replay) / (time.perf_counter() - t0)
        figures["replay_duplicates_written"] = result.written
        base = _frame(tag_ids[_TAGS:2 * _TAGS], baseline_rows, start)
        if store.dialect == "postgresql":
            figures["copy_rows_per_s"] = _pg_copy(store, _frame(tag_ids[2 * _TAGS:], baseline_rows, start))
            figures["executemany_rows_per_s"] = _pg_executemany(store, base)
            figures["ratio_vs_copy"] = figures["pq_rows_per_s"] / figures["copy_rows_per_s"]
        else:
            figures["executemany_rows_per_s"] = _core_executemany(store, base)
        figures["ratio"] = figures["pq_rows_per_s"] / figures["executemany_rows_per_s"]
    finally:
        try:
            _delete_bench_rows(store)
        finally:
            store.dispose()
    emit("ingest", figures, as_json)
