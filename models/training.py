"""Training: environment-grouped validation, calibration, and the thresholds of the two decisions.

Owns :class:`TrainConfig`, :func:`train_frames` (a dataset in, a fitted and evaluated model out,
no store needed) and :func:`train` (dataset from the store, then registration), plus the
``training_jobs`` helpers the UI uses. Imports pq and models only.

How a model is trained:

1. Features (:func:`select_features`): the naive kind uses process signals only; the
   environment-aware kind uses the deviation of every signal the context baseline models (refitted
   on the good training parts of each fold and shipped in the artifact) instead of its level,
   context that is a risk factor (:func:`context_role`), and derived features relative to conditions.
2. Validation: parts are grouped by day joined through material lots, the groups are cut into
   contiguous stretches of time (folds); each fold is predicted by a model that never saw its days,
   lots or weather (``cv="stratified"``: random folds, for independent parts only). Early stopping
   uses the last stretch of each training side, never the fold; the folds boost in step and stop on
   their mean AUC curve, never before :data:`MIN_ROUNDS`.
3. Imbalance: defects weigh (good / defect) times more, capped; optional reweighting so rare
   regimes (hot days, a new supplier) count as much as common ones.
4. Calibration: Platt (or isotonic) on the out-of-fold margins; the alert threshold (the
   single-threshold mode) is chosen on the calibrated out-of-fold probabilities by the alarm budget
   or target recall rule (or the F1 maximum).
5. The final booster is fitted on all parts with 1.1 x the early-stopped rounds.
6. The two decisions (:mod:`models.decisions`): the diversion threshold for a share of parts (or a
   recall) on the out-of-fold probabilities, and the operator alarms its episodes raised there.

Example::

    cfg = TrainConfig(feature_set_version="default-1", alarm_budget_per_h=2.0)
    outcome = train_frames(ds, cfg, progress=lambda f, msg: print(f"{f:4.0%} {msg}"))
    result = train(store, cfg, trained_by="alice")      # registers a new version

Why one file of ~700 lines: one training pipeline (selection, grouped folds, early stopping,
out-of-fold margins, calibration, threshold, card) whose steps are private functions of under 80
lines; their shared dataclasses and the card's contents stay beside the step that fills them.
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
from models.metrics import THRESHOLD_RULES, binary_metrics, choose_threshold, part_hours, regime_metrics
from models.regimes import DEFAULT_REGIMES, RegimeDef, assign_regimes, cv_groups, split_rows, time_folds
from models.thresholds import DEFAULT_DIVERSION_SHARE
from pq.alerts.episodes import DEFAULT_EPISODE_RULE, EpisodeRule
from pq.errors import ModelError, PQError

__all__ = ["TrainConfig", "FitOutcome", "TrainResult", "train_frames", "train", "select_features", "context_role",
           "cv_splits", "MIN_ROUNDS",
           "start_job", "job_progress", "run_job", "Progress"]

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
KINDS = ("environment-aware", "naive")
CV_SCHEMES = ("time", "stratified")
# Fewest trees of any model, and the first round early stopping may pick: its AUC over a few hundred
# parts is noisy, and a spike at tree 2 outlasted 50 rounds of patience (AI4I: folds stopped at 2, 64
# and 2 trees; the simulator at 11, 9, 58); a handful of trees barely leaves the prior.
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
    cv: str = "time"  # "stratified": random folds, only for independent parts (AI4I), never a plant's history
    threshold_rule: str = "budget"  # "f1": the threshold with the best out-of-fold F1 (metrics.f1_threshold)
    compare_plain: bool = False  # also score plain LightGBM on the same folds (card["comparison"])
    # The part-diversion decision (models.decisions): divert at most this share of parts, or reach
    # this recall (capped by the share when both are set); operator alarms: episode_k of the last
    # episode_n parts at risk with one cause.
    diversion_share: float | None = DEFAULT_DIVERSION_SHARE
    diversion_recall: float | None = None
    episode_k: int = DEFAULT_EPISODE_RULE.k
    episode_n: int = DEFAULT_EPISODE_RULE.n

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ModelError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.cv not in CV_SCHEMES:
            raise ModelError(f"cv must be one of {', '.join(CV_SCHEMES)}, got {self.cv!r}")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ModelError(f"threshold_rule must be one of {', '.join(THRESHOLD_RULES)}, got {self.threshold_rule!r}")
        if self.threshold_rule == "budget" and self.alarm_budget_per_h is None and self.target_recall is None:
            raise ModelError("give an alarm budget (alerts per hour per line) or a target recall")
        if self.folds < 2:
            raise ModelError(f"folds must be >= 2, got {self.folds}")
        if self.diversion_share is not None and not 0 < self.diversion_share < 1:
            raise ModelError(f"diversion_share must be in (0, 1), got {self.diversion_share}")
        if self.diversion_recall is not None and not 0 < self.diversion_recall <= 1:
            raise ModelError(f"diversion_recall must be in (0, 1], got {self.diversion_recall}")
        try:
            EpisodeRule(self.episode_k, self.episode_n)
        except ValueError as exc:
            raise ModelError(str(exc)) from None

    @property
    def episode_rule(self) -> EpisodeRule:
        return EpisodeRule(self.episode_k, self.episode_n)

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
    comparison: dict | None = None  # plain LightGBM on the same folds (TrainConfig.compare_plain)
    # the part-diversion threshold and episode rule with their validation figures (models.decisions)
    decisions: dict = field(default_factory=dict)

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
            "decisions": self.decisions,
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
                    context_roles: dict[str, str] | None = None) -> list[str]:
    """Feature columns a model of ``kind`` may use.

    - naive: process signals only, the way pilots train: no ``ctx__*``, no ``*__dev_baseline``, and
      no derived feature computed from them (``derived_refs``: {derived name: referenced features}).
    - environment-aware: for every signal with a ``<signal>__dev_baseline`` column, the deviation
      and the shape statistics (slope) but none of its :data:`LEVEL_STATS`; derived features unless
      they combine levels left out; context unless its role is ``baseline`` (:func:`context_role`):
      a condition that a context baseline reads reaches the model through the deviations, but where
      no baseline reads it (an import) dropping it would lose it.

    ``exclude`` (regular expressions) always applies.

    >>> select_features(["melt_temp_c__mean", "melt_temp_c__dev_baseline", "ctx__ambient_temp_c"], "naive")
    ['melt_temp_c__mean']
    >>> select_features(["melt_temp_c__mean", "melt_temp_c__dev_baseline", "ctx__ambient_temp_c"], "environment-aware")
    ['melt_temp_c__dev_baseline']
    >>> select_features(["torque_nm__value", "ctx__ambient_temp_k"], "environment-aware")
    ['torque_nm__value', 'ctx__ambient_temp_k']
    """
    columns = list(columns)
    pats = [re.compile(p) for p in exclude]
    derived_refs = derived_refs or {}
    baselined = {c[: -len("__dev_baseline")] for c in columns if c.endswith("__dev_baseline")}
    roles = context_roles or {}

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
            if c.startswith("ctx__") and context_role(_ctx_name(c), roles, bool(baselined)) == "baseline":
                continue
        out.append(c)
    return out


def context_role(name: str, declared: dict[str, str], has_baseline: bool) -> str:
    """``risk`` (a feature of the environment-aware model) or ``baseline`` (only through deviations).

    A declared role wins (an import mapping's ``role``); otherwise :data:`RISK_CONTEXT` is risk, and
    any other context is a baseline input where a context baseline exists to read it, a risk factor
    where none does.
    """
    if name in declared:
        return declared[name]
    if name in RISK_CONTEXT or not has_baseline:
        return "risk"
    return "baseline"


def _derived_refs(feature_set_version: str, definition: dict | None = None) -> dict[str, list[str]]:
    """{derived feature: the features it is computed from}: from the feature set's stored
    ``definition`` (an import), else from the shipped spec when ``feature_set_version`` is its."""
    from pq.features.spec import load_feature_set

    if definition and definition.get("derived"):
        return {d["name"]: list(d["refs"]) for d in definition["derived"]}
    fs = load_feature_set()
    if fs.version != feature_set_version:
        return {}
    return {d.name: list(d.refs) for d in fs.derived}


def _training_hints(ds: Dataset) -> dict:
    """Hyperparameters the feature set's definition asks for (an import mapping's ``[training]``)."""
    return dict(ds.definition.get("training") or {})


def cv_splits(ds: Dataset, config: TrainConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training rows, validation rows) per fold: purged time folds of day+lot groups, or, with
    ``cv="stratified"``, shuffled folds with the same defect rate each (independent parts only)."""
    if config.cv == "stratified":
        from sklearn.model_selection import StratifiedKFold

        skf = StratifiedKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
        return [(np.sort(a), np.sort(b)) for a, b in skf.split(np.zeros(len(ds)), ds.y.to_numpy())]
    folds = time_folds(ds.meta, config.folds)
    return [split_rows(ds.meta, folds, f) for f in range(config.folds)]


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


def _random_early_stop_split(y: np.ndarray, rows: np.ndarray, seed: int, share: float = 0.2):
    """Split training rows at random, stratified by label: ``share`` for early stopping (stratified
    folds only, where no part is later than another)."""
    from sklearn.model_selection import train_test_split

    fit, es = train_test_split(rows, test_size=share, stratify=y[rows], random_state=seed)
    return np.sort(fit), np.sort(es)


def _mean_curve_rounds(fold_sets: list[tuple], template: DefectModel,
                       progress: Progress) -> tuple[int, float, list[list[float]]]:
    """Boost all folds in step and pick the round of the best mean early-stopping AUC (lgb.cv's rule),
    among rounds >= :data:`MIN_ROUNDS`; stop after ``early_stopping_rounds`` without improvement.

    One fold's AUC on a few hundred parts is noisy; its early peak (tree 2) decided a fold on its own
    before. Returns (best round, its mean AUC, each fold's AUC curve).
    """
    import lightgbm as lgb

    params = template.lgb_params() | {"metric": "auc"}
    boosters = []
    for Xf, yf, wf, Xe, ye, we in fold_sets:
        names = [str(c) for c in Xf.columns]
        train = lgb.Dataset(Xf.to_numpy(dtype=np.float64), yf, weight=template.training_weights(yf, wf),
                            feature_name=names, free_raw_data=True)
        booster = lgb.Booster(params, train)
        booster.add_valid(lgb.Dataset(Xe.to_numpy(dtype=np.float64), ye, weight=we, reference=train), "early_stop")
        boosters.append(booster)
    curves: list[list[float]] = [[] for _ in boosters]
    best_round, best_auc = MIN_ROUNDS, -np.inf
    for r in range(1, template.max_rounds + 1):
        for booster, curve in zip(boosters, curves):
            booster.update()
            curve.append(float(booster.eval_valid()[0][2]))
        if r >= MIN_ROUNDS:
            auc = float(np.mean([c[-1] for c in curves]))
            if auc > best_auc:
                best_round, best_auc = r, auc
            elif r - best_round >= template.early_stopping_rounds:
                break
        if r % 25 == 0:
            progress(0.05 + 0.5 * min(r / max(best_round + template.early_stopping_rounds, 1), 1.0),
                     f"{len(boosters)} folds: {r} trees, best mean AUC {best_auc:.4f} at {best_round}")
    return best_round, best_auc, curves


def _compare_plain(ds: Dataset, config: TrainConfig, splits, y: np.ndarray, hours: float) -> dict:
    """Plain LightGBM (its defaults: 100 trees, 31 leaves, learning rate 0.1, no weights, no early
    stopping) on the same folds and the same threshold rule, on the stored columns without and with
    the feature set's derived features: what a 20-line script gets from the same data."""
    import lightgbm as lgb

    derived = set(_derived_refs(ds.feature_set_version, ds.definition))
    sets = {"plain LightGBM, stored columns": [c for c in ds.X.columns if c not in derived]}
    if derived:
        sets["plain LightGBM, stored + derived"] = list(ds.X.columns)
    params = {"objective": "binary", "num_threads": config.n_threads, "seed": config.seed, "deterministic": True,
              "force_row_wise": True, "verbosity": -1}
    out = {}
    for name, cols in sets.items():
        Xa = ds.X[cols].to_numpy(dtype=np.float64)
        oof = np.full(len(y), np.nan)
        for train_rows, val_rows in splits:
            booster = lgb.train(params, lgb.Dataset(Xa[train_rows], y[train_rows]), num_boost_round=100)
            oof[val_rows] = booster.predict(Xa[val_rows])
        thr, rule = choose_threshold(oof, y, hours, alarm_budget_per_h=config.alarm_budget_per_h,
                                     target_recall=config.target_recall, rule=config.threshold_rule)
        m = binary_metrics(y, oof, thr, hours)
        out[name] = {"features": len(cols), "threshold": thr,
                     **{k: m[k] for k in ("f1", "precision", "recall", "far", "alerts_per_h", "auc", "pr_auc")}}
    return out


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


def _check_labels(ds: Dataset, config: TrainConfig) -> tuple[int, int]:
    """(parts, defects), or a ModelError saying why the history is too small to train on."""
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
    return n, n_pos


def _model_features(ds: Dataset, config: TrainConfig, progress: Progress) -> tuple[list[str], pd.DataFrame, object | None]:
    """(feature names, training frame, context baseline or None) for a model of ``config.kind``."""
    feats = select_features(list(ds.X.columns), config.kind, config.exclude_features,
                            derived_refs=_derived_refs(ds.feature_set_version, ds.definition),
                            context_roles=ds.definition.get("context_roles"))
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
    return feats, X, baseline


def _fold_sets(ds: Dataset, config: TrainConfig, splits, X: pd.DataFrame, feats: list[str], baseline,
               y: np.ndarray, w: np.ndarray) -> tuple[list[pd.DataFrame], list[tuple]]:
    """Each fold's feature frame, and its (fit X, y, w, early-stopping X, y, w) for :func:`_mean_curve_rounds`."""
    n = len(y)
    fold_X, fold_sets = [], []
    for f, (train_rows, val_rows) in enumerate(splits):
        if len(train_rows) < 0.2 * n:
            raise ModelError(f"fold {f + 1}: only {len(train_rows)} parts remain for training once the days and lots "
                             "shared with the validation side are purged; lower the number of folds or train on a longer history")
        # each fold gets its own context baseline, fitted on the good parts of its training side only:
        # with one baseline fitted on all good parts, a held-out part's deviation would depend on its label
        Xf = X if baseline is None else apply_baseline(ds.X, ds.meta, fit_baseline(
            ds, mask=np.isin(np.arange(n), train_rows) & (y == 0)))[feats]
        fit_rows, es_rows = (_early_stop_split(ds.meta, train_rows) if config.cv == "time"
                             else _random_early_stop_split(y, train_rows, config.seed))
        if y[fit_rows].sum() == 0 or y[es_rows].sum() == 0:
            raise ModelError(f"fold {f + 1}: no defects in its training or early-stopping side; lower the number of "
                             "folds or widen the window")
        fold_X.append(Xf)
        fold_sets.append((Xf.iloc[fit_rows], y[fit_rows], w[fit_rows], Xf.iloc[es_rows], y[es_rows], w[es_rows]))
    return fold_X, fold_sets


@dataclass
class _EarlyStopping:
    """Where the folds' mean early-stopping AUC peaked, and the number of trees it sets."""

    best_round: int
    best_auc: float
    curves: list[list[float]]
    fold_best: list[int]  # where each fold's own curve peaks: for the card, the trees come from the mean curve
    rounds: int  # trees of the fold refits and of the final model


def _early_stopping(fold_sets: list[tuple], params: dict, config: TrainConfig, progress: Progress) -> _EarlyStopping:
    """Boost the folds in step (:func:`_mean_curve_rounds`) and fix the trees of every model from here on."""
    progress(0.05, f"{config.folds} folds: boosting in step, early stopping on their mean AUC curve")
    best_round, best_auc, curves = _mean_curve_rounds(fold_sets, DefectModel(**params), progress)
    # the final model and the fold refits see the whole training side (the early-stopping part too)
    rounds = max(MIN_ROUNDS, int(best_round * 1.1))
    fold_best = [int(np.argmax(c)) + 1 for c in curves]
    logger.info("early stopping: mean AUC %.4f at %d trees (fold curves peak at %s); %d trees from here",
                best_auc, best_round, fold_best, rounds)
    return _EarlyStopping(best_round, best_auc, curves, fold_best, rounds)


def _out_of_fold_margins(ds: Dataset, config: TrainConfig, params: dict, splits, fold_X: list[pd.DataFrame],
                         y: np.ndarray, w: np.ndarray, stopping: _EarlyStopping,
                         progress: Progress) -> tuple[np.ndarray, list[dict]]:
    """(raw margin of every part from the fold that held it out, one card entry per fold).

    The calibrator and the threshold are fitted on out-of-fold margins but applied to the final
    model's margins, so both must come from boosters of the same size: a margin grows with the
    number of trees. Each fold is therefore refitted on its whole training side with the final
    number of trees before it scores its held-out parts; the final model uses the same number.
    """
    rounds = stopping.rounds
    oof = np.full(len(y), np.nan)
    fold_info = []
    for f, ((train_rows, val_rows), Xf) in enumerate(zip(splits, fold_X)):
        progress(0.6 + 0.15 * f / config.folds, f"fold {f + 1}/{config.folds}: scoring with {rounds} trees")
        model = DefectModel(**params).fit(Xf.iloc[train_rows], y[train_rows], sample_weight=w[train_rows],
                                          num_boost_round=rounds)
        oof[val_rows] = model.predict_raw(Xf.iloc[val_rows])
        t = ds.meta["cycle_end"].iloc[val_rows]
        fold_info.append({"fold": f + 1, "parts": len(val_rows), "defects": int(y[val_rows].sum()),
                          "from": t.min().isoformat(), "to": t.max().isoformat(), "trees": rounds,
                          "early_stop_auc_peak_at": stopping.fold_best[f]})
        logger.info("fold %d/%d: %d parts held out, %d trees", f + 1, config.folds, len(val_rows), rounds)
    return oof, fold_info


def _conditions_seen(meta: pd.DataFrame) -> dict:
    """Range (p1, p99) of the climate and the values of the categories met in training, for the card."""
    cond = {}
    for col in ("ambient_temp_c", "humidity_pct"):
        if col in meta.columns and pd.to_numeric(meta[col], errors="coerce").notna().any():
            v = pd.to_numeric(meta[col], errors="coerce")
            cond[col] = [round(float(v.quantile(0.01)), 2), round(float(v.quantile(0.99)), 2)]
    for col in ("supplier", "product", "shift"):
        if col in meta.columns and meta[col].notna().any():
            cond[col] = sorted(map(str, meta[col].dropna().unique()))[:20]
    return cond


def _model_card(ds: Dataset, config: TrainConfig, final: DefectModel, *, n_features: int, threshold: float,
                rule: dict, metrics: dict, fold_info: list[dict], stopping: _EarlyStopping, elapsed: float,
                baseline, comparison: dict | None) -> dict:
    """The card stored with the version: data, validation, threshold, calibration, training, limits."""
    import lightgbm

    n, n_pos = len(ds), int(ds.y.sum())
    window = ds.window
    gain = pd.Series(final.booster_.feature_importance("gain"), index=final.feature_names_).sort_values(ascending=False)
    return json_safe({
        "name": config.name, "kind": config.kind, "defect_code": config.defect_code,
        "scope": {"line_id": config.line_id, "product": config.product},
        "feature_set_version": ds.feature_set_version, "features": n_features,
        "data": {"parts": n, "defects": n_pos, "defect_rate": round(n_pos / n, 5),
                 "unlabelled_left_out": ds.n_unlabelled, "label_sources": ds.label_sources,
                 "label_precedence": config.label_precedence,
                 "from": window[0], "to": window[1],
                 "lines": sorted(map(str, ds.meta["line_id"].unique())) if "line_id" in ds.meta else [],
                 "conditions_seen": _conditions_seen(ds.meta)},
        "validation": {"cv": config.cv, "scheme": (
            "contiguous time folds of day+lot groups; days and lots shared with the validation side are purged "
            "from training; early stopping on the latest groups of the training side" if config.cv == "time" else
            "stratified random folds (independent parts only); early stopping on a stratified random 20 % of the "
            "training side"), "folds": fold_info},
        "threshold": {"value": threshold, **rule,
                      "meaning": (f"on validation this threshold raised {metrics['alerts_per_h']} alerts per hour "
                                  f"per line, caught {metrics['recall']} of defects with a false-alarm rate of "
                                  f"{metrics['far']} on good parts")},
        "imbalance": {"defect_weight": round(final.pos_weight_, 3), "regime_reweighting": config.reweight_regimes},
        "calibration": {"method": final.calibrator_.kind, "ece": metrics["ece"], "brier": metrics["brier"]},
        "training": {"trees": stopping.rounds, "fold_trees": [stopping.rounds] * len(fold_info),
                     "seconds": round(elapsed, 2), "seed": config.seed, "threads": config.n_threads,
                     "lightgbm": lightgbm.__version__, "hyperparameters": final.get_params()},
        "early_stopping": {
            "rule": f"mean AUC curve of the folds' early-stopping sets, best round at or after {MIN_ROUNDS}, "
                    f"patience {final.early_stopping_rounds}; x1.1 for the larger final training side",
            "best_round": stopping.best_round, "mean_auc": round(stopping.best_auc, 4),
            "fold_curve_peaks": stopping.fold_best,
            "curves_every_10_rounds": [[round(v, 4) for v in c[9::10]] for c in stopping.curves]},
        "baseline": "context baseline refitted on good training parts (per fold on its training side); deviation "
                    "features recomputed with it" if baseline is not None else None,
        "comparison": comparison,
        "top_features": [{"feature": k, "gain": round(float(v), 2)} for k, v in gain.head(15).items()],
        "limits": "Outside the conditions seen in training the model extrapolates; check the robustness report "
                  "before trusting it in a new season or with a new supplier.",
        "config": config.describe(),
    })


def train_frames(ds: Dataset, config: TrainConfig, progress: Progress | None = None) -> FitOutcome:
    """Fit, validate, calibrate and choose the threshold; nothing touches the store."""
    progress = progress or _noop
    t0 = time.perf_counter()
    if config.defect_code:
        ds = ds.for_defect_code(config.defect_code)
    n, n_pos = _check_labels(ds, config)
    feats, X, baseline = _model_features(ds, config, progress)

    regimes = assign_regimes(ds.meta, config.regimes, ds.X)
    y = ds.y.to_numpy()
    w = _regime_weights(regimes) if config.reweight_regimes else np.ones(n)
    hours = part_hours(ds.meta)
    params = {"seed": config.seed, "n_threads": config.n_threads} | _training_hints(ds) | config.hyperparams
    splits = cv_splits(ds, config)
    fold_X, fold_sets = _fold_sets(ds, config, splits, X, feats, baseline, y, w)
    stopping = _early_stopping(fold_sets, params, config, progress)
    rounds = stopping.rounds
    oof, fold_info = _out_of_fold_margins(ds, config, params, splits, fold_X, y, w, stopping, progress)

    progress(0.78, "calibrating probabilities on out-of-fold predictions")
    final = DefectModel(**params)
    calibrator_kind = final.calibration
    final.calibrate(oof, y, calibrator_kind)  # sets calibrator_ before fit replaces it: keep it aside
    calibrator = final.calibrator_
    p_oof = calibrator(oof)
    thr, rule = choose_threshold(p_oof, y, float(hours.sum()), alarm_budget_per_h=config.alarm_budget_per_h,
                                 target_recall=config.target_recall, rule=config.threshold_rule)
    metrics = binary_metrics(y, p_oof, thr, float(hours.sum()))
    metrics["raw_auc_note"] = ("out-of-fold: each part scored by a model that never saw its day, lot or weather"
                               if config.cv == "time" else
                               "out-of-fold, stratified random folds: valid only for independent parts (no drift, "
                               "no lots, no days), e.g. AI4I 2020")
    comparison = _compare_plain(ds, config, splits, y, float(hours.sum())) if config.compare_plain else None
    per_regime = regime_metrics(y, p_oof, thr, regimes, hours)

    progress(0.8, f"final model on all {n} parts ({rounds} trees)")
    final.fit(X, y, sample_weight=w, num_boost_round=rounds)
    final.calibrator_ = calibrator
    elapsed = time.perf_counter() - t0
    progress(0.95, "writing the model card")
    card = _model_card(ds, config, final, n_features=len(feats), threshold=thr, rule=rule, metrics=metrics,
                       fold_info=fold_info, stopping=stopping, elapsed=elapsed, baseline=baseline,
                       comparison=comparison)
    normal_ranges = _normal_ranges(ds.X, y)
    outcome = FitOutcome(final, config, thr, rule, metrics, per_regime, card, p_oof, baseline, ds.window, normal_ranges,
                         _moving_signals(ds.X), comparison)
    progress(0.96, "part diversion and operator alarms on validation")
    _add_decisions(outcome, ds, y)
    progress(0.97, "model fitted")
    logger.info("trained %s %s on %d parts (%d defects) in %.1f s: threshold %.4f, recall %s, FAR %s; diverts "
                "above %.4f (%s of parts), %s operator alarms/h on validation", config.kind, config.name, n, n_pos,
                elapsed, thr, metrics["recall"], metrics["far"], outcome.decisions["threshold"],
                outcome.decisions["diverted_share"], outcome.decisions["alarms_per_h"])
    return outcome


def _add_decisions(outcome: FitOutcome, ds: Dataset, y: np.ndarray) -> None:
    """The diversion threshold and the episode alarms it raised on validation, into the outcome and its card."""
    from models.decisions import validation_decisions
    from models.scoring import Scorer

    config = outcome.config
    scorer = Scorer.from_bytes(outcome.artifact())  # the final model's TreeSHAP names each alarm's cause
    block = validation_decisions(outcome.oof_proba, y, scorer, ds, config.diversion_share, config.episode_rule,
                                 config.diversion_recall)
    outcome.decisions = json_safe(block)
    outcome.card["decisions"] = json_safe({
        **block, "meaning": (
            f"parts at or above {block['threshold']:.4f} are diverted for inspection ({block['diverted_share']} of "
            f"validation parts, recall {block['recall']}); an operator alarm opens when {config.episode_k} of the "
            f"last {config.episode_n} parts are at risk with one cause ({block['alarms_per_h']} alarms/h on "
            f"validation, an alarm standing {block['alarm_open_share']} of the time). The alert threshold above serves the single-threshold mode "
            f"(PQ_EDGE_DECISIONS=single).")})


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
