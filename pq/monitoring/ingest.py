"""Ingest health per connector from ``component_health``: state, samples/s, lag, spool depth, drops."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select

from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["ingest_health"]


def _age_s(iso: str | None, now: datetime) -> float | None:
    if not iso:
        return None
    try:
        ts = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None
    ts = ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
    return round((now - ts).total_seconds(), 1)


def ingest_health(store: Store, now: datetime | None = None) -> list[dict]:
    """One row per ``connector:*`` component, newest report first; unknown values are None."""
    now = now or datetime.now(timezone.utc)
    h = schema.component_health.c
    with store.engine.connect() as conn:
        rows = conn.execute(select(schema.component_health).where(h.component.like("connector:%"))
                            .order_by(h.component)).all()
    out = []
    for r in rows:
        d = r.detail or {}
        spool = d.get("spool") if isinstance(d.get("spool"), dict) else {}
        dropped = d.get("dropped")
        out.append({
            "component": r.component, "line_id": r.line_id, "state": r.state,
            "reported_s_ago": round((now - r.updated_at).total_seconds(), 1),
            "samples_per_s": d.get("samples_per_s"),
            "lag_s": d.get("lag_s", _age_s(d.get("last_notification_at"), now)),
            "spool_depth": spool.get("depth_records", d.get("spool_depth")),
            "spool_oldest_s": spool.get("oldest_age_s"),
            "dropped": sum(dropped.values()) if isinstance(dropped, dict) else dropped,
            "reconnects": d.get("reconnects"),
            "source_changes": list(d.get("source_changes") or []),  # plain sentences: scores paused by the server
        })
    return out
