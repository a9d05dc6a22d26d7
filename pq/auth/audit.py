"""The audit log: who did what, when, from where. Append-only.

Every state-changing action of a person (acknowledge, shelve, feedback, retrain, promote, rollback,
playbook edits, user changes, logins) writes one row, in the same transaction as the change it
records, so the log cannot disagree with the data.

Example::

    with store.engine.begin() as conn:
        record(conn, username="ann", action="alert.acknowledge", target="alert:1f0c...", client="10.0.0.7")
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from pq.storage import schema

__all__ = ["record", "query"]


def record(conn: Connection, *, username: str, action: str, target: str | None = None,
           detail: dict[str, Any] | None = None, client: str | None = None,
           at: datetime | None = None) -> None:
    """Append one audit row inside the caller's transaction."""
    conn.execute(schema.audit_log.insert().values(
        at=at or datetime.now(timezone.utc), username=username, action=action,
        target=target, detail=detail, client=(client or "")[:100] or None,
    ))


def query(conn: Connection, *, start: datetime | None = None, end: datetime | None = None,
          username: str | None = None, action_prefix: str | None = None, text_filter: str | None = None,
          limit: int = 200) -> list[dict]:
    """Newest first, filtered; bounded by ``limit`` (the index on ``at`` keeps this cheap)."""
    t = schema.audit_log
    stmt = select(t).order_by(t.c.at.desc(), t.c.id.desc()).limit(max(1, min(limit, 5000)))
    if start is not None:
        stmt = stmt.where(t.c.at >= start)
    if end is not None:
        stmt = stmt.where(t.c.at < end)
    if username:
        stmt = stmt.where(t.c.username == username)
    if action_prefix:
        stmt = stmt.where(t.c.action.like(action_prefix.replace("%", r"\%").replace("_", r"\_") + "%", escape="\\"))
    if text_filter:
        pattern = "%" + text_filter.replace("%", r"\%").replace("_", r"\_") + "%"
        stmt = stmt.where(t.c.target.ilike(pattern, escape="\\") | t.c.action.ilike(pattern, escape="\\"))
    return [dict(r._mapping) for r in conn.execute(stmt)]
