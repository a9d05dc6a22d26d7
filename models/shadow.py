"""Champion / challenger comparison: what a challenger would have decided, beside production, per regime band.

Owns the one computation the CLI (``pq models compare --live`` / ``--replay``), the Shadow page and
the promotion audit (``models.registry.promote``) share:

- **live**: the ``shadow_scores`` rows the edge wrote while the challenger ran in shadow (both models
  on the same served vector, each with its own diversion threshold and episode rule);
- **replay**: the same rows recomputed from a stored window of served vectors (``part_features``, the
  vector the edge served, and ``predictions``, the production version that decided each part) through
  the very lanes the edge uses (``pq.edge.shadow``), so a challenger can be judged on last week
  before it goes live, and a replay of the shadow period equals the live comparison.

Per regime band (``models.regimes``: ambient, humidity, supplier, lot, shift, product) and overall:
parts, both models' operator alarms per hour and diverted share, agreement (share of parts with the
same decision) and, as labels arrive (inspections; operator feedback on alarms where no inspection
exists), each model's false-alarm rate and recall of its diversion decision. Hours are the span of
the parts' cycle ends (plus one typical cycle), shared out to bands by their parts.
Imports pq and models only.

Example::

    res = compare_live(store, 8, line_id="line-1")
    res["overall"]["agreement"], res["overall"]["challenger"]["alarms_per_h"], res["bands"][0]
    compare_replay(store, 8, line_id="line-1", since=last_monday, until=today)   # same shape
    put_in_shadow(store, 9, "line-1", "scheduler")      # the retraining scheduler's hand-over
"""

from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select

from models.regimes import DEFAULT_REGIMES, RegimeDef, assign_regimes
from pq.edge.shadow import ShadowFailure, ShadowLane, rebase_vector
from pq.errors import ModelError
from pq.storage import schema

__all__ = ["live_rows", "replay_rows", "labels_for", "compare_rows", "compare_live", "compare_replay", "evidence",
           "put_in_shadow", "SIDES"]

logger = logging.getLogger(__name__)

SIDES = ("production", "challenger")
_FIELDS = ("version_id", "probability", "threshold", "decision", "alarm")
_COLUMNS = ["line_id", "serial", "cycle_end", "product", "context"] + [f"{s}_{f}" for s in SIDES for f in _FIELDS]


def _frame(records: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records, columns=_COLUMNS)
    if len(df):
        df["cycle_end"] = pd.to_datetime(df["cycle_end"], utc=True)
    return df


# -- rows --------------------------------------------------------------------------------------------------

def live_rows(store, candidate_id: int, *, line_id: str | None = None, since: datetime | None = None,
              until: datetime | None = None) -> pd.DataFrame:
    """The shadow rows the edges recorded for ``candidate_id`` (one per part), in decision order."""
    t = schema.shadow_scores
    q = select(t).where(t.c.challenger_version_id == int(candidate_id)).order_by(t.c.decided_at, t.c.id)
    if line_id:
        q = q.where(t.c.line_id == line_id)
    if since is not None:
        q = q.where(t.c.cycle_end >= since)
    if until is not None:
        q = q.where(t.c.cycle_end < until)
    with store.engine.connect() as conn:
        return _frame([{c: r._mapping.get(c) for c in _COLUMNS} for r in conn.execute(q)])


def _context(row) -> dict:
    ctx = dict(row.context or {})
    for k in ("product", "material_lot", "shift"):
        if getattr(row, k) is not None:
            ctx.setdefault(k, getattr(row, k))
    return ctx


def replay_rows(store, candidate_id: int, *, line_id: str, since: datetime | None = None,
                until: datetime | None = None, two: bool = True) -> pd.DataFrame:
    """Shadow rows recomputed from the served vectors of ``line_id``'s parts in [since, until): each
    part's stored vector scored by the production version that decided it and by the candidate,
    through the edge's lanes, in decision order. Parts production did not score are left out (as live)."""
    from models.registry import get_version
    from models.scoring import Scorer

    cand_v = get_version(store, candidate_id)
    p, f, pr = schema.parts, schema.part_features, schema.predictions
    q = (select(p.c.line_id, p.c.serial, p.c.cycle_end, p.c.product, p.c.material_lot, p.c.shift, p.c.context,
                f.c.features, pr.c.model_version_id, pr.c.decided_at, pr.c.id)
         .join(f, (f.c.part_id == p.c.id) & (f.c.feature_set_version == cand_v.feature_set_version))
         .join(pr, (pr.c.line_id == p.c.line_id) & (pr.c.serial == p.c.serial))
         .where(p.c.line_id == line_id, pr.c.decision.in_(("ok", "at_risk")), pr.c.model_version_id.isnot(None))
         .order_by(pr.c.decided_at, pr.c.id))
    if since is not None:
        q = q.where(p.c.cycle_end >= since)
    if until is not None:
        q = q.where(p.c.cycle_end < until)
    with store.engine.connect() as conn:
        rows = conn.execute(q).all()
    challenger = Scorer.from_version(store, cand_v.id)
    scorers: dict[int, Any] = {}
    lanes: dict[str, ShadowLane] = {"challenger": ShadowLane(challenger, two=two)}
    out, seen = [], set()
    for r in rows:
        if r.serial in seen:  # a part decided twice (a replayed cycle): its first decision counts, as live
            continue
        seen.add(r.serial)
        prod = scorers.get(r.model_version_id)
        if prod is None:
            prod = scorers[r.model_version_id] = Scorer.from_version(store, r.model_version_id)
        if prod.feature_set_version != challenger.feature_set_version:
            continue
        lane = lanes.get("production")
        if lane is None or lane.scorer is not prod:
            lane = lanes["production"] = ShadowLane(prod, two=two)
        vec = {k: (math.nan if v is None else float(v)) for k, v in (r.features or {}).items()}
        ctx = _context(r)
        try:
            theirs = lanes["challenger"].decide(rebase_vector(vec, ctx, prod.baseline, challenger.baseline), ctx)
        except ShadowFailure as exc:
            raise ModelError(f"replay of {cand_v.label} on part {r.serial}: {exc}") from None
        ours = lane.decide(vec, ctx)
        out.append({"line_id": r.line_id, "serial": r.serial, "cycle_end": r.cycle_end, "product": r.product,
                    "context": ctx, **{f"production_{k}": v for k, v in ours.items()},
                    **{f"challenger_{k}": v for k, v in theirs.items()}})
    return _frame(out)


def labels_for(store, rows: pd.DataFrame) -> pd.Series:
    """1 defect / 0 good / NaN unknown per row: the inspection where there is one, else the operator's
    feedback on an alarm raised for that part (confirmed defect / false alarm)."""
    out = pd.Series(np.nan, index=rows.index, dtype=float)
    if not len(rows):
        return out
    keys = list(zip(rows["line_id"], rows["serial"]))
    lines = sorted(set(rows["line_id"]))
    i, a = schema.inspections, schema.alerts
    found: dict[tuple, float] = {}
    with store.engine.connect() as conn:
        for r in conn.execute(select(a.c.line_id, a.c.serial, a.c.feedback)
                              .where(a.c.line_id.in_(lines), a.c.feedback.in_(("confirmed", "false_alarm")))):
            found[(r.line_id, r.serial)] = 1.0 if r.feedback == "confirmed" else 0.0
        for r in conn.execute(select(i.c.line_id, i.c.serial, i.c.defect).where(i.c.line_id.in_(lines))):
            found[(r.line_id, r.serial)] = 1.0 if r.defect else 0.0  # an inspection wins over feedback
    out[:] = [found.get(k, np.nan) for k in keys]
    return out


# -- metrics -----------------------------------------------------------------------------------------------

def _hours(cycle_end: pd.Series) -> float:
    if not len(cycle_end):
        return 0.0
    t = cycle_end.sort_values()
    gaps = t.diff().dt.total_seconds().dropna()
    typical = float(gaps.median()) if len(gaps) else 0.0
    return ((t.iloc[-1] - t.iloc[0]).total_seconds() + typical) / 3600.0


def _side(df: pd.DataFrame, side: str, y: pd.Series, hours: float) -> dict:
    diverted = (df[f"{side}_decision"] == "at_risk").to_numpy()
    alarms = int(df[f"{side}_alarm"].astype(bool).sum())
    lab = y.notna().to_numpy()
    good, bad = lab & (y.to_numpy() == 0), lab & (y.to_numpy() == 1)
    return {"alarms": alarms, "alarms_per_h": round(alarms / hours, 3) if hours > 0 else None,
            "diverted_share": round(float(diverted.mean()), 4) if len(df) else None,
            "far": round(float(diverted[good].mean()), 4) if good.any() else None,
            "recall": round(float(diverted[bad].mean()), 4) if bad.any() else None}


def _group(df: pd.DataFrame, y: pd.Series, hours: float) -> dict:
    agree = (df["production_decision"] == df["challenger_decision"]).to_numpy()
    return {"parts": int(len(df)), "hours": round(hours, 3), "labelled": int(y.notna().sum()),
            "defects": int((y == 1).sum()), "agreement": round(float(agree.mean()), 4) if len(df) else None,
            **{side: _side(df, side, y, hours) for side in SIDES}}


def compare_rows(rows: pd.DataFrame, labels: pd.Series | None = None,
                 regimes: tuple[RegimeDef, ...] = DEFAULT_REGIMES) -> dict:
    """{"overall": {...}, "bands": [{"regime", "band", ...}]} over shadow rows (live or replayed)."""
    y = labels if labels is not None else pd.Series(np.nan, index=rows.index, dtype=float)
    hours = _hours(rows["cycle_end"]) if len(rows) else 0.0
    out = {"overall": _group(rows, y, hours), "bands": [],
           "period": [rows["cycle_end"].min().isoformat(), rows["cycle_end"].max().isoformat()] if len(rows) else None,
           "versions": {side: sorted({int(v) for v in rows[f"{side}_version_id"].dropna()}) for side in SIDES}}
    if not len(rows):
        return out
    meta = pd.DataFrame([dict(c or {}) for c in rows["context"]], index=rows.index)
    for col in ("product",):
        if col not in meta.columns or meta[col].isna().all():
            meta[col] = rows["product"]
    bands = assign_regimes(meta, regimes)
    for regime in bands.columns:
        for band, idx in bands.groupby(regime).groups.items():
            part = rows.loc[idx]
            out["bands"].append({"regime": regime, "band": band,
                                 **_group(part, y.loc[idx], hours * len(part) / len(rows))})
    return out


def compare_live(store, candidate_id: int, *, line_id: str | None = None, since: datetime | None = None,
                 until: datetime | None = None, regimes: tuple[RegimeDef, ...] = DEFAULT_REGIMES) -> dict:
    rows = live_rows(store, candidate_id, line_id=line_id, since=since, until=until)
    return {"mode": "live", "candidate": int(candidate_id), "line_id": line_id,
            **compare_rows(rows, labels_for(store, rows), regimes)}


def compare_replay(store, candidate_id: int, *, line_id: str, since: datetime | None = None,
                   until: datetime | None = None, two: bool = True,
                   regimes: tuple[RegimeDef, ...] = DEFAULT_REGIMES) -> dict:
    rows = replay_rows(store, candidate_id, line_id=line_id, since=since, until=until, two=two)
    return {"mode": "replay", "candidate": int(candidate_id), "line_id": line_id,
            **compare_rows(rows, labels_for(store, rows), regimes)}


def evidence(store, candidate_id: int) -> dict | None:
    """The shadow evidence a promotion records: periods, parts, agreement, alarms/h and diverted share
    of both, FAR/recall where labelled. None when the version never ran in shadow."""
    from models.registry import shadow_periods

    periods = shadow_periods(store, candidate_id)
    if not periods:
        return None
    res = compare_live(store, candidate_id)
    o = res["overall"]
    return {"periods": [{"scope": p.scope, "since": p.since.isoformat(),
                         "until": p.until.isoformat() if p.until else None} for p in periods],
            "parts": o["parts"], "hours": o["hours"], "agreement": o["agreement"], "labelled": o["labelled"],
            **{side: {k: o[side][k] for k in ("alarms_per_h", "diverted_share", "far", "recall")} for side in SIDES}}


def put_in_shadow(store, version_id: int, line_id: str | None, actor: str) -> str:
    """A proposed candidate in shadow beside production (``models.scheduler.Shadow``: the retraining
    scheduler's hand-over); returns what was done, in words. ModelError / FeatureMismatch when refused
    (no line, no production, another feature set ...), as ``models.registry.start_shadow`` says."""
    from models.registry import get_version, start_shadow

    line = line_id or get_version(store, version_id).line_id
    if not line:
        raise ModelError(f"model #{version_id} serves all lines: name the line whose edge should run it in shadow")
    sh = start_shadow(store, version_id, line_id=line, by=actor,
                      reason="proposed by the retraining schedule; promotion stays an engineer's decision")
    return f"in shadow on {sh.scope} since {sh.since:%Y-%m-%d %H:%M} UTC"
