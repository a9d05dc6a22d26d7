"""Training: environment-grouped validation, calibration, an alert threshold for an alarm budget.

Owns :class:`TrainConfig`, :func:`train_frames` (a dataset in, a fitted and evaluated model out,
no store needed) and :func:`train` (dataset from the store, then registration), plus the
``training_jobs`` helpers the UI uses. Imports pq and models only.

How a model is trained:

1. Features (:func:`select_features`): the naive kind uses process signals only; the
   environment-aware kind uses the deviation of every signal the context baseline models (refitted
   on the good training parts and shipped in the artifact) instead of its level, tool wear as
   context, and derived features relative to conditions.
2. Validation: parts are grouped by day joined through material lots, the groups are cut into
   contiguous stretches of time (folds); each fold is predicted by a model that never saw its days,
   lots or weather. Early stopping uses the last stretch of each training side, never the fold.
3. Imbalance: defects weigh (good / defect) times more, capped; optional reweighting so rare
   regimes (hot days, a new supplier) count as much as common ones.
4. Calibration: Platt (or isotonic) on the out-of-fold margins; the threshold is chosen on the
   calibrated out-of-fold probabilities by the alarm budget or target recall rule.
5. The final booster is fitted on all parts with the median early-stopped rounds.

Example::

    cfg = TrainConfig(feature_set_version="default-1", alarm_budget_per_h=2.0)
    outcome = train_frames(ds, cfg, progress=lambda f, msg: print(f"{f:4.0%} {msg}"))
    result = train(store, cfg, trained_by="alice")      # registers a new version
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Callable

import numpy as np
import pandas as pd

from models.dataset import Dataset, apply_baseline, fit_baseline, load_dataset
from models.estimator import DefectModel, json_safe
from models.metrics import binary_metrics, choose_threshold, part_hours, regime_metrics
from models.regimes import DEFAULT_REGIMES, RegimeDef, assign_regimes, cv_groups, split_rows, time_folds
from pq.errors import ModelError, PQError

__all__ = ["TrainConfig", "FitOutcome", "TrainResult", "train_frames", "train", "select_features",
           "start_job", "job_progress", "run_job", "Progress"]

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
KINDS = ("environment-aware", "naive")
# Fewest trees of any model: early stopping on AUC over a few hundred parts can stop after a handful
# of trees, whose margins barely leave the prior (measured: folds stopping at 4 and 5 trees).
MIN_ROUNDS = 50


@dataclass
class TrainConfig:
    """What to train and how; every field lands in the model card."""

    feature_set_version: str
    name: str = "defect"
    line_id: str | None = None
    product: str | None = None
    kind: str = "environment-aware"
    alarm_budget_per_h: float | None = 2.0
    target_recall: float | None = None
    defect_code: str | None = None
    reweight_regimes: bool = False
    folds: int = 3
    seed: int = 42
    n_threads: int = 2
    start: datetime | None = None
    end: datetime | None = None
    label_precedence: str = "inspection"
    min_labelled: int = 200
    min_defects: int = 10
    drop_empty_features: bool = False
    exclude_features: tuple[str, ...] = ()  # regular expressions, e.g. leaky columns of an import
    hyperparams: dict = field(default_factory=dict)
    regimes: tuple[RegimeDef, ...] = DEFAULT_REGIMES
    refit_baseline: bool = True

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ModelError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.alarm_budget_per_h is None and self.target_recall is None:
            raise ModelError("give an alarm budget (alerts per hour per line) or a target recall")
        if self.folds < 2:
            raise ModelError(f"folds must be >= 2, got {self.folds}")

    def describe(self) -> dict:
        d = asdict(self)
        d["regimes"] = [r.name for r in self.regimes]
        return json_safe(d)


@dataclass
class FitOutcome:
    model: DefectModel
    config: TrainConfig
    threshold: float
    threshold_rule: dict
    metrics: dict
    regime_metrics: dict
    card: dict
    oof_proba: np.ndarray
    baseline: object | None
    window: tuple
    normal_ranges: dict = field(default_factory=dict)
    moving_signals: list = field(default_factory=list)

    @property
    def feature_names(self) -> list[str]:
        return self.model.feature_names_

    def artifact(self) -> bytes:
        return self.model.to_bytes({
            "threshold": self.threshold, "feature_set_version": self.config.feature_set_version,
            "kind": self.config.kind, "name": self.config.name,
            "baseline": self.baseline.to_dict() if self.baseline is not None else None,
            "normal_ranges": self.normal_ranges,
            "moving_signals": self.moving_signals,
            "card": self.card,
        })


@dataclass
class TrainResult:
    version: object  # models.registry.ModelVersion
    outcome: FitOutcome


def _noop(_f: float, _m: str) -> None:
    return None


# Statistics that are a signal's level (or scale with it, like the range and spread of a pressure
# that is zero outside its phase). For a signal the context baseline models, the environment-aware
# model takes its deviation instead: the level is confounded by conditions, and trees extrapolate
# it flat outside the training range where the linear baseline extrapolates the deviation.
LEVEL_STATS = ("mean", "min", "max", "first", "last", "ewma", "time_above", "time_below", "range", "std", "value")
# Context that is a risk factor of its own and cycles within its range in normal production (a tool
# is maintained, wear starts again), so trees never have to extrapolate it. Other context that the
# baseline takes as an input (hall climate, lot properties, dryer, shift, product, supplier) reaches
# the environment-aware model only through the deviations it explains (measured in docs/models.md).
RISK_CONTEXT = ("tool_wear_shots",)


def _ctx_name(column: str) -> str:
    """``ctx__product__hsg_1040`` -> ``product``; ``ctx__ambient_temp_c`` -> ``ambient_temp_c``."""
    return column.split("__")[1]


def select_features(columns, kind: str, exclude: tuple[str, ...] = (), *,
                    derived_refs: dict[str, list[str]] | None = None,
                    risk_context: tuple[str, ...] = RISK_CONTEXT) -> list[str]:
    """Feature columns a model of ``kind`` may use.

    - naive: process signals only, the way pilots train: no ``ctx__*``, no ``*__dev_baseline``, and
      no derived feature computed from them (``derived_refs``: {derived name: referenced features}).
    - environment-aware: for every signal with a ``<signal>__dev_baseline`` column, the deviation
      and the shape statistics (slope) but none of its :data:`LEVEL_STATS`; context only as
      ``risk_context``; derived features unless they combine levels left out.

    ``exclude`` (regular expressions) always applies.

    >>> select_features(["melt_temp_c__mean", "melt_temp_c__dev_baseline", "ctx__ambient_temp_c"], "naive")
    ['melt_temp_c__mean']
    >>> select_features(["melt_temp_c__mean", "melt_temp_c__dev_baseline", "ctx__ambient_temp_c"], "environment-aware")
    ['melt_temp_c__dev_baseline']
    """
    columns = list(columns)
    pats = [re.compile(p) for p in exclude]
    derived_refs = derived_refs or {}
    baselined = {c[: -len("__dev_baseline")] for c in columns if c.endswith("__dev_baseline")}

    def is_context(c: str) -> bool:
        return c.startswith("ctx__") or c.endswith("__dev_baseline")

    def is_level(c: str) -> bool:
        parts = c.split("__")
        return (len(parts) >= 2 and parts[0] in baselined and parts[-1] in LEVEL_STATS
                and not c.startswith(("ctx__", "n_good__", "n_bad__")))

    out = []
    for c in columns:
        if any(p.search(c) for p in pats):
            continue
        refs = derived_refs.get(c, ())
        if kind == "naive":
            if is_context(c) or any(is_context(r) for r in refs):
                continue
        elif kind == "environment-aware":
            if is_level(c) or any(is_level(r) for r in refs):
                continue
            if c.startswith("ctx__") and _ctx_name(c) not in risk_context:
                continue
        out.append(c)
    return out


def _derived_refs(feature_set_version: str) -> dict[str, list[str]]:
    """{derived feature: the features it is computed from} when ``feature_set_version`` is the
    shipped spec's (imported feature sets have no derived features)."""
    from pq.features.spec import load_feature_set

    fs = load_feature_set()
    if fs.version != feature_set_version:
        return {}
    return {d.name: list(d.refs) for d in fs.derived}


def _regime_weights(regimes: pd.DataFrame) -> np.ndarray:
    """1/sqrt(frequency) of each part's (ambient, humidity, supplier) cell, mean 1: rare conditions
    count more without letting a handful of parts dominate."""
    cols = [c for c in ("ambient", "humidity", "supplier") if c in regimes.columns]
    if not cols:
        return np.ones(len(regimes))
    cell = regimes[cols].astype(str).agg("|".join, axis=1)
    freq = cell.map(cell.value_counts()).to_numpy(dtype=float)
    w = 1.0 / np.sqrt(freq)
    return w / w.mean()


def _early_stop_split(meta: pd.DataFrame, rows: np.ndarray, share: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Split training rows: the latest day+lot groups (about ``share`` of parts) for early stopping."""
    sub = meta.iloc[rows]
    groups = cv_groups(sub)
    t = pd.to_datetime(sub["cycle_end"], utc=True).astype("int64").to_numpy()
    order = pd.DataFrame({"g": groups, "t": t}).groupby("g")["t"].min().sort_values(ascending=False)
    counts = pd.Series(groups).value_counts()
    chosen, n = [], 0
    for g in order.index:
        if n >= share * len(rows) or len(chosen) >= len(order) - 1:
            break
        chosen.append(g)
        n += counts[g]
    es = np.isin(groups, chosen)
    if not es.any():  # a single group: fall back to the latest share of parts in time
        es = t >= np.quantile(t, 1 - share)
    return rows[~es], rows[es]


def _moving_signals(X: pd.DataFrame) -> list[str]:
    """Signals whose reading moved within every training part that measured it (std > 0): a cycle
    where such a reading is flat to the last digit is a stuck sensor, not a process state. The edge
    checks this whether or not the model itself reads the signal's spread."""
    out = []
    for c in X.columns:
        if c.endswith("__std") and c.count("__") == 1:
            seen = X[c].dropna()
            if len(seen) >= 20 and (seen > 0).all():
                out.append(c[: -len("__std")])
    return out


def _normal_ranges(X: pd.DataFrame, y: np.ndarray) -> dict[str, list[float]]:
    """{signal: [p1, p99]} of each signal's value feature over good parts: the explanation's normal
    range when no context baseline models that signal."""
    from models.estimator import signal_of

    good = X.loc[y == 0]
    out: dict[str, list[float]] = {}
    for c in X.columns:
        if c.endswith(("__mean", "__value")) or (c.startswith("ctx__") and c.count("__") == 1):
            v = good[c].dropna()
            if len(v) >= 20:
                out.setdefault(signal_of(c), [float(v.quantile(0.01)), float(v.quantile(0.99))])
    return out


def train_frames(ds: Dataset, config: TrainConfig, progress: Progress | None = None) -> FitOutcome:
    """Fit, validate, calibrate and choose the threshold; nothing touches the store."""
    progress = progress or _noop
    t0 = time.perf_counter()
    if config.defect_code:
        ds = ds.for_defect_code(config.defect_code)
    n, n_pos = len(ds), int(ds.y.sum())
    if n < config.min_labelled:
        raise ModelError(
            f"training needs at least {config.min_labelled} labelled parts, got {n} "
            f"({ds.n_unlabelled} more are waiting for their inspection result); widen the window or wait for labels")
    if n_pos < config.min_defects or n - n_pos < config.min_defects:
        what = f"defect code {config.defect_code}" if config.defect_code else "defects"
        raise ModelError(
            f"training needs at least {config.min_defects} {what} and {config.min_defects} good parts, got "
            f"{n_pos} and {n - n_pos}; a single-class history cannot teach a defect model: widen the window")
    feats = select_features(list(ds.X.columns), config.kind, config.exclude_features,
                            derived_refs=_derived_refs(ds.feature_set_version))
    X = ds.X[feats]
    empty = [c for c in feats if X[c].isna().all()]
    if empty and config.drop_empty_features:
        logger.warning("leaving out %d features without any value: %s", len(empty), ", ".join(empty[:10]))
        feats = [c for c in feats if c not in empty]
        X = X[feats]
    if not feats:
        raise ModelError(f"no features left for a {config.kind} model (columns: {list(ds.X.columns)[:10]})")
    baseline = None
    if config.kind == "environment-aware" and config.refit_baseline and any(c.endswith("__dev_baseline") for c in feats):
        # deviation features are recomputed with a baseline fitted here and shipped in the artifact,
        # so training, reports and the edge all use the very same "normal for these conditions"
        progress(0.02, "fitting the context baseline on good parts")
        baseline = fit_baseline(ds)
        X = apply_baseline(ds.X, ds.meta, baseline)[feats]  # level columns may be excluded from the model
    DefectModel.check_training_frame(X, ds.y)  # NaN-only columns, labels: clear errors before any fitting

    regimes = assign_regimes(ds.meta, config.regimes, ds.X)
    y = ds.y.to_numpy()
    w = _regime_weights(regimes) if config.reweight_regimes else np.ones(n)
    hours = part_hours(ds.meta)
    folds = time_folds(ds.meta, config.folds)
    params = {"seed": config.seed, "n_threads": config.n_threads} | config.hyperparams
    oof = np.full(n, np.nan)
    best_iters, fold_info, fold_rows = [], [], []
    span = 0.7 / config.folds
    for f in range(config.folds):
        base = 0.05 + f * span
        progress(base, f"fold {f + 1}/{config.folds}: fitting")
        train_rows, val_rows = split_rows(ds.meta, folds, f)
        if len(train_rows) < 0.2 * n:
            raise ModelError(f"fold {f + 1}: only {len(train_rows)} parts remain for training once the days and lots "
                             "shared with the validation side are purged; lower the number of folds or train on a longer history")
        fit_rows, es_rows = _early_stop_split(ds.meta, train_rows)
        if y[fit_rows].sum() == 0:
            raise ModelError(f"fold {f + 1}: no defects in its training side; lower the number of folds or widen the window")
        model = DefectModel(**params)

        def _cb(env, base=base, f=f):
            if env.iteration % 25 == 0:
                progress(base + span * min(env.iteration / max(model.max_rounds, 1) * 4, 0.95),
                         f"fold {f + 1}/{config.folds}: {env.iteration} trees")

        model.fit(X.iloc[fit_rows], y[fit_rows], sample_weight=w[fit_rows],
                  eval_set=(X.iloc[es_rows], y[es_rows], w[es_rows]), callbacks=[_cb])
        fold_rows.append((train_rows, val_rows))
        best_iters.append(model.best_iteration_)
        t = ds.meta["cycle_end"].iloc[val_rows]
        fold_info.append({"fold": f + 1, "parts": len(val_rows), "defects": int(y[val_rows].sum()),
                          "from": t.min().isoformat(), "to": t.max().isoformat(), "trees": model.best_iteration_})
        logger.info("fold %d/%d: %d parts held out, %d trees", f + 1, config.folds, len(val_rows), model.best_iteration_)

    # The calibrator and the threshold are fitted on out-of-fold margins but applied to the final
    # model's margins, so both must come from boosters of the same size: a margin grows with the
    # number of trees, and early stopping on a small set can stop one fold at 5 trees and another at
    # 90. Each fold is therefore refitted on its whole training side with the final number of trees
    # (no early stopping) before it scores its held-out parts; the final model uses the same number.
    rounds = max(MIN_ROUNDS, int(np.median(best_iters) * 1.1))
    for f, (train_rows, val_rows) in enumerate(fold_rows):
        progress(0.75 + 0.03 * f / config.folds, f"fold {f + 1}/{config.folds}: scoring with {rounds} trees")
        model = DefectModel(**params).fit(X.iloc[train_rows], y[train_rows], sample_weight=w[train_rows],
                                          num_boost_round=rounds)
        oof[val_rows] = model.predict_raw(X.iloc[val_rows])
    progress(0.78, "calibrating probabilities on out-of-fold predictions")
    final = DefectModel(**params)
    calibrator_kind = final.calibration
    final.calibrate(oof, y, calibrator_kind)  # sets calibrator_ before fit replaces it: keep it aside
    calibrator = final.calibrator_
    p_oof = calibrator(oof)
    thr, rule = choose_threshold(p_oof, y, float(hours.sum()), alarm_budget_per_h=config.alarm_budget_per_h,
                                 target_recall=config.target_recall)
    metrics = binary_metrics(y, p_oof, thr, float(hours.sum()))
    metrics["raw_auc_note"] = "out-of-fold: each part scored by a model that never saw its day, lot or weather"
    per_regime = regime_metrics(y, p_oof, thr, regimes, hours)

    progress(0.8, f"final model on all {n} parts ({rounds} trees)")
    final.fit(X, y, sample_weight=w, num_boost_round=rounds)
    final.calibrator_ = calibrator
    elapsed = time.perf_counter() - t0
    progress(0.95, "writing the model card")
    window = ds.window
    gain = pd.Series(final.booster_.feature_importance("gain"), index=final.feature_names_).sort_values(ascending=False)
    cond = {}
    for col in ("ambient_temp_c", "humidity_pct"):
        if col in ds.meta.columns and pd.to_numeric(ds.meta[col], errors="coerce").notna().any():
            v = pd.to_numeric(ds.meta[col], errors="coerce")
            cond[col] = [round(float(v.quantile(0.01)), 2), round(float(v.quantile(0.99)), 2)]
    for col in ("supplier", "product", "shift"):
        if col in ds.meta.columns and ds.meta[col].notna().any():
            cond[col] = sorted(map(str, ds.meta[col].dropna().unique()))[:20]
    import lightgbm

    card = json_safe({
        "name": config.name, "kind": config.kind, "defect_code": config.defect_code,
        "scope": {"line_id": config.line_id, "product": config.product},
        "feature_set_version": ds.feature_set_version, "features": len(feats),
        "data": {"parts": n, "defects": n_pos, "defect_rate": round(n_pos / n, 5),
                 "unlabelled_left_out": ds.n_unlabelled, "label_sources": ds.label_sources,
                 "label_precedence": config.label_precedence,
                 "from": window[0], "to": window[1],
                 "lines": sorted(map(str, ds.meta["line_id"].unique())) if "line_id" in ds.meta else [],
                 "conditions_seen": cond},
        "validation": {"scheme": "contiguous time folds of day+lot groups; days and lots shared with the validation "
                                 "side are purged from training; early stopping on the latest groups of the training side",
                       "folds": fold_info},
        "threshold": {"value": thr, **rule,
                      "meaning": (f"on validation this threshold raised {metrics['alerts_per_h']} alerts per hour "
                                  f"per line, caught {metrics['recall']} of defects with a false-alarm rate of "
                                  f"{metrics['far']} on good parts")},
        "imbalance": {"defect_weight": round(final.pos_weight_, 3), "regime_reweighting": config.reweight_regimes},
        "calibration": {"method": calibrator.kind, "ece": metrics["ece"], "brier": metrics["brier"]},
        "training": {"trees": rounds, "fold_trees": best_iters, "seconds": round(elapsed, 2), "seed": config.seed,
                     "threads": config.n_threads, "lightgbm": lightgbm.__version__, "hyperparameters": final.get_params()},
        "baseline": "context baseline refitted on good training parts; deviation features recomputed with it"
                    if baseline is not None else None,
        "top_features": [{"feature": k, "gain": round(float(v), 2)} for k, v in gain.head(15).items()],
        "limits": "Outside the conditions seen in training the model extrapolates; check the robustness report "
                  "before trusting it in a new season or with a new supplier.",
        "config": config.describe(),
    })
    normal_ranges = _normal_ranges(ds.X, y)
    progress(0.97, "model fitted")
    logger.info("trained %s %s on %d parts (%d defects) in %.1f s: threshold %.4f, recall %s, FAR %s",
                config.kind, config.name, n, n_pos, elapsed, thr, metrics["recall"], metrics["far"])
    return FitOutcome(final, config, thr, rule, metrics, per_regime, card, p_oof, baseline, window, normal_ranges,
                      _moving_signals(ds.X))


def train(store, config: TrainConfig, *, trained_by: str, progress: Progress | None = None,
          client: str = "cli", dataset: Dataset | None = None) -> TrainResult:
    """Load the dataset, fit, and register a new immutable version (nothing is registered on failure)."""
    from models import registry

    progress = progress or _noop
    progress(0.0, f"loading parts with feature set {config.feature_set_version}")
    ds = dataset or load_dataset(store, config.feature_set_version, line_id=config.line_id, product=config.product,
                                 start=config.start, end=config.end, label_precedence=config.label_precedence)
    progress(0.04, f"{len(ds)} labelled parts ({int(ds.y.sum())} defects), {ds.n_unlabelled} awaiting labels")
    outcome = train_frames(ds, config, progress)
    name = config.name if not config.defect_code else f"{config.name}-{config.defect_code.lower()}"
    version = registry.register(
        store, name=name, kind=config.kind, line_id=config.line_id, product=config.product,
        feature_set_version=config.feature_set_version, feature_names=outcome.feature_names,
        train_start=outcome.window[0], train_end=outcome.window[1], params=config.describe(),
        metrics=outcome.metrics, regime_metrics=outcome.regime_metrics, threshold=outcome.threshold,
        card=outcome.card, artifact=outcome.artifact(), trained_by=trained_by, client=client)
    progress(1.0, f"registered {version.label}")
    return TrainResult(version, outcome)


# -- training jobs (the UI runs training in the background and polls these rows) --------------------

def start_job(store, params: dict, requested_by: str) -> int:
    """A ``training_jobs`` row in state queued; returns its id."""
    from sqlalchemy import insert

    from pq.storage import schema

    with store.engine.begin() as conn:
        return int(conn.execute(insert(schema.training_jobs).values(
            status="queued", progress=0.0, message="queued", params=json_safe(params), requested_by=requested_by,
            started_at=datetime.now(timezone.utc))).inserted_primary_key[0])


def job_progress(store, job_id: int, min_interval_s: float = 0.5) -> Progress:
    """A progress callback writing (progress, message) into the job row, at most every ``min_interval_s``."""
    from sqlalchemy import update

    from pq.storage import schema

    last = [0.0]

    def cb(fraction: float, message: str) -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - last[0] < min_interval_s:
            return
        last[0] = now
        with store.engine.begin() as conn:
            conn.execute(update(schema.training_jobs).where(schema.training_jobs.c.id == job_id).values(
                status="running", progress=float(min(max(fraction, 0.0), 1.0)), message=message[:500]))

    return cb


def run_job(store, job_id: int, config: TrainConfig, *, trained_by: str, client: str = "ui") -> TrainResult | None:
    """Run a queued job to the end; the row ends ``done`` (with the version) or ``failed`` (with the error)."""
    from sqlalchemy import update

    from pq.storage import schema

    jobs = schema.training_jobs

    def _failed(error: str) -> None:
        with store.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(
                status="failed", error=error[:2000], message="failed", finished_at=datetime.now(timezone.utc)))

    try:
        result = train(store, config, trained_by=trained_by, progress=job_progress(store, job_id), client=client)
    except PQError as exc:  # expected: too few labels, mismatch ...; the message says what to do
        logger.warning("training job %d failed: %s", job_id, exc)
        _failed(str(exc))
        return None
    except Exception as exc:  # a bug: the job must not stay "running" forever, and the error must surface
        logger.exception("training job %d crashed", job_id)
        _failed(f"internal error ({type(exc).__name__}); see the server log")
        raise
    with store.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(
            status="done", progress=1.0, message=f"registered {result.version.label}",
            model_version_id=result.version.id, finished_at=datetime.now(timezone.utc)))
    return result
