"""Alert precision from operator feedback, per UTC day.

precision = confirmed / (confirmed + false_alarm); alerts without feedback and "not checked" are
counted but left out of the ratio (they say nothing about the part). ``feedback_rate`` shows how
far the number can be trusted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["precision_by_day"]


def precision_by_day(store: Store, *, days: int = 14, line_id: str | None = None,
                     now: datetime | None = None) -> list[dict]:
    now = now or datetime.now(timezone.utc)
    a = schema.alerts.c
    stmt = select(a.raised_at, a.feedback).where(a.raised_at >= now - timedelta(days=days),
                                               a.kind.in_(("part", "episode")))
    if line_id:
        stmt = stmt.where(a.line_id == line_id)
    counts: dict[str, Counter] = defaultdict(Counter)
    with store.engine.connect() as conn:
        for raised_at, feedback in conn.execute(stmt):
            counts[raised_at.strftime("%Y-%m-%d")][feedback or "none"] += 1
    out = []
    for day in sorted(counts):
        c = counts[day]
        judged = c["confirmed"] + c["false_alarm"]
        total = sum(c.values())
        out.append({"day": day, "alerts": total, "confirmed": c["confirmed"], "false_alarm": c["false_alarm"],
                    "not_checked": c["not_checked"], "no_feedback": c["none"],
                    "precision": round(c["confirmed"] / judged, 3) if judged else None,
                    "feedback_rate": round((total - c["none"]) / total, 3) if total else None})
    return out
