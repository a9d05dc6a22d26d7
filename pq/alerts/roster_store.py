"""Rosters in the store: set, remove and list who is on duty (admins only, audited), and load them.

Every change checks the actor's role here, on the server (admin), names a pq user that exists and
is active, and writes its ``audit_log`` row in the same transaction (``roster.set`` /
``roster.remove``). One person per line, shift and duty role: setting it again replaces them.
The edge's housekeeper reads the roster with :func:`load_roster` and keeps a copy on local disk.

Example::

    set_duty(store, "line-1", "B", "operator", "ann", actor=Actor("root", "admin"), contact="+49 151 ...")
    load_roster(store, "line-1").find("line-1", "B", "shift_lead")
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from sqlalchemy import delete, or_, select, update

from pq.alerts.roster import Duty, Roster, validate_duty
from pq.auth import audit
from pq.auth.roles import Actor, require
from pq.errors import InvalidRequest
from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["set_duty", "remove_duty", "list_duties", "load_roster"]

logger = logging.getLogger(__name__)


def _duty(r) -> Duty:
    return Duty(r.line_id, r.shift, r.duty_role, r.username, r.contact)


def set_duty(store: Store, line_id: str, shift: str, role: str, username: str, *, actor: Actor,
             contact: str | None = None) -> Duty:
    """Put ``username`` on duty as ``role`` for line and shift (``*`` = all); replaces who held it."""
    require(actor, "admin")
    line_id, shift, role, contact = validate_duty(line_id, shift, role, contact)
    username = (username or "").strip()
    now = datetime.now(timezone.utc)
    t, u = schema.rosters, schema.users
    with store.engine.begin() as conn:
        user = conn.execute(select(u.c.username, u.c.active).where(u.c.username == username)).first()
        if user is None:
            raise InvalidRequest(f"no user named {username!r}: add them first (pq users add)")
        if not user.active:
            raise InvalidRequest(f"user {username!r} is disabled and cannot be on duty")
        key = (t.c.line_id == line_id) & (t.c.shift == shift) & (t.c.duty_role == role)
        before = conn.execute(select(t.c.username).where(key)).scalar()
        values = {"username": username, "contact": contact, "updated_by": actor.username, "updated_at": now}
        if before is None:
            conn.execute(t.insert().values(line_id=line_id, shift=shift, duty_role=role, **values))
        else:
            conn.execute(update(t).where(key).values(**values))
        audit.record(conn, username=actor.username, action="roster.set", target=f"roster:{line_id}/{shift}/{role}",
                     detail={"username": username, "before": before, "contact": contact}, client=actor.client, at=now)
    logger.info("roster %s/%s/%s: %s (was %s) by %s", line_id, shift, role, username, before, actor.username)
    return Duty(line_id, shift, role, username, contact)


def remove_duty(store: Store, line_id: str, shift: str, role: str, *, actor: Actor) -> str:
    """Take whoever holds ``role`` for line and shift off the roster; returns their user name."""
    require(actor, "admin")
    line_id, shift, role, _ = validate_duty(line_id, shift, role)
    t = schema.rosters
    key = (t.c.line_id == line_id) & (t.c.shift == shift) & (t.c.duty_role == role)
    with store.engine.begin() as conn:
        before = conn.execute(select(t.c.username).where(key)).scalar()
        if before is None:
            raise InvalidRequest(f"nobody is on the roster as {role} for line {line_id}, shift {shift}")
        conn.execute(delete(t).where(key))
        audit.record(conn, username=actor.username, action="roster.remove",
                     target=f"roster:{line_id}/{shift}/{role}", detail={"username": before}, client=actor.client)
    logger.info("roster %s/%s/%s: %s removed by %s", line_id, shift, role, before, actor.username)
    return before


def list_duties(store: Store, line_id: str | None = None) -> list[Duty]:
    """The roster (for one line: its own entries and those for every line), sorted."""
    t = schema.rosters
    stmt = select(t)
    if line_id:
        stmt = stmt.where(or_(t.c.line_id == line_id, t.c.line_id == "*"))
    with store.engine.connect() as conn:
        return list(Roster(_duty(r) for r in conn.execute(stmt)).duties)


def load_roster(store: Store, line_id: str | None = None) -> Roster:
    return Roster(list_duties(store, line_id))
