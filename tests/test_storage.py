"""Storage: migrations, both stores, TimescaleDB detection, idempotent ingest and its rejection rules."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select, text

from pq.errors import ConfigError, SchemaVersionError, StorageError
from pq.storage import Store, migrate, schema, timescale
from pq.storage.catalog import TagDef, ensure_tags
from pq.storage.parts import upsert_inspections, upsert_parts
from pq.storage.samples import STATUS_NONFINITE, write_samples

pytestmark = pytest.mark.timeout(120)


def _count(store, table) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def _tags(store, n=3):
    return ensure_tags(store, "line-1", [TagDef(f"sig{i}_c", "°C", "process", 0, 100) for i in range(n)])


def test_first_migration_is_the_whole_schema(store):
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    # TimescaleDB adds its own time index to hypertables; anything else is a real drift.
    assert [d for d in diff if not (d[0] == "remove_index" and d[1].name.endswith("_idx"))] == []
    assert migrate.current_version(store) == migrate.head_version()


def test_upgrade_is_idempotent(store):
    assert migrate.upgrade(store) == migrate.head_version()
    assert migrate.check(store) == migrate.head_version()


def test_newer_schema_is_refused(sqlite_store):
    with sqlite_store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaVersionError, match="newer than this pq"):
        migrate.check(sqlite_store)
    with pytest.raises(SchemaVersionError, match="newer than this pq"):
        migrate.upgrade(sqlite_store)


def test_missing_schema_says_what_to_do(settings_factory):
    store = Store.open(settings_factory())
    with pytest.raises(SchemaVersionError, match="pq db upgrade"):
        migrate.check(store)


def test_timescale_hypertables(pg_store):
    if pg_store.timescale_edition is None:
        pytest.skip("TimescaleDB not installed on this PostgreSQL")
    assert pg_store.timescale_edition in ("apache", "community")
    with pg_store.engine.connect() as conn:
        names = set(conn.execute(text("SELECT hypertable_name FROM timescaledb_information.hypertables")).scalars())
    assert set(timescale.HYPERTABLES) <= names


def test_bad_urls_are_one_clear_line(settings_factory):
    with pytest.raises(ConfigError, match="scheme 'mysql' is not supported"):
        Store.open(settings_factory(database_url="mysql://u@h/db"))
    with pytest.raises(ConfigError, match="PQ_DATABASE_URL"):
        Store.open(settings_factory(database_url="::not a url::"))


def test_unreachable_database_is_retried_then_reported(settings_factory):
    settings = settings_factory(
        database_url="postgresql+psycopg://pq:secret-pw@127.0.0.1:1/none", db_connect_timeout_s=1.5
    )
    started = time.monotonic()
    with pytest.raises(StorageError) as err:
        Store.open(settings)
    # it retried, with backoff: a lower bound on waits it made, which load can only lengthen
    assert time.monotonic() - started >= 1.0
    assert "unreachable after" in str(err.value) and "secret-pw" not in str(err.value)


def test_ingest_is_idempotent_and_counts_everything(store):
    ids = _tags(store)
    now = pd.Timestamp.now(tz="UTC").floor("s")
    n = 3000
    frame = pd.DataFrame({
        "tag_id": np.array(list(ids.values()))[np.arange(n) % 3],
        "ts": now - pd.to_timedelta(np.arange(n) // 3 * 100, unit="ms"),  # newest first: out of order
        "value": np.linspace(0, 1, n),
        "status": 0,
    })
    frame.loc[10, "value"] = np.nan
    frame.loc[11, "value"] = np.inf
    frame.loc[12, "status"] = 0x80000000  # Bad, with a NaN: stays Bad
    frame.loc[12, "value"] = np.nan
    extra = pd.DataFrame({
        "tag_id": [9999, ids["sig0_c"], ids["sig1_c"], ids["sig2_c"]],
        "ts": [now, pd.NaT, now + pd.Timedelta(days=2), now],
        "value": [1.0, 1.0, 1.0, 5.0],
        "status": 0,
    })
    batch = pd.concat([frame, extra.iloc[:3]], ignore_index=True)
    first = write_samples(store, batch)
    assert first.written == n
    assert first.rejected == {"unknown_tag": 1, "missing_timestamp": 1, "future_timestamp": 1}
    assert first.nonfinite == 3
    replay = write_samples(store, batch)
    assert replay.written == 0 and replay.duplicates == n
    # the same key twice within a batch
    dup = pd.concat([extra.iloc[3:], extra.iloc[3:]], ignore_index=True)
    dup["ts"] = now - pd.Timedelta(hours=1)
    result = write_samples(store, dup)
    assert result.written == 1 and result.duplicates == 1
    assert _count(store, schema.samples) == n + 1
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(schema.samples.c.value, schema.samples.c.status).where(schema.samples.c.value.is_(None))
        ).all()
    assert sorted(r.status for r in rows) == sorted([STATUS_NONFINITE, STATUS_NONFINITE, 0x80000000])


def test_ingest_keeps_status_server_time_and_text(store):
    ids = ensure_tags(store, "line-1", [TagDef("material_lot", None, "context"), TagDef("melt_temp_c", "°C")])
    now = pd.Timestamp.now(tz="UTC").floor("ms")
    frame = pd.DataFrame({
        "tag_id": [ids["material_lot"], ids["melt_temp_c"]],
        "ts": [now, now],
        "server_ts": [now + pd.Timedelta(milliseconds=5), pd.NaT],
        "value": [np.nan, 231.5],
        "value_text": ["LOT-0042", None],
        "status": [0, 0x40000000],
    })
    assert write_samples(store, frame).written == 2
    assert write_samples(store, frame).written == 0
    with store.engine.connect() as conn:
        rows = {r.tag_id: r for r in conn.execute(select(schema.samples))}
    lot, melt = rows[ids["material_lot"]], rows[ids["melt_temp_c"]]
    assert lot.value_text == "LOT-0042" and lot.status == 0 and lot.value is None
    assert lot.server_ts == (now + pd.Timedelta(milliseconds=5)).to_pydatetime()
    assert melt.value == 231.5 and melt.status == 0x40000000 and melt.server_ts is None
    assert melt.ts == now.to_pydatetime()


def test_parts_and_inspections_upsert_by_serial(store):
    ensure_tags(store, "line-1", [])
    now = datetime.now(timezone.utc)
    part = {"line_id": "line-1", "serial": "L1-000001", "cycle_start": now - timedelta(seconds=20),
            "cycle_end": now, "product": "P-100", "material_lot": "LOT-1", "shift": "A",
            "context": {"ambient_temp_c": 21.5}}
    # the inspection arrives first (replay order), then the part, twice
    upsert_inspections(store, [{"line_id": "line-1", "serial": "L1-000001", "defect": True,
                                "defect_code": "short_shot", "inspected_at": now}])
    upsert_parts(store, [part])
    upsert_parts(store, [part | {"context": {"ambient_temp_c": 22.0}}])
    assert _count(store, schema.parts) == 1 and _count(store, schema.inspections) == 1
    with store.engine.connect() as conn:
        row = conn.execute(
            select(schema.parts.c.context, schema.inspections.c.defect_code).join(
                schema.inspections,
                (schema.parts.c.line_id == schema.inspections.c.line_id)
                & (schema.parts.c.serial == schema.inspections.c.serial),
            )
        ).one()
    assert row.context == {"ambient_temp_c": 22.0} and row.defect_code == "short_shot"


def test_retention_drops_old_samples(store):
    ids = _tags(store, 1)
    now = pd.Timestamp.now(tz="UTC")
    frame = pd.DataFrame({"tag_id": ids["sig0_c"], "ts": [now - pd.Timedelta(days=200), now], "value": 1.0,
                          "status": 0})
    write_samples(store, frame)
    removed = timescale.apply_retention(store)
    assert removed >= 1
    assert _count(store, schema.samples) == 1


def test_large_batches_split_across_connections_stay_idempotent(store):
    ids = _tags(store, 2)
    n = 60_000  # above the two-connection threshold on PostgreSQL
    start = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(days=1)
    frame = pd.DataFrame({
        "tag_id": np.array(list(ids.values()))[np.arange(n) % 2],
        "ts": start + pd.to_timedelta(np.arange(n) // 2 * 100, unit="ms"),
        "value": np.arange(n, dtype=float),
        "status": 0,
    })
    assert write_samples(store, frame.iloc[: n // 3]).written == n // 3  # an earlier partial write
    result = write_samples(store, frame)
    assert result.written == n - n // 3 and result.duplicates == n // 3
    assert _count(store, schema.samples) == n


def test_read_samples_returns_columns_in_tag_time_order(store):
    from pq.storage.samples import read_samples

    ids = _tags(store, 2)
    start = pd.Timestamp("2026-01-05T06:00:00.123456Z")
    frame = pd.DataFrame({
        "tag_id": [ids["sig1_c"], ids["sig0_c"], ids["sig0_c"], ids["sig1_c"]],
        "ts": [start + pd.Timedelta(seconds=s) for s in (2, 1, 0, 5)],
        "value": [1.0, np.nan, 3.0, 4.0],
        "status": [0, 0x80000000, 0, 0x40000000],
    })
    write_samples(store, frame)
    out = read_samples(store, ids.values(), start.to_pydatetime(), (start + pd.Timedelta(seconds=4)).to_pydatetime())
    # (t_from, t_to]: the sample at t_from is excluded, the one after t_to too
    assert out["tag_id"].tolist() == [ids["sig0_c"], ids["sig1_c"]]
    assert out["ts"].tolist() == [start + pd.Timedelta(seconds=1), start + pd.Timedelta(seconds=2)]
    assert np.isnan(out["value"].iloc[0]) and out["value"].iloc[1] == 1.0
    assert out["status"].tolist() == [0x80000000, 0]
    assert str(out["ts"].dtype) == "datetime64[us, UTC]"
    assert read_samples(store, [], start, start).empty
