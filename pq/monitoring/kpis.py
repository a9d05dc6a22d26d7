"""Alarm-system KPIs in the spirit of ISA-18.2 / EEMUA 191, from the ``alerts`` table.

Per line (one operator per line is the assumption; ``operators`` scales it): alerts per 10 minutes
(average, and the peak of any sliding 10 minutes: what one operator faced; the guideline is about 1
per operator on average), floods, top causes and time to acknowledge.

A flood has one definition, the edge's: the alarm board (``pq.alerts.discipline.AlarmBoard``)
raises a ``flood`` alert when more than ``PQ_EDGE_FLOOD_LIMIT`` alerts arrive within
``PQ_EDGE_FLOOD_WINDOW_S``, and clears it when the rate falls. These KPIs count those flood alerts
and the time they were open; they never apply a threshold of their own.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from statistics import median

from sqlalchemy import select

from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["alarm_kpis", "max_in_window", "GUIDELINE_PER_10MIN"]

GUIDELINE_PER_10MIN = 1.0
_WINDOW_S = 600.0


def max_in_window(times: list[datetime], window_s: float = _WINDOW_S) -> int:
    """The largest number of events inside any window of ``window_s`` (two-pointer sweep)."""
    ts = sorted(t.timestamp() for t in times)
    best, j = 0, 0
    for i, t in enumerate(ts):
        while ts[j] <= t - window_s:
            j += 1
        best = max(best, i - j + 1)
    return best


def alarm_kpis(store: Store, *, hours: float = 24.0, now: datetime | None = None, operators: int = 1,
               max_rows: int = 200_000) -> dict:
    """KPIs over the last ``hours``: {"lines": {line: {...}}, "top_causes": [...], "window_h": hours}."""
    now = now or datetime.now(timezone.utc)
    since = now - timedelta(hours=hours)
    a = schema.alerts.c
    stmt = (select(a.line_id, a.kind, a.cause, a.raised_at, a.acked_at, a.cleared_at).where(a.raised_at >= since)
            .order_by(a.raised_at.desc()).limit(max_rows))
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    raised: dict[str, list[datetime]] = defaultdict(list)
    flood_s: dict[str, float] = defaultdict(float)
    floods: Counter = Counter()
    acks: dict[str, list[float]] = defaultdict(list)
    causes: Counter = Counter()
    line_causes: dict[str, Counter] = defaultdict(Counter)
    for line_id, kind, cause, raised_at, acked_at, cleared_at in rows:
        if kind == "flood":
            floods[line_id] += 1
            flood_s[line_id] += ((cleared_at or now) - raised_at).total_seconds()
            continue
        raised[line_id].append(raised_at)
        causes[cause] += 1
        line_causes[line_id][cause] += 1
        if acked_at is not None:
            acks[line_id].append((acked_at - raised_at).total_seconds())
    n_windows = max(1.0, hours * 3600 / _WINDOW_S)
    ops = max(1, operators)
    lines = {}
    for line_id in sorted(set(raised) | set(floods)):
        total = len(raised[line_id])
        per10 = total / n_windows / ops
        t = acks.get(line_id, [])
        lines[line_id] = {
            "alerts": total, "per_10min_avg": round(per10, 3), "per_10min_peak": max_in_window(raised[line_id]),
            "within_guideline": per10 <= GUIDELINE_PER_10MIN, "flood_periods": floods[line_id],
            "time_in_flood_pct": round(100 * min(flood_s[line_id], hours * 3600) / (hours * 3600), 2),
            "ack_median_s": round(median(t), 1) if t else None, "ack_mean_s": round(sum(t) / len(t), 1) if t else None,
            "unacknowledged": total - len(t), "top_causes": line_causes[line_id].most_common(3),
        }
    return {"window_h": hours, "lines": lines, "top_causes": causes.most_common(10),
            "guideline_per_10min": GUIDELINE_PER_10MIN, "truncated": len(rows) >= max_rows}
