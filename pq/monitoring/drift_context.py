"""Drift explained by context: did a signal move with the conditions (expected) or on its own?

Owns, per signal, the drift of a recent window against the production model's training reference
(PSI and Jensen-Shannon distance of its window level, ``<signal>__mean`` or ``__last``) and its
verdict:

- **expected**: the level drifts, but its deviation from the context baseline (``level -
  baseline expectation for each part's context``, the ``__dev_baseline`` features) stays in range:
  the recent median deviation lies inside the middle 90 % of the reference deviations and scatters
  no more than twice as much. The conditions (a new lot, a hot afternoon) explain the move.
- **unexpected**: the deviation drifts too: not explained by the conditions (sensor, heater, tool).
- **no baseline**: no deviation to judge by (no baseline for this signal, or NaN deviations).

Next to it, what changed between the two windows at the same time (supplier, material lot,
product, shift, hall temperature, humidity, lot properties, dryer, tool wear) and, with a fitted
baseline, which of those changes the baseline says moved this signal (its linear terms: coefficient
times the shift of the input's mean).

With a baseline (the production model's, ``pq.features.baseline.ContextBaseline``) the deviations of
both windows are recomputed with it, so reference and recent are judged by the same expectation;
without one, the stored ``__dev_baseline`` features are used as they are. Thresholds: see
:mod:`pq.monitoring.drift`. Reads the store only; imports pq only.

Example::

    report = drift_explained(store, ref.train_start, ref.train_end, feature_set_version="default-1",
                             hours=24, baseline=scorer.baseline)
    [(s.signal, s.verdict, s.sentence) for s in report.signals if s.verdict != "stable"]
    explain_drift(reference_frame, recent_frame, baseline=bl)      # frames: features + context
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select

from pq.alerts.playbook import signal_label, signal_unit
from pq.monitoring.drift import JS_DISTANCE_DRIFT, PSI_MODERATE, PSI_SIGNIFICANT, js_distance, psi
from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["ContextChange", "SignalDrift", "DriftExplanation", "explain_drift", "context_changes",
           "load_window", "drift_explained", "NUMERIC_CONTEXT", "CATEGORICAL_CONTEXT", "MIN_PARTS"]

logger = logging.getLogger(__name__)

MIN_PARTS = 100  # fewer parts in a window: its histogram is noise (JS distance of two equal samples ~0.1)
NUMERIC_CONTEXT = ("ambient_temp_c", "humidity_pct", "lot_moisture_pct", "lot_mfi_g10min", "dryer_dew_point_c",
                   "tool_wear_shots")
CATEGORICAL_CONTEXT = ("supplier", "material_lot", "product", "shift")
CONTEXT_WORDS = {"ambient_temp_c": "hall temperature", "humidity_pct": "humidity", "lot_moisture_pct": "lot moisture",
                 "lot_mfi_g10min": "lot melt flow (MFI)", "dryer_dew_point_c": "dryer dew point",
                 "tool_wear_shots": "tool wear", "supplier": "supplier", "material_lot": "material lot",
                 "product": "product mix", "shift": "shift"}
# Deviation "in range": recent median inside the reference's [P5, P95], spread at most twice the
# reference's (interquartile range): the baseline's residual scatter is what training saw.
_DEV_BAND = (0.05, 0.95)
_DEV_SPREAD_MAX = 2.0
# A numeric context input "changed" when its median moved by half a reference standard deviation;
# a categorical one when the share of parts changed by 20 points (total variation distance).
_NUMERIC_CHANGE_SD = 0.5
_CATEGORY_CHANGE_TV = 0.2
_LEVEL_SUFFIXES = ("__mean", "__last", "__value")


@dataclass(frozen=True)
class ContextChange:
    name: str      # context column, e.g. supplier, ambient_temp_c
    words: str     # "supplier Polymera -> NovaResin (100 % of parts)"
    size: float    # for ordering: |shift| in reference sd, or total variation distance x 4


@dataclass(frozen=True)
class SignalDrift:
    signal: str
    feature: str                # the level feature judged, e.g. melt_temp_c__mean
    psi: float
    js: float                   # Jensen-Shannon distance (natural log)
    shift: float                # recent median - reference median, in the signal's unit
    status: str                 # stable | watch | drifting
    verdict: str                # stable | expected | unexpected | no baseline
    sentence: str
    deviation_shift_sd: float | None = None  # deviation's median move, in reference deviation sd
    deviation_psi: float | None = None
    deviation_js: float | None = None
    drivers: tuple[str, ...] = ()            # context changes that explain the move, in words
    n_reference: int = 0
    n_recent: int = 0


@dataclass
class DriftExplanation:
    signals: list[SignalDrift]
    context: list[ContextChange]
    n_reference: int
    n_recent: int
    with_baseline: bool
    thresholds: dict = field(default_factory=lambda: {"psi_watch": PSI_MODERATE, "psi_act": PSI_SIGNIFICANT,
                                                      "js_distance": JS_DISTANCE_DRIFT})

    def by_signal(self) -> dict[str, SignalDrift]:
        return {s.signal: s for s in self.signals}


# -- helpers -----------------------------------------------------------------------------------------

def _finite(values) -> np.ndarray:
    a = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    return a[np.isfinite(a)]


def _num(value: float, sign: str = "") -> str:
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 1 else 2 if abs(value) >= 0.1 else 3
    return f"{value:{sign},.{digits}f}"


def _fmt(value: float, unit: str = "") -> str:
    """A signed change with its unit: +6.1 °C, -0.12 mm, -7,650."""
    return _num(value, "+") + (f" {unit}" if unit else "")


def _signals(columns) -> dict[str, str]:
    """{signal: level column}: every signal with a whole-cycle level (mean, else last/value)."""
    cols = set(columns)
    names = [c.split("__")[0] for c in columns if "__" in c and not c.startswith(("ctx__", "n_good__", "n_bad__"))]
    out = {}
    for s in dict.fromkeys(names):
        for suffix in _LEVEL_SUFFIXES:
            if f"{s}{suffix}" in cols:
                out[s] = f"{s}{suffix}"
                break
    return out


def _context_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: frame[c].to_numpy() for c in (*NUMERIC_CONTEXT, *CATEGORICAL_CONTEXT) if c in frame.columns}


def _deviations(frame: pd.DataFrame, signals: dict[str, str], baseline: Any) -> dict[str, np.ndarray]:
    """Each signal's deviation from the context baseline: recomputed with ``baseline`` when it models
    the signal, else the stored ``<signal>__dev_baseline`` column."""
    out = {}
    modelled = [s for s in signals if baseline is not None and s in getattr(baseline, "coef_", {})]
    if modelled and len(frame):
        expected, _why = baseline.predict_matrix(modelled, _context_columns(frame), len(frame))
        for j, s in enumerate(modelled):
            out[s] = pd.to_numeric(frame[signals[s]], errors="coerce").to_numpy(dtype=float) - expected[:, j]
    for s in signals:
        if s not in out and f"{s}__dev_baseline" in frame.columns:
            out[s] = pd.to_numeric(frame[f"{s}__dev_baseline"], errors="coerce").to_numpy(dtype=float)
    return out


def _design_means(baseline: Any, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Mean of the baseline's design columns over ``frame``, grouped by context input (the ridge is
    linear, so the expected shift of a signal is sum over inputs of coef . shift of these means)."""
    out: dict[str, np.ndarray] = {}
    for c in baseline.numeric_inputs_:
        x = _finite(frame[c]) if c in frame.columns else np.array([])
        out[c] = np.array([(x.mean() - baseline.mean_[c]) / baseline.scale_[c] if x.size else np.nan])
    for c, levels in baseline.categories_.items():
        vals = frame[c].astype(str).to_numpy() if c in frame.columns else np.array([], dtype=object)
        out[c] = np.array([(vals == lv).mean() if vals.size else np.nan for lv in levels])
    return out


def _drivers(baseline: Any, signal: str, ref_means: dict, cur_means: dict, changes: dict[str, ContextChange],
             shift: float) -> tuple[str, ...]:
    """The context inputs whose change the baseline says moved ``signal`` in the direction it moved
    (each at least a fifth of the move), largest first, in words."""
    coef = np.asarray(baseline.coef_[signal], dtype=float)
    parts, k = {}, 0
    for c in baseline.numeric_inputs_:
        parts[c] = float(coef[k] * (cur_means[c][0] - ref_means[c][0]))
        k += 1
    for c, levels in baseline.categories_.items():
        n = len(levels)
        parts[c] = float(np.dot(coef[k:k + n], cur_means[c] - ref_means[c]))
        k += n
    parts = {c: v for c, v in parts.items() if math.isfinite(v)}
    keep = [c for c, v in sorted(parts.items(), key=lambda kv: -abs(kv[1]))
            if v * shift > 0 and abs(v) >= 0.2 * abs(shift)]
    return tuple(changes[c].words if c in changes else CONTEXT_WORDS.get(c, c) for c in keep[:3])


# -- context -----------------------------------------------------------------------------------------

def context_changes(reference: pd.DataFrame, recent: pd.DataFrame) -> list[ContextChange]:
    """What changed between the two windows' conditions, largest change first."""
    out = []
    for c in NUMERIC_CONTEXT:
        if c not in reference.columns or c not in recent.columns:
            continue
        a, b = _finite(reference[c]), _finite(recent[c])
        if a.size < 2 or b.size < 1:
            continue
        sd = float(np.std(a)) or 1e-9
        d = float(np.median(b) - np.median(a))
        if abs(d) >= _NUMERIC_CHANGE_SD * sd:
            unit = signal_unit(c)
            u = f" {unit}" if unit else ""
            out.append(ContextChange(c, f"{CONTEXT_WORDS[c]} {_fmt(d, unit)} (now {_num(float(np.median(b)))}{u}, "
                                        f"training {_num(float(np.median(a)))}{u})", abs(d) / sd))
    for c in CATEGORICAL_CONTEXT:
        if c not in reference.columns or c not in recent.columns:
            continue
        a = reference[c].dropna().astype(str)
        b = recent[c].dropna().astype(str)
        if a.empty or b.empty:
            continue
        pa, pb = a.value_counts(normalize=True), b.value_counts(normalize=True)
        tv = 0.5 * float(pb.subtract(pa, fill_value=0).abs().sum())
        if tv < _CATEGORY_CHANGE_TV:
            continue
        if c == "material_lot":
            new = sorted(set(b) - set(a))
            words = f"{len(new)} material lot(s) not seen in training ({', '.join(new[:3])}{', ...' if len(new) > 3 else ''})"
        else:
            gained = pb.subtract(pa, fill_value=0).sort_values(ascending=False)
            top = gained.index[0]
            was = float(pa.get(top, 0.0))
            if was == 0 and len(pa) == 1:
                words = f"{CONTEXT_WORDS[c]} {pa.index[0]} -> {top} ({pb[top]:.0%} of parts)"
            else:
                words = f"{CONTEXT_WORDS[c]}: {top} {pb[top]:.0%} of parts (training {was:.0%})"
        out.append(ContextChange(c, words, 4 * tv))
    return sorted(out, key=lambda ch: -ch.size)


# -- the verdict -------------------------------------------------------------------------------------

def _sentence(label: str, unit: str, shift: float, verdict: str, dev_sd: float | None, scatter: float | None,
              drivers: tuple[str, ...], changes: list[ContextChange]) -> str:
    """The verdict in one plain sentence; ``scatter`` is set when only the deviation's spread is out of range."""
    moved = f"{label} moved {_fmt(shift, unit)}"
    if verdict == "stable":
        return f"{label}: stable against training."
    if verdict == "expected":
        why = f" with the {' and the '.join(drivers)}" if drivers else \
            (f" while {changes[0].words}" if changes else "")
        return (f"{moved}{why}: expected for today's conditions (deviation from the context baseline "
                f"{_fmt(dev_sd or 0.0)} sd, inside its training range).")
    if verdict == "unexpected":
        how = f"scatters {scatter:.1f}x as much as in training" if scatter is not None else \
            f"drifts too ({_fmt(dev_sd or 0.0)} sd)"
        return f"{moved}; its deviation from the context baseline {how}: not explained by conditions, check the sensor and the process."
    seen = f" Changed at the same time: {'; '.join(ch.words for ch in changes[:3])}." if changes else ""
    return (f"{moved}; no deviation from a context baseline to judge it by (none for this signal, or its context "
            f"not recorded), so the move cannot be split into expected and unexpected.{seen}")


def explain_drift(reference: pd.DataFrame, recent: pd.DataFrame, *, baseline: Any = None,
                  signals: list[str] | None = None) -> DriftExplanation:
    """Per-signal drift, verdict and sentence for two frames of parts (feature columns and context
    columns: supplier, material_lot, product, shift, ambient_temp_c, ...)."""
    if baseline is not None and not hasattr(baseline, "coef_"):
        baseline = None  # not fitted: judge by the stored deviations
    level_cols = _signals(reference.columns)
    if signals:
        level_cols = {s: c for s, c in level_cols.items() if s in set(signals)}
    level_cols = {s: c for s, c in level_cols.items() if c in recent.columns}
    changes = context_changes(reference, recent)
    by_name = {ch.name: ch for ch in changes}
    dev_ref, dev_cur = _deviations(reference, level_cols, baseline), _deviations(recent, level_cols, baseline)
    ref_means = _design_means(baseline, reference) if baseline is not None else {}
    cur_means = _design_means(baseline, recent) if baseline is not None else {}
    out = []
    for s, col in sorted(level_cols.items()):
        a, b = _finite(reference[col]), _finite(recent[col])
        if a.size < MIN_PARTS or b.size < MIN_PARTS:
            continue
        p, j = psi(a, b), js_distance(a, b)
        shift = float(np.median(b) - np.median(a))
        status = "drifting" if p >= PSI_SIGNIFICANT or j >= JS_DISTANCE_DRIFT else "watch" if p >= PSI_MODERATE else "stable"
        da, db = _finite(dev_ref.get(s, [])), _finite(dev_cur.get(s, []))
        dev_sd = dev_psi = dev_js = scatter = None
        in_range = False
        if da.size >= MIN_PARTS and db.size >= MIN_PARTS:
            sd = float(np.std(da)) or 1e-9
            dev_sd = round(float(np.median(db) - np.median(da)) / sd, 2)
            dev_psi, dev_js = round(psi(da, db), 4), round(js_distance(da, db), 4)
            iqr = lambda x: float(np.subtract(*np.quantile(x, [0.75, 0.25])))  # noqa: E731
            spread = iqr(db) / (iqr(da) or 1e-9)
            lo, hi = np.quantile(da, _DEV_BAND)
            centred = bool(lo <= float(np.median(db)) <= hi)
            in_range = centred and spread <= _DEV_SPREAD_MAX
            scatter = round(spread, 1) if centred and not in_range else None
        if status != "drifting":
            verdict = "stable"
        elif dev_sd is None:
            verdict = "no baseline"
        else:
            verdict = "expected" if in_range else "unexpected"
        drivers: tuple[str, ...] = ()
        if verdict == "expected" and baseline is not None and s in baseline.coef_:
            drivers = _drivers(baseline, s, ref_means, cur_means, by_name, shift)
        out.append(SignalDrift(
            signal=s, feature=col, psi=round(p, 4), js=round(j, 4), shift=round(shift, 4), status=status,
            verdict=verdict, sentence=_sentence(signal_label(s), signal_unit(s), shift, verdict, dev_sd, scatter, drivers,
                                                changes),
            deviation_shift_sd=dev_sd, deviation_psi=dev_psi, deviation_js=dev_js, drivers=drivers,
            n_reference=int(a.size), n_recent=int(b.size)))
    order = {"unexpected": 0, "no baseline": 1, "expected": 2, "stable": 3}
    out.sort(key=lambda r: (order[r.verdict], -r.psi))
    return DriftExplanation(out, changes, len(reference), len(recent), baseline is not None)


# -- from the store ----------------------------------------------------------------------------------

def load_window(store: Store, start: datetime, end: datetime, *, feature_set_version: str, source: str | None = None,
                line_id: str | None = None, limit: int = 3000) -> pd.DataFrame:
    """Parts with their stored feature vectors in [start, end): one row per part, feature columns
    and context columns (product, material_lot, shift and everything in ``parts.context``).

    At most about ``limit`` parts, thinned evenly over the window (every k-th part id), not the newest
    ones: a training window's end is not its whole. Decoding the vectors is the cost (about 0.2 ms
    each), and 3000 parts put the JS distance of two samples of one distribution near 0.03, far
    below the 0.1 that counts as drift."""
    p, f = schema.parts.c, schema.part_features.c
    where = [p.cycle_end >= start, p.cycle_end < end, f.feature_set_version == feature_set_version]
    if source:
        where.append(f.source == source)
    if line_id:
        where.append(p.line_id == line_id)
    joined = schema.parts.join(schema.part_features, f.part_id == p.id)
    with store.engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(joined).where(*where)).scalar() or 0
        step = max(1, math.ceil(n / max(1, limit)))
        if step > 1:
            where.append(p.id.op("%")(step) == 0)
        rows = conn.execute(select(p.cycle_end, p.product, p.material_lot, p.shift, p.context, f.features)
                            .select_from(joined).where(*where).order_by(p.cycle_end.desc())).all()
    if step > 1:
        logger.debug("drift window %s..%s: %d of %d parts (every %d-th)", start, end, len(rows), n, step)
    records = []
    for cycle_end, product, lot, shift, context, features in rows:
        rec = {k: v for k, v in (context or {}).items() if isinstance(v, (str, int, float, bool)) or v is None}
        rec.update(features or {})
        rec.update({"cycle_end": cycle_end, "product": product or rec.get("product"),
                    "material_lot": lot or rec.get("material_lot"), "shift": shift or rec.get("shift")})
        records.append(rec)
    return pd.DataFrame.from_records(records)


def drift_explained(store: Store, reference_start: datetime, reference_end: datetime, *, feature_set_version: str,
                    hours: float = 24.0, now: datetime | None = None, baseline: Any = None,
                    line_id: str | None = None, max_reference: int = 3000,
                    max_recent: int = 3000) -> DriftExplanation | None:
    """Drift of the edge's served vectors over the last ``hours`` against the training window, explained
    by context; None when either window has fewer than :data:`MIN_PARTS` parts."""
    now = now or datetime.now(timezone.utc)
    reference = load_window(store, reference_start, reference_end, feature_set_version=feature_set_version,
                            line_id=line_id, limit=max_reference)
    recent = load_window(store, now - timedelta(hours=hours), now, feature_set_version=feature_set_version,
                         source="edge", line_id=line_id, limit=max_recent)
    if len(reference) < MIN_PARTS or len(recent) < MIN_PARTS:
        logger.info("drift explained: %d reference and %d recent parts for %s, need %d each", len(reference),
                    len(recent), feature_set_version, MIN_PARTS)
        return None
    return explain_drift(reference, recent, baseline=baseline)
