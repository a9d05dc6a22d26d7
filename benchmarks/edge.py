"""``pq bench edge``: decision and commit latency for L lines x T tags x R Hz on this machine.

A composition root for measuring. Each line gets its own :class:`LineRuntime` with the real
streaming features (shipped feature set), the production :class:`models.scoring.Scorer` (a
100-tree LightGBM model trained on vectors of the bench's own stream, TreeSHAP for at-risk parts,
the training-range drift check), the real durable spool drained into the configured store, all on
one event loop, the way one host would run them. Sample batches
arrive every 100 ms per line (the connector's flush cadence) through bounded queues; latency is
measured from the moment a cycle-complete event is queued to the decision being published, and to
its commit in the store (spool drainer commit listener).

Reference figure (not a ratio): one line, unloaded, deciding and committing synchronously to the
store (decide, INSERT, COMMIT) — what a design with the database on the decision path costs at best.

The store is a temporary SQLite file unless a database is configured (``PQ_DATABASE_URL`` or the
config file); there the bench's rows (lines ``bench-edge-N``) are deleted before and after the run.
``loss`` = parts decided minus their predictions committed; ``dropped`` = batches the bounded
queues refused, sink errors and spool drops. ``--quick``: two lines for four seconds, one part per
second each, the same path and JSON keys.

Shadow (champion / challenger): a second 100-tree model (another fit of the same parts, as a
retrained challenger would be) runs in shadow on every line, switched on and off every
``--shadow-segment`` seconds, so both halves of the run share the machine's load as it comes and
goes. Production's decision latency is split by whether the challenger was on when the part was
decided: ``p99_ms`` (off) and ``p99_ms_with_shadow`` (on); the goal is at most +20 %.
``shadow_scores`` are the challenger's rows committed (every part production scored while it was
on, else counted in ``loss``), ``challenger_p99_ms`` its own scoring time after each decision.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import click
import numpy as np

from benchmarks.output import json_option, quick_option
from benchmarks.scratch import delete_lines

__all__ = ["edge"]

_LINE_PREFIX = "bench-edge-"  # line ids of bench rows: never a plant line's


def _delete_bench_rows(store) -> None:
    delete_lines(store, _LINE_PREFIX + "%", health_component="edge:" + _LINE_PREFIX + "%")


_CONTEXT = {"product": "bench", "material_lot": "L1", "shift": "A"}  # what every bench part carries


def _training_vectors(fs, tags: list[str], *, parts: int, hz: float, cycle_s: float, at_risk_share: float,
                      rng: np.random.Generator):
    """(features, labels) of ``parts`` cycles computed by the edge's own streaming path from the stream
    the bench sends: every tag near 100 at ``hz`` in 100 ms ticks, a hot part (every tag +40) with
    probability ``at_risk_share``, cycles of ``cycle_s`` give or take a tick, as the live loop's timing
    gives them. A model trained on anything else would see the live parts as drift and not score them."""
    import pandas as pd

    from pq.features import StreamingFeatures

    tick_ns, step_ns = 100_000_000, int(1e9 / hz)
    per_tick = max(1, int(round(hz * 0.1)))
    nominal = max(2, int(round(cycle_s * 10)))
    ticks = rng.integers(nominal - 1, nominal + 2, parts + 1)  # ticks per cycle; cycle 0 only fills the buffers
    hot = rng.random(parts + 1) < at_risk_share
    ends = np.cumsum(ticks)  # the tick at which each part ends (its samples belong to the next window)
    origin = time.time_ns() - int(ends[-1] + 1) * tick_ns
    tick_state = np.repeat(hot, ticks)  # the state of the cycle under way when the tick is sent
    tick_ts = origin + np.arange(1, ends[-1] + 1) * tick_ns
    ts = (tick_ts[:, None] - (np.arange(per_tick)[::-1] * step_ns)[None, :]).ravel()
    shift = np.repeat(np.where(tick_state, 40.0, 0.0), per_tick)
    sf = StreamingFeatures(fs, None, capacity_s=30, max_rate_hz=hz * 2)
    pushed, rows = 0, []
    for k in range(parts + 1):
        end_ns = int(tick_ts[ends[k] - 1])
        upto = int(np.searchsorted(ts, end_ns, side="right"))
        for tag in tags:
            sf.push_many(tag, ts[pushed:upto], 100 + rng.normal(size=upto - pushed) + shift[pushed:upto])
        pushed = upto
        if k:
            x, _ = sf.vector(int(tick_ts[ends[k - 1] - 1]), end_ns, _CONTEXT)
            rows.append(x)
    X = pd.DataFrame(rows, columns=list(fs.feature_names))
    return X.loc[:, X.notna().any()], hot[1:].astype(int)  # features the bench never fills are left out


def _scorer(fs, tags: list[str], *, hz: float, cycle_s: float, at_risk_share: float, seed: int = 7):
    """The production :class:`models.scoring.Scorer` over a 100-tree LightGBM model of the bench's parts."""
    from models.estimator import DefectModel
    from models.scoring import Scorer

    rng = np.random.default_rng(seed)
    X, y = _training_vectors(fs, tags, parts=1000, hz=hz, cycle_s=cycle_s,
                             at_risk_share=min(max(at_risk_share, 0.05), 0.95), rng=rng)  # both classes
    model = DefectModel(n_threads=1, seed=seed).fit(X, y, num_boost_round=100)
    good = X.loc[y == 0]
    normal = {c[: -len("__mean")]: [float(good[c].quantile(0.01)), float(good[c].quantile(0.99))]
              for c in X.columns if c.endswith("__mean")}
    return Scorer(model, {"threshold": 0.5, "feature_set_version": fs.version, "normal_ranges": normal},
                  version_id=1)


class _Fixed:
    """Production for every line, and the challenger while ``shadow_on``."""

    def __init__(self, scorer, challenger=None):
        self.scorer = scorer
        self.challenger = challenger
        self.shadow_on = False

    def scorer_for(self, product):
        return self.scorer

    def challenger_for(self, product):
        return self.challenger if self.shadow_on else None

    def retire_challenger(self, version_id, reason):
        raise RuntimeError(f"bench challenger {version_id} failed: {reason}")  # a broken bench, not a figure

    def status(self):
        return {"model_version_id": self.scorer.version_id}


def _pct(a, q):
    return round(float(np.percentile(a, q)), 2) if len(a) else None


@click.command()
@click.option("--lines", "n_lines", default=10, show_default=True, help="Lines (one runtime each).")
@click.option("--tags", "n_tags", default=20, show_default=True, help="Tags per line.")
@click.option("--hz", default=10.0, show_default=True, help="Samples per second per tag.")
@click.option("--seconds", default=30.0, show_default=True, help="Measured duration.")
@click.option("--cycle-s", default=2.0, show_default=True, help="Machine cycle (one part per cycle per line).")
@click.option("--at-risk", "at_risk_share", default=0.1, show_default=True, help="Share of parts pushed to at risk.")
@click.option("--shadow-segment", "shadow_segment_s", default=5.0, show_default=True,
              help="Seconds between switching the challenger in shadow on and off.")
@quick_option({"--lines": 2, "--seconds": 4.0, "--cycle-s": 1.0, "--shadow-segment": 1.0})
@json_option
def edge(n_lines, n_tags, hz, seconds, cycle_s, at_risk_share, shadow_segment_s, quick, as_json):
    """Edge decision and commit latency for L lines x T tags x R Hz."""
    from pq.cli import get_settings
    from pq.storage import Store, migrate

    base = get_settings()
    tmp = Path(tempfile.mkdtemp(prefix="pq-bench-edge-"))
    configured = "database_url" in base.model_fields_set  # from PQ_DATABASE_URL or the config file
    db_url = base.database_url if configured else f"sqlite:///{tmp / 'bench.db'}"
    settings = base.model_copy(update={"database_url": db_url, "edge_flood_limit": 10_000})
    store = Store.open(settings)
    try:
        migrate.upgrade(store)
        _delete_bench_rows(store)  # an interrupted run's rows would count as this run's predictions
        result = _run(store, settings, tmp, n_lines=n_lines, n_tags=n_tags, hz=hz, seconds=seconds, cycle_s=cycle_s,
                      at_risk_share=at_risk_share, shadow_segment_s=shadow_segment_s)
    finally:
        try:
            _delete_bench_rows(store)
        finally:
            store.dispose()
            shutil.rmtree(tmp, ignore_errors=True)
    click.echo(f"decision latency p50 {result['decision_p50_ms']} ms, p99 {result['decision_p99_ms']} ms (goal < 100); "
               f"commit p50 {result['commit_p50_ms']} ms, p99 {result['commit_p99_ms']} ms (goal < 1000)")
    click.echo(f"{result['parts']} parts ({result['at_risk']} at risk), {result['samples_per_s']} samples/s, "
               f"CPU {result['cpu_pct']} % of one core, RSS {result['rss_mb']} MB, loss {result['loss']}, "
               f"dropped {result['dropped']}")
    click.echo(f"reference: one line, unloaded, decide + synchronous store commit p99 "
               f"{result['baseline_sync_commit_unloaded_p99_ms']} ms (not a like-for-like baseline: no ratio reported)")
    click.echo(f"production decision p99 with a challenger in shadow {result['p99_ms_with_shadow']} ms, without "
               f"{result['p99_ms']} ms ({result['shadow_p99_change_pct']:+.1f} %, goal at most +20 %); "
               f"{result['shadow_scores']} shadow rows committed, challenger scoring p99 {result['challenger_p99_ms']} ms")
    if as_json:
        click.echo(json.dumps(result))


def _run(store, settings, tmp: Path, *, n_lines: int, n_tags: int, hz: float, seconds: float, cycle_s: float,
         at_risk_share: float, shadow_segment_s: float) -> dict:
    import psutil
    from sqlalchemy import func, select

    from pq.alerts.playbook import PlaybookLoader
    from pq.edge import records
    from pq.edge.interfaces import PartEvent
    from pq.edge.runtime import LineRuntime
    from pq.edge.housekeeping import Housekeeper
    from pq.features import StreamingFeatures, load_feature_set
    from pq.spool import Spool, SpoolDrainer
    from pq.spool.records import SampleBatch
    from pq.storage import schema
    from pq.storage.catalog import ensure_line
    from pq.storage.parts import insert_ignore

    records.register()
    fs = load_feature_set()
    spec_tags = list(fs.tags)
    tag_names = (spec_tags + [f"extra_{i}_c" for i in range(max(0, n_tags - len(spec_tags)))])[:n_tags]
    scorer = _scorer(fs, [t for t in tag_names if t in spec_tags], hz=hz, cycle_s=cycle_s,
                     at_risk_share=at_risk_share)
    challenger = _scorer(fs, [t for t in tag_names if t in spec_tags], hz=hz, cycle_s=cycle_s,
                         at_risk_share=at_risk_share, seed=8)
    challenger.version_id = 2
    provider = _Fixed(scorer, challenger)
    lines = [f"{_LINE_PREFIX}{i + 1}" for i in range(n_lines)]
    for line in lines:
        ensure_line(store, line)
    spool = Spool(tmp / "edge.sqlite", fsync=settings.spool_fsync)
    commits: list[float] = []
    alert_commits: list[float] = []

    def on_commit(kind, payloads, committed_at):
        if kind == "prediction":
            for p in payloads:
                commits.append(committed_at - (p["decided_at"].timestamp() - p["latency_ms"] / 1000))
        elif kind == "alert":
            for p in payloads:
                alert_commits.append(committed_at - p["_queued_unix"] if "_queued_unix" in p else math.nan)

    drainer = SpoolDrainer(spool, store, listeners=[on_commit]).start()
    runtimes = []
    for line in lines:
        rt = LineRuntime(line, scorers=provider, sink=spool, settings=settings, playbook=PlaybookLoader(),
                         feature_factory=lambda s: StreamingFeatures(fs, None, capacity_s=30, max_rate_hz=hz * 2))
        runtimes.append(rt)
    provider.shadow_on = True  # warm the challenger up too
    warm = runtimes[0].warm_up()
    for rt in runtimes[1:]:
        rt.warm_up()
    provider.shadow_on = False
    click.echo(f"warm-up {warm:.1f} s; {n_lines} lines x {n_tags} tags x {hz:g} Hz for {seconds:g} s, "
               f"one part per {cycle_s:g} s per line; store {store.display_url}", err=True)

    rng = np.random.default_rng(1)
    proc = psutil.Process()
    dropped = {"queue": 0}
    last_cycle: dict[str, tuple[int, int]] = {}  # per line, (start, end) ns of its last part
    qmax = 100

    async def produce(li, line, q, stop):
        tags = tuple((line, t) for t in tag_names)
        per_tick = max(1, int(round(hz * 0.1)))
        t_next = time.monotonic()
        cycle_start_ns = time.time_ns()
        next_part = time.monotonic() + cycle_s * (li + 1) / n_lines  # stagger lines
        serial = 0
        hot = False
        while not stop.is_set():
            t_next += 0.1
            now_ns = time.time_ns()
            n = len(tags) * per_tick
            ts = (now_ns // 1000 - (np.arange(per_tick)[::-1] * int(1e6 / hz))).repeat(len(tags))
            val = 100 + rng.normal(size=n)
            if hot:
                val = val + 40.0
            batch = SampleBatch(tags=tags, tag=np.tile(np.arange(len(tags), dtype=np.int32), per_tick),
                                ts_us=ts.astype(np.int64), server_ts_us=ts.astype(np.int64), value=val,
                                status=np.zeros(n, np.int64))
            items = [batch]
            if time.monotonic() >= next_part:
                next_part += cycle_s
                serial += 1
                items.append(PartEvent(f"{line}-{serial:06d}", cycle_start_ns, now_ns, time.perf_counter(),
                                       dict(_CONTEXT)))
                last_cycle[line] = (cycle_start_ns, now_ns)
                cycle_start_ns = now_ns
                hot = rng.random() < at_risk_share
            if q.full():
                dropped["queue"] += 1  # counted, never silent
            else:
                q.put_nowait(items)
            await asyncio.sleep(max(0.0, t_next - time.monotonic()))

    split = {True: [], False: []}  # production's decision latency with / without the challenger on
    expected_shadow = [0]

    async def consume(rt, q, stop):
        while not stop.is_set() or not q.empty():
            try:
                items = await asyncio.wait_for(q.get(), 0.5)
            except asyncio.TimeoutError:
                continue
            on = provider.shadow_on  # switched only between awaits: constant through handle()
            for d in rt.handle(items):
                split[on].append(d.latency_ms)
                expected_shadow[0] += on and d.decision != "not_scored"

    async def toggle(stop):
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), shadow_segment_s)
            except asyncio.TimeoutError:
                provider.shadow_on = not provider.shadow_on
        provider.shadow_on = False

    async def main():
        stop = asyncio.Event()
        queues = [asyncio.Queue(qmax) for _ in lines]
        tasks = [asyncio.create_task(produce(i, line, q, stop)) for i, (line, q) in enumerate(zip(lines, queues))]
        tasks += [asyncio.create_task(consume(rt, q, stop)) for rt, q in zip(runtimes, queues)]
        tasks += [asyncio.create_task(Housekeeper(rt).run(stop)) for rt in runtimes]
        tasks.append(asyncio.create_task(toggle(stop)))
        proc.cpu_percent(None)
        await asyncio.sleep(seconds)
        cpu = proc.cpu_percent(None)
        stop.set()
        await asyncio.gather(*tasks)
        return cpu

    t0 = time.perf_counter()
    cpu_pct = asyncio.run(main())
    elapsed = time.perf_counter() - t0
    for rt in runtimes:
        rt.flush(30)
    drainer.flush(60)
    rss_mb = proc.memory_info().rss / 2**20

    lat = np.array([x for rt in runtimes for x in rt.latencies_ms])
    commit_ms = np.array(commits) * 1000
    decisions = {k: sum(rt.counts[k] for rt in runtimes) for k in ("ok", "at_risk", "not_scored")}
    n_parts = sum(decisions.values())
    with store.engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(schema.predictions)
                              .where(schema.predictions.c.line_id.in_(lines))).scalar()
        shadow_ms = [r[0] for r in conn.execute(select(schema.shadow_scores.c.challenger_ms)
                                                .where(schema.shadow_scores.c.line_id.in_(lines)))]
    samples = sum(rt.rings.samples_total for rt in runtimes)

    # Baseline: the decision is only "made" once committed synchronously to the store. Each part is
    # the line's last real cycle again, so it is scored like the parts above (a window the samples
    # have left would fail the model's drift check and skip the scorer).
    base_lat = []
    rt = runtimes[0]
    base_start_ns, base_end_ns = last_cycle.get(rt.line_id, (time.time_ns() - int(cycle_s * 1e9), time.time_ns()))
    for i in range(min(200, max(50, n_parts))):
        ev = PartEvent(f"base-{i}", base_start_ns, base_end_ns, time.perf_counter(), dict(_CONTEXT))
        saved, rt.sink = rt.sink, None
        d = rt.on_part(ev)
        rt.sink = saved
        row = dict(d.prediction, id=str(uuid.uuid4()))
        with store.engine.begin() as conn:
            conn.execute(insert_ignore(store, schema.predictions, ["id", "decided_at"]), [row])
        base_lat.append((time.perf_counter() - ev.received_s) * 1000)
    base_p99 = _pct(base_lat, 99)
    ours_p99 = _pct(lat, 99)
    p99_off, p99_on = _pct(split[False], 99), _pct(split[True], 99)
    dropped_total = dropped["queue"] + sum(rt.spool_dropped for rt in runtimes) + spool.stats().get("dropped_records", 0)
    for rt in runtimes:
        rt.close()
    drainer.stop(10)
    spool.close()
    return {
        "suite": "edge", "lines": n_lines, "tags": n_tags, "hz": hz, "duration_s": round(elapsed, 1),
        "samples_per_s": round(samples / elapsed, 1), "parts": n_parts, "at_risk": decisions["at_risk"],
        "not_scored": decisions["not_scored"],
        "decision_p50_ms": _pct(lat, 50), "decision_p99_ms": ours_p99, "decision_max_ms": _pct(lat, 100),
        "commit_p50_ms": _pct(commit_ms, 50), "commit_p99_ms": _pct(commit_ms, 99),
        "stored_predictions": stored, "loss": n_parts - stored + expected_shadow[0] - len(shadow_ms),
        "dropped": dropped_total,
        "p99_ms": p99_off, "p99_ms_with_shadow": p99_on, "p50_ms": _pct(split[False], 50),
        "p50_ms_with_shadow": _pct(split[True], 50), "parts_with_shadow": len(split[True]),
        "shadow_p99_change_pct": round((p99_on - p99_off) / p99_off * 100.0, 1) if p99_on and p99_off else 0.0,
        "shadow_scores": len(shadow_ms), "challenger_p99_ms": _pct(shadow_ms, 99) if shadow_ms else 0.0,
        "cpu_pct": round(cpu_pct, 1), "rss_mb": round(rss_mb, 1),
        "baseline_sync_commit_unloaded_p99_ms": base_p99,
        "store": store.dialect,
    }
