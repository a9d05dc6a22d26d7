"""The two decisions a model serves, measured on labelled parts: part diversion and operator alarms.

Owns what training ships and the robustness report compares: the diversion threshold chosen on
out-of-fold probabilities for a diversion budget (a share of parts) or a target recall
(:mod:`models.thresholds`), and the operator alarms it raises as episodes of at-risk parts with one
cause (:mod:`pq.alerts.episodes`, cause = the signal with the largest TreeSHAP contribution, as the
edge names it). :func:`validation_decisions` is the block stored in the model card and artifact
(``decisions``): the edge reads its threshold and episode rule, the registry's promotion gate reads
its alarm rate and diverted share. Imports pq and models only.

Example::

    block = validation_decisions(outcome, scorer, ds, share=0.03)
    block["threshold"], block["diverted_share"], block["alarms_per_h"]
    opened = alarm_episodes(ds.meta, p >= block["threshold"], causes)   # rows that opened an alarm
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.dataset import Dataset, apply_baseline
from models.metrics import binary_metrics, part_hours
from models.oracle import oracle_figures
from models.thresholds import ALARM_CEILING_PER_H, DEFAULT_DIVERSION_SHARE, diversion_threshold, threshold_for_recall
from pq.alerts.episodes import DEFAULT_EPISODE_RULE, EpisodeRule, episodes

__all__ = ["ALARM_CEILING_PER_H", "prepared_features", "alarm_episodes", "alarm_load", "causes_of",
           "decision_figures", "validation_decisions"]

def prepared_features(scorer, ds: Dataset):
    """``ds.X`` as the model sees it: deviation features from the model's own baseline, as the edge computes them."""
    return apply_baseline(ds.X, ds.meta, scorer.baseline) if scorer.baseline is not None else ds.X


def alarm_episodes(meta, at_risk: np.ndarray, causes: np.ndarray, rule: EpisodeRule = DEFAULT_EPISODE_RULE) -> np.ndarray:
    """Index (into ``meta``) of the part that opened each operator alarm, line by line in production order."""
    order = np.lexsort((pd.to_datetime(meta["cycle_end"], utc=True).to_numpy(), meta["line_id"].astype(str).to_numpy()))
    lines = meta["line_id"].astype(str).to_numpy()[order]
    opened = []
    for line in pd.unique(lines):
        rows = order[lines == line]
        opened += [rows[e.start] for e in episodes(at_risk[rows], causes[rows], rule)]
    return np.sort(np.asarray(opened, dtype=np.int64))


def alarm_load(meta, at_risk: np.ndarray, causes: np.ndarray, hours: np.ndarray,
               rule: EpisodeRule = DEFAULT_EPISODE_RULE) -> dict:
    """How long operator alarms stand, beside how many open: ``alarm_open_share`` is the share of
    production time with at least one alarm open, ``standing_alarms`` the mean number open at a time
    (alarm-hours per production hour).

    An episode stands from the part that opens it until ``rule.n`` parts pass without its cause (the
    part that clears it, as :func:`pq.alerts.episodes.advance` decides), or to the end of the data.
    Why both figures: a model at risk on most parts opens *one* alarm per cause that never clears, so
    alarms opened per hour fall as a flood grows; the time alarms stand grows with it (and every
    episode stands at least ``n`` parts, so more episodes also mean more open time)."""
    order = np.lexsort((pd.to_datetime(meta["cycle_end"], utc=True).to_numpy(), meta["line_id"].astype(str).to_numpy()))
    lines = meta["line_id"].astype(str).to_numpy()[order]
    covered = np.zeros(len(order), bool)  # in production order
    standing = np.zeros(len(order))
    for line in pd.unique(lines):
        pos = np.flatnonzero(lines == line)
        rows = order[pos]
        for e in episodes(at_risk[rows], causes[rows], rule):
            span = pos[e.start:min(e.last + rule.n, len(pos))]
            covered[span] = True
            standing[span] += 1
    h = np.asarray(hours, dtype=float)[order]
    total = float(h.sum())
    if total <= 0:
        return {"alarm_open_share": None, "standing_alarms": None}
    return {"alarm_open_share": round(float(h[covered].sum()) / total, 5),
            "standing_alarms": round(float((h * standing).sum()) / total, 5)}


def causes_of(scorer, X, at_risk: np.ndarray) -> np.ndarray:
    """The top TreeSHAP signal of each at-risk row (None elsewhere): the cause an alarm is grouped by."""
    causes = np.full(len(X), None, dtype=object)
    causes[at_risk] = scorer.top_signals(X.loc[at_risk])
    return causes


def decision_figures(y, p, threshold: float, hours: np.ndarray, at_alarm_open: np.ndarray, truth=None) -> dict:
    """Diversion at ``threshold``: diverted share, FAR, recall, operator alarms/h, oracle beside the model."""
    y = np.asarray(y, dtype=int)
    divert = p >= threshold
    m = binary_metrics(y, p, threshold, float(hours.sum()))
    h = float(hours.sum())
    return {"threshold": threshold, "parts": len(y), "defects": int(y.sum()),
            "diverted_share": round(float(divert.mean()), 5) if len(y) else None,
            "far": m["far"], "recall": m["recall"], "precision": m["precision"],
            "diverted_per_h": m["alerts_per_h"], "alarms": int(at_alarm_open.sum()),
            "alarms_per_h": round(float(at_alarm_open.sum()) / h, 3) if h > 0 else None,
            **{k: v for k, v in oracle_figures(y, p, divert, truth).items() if k.startswith("oracle") or k == "auc"}}


def validation_decisions(p_oof, y, scorer, train: Dataset, share: float | None = DEFAULT_DIVERSION_SHARE,
                         rule: EpisodeRule = DEFAULT_EPISODE_RULE, target_recall: float | None = None) -> dict:
    """The diversion threshold from the out-of-fold probabilities, and what it did on validation:
    diverted share, FAR, recall, operator alarms/h and how long they stood (:func:`alarm_load`): the
    rates held-out alarms are compared with.

    The threshold diverts at most ``share`` of the validation parts; with ``target_recall`` it is the
    highest one that still reaches that recall, capped by the share when both are given (the budget
    of the inspection station wins, and the block says so). Each part's at-risk decision is out of
    fold; its cause comes from the final model's TreeSHAP, because the fold models are not kept."""
    p = np.asarray(p_oof, dtype=float)
    y = np.asarray(y, dtype=int)
    if share is None and target_recall is None:
        share = DEFAULT_DIVERSION_SHARE
    candidates, how = [], {}
    if target_recall is not None:
        thr_r = threshold_for_recall(p, y, target_recall)
        if thr_r is not None:
            candidates.append(thr_r)
        how["target_recall"] = target_recall
    if share is not None:
        candidates.append(diversion_threshold(p, share))
        how["share_budget"] = share
    thr = max(candidates)
    if target_recall is not None and share is not None and len(candidates) == 2:
        how["capped_by_share"] = bool(candidates[1] > candidates[0])
    divert = p >= thr
    X = prepared_features(scorer, train)
    causes = causes_of(scorer, X, divert)
    opened = np.zeros(len(p), bool)
    opened[alarm_episodes(train.meta, divert, causes, rule)] = True
    hours = part_hours(train.meta)
    out = decision_figures(y, p, thr, hours, opened)
    return ({k: v for k, v in out.items() if not k.startswith("oracle")}
            | alarm_load(train.meta, divert, causes, hours, rule)
            | how | {"episode_rule": {"k": rule.k, "n": rule.n}})
