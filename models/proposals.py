"""Proposals of scheduled retraining: a candidate, its report and verdict, and the engineer's decision.

Owns ``training_proposals``. A run of a schedule (:mod:`models.scheduler`) records one proposal:
``proposed`` when the candidate passed the registry's gate against production (it waits for an
engineer), ``failed`` when it did not or training itself failed (the candidate, if any, stays
registered with the report that failed it). Nothing here promotes on its own: :func:`approve` calls
:func:`models.registry.promote` with the approver's name and reason (the gate runs again, the audit
record carries the reason); :func:`reject` closes a proposal with a reason. Both are refused to
anyone who is not an active engineer or admin in ``users``. Imports pq and models only.

Example::

    for p in open_proposals(store): print(p.id, p.scope, p.candidate_version_id)
    approve(store, p.id, username="bob", reason="better FAR in the heatwave band", client="cli")
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from datetime import datetime, timezone

from sqlalchemy import func, insert, select, update

from models.estimator import json_safe
from pq.auth import audit
from pq.auth.roles import Actor, require
from pq.errors import InvalidRequest, PermissionDenied
from pq.storage import schema

__all__ = ["Proposal", "record_proposal", "list_proposals", "open_proposals", "get_proposal", "approve", "reject",
           "require_engineer"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Proposal:
    id: int
    schedule_id: int | None
    scope: str
    trigger: str
    candidate_version_id: int | None
    production_version_id: int | None
    report: dict
    verdict: str
    status: str
    shadow: str | None
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None


def _row(row) -> Proposal:
    return Proposal(**{f.name: row._mapping[f.name] for f in fields(Proposal)})


def require_engineer(store, username: str | None, what: str) -> Actor:
    """The user as an Actor when it is an active engineer or admin in ``users``, else PermissionDenied
    (the CLI's --user names a pq user; an unknown name is refused, not trusted)."""
    from pq.auth.users import get_user_by_name

    if not username or not username.strip():
        raise PermissionDenied(f"{what}: a user name is required (who is responsible)")
    user = get_user_by_name(store, username)
    if user is None:
        raise PermissionDenied(f"{what}: {username!r} is not a pq user (pq users add {username} --role engineer)")
    if not user.active:
        raise PermissionDenied(f"{what}: user {username!r} is deactivated")
    try:
        return require(Actor(user.username, user.role), "engineer")
    except PermissionDenied:
        raise PermissionDenied(f"{what}: {username!r} has role {user.role}; only an engineer or admin may") from None


def record_proposal(store, *, schedule_id: int | None, scope: str, trigger: str, candidate_version_id: int | None,
                    production_version_id: int | None, report: dict, verdict: str, status: str,
                    shadow: str | None = None) -> Proposal:
    t = schema.training_proposals
    with store.engine.begin() as conn:
        pid = conn.execute(insert(t).values(
            schedule_id=schedule_id, scope=scope, trigger=trigger, candidate_version_id=candidate_version_id,
            production_version_id=production_version_id, report=json_safe(report), verdict=verdict, status=status,
            shadow=shadow, created_at=datetime.now(timezone.utc))).inserted_primary_key[0]
    return get_proposal(store, pid)


def get_proposal(store, proposal_id: int) -> Proposal:
    t = schema.training_proposals
    with store.engine.connect() as conn:
        row = conn.execute(select(t).where(t.c.id == int(proposal_id))).first()
    if row is None:
        raise InvalidRequest(f"proposal #{proposal_id} does not exist (see `pq models proposals list --all`)")
    return _row(row)


def list_proposals(store, *, status: str | None = None, limit: int = 50) -> list[Proposal]:
    """Newest first."""
    t = schema.training_proposals
    q = select(t).order_by(t.c.id.desc()).limit(limit)
    if status:
        q = q.where(t.c.status == status)
    with store.engine.connect() as conn:
        return [_row(r) for r in conn.execute(q)]


def open_proposals(store) -> list[Proposal]:
    """Proposals waiting for an engineer's decision, newest first."""
    return list_proposals(store, status="proposed")


def _decide(store, proposal_id: int, status: str, username: str, reason: str, client: str) -> None:
    t = schema.training_proposals
    with store.engine.begin() as conn:
        done = conn.execute(update(t).where(t.c.id == int(proposal_id), t.c.status == "proposed").values(
            status=status, decided_by=username, decided_at=datetime.now(timezone.utc), reason=reason)).rowcount
        if done != 1:  # decided meanwhile by someone else
            raise InvalidRequest(f"proposal #{proposal_id} is no longer open")
        sid = conn.execute(select(t.c.schedule_id).where(t.c.id == int(proposal_id))).scalar()
        latest = conn.execute(select(func.max(t.c.id)).where(t.c.schedule_id == sid)).scalar()
        if sid is not None and latest == int(proposal_id):  # the schedule's last result now reads as decided
            ts = schema.training_schedules
            conn.execute(update(ts).where(ts.c.id == sid).values(
                last_result=f"proposal #{proposal_id} {status} by {username}"))
        audit.record(conn, username=username, action=f"model.proposal_{status}", target=f"training_proposal:{proposal_id}",
                     detail={"reason": reason}, client=client)


def _open_one(store, proposal_id: int, what: str) -> Proposal:
    p = get_proposal(store, proposal_id)
    if p.status != "proposed":
        raise InvalidRequest(f"{what}: proposal #{p.id} is {p.status}, not open"
                             + (f" (decided by {p.decided_by})" if p.decided_by else ""))
    return p


def _reason(reason: str | None, what: str) -> str:
    reason = (reason or "").strip()
    if len(reason) < 5:
        raise InvalidRequest(f"{what}: a reason is required (what was checked, why)")
    return reason


def approve(store, proposal_id: int, *, username: str, reason: str, client: str = "cli",
            margin: float | None = None):
    """Promote the proposal's candidate through :func:`models.registry.promote` (its gate runs again;
    the audit record names the approver and the reason). Returns the Deployment."""
    from models import registry

    actor = require_engineer(store, username, "approve a proposal")
    reason = _reason(reason, "approve a proposal")
    p = _open_one(store, proposal_id, "approve")
    dep = registry.promote(store, p.candidate_version_id, approved_by=actor.username,
                           reason=f"{reason} (scheduled proposal #{p.id}, trigger: {p.trigger})", client=client,
                           margin=margin, require_known_user=True)
    _decide(store, p.id, "approved", actor.username, reason, client)
    logger.info("proposal #%d approved by %s: #%d in production for %s", p.id, actor.username,
                dep.model_version_id, dep.scope)
    return dep


def reject(store, proposal_id: int, *, username: str, reason: str, client: str = "cli") -> Proposal:
    """Close an open proposal without promoting; the candidate stays registered."""
    actor = require_engineer(store, username, "reject a proposal")
    reason = _reason(reason, "reject a proposal")
    p = _open_one(store, proposal_id, "reject")
    _decide(store, p.id, "rejected", actor.username, reason, client)
    logger.info("proposal #%d rejected by %s: %s", p.id, actor.username, reason)
    return get_proposal(store, p.id)
