"""The durable spool: kinds round-trip to the store exactly once, full policies, crash durability,
bad records quarantined, and a PostgreSQL outage (database refusing connections) loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from benchmarks.processes import poll_until
from pq.config import load_settings
from pq.health import health_row, line_event, read_health, read_line_events
from pq.spool import SampleBatch, Spool, SpoolDrainer, SpoolFull, drain_once
from pq.storage import Store, migrate

NOW = datetime.now(timezone.utc).replace(microsecond=0)
TAGS = (("line-1", "melt_temp_c"), ("line-1", "material_lot"))


def _batch(start: int, n: int) -> SampleBatch:
    base = int(NOW.timestamp() * 1e6) - 10_000_000
    rows = []
    for k in range(start, start + n):
        if k % 10 == 3:
            rows.append((1, base + k * 1000, None, 0, base + k * 1000, f"LOT-{k}"))
        elif k % 10 == 5:
            rows.append((0, base + k * 1000, float("nan"), 0, None, None))  # NaN, Good -> flagged
        elif k % 10 == 7:
            rows.append((0, base + k * 1000, 999.0, 0x80000000, None, None))  # Bad, kept with its status
        else:
            rows.append((0, base + k * 1000, 200.0 + k, 0, base + k * 1000, None))
    return SampleBatch.from_rows(TAGS, rows)


def _count(store, sql):
    with store.engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


def _tags_record():
    return {"line_id": "line-1", "tags": [{"name": "melt_temp_c", "unit": "°C", "role": "process"},
                                          {"name": "material_lot", "role": "context"}]}


@pytest.mark.timeout(60)
def test_every_kind_reaches_the_store_once_even_when_replayed(store, tmp_path):
    spool = Spool(tmp_path / "s.sqlite", max_bytes=50 * 2**20)
    spool.append("tags", _tags_record())
    for i in range(10):
        spool.append("samples", _batch(i * 100, 100))
    part = {"line_id": "line-1", "serial": "L1-000001", "cycle_start": NOW - timedelta(seconds=20), "cycle_end": NOW,
            "product": "P1", "material_lot": "LOT-1", "shift": "A", "context": {"ambient_temp_c": 21.5, "x": float("nan")}}
    spool.append("part", part)
    spool.append("inspection", {"line_id": "line-1", "serial": "L1-000001", "defect": True, "defect_code": "FLASH",
                                "inspected_at": NOW + timedelta(seconds=60), "source": "inspection"})
    spool.append("health", health_row("connector:t", "connected", line_id="line-1", detail={"samples_per_s": 5.0}))
    ev = line_event("connection_lost", "connector:t", line_id="line-1", started_at=NOW)
    spool.append("line_event", ev)
    spool.append("line_event", {**ev, "ended_at": NOW + timedelta(seconds=3)})
    while drain_once(spool, store):
        pass
    assert spool.depth() == 0 and spool.stats()["dead_letters"] == 0
    assert _count(store, "SELECT COUNT(*) FROM samples") == 1000
    assert _count(store, "SELECT COUNT(*) FROM samples WHERE value_text IS NOT NULL") == 100
    assert _count(store, f"SELECT COUNT(*) FROM samples WHERE value IS NULL AND status = {0x803C0000}") == 100
    assert _count(store, f"SELECT COUNT(*) FROM samples WHERE status = {0x80000000} AND value = 999") == 100
    assert _count(store, "SELECT COUNT(*) FROM parts") == 1
    assert _count(store, "SELECT COUNT(*) FROM inspections WHERE defect") == 1
    assert read_health(store, "connector:")[0]["detail"] == {"samples_per_s": 5.0}
    events = read_line_events(store, "line-1")
    assert len(events) == 1 and events[0]["ended_at"] == NOW + timedelta(seconds=3)

    # a replay (crash between commit and acknowledgement) writes nothing twice
    for i in range(10):
        spool.append("samples", _batch(i * 100, 100))
    spool.append("part", part)
    while drain_once(spool, store):
        pass
    assert _count(store, "SELECT COUNT(*) FROM samples") == 1000
    assert _count(store, "SELECT COUNT(*) FROM parts") == 1
    spool.close()


@pytest.mark.timeout(30)
def test_full_spool_policies_are_explicit_and_counted(tmp_path):
    one = len(_batch(0, 100).to_bytes())
    drop = Spool(tmp_path / "drop.sqlite", max_bytes=one * 5 + 10, full_policy="drop_oldest")
    for i in range(8):
        drop.append("samples", _batch(i * 100, 100))
    st = drop.stats()
    assert st["depth_records"] in (4, 5) and st["dropped_records"] == 8 - st["depth_records"]
    assert st["bytes"] <= drop.max_bytes
    first_kept = 8 - st["depth_records"]
    assert drop.peek(1)[0].payload.ts_us[0] == _batch(first_kept * 100, 1).ts_us[0]  # the oldest went first

    block = Spool(tmp_path / "block.sqlite", max_bytes=one * 2 + 10, full_policy="block", block_timeout_s=0.2)
    block.append("samples", _batch(0, 100))
    block.append("samples", _batch(0, 100))
    t0 = time.monotonic()
    with pytest.raises(SpoolFull):
        block.append("samples", _batch(0, 100))
    # It really waited for room before refusing: a lower bound on a timed wait, which load can only
    # make longer (it cannot fail on a busy machine). What it refused is the structural part:
    assert time.monotonic() - t0 >= 0.19
    assert block.stats()["rejected_records"] == 1 and block.depth() == 2
    block.ack(block.peek(1))  # the drainer frees room: appends go through again
    block.append("samples", _batch(0, 100))
    assert block.depth() == 2


@pytest.mark.timeout(180)
def test_kill_9_loses_no_acknowledged_append(tmp_path):
    path = tmp_path / "crash.sqlite"
    code = textwrap.dedent(f"""
        import sys
        from pq.spool import Spool, SampleBatch
        s = Spool({str(path)!r}, max_bytes=2**30)
        k = 0
        while True:
            s.append("samples", SampleBatch.from_rows((("line-1", "a_c"),), [(0, 1_700_000_000_000_000 + k, float(k), 0, None, None)]))
            print(k, flush=True)
            k += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    acked = []
    deadline = time.monotonic() + 120  # process start and 300 synchronous appends on a busy disk
    while len(acked) < 300 and time.monotonic() < deadline:
        acked.append(int(proc.stdout.readline()))
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    spool = Spool(path)
    values = set()
    while True:
        recs = spool.peek(1000)
        if not recs:
            break
        for r in recs:
            values.update(int(v) for v in r.payload.value)
        spool.ack(recs)
    assert len(acked) >= 300, f"only {len(acked)} appends acknowledged within 120 s"
    assert set(acked) <= values  # every append that returned survived the kill


def _bad_part_writer_input():
    return {"line_id": "line-1", "serial": "NO-END", "cycle_end": None}


@pytest.mark.timeout(30)
def test_a_refused_record_is_quarantined_not_blocking(sqlite_store, tmp_path):
    spool = Spool(tmp_path / "q.sqlite")
    spool.append("part", _bad_part_writer_input())  # cycle_end is NOT NULL: the store refuses it for good
    spool.append("part", {"line_id": "line-1", "serial": "OK-1", "cycle_end": NOW})
    spool.append("unknown_kind", {"x": 1})
    while drain_once(spool, sqlite_store):
        pass
    assert spool.depth() == 0
    assert {d["kind"] for d in spool.dead_letters()} == {"part", "unknown_kind"}
    assert _count(sqlite_store, "SELECT COUNT(*) FROM parts") == 1


@pytest.fixture
def outage_db():
    """A PostgreSQL database of our own that the test makes unavailable and available again."""
    admin_url = os.environ.get("PQ_TEST_POSTGRES_URL")
    if not admin_url:
        pytest.skip("PQ_TEST_POSTGRES_URL is not set: no PostgreSQL configured")
    admin_url = make_url(admin_url).set(drivername="postgresql+psycopg")
    name = f"pq_outage_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)

    def set_available(ok: bool):
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if ok else "false"}'))
            if not ok:
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                             {"n": name})

    yield url, set_available
    set_available(True)
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_database_outage_mid_run_loses_nothing_and_duplicates_nothing(outage_db, tmp_path):
    url, set_available = outage_db
    store = Store.open(load_settings(database_url=url, db_connect_timeout_s=5))
    migrate.upgrade(store)
    spool = Spool(tmp_path / "o.sqlite")
    drainer = SpoolDrainer(spool, store, max_backoff_s=0.5).start()
    spool.append("tags", _tags_record())
    for i in range(20):
        spool.append("samples", _batch(i * 100, 100))
    assert drainer.flush(120), drainer.stats()
    set_available(False)  # the database refuses connections; live ones are terminated
    for i in range(20, 60):
        spool.append("samples", _batch(i * 100, 100))
        time.sleep(0.02)  # appends keep coming while the database is away
    assert poll_until(lambda: not drainer.store_available, 60), ("the drainer did not notice the outage", drainer.stats())
    assert spool.depth() > 0
    set_available(True)
    assert drainer.flush(120), drainer.stats()
    assert drainer.outages == 1
    drainer.stop(5)
    assert _count(store, "SELECT COUNT(*) FROM samples") == 6000
    assert _count(store, "SELECT COUNT(*) FROM (SELECT tag_id, ts FROM samples GROUP BY 1, 2 HAVING COUNT(*) > 1) d") == 0
    store.dispose()


def test_a_spool_file_belongs_to_one_process(tmp_path):
    """Two connections with the same name must not share (and corrupt) one spool."""
    import subprocess
    import sys

    from pq.errors import ConfigError
    from pq.spool import Spool

    path = tmp_path / "shared.sqlite"
    first = Spool(path)
    other = subprocess.run(
        [sys.executable, "-c", f"from pq.spool import Spool; Spool({str(path)!r})"],
        capture_output=True, text=True, timeout=60)
    assert other.returncode != 0 and "is in use by pid" in other.stderr
    with pytest.raises(ConfigError, match="in use"):
        Spool(path)
    first.close()
    Spool(path).close()  # free again once the owner closed it
