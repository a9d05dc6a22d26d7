"""Scheduled retraining that proposes a candidate and never promotes it.

Owns ``training_schedules`` and the process that runs them (:class:`Scheduler`, ``pq models
scheduler``). A schedule per scope (``LINE/PRODUCT``, as :func:`models.registry.parse_scope`) is due
when its period has passed (``every_days``), when ``min_new_labels`` labels arrived since its last run
(inspections plus operator feedback on alerts, counted for the scope's line), or when a drift alarm
arrived (``on_drift``: a ``line_events`` row of kind ``drift`` for the line; until the drift monitor
writes those, the trigger is fed by ``pq models schedule run-now ID --reason drift``).

A run (:func:`run_schedule`) trains a candidate on the last ``window_days`` of the store, registers it
(:func:`models.training.train`), compares it with the scope's production version through the
registry's gate (:func:`models.registry.compare`: per-regime FAR/recall and the two decisions on
validation) and scores production on the same window (the robustness report of
:func:`models.report.robustness_from_store`) beside the candidate's out-of-fold figures on it. It then
records a proposal (:mod:`models.proposals`): ``proposed`` when the gate passes (the scope's approver
is notified by an ``audit_log`` row, the Models page lists it, and the candidate goes to shadow when
the composition root hands a ``shadow`` callable), ``failed`` otherwise (the candidate stays registered
with the report that failed it). Promotion stays an engineer's decision (:func:`models.proposals.approve`).

Restart-safe: after a run, ``next_due_at`` is set from the time of the run, so a schedule missed for
several periods while the scheduler was down runs once on start, not once per missed period. A run
interrupted by SIGTERM registers nothing and leaves the schedule due. Imports pq and models only.

Example::

    s = add_schedule(store, "line-1/*", every_days=7, window_days=28, approver="bob", actor="bob",
                     config={"feature_set_version": "default-1", "alarm_budget_per_h": 2.0})
    Scheduler(lambda: store, defaults={"feature_set_version": "default-1"}).run_due()   # -> [Proposal]
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError

from models.estimator import json_safe
from models.proposals import Proposal, record_proposal, require_engineer
from pq.auth import audit
from pq.errors import InvalidRequest, ModelError, PQError, SchemaVersionError, StorageError
from pq.storage import schema

__all__ = ["Schedule", "Scheduler", "Shadow", "add_schedule", "list_schedules", "get_schedule", "remove_schedule",
           "due_reason", "run_schedule", "new_labels", "drift_alarms", "SCHEDULER_USER", "CONFIG_KEYS",
           "DEFAULT_EVERY_DAYS", "DEFAULT_WINDOW_DAYS", "HEALTH_COMPONENT", "set_enabled"]

logger = logging.getLogger(__name__)

SCHEDULER_USER = "scheduler"  # trained_by and audit name of what the process does on its own
HEALTH_COMPONENT = "scheduler"  # its component_health row
DEFAULT_EVERY_DAYS = 7.0
DEFAULT_WINDOW_DAYS = 28.0
# TrainConfig fields a schedule may set; the rest come from the process's settings (``defaults``).
CONFIG_KEYS = ("feature_set_version", "name", "kind", "alarm_budget_per_h", "target_recall", "diversion_share",
               "diversion_recall", "reweight_regimes", "folds", "seed", "min_labelled", "min_defects",
               "label_precedence", "n_threads")
# put_in_shadow(store, version_id, line_id, actor) -> str (what it did, in words); raises PQError when refused.
Shadow = Callable[[Any, int, "str | None", str], str]


@dataclass(frozen=True)
class Schedule:
    id: int
    scope: str
    every_days: float | None
    min_new_labels: int | None
    on_drift: bool
    window_days: float
    config: dict
    approver: str
    enabled: bool
    created_by: str
    created_at: datetime
    last_run_at: datetime | None
    next_due_at: datetime | None
    last_result: str | None

    def triggers(self) -> str:
        out = [f"every {self.every_days:g} days"] if self.every_days else []
        out += [f"{self.min_new_labels} new labels"] if self.min_new_labels else []
        out += ["a drift alarm"] if self.on_drift else []
        return ", ".join(out) or "run-now only"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _row(row) -> Schedule:
    return Schedule(**{f.name: row._mapping[f.name] for f in fields(Schedule)})


# -- schedules ----------------------------------------------------------------------------------------

def _check_config(config: dict) -> dict:
    from models.training import TrainConfig

    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ModelError(f"schedule config: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(CONFIG_KEYS)}")
    clean = {k: v for k, v in config.items() if v is not None}
    TrainConfig(**({"feature_set_version": "check"} | clean))  # a bad kind or budget is refused now, not at 3 am
    return clean


def add_schedule(store, scope: str, *, approver: str, actor: str, every_days: float | None = DEFAULT_EVERY_DAYS,
                 min_new_labels: int | None = None, on_drift: bool = False,
                 window_days: float = DEFAULT_WINDOW_DAYS, config: dict | None = None, client: str = "cli",
                 now: datetime | None = None) -> Schedule:
    """Store a schedule (engineers and admins only; the approver must be one too) and audit it."""
    from models.registry import parse_scope

    who = require_engineer(store, actor, "add a training schedule")
    require_engineer(store, approver, f"approver {approver!r} of a training schedule")
    parse_scope(scope)
    if every_days is not None and every_days <= 0:
        raise ModelError(f"every_days must be > 0, got {every_days}")
    if min_new_labels is not None and min_new_labels < 1:
        raise ModelError(f"min_new_labels must be >= 1, got {min_new_labels}")
    if not every_days and not min_new_labels and not on_drift:
        raise ModelError("a schedule needs a trigger: every N days, N new labels or a drift alarm")
    if window_days <= 0:
        raise ModelError(f"window_days must be > 0, got {window_days}")
    config = _check_config(config or {})
    now = now or _now()
    t = schema.training_schedules
    values = dict(scope=scope, every_days=every_days, min_new_labels=min_new_labels, on_drift=bool(on_drift),
                  window_days=float(window_days), config=json_safe(config), approver=approver, enabled=True,
                  created_by=who.username, created_at=now,
                  next_due_at=now + timedelta(days=every_days) if every_days else None)
    with store.engine.begin() as conn:
        sid = conn.execute(insert(t).values(**values)).inserted_primary_key[0]
        audit.record(conn, username=who.username, action="model.schedule_add", target=f"training_schedule:{sid}",
                     detail=json_safe({k: v for k, v in values.items() if k != "created_at"}), client=client)
    logger.info("training schedule #%d for %s added by %s", sid, scope, who.username)
    return get_schedule(store, sid)


def get_schedule(store, schedule_id: int) -> Schedule:
    t = schema.training_schedules
    with store.engine.connect() as conn:
        row = conn.execute(select(t).where(t.c.id == int(schedule_id))).first()
    if row is None:
        raise InvalidRequest(f"training schedule #{schedule_id} does not exist (see `pq models schedule list`)")
    return _row(row)


def list_schedules(store) -> list[Schedule]:
    t = schema.training_schedules
    with store.engine.connect() as conn:
        return [_row(r) for r in conn.execute(select(t).order_by(t.c.id))]


def remove_schedule(store, schedule_id: int, *, actor: str, client: str = "cli") -> None:
    """Delete a schedule (its proposals stay); engineers and admins only, audited."""
    who = require_engineer(store, actor, "remove a training schedule")
    s = get_schedule(store, schedule_id)
    with store.engine.begin() as conn:
        conn.execute(delete(schema.training_schedules).where(schema.training_schedules.c.id == s.id))
        audit.record(conn, username=who.username, action="model.schedule_remove", target=f"training_schedule:{s.id}",
                     detail={"scope": s.scope, "triggers": s.triggers()}, client=client)
    logger.info("training schedule #%d for %s removed by %s", s.id, s.scope, who.username)


def set_enabled(store, schedule_id: int, enabled: bool, *, actor: str, client: str = "cli") -> Schedule:
    """Pause or resume a schedule (engineers and admins only, audited). A resumed schedule that fell due
    while paused runs once at the next poll."""
    who = require_engineer(store, actor, "pause or resume a training schedule")
    s = get_schedule(store, schedule_id)
    with store.engine.begin() as conn:
        conn.execute(update(schema.training_schedules).where(schema.training_schedules.c.id == s.id)
                     .values(enabled=bool(enabled)))
        audit.record(conn, username=who.username, action="model.schedule_" + ("resume" if enabled else "pause"),
                     target=f"training_schedule:{s.id}", detail={"scope": s.scope}, client=client)
    return get_schedule(store, s.id)


# -- triggers -----------------------------------------------------------------------------------------

def new_labels(store, line_id: str | None, since: datetime) -> int:
    """Inspections plus operator feedback (confirmed / false alarm) recorded after ``since``."""
    i, a = schema.inspections, schema.alerts
    qi = select(func.count()).select_from(i).where(i.c.inspected_at > since)
    qa = select(func.count()).select_from(a).where(a.c.feedback_at > since, a.c.feedback.in_(("confirmed", "false_alarm")))
    if line_id:
        qi, qa = qi.where(i.c.line_id == line_id), qa.where(a.c.line_id == line_id)
    with store.engine.connect() as conn:
        return int(conn.execute(qi).scalar() or 0) + int(conn.execute(qa).scalar() or 0)


def drift_alarms(store, line_id: str | None, since: datetime) -> int:
    """Drift line events (kind ``drift``) that started after ``since``."""
    e = schema.line_events
    q = select(func.count()).select_from(e).where(e.c.kind == "drift", e.c.started_at > since)
    if line_id:
        q = q.where(e.c.line_id == line_id)
    with store.engine.connect() as conn:
        return int(conn.execute(q).scalar() or 0)


def due_reason(store, s: Schedule, now: datetime | None = None) -> str | None:
    """Why ``s`` should run now (words for the proposal and the log), or None."""
    from models.registry import parse_scope

    if not s.enabled:
        return None
    now = now or _now()
    if s.next_due_at is not None and s.next_due_at <= now:
        missed = s.every_days and now - s.next_due_at >= timedelta(days=s.every_days)
        return (f"every {s.every_days:g} days (missed while the scheduler was down; runs once)" if missed
                else f"every {s.every_days:g} days")
    line_id, _ = parse_scope(s.scope)
    since = s.last_run_at or s.created_at
    if s.min_new_labels:
        n = new_labels(store, line_id, since)
        if n >= s.min_new_labels:
            return f"{n} new labels (threshold {s.min_new_labels})"
    if s.on_drift:
        n = drift_alarms(store, line_id, since)
        if n:
            return f"drift alarm ({n} since the last run)"
    return None


# -- a run --------------------------------------------------------------------------------------------

class Stopped(BaseException):
    """Raised from the progress callback when the process is asked to stop: unwinds training without
    registering anything (a BaseException, so no handler meant for training errors swallows it)."""


def _train_config(s: Schedule, defaults: dict, production, now: datetime):
    from models.registry import parse_scope
    from models.training import TrainConfig

    line_id, product = parse_scope(s.scope)
    cfg = dict(defaults) | dict(s.config)
    if "feature_set_version" not in s.config and production is not None:
        cfg["feature_set_version"] = production.feature_set_version  # what the edge computes today
    if not cfg.get("feature_set_version"):
        raise ModelError(f"schedule #{s.id}: no feature set configured and no production version to copy it from")
    return TrainConfig(**cfg, line_id=line_id, product=product, start=now - timedelta(days=s.window_days), end=now)


_FIGURES = ("parts", "defects", "far", "recall", "precision", "alerts_per_h", "auc", "ece")
_DECISION_FIGURES = ("diverted_share", "far", "recall", "precision", "alarms_per_h")


def _same_window(store, ds, cand, prod, regimes) -> dict:
    """Both models on the window's labelled parts: the candidate's out-of-fold figures (each part scored
    by a fold model that never saw its day or lot) beside production scored on the same parts."""
    from models.report import robustness_from_store

    out = {"parts": len(ds), "defects": int(ds.y.sum()), "window": list(ds.window),
           "candidate": {"version_id": cand.id, "source": "out-of-fold on this window",
                         "overall": {k: (cand.metrics or {}).get(k) for k in _FIGURES},
                         "decisions": {k: ((cand.card or {}).get("decisions") or {}).get(k) for k in _DECISION_FIGURES}}}
    if prod is None:
        return out
    try:
        res = robustness_from_store(store, [prod.id], {"window": ds}, regimes)
    except (PQError, KeyError, ValueError) as exc:
        out["production"] = {"version_id": prod.id, "error": f"production could not be scored on the window: {exc}"}
        return out
    (_, ev), = [(k, v) for k, v in res["scenarios"]["window"].items() if isinstance(v, dict) and "overall" in v]
    overlap = None
    if prod.train_start and prod.train_end and len(ds):
        import pandas as pd

        t = pd.to_datetime(ds.meta["cycle_end"], utc=True)
        overlap = round(float(((t >= prod.train_start) & (t <= prod.train_end)).mean()), 4)
    out["production"] = {"version_id": prod.id, "source": "scored on this window",
                         "trained_on_share_of_window": overlap,  # > 0: production saw these parts (in-sample)
                         "overall": {k: ev["overall"].get(k) for k in _FIGURES},
                         "decisions": {k: (ev.get("diversion") or {}).get(k) for k in _DECISION_FIGURES}}
    return out


def run_schedule(store, s: Schedule, *, trigger: str, defaults: dict | None = None, shadow: Shadow | None = None,
                 progress: Callable[[float, str], None] | None = None, margin: float | None = None,
                 now: datetime | None = None) -> Proposal:
    """Train, register, judge against production and record the proposal; never promotes.

    The run counts from ``now``: the schedule's next due time is a period later. Raises
    :class:`Stopped` (from ``progress``) without recording anything; the schedule stays due.
    """
    from models import registry
    from models.dataset import load_dataset
    from models.training import train

    now = now or _now()
    margin = registry.DEFAULT_MARGIN if margin is None else margin
    line_id, product = registry.parse_scope(s.scope)
    prod = registry.production_version(store, line_id, product)
    report: dict = {"trigger": trigger, "schedule_id": s.id, "window_days": s.window_days,
                    "production": prod.label if prod else None}
    cand = None
    try:
        cfg = _train_config(s, defaults or {}, prod, now)
        report["config"] = cfg.describe()
        ds = load_dataset(store, cfg.feature_set_version, line_id=line_id, product=product, start=cfg.start,
                          end=cfg.end, label_precedence=cfg.label_precedence)
        cand = train(store, cfg, trained_by=SCHEDULER_USER, progress=progress, client="scheduler", dataset=ds).version
        gate = registry.compare(store, cand.id, prod.id if prod else None, margin)
        report["gate"] = gate
        report["same_window"] = _same_window(store, ds, cand, prod, cfg.regimes)
    except StorageError:
        raise  # the store went away: not the candidate's fault; the scheduler retries at its next poll
    except PQError as exc:  # too few labels, a feature mismatch ...: the message says what to do
        report["error"] = str(exc)
        logger.warning("schedule #%d (%s): %s", s.id, s.scope, exc)
    passed = cand is not None and "error" not in report and not report["gate"]["worse"]
    if passed:
        report["verdict"] = ("not worse than production beyond the margin in any regime band with enough data, "
                             "nor in operator alarms or diverted parts" if prod else
                             "no production version to compare with; within the operator alarm ceiling")
    elif "error" not in report:
        report["verdict"] = "worse than production: " + "; ".join(_worse(w) for w in report["gate"]["worse"][:6])
    else:
        report["verdict"] = ("not judged: " if cand else "no candidate: ") + report["error"]
    shadow_words = None
    if passed:
        shadow_words = _put_in_shadow(store, shadow, cand.id, line_id)
    p = record_proposal(store, schedule_id=s.id, scope=s.scope, trigger=trigger,
                        candidate_version_id=cand.id if cand else None, production_version_id=prod.id if prod else None,
                        report=report, verdict="passed" if passed else "failed",
                        status="proposed" if passed else "failed", shadow=shadow_words)
    _notify(store, s, p, cand)
    _mark_run(store, s, now)
    return p


def _worse(w: dict) -> str:
    production = f" vs production {w['production']}" if w.get("production") is not None else ""
    limit = f" (limit {w['limit']:g})" if w.get("limit") is not None else ""
    return f"{w['regime']}={w['band']}: {w['metric']} {w['candidate']}{production}{limit}"


def _put_in_shadow(store, shadow: Shadow | None, version_id: int, line_id: str | None) -> str:
    """The candidate in shadow at the edge through the composition root's ``put_in_shadow``; its refusal
    is recorded on the proposal, never fatal (the proposal still waits for an engineer)."""
    if shadow is None:
        return "shadow: not available"
    try:
        return shadow(store, version_id, line_id, SCHEDULER_USER) or "in shadow"
    except PQError as exc:
        logger.warning("candidate #%d could not be put in shadow: %s", version_id, exc)
        return f"shadow refused: {exc}"


def _notify(store, s: Schedule, p: Proposal, cand) -> None:
    """The approver's notice: an audit row (the Audit page, filterable by approver) and the schedule's
    last result (the Models page lists the proposal)."""
    words = (f"proposal #{p.id}: candidate #{p.candidate_version_id} waits for {s.approver}'s approval"
             if p.status == "proposed" else
             f"proposal #{p.id} failed: {p.report.get('verdict')}")
    with store.engine.begin() as conn:
        audit.record(conn, username=SCHEDULER_USER, action=f"model.proposal_{p.status}",
                     target=f"model_version:{cand.id}" if cand else f"training_proposal:{p.id}",
                     detail=json_safe({"proposal": p.id, "schedule": s.id, "scope": s.scope, "approver": s.approver,
                                       "trigger": p.trigger, "production": p.production_version_id,
                                       "verdict": p.report.get("verdict"), "shadow": p.shadow}),
                     client="scheduler")
        conn.execute(update(schema.training_schedules).where(schema.training_schedules.c.id == s.id)
                     .values(last_result=words[:2000]))
    log = logger.info if p.status == "proposed" else logger.warning
    log("schedule #%d (%s): %s", s.id, s.scope, words)


def _mark_run(store, s: Schedule, at: datetime) -> None:
    """The run happened at ``at``: the next one is a period from now, however many were missed."""
    with store.engine.begin() as conn:
        conn.execute(update(schema.training_schedules).where(schema.training_schedules.c.id == s.id).values(
            last_run_at=at, next_due_at=at + timedelta(days=s.every_days) if s.every_days else None))


# -- the process --------------------------------------------------------------------------------------

class Scheduler:
    """Runs due schedules until stopped: ``pq models scheduler``.

    ``open_store`` may fail while the database is down: the scheduler retries every ``retry_s``
    (one warning, one recovery line) and gives up with a
    StorageError after ``store_wait_s`` (None: waits for ever). A database lost between runs is
    reported once and retried at the next poll. ``defaults`` are the TrainConfig fields from the
    settings; ``shadow`` is the composition root's ``put_in_shadow`` or None.
    """

    def __init__(self, open_store: Callable[[], Any], *, defaults: dict | None = None, shadow: Shadow | None = None,
                 poll_s: float = 60.0, retry_s: float = 5.0, store_wait_s: float | None = None,
                 margin: float | None = None, stop: threading.Event | None = None):
        self._open_store = open_store
        self.defaults = defaults or {}
        self.shadow = shadow
        self.poll_s = poll_s
        self.retry_s = retry_s
        self.store_wait_s = store_wait_s
        self.margin = margin
        self.stop = stop or threading.Event()
        self.store = None
        self._store_lost = False

    # -- the store ------------------------------------------------------------------------------
    def open(self) -> Any:
        """The store, waiting for it (one warning, one recovery line); StorageError when it stays away
        for ``store_wait_s``; a schema to upgrade or a bad URL is raised at once (waiting cannot fix it)."""
        deadline = None if self.store_wait_s is None else time.monotonic() + self.store_wait_s
        warned = False
        while not self.stop.is_set():
            try:
                self.store = self._open_store()
            except SchemaVersionError:
                raise
            except StorageError as exc:
                if not warned:
                    logger.warning("scheduler: store not reachable (%s); retrying every %g s", exc, self.retry_s)
                    warned = True
                if deadline is not None and time.monotonic() >= deadline:
                    raise StorageError(f"scheduler: the store stayed unreachable for {self.store_wait_s:g} s; "
                                       "no schedule was run (check PQ_DATABASE_URL and the database)") from None
                self.stop.wait(self.retry_s)
                continue
            if warned:
                logger.info("scheduler: store reachable again")
            return self.store
        return None

    # -- runs -----------------------------------------------------------------------------------
    def _progress(self, s: Schedule) -> Callable[[float, str], None]:
        last = [None]

        def cb(fraction: float, message: str) -> None:
            if self.stop.is_set():
                raise Stopped()
            if message != last[0]:
                last[0] = message
                logger.info("schedule #%d (%s): [%3.0f%%] %s", s.id, s.scope, 100 * fraction, message)

        return cb

    def run_one(self, s: Schedule, trigger: str) -> Proposal | None:
        """Run ``s`` now; None when stopped meanwhile (nothing recorded, the schedule stays due). A crash
        is recorded as a failed proposal and counts as a run, so a bug does not re-run at every poll."""
        at = _now()
        logger.info("schedule #%d (%s): training a candidate (trigger: %s)", s.id, s.scope, trigger)
        try:
            p = run_schedule(self.store, s, trigger=trigger, defaults=self.defaults, shadow=self.shadow,
                             progress=self._progress(s), margin=self.margin, now=at)
        except Stopped:
            logger.info("schedule #%d (%s): stopped during training; nothing registered, it runs on next start",
                        s.id, s.scope)
            return None
        except (StorageError, DBAPIError):
            raise  # the store went away: the caller reports it and retries; the schedule stays due
        except Exception as exc:  # a bug must not make the schedule run again at every poll
            logger.exception("schedule #%d (%s) crashed", s.id, s.scope)
            p = record_proposal(self.store, schedule_id=s.id, scope=s.scope, trigger=trigger,
                                candidate_version_id=None, production_version_id=None,
                                report={"error": f"internal error ({type(exc).__name__}); see the scheduler log"},
                                verdict="failed", status="failed")
            _mark_run(self.store, s, at)
        return p

    def run_due(self, now: datetime | None = None) -> list[Proposal]:
        """Run every due schedule once; returns the proposals recorded."""
        out = []
        for s in list_schedules(self.store):
            if self.stop.is_set():
                break
            reason = due_reason(self.store, s, now)
            if reason:
                self._heartbeat("training", f"schedule #{s.id} ({s.scope}): {reason}")
                p = self.run_one(s, reason)
                if p is not None:
                    out.append(p)
        return out

    def _heartbeat(self, state: str, message: str) -> None:
        """The ``component_health`` row ``scheduler``: the Models page says whether the process runs."""
        from pq.health import health_row, write_health_now

        write_health_now(self.store, health_row(HEALTH_COMPONENT, state, detail={
            "poll_s": self.poll_s, "message": message, "shadow": self.shadow is not None}))

    def tick(self) -> list[Proposal]:
        """One poll: run what is due; a lost store is reported once and retried at the next poll."""
        try:
            self._heartbeat("running", "looking for due schedules")
            out = self.run_due()
            self._heartbeat("idle", f"{len(out)} proposal(s) at the last poll" if out else "nothing due at the last poll")
        except (StorageError, DBAPIError) as exc:
            if isinstance(exc, SchemaVersionError):
                raise
            if not self._store_lost:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                logger.warning("scheduler: store unavailable (%s); retrying every %.0f s", reason, self.poll_s)
                self._store_lost = True
            return []
        if self._store_lost:
            logger.info("scheduler: store reachable again")
            self._store_lost = False
        return out

    def run(self, *, once: bool = False) -> int:
        """Open the store, then run due schedules every ``poll_s`` until :attr:`stop` is set (or once).
        Returns the number of proposals recorded."""
        if self.open() is None:
            return 0
        schedules = list_schedules(self.store)
        logger.info("scheduler: %d schedule(s) on %s; polling every %.0f s", len(schedules),
                    self.store.display_url, self.poll_s)
        n = 0
        while not self.stop.is_set():
            n += len(self.tick())  # on start: a schedule missed while down runs here, once
            if once:
                break
            self.stop.wait(self.poll_s)
        if not once:  # a --once run from cron leaves the row "idle"
            try:
                self._heartbeat("stopped", f"stopped after {n} proposal(s)")
            except (StorageError, DBAPIError):
                logger.info("scheduler: could not record the stop (store unavailable)")
        logger.info("scheduler: stopped after %d proposal(s)", n)
        return n
