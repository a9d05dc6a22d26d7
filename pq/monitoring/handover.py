"""The shift handover: one page per line and shift that says what happened and what to watch.

Owns :func:`handover_summary` (alarms raised, acknowledged, escalated, shelved and still open at the
end of the shift; parts made and diverted, and what inspection found on the diverted ones so far;
periods when pq itself was degraded; what the next shift must watch, in plain sentences) and the
operators' handover notes (:func:`add_note`, role-checked and audited like every operator action).

Every number is counted from the store with the same rules the alert table shows, so the page, the
printed sheet and the message sent through the plant outputs (``pq handover send``) agree with it:

- *raised*: alerts (parts, episodes, floods, system) whose ``raised_at`` is in the shift; flood-held
  (``suppressed``) alerts are counted apart because nobody was called for them;
- *acknowledged* / *shelved* / *escalated*: ``alert_events`` of that kind in the shift;
- *still open*: raised before the shift ended and not cleared by then (for the running shift: now).

Reads the store only; must not import connectors, models, ui or simulators.

Example::

    clock = ShiftClock.from_settings(settings)
    summary = handover_summary(store, "line-1", clock.previous(clock.shift_at(now)))
    summary.headline            # "Shift A on line-1: 3 alarms (1 still open), 12 parts diverted ..."
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import and_, func, or_, select

from pq.auth import audit
from pq.auth.roles import Actor, require
from pq.errors import InvalidRequest
from pq.shifts import Shift
from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["HandoverSummary", "handover_summary", "add_note", "notes_for", "NOTE_MAX_CHARS"]

NOTE_MAX_CHARS = 2000
_ALARM_KINDS = ("part", "episode", "flood", "system")
_LIST_MAX = 20  # open alarms / waiting parts listed by name; the counts stay complete


@dataclass
class HandoverSummary:
    line_id: str
    shift: str
    start: datetime
    end: datetime
    running: bool                       # the shift is not over yet: counts are "so far"
    generated_at: datetime
    alarms: dict[str, int]              # raised, called (not flood-held), held_in_flood, acknowledged, shelved, escalated, still_open
    open_alarms: list[dict]             # title, state, raised_at, acked_by, shelved_until, action
    parts: dict[str, int]               # made, scored, not_scored, diverted
    diverted: dict[str, int]            # defect, ok, waiting (inspection outcome of the diverted parts so far)
    waiting_serials: list[str]
    degraded: list[dict]                # kind, source, started_at, ended_at, reason
    watch: list[str]                    # sentences for the next shift
    notes: list[dict] = field(default_factory=list)

    @property
    def headline(self) -> str:
        a, p = self.alarms, self.parts
        so_far = " so far" if self.running else ""
        return (f"Shift {self.shift} on {self.line_id}{so_far}: {a['called']} operator alarm(s) "
                f"({a['still_open']} still open), {p['diverted']} of {p['made']} parts diverted for inspection, "
                f"{len(self.degraded)} period(s) with pq degraded.")

    def message(self) -> dict[str, Any]:
        """What the plant outputs carry (MQTT, webhook): the counts, the sentences and the notes."""
        d = asdict(self)
        d["headline"] = self.headline
        d["text"] = self.text()
        return d

    def text(self) -> str:
        """The printable sheet as plain text (also the body a mail or Teams gateway can show)."""
        a, p, dv = self.alarms, self.parts, self.diverted
        lines = [self.headline, "",
                 f"Shift {self.shift}: {_hm(self.start)}–{_hm(self.end)} UTC",
                 f"Alarms: {a['raised']} raised ({a['held_in_flood']} held back in a flood), {a['acknowledged']} "
                 f"acknowledged, {a['escalated']} escalated, {a['shelved']} shelved, {a['still_open']} still open.",
                 f"Parts: {p['made']} made, {p['diverted']} diverted, {p['not_scored']} not scored. Diverted parts "
                 f"inspected: {dv['defect']} defective, {dv['ok']} good, {dv['waiting']} waiting.", ""]
        if self.watch:
            lines.append("Watch next shift:")
            lines += [f"- {w}" for w in self.watch]
        if self.notes:
            lines += ["", "Notes:"]
            lines += [f"- {n['author']} ({_hm(n['created_at'])}): {n['note']}" for n in self.notes]
        return "\n".join(lines)


def _hm(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%H:%M")


def _count(conn, stmt) -> int:
    return int(conn.execute(stmt).scalar() or 0)


def handover_summary(store: Store, line_id: str, shift: Shift, *, now: datetime | None = None) -> HandoverSummary:
    """The summary of ``line_id`` over ``shift`` (a running shift is summarised up to ``now``)."""
    now = now or datetime.now(timezone.utc)
    start, end = shift.start, min(shift.end, now)
    a, ev = schema.alerts.c, schema.alert_events.c
    alarm = and_(a.line_id == line_id, a.kind.in_(_ALARM_KINDS))
    with store.engine.connect() as conn:
        in_shift = and_(alarm, a.raised_at >= start, a.raised_at < end)
        raised = _count(conn, select(func.count()).where(in_shift))
        held = _count(conn, select(func.count()).select_from(schema.alert_events.join(
            schema.alerts, schema.alerts.c.id == ev.alert_id)).where(
            in_shift, ev.event == "suppressed"))

        def events(kind: str) -> int:
            return _count(conn, select(func.count(func.distinct(ev.alert_id))).select_from(
                schema.alert_events.join(schema.alerts, schema.alerts.c.id == ev.alert_id)).where(
                alarm, ev.event == kind, ev.at >= start, ev.at < end))

        open_at_end = and_(alarm, a.raised_at < end, or_(a.cleared_at.is_(None), a.cleared_at > end))
        open_rows = conn.execute(
            select(a.title, a.state, a.raised_at, a.acked_by, a.shelved_until, a.shelve_reason, a.action, a.kind)
            .where(open_at_end).order_by(a.raised_at)).all()

        p, pr, ins = schema.parts.c, schema.predictions.c, schema.inspections.c
        made = _count(conn, select(func.count()).where(p.line_id == line_id, p.cycle_end >= start, p.cycle_end < end))
        by_decision = dict(conn.execute(
            select(pr.decision, func.count()).where(pr.line_id == line_id, pr.decided_at >= start, pr.decided_at < end)
            .group_by(pr.decision)).all())
        diverted_rows = conn.execute(
            select(pr.serial, ins.defect).select_from(schema.predictions.outerjoin(
                schema.inspections, and_(ins.line_id == pr.line_id, ins.serial == pr.serial)))
            .where(pr.line_id == line_id, pr.decided_at >= start, pr.decided_at < end, pr.decision == "at_risk")
            .order_by(pr.decided_at)).all()

        le = schema.line_events.c
        degraded_rows = conn.execute(
            select(le.kind, le.source, le.started_at, le.ended_at, le.detail)
            .where(le.line_id == line_id, le.started_at < end, or_(le.ended_at.is_(None), le.ended_at > start),
                   le.kind.notin_(("scoring", "connection_recovered")))
            .order_by(le.started_at)).all()
        notes = _notes(conn, line_id, shift)
        acted = {kind: events(kind) for kind in ("acknowledged", "shelved", "escalated")}

    diverted = {"defect": sum(1 for _, d in diverted_rows if d is True),
                "ok": sum(1 for _, d in diverted_rows if d is False),
                "waiting": sum(1 for _, d in diverted_rows if d is None)}
    waiting = [s for s, d in diverted_rows if d is None]
    degraded = [{"kind": k, "source": src, "started_at": s0, "ended_at": s1,
                 "reason": (det or {}).get("reason") if isinstance(det, dict) else None}
                for k, src, s0, s1, det in degraded_rows]
    open_alarms = [{"title": t, "state": st, "raised_at": ra, "acked_by": by, "shelved_until": su,
                    "shelve_reason": sr, "action": act, "kind": kind}
                   for t, st, ra, by, su, sr, act, kind in open_rows]
    summary = HandoverSummary(
        line_id=line_id, shift=shift.name, start=shift.start, end=shift.end, running=now < shift.end,
        generated_at=now,
        alarms={"raised": raised, "called": raised - held, "held_in_flood": held,
                **acted, "still_open": len(open_alarms)},
        open_alarms=open_alarms[:_LIST_MAX],
        parts={"made": made, "scored": by_decision.get("ok", 0) + by_decision.get("at_risk", 0),
               "not_scored": by_decision.get("not_scored", 0), "diverted": by_decision.get("at_risk", 0)},
        diverted=diverted, waiting_serials=waiting[:_LIST_MAX], degraded=degraded, watch=[], notes=notes)
    summary.watch = _watch(summary, end)
    return summary


def _watch(s: HandoverSummary, end: datetime) -> list[str]:
    """What the next shift must look at, most urgent first, in operator words."""
    out = []
    for al in s.open_alarms:
        since = f"since {_hm(al['raised_at'])}"
        if al["state"] == "shelved" and al["shelved_until"] is not None:
            out.append(f"Shelved until {_hm(al['shelved_until'])}: {al['title']}"
                       + (f" (reason: {al['shelve_reason']})" if al["shelve_reason"] else ""))
        elif al["state"] == "acknowledged":
            out.append(f"Still open, acknowledged by {al['acked_by'] or 'an operator'} ({since}): {al['title']}"
                       + (f" — {al['action']}" if al["action"] else ""))
        elif al["state"] == "suppressed":
            out.append(f"Held back in a flood ({since}): {al['title']}")
        else:
            out.append(f"Not acknowledged ({since}): {al['title']}" + (f" — {al['action']}" if al["action"] else ""))
    for d in s.degraded:
        if d["ended_at"] is None or d["ended_at"] >= end:
            what = d["reason"] or d["kind"].replace("_", " ")
            out.append(f"pq is still degraded ({d['source']}, since {_hm(d['started_at'])}): {what}")
    if s.diverted["waiting"]:
        names = ", ".join(s.waiting_serials[:5]) + (" …" if s.diverted["waiting"] > 5 else "")
        out.append(f"{s.diverted['waiting']} diverted part(s) still wait for inspection: {names}")
    return out


# ------------------------------------------------------------------ notes
def _notes(conn, line_id: str, shift: Shift) -> list[dict]:
    n = schema.handover_notes.c
    rows = conn.execute(select(n.author, n.note, n.created_at).where(
        n.line_id == line_id, n.shift_start == shift.start).order_by(n.created_at)).all()
    return [{"author": au, "note": no, "created_at": ca} for au, no, ca in rows]


def notes_for(store: Store, line_id: str, shift: Shift) -> list[dict]:
    with store.engine.connect() as conn:
        return _notes(conn, line_id, shift)


def add_note(store: Store, line_id: str, shift: Shift, *, actor: Actor, note: str,
             now: datetime | None = None) -> dict:
    """Add an operator's note to the handover of ``shift`` (operator role or above; audited)."""
    require(actor, "operator")
    text = (note or "").strip()
    if not text:
        raise InvalidRequest("write the note first: it is empty")
    if len(text) > NOTE_MAX_CHARS:
        raise InvalidRequest(f"a handover note holds at most {NOTE_MAX_CHARS} characters, this one has {len(text)}")
    row = {"id": str(uuid.uuid4()), "line_id": line_id, "shift": shift.name, "shift_start": shift.start,
           "author": actor.username, "note": text, "created_at": now or datetime.now(timezone.utc)}
    with store.engine.begin() as conn:
        conn.execute(schema.handover_notes.insert().values(**row))
        audit.record(conn, username=actor.username, action="handover.note", target=f"{line_id}/{shift.key}",
                     detail={"chars": len(text)}, client=actor.client)
    return row
