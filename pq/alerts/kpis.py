"""Alert KPIs per line (ISA-18.2 alarm performance), computed from the store into ``alert_kpis``.

Owns: alerts per period, floods, the worst 10-minute alert count (what one operator faced), mean
time to acknowledge, and the top causes. Hourly rows (``period_s = 3600``); the edge refreshes the
current and previous hour every ``PQ_EDGE_KPI_INTERVAL_S``, off the decision path. Upserts are
idempotent, so recomputing a period replaces its row. Must not import connectors, models, ui or
simulators.

ISA-18.2 guidance these figures are read against (documented in docs/alarms.md): about 6 alerts per
hour per operator is manageable, more than 10 in 10 minutes is a flood.

Example::

    row = compute_kpis(store, "line-1", period_start, 3600)
    refresh_kpis(store, "line-1", datetime.now(timezone.utc))
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["compute_kpis", "write_kpis", "refresh_kpis", "max_in_window"]

logger = logging.getLogger(__name__)


def max_in_window(times: list[datetime], window_s: float = 600.0) -> int:
    """The largest number of events inside any window of ``window_s`` (two-pointer sweep)."""
    ts = sorted(t.timestamp() for t in times)
    best, j = 0, 0
    for i, t in enumerate(ts):
        while ts[j] <= t - window_s:
            j += 1
        best = max(best, i - j + 1)
    return best


def compute_kpis(store: Store, line_id: str, period_start: datetime, period_s: int = 3600) -> dict:
    """KPIs of the alerts raised on ``line_id`` in [period_start, period_start + period_s)."""
    end = period_start + timedelta(seconds=period_s)
    t = schema.alerts
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.c.kind, t.c.cause, t.c.state, t.c.raised_at, t.c.acked_at, t.c.repeat_count)
                            .where(t.c.line_id == line_id, t.c.raised_at >= period_start, t.c.raised_at < end)).all()
        # Alerts raised just before the period still count towards its worst 10 minutes.
        prior = conn.execute(select(t.c.raised_at).where(
            t.c.line_id == line_id, t.c.kind == "part", t.c.raised_at >= period_start - timedelta(seconds=600),
            t.c.raised_at < period_start)).scalars().all()
    part = [r for r in rows if r.kind == "part"]
    acked = [(r.acked_at - r.raised_at).total_seconds() for r in part if r.acked_at is not None]
    causes = Counter()
    for r in part:
        causes[r.cause] += 1
    window_max = max_in_window([r.raised_at for r in part] + list(prior)) if part else 0
    return {"line_id": line_id, "period_start": period_start, "period_s": period_s, "alerts": len(part),
            "floods": sum(1 for r in rows if r.kind == "flood"),
            "alerts_per_10min_max": float(window_max),
            "mean_time_to_ack_s": (sum(acked) / len(acked)) if acked else None,
            "top_causes": [{"cause": c, "alerts": n} for c, n in causes.most_common(5)],
            "computed_at": datetime.now(timezone.utc)}


def write_kpis(store: Store, rows: list[dict]) -> int:
    if not rows:
        return 0
    t = schema.alert_kpis
    stmt = (pg_insert if store.dialect == "postgresql" else sqlite_insert)(t)
    keys = ["line_id", "period_start", "period_s"]
    stmt = stmt.on_conflict_do_update(index_elements=keys,
                                      set_={c.name: stmt.excluded[c.name] for c in t.columns if c.name not in keys})
    with store.engine.begin() as conn:
        conn.execute(stmt, rows)
    return len(rows)


def refresh_kpis(store: Store, line_id: str, now: datetime) -> list[dict]:
    """Recompute the current and the previous hour for the line (acks arrive late)."""
    hour = now.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    rows = [compute_kpis(store, line_id, hour - timedelta(hours=1)), compute_kpis(store, line_id, hour)]
    write_kpis(store, rows)
    logger.debug("line %s: alert KPIs refreshed (%d alerts this hour)", line_id, rows[1]["alerts"])
    return rows
