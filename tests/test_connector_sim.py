"""The OPC UA connector against the real line simulator (``simulators.SimulatorServer``), on loopback.

Counted by the simulator's own ground truth: ``written_counts()`` is every write the line made
while its endpoint was up; the connector subscribes with Trigger=StatusValueTimestamp, so it must
store each of them exactly once, plus the one initial value each new subscription delivers. Parts
and inspections are compared with ``sim.parts()`` / ``sim.ground_truth()`` serial by serial.

Covered: exactly-once on SQLite and PostgreSQL+TimescaleDB; a database outage mid-run (PostgreSQL:
the test database refuses connections; SQLite: the file is locked); ``pq connect run`` killed with
SIGKILL mid-run and restarted (everything that reached the spool is stored, the rest of the run
exactly once) and stopped with SIGTERM (exit 0, spool empty); a server restart (gap recorded,
subscriptions back by themselves); the bad-quality scenario (Bad/Uncertain stored as such); a hung
server (TCP open, no answers; a SIGSTOPped simulator process); Sign and SignAndEncrypt with more
than one policy, an untrusted server certificate refused.

The simulator runs much faster than real time (``speed``) so a run of a few wall seconds covers
dozens of parts. Nothing here asserts how long something took: every "soon" is a wait on the
condition the assertions need (the initial values arrived, every write received), with generous
timeouts, so the module passes on a loaded 2-core runner; speeds are ``pq bench connect``'s.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from benchmarks.processes import free_port
from connectors.opcua.session import ConnectorSession
from connectors.tagmap import parse_tagmap
from pq.errors import ConnectorError
from pq.health import read_health, read_line_events
from pq.spool import Spool, SpoolDrainer
from simulators import SimulatorServer
from simulators.signals import CONTINUOUS_SIGNALS

ROOT = Path(__file__).resolve().parents[1]
SIM_MAP = ROOT / "connectors" / "tagmaps" / "simulator.toml"
UNCERTAIN_INITIAL = 0x40920000  # what a node holds before its first write
# asyncua's watchdog reads the server state every PQ_CONNECTOR_WATCHDOG_S with that as the timeout
# (default 1 s). Server and client share this process's event loop here: starved of CPU for longer,
# the answer waits unread in the socket, the probe "times out", the client reconnects and values
# are lost. The tests that are not about a hung server probe with patience; the hung-server test
# keeps a short one.
WATCHDOG_S = 5.0


# -- helpers ------------------------------------------------------------------------------------------
def make_sim(**kw) -> SimulatorServer:
    """A simulator on a free port whose clock starts 2 h ago: at high speed its source times must not
    run into the future (the store rejects samples more than PQ_INGEST_MAX_FUTURE_S ahead)."""
    kw.setdefault("port", 0)
    kw.setdefault("start", datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2))
    return SimulatorServer(**kw)


def sim_tagmap_text(endpoint: str, *, policy: str = "None", mode: str = "None", extra_security: str = "",
                    publishing_interval_ms: int = 100, keepalive_s: float = 5.0, queue_size: int = 4000) -> str:
    """The shipped line-1 tag map, pointed at ``endpoint`` (and a security policy/mode).

    ``keepalive_s`` 5 instead of the shipped 1: asyncua's stale-subscription watchdog recreates a
    subscription silent for 1.5 x keep-alive, and when this process (simulator, client and drainer
    in one event loop) is starved of CPU for more than 1.5 s it does so although the publish
    responses are already waiting in the socket, dropping them ("Received data for unknown
    subscription"): values lost. 7.5 s rides out a loaded runner; a hung server is still found by
    the client's watchdog probe (PQ_CONNECTOR_WATCHDOG_S), not by keep-alives."""
    body = SIM_MAP.read_text()
    body = re.sub(r'(?m)^endpoint = ".*"$', f'endpoint = "{endpoint}"', body)
    body = re.sub(r'(?m)^policy = "None".*$', f'policy = "{policy}"', body)
    body = re.sub(r'(?m)^mode = "None".*$', f'mode = "{mode}"\n{extra_security}', body)
    body = re.sub(r'(?m)^publishing_interval_ms = \d+.*$', f"publishing_interval_ms = {publishing_interval_ms}", body)
    body = re.sub(r'(?m)^keepalive_s = .*$', f"keepalive_s = {keepalive_s}", body)
    # The simulator runs up to 40x real time here: 10 Hz becomes 400 values per tag per wall second,
    # and the server keeps only `queue_size` of them between two publishes (DiscardOldest, silently in
    # asyncua). On this shared 2-core machine the event loop can stall for a second; 4000 values
    # per tag ride that out. (At real time the shipped 100 are 10 s of data.)
    body = re.sub(r'(?m)^queue_size = \d+', f"queue_size = {queue_size}", body)
    return body


def sim_tagmap(endpoint: str, **kw):
    return parse_tagmap(sim_tagmap_text(endpoint, **kw), "simulator.toml")


def stored_counts(store, line_id: str = "line-1") -> dict[str, int]:
    with store.engine.connect() as conn:
        return dict(conn.execute(text(
            "SELECT t.name, COUNT(*) FROM samples s JOIN tags t ON t.id = s.tag_id WHERE t.line_id = :l "
            "GROUP BY t.name"), {"l": line_id}).fetchall())


def stored_keys(store, line_id: str = "line-1") -> set[tuple[str, int]]:
    """(tag name, source time in Unix µs) of every stored sample of the line."""
    with store.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT t.name, s.ts FROM samples s JOIN tags t ON t.id = s.tag_id WHERE t.line_id = :l"),
            {"l": line_id}).fetchall()
    return {(name, _us(ts)) for name, ts in rows}


def _us(ts) -> int:
    ts = pd.Timestamp(ts)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
    return int(ts.value // 1000)


def written(sim: SimulatorServer, line_id: str = "line-1") -> dict[str, int]:
    return {tag: n for (lid, tag), n in sim.written_counts().items() if lid == line_id}


def assert_exactly_once(store, sim: SimulatorServer, *, initial_per_tag: int = 1, line_id: str = "line-1") -> None:
    """Every write of the line stored once, plus the initial value(s) each subscription delivered."""
    got, want = stored_counts(store, line_id), written(sim, line_id)
    diff = {tag: (got.get(tag, 0), n + initial_per_tag) for tag, n in want.items()
            if got.get(tag, 0) != n + initial_per_tag}
    assert not diff, (f"stored != written + {initial_per_tag} (tag: (stored, expected)): {diff}; "
                      f"holes in melt_temp_c (after, s): {_holes(store, line_id)}")


def _holes(store, line_id: str, tag: str = "melt_temp_c", step_us: int = 150_000) -> list:
    """Where a 10 Hz signal's stored timestamps jump (diagnostics for a failed count)."""
    with store.engine.connect() as conn:
        ts = [_us(t) for t, in conn.execute(text(
            "SELECT s.ts FROM samples s JOIN tags t ON t.id = s.tag_id WHERE t.line_id = :l AND t.name = :n "
            "AND s.status <> :u ORDER BY s.ts"), {"l": line_id, "n": tag, "u": UNCERTAIN_INITIAL})]
    return [(str(pd.Timestamp(a, unit="us")), (b - a) / 1e6) for a, b in zip(ts, ts[1:]) if b - a > step_us]


def assert_parts_match(store, sim: SimulatorServer, line_id: str = "line-1",
                       missing_window_us: tuple[int, int] | None = None) -> tuple[int, int]:
    """Every part the simulator completed is a parts row with the same window and context; every
    inspection it published is an inspections row with the simulator's verdict and code.

    ``missing_window_us``: (from, to) simulated time in which the server was unreachable; parts
    ending and labels published in it may be missing (the server kept no history of them), nothing else.
    """
    with store.engine.connect() as conn:
        parts = pd.DataFrame(conn.execute(text(
            "SELECT serial, cycle_start, cycle_end, product, material_lot, shift, context FROM parts "
            "WHERE line_id = :l"), {"l": line_id}).mappings().all())
        insp = pd.DataFrame(conn.execute(text(
            "SELECT serial, defect, defect_code FROM inspections WHERE line_id = :l"), {"l": line_id}).mappings().all())
    want = sim.parts()
    want = want[want.line_id == line_id].set_index("serial")
    assert len(want) > 0
    if missing_window_us is not None:
        lo, hi = missing_window_us
        gone = want[~want.index.isin(parts.serial)]
        assert all(lo <= _us(t) <= hi for t in gone.cycle_end), ("parts missing outside the outage", gone.index)
        want = want[want.index.isin(parts.serial)]
    assert sorted(parts.serial) == sorted(want.index), "parts rows differ from the parts the simulator made"
    parts = parts.set_index("serial").loc[want.index]
    for col in ("cycle_start", "cycle_end"):
        assert [_us(t) for t in parts[col]] == [_us(t) for t in want[col]], col
    for col in ("product", "material_lot", "shift"):
        assert parts[col].tolist() == want[col].tolist(), col
    ctx = [c if isinstance(c, dict) else json.loads(c) for c in parts.context]
    for key in ("ambient_temp_c", "humidity_pct", "lot_moisture_pct", "tool_wear_shots"):
        assert [c[key] for c in ctx] == pytest.approx(want[key].astype(float).tolist()), key
    truth = sim.ground_truth()
    # Labels are published oldest first, one inspection_serial write each. (ground_truth's `inspected`
    # turns True when the simulator *generates* the cycle that carries the label, one cycle before it
    # is written, so the written count is the exact ground truth of what was published.)
    n_labels = written(sim, line_id)["inspection_serial"]
    everything = truth[truth.line_id == line_id].set_index("serial")
    truth = everything.head(n_labels)
    assert len(truth) > 0
    if missing_window_us is not None:
        # a label written while the server was down is still delivered when it is the current value at
        # the resubscribe (then it is beyond the written count); labels are missing only from the window
        at = sim.parts().set_index("serial").inspected_at
        gone = truth[~truth.index.isin(insp.serial)]
        assert all(lo <= _us(at[x]) <= hi for x in gone.index), ("labels missing outside the outage", gone.index)
        truth = everything[everything.index.isin(insp.serial)]
    assert sorted(insp.serial) == sorted(truth.index), "inspections differ from the labels the simulator published"
    insp = insp.set_index("serial").loc[truth.index]
    assert [bool(x) for x in insp.defect] == [bool(x) for x in truth.defect]
    assert [c or "" for c in insp.defect_code] == [c or "" for c in truth.defect_code]
    return len(parts), len(insp)


async def _wait_for(predicate, timeout_s: float, what: str, step_s: float = 0.05) -> float:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(step_s)
    return time.monotonic() - t0


async def _initial_values(session: ConnectorSession) -> int:
    """Wait until the new subscription delivered one initial value per tag (the line is paused, so
    the first write cannot overtake them); returns the session's sample count then."""
    n = len(session.tags)
    await _wait_for(lambda: session.samples_total >= n, 60, f"the {n} initial values")
    return session.samples_total


async def _settle(sim: SimulatorServer, session: ConnectorSession, expect=None, quiet_s: float = 0.6) -> None:
    """Pause the line and wait until the connector has received its last notification.

    ``expect()``: the sample count the session must reach (every write made while subscribed);
    waited for first, so a stalled event loop on a busy machine cannot end the wait early. Then the
    count must stay put for ``quiet_s`` (an extra value would still show up in the counts)."""
    sim.pause()
    if expect is not None:
        await _wait_for(lambda: session.samples_total >= expect(), 120,
                        "every write received (session.samples_total >= expected)")
    total = -1
    while total != session.samples_total:
        total = session.samples_total
        await asyncio.sleep(quiet_s)


def _all_writes(sim: SimulatorServer, initial: int):
    """expect() for _settle: the initial values plus every write the (paused-at-start) line made."""
    return lambda: initial + sum(written(sim).values())


# -- exactly once, both stores ---------------------------------------------------------------------
@pytest.mark.timeout(240)
def test_every_simulator_write_stored_exactly_once_with_parts_and_labels(store, settings_factory, tmp_path):
    settings = settings_factory(connector_flush_interval_ms=50, connector_watchdog_s=WATCHDOG_S)

    async def scenario():
        async with make_sim(lines=1, seed=11, speed=40, paused=True, label_delay=2) as sim:
            tm = sim_tagmap(sim.endpoint)
            spool = Spool(tmp_path / "spool.sqlite")
            drainer = SpoolDrainer(spool, store).start()
            try:
                async with ConnectorSession(tm, settings, spool=spool) as session:
                    await session.wait_connected(60)
                    # the initial values (UncertainInitialValue: never written yet) before the first write
                    initial = await _initial_values(session)
                    sim.resume()
                    await sim.wait_parts(12, timeout=120)
                    await _settle(sim, session, _all_writes(sim, initial))
                assert drainer.flush(120), drainer.stats()
            finally:
                drainer.stop(5)
                spool.close()
            return sim, session

    sim, session = asyncio.run(scenario())
    assert_exactly_once(store, sim)
    n_parts, n_insp = assert_parts_match(store, sim)
    assert n_parts >= 12 and n_insp >= 10
    assert session.dropped == {"buffer_full": 0} and session.assembler.bad_serial == 2  # the empty initial serials (part, inspection)
    with store.engine.connect() as conn:
        initial = conn.execute(text(
            "SELECT COUNT(*) FROM samples WHERE status = :s"), {"s": UNCERTAIN_INITIAL}).scalar()
    assert initial == len(written(sim))  # the never-written initial values are stored as Uncertain, not as 0


# -- database outage mid-run -------------------------------------------------------------------------
class _Outage:
    """Makes the test's store refuse work for a while, without touching the shared server.

    PostgreSQL: the test database stops accepting connections and its sessions are terminated
    (``ALTER DATABASE ... ALLOW_CONNECTIONS false`` + ``pg_terminate_backend``). SQLite: another
    connection holds an exclusive lock longer than the store's busy timeout (10 s), so writes fail
    with "database is locked".
    """

    def __init__(self, store):
        self.store = store
        self._lock = None
        self._admin = None
        self.db = None

    def begin(self) -> None:
        url = self.store.engine.url
        if self.store.dialect == "postgresql":
            self.db = url.database
            self._admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
            with self._admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{self.db}" ALLOW_CONNECTIONS false'))
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d "
                                  "AND pid <> pg_backend_pid()"), {"d": self.db})
        else:
            import sqlite3

            self._lock = sqlite3.connect(url.database, timeout=30, isolation_level=None,
                                         check_same_thread=False)  # begin and end run in different worker threads
            self._lock.execute("BEGIN EXCLUSIVE")

    def end(self) -> None:
        if self._admin is not None:
            with self._admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{self.db}" ALLOW_CONNECTIONS true'))
            self._admin.dispose()
            self._admin = None
        if self._lock is not None:
            self._lock.execute("ROLLBACK")
            self._lock.close()
            self._lock = None

    @property
    def hold_s(self) -> float:
        return 3.0 if self.store.dialect == "postgresql" else 11.5  # past SQLite's 10 s busy timeout


@pytest.mark.timeout(300)
def test_database_outage_mid_run_loses_nothing_and_duplicates_nothing(store, settings_factory, tmp_path):
    settings = settings_factory(connector_flush_interval_ms=50, connector_watchdog_s=WATCHDOG_S)
    outage = _Outage(store)

    async def scenario():
        async with make_sim(lines=1, seed=5, speed=30, paused=True) as sim:
            tm = sim_tagmap(sim.endpoint)
            spool = Spool(tmp_path / "spool.sqlite")
            drainer = SpoolDrainer(spool, store, max_backoff_s=1.0).start()
            try:
                async with ConnectorSession(tm, settings, spool=spool) as session:
                    await session.wait_connected(60)
                    initial = await _initial_values(session)
                    sim.resume()
                    await sim.wait_parts(3, timeout=120)
                    await asyncio.to_thread(outage.begin)
                    try:
                        await asyncio.sleep(outage.hold_s)  # the outage lasts a while, values keep coming
                        # (SQLite: a write fails only after the 10 s busy timeout, however late it started)
                        await _wait_for(lambda: not drainer.store_available, 60, "the drainer noticing the outage")
                        depth_during = spool.depth()
                    finally:
                        await asyncio.to_thread(outage.end)
                    parts_at_end = len(sim.ground_truth()) + 4
                    await sim.wait_parts(parts_at_end, timeout=120)
                    await _settle(sim, session, _all_writes(sim, initial))
                assert drainer.flush(120), drainer.stats()
                return sim, session, depth_during, drainer.stats()
            finally:
                drainer.stop(5)
                spool.close()
                outage.end()

    sim, session, depth_during, stats = asyncio.run(scenario())
    assert depth_during > 0 and stats["outages"] >= 1 and stats["store_available"]
    assert_exactly_once(store, sim)
    assert_parts_match(store, sim)
    assert session.dropped == {"buffer_full": 0}


# -- pq connect run: kill -9 mid-run, restart, SIGTERM ---------------------------------------------------
class _ConnectorProcess:
    """``pq connect run TAGMAP`` in a child process; its log lines are collected."""

    def __init__(self, tagmap: Path, env: dict):
        import threading

        self.proc = subprocess.Popen([sys.executable, "-m", "pq.cli", "connect", "run", str(tagmap)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.log: list[str] = []
        self._reader = threading.Thread(target=lambda: self.log.extend(iter(self.proc.stderr.readline, "")),
                                        daemon=True)
        self._reader.start()

    def saw(self, text_: str) -> bool:
        return any(text_ in line for line in list(self.log))

    async def wait_subscribed(self, timeout_s: float = 120) -> None:  # process start on a busy machine
        def ok():
            assert self.proc.poll() is None, "pq connect run exited:\n" + "".join(self.log[-20:])
            return self.saw("subscribed 33 of 33 tags")

        await _wait_for(ok, timeout_s, "pq connect run subscribed")

    async def wait_exit(self, timeout_s: float) -> int:
        await _wait_for(lambda: self.proc.poll() is not None, timeout_s, "pq connect run exited")
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _spool_sample_keys(path: Path) -> tuple[set[tuple[str, int]], int]:
    """(tag name, ts µs) of every sample waiting in a spool file, and its record count."""
    spool = Spool(path)
    try:
        recs = spool.peek(max_records=10**6, max_bytes=2**40)
        keys = set()
        for r in recs:
            if r.kind == "samples":
                b = r.payload
                keys.update((b.tags[t][1], int(ts)) for t, ts in zip(b.tag.tolist(), b.ts_us.tolist()))
        return keys, len(recs)
    finally:
        spool.close()


def _rows_by_period(store, t_split_us: int, line_id: str = "line-1") -> tuple[dict, dict]:
    """Per tag: samples (not the never-written initial values) at or before / after ``t_split_us``."""
    before, after = {}, {}
    with store.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT t.name, s.ts FROM samples s JOIN tags t ON t.id = s.tag_id WHERE t.line_id = :l AND s.status <> :u"),
            {"l": line_id, "u": UNCERTAIN_INITIAL}).fetchall()
    for name, ts in rows:
        d = before if _us(ts) <= t_split_us else after
        d[name] = d.get(name, 0) + 1
    return before, after


@pytest.mark.timeout(420)
def test_pq_connect_run_killed_with_sigkill_and_restarted_then_sigterm(store, tmp_path):
    """kill -9 while values stream in: everything that reached the spool (or the store) is in the
    store after a restart, only the last fraction of a second before the kill is missing (it lived
    in the connector's memory or the dead session's server queue); after the restart every write is
    stored exactly once; SIGTERM exits 0 with the spool empty."""
    speed, hz = 20, 10
    env = dict(os.environ, PQ_DATABASE_URL=store.engine.url.render_as_string(hide_password=False),
               PQ_DATA_DIR=str(tmp_path / "var"), PQ_CONNECTOR_FLUSH_INTERVAL_MS="50", PQ_LOG_LEVEL="INFO",
               PQ_CONNECTOR_HEALTH_INTERVAL_S="0.5", PQ_CONNECTOR_WATCHDOG_S=str(WATCHDOG_S), PQ_METRICS_PORT="")
    env.pop("PQ_METRICS_PORT")
    spool_file = tmp_path / "var" / "spool" / "connector-simulator.sqlite"
    tagmap = tmp_path / "line1.toml"
    outage = _Outage(store)

    async def scenario():
        async with make_sim(lines=1, seed=9, speed=speed, paused=True, label_delay=2) as sim:
            tagmap.write_text(sim_tagmap_text(sim.endpoint))
            first = _ConnectorProcess(tagmap, env)
            try:
                await first.wait_subscribed()
                sim.resume()
                await sim.wait_parts(4, timeout=120)
                # the store stalls, so records wait in the spool when the kill comes: kill once the
                # connector's drainer has found the store away (SQLite: after its 10 s busy timeout)
                await asyncio.to_thread(outage.begin)
                await _wait_for(lambda: first.saw("unavailable, records stay in spool"), 60,
                                "pq connect run's drainer noticing the outage")
                kill_sim_us = _us(sim.sim_time)
                first.kill()  # SIGKILL: no flush, no goodbye
                sim.pause()
                pause_us = _us(sim.sim_time)
                written_before = written(sim)
            finally:
                first.kill()
                await asyncio.to_thread(outage.end)
            in_store = stored_keys(store)
            in_spool, spool_records = _spool_sample_keys(spool_file)

            second = _ConnectorProcess(tagmap, env)
            try:
                await second.wait_subscribed()  # monitored items created: their initial values are sampled
                w_resume = written(sim)
                resumed_at = datetime.now(timezone.utc)
                sim.resume()
                await sim.wait_parts(len(sim.ground_truth()) + 4, timeout=120)
                sim.pause()

                def received_everything() -> bool:
                    # The second process received one initial value per tag plus every write since the
                    # resume (its health row says so): then SIGTERM flushes all of it to the store.
                    rows = [r for r in read_health(store, "connector:simulator") if r["updated_at"] > resumed_at]
                    want = len(w_resume) + sum(n - w_resume[t] for t, n in written(sim).items())
                    return bool(rows) and rows[0]["detail"]["samples_total"] >= want

                await _wait_for(received_everything, 120, "the last publish reaching pq connect run")
                second.proc.send_signal(signal.SIGTERM)
                rc = await second.wait_exit(120)
                out = second.proc.stdout.read()
            finally:
                second.kill()
            return (sim, kill_sim_us, pause_us, written_before, in_store, in_spool, spool_records, rc, out,
                    second.log)

    (sim, kill_us, pause_us, written_before, in_store, in_spool, spool_records, rc, out,
     log) = asyncio.run(scenario())
    assert rc == 0, "".join(log[-30:])
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["dropped"] == {"buffer_full": 0} and summary["samples_total"] > 0
    assert any("spool empty, everything is in the store" in line for line in log), "".join(log[-30:])
    assert Spool(spool_file).depth() == 0

    final = stored_keys(store)
    # 1. nothing that reached the spool (or already the store) before the kill is lost
    assert spool_records > 0 and in_spool, "the kill found nothing in the spool: not mid-run"
    assert not (in_spool - final) and not (in_store - final)
    # 2. every write is stored once, except the in-flight tail before the kill (values that lived only
    #    in the killed connector's memory or in its dead session's server queue): per 10 Hz signal the
    #    only hole lies in the last ~1.5 s (wall) before the kill, so after the restart nothing is missing;
    #    a per-cycle tag loses at most the one value in flight (the re-subscription's initial value is
    #    the newest, which refills it for the last part).
    before, after = _rows_by_period(store, pause_us)
    stored_total = {tag: before.get(tag, 0) + after.get(tag, 0) for tag in written_before}
    lost = {tag: n - stored_total[tag] for tag, n in written(sim).items()}
    assert all(n >= 0 for n in lost.values()), f"more rows than writes (duplicates?): {lost}"
    assert max(lost[t] for t in CONTINUOUS_SIGNALS) <= speed * hz * 1.0, lost
    assert max(n for t, n in lost.items() if t not in CONTINUOUS_SIGNALS) <= 1, lost
    for tag in CONTINUOUS_SIGNALS:
        for start, _ in _holes(store, "line-1", tag):
            assert kill_us - speed * 1_500_000 <= _us(pd.Timestamp(start, tz="UTC")) <= pause_us, (tag, start)
    assert_parts_match(store, sim)


# -- server restart ----------------------------------------------------------------------------------
@pytest.mark.timeout(240)
def test_server_restart_subscriptions_come_back_and_gap_recorded(sqlite_store, settings_factory, tmp_path):
    settings = settings_factory(connector_flush_interval_ms=50, connector_reconnect_max_delay_s=1.0,
                                connector_watchdog_s=WATCHDOG_S)
    store = sqlite_store
    speed = 8  # the 2 s downtime is 16 s of production: less than one cycle

    async def scenario():
        async with make_sim(lines=1, seed=4, speed=speed, paused=True) as sim:
            tm = sim_tagmap(sim.endpoint)
            spool = Spool(tmp_path / "spool.sqlite")
            drainer = SpoolDrainer(spool, store).start()
            try:
                async with ConnectorSession(tm, settings, spool=spool) as session:
                    await session.wait_connected(60)
                    await _initial_values(session)
                    sim.resume()
                    await sim.wait_parts(3, timeout=120)
                    down_from_us = _us(sim.sim_time)
                    restart = asyncio.ensure_future(sim.restart(down_s=2.0))
                    await _wait_for(lambda: session.state == "lost", 60, "connection loss noticed")
                    await restart
                    back_us = _us(sim.sim_time)
                    back_after_s = await _wait_for(lambda: session.state == "connected", 120,
                                                   "subscriptions back after the server returned")
                    # from here every write reaches the new subscription
                    s0, w0 = session.samples_total, sum(written(sim).values())
                    n = len(sim.ground_truth())
                    await sim.wait_parts(n + 3, timeout=120)
                    await _settle(sim, session, lambda: s0 + sum(written(sim).values()) - w0)
                assert drainer.flush(120), drainer.stats()
            finally:
                drainer.stop(5)
                spool.close()
            return sim, session, back_after_s, down_from_us, back_us

    sim, session, back_after_s, down_us, back_us = asyncio.run(scenario())
    assert session.reconnects == 1  # how fast it came back is measured (back_after_s), not asserted
    # every value written while the endpoint was up is stored once; a tag's value current at the
    # reconnect may have been written while down (then it is an extra row, the newest of the gap)
    # Values are missing only from just before the server went down until the subscription was back
    # (what the restarted server wrote before the connector resubscribed is gone: it keeps no history).
    window = (down_us - speed * 1_000_000, back_us + int((back_after_s + 1.0) * speed * 1e6))
    got, want = stored_counts(store), written(sim)
    assert all(got[t] <= want[t] + 2 for t in want), {t: (got[t], want[t]) for t in want}
    for tag in CONTINUOUS_SIGNALS:
        for start, length_s in _holes(store, "line-1", tag):
            end = _us(pd.Timestamp(start, tz="UTC")) + int(length_s * 1e6)
            assert window[0] <= _us(pd.Timestamp(start, tz="UTC")) and end <= window[1] + 200_000, (tag, start)
    gaps = read_line_events(store, "line-1", "gap")
    lost = read_line_events(store, "line-1", "connection_lost")
    assert len(gaps) == 1 and gaps[0]["ended_at"] > gaps[0]["started_at"]
    assert gaps[0]["detail"]["down_s"] >= 1.5  # the server was away 2 s: a lower bound load cannot break
    assert len(lost) == 1 and lost[0]["ended_at"] is not None
    health = read_health(store, "connector:simulator")[0]
    assert health["state"] == "stopped" and health["detail"]["reconnects"] == 1
    assert_parts_match(store, sim, missing_window_us=window)


# -- bad-quality scenario: statuses stored as the server sent them ----------------------------------------
@pytest.mark.timeout(240)
def test_bad_quality_statuses_stored_as_sent_compared_with_history(sqlite_store, settings_factory, tmp_path):
    from simulators import generate_history

    settings = settings_factory(connector_flush_interval_ms=50, connector_watchdog_s=WATCHDOG_S)
    store = sqlite_store
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2)

    async def scenario():
        async with make_sim(lines=1, seed=8, speed=40, paused=True, scenario="bad-quality", start=start) as sim:
            spool = Spool(tmp_path / "spool.sqlite")
            drainer = SpoolDrainer(spool, store).start()
            try:
                async with ConnectorSession(sim_tagmap(sim.endpoint), settings, spool=spool) as session:
                    await session.wait_connected(60)
                    initial = await _initial_values(session)
                    sim.resume()
                    await sim.wait_parts(16, timeout=120)
                    await _settle(sim, session, _all_writes(sim, initial))
                assert drainer.flush(120), drainer.stats()
            finally:
                drainer.stop(5)
                spool.close()
            return sim, session

    sim, session = asyncio.run(scenario())
    assert_exactly_once(store, sim)
    # The same seed, start and scenario give the same samples offline: compare value and status of
    # every stored sample with what the line really produced.
    hist = generate_history(days=(sim.sim_time - start).total_seconds() / 86400 + 0.01, lines=1, seed=8,
                            scenario="bad-quality", start=start).samples
    hist = hist.assign(ts_us=hist.ts.astype("int64") // 1000, tag=hist.tag.astype(str))
    with store.engine.connect() as conn:
        got = pd.DataFrame(conn.execute(text(
            "SELECT t.name AS tag, s.ts, s.value, s.status FROM samples s JOIN tags t ON t.id = s.tag_id "
            "WHERE s.status <> :u"), {"u": UNCERTAIN_INITIAL}).mappings().all())
    got["ts_us"] = [_us(t) for t in got.ts]
    # history keeps the DateTime tags as the parts table's cycle_start/cycle_end (checked by assert_parts_match)
    got = got[~got.tag.isin(["cycle_start_time", "cycle_end_time"])]
    m = got.merge(hist[["tag", "ts_us", "value", "status"]], on=["tag", "ts_us"], suffixes=("", "_truth"))
    extra = got[~got.set_index(["tag", "ts_us"]).index.isin(m.set_index(["tag", "ts_us"]).index)]
    assert len(m) == len(got), ("stored samples the line never produced", extra.tag.value_counts().to_dict(),
                                extra.ts.min(), extra.ts.max(), hist.ts.min(), hist.ts.max())
    assert (m.status == m.status_truth.astype("int64")).all()
    assert m.value.isna().equals(m.value_truth.isna()) or (m.value.isna() == m.value_truth.isna()).all()
    both = m.value.notna()
    assert (m.value[both] - m.value_truth[both]).abs().max() < 1e-9
    seen = {tag: set(m.status[m.tag == tag]) for tag in ("vibration_mm_s", "ambient_temp_c", "melt_temp_c",
                                                        "screw_speed_rpm")}
    assert 0x808C0000 in seen["vibration_mm_s"] and 0x40900000 in seen["melt_temp_c"], seen
    assert 0x80050000 in seen["ambient_temp_c"] or 0x40930000 in seen["screw_speed_rpm"], seen
    with store.engine.connect() as conn:  # Bad values are NULL with their status, never a number
        assert conn.execute(text("SELECT COUNT(*) FROM samples WHERE status >= :b AND value IS NOT NULL"),
                            {"b": 0x80000000}).scalar() == 0
    assert session.counters.not_good > 0


# -- security ------------------------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_security_policies_and_modes_untrusted_refused_wrong_password_refused(settings_factory, tmp_path, caplog):
    from connectors.opcua.security import ensure_client_certificate

    pki = tmp_path / "pki"
    settings = settings_factory(pki_dir=pki, connector_reconnect_max_delay_s=0.5, connector_watchdog_s=WATCHDOG_S)
    creds = dict(username="operator", password="s3cret-pw")
    extra = 'username_env = "PQ_TEST_UA_USER"\npassword_env = "PQ_TEST_UA_PASSWORD"'

    async def connect_once(sim, policy, mode, **kw):
        got = []

        class L:
            def on_samples(self, batch):
                got.append(len(batch))

        tm = sim_tagmap(sim.endpoint, policy=policy, mode=mode, extra_security=extra)
        async with ConnectorSession(tm, settings, spool=None, listeners=[L()], **kw) as s:
            await s.wait_connected(60)
            await _wait_for(lambda: sum(got) > 40, 60, f"samples over {policy}/{mode}")
            return s._client.security_policy.URI, s._client.security_policy.Mode

    async def scenario():
        await ensure_client_certificate(pki / "client_cert.der", pki / "client_key.pem")
        async with make_sim(lines=1, seed=2, speed=10, security="all", cert_dir=tmp_path / "sim-pki",
                            users={"operator": "s3cret-pw"}) as sim:
            # 1. the server's certificate is not in the trust list: refused, kept for review
            s1 = ConnectorSession(sim_tagmap(sim.endpoint, policy="Aes128_Sha256_RsaOaep", mode="SignAndEncrypt",
                                             extra_security=extra), settings, spool=None, **creds)
            async with s1:
                with pytest.raises(ConnectorError, match="not in the trust list"):
                    await s1.wait_connected(60)  # the refusal ends the wait at once; 60 s only bounds it
            rejected = list((pki / "rejected").glob("*.der"))
            assert len(rejected) == 1
            (pki / "trusted").mkdir(parents=True, exist_ok=True)
            rejected[0].rename(pki / "trusted" / rejected[0].name)
            # 2. trusted: three policy/mode pairs work, the user is authenticated
            used = [await connect_once(sim, p, m, **creds) for p, m in (
                ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"), ("Aes256_Sha256_RsaPss", "SignAndEncrypt"),
                ("Basic256Sha256", "Sign"))]
            # 3. a wrong password never connects; the refusal is logged, the password is not
            caplog.clear()
            s3 = ConnectorSession(sim_tagmap(sim.endpoint, policy="Basic256Sha256", mode="SignAndEncrypt",
                                             extra_security=extra), settings, spool=None, username="operator",
                                  password="wrong-pw-123")
            async with s3:
                with pytest.raises(ConnectorError, match="no subscription"):
                    await s3.wait_connected(4)  # a while without a connection (longer under load: still none)
                # the first attempt may still be under way after 4 s on a busy machine: wait for its refusal
                await _wait_for(lambda: s3.state == "lost", 60, "the wrong password refused")
            return used

    used = asyncio.run(scenario())
    from asyncua import ua

    assert [(u.rsplit("#", 1)[-1], m) for u, m in used] == [
        ("Aes128_Sha256_RsaOaep", ua.MessageSecurityMode.SignAndEncrypt),
        ("Aes256_Sha256_RsaPss", ua.MessageSecurityMode.SignAndEncrypt),
        ("Basic256Sha256", ua.MessageSecurityMode.Sign)]
    assert "refused the user credentials" in caplog.text
    assert "wrong-pw-123" not in caplog.text and "s3cret-pw" not in caplog.text


# -- a hung server -------------------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_tcp_listener_that_never_answers_is_not_a_connection(settings_factory):
    """TCP accepts, OPC UA never answers: the session reports the loss, keeps retrying, and stops (its
    close does not wait for the silent server; how fast is not asserted, only that it returns)."""
    settings = settings_factory(connector_request_timeout_s=1.0, connector_reconnect_max_delay_s=0.5)

    async def scenario():
        accepted = []

        async def silent(reader, writer):
            accepted.append(writer)  # never answers, never closes

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            session = ConnectorSession(sim_tagmap(f"opc.tcp://127.0.0.1:{port}/pq/sim/"), settings, spool=None)
            await session.start()
            try:
                with pytest.raises(ConnectorError, match="no subscription"):
                    await session.wait_connected(5)
                await _wait_for(lambda: session.state == "lost", 60, "the silent server reported as a loss")
                await _wait_for(lambda: len(accepted) >= 2, 60, "a second connection attempt")  # it retries
            finally:
                try:
                    await asyncio.wait_for(session.close(), 60)
                except asyncio.TimeoutError:
                    raise AssertionError("close() hung on a server that never answers") from None
        finally:
            for w in accepted:
                w.close()
            server.close()
        return session.state

    assert asyncio.run(scenario()) == "stopped"


@pytest.mark.timeout(300)
def test_sigstopped_simulator_detected_as_hung_and_recovered_after_sigcont(sqlite_store, settings_factory, tmp_path):
    """The simulator process is frozen (SIGSTOP): TCP stays open, nothing answers. The watchdog notices;
    after SIGCONT the subscription is back and the gap is recorded (how fast: measured, not asserted)."""
    # a 3 s probe: short enough to find the frozen server, long enough not to take a busy machine for one
    settings = settings_factory(connector_flush_interval_ms=50, connector_watchdog_s=3.0,
                                connector_request_timeout_s=2.0, connector_reconnect_max_delay_s=1.0)
    port = free_port()
    start = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    sim = subprocess.Popen([sys.executable, "-m", "simulators", "serve", "--port", str(port), "--speed", "5",
                            "--seed", "3", "--start", start, "--log-level", "WARNING"], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"opc.tcp://127.0.0.1:{port}/pq/sim/"

    async def scenario():
        async def listening():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        t0 = time.monotonic()
        while not await listening():
            assert sim.poll() is None and time.monotonic() - t0 < 120, "simulator did not start listening"
            await asyncio.sleep(0.1)
        spool = Spool(tmp_path / "spool.sqlite")
        drainer = SpoolDrainer(spool, sqlite_store).start()
        try:
            async with ConnectorSession(sim_tagmap(endpoint), settings, spool=spool) as session:
                await session.wait_connected(60)
                await _wait_for(lambda: session.samples_total > 200, 60, "samples flowing")
                os.kill(sim.pid, signal.SIGSTOP)
                try:
                    detected_s = await _wait_for(lambda: session.state == "lost", 60, "hung server detected")
                finally:
                    os.kill(sim.pid, signal.SIGCONT)
                back_s = await _wait_for(lambda: session.state == "connected", 120, "reconnected after SIGCONT")
                n = session.samples_total
                await _wait_for(lambda: session.samples_total > n + 100, 60, "samples flowing again")
            assert drainer.flush(120), drainer.stats()
        finally:
            drainer.stop(5)
            spool.close()
        return detected_s, back_s

    try:
        detected_s, back_s = asyncio.run(scenario())
    finally:
        sim.terminate()
        sim.wait(30)
    print("hung server figures:", {"detected_s": round(detected_s, 1), "back_s": round(back_s, 1)})
    gaps = read_line_events(sqlite_store, "line-1", "gap")
    assert len(gaps) == 1 and gaps[0]["ended_at"] is not None
