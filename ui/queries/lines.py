"""The lines overview: one status per line in words, from health, parts, predictions and alerts.

One statement with correlated subqueries, each answered from an index
(``parts(line_id, cycle_end)``, ``predictions(line_id, decided_at)``,
``alerts(line_id, state, raised_at)``), so the cost does not grow with history.

Status rules (first that applies):

1. **Operator needed** (red): an active, unacknowledged alarm on the line.
2. **Prediction paused** (grey): the edge runtime is stopped, says it cannot score, or has not
   reported for ``_EDGE_SILENT_S``; the reason is shown.
3. **Data delayed** (amber): the edge reports degraded, or the newest part is older than
   ``_DATA_LATE_S``.
4. **Running normally** (green).

Diverted parts (predictions ``at_risk``: set aside for inspection, nobody paged) are counted for the
last hour beside the status, with the latest few and their main reason (:func:`recent_diverted`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["LineStatus", "DivertedPart", "line_statuses", "recent_diverted", "STATUS_WORDS"]

_EDGE_SILENT_S = 60.0
_DATA_LATE_S = 300.0
STATUS_WORDS = {
    "at_risk": "Operator needed",
    "paused": "Prediction paused",
    "delayed": "Data delayed",
    "normal": "Running normally",
}


@dataclass(frozen=True)
class LineStatus:
    line_id: str
    name: str
    station: str | None
    status: str                 # at_risk | paused | delayed | normal
    words: str                  # STATUS_WORDS[status]
    why: str                    # plain-words reason ('' when normal)
    parts_last_hour: int
    active_alerts: int
    open_alerts: int            # active + acknowledged awaiting feedback
    last_part_at: datetime | None
    last_decision: str | None
    freshness_s: float | None   # age of the newest data the edge saw, or of the newest part
    diverted_last_hour: int = 0  # parts set aside for inspection (the part decision), nobody paged


@dataclass(frozen=True)
class DivertedPart:
    serial: str
    decided_at: datetime
    score: float | None
    reason: str  # the main contribution's operator sentence, or "" when none was stored


def _first(detail: dict | None, *keys):
    for k in keys:
        if detail and detail.get(k) is not None:
            return detail[k]
    return None


def line_statuses(store: Store, now: datetime | None = None) -> list[LineStatus]:
    now = now or datetime.now(timezone.utc)
    hour_ago = now - timedelta(hours=1)
    day_ago = now - timedelta(hours=24)
    L, P, PR, A, H = schema.lines, schema.parts, schema.predictions, schema.alerts, schema.component_health
    parts_1h = (select(func.count()).select_from(P)
                .where(P.c.line_id == L.c.id, P.c.cycle_end >= hour_ago).scalar_subquery())
    last_part = select(func.max(P.c.cycle_end)).where(P.c.line_id == L.c.id).scalar_subquery()
    diverted_1h = (select(func.count()).select_from(PR)
                   .where(PR.c.line_id == L.c.id, PR.c.decided_at >= hour_ago, PR.c.decision == "at_risk")
                   .scalar_subquery())
    active = (select(func.count()).select_from(A)
              .where(A.c.line_id == L.c.id, A.c.state == "active").scalar_subquery())
    acked_open = (select(func.count()).select_from(A)
                  .where(A.c.line_id == L.c.id, A.c.state == "acknowledged", A.c.raised_at >= day_ago,
                         A.c.feedback.is_(None)).scalar_subquery())
    last_pred = (select(PR.c.decision).where(PR.c.line_id == L.c.id).order_by(PR.c.decided_at.desc())
                 .limit(1).scalar_subquery())
    last_reason = (select(PR.c.reason).where(PR.c.line_id == L.c.id).order_by(PR.c.decided_at.desc())
                   .limit(1).scalar_subquery())
    stmt = select(L.c.id, L.c.name, L.c.station, parts_1h.label("parts_1h"), last_part.label("last_part"),
                  active.label("active"), acked_open.label("acked_open"), last_pred.label("last_pred"),
                  last_reason.label("last_reason"), diverted_1h.label("diverted_1h")).order_by(L.c.id)
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).all()
        health = {r.component: r for r in conn.execute(select(H).where(H.c.component.like("edge:%")))}
    out = []
    for r in rows:
        edge = health.get(f"edge:{r.id}")
        last_part_at = r.last_part
        part_age = (now - last_part_at).total_seconds() if last_part_at else None
        freshness = _first(edge.detail if edge else None, "freshness_s", "data_age_s", "last_sample_age_s")
        if isinstance(freshness, dict):  # per tag (the edge runtime): the line is as fresh as its stalest signal
            ages = [v for v in freshness.values() if isinstance(v, (int, float))]
            freshness = max(ages) if ages else None
        elif not isinstance(freshness, (int, float)):
            freshness = None
        if freshness is None:
            freshness = part_age
        edge_age = (now - edge.updated_at).total_seconds() if edge else None
        reason_detail = str(_first(edge.detail if edge else None, "reason", "message") or "")
        if r.active:
            status, why = "at_risk", f"{r.active} alarm{'s' if r.active != 1 else ''} waiting for you"
        elif edge is None:
            status, why = "paused", "the scoring service has never reported for this line"
        elif edge_age is not None and edge_age > _EDGE_SILENT_S:
            status, why = "paused", f"the scoring service has not reported for {edge_age / 60:.0f} min"
        elif edge.state == "no_model":
            status, why = "paused", reason_detail or "no model is in production for this line"
        elif edge.state in ("stopped", "paused", "not_scoring") or r.last_pred == "not_scored":
            status = "paused"
            why = reason_detail or r.last_reason or f"scoring service is {edge.state}"
        elif edge.state == "degraded" or (part_age is not None and part_age > _DATA_LATE_S) \
                or (freshness is not None and freshness > _DATA_LATE_S):
            status = "delayed"
            why = reason_detail or (f"no new part for {part_age / 60:.0f} min" if part_age else "data is late")
        else:
            status, why = "normal", ""
        out.append(LineStatus(r.id, r.name, r.station, status, STATUS_WORDS[status], why, int(r.parts_1h or 0),
                              int(r.active or 0), int((r.active or 0) + (r.acked_open or 0)), last_part_at,
                              r.last_pred, None if freshness is None else float(freshness), int(r.diverted_1h or 0)))
    return out


def recent_diverted(store: Store, line_id: str, limit: int = 5) -> list[DivertedPart]:
    """The latest parts the edge diverted on ``line_id``, newest first, with their main reason."""
    PR = schema.predictions
    stmt = (select(PR.c.serial, PR.c.decided_at, PR.c.score, PR.c.contributions)
            .where(PR.c.line_id == line_id, PR.c.decision == "at_risk")
            .order_by(PR.c.decided_at.desc()).limit(limit))
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    out = []
    for r in rows:
        top = r.contributions[0] if isinstance(r.contributions, list) and r.contributions else {}
        out.append(DivertedPart(r.serial, r.decided_at, r.score, top.get("sentence") or ""))
    return out
