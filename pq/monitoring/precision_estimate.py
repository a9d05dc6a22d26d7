"""Alarm precision without labels: the confidence-based estimate beside the measured one.

Owns the confidence-based performance estimate (CBPE, as NannyML names it) of the precision of the
edge's at-risk (diverted) decisions: when the model's probabilities are calibrated, a part scored
0.7 is a defect 7 times in 10, so the expected share of defects among the diverted parts, the
expected precision, is the mean probability of those parts. No label is needed, so the estimate is
there the moment parts are scored; the measured precision (inspection results of the same parts,
and operator verdicts on alerts from :mod:`pq.monitoring.precision`) follows as labels arrive. A
gap between the two says the calibration no longer holds (drift the model does not know about).

Example::

    precision_estimate(store, days=7)["estimated"]      # 0.62, from the probabilities alone
    expected_precision([0.9, 0.5, 0.7])                  # 0.7
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Sequence

from sqlalchemy import and_, select

from pq.monitoring.precision import precision_by_day
from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["expected_precision", "precision_estimate"]


def expected_precision(probabilities: Sequence[float]) -> float | None:
    """Mean calibrated defect probability of the diverted parts (None without a finite one)."""
    p = [min(1.0, max(0.0, float(v))) for v in probabilities if v is not None and math.isfinite(float(v))]
    return sum(p) / len(p) if p else None


def _ratio(num: float, den: float, digits: int = 3) -> float | None:
    return round(num / den, digits) if den else None


def precision_estimate(store: Store, *, days: int = 14, now: datetime | None = None, line_id: str | None = None,
                       max_rows: int = 200_000) -> dict:
    """Estimated (CBPE) and measured precision of the at-risk decisions over the last ``days``, overall
    and per UTC day: {"diverted", "estimated", "labelled", "defects", "measured", "label_share",
    "feedback_judged", "feedback_precision", "days": [...], "truncated"}."""
    now = now or datetime.now(timezone.utc)
    pr, ins = schema.predictions.c, schema.inspections.c
    stmt = (select(pr.decided_at, pr.score, ins.defect)
            .select_from(schema.predictions.outerjoin(
                schema.inspections, and_(ins.line_id == pr.line_id, ins.serial == pr.serial)))
            .where(pr.decided_at >= now - timedelta(days=days), pr.decided_at < now, pr.decision == "at_risk",
                   pr.score.is_not(None))
            .order_by(pr.decided_at.desc()).limit(max_rows))
    if line_id:
        stmt = stmt.where(pr.line_id == line_id)
    per_day: dict[str, dict] = defaultdict(lambda: {"scores": [], "labelled": 0, "defects": 0})
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    for decided_at, score, defect in rows:
        d = per_day[decided_at.strftime("%Y-%m-%d")]
        d["scores"].append(score)
        if defect is not None:
            d["labelled"] += 1
            d["defects"] += int(bool(defect))
    day_rows = []
    for day in sorted(per_day):
        d = per_day[day]
        est = expected_precision(d["scores"])
        day_rows.append({"day": day, "diverted": len(d["scores"]), "estimated": None if est is None else round(est, 3),
                         "labelled": d["labelled"], "defects": d["defects"],
                         "measured": _ratio(d["defects"], d["labelled"])})
    all_scores = [s for d in per_day.values() for s in d["scores"]]
    labelled = sum(d["labelled"] for d in per_day.values())
    defects = sum(d["defects"] for d in per_day.values())
    fb = precision_by_day(store, days=days, line_id=line_id, now=now)
    judged = sum(r["confirmed"] + r["false_alarm"] for r in fb)
    est = expected_precision(all_scores)
    return {"diverted": len(all_scores), "estimated": None if est is None else round(est, 3), "labelled": labelled,
            "defects": defects, "measured": _ratio(defects, labelled), "label_share": _ratio(labelled, len(all_scores)),
            "feedback_judged": judged, "feedback_precision": _ratio(sum(r["confirmed"] for r in fb), judged),
            "days": day_rows, "truncated": len(rows) >= max_rows}
