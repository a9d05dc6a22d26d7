"""Alarm-system KPIs in the spirit of ISA-18.2 / EEMUA 191, from the ``alerts`` table.

Per line (one operator per line is the assumption; ``operators`` scales it): alerts per 10 minutes
(average and peak; the guideline is about 1 per operator on average, and 10 or more in 10 minutes
is a flood), the share of time in flood, top causes, and time to acknowledge.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from statistics import median

from sqlalchemy import select

from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["alarm_kpis", "GUIDELINE_PER_10MIN", "FLOOD_PER_10MIN"]

GUIDELINE_PER_10MIN = 1.0
FLOOD_PER_10MIN = 10
_BUCKET_S = 600


def alarm_kpis(store: Store, *, hours: float = 24.0, now: datetime | None = None, operators: int = 1,
               max_rows: int = 200_000) -> dict:
    """KPIs over the last ``hours``: {"lines": {line: {...}}, "top_causes": [...], "window_h": hours}."""
    now = now or datetime.now(timezone.utc)
    since = now - timedelta(hours=hours)
    a = schema.alerts.c
    stmt = (select(a.line_id, a.cause, a.raised_at, a.acked_at, a.kind).where(a.raised_at >= since)
            .order_by(a.raised_at.desc()).limit(max_rows))
    buckets: dict[str, Counter] = defaultdict(Counter)
    acks: dict[str, list[float]] = defaultdict(list)
    causes: Counter = Counter()
    line_causes: dict[str, Counter] = defaultdict(Counter)
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    for line_id, cause, raised_at, acked_at, kind in rows:
        k = int((raised_at - since).total_seconds() // _BUCKET_S)
        buckets[line_id][k] += 1
        if kind != "flood":
            causes[cause] += 1
            line_causes[line_id][cause] += 1
        if acked_at is not None:
            acks[line_id].append((acked_at - raised_at).total_seconds())
    n_buckets = max(1, int(hours * 3600 // _BUCKET_S))
    lines = {}
    for line_id, b in sorted(buckets.items()):
        total = sum(b.values())
        per10 = total / n_buckets / max(1, operators)
        floods = sum(1 for v in b.values() if v / max(1, operators) >= FLOOD_PER_10MIN)
        t = acks.get(line_id, [])
        lines[line_id] = {
            "alerts": total, "per_10min_avg": round(per10, 3), "per_10min_peak": max(b.values()),
            "within_guideline": per10 <= GUIDELINE_PER_10MIN, "flood_periods": floods,
            "time_in_flood_pct": round(100 * floods / n_buckets, 2),
            "ack_median_s": round(median(t), 1) if t else None, "ack_mean_s": round(sum(t) / len(t), 1) if t else None,
            "unacknowledged": total - len(t), "top_causes": line_causes[line_id].most_common(3),
        }
    return {"window_h": hours, "lines": lines, "top_causes": causes.most_common(10),
            "guideline_per_10min": GUIDELINE_PER_10MIN, "flood_per_10min": FLOOD_PER_10MIN, "truncated": len(rows) >= max_rows}
