"""Feature drift per signal and day: PSI and Jensen-Shannon distance of served feature vectors
against the model's training reference.

The reference is the model's own training window (``model_versions.train_start/train_end``) read
from ``part_features``; the served side is what the edge computed (``source = 'edge'``) per UTC
day. Bins are the reference's deciles, so a feature's scale does not matter. Read PSI as: < 0.1
stable, 0.1-0.25 moderate shift, > 0.25 a shift to act on (retrain or check the sensor).

Defaults and where they come from: PSI 0.1 / 0.25 are the usual credit-scoring bands (Evidently's
PSI test drifts at 0.1); the Jensen-Shannon *distance* (square root of the divergence, natural
log: 0 .. 0.83, at most 0.72 on ten decile bins) with a drift threshold of 0.1 is Evidently's
default for numerical features; empty bins get a share of 1e-4 in PSI, as there. Unlike Evidently
(common bins over both windows) the bins are the reference's deciles, so outliers in the recent
window cannot squeeze the reference into one bin.

Example::

    psi(reference_values, current_values)          # 0.03
    drift_by_day(store, reference_start, reference_end, feature_set_version="default-1", days=14)
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Sequence

import numpy as np
from sqlalchemy import select

from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["psi", "js_divergence", "js_distance", "DriftRow", "drift_by_day", "PSI_MODERATE", "PSI_SIGNIFICANT",
           "JS_DISTANCE_DRIFT"]

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
JS_DISTANCE_DRIFT = 0.1
_EPS = 1e-4
_MIN_POINTS = 30


def _histograms(reference: Sequence[float], current: Sequence[float], bins: int) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if ref.size == 0 or cur.size == 0:
        raise ValueError(f"need finite values on both sides, got {ref.size} reference and {cur.size} current")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    p = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1) / ref.size
    q = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1) / cur.size
    return p, q


def psi(reference: Sequence[float], current: Sequence[float], bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference`` (deciles of the reference)."""
    p, q = _histograms(reference, current, bins)
    p, q = np.clip(p, _EPS, None), np.clip(q, _EPS, None)
    return float(np.sum((q - p) * np.log(q / p)))


def js_divergence(reference: Sequence[float], current: Sequence[float], bins: int = 10) -> float:
    """Jensen-Shannon divergence in bits (0 = same distribution, 1 = disjoint)."""
    p, q = _histograms(reference, current, bins)
    m = (p + q) / 2

    def kl(a, b):
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    return max(0.0, 0.5 * kl(p, m) + 0.5 * kl(q, m))


def js_distance(reference: Sequence[float], current: Sequence[float], bins: int = 10) -> float:
    """Jensen-Shannon distance, natural log (Evidently's ``jensenshannon``): 0 same, at most 0.72 on ten bins."""
    return math.sqrt(js_divergence(reference, current, bins) * math.log(2))


@dataclass(frozen=True)
class DriftRow:
    day: str          # YYYY-MM-DD (UTC)
    signal: str       # e.g. melt_temp_c (from the feature melt_temp_c__mean)
    psi: float
    js: float         # Jensen-Shannon distance (natural log), as Evidently reports it
    n: int            # served parts that day


def _signal_features(names) -> dict[str, str]:
    """One feature per signal: its cycle mean (``<signal>__mean``)."""
    return {n[: -len("__mean")]: n for n in names if n.endswith("__mean") and not n.startswith("ctx__")}


def _vectors(store: Store, feature_set_version: str, start: datetime, end: datetime, limit: int,
             source: str | None):
    p, f = schema.parts.c, schema.part_features.c
    stmt = (select(p.cycle_end, f.features)
            .select_from(schema.parts.join(schema.part_features, schema.part_features.c.part_id == p.id))
            .where(p.cycle_end >= start, p.cycle_end < end, f.feature_set_version == feature_set_version)
            .order_by(p.cycle_end.desc()).limit(limit))
    if source:
        stmt = stmt.where(f.source == source)
    with store.engine.connect() as conn:
        return conn.execute(stmt).all()


def drift_by_day(store: Store, reference_start: datetime, reference_end: datetime, *, feature_set_version: str,
                 days: int = 14, now: datetime | None = None, max_reference: int = 5000,
                 max_served: int = 30_000, signals: Sequence[str] | None = None) -> list[DriftRow]:
    """PSI and JS distance per signal and day for the last ``days`` days; days with < 30 parts are left out."""
    now = now or datetime.now(timezone.utc)
    ref_rows = _vectors(store, feature_set_version, reference_start, reference_end, max_reference, None)
    if not ref_rows:
        return []
    feats = _signal_features(ref_rows[0][1] or {})
    if signals:
        feats = {s: n for s, n in feats.items() if s in set(signals)}
    reference = {s: [r[1].get(n) for r in ref_rows if r[1] and r[1].get(n) is not None] for s, n in feats.items()}
    served = _vectors(store, feature_set_version, now - timedelta(days=days), now, max_served, "edge")
    by_day: dict[str, list[dict]] = defaultdict(list)
    for cycle_end, vec in served:
        by_day[cycle_end.strftime("%Y-%m-%d")].append(vec or {})
    out = []
    for day in sorted(by_day):
        vecs = by_day[day]
        if len(vecs) < _MIN_POINTS:
            continue
        for signal, name in sorted(feats.items()):
            cur = [v.get(name) for v in vecs if v.get(name) is not None]
            ref = reference[signal]
            if len(cur) < _MIN_POINTS or len(ref) < _MIN_POINTS:
                continue
            value = psi(ref, cur)
            out.append(DriftRow(day, signal, round(value, 4), round(js_distance(ref, cur), 4), len(cur)))
    return [r for r in out if math.isfinite(r.psi)]
