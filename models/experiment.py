"""The robustness experiment: environment-aware vs naive, evaluated on held-out conditions.

Owns :func:`evaluate` (a scorer on a labelled dataset: metrics overall and per regime) and
:func:`run_experiment` (train both kinds on the same normal history, evaluate them on held-out
scenario histories, check the goal). Imports pq and models only: history comes in as datasets
(from the store, ``pq simulate history`` Parquet turned into features, or any frames).

The naive baseline is trained the way pilots usually are: process-signal features only (no
``ctx__*``, no ``__dev_baseline``, nothing derived from them) on one season of normal data. Both thresholds come from the same
rule (alarm budget or target recall on validation), so recall stays comparable.

Two decisions are evaluated. Today's single threshold (alarm budget) with :func:`goal_check` (FAR
ratio at equal or better recall), kept so the old table stays comparable; and the split the plant
uses: part diversion at the validation quantile for a diversion budget
(:func:`models.thresholds.diversion_threshold`), with operator alarms as episodes of at-risk parts
with one cause (:func:`pq.alerts.episodes.episodes`), checked by :func:`decision_goal`: alarms/h
and the time alarms stand (:func:`models.decisions.alarm_load`) near the validation rate, FAR at matched recall,
recall beside the oracle's (:mod:`models.oracle`).

Example::

    res = run_experiment(train_ds, {"heatwave": hw_ds, "humid": hu_ds}, TrainConfig("default-1"))
    res["goal"]["met"], res["scenarios"]["heatwave"]["environment-aware"]["far"]
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np

import pandas as pd

from models.dataset import Dataset
from models.decisions import alarm_episodes, alarm_load, causes_of, decision_figures, prepared_features
from models.metrics import binary_metrics, part_hours, regime_metrics
from models.oracle import curves, oracle_figures
from models.regimes import assign_regimes
from models.scoring import Scorer
from models.thresholds import DEFAULT_DIVERSION_SHARE, threshold_for_recall
from models.training import Progress, TrainConfig, train_frames
from pq.alerts.episodes import DEFAULT_EPISODE_RULE, EpisodeRule

__all__ = ["evaluate", "run_experiment", "goal_check", "decision_goal", "matched_recall", "oracle_alarms",
           "add_trouble_check", "RECALL_TOLERANCE"]

logger = logging.getLogger(__name__)

# "Equal" recall: within one defect-in-a-hundred of the naive model's.
RECALL_TOLERANCE = 0.01


def evaluate(scorer: Scorer, ds: Dataset, regimes=None, *, truth=None, diversion_threshold: float | None = None,
             episode_rule: EpisodeRule = DEFAULT_EPISODE_RULE, p=None) -> dict:
    """Metrics of ``scorer`` on ``ds`` at its own threshold: overall, per regime, reliability curve.

    With ``truth`` (the simulator's ``defect_prob`` per part) the oracle's recall at the model's
    alert count stands beside the model's (else "no ground truth"). With ``diversion_threshold``, a
    ``diversion`` block adds the part-diversion decision and the operator alarms it raises
    (:func:`pq.alerts.episodes.episodes`, cause = the top TreeSHAP signal), overall and per regime.
    """
    X = prepared_features(scorer, ds)
    p = scorer.score_frame(X) if p is None else p
    y = ds.y.to_numpy()
    hours = part_hours(ds.meta)
    from models.regimes import DEFAULT_REGIMES

    reg = assign_regimes(ds.meta, regimes or DEFAULT_REGIMES, ds.X)
    edges = np.linspace(0, 1, 11)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 9)
    reliability = [{"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "parts": int((idx == b).sum()),
                    "mean_p": float(p[idx == b].mean()), "defect_rate": float(y[idx == b].mean())}
                   for b in range(10) if (idx == b).any()]

    def with_oracle(metrics: dict, mask) -> dict:
        o = oracle_figures(y[mask], p[mask], p[mask] >= scorer.threshold, None if truth is None else truth[mask])
        return metrics | {k: v for k, v in o.items() if k.startswith("oracle")}

    everything = np.ones(len(y), bool)
    per_regime = regime_metrics(y, p, scorer.threshold, reg, hours)
    for name, bands in per_regime.items():
        col = reg[name].to_numpy()
        for band in bands:
            bands[band] = with_oracle(bands[band], col == band)
    out = {"overall": with_oracle(binary_metrics(y, p, scorer.threshold, float(hours.sum())), everything),
           "regimes": per_regime, "reliability": reliability, "threshold": scorer.threshold,
           "ground_truth": truth is not None}
    if diversion_threshold is not None:
        divert = p >= diversion_threshold
        opened = np.zeros(len(y), bool)
        causes = causes_of(scorer, X, divert)
        opened[alarm_episodes(ds.meta, divert, causes, episode_rule)] = True
        div = decision_figures(y, p, diversion_threshold, hours, opened, truth)
        div |= alarm_load(ds.meta, divert, causes, hours, episode_rule)
        div["regimes"] = {name: {band: decision_figures(y[m], p[m], diversion_threshold, hours[m], opened[m],
                                                        None if truth is None else truth[m])
                                 for band in pd.unique(reg[name].to_numpy()) for m in [reg[name].to_numpy() == band]}
                          for name in reg.columns}
        out["diversion"] = div
    return out


def goal_check(scenarios: dict, ratio: float = 5.0, tol: float = RECALL_TOLERANCE) -> dict:
    """Per held-out scenario: FAR ratio naive/env, recall comparison, and whether the goal is met."""
    rows, met = {}, True
    for name, s in scenarios.items():
        env, naive = s["environment-aware"]["overall"], s["naive"]["overall"]
        far_e, far_n = env["far"] or 0.0, naive["far"] or 0.0
        rec_e, rec_n = env["recall"], naive["recall"]
        far_ok = far_e * ratio <= far_n if far_n > 0 else far_e == 0
        rec_ok = rec_e is not None and rec_n is not None and rec_e >= rec_n - tol
        rows[name] = {"far_env": far_e, "far_naive": far_n,
                      "far_ratio_naive_over_env": round(far_n / far_e, 2) if far_e > 0 else None,
                      "recall_env": rec_e, "recall_naive": rec_n, "far_ok": bool(far_ok), "recall_ok": bool(rec_ok),
                      "met": bool(far_ok and rec_ok)}
        met &= far_ok and rec_ok
    return {"rule": f"FAR(env) <= FAR(naive)/{ratio:g} at recall(env) >= recall(naive) - {tol}",
            "met": bool(met), "scenarios": rows}


# The goal for the two decisions, in every seed set and held-out scenario (docs/models.md).
# Operator alarms are measured two ways, each held out against the same model on validation: alarms
# opened per hour, and the share of production time with an alarm open (:func:`alarm_load`).
ALARM_RATIO_ENV_MAX = 1.5  # environment-aware: both <= 1.5 x validation
ALARM_RATIO_NAIVE_MIN = 5.0  # ... while the naive model's exceed 5 x its own in either
FAR_RATIO_MIN = 5.0  # at matched recall, FAR(env) <= FAR(naive) / 5
ORACLE_RATIO_MIN = 0.8  # diverted-part recall >= 0.8 x the oracle's at the same diversion count


def matched_recall(y, p_env, p_naive, recall: float | None) -> dict:
    """FAR of both models with each threshold set to reach the same held-out ``recall`` (the
    environment-aware model's at its diversion threshold): one point of the FAR-recall curves, fair
    to both, whatever each model's alarm count happened to be."""
    y = np.asarray(y, dtype=int)
    if not recall or not y.sum() or y.all():
        return {"recall": recall}
    out = {"recall": recall}
    for key, p in (("env", p_env), ("naive", p_naive)):
        thr = threshold_for_recall(p, y, recall)
        alert = p >= thr
        out[f"threshold_{key}"] = thr
        out[f"recall_{key}"] = _round((alert & (y == 1)).sum() / y.sum(), 4)
        out[f"far_{key}"] = _round((alert & (y == 0)).sum() / (y == 0).sum(), 5)
    out["far_ratio_naive_over_env"] = _round(out["far_naive"] / out["far_env"], 2) if out["far_env"] else None
    return out


def decision_goal(scenarios: dict, validation: dict) -> dict:
    """Per held-out scenario: the alarm ratios to validation (alarms/h and alarm-open share), FAR
    ratio at matched recall and the oracle ratio of the environment-aware model, each checked
    against the goal."""
    rows, met = {}, True
    v_env, v_naive = validation["environment-aware"], validation["naive"]
    for name, s in scenarios.items():
        env, naive = s["environment-aware"]["diversion"], s["naive"]["diversion"]
        mr = s["matched_recall"]
        a_env = _ratio(env.get("alarms_per_h"), v_env.get("alarms_per_h"))
        a_naive = _ratio(naive.get("alarms_per_h"), v_naive.get("alarms_per_h"))
        o_env = _ratio(env.get("alarm_open_share"), v_env.get("alarm_open_share"))
        o_naive = _ratio(naive.get("alarm_open_share"), v_naive.get("alarm_open_share"))
        far_ratio = mr.get("far_ratio_naive_over_env")
        oracle_ratio = env["oracle_ratio"] if isinstance(env["oracle_ratio"], float) else None
        checks = {
            # quiet by both measures: as few alarms opened per hour, and none left standing longer
            "env_alarms_ok": (a_env is not None and a_env <= ALARM_RATIO_ENV_MAX
                              and o_env is not None and o_env <= ALARM_RATIO_ENV_MAX),
            # a flood by either: many alarms opened, or alarms that stand (a model at risk on most
            # parts opens one alarm per cause that never clears, so its alarms/h *fall* as it floods)
            "naive_floods": ((a_naive is not None and a_naive > ALARM_RATIO_NAIVE_MIN)
                             or (o_naive is not None and o_naive > ALARM_RATIO_NAIVE_MIN)),
            # FAR(env) == 0 at a recall where the naive model has false alarms: the ratio is infinite
            "far_ok": (far_ratio is not None and far_ratio >= FAR_RATIO_MIN)
                      or (mr.get("far_env") == 0 and (mr.get("far_naive") or 0) > 0),
            "oracle_ok": oracle_ratio is not None and oracle_ratio >= ORACLE_RATIO_MIN,
        }
        rows[name] = {"alarms_per_h_env": env["alarms_per_h"], "alarms_per_h_naive": naive["alarms_per_h"],
                      "alarm_ratio_env": _round(a_env), "alarm_ratio_naive": _round(a_naive),
                      "alarm_open_share_env": env.get("alarm_open_share"),
                      "alarm_open_share_naive": naive.get("alarm_open_share"),
                      "open_ratio_env": _round(o_env), "open_ratio_naive": _round(o_naive),
                      "diverted_share_env": env["diverted_share"], "diverted_share_naive": naive["diverted_share"],
                      "far_env": env["far"], "far_naive": naive["far"], "recall_env": env["recall"],
                      "recall_naive": naive["recall"], "matched_recall": mr.get("recall"),
                      "far_at_matched_recall_env": mr.get("far_env"), "far_at_matched_recall_naive": mr.get("far_naive"),
                      "far_ratio_at_matched_recall": far_ratio, "oracle_recall_env": env["oracle_recall"],
                      "oracle_ratio_env": env["oracle_ratio"], "oracle_ratio_naive": naive["oracle_ratio"],
                      **checks, "met": all(checks.values())}
        met &= all(checks.values())
    return {"rule": (f"alarms/h and alarm-open share (env) <= {ALARM_RATIO_ENV_MAX:g} x validation, and alarms/h "
                     f"or alarm-open share (naive) > {ALARM_RATIO_NAIVE_MIN:g} x validation; FAR(env) <= FAR(naive)/{FAR_RATIO_MIN:g} at matched "
                     f"recall; recall(env) >= {ORACLE_RATIO_MIN:g} x oracle recall at the same diversion count"),
            "met": bool(met), "scenarios": rows}


def oracle_alarms(meta, truth_p, causes, threshold: float,
                  episode_rule: EpisodeRule = DEFAULT_EPISODE_RULE) -> dict:
    """The operator alarms a perfect model would raise: parts diverted where their *true* defect
    probability is at or above ``threshold`` (the oracle's own 3 % on the training history), an alarm
    per episode of one true mechanism, by the same episode rule. How many alarms the week's real
    trouble calls for."""
    divert = np.asarray(truth_p, dtype=float) >= threshold
    causes = np.asarray(causes, dtype=object)
    hours = part_hours(meta)
    total_h = float(hours.sum())
    opened = alarm_episodes(meta, divert, causes, episode_rule)
    return {"threshold": _round(threshold, 5), "diverted_share": _round(divert.mean(), 4),
            "alarms_per_h": _round(len(opened) / total_h, 4) if total_h else None,
            **alarm_load(meta, divert, causes, hours, episode_rule)}


def add_trouble_check(goal: dict, oracle_train: dict, oracle_held_out: dict) -> dict:
    """The alarm check again, with the budget scaled by the week's real trouble: a held-out week whose
    true defect mechanisms call for twice the oracle's training alarms may bring the model twice its
    validation alarms (x1.5). ``warranted_*`` = oracle held out / oracle on training (at least 1: a quiet
    week never tightens the budget). Adds ``env_alarms_ok_given_trouble`` and ``met_given_trouble``
    per row; the literal check and ``met`` stay as they are."""
    for name, row in goal["scenarios"].items():
        o = oracle_held_out.get(name)
        w_alarms = _ratio(o.get("alarms_per_h"), oracle_train.get("alarms_per_h")) if o else None
        w_open = _ratio(o.get("alarm_open_share"), oracle_train.get("alarm_open_share")) if o else None
        a_env, o_env = row.get("alarm_ratio_env"), row.get("open_ratio_env")
        ok = (None not in (w_alarms, w_open, a_env, o_env)
              and a_env <= ALARM_RATIO_ENV_MAX * max(1.0, w_alarms)
              and o_env <= ALARM_RATIO_ENV_MAX * max(1.0, w_open))
        row.update({"oracle_alarms_per_h_train": oracle_train.get("alarms_per_h"),
                    "oracle_alarms_per_h": o.get("alarms_per_h") if o else None,
                    "warranted_alarm_ratio": _round(w_alarms), "warranted_open_ratio": _round(w_open),
                    "env_alarms_ok_given_trouble": bool(ok),
                    "met_given_trouble": bool(ok) and all(row[k] for k in ("naive_floods", "far_ok", "oracle_ok"))})
    goal["met_given_trouble"] = all(r.get("met_given_trouble", False) for r in goal["scenarios"].values())
    return goal


def _ratio(held_out, validation) -> float | None:
    return held_out / validation if held_out is not None and validation else None


def _round(x, n: int = 3):
    return None if x is None else round(float(x), n)


def run_experiment(train: Dataset, evals: dict[str, Dataset], config: TrainConfig,
                   progress: Progress | None = None, *, truths: dict | None = None,
                   diversion_share: float = DEFAULT_DIVERSION_SHARE,
                   episode_rule: EpisodeRule = DEFAULT_EPISODE_RULE) -> dict:
    """Train both kinds on ``train`` and evaluate them on each held-out dataset.

    ``truths`` maps a held-out name to its ground-truth ``defect_prob`` per part (or None):
    the oracle columns and curves. Both the single alarm-budget threshold (today's table) and the
    part-diversion decision with its operator alarms are evaluated."""
    progress = progress or (lambda f, m: None)
    truths = truths or {}
    t0 = time.perf_counter()
    outcomes, scorers, validation = {}, {}, {}
    for i, kind in enumerate(("environment-aware", "naive")):
        cfg = replace(config, kind=kind, name=f"defect-{kind}", diversion_share=diversion_share, diversion_recall=None,
                      episode_k=episode_rule.k, episode_n=episode_rule.n)
        outcomes[kind] = train_frames(train, cfg, lambda f, m, i=i, kind=kind: progress(0.45 * (i + f), f"{kind}: {m}"))
        scorers[kind] = Scorer.from_bytes(outcomes[kind].artifact())
        validation[kind] = outcomes[kind].decisions  # shipped by training, alarm-open share included
    scenarios = {}
    for j, (name, ds) in enumerate(evals.items()):
        progress(0.9 + 0.1 * j / max(len(evals), 1), f"evaluating on {name}")
        truth = truths.get(name)
        y = ds.y.to_numpy()
        ps = {kind: scorers[kind].score_frame(prepared_features(scorers[kind], ds)) for kind in scorers}
        scenarios[name] = {kind: evaluate(scorers[kind], ds, config.regimes, truth=truth, p=ps[kind],
                                          diversion_threshold=validation[kind]["threshold"], episode_rule=episode_rule)
                           for kind in scorers}
        scenarios[name]["parts"] = len(ds)
        scenarios[name]["defects"] = int(y.sum())
        scenarios[name]["matched_recall"] = matched_recall(
            y, ps["environment-aware"], ps["naive"], scenarios[name]["environment-aware"]["diversion"]["recall"])
        scenarios[name]["curves"] = curves(y, ps | ({"oracle": truth} if truth is not None else {}))
    result = {
        "train": {"parts": len(train), "defects": int(train.y.sum()), "from": train.window[0], "to": train.window[1],
                  "feature_set_version": train.feature_set_version},
        "models": {kind: {"card": o.card, "validation": o.metrics, "validation_regimes": o.regime_metrics,
                          "threshold": o.threshold, "features": len(o.feature_names),
                          "validation_diversion": validation[kind]}
                   for kind, o in outcomes.items()},
        "scenarios": scenarios,
        "goal": goal_check(scenarios),
        "decision_goal": decision_goal(scenarios, validation),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    progress(1.0, "experiment done")
    for name, row in result["decision_goal"]["scenarios"].items():
        logger.info("%s: alarms/h env %s (x%s of validation) naive %s (x%s); FAR ratio at recall %s: %s; "
                    "oracle ratio %s -> %s", name, row["alarms_per_h_env"], row["alarm_ratio_env"],
                    row["alarms_per_h_naive"], row["alarm_ratio_naive"], row["matched_recall"],
                    row["far_ratio_at_matched_recall"], row["oracle_ratio_env"], "met" if row["met"] else "NOT met")
    return result
