"""Quality metrics in the plant's terms: false alarms on good parts, recall, alerts per hour.

Owns threshold selection (alarm budget, target recall, or the F1 maximum) and the metric dictionaries stored with
every model version (overall and per regime). Imports pq only.

``alerts_per_h`` is per line and per production hour: the hours a regime covers are its part count
times the line's median cycle time, so a regime seen for two hours is not diluted by the rest.

Example::

    hours = production_hours(meta)
    thr, rule = choose_threshold(p, y, hours, alarm_budget_per_h=2.0)
    m = binary_metrics(y, p, thr, hours)
    m["far"], m["recall"], m["alerts_per_h"]
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pq.errors import ModelError

__all__ = ["production_hours", "choose_threshold", "f1_threshold", "binary_metrics", "regime_metrics", "part_hours"]

THRESHOLD_RULES = ("budget", "f1")


def part_hours(meta: pd.DataFrame) -> np.ndarray:
    """Production hours each part stands for: its line's median cycle time (h)."""
    out = np.zeros(len(meta))
    t = pd.to_datetime(meta["cycle_end"], utc=True)
    lines = meta["line_id"] if "line_id" in meta.columns else pd.Series("line", index=meta.index)
    for _, idx in lines.groupby(lines).groups.items():
        pos = meta.index.get_indexer(idx)
        # seconds via total_seconds: pandas 3 may hold microseconds, so int64 views are not ns
        ts = np.sort((t.iloc[pos] - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy())
        d = np.diff(ts)
        d = d[d > 0]
        cycle_s = float(np.median(d)) if len(d) else 20.0
        out[pos] = cycle_s / 3600.0
    return out


def production_hours(meta: pd.DataFrame) -> float:
    return float(part_hours(meta).sum())


def choose_threshold(
    p: np.ndarray,
    y: np.ndarray,
    hours: float,
    *,
    alarm_budget_per_h: float | None = None,
    target_recall: float | None = None,
    rule: str = "budget",
) -> tuple[float, dict]:
    """The alert threshold and a description of the rule that chose it.

    ``rule="f1"``: the threshold with the highest F1 on ``(p, y)`` (:func:`f1_threshold`), whatever
    alarm rate it implies: for a benchmark or a line where a missed defect and a false alarm cost
    about the same. ``rule="budget"`` (the default) takes the budget and/or the recall target:

    - budget only: the lowest threshold whose alert count stays within budget x hours (most recall
      the operators' attention allows);
    - target recall only: the highest threshold that still reaches the recall (fewest alarms);
    - both: the recall target, capped by the budget (the budget wins and the card says so).
    """
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=int)
    if rule not in THRESHOLD_RULES:
        raise ModelError(f"threshold rule must be one of {', '.join(THRESHOLD_RULES)}, got {rule!r}")
    if rule == "f1":
        thr, f1 = f1_threshold(p, y)
        return thr, {"hours": round(hours, 3), "rule": "f1", "f1": round(f1, 4)}
    if alarm_budget_per_h is None and target_recall is None:
        raise ModelError("threshold rule: give an alarm budget (alerts per hour per line) or a target recall")
    candidates = []
    rule: dict = {"hours": round(hours, 3)}
    if target_recall is not None:
        if not 0 < target_recall <= 1:
            raise ModelError(f"target_recall must be in (0, 1], got {target_recall}")
        pos = np.sort(p[y == 1])[::-1]
        need = max(1, math.ceil(target_recall * len(pos)))
        thr_r = float(pos[need - 1]) if len(pos) else 0.5
        candidates.append(thr_r)
        rule["target_recall"] = target_recall
    if alarm_budget_per_h is not None:
        if alarm_budget_per_h <= 0:
            raise ModelError(f"alarm_budget_per_h must be > 0, got {alarm_budget_per_h}")
        allowed = int(math.floor(alarm_budget_per_h * hours))
        s = np.sort(p)[::-1]
        if allowed >= len(s):
            thr_b = float(s[-1]) if len(s) else 0.5
        else:
            # strictly above the (allowed+1)-th score so ties cannot push the count over budget
            thr_b = float(np.nextafter(s[allowed], np.inf))
        candidates.append(thr_b)
        rule["alarm_budget_per_h"] = alarm_budget_per_h
        if target_recall is not None and thr_b > candidates[0]:
            rule["note"] = "target recall not reachable within the alarm budget; the budget wins"
    thr = min(max(candidates), 1.0)
    rule["rule"] = ("target_recall+alarm_budget" if len(candidates) == 2
                    else "target_recall" if target_recall is not None else "alarm_budget")
    return thr, rule


def f1_threshold(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) where alerting on ``p >= threshold`` gives the highest F1 on these labels.

    Every distinct score is a candidate (ties alert together), so the result is exact, not a grid.

    >>> f1_threshold(np.array([0.9, 0.8, 0.3, 0.2]), np.array([1, 0, 1, 0]))
    (0.3, 0.8)
    """
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=int)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ModelError("F1 threshold: the labels hold no defect, so F1 is undefined")
    order = np.argsort(-p, kind="stable")
    ps, tp = p[order], np.cumsum(y[order])
    alerts = np.arange(1, len(ps) + 1)
    f1 = 2.0 * tp / (alerts + n_pos)
    last_of_tie = np.r_[ps[1:] != ps[:-1], True]  # a cut between equal scores is not a threshold
    f1 = np.where(last_of_tie, f1, -1.0)
    best = int(np.argmax(f1))
    return float(ps[best]), float(f1[best])


def _ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    if len(p) == 0:
        return float("nan")
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    err = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            err += m.sum() / len(p) * abs(p[m].mean() - y[m].mean())
    return float(err)


def _r(x: float, n: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), n)


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float, hours: float) -> dict:
    """Counts and rates at ``threshold``; rates are None where undefined (no positives, ...)."""
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    alert = p >= threshold
    n, npos = len(y), int(y.sum())
    nneg = n - npos
    tp = int((alert & (y == 1)).sum())
    fp = int((alert & (y == 0)).sum())
    out = {
        "parts": n, "defects": npos, "alerts": int(alert.sum()), "true_alerts": tp, "false_alarms": fp,
        "hours": _r(hours, 3),
        "far": _r(fp / nneg) if nneg else None,
        "recall": _r(tp / npos) if npos else None,
        "precision": _r(tp / (tp + fp)) if tp + fp else None,
        "f1": _r(2 * tp / (2 * tp + fp + (npos - tp))) if npos else None,
        "alerts_per_h": _r(alert.sum() / hours, 3) if hours > 0 else None,
        "false_alarms_per_h": _r(fp / hours, 3) if hours > 0 else None,
        "defect_rate": _r(npos / n) if n else None,
        "mean_probability": _r(p.mean()) if n else None,
        "brier": _r(float(np.mean((p - y) ** 2))) if n else None,
        "ece": _r(_ece(y, p)) if n else None,
        "auc": None, "pr_auc": None,
    }
    if 0 < npos < n:
        from sklearn.metrics import average_precision_score, roc_auc_score

        out["auc"] = _r(roc_auc_score(y, p))
        out["pr_auc"] = _r(average_precision_score(y, p))
    return out


def regime_metrics(
    y: np.ndarray, p: np.ndarray, threshold: float, regimes: pd.DataFrame, hours_per_part: np.ndarray
) -> dict[str, dict[str, dict]]:
    """``{regime: {band: metrics}}`` for every regime column."""
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    out: dict[str, dict[str, dict]] = {}
    for name in regimes.columns:
        col = regimes[name].to_numpy()
        out[name] = {}
        for band in pd.unique(col):
            m = col == band
            out[name][str(band)] = binary_metrics(y[m], p[m], threshold, float(hours_per_part[m].sum()))
    return out
