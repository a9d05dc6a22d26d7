"""Owners and escalation at the edge: every alarm assigned when raised, escalated while nobody acts.

Owns :class:`DutyDesk` (one per line runtime) and :class:`RosterCache`. The desk keeps the line's
roster in memory and the escalation rules; the runtime calls :meth:`DutyDesk.assign` with the
changes of a decision (a dictionary lookup: assignment rides on the raise) and :meth:`DutyDesk.tick`
from its periodic tick (escalation, the empty-roster alarm), so both work while the store is down.
The housekeeper reads the roster from the store when it answers and hands it in with
:meth:`DutyDesk.set_roster`; the desk keeps a copy on local disk (``PQ_DATA_DIR/edge/<line>/roster.json``)
so an edge restarted during an outage still knows who is on duty.

The current shift is the ``shift`` context value of the latest part the runtime decided (the
connector reads it from the line with every part); until a part arrives, the alarm's own shift, and
for a line whose parts carry no shift, the plant's shift clock (``PQ_SHIFT_STARTS``, ``pq.shifts``).

A line without any roster entry (nor one for every line) has duty assignment switched off: no
assignment, no escalation, no roster alarm (a plant that does not use rosters is not nagged); the
line status says so. With a roster, nobody on duty as operator for the current shift raises one
``system`` alarm (cause ``roster``); an alarm is then assigned, and escalations go, to the next role
that has someone (``Roster.find``), each such miss counted in ``misses``. Every assignment and
escalation is an ``alert_events`` row (``assigned`` / ``escalated``, user ``edge``) written through
the spool with the alert row; escalations are published to the outputs with ``escalation``
{role, username, contact, level} in the alert. Must not import connectors, models, ui or simulators.

Example::

    desk = DutyDesk("line-1", load_rules(None), RosterCache(data_dir / "edge" / "line-1"))
    desk.set_roster(load_roster(store, "line-1"))            # housekeeper, when the store answers
    changes += desk.assign(board, changes, now, shift="B")   # runtime, per decision
    changes = desk.tick(board, now)                          # runtime, every second
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from pq.alerts.discipline import AlarmBoard, Alert, Change
from pq.alerts.escalation import EscalationRules, next_step
from pq.alerts.roster import ROLE_WORDS, Duty, Roster

__all__ = ["DutyDesk", "RosterCache", "ROSTER_CAUSE"]

logger = logging.getLogger(__name__)

ROSTER_CAUSE = "roster"


class RosterCache:
    """The line's last roster on local disk, written atomically when it changes."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / "roster.json"

    def save(self, roster: Roster) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(roster.to_json(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def load(self) -> Roster | None:
        try:
            return Roster.from_json(json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("local roster copy %s unreadable (%s); ignoring it", self.path, exc)
            return None


def _event(a: Alert, event: str, now: datetime, detail: dict) -> dict:
    return {"id": str(uuid.uuid4()), "alert_id": a.id, "event": event, "at": now, "username": "edge",
            "detail": detail}


class DutyDesk:
    def __init__(self, line_id: str, rules: EscalationRules, cache: RosterCache | None = None,
                 shift_at: Callable[[datetime], str] | None = None):
        self.line_id = line_id
        self.rules = rules
        self.cache = cache
        self.shift_at = shift_at  # the plant's shift clock: the shift when no part has said one
        self.roster: Roster | None = None
        self.roster_source: str | None = None
        self.active = False  # the line has a roster: assignment and escalation are on
        cached = cache.load() if cache is not None else None
        if cached is not None:
            self._use(cached, "local copy")
        self.shift: str | None = None
        self.misses = 0  # assignments / escalations whose role had nobody on duty
        self._roster_alarm_shift: Any = None  # the shift the roster alarm was raised for (an operator may clear it)

    # -- roster ------------------------------------------------------------------------------------
    def set_roster(self, roster: Roster) -> None:
        """The roster as the store has it now; kept on disk when it changed."""
        roster = roster.for_line(self.line_id)
        changed = roster != self.roster
        self._use(roster, "store")
        if changed:
            logger.info("line %s: roster has %d entries", self.line_id, len(roster))
            if self.cache is not None:
                try:
                    self.cache.save(roster)
                except OSError as exc:  # it still works; only a restart during an outage would lack it
                    logger.warning("line %s: cannot keep a local roster copy in %s: %s", self.line_id,
                                   self.cache.path, exc)

    def _use(self, roster: Roster, source: str) -> None:
        self.roster, self.roster_source = roster, source
        self.active = roster.covers(self.line_id)  # once here, not per decision

    def _find(self, shift: str | None, role: str, what: str, a: Alert) -> Duty | None:
        duty, missed = self.roster.find(self.line_id, shift, role)
        if missed:
            self.misses += 1
            logger.warning("line %s, shift %s: nobody on duty as %s for %s of alert %s; %s", self.line_id, shift,
                           ROLE_WORDS[role], what, a.id,
                           f"{ROLE_WORDS[duty.role]} {duty.username} takes it" if duty else "nobody on the roster at all")
        return duty

    def _shift(self, now: datetime, alert_shift: str | None = None) -> str | None:
        """The current shift: the latest part's (the line says it), else the alarm's own, else the clock's."""
        if self.shift or alert_shift:
            return self.shift or alert_shift
        return self.shift_at(now) if self.shift_at is not None else None

    # -- per decision --------------------------------------------------------------------------------
    def assign(self, board: AlarmBoard, changes: list[Change], now: datetime, shift: str | None = None) -> list[Change]:
        """Assign each newly raised alert to the on-duty operator; patches the raised snapshot (so the
        outputs see ``assigned_to``) and returns the ``assigned`` changes (recorded, not published)."""
        if shift:
            self.shift = shift
        if not self.active:
            return []
        out = []
        for ch in changes:
            if ch.event != "raised" or ch.alert.get("assigned_to"):
                continue
            a = board.get(ch.alert["cause"])
            if a is None or a.id != ch.alert["id"]:
                continue
            duty = self._find(self._shift(now, a.shift), "operator", "the assignment", a)
            a.assigned_to = duty.username if duty else None
            ch.alert["assigned_to"] = a.assigned_to
            detail = {"role": duty.role if duty else "operator", "username": a.assigned_to,
                      "shift": self._shift(now, a.shift)}
            out.append(Change("assigned", a.public(), _event(a, "assigned", now, detail), publish=False))
        return out

    # -- every second --------------------------------------------------------------------------------
    def tick(self, board: AlarmBoard, now: datetime) -> list[Change]:
        """The roster alarm, then the escalation steps that are due (one step per alert per tick)."""
        if not self.active:
            return []
        changes = self._roster_alarm(board, now)
        changes += self.assign(board, changes, now)
        for a in board.open_alerts():
            due = next_step({"state": a.state, "severity": a.severity, "raised_at": a.raised_at,
                             "escalation_level": a.escalation_level}, now, self.rules)
            if due is None:
                continue
            level, step = due
            shift = self._shift(now, a.shift)
            duty = self._find(shift, step.role, f"escalation step {level}", a)
            a.escalation_level, a.escalated_at, a.updated_at = level, now, now
            a.escalated_to, a.escalated_role = (duty.username, duty.role) if duty else (None, step.role)
            minutes = round((now - a.raised_at).total_seconds() / 60, 1)
            esc = {"role": a.escalated_role, "username": a.escalated_to, "contact": duty.contact if duty else None,
                   "level": level, "asked_role": step.role, "after_min": step.after_min, "unacknowledged_min": minutes,
                   "shift": shift}
            logger.info("line %s: alert %s (%s) unacknowledged for %.1f min: escalated to %s %s", self.line_id, a.id,
                        a.cause, minutes, ROLE_WORDS[a.escalated_role], a.escalated_to or "(nobody on duty)")
            alert = {**a.public(), "escalation": esc}
            changes.append(Change("escalated", alert, _event(a, "escalated", now, esc), publish=True))
        return changes

    def _roster_alarm(self, board: AlarmBoard, now: datetime) -> list[Change]:
        shift = self._shift(now)
        if shift is None:
            return []  # no part yet and no shift clock: the shift is unknown
        if self.roster.on_duty(self.line_id, shift, "operator") is not None:
            self._roster_alarm_shift = None
            return board.on_condition_ended(ROSTER_CAUSE, now)
        if self._roster_alarm_shift == shift:
            return []  # raised for this shift already (and perhaps cleared by someone): once per shift
        self._roster_alarm_shift = shift
        title = f"No operator on duty for {self.line_id}, shift {shift}: alarms cannot be assigned"
        logger.warning("line %s: %s", self.line_id, title)
        return board.on_condition(ROSTER_CAUSE, now, severity="medium", title=title, shift=shift,
                                  action="Ask an admin to put an operator on the roster for this line and shift "
                                         "(Roster page or pq roster set).")

    def status(self) -> dict:
        return {"active": self.active, "roster_source": self.roster_source, "shift": self.shift,
                "entries": len(self.roster) if self.roster is not None else 0, "misses": self.misses,
                "rules": self.rules.source}
