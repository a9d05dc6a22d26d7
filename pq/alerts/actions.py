"""Operator actions on alerts, done on the server: acknowledge, shelve, unshelve, feedback.

Each action checks the actor's role (operator or above), then in ONE transaction updates the
``alerts`` row with a conditional UPDATE (so two operators clicking at once cannot both win), appends
an ``alert_events`` row and an ``audit_log`` row. Repeating an action that is already in effect
changes nothing and writes nothing (idempotent): ``ActionResult.changed`` says which happened.

Feedback is the operator's label for the part (confirmed defect / false alarm / not checked); the
training dataset reads it from ``alerts.feedback``. Giving feedback on an unacknowledged alert also
acknowledges it: the operator has plainly seen it.

Example::

    acknowledge(store, alert_id, actor=Actor("ann", "operator", client="10.0.0.7"))
    shelve(store, alert_id, actor=..., reason="sensor being replaced", duration_s=3600)
    give_feedback(store, alert_id, actor=..., verdict="false_alarm", comment="part measured OK")
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Connection

from pq.auth import audit
from pq.errors import InvalidRequest
from pq.auth.roles import Actor, require
from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["ActionResult", "VERDICTS", "acknowledge", "shelve", "unshelve", "give_feedback",
           "REASON_MAX_CHARS", "COMMENT_MAX_CHARS"]

logger = logging.getLogger(__name__)

VERDICTS = ("confirmed", "false_alarm", "not_checked")
REASON_MAX_CHARS = 500
COMMENT_MAX_CHARS = 2000
_ROLE = "operator"
_MIN_SHELVE_S = 60.0


@dataclass(frozen=True)
class ActionResult:
    alert_id: str
    action: str
    changed: bool          # False when the action was already in effect (nothing written)
    state: str             # the alert's state afterwards
    message: str           # one sentence for the operator


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _load(conn: Connection, alert_id: str) -> dict:
    row = conn.execute(select(schema.alerts).where(schema.alerts.c.id == alert_id)).first()
    if row is None:
        raise InvalidRequest(f"alert {alert_id!r} does not exist")
    return dict(row._mapping)


def _event(conn: Connection, alert_id: str, event: str, actor: Actor, at: datetime,
           detail: dict[str, Any] | None) -> None:
    conn.execute(schema.alert_events.insert().values(
        id=str(uuid.uuid4()), alert_id=alert_id, event=event, at=at, username=actor.username, detail=detail,
    ))


def _record(conn: Connection, alert: dict, event: str, actor: Actor, at: datetime,
            detail: dict[str, Any] | None = None) -> None:
    _event(conn, alert["id"], event, actor, at, detail)
    audit.record(conn, username=actor.username, action=f"alert.{event}", target=f"alert:{alert['id']}",
                 detail={"line_id": alert["line_id"], "serial": alert["serial"], "cause": alert["cause"]}
                 | (detail or {}),
                 client=actor.client, at=at)


def _clean_text(value: str | None, what: str, max_chars: int, required: bool) -> str | None:
    text = (value or "").strip()
    if required and len(text) < 3:
        raise InvalidRequest(f"{what} is required (at least 3 characters), got {len(text)}")
    if len(text) > max_chars:
        raise InvalidRequest(f"{what} must be at most {max_chars} characters, got {len(text)}")
    # Stored as typed; the UI renders it as text, never as HTML.
    return text or None


def acknowledge(store: Store, alert_id: str, *, actor: Actor) -> ActionResult:
    """Mark the alert as seen by ``actor``. Already acknowledged: nothing changes."""
    require(actor, _ROLE)
    at = _now()
    with store.engine.begin() as conn:
        alert = _load(conn, alert_id)
        a = schema.alerts.c
        values: dict[str, Any] = {"acked_at": at, "acked_by": actor.username}
        if alert["state"] == "active":
            values["state"] = "acknowledged"
        changed = conn.execute(
            update(schema.alerts).where(a.id == alert_id, a.acked_at.is_(None)).values(**values)
        ).rowcount
        if not changed:
            alert = _load(conn, alert_id)
            return ActionResult(alert_id, "acknowledge", False, alert["state"],
                                f"already acknowledged by {alert['acked_by']}")
        _record(conn, alert, "acknowledged", actor, at)
        state = values.get("state", alert["state"])
    logger.info("alert %s acknowledged by %s", alert_id, actor.username)
    return ActionResult(alert_id, "acknowledge", True, state, "acknowledged")


def shelve(store: Store, alert_id: str, *, actor: Actor, reason: str, duration_s: float) -> ActionResult:
    """Hide the alert from the queue until now + ``duration_s``, with a required reason.

    Shelving an alert that is already shelved only changes something when it extends the expiry.
    The longest shelve is ``PQ_UI_SHELVE_MAX_H``; a cleared alert cannot be shelved.
    """
    require(actor, _ROLE)
    reason = _clean_text(reason, "shelve reason", REASON_MAX_CHARS, required=True)
    max_s = store.settings.ui_shelve_max_h * 3600.0
    try:
        duration_s = float(duration_s)
    except (TypeError, ValueError):
        raise InvalidRequest(f"shelve duration must be a number of seconds, got {duration_s!r}") from None
    if not _MIN_SHELVE_S <= duration_s <= max_s:
        raise InvalidRequest(
            f"shelve duration must be between {_MIN_SHELVE_S:.0f} s and {max_s:.0f} s, got {duration_s:.0f} s"
        )
    at = _now()
    until = at + timedelta(seconds=duration_s)
    with store.engine.begin() as conn:
        alert = _load(conn, alert_id)
        if alert["state"] == "cleared":
            return ActionResult(alert_id, "shelve", False, "cleared", "this alert is already cleared")
        a = schema.alerts.c
        changed = conn.execute(
            update(schema.alerts)
            .where(a.id == alert_id, a.state != "cleared",
                   or_(a.state != "shelved", a.shelved_until.is_(None), a.shelved_until < until - timedelta(seconds=60)))
            .values(state="shelved", shelved_until=until, shelve_reason=reason)
        ).rowcount
        if not changed:
            alert = _load(conn, alert_id)
            return ActionResult(alert_id, "shelve", False, alert["state"],
                                f"already shelved until {alert['shelved_until']:%H:%M} UTC")
        _record(conn, alert, "shelved", actor, at,
                {"reason": reason, "until": until.isoformat(), "duration_s": duration_s,
                 "previous_state": alert["state"]})
    logger.info("alert %s shelved by %s for %.0f s", alert_id, actor.username, duration_s)
    return ActionResult(alert_id, "shelve", True, "shelved", f"shelved until {until:%H:%M} UTC")


def unshelve(store: Store, alert_id: str, *, actor: Actor) -> ActionResult:
    """Bring a shelved alert back (acknowledged when it had been, else active)."""
    require(actor, _ROLE)
    at = _now()
    with store.engine.begin() as conn:
        alert = _load(conn, alert_id)
        if alert["state"] != "shelved":
            return ActionResult(alert_id, "unshelve", False, alert["state"], "this alert is not shelved")
        back = "acknowledged" if alert["acked_at"] is not None else "active"
        a = schema.alerts.c
        changed = conn.execute(
            update(schema.alerts).where(a.id == alert_id, a.state == "shelved")
            .values(state=back, shelved_until=None)
        ).rowcount
        if not changed:
            return ActionResult(alert_id, "unshelve", False, _load(conn, alert_id)["state"], "this alert is not shelved")
        _record(conn, alert, "unshelved", actor, at, {"state": back})
    logger.info("alert %s unshelved by %s", alert_id, actor.username)
    return ActionResult(alert_id, "unshelve", True, back, "back in the queue")


def give_feedback(store: Store, alert_id: str, *, actor: Actor, verdict: str,
                  comment: str | None = None) -> ActionResult:
    """Store the operator's verdict on the part (a label for retraining) with an optional comment.

    The same verdict and comment again changes nothing; a different one corrects the earlier
    feedback (both stay in ``alert_events``). An unacknowledged alert is acknowledged as well.
    """
    require(actor, _ROLE)
    if verdict not in VERDICTS:
        raise InvalidRequest(f"feedback must be one of {', '.join(VERDICTS)}, got {verdict!r}")
    comment = _clean_text(comment, "comment", COMMENT_MAX_CHARS, required=False)
    at = _now()
    with store.engine.begin() as conn:
        alert = _load(conn, alert_id)
        a = schema.alerts.c
        values: dict[str, Any] = {"feedback": verdict, "feedback_comment": comment,
                                  "feedback_by": actor.username, "feedback_at": at}
        acking = alert["acked_at"] is None
        if acking:
            values |= {"acked_at": at, "acked_by": actor.username}
            if alert["state"] == "active":
                values["state"] = "acknowledged"
        changed = conn.execute(
            update(schema.alerts).where(a.id == alert_id, or_(a.feedback.is_(None), a.feedback != verdict,
                                             a.feedback_comment.is_distinct_from(comment))).values(**values)
        ).rowcount
        if not changed:
            return ActionResult(alert_id, "feedback", False, alert["state"], "feedback already recorded")
        if acking:
            _record(conn, alert, "acknowledged", actor, at, {"with": "feedback"})
        _record(conn, alert, "feedback", actor, at,
                {"verdict": verdict, "comment": comment, "previous": alert["feedback"]})
        state = values.get("state", alert["state"])
    logger.info("feedback %s on alert %s by %s", verdict, alert_id, actor.username)
    return ActionResult(alert_id, "feedback", True, state, "thank you: feedback saved")
