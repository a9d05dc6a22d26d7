"""Alert queue, alert detail, trend and similar alerts: the reads behind the operator pages.

The queue is what needs the operator: active alerts, acknowledged ones still waiting for feedback
(for ``PQ_UI_QUEUE_WINDOW_H``) and shelved ones whose shelf time is over. Sorted: unacknowledged
first, then most severe, then newest. Every query is bounded by an index and a limit.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, case, or_, select

from models.scoring import value_feature_candidates
from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["queue", "shelved", "get_alert", "events", "similar", "part_context", "signal_trend",
           "SEVERITY_RANK"]

SEVERITY_RANK = {"high": 3, "medium": 2, "low": 1}
_QUEUE_COLS = ("id", "line_id", "kind", "cause", "state", "severity", "serial", "station", "title", "action",
               "raised_at", "updated_at", "repeat_count", "acked_at", "acked_by", "shelved_until", "feedback",
               "product", "material_lot", "score",
               "assigned_to", "escalation_level", "escalated_to", "escalated_role", "escalated_at")


def queue(store: Store, *, line_id: str | None = None, now: datetime | None = None, limit: int = 100) -> list[dict]:
    now = now or datetime.now(timezone.utc)
    a = schema.alerts.c
    since = now - timedelta(hours=store.settings.ui_queue_window_h)
    sev = case({"high": 3, "medium": 2, "low": 1}, value=a.severity, else_=0)
    unacked = case((a.acked_at.is_(None), 0), else_=1)
    stmt = (select(*[a[c] for c in _QUEUE_COLS])
            .where(or_(a.state == "active",
                       and_(a.state == "acknowledged", a.feedback.is_(None), a.raised_at >= since),
                       and_(a.state == "shelved", a.shelved_until <= now)))
            .order_by(unacked, sev.desc(), a.raised_at.desc()).limit(limit))
    if line_id:
        stmt = stmt.where(a.line_id == line_id)
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def shelved(store: Store, *, line_id: str | None = None, now: datetime | None = None, limit: int = 50) -> list[dict]:
    now = now or datetime.now(timezone.utc)
    a = schema.alerts.c
    stmt = (select(a.id, a.line_id, a.title, a.serial, a.shelved_until, a.shelve_reason, a.severity)
            .where(a.state == "shelved", a.shelved_until > now).order_by(a.shelved_until).limit(limit))
    if line_id:
        stmt = stmt.where(a.line_id == line_id)
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def get_alert(store: Store, alert_id: str) -> dict | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(schema.alerts).where(schema.alerts.c.id == alert_id)).first()
    return dict(row._mapping) if row else None


def events(store: Store, alert_id: str, limit: int = 50) -> list[dict]:
    e = schema.alert_events.c
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(schema.alert_events).where(e.alert_id == alert_id).order_by(e.at.desc()).limit(limit))]


def similar(store: Store, alert: dict, *, days: int = 90, limit: int = 6) -> list[dict]:
    """Earlier alerts on the same line with the same cause, and how they ended."""
    a = schema.alerts.c
    since = alert["raised_at"] - timedelta(days=days)
    stmt = (select(a.id, a.raised_at, a.serial, a.title, a.state, a.feedback, a.feedback_comment, a.feedback_by,
                   a.acked_at, a.acked_by, a.material_lot, a.product)
            .where(a.line_id == alert["line_id"], a.cause == alert["cause"], a.id != alert["id"],
                   a.raised_at >= since, a.raised_at <= alert["raised_at"])
            .order_by(a.raised_at.desc()).limit(limit))
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def part_context(store: Store, line_id: str, serial: str | None) -> dict[str, Any] | None:
    if not serial:
        return None
    p = schema.parts.c
    with store.engine.connect() as conn:
        row = conn.execute(select(schema.parts).where(p.line_id == line_id, p.serial == serial)).first()
    return dict(row._mapping) if row else None


def signal_trend(store: Store, line_id: str, signals: list[str], *, until: datetime, n_parts: int = 60,
                 feature_stat: str = "mean") -> dict[str, list]:
    """Per-part values of ``signals`` over the last ``n_parts`` parts of the line up to ``until``.

    ``until`` is a part's own ``cycle_end`` (the line's clock) where the part is known: the edge's
    decision time runs on another clock. Values come from the served feature vectors
    (``part_features``, the edge's row preferred over a backfill of the same part), the same
    numbers the model saw: per signal the first of ``<signal>__<feature_stat>``, ``__mean``,
    ``__value``, ``__last``, ``ctx__<signal>``, ``<signal>`` that the vectors hold (None where a
    part's value was NaN). Returns {"serial": [...], "cycle_end": [...], signal: [...]}, oldest first.
    """
    p, f = schema.parts.c, schema.part_features.c
    recent = (select(p.id, p.serial, p.cycle_end).where(p.line_id == line_id, p.cycle_end <= until + timedelta(seconds=1))
              .order_by(p.cycle_end.desc()).limit(n_parts).subquery())
    stmt = (select(recent.c.serial, recent.c.cycle_end, f.source, f.features)
            .select_from(recent.join(schema.part_features, schema.part_features.c.part_id == recent.c.id))
            .order_by(recent.c.cycle_end, recent.c.serial))
    rows: dict[str, tuple] = {}  # serial -> (cycle_end, features), oldest first
    with store.engine.connect() as conn:
        for serial, cycle_end, source, feats in conn.execute(stmt):
            if serial not in rows or source == "edge":  # several feature-set versions: the served one
                rows[serial] = (cycle_end, feats or {})
    out: dict[str, list] = {"serial": list(rows), "cycle_end": [r[0] for r in rows.values()]}
    for s in signals:
        names = [f"{s}__{feature_stat}", *value_feature_candidates(s)]
        key = next((n for n in names if any(n in feats for _, feats in rows.values())), None)
        out[s] = [None if key is None else feats.get(key) for _, feats in rows.values()]
    return out
