"""Alarm discipline (ISA-18.2 style): the state machine of one line's alerts, in memory.

Owns: one open alert per line + cause (repeats update it), flood suppression (more than
``flood_limit`` new alerts in ``flood_window_s`` -> one flood alert, the rest recorded as
``suppressed``), clearing on return to normal (``clear_after_ok`` scored parts without the cause),
shelving with expiry, and adopting what operators did in the store (acknowledge, shelve, unshelve,
clear, feedback; written by ``pq/alerts/actions.py``, which this module does not import).

States: ``active`` (unacknowledged) -> ``acknowledged`` -> ``cleared``; ``shelved`` (reason, expiry)
and ``suppressed`` (flood) are open too. Every change is returned as a :class:`Change` that the edge
runtime writes through the spool and publishes to outputs; this module does no I/O. Must not
import connectors, models, ui or simulators. Details and the rules' reasons: ``docs/alarms.md``.

Example::

    board = AlarmBoard("line-1")
    changes = board.on_at_risk("melt_temp_c", now, severity="high", serial="S1", title="...", score=0.9)
    changes += board.on_scored(now, causes=set())   # an OK part: counts towards clearing
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

__all__ = ["Alert", "Change", "AlarmBoard", "OPEN_STATES", "SEVERITIES", "FLOOD_CAUSE"]

logger = logging.getLogger(__name__)

OPEN_STATES = ("active", "acknowledged", "shelved", "suppressed")
SEVERITIES = ("low", "medium", "high")
FLOOD_CAUSE = "flood"

# Columns of the alerts table the edge owns; acked_*, shelved_until, shelve_reason and feedback_*
# belong to operators (written by the UI) and are only read here.
_EDGE_COLUMNS = ("id", "line_id", "kind", "cause", "state", "severity", "serial", "station", "product",
                 "material_lot", "shift", "score", "title", "action", "explanation", "model_version_id",
                 "repeat_count", "raised_at", "updated_at", "cleared_at",
                 # owner and escalation (pq/edge/duty.py)
                 "assigned_to", "escalation_level", "escalated_to", "escalated_role", "escalated_at")
_OPERATOR_COLUMNS = ("acked_at", "acked_by", "shelved_until", "shelve_reason", "feedback",
                     "feedback_comment", "feedback_by", "feedback_at")


@dataclass
class Alert:
    id: str
    line_id: str
    cause: str
    state: str
    severity: str
    title: str
    raised_at: datetime
    updated_at: datetime
    kind: str = "part"
    serial: str | None = None
    station: str | None = None
    product: str | None = None
    material_lot: str | None = None
    shift: str | None = None
    score: float | None = None
    action: str | None = None
    explanation: Any = None
    model_version_id: int | None = None
    repeat_count: int = 1
    cleared_at: datetime | None = None
    acked_at: datetime | None = None
    acked_by: str | None = None
    shelved_until: datetime | None = None
    shelve_reason: str | None = None
    feedback: str | None = None
    feedback_comment: str | None = None
    feedback_by: str | None = None
    feedback_at: datetime | None = None
    assigned_to: str | None = None
    escalation_level: int | None = None
    escalated_to: str | None = None
    escalated_role: str | None = None
    escalated_at: datetime | None = None
    ok_streak: int = 0  # scored parts since the cause was last seen (not stored)

    def row(self) -> dict:
        """The edge-owned columns, as written to ``alerts``."""
        return {c: getattr(self, c) for c in _EDGE_COLUMNS}

    def public(self) -> dict:
        """Everything an output or a status page may show (no internal counters)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "ok_streak"}
        return d


@dataclass
class Change:
    """One thing that happened to an alert, for the spool (rows) and the outputs (publish)."""

    event: str
    alert: dict  # snapshot of Alert.public() at the change
    event_row: dict | None  # alert_events row, None when an operator already wrote it
    publish: bool
    write_alert: bool = True


def _sev_rank(s: str | None) -> int:
    return SEVERITIES.index(s) if s in SEVERITIES else 0


class AlarmBoard:
    """The open alerts of one line and the rules that move them between states."""

    def __init__(self, line_id: str, *, flood_limit: int = 10, flood_window_s: float = 600.0,
                 clear_after_ok: int = 5, new_id: Callable[[], str] = lambda: str(uuid.uuid4())):
        if flood_limit < 1 or flood_window_s <= 0 or clear_after_ok < 1:
            raise ValueError(f"flood_limit >= 1, flood_window_s > 0, clear_after_ok >= 1 expected, got "
                             f"{flood_limit}, {flood_window_s}, {clear_after_ok}")
        self.line_id = line_id
        self.flood_limit = flood_limit
        self.flood_window_s = flood_window_s
        self.clear_after_ok = clear_after_ok
        self._new_id = new_id
        self._open: dict[str, Alert] = {}  # cause -> open alert (flood alert under FLOOD_CAUSE)
        self._by_id: dict[str, Alert] = {}
        self._raises: deque[float] = deque()  # epoch s of new part alerts, for flood detection

    # -- queries ---------------------------------------------------------------------------------
    def open_alerts(self) -> list[Alert]:
        return list(self._open.values())

    def get(self, cause: str) -> Alert | None:
        return self._open.get(cause)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in OPEN_STATES}
        for a in self._open.values():
            out[a.state] = out.get(a.state, 0) + 1
        return out

    @property
    def flooding(self) -> bool:
        return FLOOD_CAUSE in self._open

    # -- helpers ---------------------------------------------------------------------------------
    def _change(self, event: str, a: Alert, now: datetime, *, publish: bool, detail: dict | None = None,
                record: bool = True, write_alert: bool = True) -> Change:
        ev = None
        if record:
            ev = {"id": str(uuid.uuid4()), "alert_id": a.id, "event": event, "at": now, "username": "edge",
                  "detail": detail or {}}
        return Change(event, a.public(), ev, publish, write_alert)

    def _prune(self, now: datetime) -> None:
        edge = now.timestamp() - self.flood_window_s
        while self._raises and self._raises[0] <= edge:
            self._raises.popleft()

    def _close(self, a: Alert, now: datetime) -> None:
        a.state, a.cleared_at, a.updated_at = "cleared", now, now
        self._open.pop(a.cause, None)
        self._by_id.pop(a.id, None)

    def _new(self, cause: str, now: datetime, state: str, kind: str, fields_: Mapping[str, Any]) -> Alert:
        a = Alert(id=self._new_id(), line_id=self.line_id, cause=cause, state=state, kind=kind,
                  raised_at=now, updated_at=now, severity=fields_.get("severity") or "medium",
                  title=fields_.get("title") or cause)
        for k, v in fields_.items():
            if k not in ("severity", "title") and hasattr(a, k):
                setattr(a, k, v)
        self._open[cause] = a
        self._by_id[a.id] = a
        return a

    # -- rules -----------------------------------------------------------------------------------
    def on_at_risk(self, cause: str, now: datetime, kind: str = "part", **fields_: Any) -> list[Change]:
        """An at-risk part with this cause: update the open alert for the cause or raise a new one.

        ``kind``: "part" (an alert per at-risk part, cleared after ``clear_after_ok`` parts without the
        cause) or "episode" (an operator alarm for an episode, cleared by :meth:`on_episode_cleared`).
        ``fields_``: severity, title, serial, station, product, material_lot, shift, score, action,
        explanation, model_version_id.
        """
        a = self._open.get(cause)
        if a is not None:
            a.repeat_count += 1
            a.ok_streak = 0
            a.updated_at = now
            for k, v in fields_.items():
                if k == "severity":
                    if _sev_rank(v) > _sev_rank(a.severity):
                        a.severity = v  # escalate, never quietly downgrade an open alert
                elif hasattr(a, k) and v is not None:
                    setattr(a, k, v)
            if a.state == "suppressed" and not self.flooding:
                a.state = "active"  # the flood is over and the cause persists: the operator must see it
                return [self._change("raised", a, now, publish=True, detail={"after": "flood", "serial": a.serial})]
            # Repeats of acknowledged or shelved alerts do not re-annunciate (ISA-18.2).
            return [self._change("updated", a, now, publish=a.state == "active",
                                 detail={"serial": a.serial, "repeat_count": a.repeat_count, "score": a.score})]

        self._prune(now)
        self._raises.append(now.timestamp())
        if len(self._raises) <= self.flood_limit and not self.flooding:
            a = self._new(cause, now, "active", kind, fields_)
            return [self._change("raised", a, now, publish=True, detail={"serial": a.serial, "score": a.score})]

        a = self._new(cause, now, "suppressed", kind, fields_)
        changes = [self._change("suppressed", a, now, publish=False, detail={"serial": a.serial, "reason": "flood"})]
        n = len(self._raises)
        minutes = self.flood_window_s / 60
        title = (f"Alert flood on {self.line_id}: {n} alerts in {minutes:.0f} minutes. Single alerts are held back; "
                 f"check the process as a whole (material, machine settings, sensors).")
        flood = self._open.get(FLOOD_CAUSE)
        if flood is None:
            flood = self._new(FLOOD_CAUSE, now, "active", "flood",
                              {"severity": "high", "title": title, "serial": a.serial,
                               "action": "Stop and check the line with the shift lead; look for one common cause."})
            logger.warning("line %s: alert flood (%d alerts in %.0f s), suppressing single alerts",
                           self.line_id, n, self.flood_window_s)
            changes.append(self._change("raised", flood, now, publish=True, detail={"alerts_in_window": n}))
        else:
            flood.repeat_count += 1
            flood.title, flood.updated_at, flood.serial = title, now, a.serial
            changes.append(self._change("updated", flood, now, publish=flood.state == "active",
                                        detail={"alerts_in_window": n}))
        return changes

    def on_scored(self, now: datetime, causes: Iterable[str] = ()) -> list[Change]:
        """A scored part (OK, or at risk for ``causes``): other open part alerts move towards clearing."""
        seen = set(causes)
        changes = []
        for a in list(self._open.values()):
            if a.kind != "part" or a.cause in seen:
                continue
            a.ok_streak += 1
            if a.ok_streak >= self.clear_after_ok and a.state in ("active", "acknowledged", "suppressed"):
                was = a.state
                self._close(a, now)
                changes.append(self._change("cleared", a, now, publish=was != "suppressed",
                                            detail={"after_ok_parts": a.ok_streak, "was": was}))
        return changes

    def on_episode_cleared(self, cause: str, now: datetime) -> list[Change]:
        """The episode of ``cause`` ended (its rule saw n parts without it): its alarm clears, whatever its state."""
        a = self._open.get(cause)
        if a is None or a.kind != "episode":
            return []
        was = a.state
        self._close(a, now)
        return [self._change("cleared", a, now, publish=was != "suppressed", detail={"episode_ended": True, "was": was})]

    def on_condition(self, cause: str, now: datetime, **fields_: Any) -> list[Change]:
        """A fault of the alarm system itself (e.g. nobody on duty): one ``system`` alert while it lasts.

        Not counted towards floods; raised again only after it was cleared."""
        if cause in self._open:
            return []
        a = self._new(cause, now, "active", "system", fields_)
        return [self._change("raised", a, now, publish=True, detail={"condition": cause})]

    def on_condition_ended(self, cause: str, now: datetime) -> list[Change]:
        a = self._open.get(cause)
        if a is None or a.kind != "system":
            return []
        was = a.state
        self._close(a, now)
        return [self._change("cleared", a, now, publish=was != "suppressed", detail={"condition_ended": True})]

    def tick(self, now: datetime) -> list[Change]:
        """Time-driven rules: shelving expiry and the end of a flood."""
        changes = []
        for a in list(self._open.values()):
            if a.state == "shelved" and a.shelved_until is not None and now >= a.shelved_until:
                # an episode alarm still on the board means its episode is still open
                if (a.kind == "part" and a.ok_streak < self.clear_after_ok) or a.kind == "episode":
                    a.state, a.updated_at = "active", now
                    changes.append(self._change("unshelved", a, now, publish=True, detail={"expired": True}))
                else:
                    self._close(a, now)
                    changes.append(self._change("cleared", a, now, publish=True, detail={"shelve_expired": True}))
        flood = self._open.get(FLOOD_CAUSE)
        if flood is not None:
            self._prune(now)
            if len(self._raises) <= self.flood_limit // 2:  # hysteresis: no flapping at the limit
                self._close(flood, now)
                logger.info("line %s: alert flood over", self.line_id)
                changes.append(self._change("cleared", flood, now, publish=True,
                                            detail={"alerts_in_window": len(self._raises)}))
        return changes

    # -- the store's view (operators) -------------------------------------------------------------
    def load(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Adopt the open alerts stored for this line (at start-up), so repeats keep updating them."""
        n = 0
        for r in rows:
            if r.get("line_id") != self.line_id or r.get("state") not in OPEN_STATES:
                continue
            a = Alert(**{f.name: r.get(f.name) for f in fields(Alert) if f.name in r and f.name != "ok_streak"})
            a.repeat_count = a.repeat_count or 1
            old = self._open.get(a.cause)
            if old is None or old.updated_at <= a.updated_at:
                self._open[a.cause] = a
                self._by_id[a.id] = a
                n += 1
        return n

    def merge_stored(self, rows: Iterable[Mapping[str, Any]], now: datetime) -> list[Change]:
        """Adopt operator actions found in the store (rows of this line's alerts, by id).

        The operator's event row already exists (the UI wrote it), so changes carry none; they are
        published so that andon lights and MES follow the acknowledgement.
        """
        changes = []
        for r in rows:
            a = self._by_id.get(r.get("id"))
            if a is None:
                continue
            for c in ("feedback", "feedback_comment", "feedback_by", "feedback_at"):
                if r.get(c) is not None:
                    setattr(a, c, r[c])
            stored = r.get("state")
            if stored == a.state:
                if stored == "shelved" and r.get("shelved_until") != a.shelved_until:
                    a.shelved_until, a.shelve_reason = r.get("shelved_until"), r.get("shelve_reason")
                continue
            event = None
            if stored == "acknowledged" and a.state in ("active", "suppressed", "shelved"):
                if a.state == "shelved":
                    a.shelved_until = None  # unshelved by an operator back to acknowledged
                a.state, a.acked_at, a.acked_by, event = "acknowledged", r.get("acked_at") or now, r.get("acked_by"), "acknowledged"
            elif stored == "shelved" and a.state != "shelved":
                a.state, a.shelved_until, a.shelve_reason, event = "shelved", r.get("shelved_until"), r.get("shelve_reason"), "shelved"
                a.acked_at, a.acked_by = r.get("acked_at") or a.acked_at, r.get("acked_by") or a.acked_by
            elif stored == "cleared":
                self._close(a, r.get("cleared_at") or now)
                event = "cleared"
            elif stored == "active" and a.state == "shelved" and r.get("shelved_until") is None:
                a.state, a.shelved_until, event = "active", None, "unshelved"
            if event:
                logger.info("line %s: alert %s (%s) %s by %s", self.line_id, a.id, a.cause, event,
                            r.get("acked_by") or "operator")
                changes.append(self._change(event, a, now, publish=True, record=False, write_alert=False))
        return changes
