"""The defect model: a LightGBM booster, a probability calibrator and the artifact format.

Owns :class:`DefectModel` (scikit-learn contract: ``__init__`` stores hyperparameters, ``fit``
returns self, learned state ends in ``_``), :class:`Calibrator` and the serialisation of a fitted
model to bytes. Imports pq only.

The artifact is gzip-compressed JSON holding LightGBM's own text model, the calibrator's numbers,
the context baseline and the model card: no pickle, so loading a version from the shared database
cannot execute code, and the format can be read without pq.

Example::

    m = DefectModel(seed=1).fit(X_train, y_train, eval_set=(X_val, y_val))
    m.calibrate(m.predict_raw(X_val), y_val)
    p = m.predict_proba(X_new)[:, 1]
    blob = m.to_bytes(); DefectModel.from_bytes(blob)
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from typing import Any, Callable

import numpy as np
import pandas as pd

from pq.errors import FeatureMismatch, ModelError, NotFittedError

__all__ = ["DefectModel", "Calibrator", "ARTIFACT_FORMAT", "signal_of", "json_safe"]

logger = logging.getLogger(__name__)

ARTIFACT_FORMAT = "pq-defect-model/1"


def signal_of(feature: str) -> str:
    """The signal a feature belongs to: ``melt_temp_c__last5s__mean`` -> ``melt_temp_c``;
    ``ctx__ambient_temp_c`` -> ``ambient_temp_c``; ``n_good__melt_temp_c`` -> ``melt_temp_c``
    (data quality of that signal); a derived feature without ``__`` is its own signal."""
    parts = feature.split("__")
    if len(parts) == 1:
        return feature
    if parts[0] in ("ctx", "n_good", "n_bad"):
        return parts[1]
    return parts[0]


class Calibrator:
    """Maps LightGBM's raw margin to a calibrated probability.

    ``platt``: p = sigmoid(a * margin + b), fitted by logistic regression (smooth, robust with few
    defects, keeps the ranking so thresholds are stable); ``isotonic``: monotone steps (better with
    thousands of defects); ``identity``: plain sigmoid of the margin.
    """

    def __init__(self, kind: str = "platt", a: float = 1.0, b: float = 0.0,
                 x: list[float] | None = None, y: list[float] | None = None):
        if kind not in ("platt", "isotonic", "identity"):
            raise ModelError(f"calibration must be platt, isotonic or identity, got {kind!r}")
        self.kind, self.a, self.b = kind, a, b
        self.x, self.y = x or [], y or []

    @classmethod
    def fit(cls, margin: np.ndarray, y: np.ndarray, kind: str = "platt", sample_weight=None) -> "Calibrator":
        margin = np.asarray(margin, dtype=float)
        y = np.asarray(y, dtype=int)
        if kind == "identity" or len(np.unique(y)) < 2:
            return cls("identity")
        if kind == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(margin, y, sample_weight)
            return cls("isotonic", x=[float(v) for v in iso.X_thresholds_], y=[float(v) for v in iso.y_thresholds_])
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e4, max_iter=1000).fit(margin.reshape(-1, 1), y, sample_weight=sample_weight)
        return cls("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))

    def __call__(self, margin: np.ndarray) -> np.ndarray:
        margin = np.asarray(margin, dtype=float)
        if self.kind == "isotonic":
            return np.interp(margin, self.x, self.y)
        a, b = (self.a, self.b) if self.kind == "platt" else (1.0, 0.0)
        return 1.0 / (1.0 + np.exp(-(a * margin + b)))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "a": self.a, "b": self.b, "x": self.x, "y": self.y}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibrator":
        return cls(d["kind"], d.get("a", 1.0), d.get("b", 0.0), d.get("x"), d.get("y"))


class DefectModel:
    """LightGBM binary defect classifier with imbalance handling, early stopping and calibration.

    Hyperparameters (stored as given, validated in ``fit``): ``learning_rate``, ``num_leaves``,
    ``min_child_samples``, ``feature_fraction``, ``bagging_fraction``, ``lambda_l2``,
    ``max_rounds`` (upper bound; early stopping picks the number), ``early_stopping_rounds``,
    ``class_weight`` ("balanced" or None), ``max_pos_weight`` (cap of the defect weight),
    ``calibration`` (platt | isotonic | identity), ``n_threads``, ``seed``, ``max_bin`` and
    ``min_data_in_bin`` (LightGBM's feature histograms: finer bins resolve exact limits on a feature,
    at a cost that grows with the number of features).
    """

    def __init__(self, learning_rate: float = 0.05, num_leaves: int = 15, min_child_samples: int = 40,
                 feature_fraction: float = 0.8, bagging_fraction: float = 0.8, lambda_l2: float = 1.0,
                 max_rounds: int = 1000, early_stopping_rounds: int = 50, class_weight: str | None = "balanced",
                 max_pos_weight: float = 50.0, calibration: str = "platt", n_threads: int = 2, seed: int = 42,
                 max_bin: int = 255, min_data_in_bin: int = 3):
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.lambda_l2 = lambda_l2
        self.max_rounds = max_rounds
        self.early_stopping_rounds = early_stopping_rounds
        self.class_weight = class_weight
        self.max_pos_weight = max_pos_weight
        self.calibration = calibration
        self.n_threads = n_threads
        self.seed = seed
        self.max_bin = max_bin
        self.min_data_in_bin = min_data_in_bin

    # -- sklearn plumbing --------------------------------------------------------------------------
    _PARAMS = ("learning_rate", "num_leaves", "min_child_samples", "feature_fraction", "bagging_fraction",
               "lambda_l2", "max_rounds", "early_stopping_rounds", "class_weight", "max_pos_weight",
               "calibration", "n_threads", "seed", "max_bin", "min_data_in_bin")

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params) -> "DefectModel":
        for k, v in params.items():
            if k not in self._PARAMS:
                raise ModelError(f"unknown hyperparameter {k!r}, expected one of {', '.join(self._PARAMS)}")
            setattr(self, k, v)
        return self

    def lgb_params(self) -> dict:
        return {
            "objective": "binary", "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples, "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction, "bagging_freq": 1 if self.bagging_fraction < 1 else 0,
            "lambda_l2": self.lambda_l2, "num_threads": self.n_threads, "seed": self.seed,
            "deterministic": True, "force_row_wise": True, "verbosity": -1,
            "max_bin": self.max_bin, "min_data_in_bin": self.min_data_in_bin,
        }

    # -- fitting -------------------------------------------------------------------------------------
    @staticmethod
    def check_training_frame(X: pd.DataFrame, y) -> np.ndarray:
        """Validate a training frame; returns y as int array. Errors say what to do."""
        if not isinstance(X, pd.DataFrame):
            raise ModelError(f"X must be a pandas DataFrame with feature names as columns, got {type(X).__name__}")
        non_numeric = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
        if non_numeric:
            raise ModelError(f"features must be numeric, got non-numeric columns: {', '.join(map(str, non_numeric[:10]))}")
        y = np.asarray(y)
        if len(y) != len(X):
            raise ModelError(f"labels: expected {len(X)} (one per part), got {len(y)}")
        if not np.isin(y, (0, 1)).all():
            raise ModelError(f"labels must be 0 (good) or 1 (defect), got values {sorted(set(np.unique(y)) - {0, 1})[:5]}")
        nan_only = [c for c in X.columns if X[c].isna().all()]
        if nan_only:
            raise ModelError(
                f"features with no value for any training part: {', '.join(nan_only[:10])}"
                f"{' ...' if len(nan_only) > 10 else ''} ({len(nan_only)} in all); fix the feature backfill "
                "(pq features backfill) or leave them out (--drop-empty-features)")
        return y.astype(int)

    def defect_weight(self, y) -> float:
        """How much more a defect weighs than a good part: good/defect when ``class_weight`` is
        balanced, capped at ``max_pos_weight``; 1 otherwise."""
        y = np.asarray(y)
        n_pos = int(y.sum())
        if self.class_weight != "balanced" or n_pos == 0:
            return 1.0
        return float(min((len(y) - n_pos) / n_pos, self.max_pos_weight))

    def training_weights(self, y, sample_weight=None) -> np.ndarray:
        """Per-part weights the booster trains with: ``sample_weight`` times the defect weight."""
        y = np.asarray(y)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float).copy()
        return np.where(y == 1, w * self.defect_weight(y), w)

    def fit(self, X: pd.DataFrame, y, sample_weight=None, eval_set: tuple | None = None,
            num_boost_round: int | None = None, callbacks: list[Callable] | None = None) -> "DefectModel":
        """Fit the booster. With ``eval_set=(X_val, y_val[, w_val])`` early stopping picks the rounds."""
        import lightgbm as lgb

        y = self.check_training_frame(X, y)
        n_pos = int(y.sum())
        if n_pos == 0 or n_pos == len(y):
            raise ModelError(f"training labels hold a single class ({n_pos} defects in {len(y)} parts); "
                             "a defect model needs both good and defective parts: widen the training window")
        w = self.training_weights(y, sample_weight)
        self.pos_weight_ = self.defect_weight(y)
        self.feature_names_ = [str(c) for c in X.columns]
        Xa = X.to_numpy(dtype=np.float64)
        train = lgb.Dataset(Xa, y, weight=w, feature_name=self.feature_names_, free_raw_data=True)
        cbs = list(callbacks or [])
        valid_sets = []
        if eval_set is not None:
            Xv, yv = eval_set[0], np.asarray(eval_set[1], dtype=int)
            wv = np.ones(len(yv)) if len(eval_set) < 3 or eval_set[2] is None else np.asarray(eval_set[2], float)
            valid_sets = [lgb.Dataset(Xv[self.feature_names_].to_numpy(dtype=np.float64), yv, weight=wv, reference=train)]
            cbs.append(lgb.early_stopping(self.early_stopping_rounds, verbose=False))
        # AUC for early stopping: ranking is what the booster must get right; the class weights
        # bias its probabilities, which the calibrator fixes afterwards
        params = self.lgb_params() | {"metric": "auc"}
        rounds = num_boost_round or self.max_rounds
        self.booster_ = lgb.train(params, train, num_boost_round=rounds, valid_sets=valid_sets, callbacks=cbs)
        self.best_iteration_ = int(self.booster_.best_iteration or self.booster_.current_iteration())
        if self.booster_.best_iteration:
            # keep only the trees early stopping chose, so the artifact and scoring agree
            self.booster_ = lgb.Booster(model_str=self.booster_.model_to_string(num_iteration=self.best_iteration_))
        nan_count = X.isna().sum()
        self.train_nan_free_ = [c for c in self.feature_names_ if nan_count[c] == 0]
        self.medians_ = {c: float(v) for c, v in X.median(skipna=True).items()}
        # training min/max per feature: the edge's drift check compares live vectors against them
        self.feature_ranges_ = {c: [float(lo), float(hi)] for c, lo, hi in zip(X.columns, X.min(), X.max())}
        self.calibrator_ = Calibrator("identity")
        logger.debug("booster fitted: %d parts, %d features, %d rounds", len(y), len(self.feature_names_),
                     self.best_iteration_)
        return self

    def calibrate(self, margin: np.ndarray, y, kind: str | None = None) -> "DefectModel":
        """Fit the calibrator on held-out margins (out-of-fold in training)."""
        self.calibrator_ = Calibrator.fit(margin, y, kind or self.calibration)
        return self

    # -- prediction -----------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "booster_"):
            raise NotFittedError("DefectModel is not fitted: call fit() or load a registered version")

    def check_columns(self, X: pd.DataFrame) -> None:
        self._check_fitted()
        missing = [c for c in self.feature_names_ if c not in X.columns]
        if missing:
            raise FeatureMismatch(
                f"model expects {len(self.feature_names_)} features, got {len(X.columns)} "
                f"(missing: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}); "
                "compute the vectors with the model's feature set")

    def predict_raw(self, X: pd.DataFrame) -> np.ndarray:
        self.check_columns(X)
        return self.booster_.predict(X[self.feature_names_].to_numpy(dtype=np.float64), raw_score=True,
                                     num_threads=self.n_threads)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """(n, 2) calibrated probabilities of good and defect."""
        raw = self.predict_raw(X)  # checks fitted and columns first
        p = self.calibrator_(raw)
        return np.column_stack([1.0 - p, p])

    # -- artifact -------------------------------------------------------------------------------------
    def to_bytes(self, extra: dict[str, Any] | None = None) -> bytes:
        """gzip(JSON): booster text, calibrator, feature names, NaN-free features, medians, extras."""
        self._check_fitted()
        doc = {
            "format": ARTIFACT_FORMAT,
            "params": self.get_params(),
            "feature_names": self.feature_names_,
            "train_nan_free": self.train_nan_free_,
            "medians": {k: (None if not math.isfinite(v) else v) for k, v in self.medians_.items()},
            "feature_ranges": self.feature_ranges_,
            "pos_weight": self.pos_weight_,
            "best_iteration": self.best_iteration_,
            "calibrator": self.calibrator_.to_dict(),
            "booster": self.booster_.model_to_string(),
        } | (extra or {})
        return gzip.compress(json.dumps(json_safe(doc), allow_nan=False).encode(), mtime=0)

    @classmethod
    def from_bytes(cls, blob: bytes, *, what: str = "artifact") -> tuple["DefectModel", dict]:
        """Rebuild a fitted model; returns (model, the whole document). ModelError if unreadable."""
        import lightgbm as lgb

        try:
            doc = json.loads(gzip.decompress(blob))
        except (OSError, EOFError, ValueError, TypeError) as exc:
            raise ModelError(f"{what} is corrupted (not a pq model artifact: {exc}); "
                             "retrain or restore the version from a backup") from None
        if not isinstance(doc, dict) or doc.get("format") != ARTIFACT_FORMAT:
            raise ModelError(f"{what}: format {doc.get('format') if isinstance(doc, dict) else None!r} "
                             f"is not {ARTIFACT_FORMAT!r}; this pq cannot load it")
        m = cls(**doc["params"])
        try:
            m.booster_ = lgb.Booster(model_str=doc["booster"])
        except lgb.basic.LightGBMError as exc:
            raise ModelError(f"{what}: LightGBM cannot read the booster ({exc}); retrain the model") from None
        m.feature_names_ = list(doc["feature_names"])
        m.train_nan_free_ = list(doc["train_nan_free"])
        m.medians_ = {k: (math.nan if v is None else float(v)) for k, v in doc["medians"].items()}
        m.feature_ranges_ = {k: [math.nan if a is None else a, math.nan if b is None else b]
                             for k, (a, b) in (doc.get("feature_ranges") or {}).items()}
        m.pos_weight_ = doc["pos_weight"]
        m.best_iteration_ = doc["best_iteration"]
        m.calibrator_ = Calibrator.from_dict(doc["calibrator"])
        if m.booster_.feature_name() != m.feature_names_:
            raise ModelError(f"{what}: booster features do not match the stored feature names; retrain the model")
        return m, doc


def json_safe(o: Any) -> Any:
    """A copy of ``o`` that strict JSON (and PostgreSQL JSONB) accepts: NaN/inf -> None, numpy ->
    Python, datetimes -> ISO text."""
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, np.ndarray):
        return [json_safe(v) for v in o.tolist()]
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, (int, np.integer)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    if hasattr(o, "isoformat"):
        return o.isoformat()
    return o
