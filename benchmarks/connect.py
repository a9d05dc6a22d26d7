"""``pq bench connect``: the connector against the line simulator, with a bare asyncua client as the ceiling.

Imports pq (settings, store, spool) and the connector, never the simulator (it runs ``python -m
simulators serve`` as a child process, exactly as a plant's server is a separate program). One run:

1. The simulator starts in a child process, paused, at ``--speed 1`` with its clock origin
   (``--start``) a few seconds ahead: it is resumed at that very wall time, so source timestamps
   equal wall time and the lag below is the connector's, not a clock offset.
2. A tag map for it is generated from ``connectors/tagmaps/simulator.toml`` with node ids per
   simulator line and line ids ``bench-connect-N`` (bench rows stay apart from plant lines and are
   deleted before and after the run).
3. A bare asyncua client (child process) subscribes to the same nodes with the same subscription
   parameters and only counts notifications: the ceiling. The same child resumes and pauses the
   simulator and reads its ``Simulator.ValuesWritten`` counter over a second connection, so the
   control requests neither cost the connector CPU nor fail when the connector's process is saturated.
4. The connector runs in this process as ``pq connect run`` composes it (:class:`ConnectorSession`,
   the spool from settings in a temporary directory, a :class:`SpoolDrainer` into the configured
   store), so this process's CPU time and RSS are the connector's own (plus an RSS probe every
   0.25 s and the commit listener that records lags in a fixed-size histogram).
5. Both are subscribed before the clock runs; the simulator publishes for ``--duration`` seconds and
   is paused again. Ground truth is its ``Simulator.ValuesWritten`` counter; each subscribed item
   also delivers one initial value (``UncertainInitialValue``) on subscribe, counted apart.

Figures: delivered (committed) samples/s, the bare client's samples/s, ``ratio`` = ours / bare,
``loss`` = values written and not committed, p50/p99 lag from source timestamp to committed row,
connector CPU (% of one core, over the publishing window) and RSS at start, end and peak.

``--quick``: one line for two seconds, the same path and JSON keys (CI runs it; figures from so
short a window say the path works, not how fast it is).

Example::

    pq bench connect --lines 2 --hz 10 --duration 20 --json

Why one file of ~600 lines: one benchmark run (simulator child, the connector, a bare client as
the ceiling, the JSON contract) whose steps share the measured figures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
import numpy as np

from benchmarks.output import json_option, quick_option
from benchmarks.processes import ROOT, free_port, spawn, stop, tail, wait_listening
from benchmarks.scratch import delete_lines

__all__ = ["connect", "bench_tagmap_text"]

logger = logging.getLogger(__name__)

BENCH_LINE_PREFIX = "bench-connect-"  # line ids of bench rows: never a plant line's
BENCH_CONNECTION = "bench-connect"
_TEMPLATE = ROOT / "connectors" / "tagmaps" / "simulator.toml"
_SIM_NS_URI = "urn:pq:simulator"
_INITIAL_STATUS = 0x40920000  # UncertainInitialValue: what a never-written node delivers on subscribe
_MISSING_TS = np.iinfo(np.int64).min  # pq.spool.MISSING_TS
# the connector's goal (>= 90 % of a bare client's rate, p99 lag < 2 s, flat memory); "memory stays flat" is judged on the second half of the window, after the warm-up
# (allocator arenas, SQLite page caches, asyncua buffers grow to their working size in the first seconds)
_GOAL_RATIO, _GOAL_P99_MS, _GOAL_RSS_GROWTH = 0.9, 2000.0, 0.02


class _LagHistogram:
    """Latencies in 1 ms bins up to 60 s (fixed 480 kB): keeping every value would grow the RSS we measure."""

    BINS = 60_000

    def __init__(self) -> None:
        self.counts = np.zeros(self.BINS, np.int64)
        self.max_ms = 0.0

    def add(self, lag_s: np.ndarray) -> None:
        if not len(lag_s):
            return
        ms = lag_s * 1000.0
        self.max_ms = max(self.max_ms, float(ms.max()))
        idx = np.clip(ms, 0, self.BINS - 1).astype(np.int64)  # a lag beyond 60 s counts in the last bin
        self.counts += np.bincount(idx, minlength=self.BINS)

    def clear(self) -> None:
        self.counts[:] = 0
        self.max_ms = 0.0

    def percentile_ms(self, q: float) -> float | None:
        """Upper edge of the bin holding the q-th percentile, at most the maximum (never optimistic)."""
        n = int(self.counts.sum())
        if n == 0:
            return None
        if q >= 100:
            return round(self.max_ms, 1)
        k = int(np.searchsorted(np.cumsum(self.counts), math.ceil(q / 100 * n)))
        return round(min(float(k + 1), self.max_ms), 1)


# -- tag map ---------------------------------------------------------------------------------------

def bench_tagmap_text(endpoint: str, lines: int, *, prefix: str = BENCH_LINE_PREFIX,
                      template: Path = _TEMPLATE) -> str:
    """The simulator's tag map for ``lines`` lines: node ids of ``line-N``, stored as ``{prefix}N``.

    ``bench_tagmap_text("opc.tcp://127.0.0.1:4840/pq/sim/", 2)`` declares 2 x 33 tags, two part
    events and two inspection blocks; ``connectors.tagmap.parse_tagmap`` validates it.
    """
    from connectors.tagmap import dump_tagmap

    doc = tomllib.loads(template.read_text(encoding="utf-8"))
    defaults = doc.get("defaults", {})
    conn = dict(doc["connection"], name=BENCH_CONNECTION, endpoint=endpoint, line_id=f"{prefix}1",
                line_name="pq bench connect (deleted after the run)", station="bench")
    src_line = doc["connection"]["line_id"]  # the template's line: "line-1"
    tags, parts, inspections = [], [], []
    for n in range(1, lines + 1):
        sim_line, bench_line = f"line-{n}", f"{prefix}{n}"
        for tag in doc["tags"]:
            node = tag["node_id"].replace(f"s={src_line}.", f"s={sim_line}.")
            tags.append({**defaults, **tag, "node_id": node, "line_id": bench_line})
        for pe in _as_list(doc.get("part_event")):
            parts.append({**pe, "line_id": bench_line})
        for insp in _as_list(doc.get("inspection")):
            inspections.append({**insp, "line_id": bench_line})
    header = (f"# generated by pq bench connect: simulator lines 1..{lines} as {prefix}1..{prefix}{lines}\n")
    return dump_tagmap(conn, tags, parts, inspections, header=header)


def _as_list(value) -> list[dict]:
    if value is None:
        return []
    return [value] if isinstance(value, dict) else list(value)


# -- child processes -------------------------------------------------------------------------------

class _SimulatorChild:
    """``python -m simulators serve`` paused, at speed 1, with its clock origin at ``start``."""

    def __init__(self, workdir: Path, lines: int, hz: float, signal_hz: tuple[str, ...], seed: int,
                 start: datetime):
        self.port = free_port()
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}/pq/sim/"
        self.log = workdir / "simulator.log"
        cmd = [sys.executable, "-m", "simulators", "serve", "--lines", str(lines), "--port", str(self.port),
               "--speed", "1", "--paused", "--start", start.isoformat(), "--seed", str(seed),
               "--sample-hz", f"{hz:g}", "--log-level", "WARNING"]
        for item in signal_hz:
            cmd += ["--signal-hz", item]
        with open(self.log, "wb") as err:
            self.proc = spawn(cmd, stdout=subprocess.DEVNULL, stderr=err)

    def wait_listening(self, timeout_s: float) -> None:
        wait_listening(self.proc, self.port, timeout_s, log=self.log)


class _BareChild:
    """The ceiling: a plain asyncua client in its own process that subscribes and counts."""

    def __init__(self, workdir: Path, tagmap_path: Path):
        self.log = workdir / "bare.log"
        code = "from benchmarks.connect import _bare_main; _bare_main()"
        with open(self.log, "wb") as err:
            self.proc = spawn([sys.executable, "-c", code, str(tagmap_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=err, text=True)

    def read_json(self, what: str) -> dict:
        line = self.proc.stdout.readline()  # bounded by the child's own timeouts (it exits on failure)
        if not line:
            raise click.ClickException(f"bare asyncua client ended before {what}: {tail(self.log)}")
        return json.loads(line)

    def send(self, cmd: str) -> None:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()


class _Control:
    """The bench's own client of the simulator: resume, pause, read Simulator.ValuesWritten."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.client = None
        self._paused = self._written = None

    async def _do(self, what: str, coro):
        from asyncua import ua

        try:
            return await coro
        except (OSError, ConnectionError, asyncio.TimeoutError, ua.UaError) as exc:
            raise click.ClickException(
                f"simulator control ({what}) on {self.endpoint} failed: {type(exc).__name__}: {exc}; "
                "an overloaded simulator stops answering (fewer --lines or a lower --hz)") from None

    async def connect(self) -> None:
        from asyncua import Client

        # asyncua's 1 s liveness probe would give this client up (no reconnect) when the simulator is
        # starved for a second on a loaded machine: the probe gets the request timeout instead
        self.client = Client(self.endpoint, timeout=30, watchdog_intervall=30)
        await self._do("connect", self.client.connect())
        ns = await self._do("namespace", self.client.get_namespace_index(_SIM_NS_URI))
        self._paused = self.client.get_node(f"ns={ns};s=Simulator.Paused")
        self._written = self.client.get_node(f"ns={ns};s=Simulator.ValuesWritten")

    async def set_paused(self, paused: bool) -> None:
        from asyncua import ua

        await self._do("pause" if paused else "resume",
                       self._paused.write_value(ua.Variant(paused, ua.VariantType.Boolean)))

    async def written(self) -> int:
        return int(await self._do("read ValuesWritten", self._written.read_value()))

    async def settled_written(self) -> int:
        """Simulator.ValuesWritten once it stops moving (the server refreshes it every 0.5 s)."""
        last = await self.written()
        for _ in range(20):
            await asyncio.sleep(0.6)
            now = await self.written()
            if now == last:
                return now
            last = now
        return last

    async def close(self) -> None:
        from asyncua import ua

        if self.client is None:
            return
        try:
            await asyncio.wait_for(self.client.disconnect(), 5)
        except (OSError, ConnectionError, asyncio.TimeoutError, ua.UaError) as exc:
            logger.debug("bench control client disconnect: %s", exc)


async def _command(expected: str) -> None:
    """Wait for the parent's next command; its end of the pipe closing means it is gone: stop."""
    line = (await asyncio.to_thread(sys.stdin.readline)).strip()
    if line != expected:
        raise SystemExit(f"bench bare client: expected {expected!r} from the parent, got {line!r}")


def _bare_main() -> None:
    """Entry of the bare-client child: ``python -c ... TAGMAP``; talks JSON lines on stdin/stdout."""
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(asyncio.wait_for(_bare(sys.argv[1]), timeout=3600))
    except BaseException as exc:  # the parent reads our stderr; a traceback there is the explanation
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        raise


async def _bare(tagmap_path: str) -> None:
    from asyncua import Client, ua
    from asyncua.common.subscription import Subscription

    from connectors.opcua.session import monitored_item_request
    from connectors.tagmap import load_tagmap

    tm = load_tagmap(tagmap_path)
    conn = tm.connection
    counts = {"n": 0, "last": time.monotonic()}
    lags = _LagHistogram()

    class Counting(Subscription):
        """Counts data-change notifications and their arrival lag; no conversion, no queue, no store."""

        async def publish_callback(self, publish_result: ua.PublishResult) -> None:
            now = time.time()
            self.last_publish_at = time.monotonic()
            data = publish_result.NotificationMessage.NotificationData
            if not data:
                return
            ts = []
            for notif in data:
                if isinstance(notif, ua.DataChangeNotification):
                    for item in notif.MonitoredItems:
                        src = item.Value.SourceTimestamp
                        if src is not None:
                            ts.append(src.timestamp())
                    counts["n"] += len(notif.MonitoredItems)
            counts["last"] = time.monotonic()
            if ts:
                lags.add(now - np.asarray(ts))

    client = Client(conn.endpoint, timeout=10, watchdog_intervall=10)  # no reconnect here: see _Control
    await client.connect()
    try:
        # the connector's subscription parameters (connectors/opcua/session.py), nothing else
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = conn.publishing_interval_ms
        keepalive = max(1, math.ceil(conn.keepalive_s * 1000 / conn.publishing_interval_ms))
        params.RequestedMaxKeepAliveCount = keepalive
        params.RequestedLifetimeCount = keepalive * 10
        params.MaxNotificationsPerPublish = 0
        params.PublishingEnabled = True
        params.Priority = 0
        sub = Counting(client.uaclient.session, params, handler=object())
        await sub.init()
        ns = await client.get_namespace_index(_SIM_NS_URI)
        requests = []
        for i, tag in enumerate(tm.tags):  # exactly the connector's request, so the ceiling is comparable
            node = ua.NodeId.from_string(tag.node_id.replace(f"nsu={_SIM_NS_URI};", f"ns={ns};"))
            requests.append(monitored_item_request(tag, node, i + 1))
        items = 0
        for k in range(0, len(requests), 500):
            results = await sub.create_monitored_items(requests[k:k + 500])
            items += sum(not isinstance(r, ua.StatusCode) for r in results)
        deadline = time.monotonic() + 10
        while counts["n"] < items and time.monotonic() < deadline:  # the initial value of every item
            await asyncio.sleep(0.05)
        control = _Control(conn.endpoint)
        await control.connect()
        try:
            written0 = await control.written()
            print(json.dumps({"items": items, "initial": counts["n"]}), flush=True)
            await _command("resume")
            lags.clear()
            cpu0, t0 = time.process_time(), time.monotonic()
            await control.set_paused(False)
            print(json.dumps({"resumed_at": time.time()}), flush=True)
            await _command("pause")
            await control.set_paused(True)
            cpu1, t1 = time.process_time(), time.monotonic()
            print(json.dumps({"paused_at": time.time()}), flush=True)
            written = await control.settled_written() - written0
        finally:
            await control.close()
        while time.monotonic() - counts["last"] < 1.0:  # the last publishes
            await asyncio.sleep(0.05)
        print(json.dumps({"received_total": counts["n"], "items": items, "written": written,
                          "cpu_pct": 100 * (cpu1 - cpu0) / max(t1 - t0, 1e-9),
                          "lag_p50_ms": lags.percentile_ms(50), "lag_p99_ms": lags.percentile_ms(99)}),
              flush=True)
        await sub.delete()
    finally:
        await client.disconnect()


# -- the connector in this process ------------------------------------------------------------------

def _check_child(reply: dict, what: str) -> dict:
    if "error" in reply:
        raise click.ClickException(f"bare asyncua client failed at {what}: {reply['error']}")
    return reply


@dataclass
class _CommitRecorder:
    """Drainer commit listener: per committed sample of the window, lag and the simulator's own delay."""

    lag: _LagHistogram = field(default_factory=_LagHistogram)
    sim_delay: _LagHistogram = field(default_factory=_LagHistogram)

    def __call__(self, kind: str, payloads: list, committed_at: float) -> None:
        if kind != "samples":
            return
        for batch in payloads:
            live = batch.status != _INITIAL_STATUS
            ts = batch.ts_us[live]
            self.lag.add(committed_at - ts / 1e6)
            sts = batch.server_ts_us[live]
            has = sts != _MISSING_TS
            self.sim_delay.add((sts[has] - ts[has]) / 1e6)


async def _run(settings, store, *, lines: int, hz: float, signal_hz: tuple[str, ...], duration_s: float,
               seed: int, workdir: Path) -> dict:
    import psutil

    from connectors.opcua.session import ConnectorSession
    from connectors.runner import spool_name
    from connectors.tagmap import parse_tagmap
    from pq.spool import SpoolDrainer, open_spool

    lead_s = 6.0 + 0.15 * lines  # simulator start-up + two subscriptions, before the clock origin
    origin = datetime.now(timezone.utc) + timedelta(seconds=lead_s)
    sim = _SimulatorChild(workdir, lines, hz, signal_hz, seed, origin)
    bare = None
    try:
        await asyncio.to_thread(sim.wait_listening, 60)
        tm_text = bench_tagmap_text(sim.endpoint, lines)
        tm_path = workdir / "bench-tagmap.toml"
        tm_path.write_text(tm_text, encoding="utf-8")
        tm = parse_tagmap(tm_text, str(tm_path))
        bare = _BareChild(workdir, tm_path)
        bare_ready = asyncio.ensure_future(asyncio.to_thread(bare.read_json, "subscribing"))

        spool = open_spool(settings.model_copy(update={"spool_dir": workdir / "spool"}), spool_name(tm))
        recorder = _CommitRecorder()
        drainer = SpoolDrainer(spool, store, listeners=(recorder,)).start()
        me = psutil.Process()
        sim_ps = psutil.Process(sim.proc.pid)
        rss: list[int] = []
        try:
            async with ConnectorSession(tm, settings, spool=spool) as session:
                await session.wait_connected(30)
                deadline = time.monotonic() + 10
                while session.samples_total < len(tm.tags) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)  # the initial value of every item
                ready = await asyncio.wait_for(bare_ready, 30)
                _check_child(ready, "subscribing")
                wait_s = (origin - datetime.now(timezone.utc)).total_seconds()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                cpu0, sim_cpu0 = me.cpu_times(), sim_ps.cpu_times()
                t0 = time.monotonic()
                bare.send("resume")  # the bare client's process also drives the simulator: see _bare
                resumed = _check_child(await asyncio.wait_for(asyncio.to_thread(bare.read_json, "resume"), 60),
                                       "resume")
                # how far source time trails wall time (0 when resumed on time; the lag includes it)
                offset_ms = (resumed["resumed_at"] - origin.timestamp()) * 1000
                rss.append(me.memory_info().rss)
                rss_start, rss_mid = rss[0], None
                while time.monotonic() - t0 < duration_s:
                    await asyncio.sleep(min(0.25, max(0.0, duration_s - (time.monotonic() - t0))))
                    rss.append(me.memory_info().rss)
                    if rss_mid is None and time.monotonic() - t0 >= duration_s / 2:
                        rss_mid = rss[-1]
                bare.send("pause")
                paused = _check_child(await asyncio.wait_for(asyncio.to_thread(bare.read_json, "pause"), 60),
                                      "pause")
                cpu1, sim_cpu1 = me.cpu_times(), sim_ps.cpu_times()
                cpu_window_s = time.monotonic() - t0
                window_s = paused["paused_at"] - resumed["resumed_at"]
                rss_end = me.memory_info().rss
                bare_result = _check_child(
                    await asyncio.wait_for(asyncio.to_thread(bare.read_json, "reporting"), 120), "reporting")
                written = bare_result["written"]
                # everything written reached the connector, or 3 s without a notification
                expected = written + len(tm.tags)
                last_n, last_change = session.samples_total, time.monotonic()
                while session.samples_total < expected and time.monotonic() - last_change < 3.0:
                    await asyncio.sleep(0.1)
                    rss.append(me.memory_info().rss)
                    if session.samples_total != last_n:
                        last_n, last_change = session.samples_total, time.monotonic()
            flushed = await asyncio.to_thread(drainer.flush, 120)
            rss.append(me.memory_info().rss)
            dropped = dict(session.dropped)
            counters = session.counters.as_dict()
            reconnects = session.reconnects
        finally:
            drainer.stop(5)
            spool.close()
    finally:
        if bare is not None:
            stop(bare.proc)
        stop(sim.proc)

    cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    sim_cpu_s = (sim_cpu1.user - sim_cpu0.user) + (sim_cpu1.system - sim_cpu0.system)
    return {
        "tm": tm, "written": written, "window_s": window_s, "flushed": flushed, "dropped": dropped,
        "counters": counters, "reconnects": reconnects, "recorder": recorder, "bare": bare_result,
        "cpu_pct": 100 * cpu_s / cpu_window_s, "simulator_cpu_pct": 100 * sim_cpu_s / cpu_window_s,
        "rss_start": rss_start, "rss_mid": rss_mid or rss_end, "rss_end": rss_end, "rss_peak": max(rss),
        "source_offset_ms": offset_ms,
    }


# -- store ---------------------------------------------------------------------------------------

def _count_rows(store) -> tuple[int, int]:
    """(bench sample rows, of which initial values) in the store."""
    from sqlalchemy import func, select

    from pq.storage import schema

    s, t = schema.samples, schema.tags
    bench_tags = select(t.c.id).where(t.c.line_id.like(BENCH_LINE_PREFIX + "%"))
    with store.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(s).where(s.c.tag_id.in_(bench_tags))).scalar_one()
        initial = conn.execute(select(func.count()).select_from(s).where(
            s.c.tag_id.in_(bench_tags), s.c.status == _INITIAL_STATUS)).scalar_one()
    return int(total), int(initial)


def _delete_bench_rows(store) -> None:
    """Remove every row the bench wrote (lines ``bench-connect-*`` and the connection's health row)."""
    delete_lines(store, BENCH_LINE_PREFIX + "%", health_component=f"connector:{BENCH_CONNECTION}")


# -- command -----------------------------------------------------------------------------------------

@click.command()
@click.option("--lines", type=click.IntRange(min=1), default=2, show_default=True,
              help="Simulator lines (33 tags each: 11 continuous at --hz, the rest once per cycle).")
@click.option("--hz", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="R: samples per second of each continuous signal (the simulator's --sample-hz).")
@click.option("--signal-hz", multiple=True, metavar="NAME=HZ",
              help="Per-signal rate passed to the simulator (repeatable), e.g. vibration_mm_s=100.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="Seconds the simulator publishes.")
@click.option("--seed", type=int, default=1, show_default=True, help="Simulator seed.")
@click.option("--keep-workdir", is_flag=True, hidden=True,
              help="Keep the temporary directory (tag map, spool, simulator and bare-client logs) for diagnosis.")
@quick_option({"--lines": 1, "--duration": 2.0})
@json_option
def connect(lines, hz, signal_hz, duration, seed, keep_workdir, quick, as_json):
    """Connector vs a bare asyncua client on the line simulator: samples/s, loss, lag, CPU, memory.

    Writes into the configured store (PQ_DATABASE_URL) under line ids bench-connect-N and deletes
    those rows afterwards.
    """
    from pq.cli import get_settings, open_store
    from pq.storage import migrate

    settings = get_settings()
    store = open_store(check_schema=False)
    migrate.upgrade(store)
    _delete_bench_rows(store)  # leftovers of an interrupted run would hide loss
    workdir = Path(tempfile.mkdtemp(prefix="pq-bench-connect-"))
    try:
        r = asyncio.run(_run(settings, store, lines=lines, hz=hz, signal_hz=tuple(signal_hz), duration_s=duration,
                             seed=seed, workdir=workdir))
        stored, initial_rows = _count_rows(store)
    finally:
        try:
            _delete_bench_rows(store)
        finally:
            store.dispose()
            if keep_workdir:
                click.echo(f"kept {workdir}", err=True)
            else:
                shutil.rmtree(workdir, ignore_errors=True)

    tm, rec, bare, window = r["tm"], r["recorder"], r["bare"], r["window_s"]
    items = len(tm.tags)
    delivered = stored - initial_rows  # rows of values written in the window
    bare_received = bare["received_total"] - bare["items"]
    delivered_rate, bare_rate = delivered / window, bare_received / window
    loss = r["written"] - delivered
    dropped = sum(r["dropped"].values())
    mb = 2 ** 20
    result = {
        "suite": "connect", "store": store.dialect, "lines": lines, "tags": items, "hz": hz,
        "duration_s": round(window, 2),
        "written": r["written"], "offered_samples_per_s": round(r["written"] / window, 1),
        "delivered_samples_per_s": round(delivered_rate, 1), "bare_samples_per_s": round(bare_rate, 1),
        "ratio": round(delivered_rate / bare_rate, 3) if bare_rate else None,
        "loss": loss, "bare_loss": r["written"] - bare_received, "dropped": dropped,
        "initial_rows": initial_rows, "expected_initial_rows": items,
        "lag_p50_ms": rec.lag.percentile_ms(50), "lag_p99_ms": rec.lag.percentile_ms(99),
        "lag_max_ms": rec.lag.percentile_ms(100),
        "bare_lag_p50_ms": _round(bare["lag_p50_ms"]), "bare_lag_p99_ms": _round(bare["lag_p99_ms"]),
        "simulator_delay_p99_ms": rec.sim_delay.percentile_ms(99),
        "source_offset_ms": round(r["source_offset_ms"], 1),
        "cpu_pct": round(r["cpu_pct"], 1), "bare_cpu_pct": round(bare["cpu_pct"], 1),
        "simulator_cpu_pct": round(r["simulator_cpu_pct"], 1),
        "rss_start_mb": round(r["rss_start"] / mb, 1), "rss_mid_mb": round(r["rss_mid"] / mb, 1), "rss_end_mb": round(r["rss_end"] / mb, 1),
        "rss_peak_mb": round(r["rss_peak"] / mb, 1),
        "reconnects": r["reconnects"], "spool_flushed": r["flushed"],
        # values the server discarded from its per-item queue before they reached the connector
        # (Overflow bit): the connector fell further behind than queue_size values of a tag
        "server_overflow": r["counters"]["server_overflow"],
    }
    growth = (r["rss_end"] - r["rss_start"]) / r["rss_start"]
    growth_2nd = (r["rss_end"] - r["rss_mid"]) / r["rss_start"]
    goals = {
        f"ratio >= {_GOAL_RATIO}": result["ratio"] is not None and result["ratio"] >= _GOAL_RATIO,
        "loss == 0": loss == 0 and dropped == 0,
        f"p99 lag < {_GOAL_P99_MS:.0f} ms": result["lag_p99_ms"] is not None and result["lag_p99_ms"] < _GOAL_P99_MS,
        f"RSS growth in the 2nd half < {_GOAL_RSS_GROWTH:.0%}": growth_2nd < _GOAL_RSS_GROWTH,
    }
    result["goal_met"] = all(goals.values())

    click.echo(f"simulator: {lines} line(s) x {items // lines} tags, continuous signals at {hz:g} Hz, "
               f"{window:.1f} s at speed 1 -> {r['written']:,} values ({result['offered_samples_per_s']:,.0f}/s); "
               f"store {store.dialect} ({store.display_url})")
    click.echo(f"bare asyncua client : {bare_rate:>9,.1f} samples/s, missed {result['bare_loss']}, "
               f"arrival lag p50 {result['bare_lag_p50_ms']} / p99 {result['bare_lag_p99_ms']} ms, "
               f"CPU {result['bare_cpu_pct']} %")
    click.echo(f"pq connector        : {delivered_rate:>9,.1f} samples/s committed, loss {loss}, dropped {dropped}, "
               f"initial values {initial_rows}/{items}, reconnects {r['reconnects']}, "
               f"server queue overflows {result['server_overflow']}")
    click.echo(f"lag source->commit  : p50 {result['lag_p50_ms']} ms, p99 {result['lag_p99_ms']} ms, "
               f"max {result['lag_max_ms']} ms (simulator's own write delay p99 {result['simulator_delay_p99_ms']} ms, "
               f"source clock offset {result['source_offset_ms']} ms)")
    click.echo(f"connector process   : CPU {result['cpu_pct']} % of a core; RSS start {result['rss_start_mb']} MB, "
               f"half-time {result['rss_mid_mb']} MB, end {result['rss_end_mb']} MB ({growth:+.1%}), peak {result['rss_peak_mb']} MB "
               f"(simulator CPU {result['simulator_cpu_pct']} %)")
    click.echo(f"ratio (ours / bare) : {result['ratio']}")
    click.echo("goal                : " + ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in goals.items()))
    if not r["flushed"]:
        click.echo("warning: the spool was not empty after 120 s; loss counts what the store had by then", err=True)
    if abs(r["source_offset_ms"]) > 100:
        click.echo(f"warning: the simulator was resumed {r['source_offset_ms']:.0f} ms after its clock origin; "
                   "the lag includes that offset", err=True)
    if as_json:
        click.echo(json.dumps(result))


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)
