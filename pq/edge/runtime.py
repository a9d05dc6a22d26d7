"""The per-line edge runtime: samples in, one decision per part out, in memory, within milliseconds.

Owns :class:`LineRuntime`: samples from the connector's in-memory stream go into per-tag ring
buffers and the streaming feature path; at each cycle-complete notification the part's vector is
computed, checked (stale, Bad, outside the model's training range -> ``not_scored`` with a plain
reason, no alert), scored by the production model, turned into an explained alert by the alarm
discipline, published to the outputs, and only then appended to the durable spool. The database
is never on this path: operator actions, the playbook, KPIs and health are read and written by a
housekeeping task through worker threads.

Takes small interfaces (``pq/edge/interfaces.py``); must not import connectors, models, ui or
simulators. The composition roots are ``pq/edge/cli.py`` and ``pq/edge/bench.py``.

Example::

    rt = LineRuntime("line-1", scorers=watcher, feature_factory=make_features, sink=spool,
                     outputs=[mqtt], playbook=PlaybookLoader(), settings=settings, store=store)
    await rt.run(source)            # or rt.handle(batch) batch by batch (tests, benchmark)
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from sqlalchemy import select

from pq.alerts.discipline import OPEN_STATES, AlarmBoard, Change
from pq.alerts.explain import explain_contributions, fmt_reading, title_for
from pq.alerts.playbook import PlaybookLoader
from pq.config import Settings
from pq.edge.interfaces import PartEvent, Sample, is_bad
from pq.edge.metrics import EdgeMetrics
from pq.errors import PQError
from pq.edge.ringbuffer import TagRings

__all__ = ["LineRuntime", "Decision", "STATES"]

logger = logging.getLogger(__name__)

STATES = ("scoring", "degraded", "no_model", "stopped")
_NS = 1_000_000_000


@dataclass
class Decision:
    prediction: dict
    changes: list[Change] = field(default_factory=list)
    latency_ms: float = 0.0

    @property
    def decision(self) -> str:
        return self.prediction["decision"]


def _feature_names(fc: Any) -> list[str]:
    names = getattr(fc, "feature_names", None)
    if names is None:
        names = fc.feature_set.feature_names
    return list(names)


def _key_tags(fc: Any) -> list[str]:
    fs = getattr(fc, "feature_set", None)
    if fs is not None and getattr(fs, "tags", None):
        return list(fs.tags)
    return sorted({n.split("__")[0] for n in _feature_names(fc)})


_NUMBER = re.compile(r"[-+]?\d[\d.,]*(?:e[-+]?\d+)?")


def _reason_key(reason: str | None) -> str:
    """A reason without its numbers: what kind of trouble it is."""
    return _NUMBER.sub("#", reason or "")


def _ns_to_dt(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / _NS, tz=timezone.utc)


class LineRuntime:
    """One line's decisions. Single-threaded: call ``handle`` / ``run`` from one event loop."""

    def __init__(self, line_id: str, *, scorers: Any, feature_factory: Callable[[Any], Any], sink: Any,
                 settings: Settings, outputs: Sequence[Any] = (), playbook: PlaybookLoader | None = None,
                 store: Any = None, metrics: EdgeMetrics | None = None, station: str | None = None,
                 key_signals: Sequence[str] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.line_id = line_id
        self.station = station
        self.scorers = scorers
        self.feature_factory = feature_factory
        self.sink = sink
        self.settings = settings
        self.outputs = list(outputs)
        self.playbook = playbook or PlaybookLoader(settings.edge_playbook_file)
        self.store = store
        self.metrics = metrics
        self.key_signals = list(key_signals) if key_signals else None
        self.clock = clock
        self.rings = TagRings(settings.edge_ring_capacity)
        self.board = AlarmBoard(line_id, flood_limit=settings.edge_flood_limit,
                                flood_window_s=settings.edge_flood_window_s,
                                clear_after_ok=settings.edge_clear_after_ok_parts)
        self._computers: dict[tuple, Any] = {}
        self._outbox: queue.Queue = queue.Queue(maxsize=10_000)  # record batches for the spool writer thread
        self._writer: threading.Thread | None = None
        self._last_cycle_end_ns: int | None = None
        self.connection_state: dict | None = None
        self.state = "no_model"
        self.state_reason = "starting: no part decided yet"
        self._state_event_id: str | None = None
        self._ev_start: datetime | None = None
        self._state_since = clock()
        self.counts = {"ok": 0, "at_risk": 0, "not_scored": 0}
        self.sink_errors = 0
        self._sink_error_logged = False
        self.latencies_ms: deque[float] = deque(maxlen=2048)
        self.last_serial: str | None = None
        self._published_failures: dict[str, int] = {}
        self._busy: set[str] = set()

    # ------------------------------------------------------------------ input
    def handle(self, items: Iterable[Any]) -> list[Decision]:
        """One batch from the source: push every sample first, then decide the parts in it.

        Samples of the same notification batch as the cycle-complete event belong to that cycle,
        so they are buffered before its vector is computed.
        """
        parts = []
        loose: list[Sample] = []
        for item in items:
            if isinstance(item, PartEvent):
                parts.append(item)
            elif isinstance(item, Sample):
                loose.append(item)
            elif hasattr(item, "ts_us") and hasattr(item, "tags"):
                self._push_batch(item)
            else:
                raise TypeError(f"edge source item: expected Sample, PartEvent or SampleBatch, got {type(item).__name__}")
        if loose:
            self._push_samples(loose)
        return [self.on_part(ev) for ev in parts]

    def _push_tag(self, tag: str, ts_ns: np.ndarray, values: np.ndarray, statuses: np.ndarray, now_s: float) -> None:
        self.rings.push(tag, ts_ns, values, statuses, now_s)
        for fc in self._computers.values():
            fc.push_many(tag, ts_ns, values, statuses)

    def _push_batch(self, batch: Any) -> None:
        n = len(batch.tag)
        if n == 0:
            return
        now_s = time.perf_counter()
        order = np.argsort(batch.tag, kind="stable")
        tag_sorted = batch.tag[order]
        cuts = np.flatnonzero(np.diff(tag_sorted)) + 1
        ts_ns = batch.ts_us[order].astype(np.int64) * 1000
        val = batch.value[order]
        st = batch.status[order].astype(np.int64)
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, n]):
            line_id, name = batch.tags[int(tag_sorted[lo])]
            if line_id != self.line_id:
                continue
            self._push_tag(name, ts_ns[lo:hi], val[lo:hi], st[lo:hi], now_s)
        if self.metrics is not None:
            self.metrics.samples.labels(self.line_id).inc(n)

    def _push_samples(self, samples: list[Sample]) -> None:
        now_s = time.perf_counter()
        by_tag: dict[str, list[Sample]] = {}
        for s in samples:
            by_tag.setdefault(s.tag, []).append(s)
        for tag, rows in by_tag.items():
            self._push_tag(tag, np.fromiter((r.ts_ns for r in rows), np.int64, len(rows)),
                           np.fromiter((r.value for r in rows), np.float64, len(rows)),
                           np.fromiter((r.status for r in rows), np.int64, len(rows)), now_s)
        if self.metrics is not None:
            self.metrics.samples.labels(self.line_id).inc(len(samples))

    # ------------------------------------------------------------------ features
    def _computer_for(self, scorer: Any, until_ns: int | None = None) -> Any:
        baseline = getattr(scorer, "baseline", None)
        key = (getattr(scorer, "feature_set_version", None), id(baseline))
        fc = self._computers.get(key)
        if fc is None:
            fc = self.feature_factory(scorer)
            # Replay each tag's recent past from its own latest stamp: a window common to all tags
            # would be thrown off by one tag whose server clock differs (initial values, a gateway).
            # ``until_ns``: the end of the part about to be decided. When decisions lag the samples
            # (a busy machine; compressed time), the newest stamp is well past that part, and a
            # span back from it would miss the start of the part's window: reach back from the part.
            span = int(self.settings.edge_feature_capacity_s * _NS)
            replayed = 0
            for tag in self.rings.tags():
                last = self.rings.state(tag).last_ts_ns
                if until_ns is not None:
                    last = min(last, until_ns)
                ts, val, st = self.rings.window(tag, last - span)
                if ts.size:
                    fc.push_many(tag, ts, val, st)
                    replayed += int(ts.size)
            if len(self._computers) >= 3:  # old feature sets of retired models: bounded memory
                self._computers.pop(next(iter(self._computers)))
            self._computers[key] = fc
            logger.info("line %s: feature set %s ready (%d samples replayed)", self.line_id, key[0], replayed)
        return fc

    def warm_up(self) -> float:
        """Compile the feature kernels and build the current model's feature computer before the first
        part (the first Numba call costs seconds). Returns the seconds it took."""
        t0 = time.perf_counter()
        from pq.features import warmup

        warmup(batch=False)  # the streaming kernels only: the edge never runs the batch path
        scorer = self.scorers.scorer_for(None)
        if scorer is not None:
            try:
                fc = self._computer_for(scorer)
                fc.vector(0, _NS, {})
                scorer.score({n: 0.0 for n in scorer.feature_names}, {}, explain=True)
            except PQError as exc:
                logger.warning("line %s: warm-up of model %s failed: %s", self.line_id,
                               getattr(scorer, "version_id", None), exc)
        return time.perf_counter() - t0

    def _label(self, signal: str) -> str:
        return self.playbook.current.label_for(signal)

    def _signal_problems(self, tags: Sequence[str], cycle_start_ns: int, cycle_end_ns: int) -> list[str]:
        """Key signals that make a score untrustworthy at this cycle end, in plain words."""
        problems = []
        stale_ns = int(self.settings.edge_stale_s * _NS)
        # The part under way when the edge (re)started, or when a sensor came back, has only the
        # end of its window: its statistics would look like drift. Say what it is instead.
        late = [t for t in tags if (st := self.rings.state(t)) is not None and st.first_good_ns > cycle_start_ns]
        if late:
            problems.append("incomplete cycle: no good value of " + ", ".join(self._label(t) for t in late[:4])
                            + (f" and {len(late) - 4} more" if len(late) > 4 else "")
                            + " before it began (edge just started, or the sensor just recovered)")
        for tag in tags:
            st = self.rings.state(tag)
            if st is None:
                problems.append(f"{self._label(tag)} sensor: no value received yet")
            elif st.last_good_ns == 0 or cycle_end_ns - st.last_good_ns > stale_ns:
                age = (cycle_end_ns - st.last_good_ns) / _NS if st.last_good_ns else None
                problems.append(f"{self._label(tag)} sensor: no good value for "
                                f"{'ever' if age is None else f'{age:.0f} s'}")
            elif is_bad(st.last_status):
                problems.append(f"{self._label(tag)} sensor reports Bad quality")
        return problems

    def _drift(self, scorer: Any, vec: Mapping[str, float]) -> list[str]:
        ranges = getattr(scorer, "feature_ranges", None)
        if not ranges:
            return []
        m = self.settings.edge_drift_margin
        out, frozen = [], set()
        # A reading that never moved during the cycle, where training always saw it move, is a stuck
        # sensor (or a frozen gateway value): say that, not "std is 0, outside the training range".
        moving = getattr(scorer, "moving_signals", frozenset())  # moved in every training cycle
        for name, x in vec.items():
            if not name.endswith("__std") or x != 0.0:
                continue
            sig = name[: -len("__std")]
            lo = (ranges.get(name) or (None, None))[0]
            if (lo is not None and lo > 0) or sig in moving:
                frozen.add(sig)
                out.append(f"{self._label(sig)} reading did not change during the cycle (stuck sensor?)")
        for name, (lo, hi) in ranges.items():
            x = vec.get(name)
            if x is None or lo is None or hi is None or not math.isfinite(x) or name.split("__")[0] in frozen:
                continue
            span = max(hi - lo, abs(hi) * 1e-6, 1e-12)
            if x < lo - m * span or x > hi + m * span:
                sig = name.split("__")[0]
                r = fmt_reading(x, lo, hi)  # one precision for the value and the range
                out.append(f"{self._label(sig)} ({name}) is {r.value}, outside what the model was trained on "
                           f"({r.lo} to {r.hi})")
        return out

    # ------------------------------------------------------------------ connector listener
    def on_samples(self, batch: Any) -> None:
        """``connectors`` Listener hook: a notification burst's SampleBatch (called in its event loop)."""
        self._push_batch(batch)

    def on_state(self, connection: str, state: str, detail: dict) -> None:
        """``connectors`` Listener hook: the connection's state shows in this line's status."""
        self.connection_state = {"connection": connection, "state": state}

    def part_event(self, part: Mapping[str, Any], received_s: float | None = None) -> PartEvent | None:
        """A connector part dict (line_id, serial, cycle_start, cycle_end, product, material_lot, shift,
        context) as a PartEvent; None for another line's part."""
        if part.get("line_id", self.line_id) != self.line_id:
            return None
        from pq.features.streaming import ts_to_ns

        end_ns = ts_to_ns(part["cycle_end"])
        start = part.get("cycle_start")
        start_ns = ts_to_ns(start) if start is not None else (self._last_cycle_end_ns or end_ns)
        ctx = {k: v for k, v in dict(part.get("context") or {}).items()}
        for k in ("product", "material_lot", "shift", "station"):
            if part.get(k) is not None:
                ctx[k] = part[k]
        return PartEvent(str(part["serial"]), start_ns, end_ns,
                         time.perf_counter() if received_s is None else received_s, ctx)

    # ------------------------------------------------------------------ decision
    def on_part(self, ev: PartEvent | Mapping[str, Any]) -> Decision | None:
        """Decide one part (a PartEvent, or a connector part dict as the Listener hook)."""
        if not isinstance(ev, PartEvent):
            ev = self.part_event(ev)
            if ev is None:
                return None
        try:
            return self._decide(ev)
        finally:
            self._last_cycle_end_ns = ev.cycle_end_ns

    def _decide(self, ev: PartEvent) -> Decision:
        now = self.clock()
        ctx = dict(ev.context)
        not_good_ctx = ctx.pop("_not_good", None) or []
        if ctx.get("station") is None:
            ctx["station"] = self.station
        product = ctx.get("product")
        pred = {"id": str(uuid.uuid4()), "decided_at": now, "line_id": self.line_id, "serial": ev.serial,
                "model_version_id": None, "feature_set_version": None, "score": None, "threshold": None,
                "decision": "not_scored", "reason": None, "contributions": None, "latency_ms": None}
        records: list[tuple[str, dict]] = []
        changes: list[Change] = []
        state, reason = "scoring", ""
        fc = s = None
        scorer = self.scorers.scorer_for(product)
        if scorer is None:
            state = "no_model"
            reason = f"No model in production for line {self.line_id}" + (f", product {product}" if product else "")
        else:
            pred["model_version_id"] = getattr(scorer, "version_id", None)
            pred["feature_set_version"] = getattr(scorer, "feature_set_version", None)
            try:
                fc = self._computer_for(scorer, until_ns=ev.cycle_end_ns)
            except PQError as exc:  # the model needs a feature set this edge cannot compute
                fc, state, reason = None, "no_model", f"Model {pred['model_version_id']} cannot be served here: {exc}"
        if scorer is not None and fc is not None:
            tags = self.key_signals or _key_tags(fc)
            problems = self._signal_problems(tags, ev.cycle_start_ns, ev.cycle_end_ns)
            if not_good_ctx:
                problems.append(f"context signal(s) {', '.join(self._label(n) for n in not_good_ctx)} have Bad quality")
            x, freason = fc.vector(ev.cycle_start_ns, ev.cycle_end_ns, ctx)
            names = _feature_names(fc)
            vec = dict(zip(names, x.tolist()))
            records.append(("part_features", self._features_record(ev, ctx, pred["feature_set_version"], vec, freason, now)))
            if not problems:
                problems = self._drift(scorer, vec)
            if problems:
                state, reason = "degraded", "; ".join(problems)
            else:
                try:
                    s = scorer.score(vec, ctx, explain=None)
                except PQError as exc:
                    s, state, reason = None, "degraded", f"Scoring failed: {exc}"
            if not problems and s is not None:
                unseen = [f.split(":", 1)[1] for f in getattr(s, "flags", ()) if f.startswith("nan_unseen:")]
                if unseen:
                    missing = sorted({self._label(n.split("__")[0]) for n in unseen})
                    state, reason = "degraded", f"No value for {', '.join(missing)} in this cycle" + \
                        (f" ({freason})" if freason else "")
                else:
                    pred["score"], pred["threshold"] = float(s.probability), float(s.threshold)
                    pred["decision"] = "at_risk" if s.at_risk else "ok"
                    if s.at_risk:
                        changes = self._alert(ev, ctx, s, pred, now)
                        pred["contributions"] = changes[0].alert.get("explanation") if changes else None
                    else:
                        changes = self.board.on_scored(now, ())
        if pred["decision"] == "not_scored":
            pred["reason"] = reason
        self._publish(changes)
        for out in self.outputs:
            out.on_decision({**pred, "station": ctx.get("station"), "product": product,
                             "material_lot": ctx.get("material_lot"), "shift": ctx.get("shift")})
        latency_ms = (time.perf_counter() - ev.received_s) * 1000.0
        pred["latency_ms"] = latency_ms
        # The decision exists and is published; only now is it handed to the spool.
        records.insert(0, ("prediction", pred))
        for ch in changes:
            if ch.write_alert:
                records.append(("alert", ch.alert))
            if ch.event_row:
                records.append(("alert_event", ch.event_row))
        self._spool(records)
        self.counts[pred["decision"]] += 1
        self.latencies_ms.append(latency_ms)
        self.last_serial = ev.serial
        self._set_state(state, reason if state != "scoring" else "")
        if self.metrics is not None:
            self.metrics.decision_latency.labels(self.line_id).observe(latency_ms / 1000.0)
            self.metrics.decisions.labels(self.line_id, pred["decision"]).inc()
        return Decision(pred, changes, latency_ms)

    def _alert(self, ev: PartEvent, ctx: Mapping[str, Any], s: Any, pred: dict, now: datetime) -> list[Change]:
        pb = self.playbook.current
        top = explain_contributions(getattr(s, "contributions", ()) or (), pb, top_n=3)
        signal = top[0]["signal"] if top else None
        cause = pb.cause_for(signal) if signal else "model"
        action_ctx = {**ctx, "serial": ev.serial, "line_id": self.line_id}
        if top:
            r = fmt_reading(top[0]["value"], top[0]["normal_lo"], top[0]["normal_hi"])  # as in the title
            action_ctx.update(value=r.value, normal_lo=r.lo, normal_hi=r.hi)
        action = pb.action_for(signal or "", top[0]["direction"] if top else None, action_ctx)
        severity = "high" if s.probability >= pb.severity_high else "medium"
        changes = self.board.on_at_risk(
            cause, now, severity=severity, title=title_for(ev.serial, float(s.probability), top, pb.label_for(cause)),
            serial=ev.serial, station=ctx.get("station"), product=ctx.get("product"),
            material_lot=ctx.get("material_lot"), shift=ctx.get("shift"), score=float(s.probability),
            action=action, explanation=top, model_version_id=pred["model_version_id"])
        return changes + self.board.on_scored(now, {cause})

    def _features_record(self, ev: PartEvent, ctx: Mapping[str, Any], fsv: str | None, vec: Mapping[str, float],
                         reason: str, now: datetime) -> dict:
        plain = {k: v for k, v in ctx.items() if isinstance(v, (str, int, float, bool)) or v is None}
        return {"line_id": self.line_id, "serial": ev.serial, "cycle_start": _ns_to_dt(ev.cycle_start_ns),
                "cycle_end": _ns_to_dt(ev.cycle_end_ns), "product": ctx.get("product"),
                "material_lot": ctx.get("material_lot"), "shift": ctx.get("shift"), "context": plain,
                "feature_set_version": fsv or "unknown",
                "features": {k: (v if math.isfinite(v) else None) for k, v in vec.items()},
                "reason": reason, "computed_at": now}

    # ------------------------------------------------------------------ effects
    def _publish(self, changes: Iterable[Change]) -> None:
        for ch in changes:
            if not ch.publish:
                continue
            for out in self.outputs:
                out.on_alert(ch.event, ch.alert)

    def _spool(self, records: list[tuple[str, dict]]) -> None:
        """Hand records to the spool writer thread: an fsync must never stall the event loop."""
        if self.sink is None or not records:
            return
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name=f"pq-edge-spool-{self.line_id}", daemon=True)
            self._writer.start()
        try:
            self._outbox.put_nowait(records)
        except queue.Full:
            self.sink_errors += len(records)
            if not self._sink_error_logged:
                logger.error("line %s: spool writer %d batches behind; dropping records (counted) - the spool "
                             "disk is too slow or failing", self.line_id, self._outbox.maxsize)
                self._sink_error_logged = True

    def _write_loop(self) -> None:
        backoff = 0.1
        while True:
            batch = self._outbox.get()
            if batch is None:
                self._outbox.task_done()
                return
            records, n_batches = list(batch), 1
            while len(records) < 500:
                try:
                    more = self._outbox.get_nowait()
                except queue.Empty:
                    break
                n_batches += 1
                if more is None:
                    self._outbox.put(None)  # keep the stop marker for the next round
                    self._outbox.task_done()
                    n_batches -= 1
                    break
                records.extend(more)
            while True:
                try:
                    if hasattr(self.sink, "append_many"):
                        self.sink.append_many(records)
                    else:
                        for kind, payload in records:
                            self.sink.append(kind, payload)
                    if self._sink_error_logged:
                        logger.info("line %s: spool accepts records again", self.line_id)
                        self._sink_error_logged = False
                    backoff = 0.1
                    break
                except Exception as exc:  # noqa: BLE001 - spool full or disk trouble: keep the records, retry, say so once
                    if not self._sink_error_logged:
                        logger.error("line %s: cannot spool %d records (%s: %s); retrying, decisions are still "
                                     "published", self.line_id, len(records), type(exc).__name__, exc)
                        self._sink_error_logged = True
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
            for _ in range(n_batches):
                self._outbox.task_done()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every decision handed over so far is in the spool."""
        deadline = time.monotonic() + timeout_s
        while self._outbox.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._outbox.unfinished_tasks

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the spool writer after flushing (state 'stopped' is written first)."""
        if self._writer is not None:
            self._outbox.put(None)
            self._writer.join(timeout_s)
            self._writer = None

    def _set_state(self, state: str, reason: str) -> None:
        if state == self.state and (state == "scoring" or reason == self.state_reason):
            return
        now = self.clock()
        old, old_reason = self.state, self.state_reason
        self.state, self.state_reason, self._state_since = state, reason, now
        if state == "scoring":
            logger.info("line %s: scoring again (was %s: %s)", self.line_id, old, old_reason)
        elif old != state or _reason_key(reason) != _reason_key(old_reason):
            logger.warning("line %s: %s: %s", self.line_id, state.replace("_", " "), reason)
        else:  # the same trouble with other numbers (each part's drift value): once is enough at warning
            logger.debug("line %s: still %s: %s", self.line_id, state, reason)
        records = []
        if self._state_event_id is not None and (state == "scoring" or old != state):
            records.append(("line_event", {"id": self._state_event_id, "line_id": self.line_id,
                                           "source": f"edge:{self.line_id}", "kind": old, "started_at": self._ev_start,
                                           "ended_at": now, "detail": {"reason": old_reason}}))
            self._state_event_id = None
        if state != "scoring" and self._state_event_id is None:
            self._state_event_id, self._ev_start = str(uuid.uuid4()), now
            records.append(("line_event", {"id": self._state_event_id, "line_id": self.line_id,
                                           "source": f"edge:{self.line_id}", "kind": state, "started_at": now,
                                           "ended_at": None, "detail": {"reason": reason}}))
        records.append(("health", self.health_record()))
        self._spool(records)

    # ------------------------------------------------------------------ status
    def latency_percentiles(self) -> dict:
        if not self.latencies_ms:
            return {"p50_ms": None, "p99_ms": None}
        arr = np.fromiter(self.latencies_ms, float)
        return {"p50_ms": round(float(np.percentile(arr, 50)), 2), "p99_ms": round(float(np.percentile(arr, 99)), 2)}

    def status(self) -> dict:
        """What the UI shows about this line's edge, in plain words plus numbers."""
        now_s = time.perf_counter()
        fresh = {}
        for tag in self.rings.tags():
            st = self.rings.state(tag)
            fresh[tag] = None if not st.last_good_arrival_s else round(now_s - st.last_good_arrival_s, 1)
        spool_depth = None
        if self.sink is not None and hasattr(self.sink, "depth"):
            try:
                spool_depth = self.sink.depth()
            except Exception as exc:  # noqa: BLE001 - status must render even if the spool file is unreadable
                spool_depth = f"unknown ({exc})"
        outputs = {}
        for out in self.outputs:
            outputs[getattr(out, "name", type(out).__name__)] = out.status()
        model = self.scorers.status() if hasattr(self.scorers, "status") else {}
        return {"state": self.state, "reason": self.state_reason, "since": self._state_since.isoformat(),
                "freshness_s": fresh, "model": model, "model_version_id": model.get("model_version_id"),
                "spool_depth": spool_depth, "spool_errors": self.sink_errors, "outputs": outputs,
                "output_failures": sum(int(o.get("failures", 0)) for o in outputs.values()),
                "playbook": {"source": self.playbook.current.source, "error": self.playbook.error},
                "decisions": dict(self.counts), "latency": self.latency_percentiles(),
                "alerts": self.board.counts(), "flooding": self.board.flooding, "last_serial": self.last_serial,
                "samples": self.rings.samples_total, "ring_fill": round(self.rings.fill(), 3)}

    def health_record(self) -> dict:
        return {"component": f"edge:{self.line_id}", "line_id": self.line_id, "state": self.state,
                "detail": self.status(), "updated_at": self.clock()}

    # ------------------------------------------------------------------ housekeeping
    def tick(self) -> list[Change]:
        """Time-driven work that touches no database: alarm timers, line freshness, metrics."""
        now = self.clock()
        changes = self.board.tick(now)
        self._publish(changes)
        self._spool([(k, v) for ch in changes for k, v in
                     ((("alert", ch.alert),) + ((("alert_event", ch.event_row),) if ch.event_row else ()))])
        # Between parts, a sensor that went silent must show on the status now, not at the next part.
        if self.state == "scoring" and self._computers:
            fc = next(reversed(self._computers.values()))
            tags = self.key_signals or _key_tags(fc)
            now_s = time.perf_counter()
            stale = [t for t in tags if self.rings.state(t) is None or
                     now_s - self.rings.state(t).last_good_arrival_s > self.settings.edge_stale_s]
            if stale:
                self._set_state("degraded", "; ".join(f"{self._label(t)} sensor: no good value for "
                                                       f"{self.settings.edge_stale_s:.0f} s" for t in stale))
        if self.metrics is not None:
            m, line = self.metrics, self.line_id
            m.ring_fill.labels(line).set(self.rings.fill())
            for st, n in self.board.counts().items():
                m.alerts.labels(line, st).set(n)
            m.scoring_state.labels(line).set(1 if self.state == "scoring" else 0)
            mv = (self.scorers.status() if hasattr(self.scorers, "status") else {}).get("model_version_id")
            m.model_version.labels(line).set(mv or 0)
            if self.sink is not None and hasattr(self.sink, "depth"):
                try:
                    m.spool_depth.labels(line).set(self.sink.depth())
                except Exception as exc:  # noqa: BLE001 - a metric must not stop the loop
                    logger.debug("spool depth unavailable: %s", exc)
            for out in self.outputs:
                st = out.status()
                name = getattr(out, "name", type(out).__name__)
                new = int(st.get("failures", 0)) - self._published_failures.get(name, 0)
                if new > 0:
                    m.output_failures.labels(line, name).inc(new)
                    self._published_failures[name] = int(st.get("failures", 0))
                m.output_dropped.labels(line, name).set(int(st.get("dropped", 0)))
        return changes

    def load_open_alerts(self) -> int:
        """At start-up (worker thread): adopt this line's open alerts from the store."""
        from pq.storage import schema

        if self.store is None:
            return 0
        t = schema.alerts
        with self.store.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(
                select(t).where(t.c.line_id == self.line_id, t.c.state.in_(OPEN_STATES)))]
        return self.board.load(rows)

    def _read_operator_rows(self) -> list[dict]:
        from pq.storage import schema

        ids = [a.id for a in self.board.open_alerts()]
        if not ids or self.store is None:
            return []
        t = schema.alerts
        with self.store.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(t).where(t.c.id.in_(ids)))]

    def apply_operator_rows(self, rows: list[dict]) -> list[Change]:
        changes = self.board.merge_stored(rows, self.clock())
        self._publish(changes)
        return changes

    async def _in_thread(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run store work in a thread, one at a time per job, so a hung database never piles up threads."""
        if name in self._busy:
            return None
        self._busy.add(name)
        try:
            return await asyncio.to_thread(fn)
        except Exception as exc:  # noqa: BLE001 - store trouble is reported by the spool/health; here logged at debug
            logger.debug("line %s: %s skipped: %s", self.line_id, name, exc)
            return None
        finally:
            self._busy.discard(name)

    async def housekeeping(self, stop: asyncio.Event) -> None:
        from pq.alerts.kpis import refresh_kpis

        s = self.settings
        last = {"health": 0.0, "sync": 0.0, "playbook": 0.0, "kpi": 0.0, "load": 0.0}
        adopted = False
        while not stop.is_set():
            t = time.monotonic()
            # The store may come up after the edge (it scores from a local model copy meanwhile):
            # open alerts of an earlier run are adopted once it answers.
            if not adopted and self.store is not None and t - last["load"] >= s.edge_alert_sync_s:
                last["load"] = t
                n = await self._in_thread("load", self.load_open_alerts)
                if n is not None:
                    adopted = True
                    if n:
                        logger.info("line %s: %d open alerts adopted from the store", self.line_id, n)
            self.tick()
            if t - last["health"] >= s.edge_health_interval_s:
                last["health"] = t
                self._spool([("health", self.health_record())])
            if self.store is not None and t - last["sync"] >= s.edge_alert_sync_s:
                last["sync"] = t
                rows = await self._in_thread("sync", self._read_operator_rows)
                if rows:
                    self.apply_operator_rows(rows)
            if t - last["playbook"] >= s.edge_playbook_poll_s:
                last["playbook"] = t
                await self._in_thread("playbook", self.playbook.reload)
            if self.store is not None and t - last["kpi"] >= s.edge_kpi_interval_s:
                last["kpi"] = t
                asyncio.ensure_future(self._in_thread("kpi", lambda: refresh_kpis(self.store, self.line_id,
                                                                                   self.clock())))
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass

    async def run(self, source: Any, stop: asyncio.Event | None = None) -> None:
        """Consume the source until it ends or ``stop`` is set; housekeeping runs alongside."""
        stop = stop or asyncio.Event()
        hk = asyncio.create_task(self.housekeeping(stop))
        try:
            async for batch in source:
                self.handle(batch)
                if stop.is_set():
                    break
        finally:
            stop.set()
            await asyncio.gather(hk, return_exceptions=True)
            self._set_state("stopped", "edge runtime stopped")
            self.close()
