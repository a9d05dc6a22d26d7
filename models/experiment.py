"""The robustness experiment: environment-aware vs naive, evaluated on held-out conditions.

Owns :func:`evaluate` (a scorer on a labelled dataset: metrics overall and per regime) and
:func:`run_experiment` (train both kinds on the same normal history, evaluate them on held-out
scenario histories, check the goal). Imports pq and models only: history comes in as datasets
(from the store, ``pq simulate history`` Parquet turned into features, or any frames).

The naive baseline is trained the way pilots usually are: process-signal features only (no
``ctx__*``, no ``__dev_baseline``, nothing derived from them) on one season of normal data. Both thresholds come from the same
rule (alarm budget or target recall on validation), so recall stays comparable.

Goal: in every held-out scenario, at equal or better recall, the environment-aware model's
false-alarm rate on good parts is at most one fifth of the naive model's.

Example::

    res = run_experiment(train_ds, {"heatwave": hw_ds, "humid": hu_ds}, TrainConfig("default-1"))
    res["goal"]["met"], res["scenarios"]["heatwave"]["environment-aware"]["far"]
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np

from models.dataset import Dataset, apply_baseline
from models.metrics import binary_metrics, part_hours, regime_metrics
from models.regimes import assign_regimes
from models.scoring import Scorer
from models.training import Progress, TrainConfig, train_frames

__all__ = ["evaluate", "run_experiment", "goal_check", "RECALL_TOLERANCE"]

logger = logging.getLogger(__name__)

# "Equal" recall: within one defect-in-a-hundred of the naive model's.
RECALL_TOLERANCE = 0.01


def evaluate(scorer: Scorer, ds: Dataset, regimes=None) -> dict:
    """Metrics of ``scorer`` on ``ds`` at its own threshold: overall, per regime, reliability curve."""
    X = ds.X
    if scorer.baseline is not None:  # deviation features as the edge computes them: the model's own baseline
        X = apply_baseline(X, ds.meta, scorer.baseline)
    p = scorer.score_frame(X)
    y = ds.y.to_numpy()
    hours = part_hours(ds.meta)
    from models.regimes import DEFAULT_REGIMES

    reg = assign_regimes(ds.meta, regimes or DEFAULT_REGIMES, ds.X)
    edges = np.linspace(0, 1, 11)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 9)
    reliability = [{"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "parts": int((idx == b).sum()),
                    "mean_p": float(p[idx == b].mean()), "defect_rate": float(y[idx == b].mean())}
                   for b in range(10) if (idx == b).any()]
    return {"overall": binary_metrics(y, p, scorer.threshold, float(hours.sum())),
            "regimes": regime_metrics(y, p, scorer.threshold, reg, hours), "reliability": reliability,
            "threshold": scorer.threshold}


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


def run_experiment(train: Dataset, evals: dict[str, Dataset], config: TrainConfig,
                   progress: Progress | None = None) -> dict:
    """Train both kinds on ``train`` and evaluate them on each held-out dataset."""
    progress = progress or (lambda f, m: None)
    t0 = time.perf_counter()
    outcomes, scorers = {}, {}
    for i, kind in enumerate(("environment-aware", "naive")):
        cfg = replace(config, kind=kind, name=f"defect-{kind}")
        outcomes[kind] = train_frames(train, cfg, lambda f, m, i=i, kind=kind: progress(0.45 * (i + f), f"{kind}: {m}"))
        scorers[kind] = Scorer.from_bytes(outcomes[kind].artifact())
    scenarios = {}
    for j, (name, ds) in enumerate(evals.items()):
        progress(0.9 + 0.1 * j / max(len(evals), 1), f"evaluating on {name}")
        scenarios[name] = {kind: evaluate(scorers[kind], ds, config.regimes) for kind in scorers}
        scenarios[name]["parts"] = len(ds)
        scenarios[name]["defects"] = int(ds.y.sum())
    result = {
        "train": {"parts": len(train), "defects": int(train.y.sum()), "from": train.window[0], "to": train.window[1],
                  "feature_set_version": train.feature_set_version},
        "models": {kind: {"card": o.card, "validation": o.metrics, "validation_regimes": o.regime_metrics,
                          "threshold": o.threshold, "features": len(o.feature_names)}
                   for kind, o in outcomes.items()},
        "scenarios": scenarios,
        "goal": goal_check(scenarios),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    progress(1.0, "experiment done")
    for name, row in result["goal"]["scenarios"].items():
        logger.info("%s: FAR env %.4f vs naive %.4f, recall env %s vs naive %s -> %s", name, row["far_env"],
                    row["far_naive"], row["recall_env"], row["recall_naive"], "met" if row["met"] else "NOT met")
    return result
