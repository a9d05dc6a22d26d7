"""Alarm KPIs per operator and per shift, from the ``alerts`` and ``alert_events`` tables.

For each operator (the user an alarm was assigned to by the edge, ``pq/edge/duty.py``) and each
shift (the alarm's shift context): alarms, alarms per 10 minutes on duty (average, and the peak of
any sliding 10 minutes), time to acknowledge (median), share escalated (at least one escalation
step) and share shelved (shelved at least once). Operator alarms only: ``system`` alerts (e.g. the
empty-roster alarm) and alerts still held back by a flood are left out.

Time on duty: a shift's share of the period is its share of the parts made in it (``parts.shift``),
or an equal share of the shifts seen when no parts are stored; an operator's is the sum over the
shifts they had alarms in. Reads the store only; must not import connectors, models, ui or simulators.

Example::

    duty_kpis(store, hours=24)["operators"]["ann"]["per_10min_avg"]
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from statistics import median

from sqlalchemy import func, select

from pq.monitoring.kpis import max_in_window
from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["duty_kpis", "UNASSIGNED", "UNKNOWN_SHIFT"]

UNASSIGNED = "(not assigned)"
UNKNOWN_SHIFT = "(unknown)"
_WINDOW_S = 600.0


def _shift_hours(store: Store, since: datetime, hours: float, seen: set[str]) -> dict[str, float]:
    p = schema.parts.c
    with store.engine.connect() as conn:
        counts = {s: n for s, n in conn.execute(select(p.shift, func.count()).where(p.cycle_end >= since)
                                                .group_by(p.shift)) if s is not None}
    total = sum(counts.values())
    if total:
        return {s: hours * n / total for s, n in counts.items()}
    named = [s for s in seen if s != UNKNOWN_SHIFT] or list(seen)
    return {s: hours / len(named) for s in named} if named else {}


def _group(rows: list[dict], hours_on_duty: float, now: datetime) -> dict:
    acks = [(r["acked_at"] - r["raised_at"]).total_seconds() for r in rows if r["acked_at"] is not None]
    windows = max(1.0, hours_on_duty * 3600 / _WINDOW_S)
    n = len(rows)
    return {"alarms": n, "hours_on_duty": round(hours_on_duty, 2), "per_10min_avg": round(n / windows, 3),
            "per_10min_peak": max_in_window([r["raised_at"] for r in rows]),
            "ack_median_s": round(median(acks), 1) if acks else None, "acknowledged": len(acks),
            "escalated_share": round(sum(1 for r in rows if r["escalated"]) / n, 3) if n else None,
            "shelved_share": round(sum(1 for r in rows if r["shelved"]) / n, 3) if n else None}


def duty_kpis(store: Store, *, hours: float = 24.0, now: datetime | None = None, max_rows: int = 200_000) -> dict:
    """{"operators": {user: {...}}, "shifts": {shift: {...}}, "window_h": hours, "truncated": bool}."""
    now = now or datetime.now(timezone.utc)
    since = now - timedelta(hours=hours)
    a, e = schema.alerts.c, schema.alert_events.c
    stmt = (select(a.id, a.assigned_to, a.shift, a.raised_at, a.acked_at, a.escalation_level)
            .where(a.raised_at >= since, a.kind != "system", a.state != "suppressed")
            .order_by(a.raised_at.desc()).limit(max_rows))
    with store.engine.connect() as conn:
        found = conn.execute(stmt).all()
        shelved = {r.alert_id for r in conn.execute(
            select(e.alert_id).where(e.event == "shelved", e.at >= since).distinct())}
    rows = [{"assigned_to": r.assigned_to or UNASSIGNED, "shift": r.shift or UNKNOWN_SHIFT, "raised_at": r.raised_at,
             "acked_at": r.acked_at, "escalated": bool(r.escalation_level), "shelved": r.id in shelved} for r in found]
    by_shift: dict[str, list[dict]] = defaultdict(list)
    by_user: dict[str, list[dict]] = defaultdict(list)
    user_shifts: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        by_shift[r["shift"]].append(r)
        by_user[r["assigned_to"]].append(r)
        user_shifts[r["assigned_to"]][r["shift"]] += 1
    shift_h = _shift_hours(store, since, hours, set(by_shift))
    shifts = {s: _group(v, shift_h.get(s, hours), now) for s, v in sorted(by_shift.items())}
    operators = {u: _group(v, min(hours, sum(shift_h.get(s, hours) for s in user_shifts[u])), now)
                 for u, v in sorted(by_user.items())}
    return {"window_h": hours, "operators": operators, "shifts": shifts, "truncated": len(found) >= max_rows}
