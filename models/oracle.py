"""The limit: an oracle that ranks parts by their true defect probability, and curves to compare against it.

Owns reading the simulator's ground truth (``ground_truth.parquet``: ``defect_prob`` per part) into
an array aligned with a dataset, the oracle figures at a model's own alert count, and the
precision-recall / FAR-recall curves of models and oracle. Imports pq and models only.

Why an oracle: a recall of 0.5 can be poor or the best anyone can do; defects drawn at random
(contamination) or from a process deviation the signals barely show cannot be caught by any model.
The oracle knows the probability each part had of going bad and diverts the parts with the highest
ones, so "oracle recall at the model's alert count" is what a perfect model would have caught with
the same number of alerts on the same parts, and ``oracle_ratio`` = model recall / oracle recall is
how much of the catchable the model caught. Histories without ground truth (imported, real plants)
get :data:`NO_GROUND_TRUTH` in those columns.

Example::

    truth = ground_truth_for(ds.meta, read_table(hist_dir, "ground_truth", required=False))
    oracle_figures(y, p, p >= thr, truth)["oracle_ratio"]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.metrics import _r

__all__ = ["NO_GROUND_TRUTH", "ground_truth_for", "true_causes_for", "oracle_recall_at", "oracle_figures", "curves"]

NO_GROUND_TRUTH = "no ground truth"


def ground_truth_for(meta: pd.DataFrame, truth: pd.DataFrame | None) -> np.ndarray | None:
    """``defect_prob`` per row of ``meta`` (joined on line_id and serial); None when there is no
    ground truth or it does not cover every part (a partial oracle would not be an oracle)."""
    if truth is None or not {"line_id", "serial", "defect_prob"} <= set(truth.columns):
        return None
    t = truth.drop_duplicates(["line_id", "serial"]).set_index(["line_id", "serial"])["defect_prob"]
    idx = pd.MultiIndex.from_arrays([meta["line_id"].astype(str), meta["serial"].astype(str)])
    t.index = pd.MultiIndex.from_arrays([t.index.get_level_values(0).astype(str), t.index.get_level_values(1).astype(str)])
    out = t.reindex(idx).to_numpy(dtype=float)
    return out if np.isfinite(out).all() else None


def true_causes_for(meta: pd.DataFrame, truth: pd.DataFrame | None) -> np.ndarray | None:
    """Per row of ``meta``, the mechanism with the highest true probability (``p_<mechanism>``
    columns): the cause an oracle names for a part, as a model names its top signal. None without
    those columns or when they do not cover every part."""
    if truth is None:
        return None
    cols = [c for c in truth.columns if c.startswith("p_")]
    if not cols or not {"line_id", "serial"} <= set(truth.columns):
        return None
    t = truth.drop_duplicates(["line_id", "serial"])
    cause = pd.Series(np.asarray([c[2:] for c in cols])[t[cols].to_numpy(dtype=float).argmax(axis=1)],
                      index=pd.MultiIndex.from_arrays([t["line_id"].astype(str), t["serial"].astype(str)]))
    out = cause.reindex(pd.MultiIndex.from_arrays([meta["line_id"].astype(str), meta["serial"].astype(str)]))
    return None if out.isna().any() else out.to_numpy(dtype=object)


def oracle_recall_at(y, truth_p, n_alerts: int) -> float | None:
    """Recall of the ``n_alerts`` parts with the highest true defect probability (None without defects)."""
    y = np.asarray(y, dtype=int)
    if not y.sum():
        return None
    n_alerts = int(min(max(n_alerts, 0), len(y)))
    top = np.argsort(-np.asarray(truth_p, dtype=float), kind="stable")[:n_alerts]
    return float(y[top].sum() / y.sum())


def _auc(y, s) -> float | None:
    """ROC AUC from mid-ranks (Mann-Whitney): the same number as sklearn's, without its per-call
    input validation, which dominated a report that asks for one per scenario, model and band."""
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=int)
    npos = int(y.sum())
    nneg = len(y) - npos
    if not npos or not nneg:
        return None
    ranks = rankdata(np.asarray(s, dtype=float))
    return float((ranks[y == 1].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def oracle_figures(y, p, alert, truth_p) -> dict:
    """Model recall and AUC beside the oracle's at the model's own alert count."""
    y = np.asarray(y, dtype=int)
    alert = np.asarray(alert, dtype=bool)
    npos = int(y.sum())
    recall = float((alert & (y == 1)).sum() / npos) if npos else None
    out = {"alerts": int(alert.sum()), "recall": _r(recall) if recall is not None else None, "auc": _r(_auc(y, p))}
    if truth_p is None:
        return out | {"oracle_recall": NO_GROUND_TRUTH, "oracle_ratio": NO_GROUND_TRUTH, "oracle_auc": NO_GROUND_TRUTH}
    o = oracle_recall_at(y, truth_p, int(alert.sum()))
    ratio = recall / o if recall is not None and o else None
    return out | {"oracle_recall": _r(o) if o is not None else None, "oracle_ratio": _r(ratio) if ratio is not None else None,
                  "oracle_auc": _r(_auc(y, truth_p))}


def curves(y, scores: dict[str, np.ndarray], max_share: float = 0.3, points: int = 60) -> dict[str, dict]:
    """Per scorer (models and, if given, the oracle's truth): recall, precision and false-alarm rate
    at ``points`` alert counts from one part up to ``max_share`` of the parts (the range a plant
    could divert), for the precision-recall and FAR-recall curves of the report."""
    y = np.asarray(y, dtype=int)
    n, npos = len(y), int(y.sum())
    if not npos or npos == n:
        return {}
    counts = np.unique(np.geomspace(1, max(2, int(max_share * n)), points).astype(int))
    out = {}
    for name, s in scores.items():
        order = np.argsort(-np.asarray(s, dtype=float), kind="stable")
        tp = np.cumsum(y[order])[counts - 1]
        out[name] = {"alerts": counts.tolist(), "recall": np.round(tp / npos, 4).tolist(),
                     "precision": np.round(tp / counts, 4).tolist(),
                     "far": np.round((counts - tp) / (n - npos), 5).tolist()}
    return out
