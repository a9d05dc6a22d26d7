"""The per-line edge runtime: samples in, one decision per part out, in memory, within milliseconds.

Owns :class:`LineRuntime`: samples from the connector's in-memory stream go into per-tag ring
buffers and the streaming feature path; at each cycle-complete notification the part's vector is
computed, checked (stale, Bad, outside the model's training range -> ``not_scored`` with a plain
reason, no alert), scored by the production model and decided, published to the outputs, and
only then appended to the durable spool. Two decisions (``PQ_EDGE_DECISIONS=two``, the default): a
part at or above the model's diversion threshold is diverted (``at_risk``, ``divert`` in the outputs'
payload) and pages nobody; an explained operator alarm is raised by the alarm discipline for an
episode of such parts with one cause (``pq/alerts/episodes.py``). ``single``: every part above the
alert threshold is at risk and alerts. The database
is never on this path: the spool writer thread (``spool_writer.py``) takes the records, and operator
actions, the playbook and health are read and written by the housekeeper (``housekeeping.py``).
The checks live in ``checks.py``, the line's state and its line events in ``line_state.py``, alarm
owners and escalation in ``duty.py``, the scores paused by a change of the line's server (a tag's unit,
type or range; ``on_source_change``) in ``source_changes.py``.
Shadow (champion / challenger): after production's decision is published and its latency taken,
the version in shadow (``ScorerProvider.challenger_for``) scores the same served vector and a
``shadow_score`` record goes to the spool with both models' decisions (``shadow.py``); a challenger
that raises or returns NaN is retired at this edge with a line event, production untouched.

Takes the small interfaces of ``pq/edge/interfaces.py``; must not import connectors, models, ui or
simulators. The composition root (``pq/cli``) hands it the concrete parts.

Example::

    rt = LineRuntime("line-1", scorers=watcher, feature_factory=make_features, sink=spool,
                     outputs=[mqtt], playbook=PlaybookLoader(), settings=settings)
    rt.handle(batch)                # a batch of Samples / SampleBatch / PartEvents; or as a connector listener

Why one file of ~600 lines: it is the decision path only (input, features, checks, score, the two
decisions, hand-over, and the challenger right after it); state, checks, duty, source pauses, the shadow
lanes, the spool writer and housekeeping already live in their own modules.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from pq.alerts.discipline import AlarmBoard, Change
from pq.alerts.episodes import EpisodeState, advance
from pq.alerts.escalation import load_rules
from pq.alerts.explain import episode_title, explain_contributions, fmt_reading, title_for
from pq.alerts.playbook import PlaybookLoader
from pq.config import Settings
from pq.edge.checks import CycleChecks
from pq.edge.duty import DutyDesk, RosterCache
from pq.edge.interfaces import FeatureComputer, FeatureFactory, Output, PartEvent, Sample, Scorer, ScorerProvider, Sink
from pq.edge.line_state import STATES, LineState
from pq.edge.metrics import EdgeMetrics
from pq.edge.shadow import ShadowFailure, ShadowLane, rebase_vector
from pq.edge.ringbuffer import TagRings
from pq.edge.source_changes import SourcePauses, signals_of
from pq.edge.spool_writer import SpoolWriter
from pq.errors import PQError
from pq.shifts import ShiftClock
from pq.spool.records import SampleBatch

__all__ = ["LineRuntime", "Decision", "STATES"]

logger = logging.getLogger(__name__)

_NS = 1_000_000_000


@dataclass
class Decision:
    prediction: dict
    changes: list[Change] = field(default_factory=list)
    latency_ms: float = 0.0

    @property
    def decision(self) -> str:
        return self.prediction["decision"]


def _ns_to_dt(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / _NS, tz=timezone.utc)


class LineRuntime:
    """One line's decisions. Single-threaded: call ``handle`` / the listener hooks from one event loop.

    ``sink`` None records nothing (a benchmark of the decision alone); ``key_signals`` overrides the
    feature set's signals as the ones whose trouble leaves a part unscored.
    """

    def __init__(self, line_id: str, *, scorers: ScorerProvider, feature_factory: FeatureFactory,
                 sink: Sink | None, settings: Settings, outputs: Sequence[Output] = (),
                 playbook: PlaybookLoader | None = None, metrics: EdgeMetrics | None = None,
                 station: str | None = None, key_signals: Sequence[str] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.line_id = line_id
        self.station = station
        self.scorers = scorers
        self.feature_factory = feature_factory
        self.sink = sink
        self.settings = settings
        self.outputs = list(outputs)
        self.playbook = playbook or PlaybookLoader(settings.edge_playbook_file)
        self.metrics = metrics
        self.key_signals = list(key_signals) if key_signals else None
        self.clock = clock
        self.rings = TagRings(settings.edge_ring_capacity)
        self.checks = CycleChecks(self.rings, settings, label=self._label)
        self.board = AlarmBoard(line_id, flood_limit=settings.edge_flood_limit,
                                flood_window_s=settings.edge_flood_window_s,
                                clear_after_ok=settings.edge_clear_after_ok_parts)
        self.line_state = LineState(line_id, clock)
        self.episodes = EpisodeState()  # the operator-alarm rule's memory (two decisions)
        # owners and escalation; the roster's local copy sits beside the model's (pq/cli/edge_process.py)
        shifts = ShiftClock.from_settings(settings)
        self.duty = DutyDesk(line_id, load_rules(settings.escalation_file),
                             RosterCache(Path(settings.data_dir) / "edge" / line_id),
                             shift_at=lambda t: shifts.shift_at(t).name)
        self.source_pauses = SourcePauses(line_id)  # signals whose meaning changed on the server
        self._writer = SpoolWriter(sink, line_id) if sink is not None else None
        self._computers: dict[tuple, FeatureComputer] = {}
        self._last_cycle_end_ns: int | None = None
        self.connection_state: dict | None = None
        self.counts = {"ok": 0, "at_risk": 0, "not_scored": 0}
        self.latencies_ms: deque[float] = deque(maxlen=2048)
        self.last_serial: str | None = None
        self._served: tuple | None = None  # (scorer, vector, score) of the part being decided, for the shadow
        self._lanes: dict[str, ShadowLane] = {}  # "production" / "challenger" -> lane of the current version
        self.shadow_counts = {"scored": 0, "failed": 0}

    @property
    def state(self) -> str:
        return self.line_state.state

    @property
    def state_reason(self) -> str:
        return self.line_state.reason

    @property
    def spool_dropped(self) -> int:
        """Decision records dropped because the spool writer was too far behind (counted, logged)."""
        return self._writer.dropped if self._writer is not None else 0

    # ------------------------------------------------------------------ input
    def handle(self, items: Iterable[Sample | SampleBatch | PartEvent]) -> list[Decision]:
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
            elif isinstance(item, SampleBatch):
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

    def _push_batch(self, batch: SampleBatch) -> None:
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
    def _computer_for(self, scorer: Scorer, until_ns: int | None = None) -> FeatureComputer:
        key = (scorer.feature_set_version, id(scorer.baseline))
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
                logger.warning("line %s: warm-up of model %s failed: %s", self.line_id, scorer.version_id, exc)
        challenger = getattr(self.scorers, "challenger_for", lambda _p: None)(None)
        if challenger is not None:  # its first predict costs milliseconds too: not on the first shadow part
            try:
                challenger.score({n: 0.0 for n in challenger.feature_names}, {}, explain=True)
            except PQError as exc:
                logger.warning("line %s: warm-up of challenger %s failed: %s", self.line_id, challenger.version_id, exc)
        return time.perf_counter() - t0

    def _label(self, signal: str) -> str:
        return self.playbook.current.label_for(signal)

    def _key_tags(self, fc: FeatureComputer) -> list[str]:
        return self.key_signals or list(fc.tags)

    # ------------------------------------------------------------------ connector listener
    def on_samples(self, batch: SampleBatch) -> None:
        """Connector listener hook: a notification burst's SampleBatch (called in its event loop)."""
        self._push_batch(batch)

    def on_state(self, connection: str, state: str, detail: dict) -> None:
        """Connector listener hook: the connection's state shows in this line's status."""
        self.connection_state = {"connection": connection, "state": state}

    def on_source_change(self, changes: list[dict]) -> None:
        """Connector listener hook: the server's schema changed under the map (or is back). Scores that
        depend on a changed signal pause at once; the line shows why until the server is back."""
        last = lambda tag: st.last_ts_ns if (st := self.rings.state(tag)) is not None else None  # noqa: E731
        if self.source_pauses.apply(changes, last) and self.source_pauses.paused:
            self.set_state("degraded", self.source_pauses.reason(self._label))

    def part_event(self, part: Mapping[str, Any], received_s: float | None = None) -> PartEvent | None:
        """A connector part dict (line_id, serial, cycle_start, cycle_end, product, material_lot, shift,
        context) as a PartEvent; None for another line's part."""
        if part.get("line_id", self.line_id) != self.line_id:
            return None
        from pq.features.streaming import ts_to_ns

        end_ns = ts_to_ns(part["cycle_end"])
        start = part.get("cycle_start")
        start_ns = ts_to_ns(start) if start is not None else (self._last_cycle_end_ns or end_ns)
        ctx = dict(part.get("context") or {})
        for k in ("product", "material_lot", "shift", "station"):
            if part.get(k) is not None:
                ctx[k] = part[k]
        return PartEvent(str(part["serial"]), start_ns, end_ns,
                         time.perf_counter() if received_s is None else received_s, ctx)

    # ------------------------------------------------------------------ decision
    def on_part(self, ev: PartEvent | Mapping[str, Any]) -> Decision | None:
        """Decide one part (a PartEvent, or a connector part dict as the listener hook)."""
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
        self._served = None  # set by _score for this part only
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
        state, reason = self._score(ev, ctx, not_good_ctx, pred, records, changes, now)
        if pred["decision"] == "not_scored":
            pred["reason"] = reason
        self._assign_owners(changes, ctx.get("shift"), now)
        self._publish(changes)
        for out in self.outputs:
            out.on_decision({**pred, "divert": pred["decision"] == "at_risk", "station": ctx.get("station"), "product": product,
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
        self.set_state(state, reason if state != "scoring" else "")
        if self.metrics is not None:
            self.metrics.decision_latency.labels(self.line_id).observe(latency_ms / 1000.0)
            self.metrics.decisions.labels(self.line_id, pred["decision"]).inc()
        self._shadow(ev, ctx, pred, now)  # production's decision is out and handed over: nothing of it waits
        return Decision(pred, changes, latency_ms)

    def _score(self, ev: PartEvent, ctx: dict, not_good_ctx: Sequence[str], pred: dict,
               records: list[tuple[str, dict]], changes: list[Change], now: datetime) -> tuple[str, str]:
        """Vector, checks, score and alert for one part; fills ``pred``, ``records`` and ``changes`` and
        returns the line's state and its reason."""
        product = ctx.get("product")
        scorer = self.scorers.scorer_for(product)
        if scorer is None:
            return "no_model", f"No model in production for line {self.line_id}" + (f", product {product}" if product else "")
        pred["model_version_id"] = scorer.version_id
        pred["feature_set_version"] = scorer.feature_set_version
        try:
            fc = self._computer_for(scorer, until_ns=ev.cycle_end_ns)
        except PQError as exc:  # the model needs a feature set this edge cannot compute
            return "no_model", f"Model {scorer.version_id} cannot be served here: {exc}"
        # A signal whose unit, type or range changed on the server (or that is gone) says so, not "stale".
        problems = (self.source_pauses.active and self.source_pauses.problems(
            signals_of(fc), self._label, ev.cycle_start_ns)) or self.checks.signal_problems(self._key_tags(fc), ev.cycle_start_ns, ev.cycle_end_ns)
        if not_good_ctx:
            problems.append(f"context signal(s) {', '.join(self._label(n) for n in not_good_ctx)} have Bad quality")
        x, freason = fc.vector(ev.cycle_start_ns, ev.cycle_end_ns, ctx)
        vec = dict(zip(fc.feature_names, x.tolist()))
        records.append(("part_features", self._features_record(ev, ctx, scorer.feature_set_version, vec, freason, now)))
        problems = problems or self.checks.drift(scorer, vec)
        if problems:
            return "degraded", "; ".join(problems)
        two = self.settings.edge_decisions == "two" and scorer.diversion_threshold is not None
        try:
            s = scorer.score(vec, ctx, explain=None, threshold=scorer.diversion_threshold if two else None)
        except PQError as exc:
            return "degraded", f"Scoring failed: {exc}"
        unseen = [f.split(":", 1)[1] for f in s.flags if f.startswith("nan_unseen:")]
        if unseen:
            missing = sorted({self._label(n.split("__")[0]) for n in unseen})
            return "degraded", f"No value for {', '.join(missing)} in this cycle" + (f" ({freason})" if freason else "")
        pred["score"], pred["threshold"] = float(s.probability), float(s.threshold)
        pred["decision"] = "at_risk" if s.at_risk else "ok"
        self._served = (scorer, vec, s)
        if two:
            changes.extend(self._divert(ev, ctx, s, pred, now, scorer.episode_rule))
        elif s.at_risk:
            changes.extend(self._alert(ev, ctx, s, pred, now))
            pred["contributions"] = changes[0].alert.get("explanation") if changes else None
        else:
            changes.extend(self.board.on_scored(now, ()))
        return "scoring", ""

    def _divert(self, ev: PartEvent, ctx: Mapping[str, Any], s: Any, pred: dict, now: datetime, rule) -> list[Change]:
        """Two decisions: an at-risk part is diverted (its decision, published to the outputs, pages
        nobody); an operator alarm is raised or updated only while its cause has an open episode."""
        if not s.at_risk:
            self.episodes, _, ended = advance(self.episodes, False, None, rule)
            return self._episodes_ended(ended, now) + self.board.on_scored(now, ())
        pb = self.playbook.current
        top = explain_contributions(s.contributions or (), pb, top_n=3)
        pred["contributions"] = top or None
        cause = pb.cause_for(top[0]["signal"]) if top else "model"
        self.episodes, opened, ended = advance(self.episodes, True, cause, rule)
        changes = self._episodes_ended(ended, now)
        on_board = self.board.get(cause)
        # A new episode raises an alarm; later parts update it while it is on the board. An alarm an
        # operator cleared stays cleared until its episode ends and a new one opens.
        if opened is not None or (on_board is not None and on_board.kind == "episode"):
            recent = sum(1 for _, c in self.episodes.recent if c == cause)
            return changes + self._alert(ev, ctx, s, pred, now, kind="episode", top=top, cause=cause,
                                         title=episode_title(recent, rule.n, ev.serial, top, pb.label_for(cause)))
        return changes + self.board.on_scored(now, {cause})

    def _episodes_ended(self, ended, now: datetime) -> list[Change]:
        return [ch for ep in ended for ch in self.board.on_episode_cleared(ep.cause, now)]

    def _alert(self, ev: PartEvent, ctx: Mapping[str, Any], s: Any, pred: dict, now: datetime, *,
               kind: str = "part", title: str | None = None, top: list | None = None, cause: str | None = None
               ) -> list[Change]:
        """Raise or update the alert of this part's cause (kind "part"), or of its episode (kind "episode")."""
        pb = self.playbook.current
        top = explain_contributions(s.contributions or (), pb, top_n=3) if top is None else top
        signal = top[0]["signal"] if top else None
        cause = cause or (pb.cause_for(signal) if signal else "model")
        action_ctx = {**ctx, "serial": ev.serial, "line_id": self.line_id}
        if top:
            r = fmt_reading(top[0]["value"], top[0]["normal_lo"], top[0]["normal_hi"])  # as in the title
            action_ctx.update(value=r.value, normal_lo=r.lo, normal_hi=r.hi)
        action = pb.action_for(signal or "", top[0]["direction"] if top else None, action_ctx)
        severity = "high" if s.probability >= pb.severity_high else "medium"
        changes = self.board.on_at_risk(
            cause, now, kind=kind, severity=severity,
            title=title or title_for(ev.serial, float(s.probability), top, pb.label_for(cause)),
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

    def _assign_owners(self, changes: list[Change], shift: str | None, now: datetime) -> None:
        """Newly raised alarms go to the on-duty operator of the part's shift: a lookup in memory."""
        changes.extend(self.duty.assign(self.board, changes, now, shift=shift))

    # ------------------------------------------------------------------ shadow (champion / challenger)
    def _lane(self, role: str, scorer: Scorer) -> ShadowLane:
        """The lane of ``scorer`` in ``role``; a new version starts a new lane (a fresh episode memory)."""
        lane = self._lanes.get(role)
        if lane is None or lane.scorer is not scorer:
            lane = self._lanes[role] = ShadowLane(scorer, two=self.settings.edge_decisions == "two")
        return lane

    def _shadow(self, ev: PartEvent, ctx: Mapping[str, Any], pred: dict, now: datetime) -> None:
        """Score the challenger on the vector production just decided on and record both decisions."""
        served, self._served = self._served, None
        challenger_for = getattr(self.scorers, "challenger_for", None)
        if served is None or challenger_for is None:
            return
        challenger = challenger_for(ctx.get("product"))
        if challenger is None:
            return
        scorer, vec, s = served
        lane = self._lanes.get("challenger")
        if lane is None or lane.scorer is not challenger:
            self._lanes.clear()  # a new challenger: both lanes start on the same part
        t0 = time.perf_counter()
        try:
            theirs = self._lane("challenger", challenger).decide(
                rebase_vector(vec, ctx, scorer.baseline, challenger.baseline), ctx)
            ours = self._lane("production", scorer).decide(vec, ctx, score=s)
        except Exception as exc:  # noqa: BLE001 - whatever the challenger does, production's part is decided
            self._retire_challenger(challenger, str(exc) if isinstance(exc, ShadowFailure)
                                    else f"{type(exc).__name__}: {exc}", now)
            return
        self.shadow_counts["scored"] += 1
        plain = {k: v for k, v in ctx.items() if isinstance(v, (str, int, float, bool)) or v is None}
        self._spool([("shadow_score", {
            "id": pred["id"], "decided_at": now, "line_id": self.line_id, "serial": ev.serial,
            "cycle_end": _ns_to_dt(ev.cycle_end_ns), "product": ctx.get("product"), "context": plain,
            **{f"production_{k}": v for k, v in ours.items()}, **{f"challenger_{k}": v for k, v in theirs.items()},
            "challenger_ms": (time.perf_counter() - t0) * 1000.0})])

    def _retire_challenger(self, challenger: Scorer, reason: str, now: datetime) -> None:
        """A challenger that raised or gave NaN leaves the shadow at this edge; a line event says so."""
        self.shadow_counts["failed"] += 1
        self._lanes.pop("challenger", None)
        retire = getattr(self.scorers, "retire_challenger", None)
        if retire is not None:
            retire(challenger.version_id, reason)
        self._spool([("line_event", {
            "id": str(uuid.uuid4()), "line_id": self.line_id, "source": f"edge:{self.line_id}",
            "kind": "shadow_removed", "started_at": now, "ended_at": now,
            "detail": {"reason": f"Model {challenger.version_id} taken out of shadow: {reason}; "
                                 "production keeps deciding", "model_version_id": challenger.version_id}})])

    # ------------------------------------------------------------------ effects
    def _publish(self, changes: Iterable[Change]) -> None:
        for ch in changes:
            if not ch.publish:
                continue
            for out in self.outputs:
                out.on_alert(ch.event, ch.alert)

    def _spool(self, records: list[tuple[str, dict]]) -> None:
        if self._writer is not None:
            self._writer.put(records)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every decision handed over so far is in the spool."""
        return self._writer.flush(timeout_s) if self._writer is not None else True

    def close(self, timeout_s: float = 10.0) -> None:
        """Record the 'stopped' state, then stop the spool writer after it wrote what is queued."""
        self.set_state("stopped", "edge runtime stopped")
        if self._writer is not None:
            self._writer.close(timeout_s)

    def set_state(self, state: str, reason: str) -> None:
        """Change the line's state; a change is recorded as a line event with the health record."""
        records = self.line_state.change(state, reason)
        if records is not None:
            self._spool(records + [("health", self.health_record())])

    def record_health(self) -> None:
        self._spool([("health", self.health_record())])

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
        if self.sink is not None:
            try:
                spool_depth = self.sink.depth()
            except Exception as exc:  # noqa: BLE001 - status must render even if the spool file is unreadable
                spool_depth = f"unknown ({exc})"
        outputs = {out.name: out.status() for out in self.outputs}
        model = self.scorers.status()
        return {"state": self.state, "reason": self.state_reason, "since": self.line_state.since.isoformat(),
                "freshness_s": fresh, "model": model, "model_version_id": model.get("model_version_id"),
                "spool_depth": spool_depth, "spool_errors": self.spool_dropped, "outputs": outputs,
                "output_failures": sum(int(o.get("failures", 0)) for o in outputs.values()),
                "playbook": {"source": self.playbook.current.source, "error": self.playbook.error},
                "decisions": dict(self.counts), "shadow": dict(self.shadow_counts), "latency": self.latency_percentiles(),
                "alerts": self.board.counts(), "flooding": self.board.flooding, "last_serial": self.last_serial,
                "duty": self.duty.status(),
                "samples": self.rings.samples_total, "ring_fill": round(self.rings.fill(), 3)}

    def health_record(self) -> dict:
        return {"component": f"edge:{self.line_id}", "line_id": self.line_id, "state": self.state,
                "detail": self.status(), "updated_at": self.clock()}

    # ------------------------------------------------------------------ time-driven
    def tick(self) -> list[Change]:
        """Alarm timers (shelve expiry, clearing, escalation) and, between parts, a sensor that went
        silent: called every second by the housekeeper. Touches no database."""
        now = self.clock()
        changes = self.board.tick(now) + self._escalate(now)
        self._publish(changes)
        self._spool([(k, v) for ch in changes for k, v in
                     ((("alert", ch.alert),) + ((("alert_event", ch.event_row),) if ch.event_row else ()))])
        # Between parts, a sensor that went silent must show on the status now, not at the next part.
        if self.state == "scoring" and self._computers:
            stale = self.checks.stale_now(self._key_tags(next(reversed(self._computers.values()))))
            if stale:
                self.set_state("degraded", "; ".join(stale))
        return changes

    def _escalate(self, now: datetime) -> list[Change]:
        """Escalation steps that are due and the empty-roster alarm (``pq/edge/duty.py``); no I/O."""
        return self.duty.tick(self.board, now)

    def apply_operator_rows(self, rows: list[dict]) -> list[Change]:
        """Operator actions read from the store (acknowledge, shelve, feedback), merged and published."""
        changes = self.board.merge_stored(rows, self.clock())
        self._publish(changes)
        return changes
