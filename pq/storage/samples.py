"""Fast, idempotent bulk ingest of samples: the one write path connectors and history loads use.

A sample is keyed by (tag_id, ts) with ts the OPC UA source timestamp, so writing the same batch
twice (a spool replay after an outage or a ``kill -9``) stores it once.

Rules for odd input (each counted in :class:`IngestResult`, never a crash):

- unknown ``tag_id``                      -> rejected, ``rejected["unknown_tag"]``
- missing timestamp (NaT)                  -> rejected, ``rejected["missing_timestamp"]``
- timestamp more than ``PQ_INGEST_MAX_FUTURE_S`` ahead of now -> rejected, ``rejected["future_timestamp"]``
- NaN / Inf value                          -> stored with value NULL; a Good status becomes
  ``STATUS_NONFINITE`` (BadOutOfRange) so it is never read as a good value; ``nonfinite``
- the same (tag_id, ts) twice in a batch   -> first kept, ``duplicates``
- out-of-order timestamps                  -> stored as they are (the key is the source time)

PostgreSQL: rows are encoded into PostgreSQL's binary COPY format with NumPy (no per-row Python)
and copied straight into ``samples`` inside a savepoint; if any row already exists (a replay) the
savepoint is rolled back and the batch goes through a staging table and
``INSERT ... ON CONFLICT DO NOTHING``. Fresh data, the common case, runs at COPY speed; replays
pay for the conflict check only when there is one. SQLite: ``INSERT OR IGNORE`` executemany in WAL.

Example::

    result = write_samples(store, pd.DataFrame({"tag_id": [1], "ts": [now], "value": [1.5], "status": [0]}))
    result.written
"""

from __future__ import annotations

import logging
import operator
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd
from sqlalchemy import select

from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["IngestResult", "write_samples", "read_samples", "STATUS_NONFINITE", "to_epoch_us", "is_good"]

logger = logging.getLogger(__name__)

_PARALLEL_MIN_ROWS = 50_000
STATUS_NONFINITE = 0x803C0000  # BadOutOfRange: the server sent a value that is not a finite number
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds
_COLUMNS = ("tag_id", "ts", "value", "status", "server_ts")


def is_good(status: np.ndarray | int) -> np.ndarray | bool:
    """OPC UA severity bits 00 = Good (Uncertain is 01, Bad is 10)."""
    return (np.asarray(status, dtype=np.uint64) & 0xC0000000) == 0


@dataclass
class IngestResult:
    written: int = 0
    duplicates: int = 0
    nonfinite: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def add(self, other: "IngestResult") -> None:
        self.written += other.written
        self.duplicates += other.duplicates
        self.nonfinite += other.nonfinite
        for k, v in other.rejected.items():
            self.rejected[k] = self.rejected.get(k, 0) + v


def to_epoch_us(ts) -> np.ndarray:
    """Timestamps (datetimes, tz-aware or UTC-naive, or float epoch seconds) to int64 Unix µs; NaT -> min int64."""
    arr = ts.to_numpy() if isinstance(ts, (pd.Series, pd.Index)) and ts.dtype.kind == "f" else ts
    if getattr(arr, "dtype", None) is not None and arr.dtype.kind == "f":
        out = np.full(arr.shape, np.iinfo(np.int64).min, dtype=np.int64)
        ok = np.isfinite(arr)
        out[ok] = np.round(arr[ok] * 1e6).astype(np.int64)
        return out
    index = pd.DatetimeIndex(pd.to_datetime(arr, utc=True))  # vectorised, keeps NaT
    return index.as_unit("us").asi8.copy()


def _known_tags(store: Store, wanted: np.ndarray) -> np.ndarray:
    cache: set[int] = store.__dict__.setdefault("_tag_id_cache", set())
    unique = np.unique(wanted)
    if not set(unique.tolist()) <= cache:
        with store.engine.connect() as conn:
            cache.update(conn.execute(select(schema.tags.c.id)).scalars())
    return np.isin(wanted, np.fromiter(cache, dtype=np.int64, count=len(cache)))


def _prepare(store: Store, frame: pd.DataFrame) -> tuple[dict[str, np.ndarray], IngestResult]:
    result = IngestResult()
    n = len(frame)
    tag_id = frame["tag_id"].to_numpy(dtype=np.int64)
    ts = to_epoch_us(frame["ts"])
    value = pd.to_numeric(frame["value"], errors="coerce").to_numpy(dtype=np.float64) if "value" in frame \
        else np.full(n, np.nan)
    status = frame["status"].to_numpy(dtype=np.int64) if "status" in frame else np.zeros(n, np.int64)
    server_ts = to_epoch_us(frame["server_ts"]) if "server_ts" in frame else np.full(n, np.iinfo(np.int64).min)
    value_text = frame["value_text"].to_numpy(dtype=object) if "value_text" in frame else None

    keep = np.ones(n, dtype=bool)
    checks = (
        ("missing_timestamp", ts == np.iinfo(np.int64).min),
        ("future_timestamp", ts > int((time.time() + store.settings.ingest_max_future_s) * 1e6)),
        ("unknown_tag", ~_known_tags(store, tag_id) if n else np.zeros(0, bool)),
    )
    for reason, bad in checks:
        bad &= keep
        if bad.any():
            result.rejected[reason] = int(bad.sum())
            keep &= ~bad
    if result.rejected:
        logger.warning("ingest rejected %s of %d samples: %s", result.rejected_total, n, result.rejected)

    nonfinite = keep & ~np.isfinite(value)
    if value_text is not None:  # text values are not numbers; only flag truly missing numbers
        nonfinite &= pd.isna(value_text)
    result.nonfinite = int(nonfinite.sum())
    status = np.where(nonfinite & is_good(status), STATUS_NONFINITE, status)

    cols = {"tag_id": tag_id, "ts": ts, "value": value, "status": status, "server_ts": server_ts,
            "value_text": value_text}
    cols = {k: v[keep] for k, v in cols.items() if v is not None}
    # The same key twice in one batch: keep the first.
    order = np.lexsort((cols["ts"], cols["tag_id"]))
    key_t, key_s = cols["tag_id"][order], cols["ts"][order]
    dup_sorted = np.zeros(len(order), dtype=bool)
    dup_sorted[1:] = (key_t[1:] == key_t[:-1]) & (key_s[1:] == key_s[:-1])
    if dup_sorted.any():
        first = np.ones(len(order), dtype=bool)
        first[order[dup_sorted]] = False
        result.duplicates += int(dup_sorted.sum())
        cols = {k: v[first] for k, v in cols.items()}
    return cols, result


def write_samples(store: Store, frame: pd.DataFrame) -> IngestResult:
    """Write samples (columns tag_id, ts, value, status[, server_ts, value_text]) idempotently."""
    cols, result = _prepare(store, frame)
    n = len(cols["tag_id"])
    if n >= _PARALLEL_MIN_ROWS and store.dialect == "postgresql":
        # The server backend's CPU bounds one COPY; two connections share the load (measured:
        # ~1.4x on 2 cores). Each half is idempotent on its own, so a failure of one is a replay.
        halves = [{k: v[s] for k, v in cols.items()} for s in (slice(0, n // 2), slice(n // 2, n))]
        with ThreadPoolExecutor(2) as pool:
            written = sum(pool.map(lambda part: _write_postgres(store, part), halves))
    elif n:
        written = (_write_postgres if store.dialect == "postgresql" else _write_sqlite)(store, cols)
    else:
        written = 0
    result.duplicates += n - written
    result.written = written
    return result


# -- SQLite ----------------------------------------------------------------------------------------

def _sqlite_ts(us: np.ndarray) -> list:
    # The text form SQLAlchemy's SQLite DateTime uses, so raw and ORM reads agree.
    valid = us != np.iinfo(np.int64).min
    text_ = np.datetime_as_string(us.astype("datetime64[us]"), unit="us")
    out = np.char.replace(text_.astype(str), "T", " ").astype(object)
    out[~valid] = None
    return out.tolist()


def _write_sqlite(store: Store, cols: dict[str, np.ndarray]) -> int:
    value = cols["value"].astype(object)
    value[~np.isfinite(cols["value"])] = None
    texts = cols.get("value_text")
    rows = list(zip(
        cols["tag_id"].tolist(), _sqlite_ts(cols["ts"]), value.tolist(), cols["status"].tolist(),
        _sqlite_ts(cols["server_ts"]),
        texts.tolist() if texts is not None else [None] * len(value),
    ))
    raw = store.engine.raw_connection()
    try:
        before = raw.total_changes
        raw.executemany(
            "INSERT OR IGNORE INTO samples (tag_id, ts, value, status, server_ts, value_text) "
            "VALUES (?, ?, ?, ?, ?, ?)", rows)
        written = raw.total_changes - before
        raw.commit()
    finally:
        raw.close()
    return written


# -- PostgreSQL ------------------------------------------------------------------------------------

def _aware(us: int):
    if us == np.iinfo(np.int64).min:
        return None
    return datetime.fromtimestamp(int(us) / 1e6, tz=timezone.utc)


_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_TRAILER = b"\xff\xff"


def _binary_copy(cols: dict[str, np.ndarray]) -> bytes:
    """PostgreSQL binary COPY rows for (tag_id, ts, value, status, server_ts), built with NumPy.

    A NULL field is a length of -1 with no data, so rows with a NULL value or server_ts have
    their own fixed layout; each group is encoded in one vectorised pass.
    """
    has_value = np.isfinite(cols["value"])
    has_server = cols["server_ts"] != np.iinfo(np.int64).min
    parts = [_HEADER]
    for hv in (True, False):
        for hs in (True, False):
            sel = (has_value == hv) & (has_server == hs)
            m = int(sel.sum())
            if not m:
                continue
            fields = [("n", ">i2"), ("l1", ">i4"), ("tag", ">i4"), ("l2", ">i4"), ("ts", ">i8")]
            fields += [("l3", ">i4")] + ([("val", ">f8")] if hv else [])
            fields += [("l4", ">i4"), ("st", ">i8"), ("l5", ">i4")] + ([("sts", ">i8")] if hs else [])
            rec = np.empty(m, dtype=np.dtype(fields))
            rec["n"], rec["l1"], rec["l2"], rec["l4"] = 5, 4, 8, 8
            rec["tag"] = cols["tag_id"][sel]
            rec["ts"] = cols["ts"][sel] - _PG_EPOCH_US
            rec["l3"] = 8 if hv else -1
            if hv:
                rec["val"] = cols["value"][sel]
            rec["st"] = cols["status"][sel]
            rec["l5"] = 8 if hs else -1
            if hs:
                rec["sts"] = cols["server_ts"][sel] - _PG_EPOCH_US
            parts.append(rec.tobytes())
    parts.append(_TRAILER)
    return b"".join(parts)


def _write_postgres(store: Store, cols: dict[str, np.ndarray]) -> int:
    import psycopg

    texts = cols.pop("value_text", None)
    text_mask = ~pd.isna(texts) if texts is not None else np.zeros(len(cols["tag_id"]), bool)
    numeric = {k: v[~text_mask] for k, v in cols.items()}
    copy_sql = "COPY {} (tag_id, ts, value, status, server_ts) FROM STDIN (FORMAT BINARY)"
    raw = store.engine.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.cursor() as cur:
            written = 0
            if len(numeric["tag_id"]):
                payload = _binary_copy(numeric)
                try:
                    with conn.transaction():  # a savepoint: a replayed row undoes only this attempt
                        with cur.copy(copy_sql.format("samples")) as copy:
                            copy.write(payload)
                    written = len(numeric["tag_id"])
                except psycopg.errors.UniqueViolation:
                    cur.execute(
                        "CREATE TEMP TABLE IF NOT EXISTS pq_stage_samples "
                        "(tag_id int, ts timestamptz, value float8, status bigint, server_ts timestamptz) "
                        "ON COMMIT DELETE ROWS"
                    )
                    with cur.copy(copy_sql.format("pq_stage_samples")) as copy:
                        copy.write(payload)
                    cur.execute(
                        "INSERT INTO samples (tag_id, ts, value, status, server_ts) "
                        "SELECT tag_id, ts, value, status, server_ts FROM pq_stage_samples "
                        "ON CONFLICT (tag_id, ts) DO NOTHING"
                    )
                    written = cur.rowcount
            for i in np.flatnonzero(text_mask):  # lot ids and product codes: few, row by row
                cur.execute(
                    "INSERT INTO samples (tag_id, ts, status, server_ts, value_text) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tag_id, ts) DO NOTHING",
                    (int(cols["tag_id"][i]), _aware(cols["ts"][i]), int(cols["status"][i]),
                     _aware(cols["server_ts"][i]), str(texts[i])),
                )
                written += cur.rowcount
        conn.commit()
    finally:
        raw.close()
    return written


# -- reading ---------------------------------------------------------------------------------------

_READ_DTYPE = np.dtype([("n", ">i2"), ("l1", ">i4"), ("tag", ">i4"), ("l2", ">i4"), ("ts", ">i8"),
                        ("l3", ">i4"), ("val", ">f8"), ("l4", ">i4"), ("st", ">i8")])


def read_samples(store: Store, tag_ids, t_from: datetime, t_to: datetime) -> pd.DataFrame:
    """Samples of ``tag_ids`` with ``t_from < ts <= t_to``, ordered by (tag_id, ts), as columns.

    Returns tag_id (int64), ts (datetime64[us, UTC]), value (float64, NaN where NULL) and status
    (int64). Built for bulk reads (training, backfill): PostgreSQL rows arrive through binary
    ``COPY`` decoded with NumPy, SQLite rows through the raw cursor, never as Python row objects.
    """
    ids = sorted({int(t) for t in tag_ids})
    empty = pd.DataFrame({"tag_id": np.zeros(0, np.int64), "ts": pd.to_datetime([], utc=True).as_unit("us"),
                          "value": np.zeros(0), "status": np.zeros(0, np.int64)})
    if not ids:
        return empty
    if store.dialect == "postgresql":
        sql = ("COPY (SELECT tag_id, (EXTRACT(EPOCH FROM ts) * 1000000)::int8, coalesce(value, 'NaN'::float8), "
               "status FROM samples WHERE tag_id = ANY(%s) AND ts > %s AND ts <= %s ORDER BY tag_id, ts) "
               "TO STDOUT (FORMAT BINARY)")
        raw = store.engine.raw_connection()
        try:
            with raw.driver_connection.cursor() as cur:
                buf = bytearray()
                with cur.copy(sql, (ids, t_from, t_to)) as copy:
                    for chunk in copy:
                        buf += chunk
            raw.driver_connection.commit()
        finally:
            raw.close()
        body = memoryview(buf)[len(_HEADER):len(buf) - len(_TRAILER)]
        rec = np.frombuffer(body, dtype=_READ_DTYPE)
        return pd.DataFrame({
            "tag_id": rec["tag"].astype(np.int64),
            "ts": pd.to_datetime(rec["ts"].astype(np.int64), unit="us", utc=True),
            "value": rec["val"].astype(np.float64),
            "status": rec["st"].astype(np.int64),
        })
    placeholders = ",".join("?" * len(ids))
    bounds = _sqlite_ts(to_epoch_us(pd.Series([t_from, t_to])))
    raw = store.engine.raw_connection()
    try:
        rows = raw.execute(
            f"SELECT tag_id, ts, value, status FROM samples WHERE tag_id IN ({placeholders}) "
            "AND ts > ? AND ts <= ? ORDER BY tag_id, ts", [*ids, *bounds]).fetchall()
    finally:
        raw.close()
    if not rows:
        return empty
    n = len(rows)
    column = operator.itemgetter
    value = np.fromiter((np.nan if v is None else v for v in map(column(2), rows)), np.float64, n)
    return pd.DataFrame({
        "tag_id": np.fromiter(map(column(0), rows), np.int64, n),
        # NumPy parses SQLite's 'YYYY-MM-DD HH:MM:SS.ffffff' text directly, 10x faster than pandas
        "ts": pd.DatetimeIndex(np.array(list(map(column(1), rows)), dtype="datetime64[us]")).tz_localize("UTC"),
        "value": value,
        "status": np.fromiter(map(column(3), rows), np.int64, n),
    })
