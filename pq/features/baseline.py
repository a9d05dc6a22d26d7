"""Context baseline: what a signal's window mean normally reads under the current conditions.

Owns `ContextBaseline`, a ridge regression per target (a window mean such as `melt_temp_c` or
`melt_temp_c__last5s`) on context inputs (ambient temperature, humidity, lot properties, dryer dew
point, tool wear as numbers; product/shift/supplier one-hot), learned from the history of good
parts, with the residual standard deviation for "normal range for today's conditions".
NumPy only; it must not import connectors/, models/, ui/ or simulators/.

Example::

    bl = ContextBaseline(alpha=1.0).fit(features_df[good], parts_df[good])
    bl.predict({"ambient_temp_c": 31.0, "humidity_pct": 70, "shift": "B"})["melt_temp_c"]
    lo, hi = bl.normal_range("melt_temp_c", {"ambient_temp_c": 31.0, ...}, k=3)
    ContextBaseline.from_dict(json.loads(json.dumps(bl.to_dict())))
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from typing import Any, Mapping, Sequence

import numpy as np

from pq.errors import NotFittedError

from pq.features._assemble import _is_missing, _to_float, _to_obj
from pq.features.spec import FeatureSpecError

logger = logging.getLogger(__name__)

__all__ = ["ContextBaseline", "DEFAULT_NUMERIC_INPUTS", "DEFAULT_CATEGORICAL_INPUTS"]

DEFAULT_NUMERIC_INPUTS = (
    "ambient_temp_c", "humidity_pct", "lot_mfi_g10min", "lot_moisture_pct",
    "dryer_dew_point_c", "tool_wear_shots",
)
DEFAULT_CATEGORICAL_INPUTS = ("product", "shift", "supplier")


class ContextBaseline:
    """Ridge regression of each window mean on context, with residual std.

    Hyperparameters: `alpha` (ridge penalty on standardised inputs), `numeric_inputs` /
    `categorical_inputs` (context columns to use when present; defaults above), `min_rows`
    (a target with fewer complete rows is not modelled), `select` (``None``: every numeric input
    for every target; ``"prune"``: per target, only the numeric inputs that earn their place in
    blocked cross-validation, see :meth:`_prune_inputs`). Learned state ends in `_`.

    Why ``select``: a baseline is used far outside the conditions it was fitted on (a winter's
    history, a summer's parts). Context inputs are strongly correlated within one season (hall
    temperature, humidity, dryer dew point, even tool wear over a few days), so a fit on all of them
    spreads a signal's true dependence on one input over several; the spread is harmless inside the
    training range and a bias of a residual standard deviation or more when the inputs move apart 4-7
    standard deviations outside it. An input left out has a coefficient of exactly 0, so the fitted
    document, prediction and the edge are unchanged.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        numeric_inputs: Sequence[str] = DEFAULT_NUMERIC_INPUTS,
        categorical_inputs: Sequence[str] = DEFAULT_CATEGORICAL_INPUTS,
        min_rows: int = 20,
        select: str | None = None,
    ):
        if select not in (None, "prune"):
            raise ValueError(f"baseline select must be None or 'prune', got {select!r}")
        self.select = select
        self.alpha = alpha
        self.numeric_inputs = tuple(numeric_inputs)
        self.categorical_inputs = tuple(categorical_inputs)
        self.min_rows = min_rows

    # ---- fitting -----------------------------------------------------------------------------------
    def fit(
        self,
        features: Any,
        context: Any,
        *,
        targets: Sequence[str] | None = None,
        mask: Any = None,
    ) -> "ContextBaseline":
        """Fit on aligned rows: `features` has `<target>__mean` columns, `context` raw context columns
        (DataFrames or mappings of equal-length arrays). `mask` selects good parts (default all).
        `targets` defaults to every `<x>__mean` column."""
        fcols = list(features.keys()) if hasattr(features, "keys") else []
        if targets is None:
            targets = [c[: -len("__mean")] for c in fcols if str(c).endswith("__mean")]
        if not targets:
            raise FeatureSpecError("baseline fit: no '<signal>__mean' columns in the features")
        n = len(features[f"{targets[0]}__mean"])
        keep = np.ones(n, bool) if mask is None else np.asarray(mask, bool)
        ctx_cols = set(context.keys()) if hasattr(context, "keys") else set()
        num = [c for c in self.numeric_inputs if c in ctx_cols]
        cat = [c for c in self.categorical_inputs if c in ctx_cols]
        xs = {c: _to_float(np.asarray(context[c]), n) for c in num}
        num = [c for c in num if np.isfinite(xs[c][keep]).sum() >= 2 and np.nanstd(xs[c][keep]) > 0]
        cats: dict[str, list[str]] = {}
        for c in cat:
            vals = _to_obj(np.asarray(context[c], dtype=object), n)[keep]
            levels = sorted({str(v) for v in vals if not _is_missing(v)})
            if len(levels) >= 2:
                cats[c] = levels
        self.numeric_inputs_ = num
        self.categories_ = cats
        self.mean_ = {c: float(np.nanmean(xs[c][keep])) for c in num}
        self.scale_ = {c: float(np.nanstd(xs[c][keep])) for c in num}
        X = self._design(context, n)
        self.coef_: dict[str, list[float]] = {}
        self.intercept_: dict[str, float] = {}
        self.resid_std_: dict[str, float] = {}
        self.n_rows_: dict[str, int] = {}
        for t in targets:
            y = np.asarray(features[f"{t}__mean"], np.float64)
            rows = keep & np.isfinite(y) & np.isfinite(X).all(axis=1)
            m = int(rows.sum())
            if m < self.min_rows:
                logger.warning("baseline: %s has %d complete rows (needs %d), not modelled", t, m, self.min_rows)
                continue
            Xr, yr = X[rows], y[rows]
            if self.select == "prune" and len(num):
                use = self._prune_inputs(Xr, yr, len(num))
                Xr = Xr * use  # columns left out: zero input, zero coefficient
            xm, ym = Xr.mean(axis=0), yr.mean()
            Xc = Xr - xm
            A = Xc.T @ Xc + self.alpha * np.eye(X.shape[1])
            w = np.linalg.solve(A, Xc.T @ (yr - ym)) if X.shape[1] else np.zeros(0)
            b = ym - xm @ w
            resid = yr - (Xr @ w + b)
            dof = max(m - X.shape[1] - 1, 1)
            self.coef_[t] = [float(v) for v in w]
            self.intercept_[t] = float(b)
            self.resid_std_[t] = float(math.sqrt(float(resid @ resid) / dof))
            self.n_rows_[t] = m
        logger.info("baseline fitted: %d targets on %d rows, inputs %s + %s",
                    len(self.coef_), int(keep.sum()), num, list(cats))
        return self

    # blocked cross-validation for :meth:`_prune_inputs`: contiguous blocks of rows (in time order,
    # as histories are), so a slow confounder shared by neighbouring parts cannot vouch for an input
    SELECT_FOLDS = 5
    # an input is dropped when keeping it cuts the cross-validated squared error by less than this
    # share; a real effect of 0.1 residual sd per input sd cuts it by about 1 %, a chance correlation by less
    SELECT_MIN_GAIN = 0.005

    def _prune_inputs(self, X: np.ndarray, y: np.ndarray, n_numeric: int) -> np.ndarray:
        """0/1 weights over the design columns: categorical columns always; numeric inputs start all
        in and are dropped one at a time (the one whose removal raises the blocked-CV squared error
        least) while dropping it costs less than ``SELECT_MIN_GAIN`` of that error. Backward, not
        forward: two correlated inputs whose effects cancel within one season (cushion: a hotter and
        a drier hall) explain little alone, and a forward search would keep neither. Ridge with an
        unpenalised intercept, as :meth:`fit` solves it."""
        m, p = X.shape
        Xa = np.column_stack([X, np.ones(m)])
        pen = np.full(p + 1, self.alpha)
        pen[p] = 0.0
        folds = []
        for b in np.array_split(np.arange(m), self.SELECT_FOLDS):
            tr = np.ones(m, bool)
            tr[b] = False
            folds.append((Xa[tr].T @ Xa[tr], Xa[tr].T @ y[tr], Xa[b], y[b]))

        def cv_error(cols: list[int]) -> float:
            err = 0.0
            for G, g, Xv, yv in folds:
                w = np.linalg.lstsq(G[np.ix_(cols, cols)] + np.diag(pen[cols]), g[cols], rcond=None)[0]
                r = yv - Xv[:, cols] @ w
                err += float(r @ r)
            return err

        fixed = list(range(n_numeric, p + 1))  # categorical one-hots and the intercept
        kept = list(range(n_numeric))
        err = cv_error(kept + fixed)
        while kept:
            trial = {c: cv_error([k for k in kept if k != c] + fixed) for c in kept}
            c = min(trial, key=trial.get)
            if trial[c] > (1.0 + self.SELECT_MIN_GAIN) * err:
                break
            kept.remove(c)
            err = min(err, trial[c])
        use = np.zeros(p)
        use[kept + list(range(n_numeric, p))] = 1.0
        return use

    def _check(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("ContextBaseline is not fitted: call fit() or from_dict() first")

    def _numeric(self, context: Mapping[str, Any], n: int) -> dict[str, np.ndarray]:
        return {c: _to_float(context[c], n) if c in context else np.full(n, np.nan) for c in self.numeric_inputs_}

    def _design(self, context: Mapping[str, Any], n: int,
                numeric: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        numeric = self._numeric(context, n) if numeric is None else numeric
        cols: list[np.ndarray] = []
        for c in self.numeric_inputs_:
            cols.append((numeric[c] - self.mean_[c]) / self.scale_[c])
        for c, levels in self.categories_.items():
            vals = _to_obj(context[c], n) if c in context else np.full(n, None, dtype=object)
            s = np.asarray([str(v) if not _is_missing(v) else "\0" for v in vals], dtype=object)
            for lv in levels:  # unknown or missing level: all zeros (the average of the known ones)
                cols.append((s == lv).astype(np.float64))
        return np.column_stack(cols) if cols else np.zeros((n, 0))

    # ---- prediction ------------------------------------------------------------------------------
    def predict_matrix(
        self, targets: Sequence[str], context: Mapping[str, Any], n: int
    ) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]:
        """Expected means [n, len(targets)] and (mask, reason) pairs for NaN predictions."""
        self._check()
        numeric = self._numeric(context, n)  # converted once: the design and the reasons share it
        X = self._design(context, n, numeric)
        out = np.full((n, len(targets)), np.nan)
        why: list[tuple[np.ndarray, str]] = []
        missing = ~np.isfinite(X).all(axis=1) if X.shape[1] else np.zeros(n, bool)
        for c, v in numeric.items():
            m = ~np.isfinite(v)
            if m.any():
                why.append((m, f"baseline: context {c} missing, dev_baseline NaN"))
        for i, t in enumerate(targets):
            if t not in self.coef_:
                why.append((np.ones(n, bool), f"{t}: no baseline model (dev_baseline NaN)"))
                continue
            w = np.asarray(self.coef_[t])
            out[:, i] = X @ w + self.intercept_[t]
        out[missing] = np.nan
        return out, why

    def predict(self, context: Mapping[str, Any]) -> dict[str, float]:
        """Expected window mean per target for one part's context (dict of raw values)."""
        targets = list(self.coef_) if hasattr(self, "coef_") else []
        pred, _ = self.predict_matrix(targets, context, 1)
        return {t: float(pred[0, i]) for i, t in enumerate(targets)}

    def normal_range(self, signal: str, context: Mapping[str, Any], k: float = 3.0) -> tuple[float, float]:
        """(lo, hi) = expectation -/+ k residual std: "normal for today's conditions"."""
        self._check()
        if signal not in self.coef_:
            raise KeyError(f"no baseline for {signal!r}; modelled: {sorted(self.coef_)}")
        return self.normal_ranges([signal], context, k)[signal]

    def normal_ranges(self, signals: Sequence[str], context: Mapping[str, Any],
                      k: float = 3.0) -> dict[str, tuple[float, float]]:
        """:meth:`normal_range` of each modelled signal in ``signals`` (others are left out), from one
        design matrix: an explanation asks for its top few signals at once, and building the matrix
        is most of the cost."""
        self._check()
        modelled = [s for s in signals if s in self.coef_]
        if not modelled:
            return {}
        mu = self.predict_matrix(modelled, context, 1)[0][0]
        return {s: (float(m - k * self.resid_std_[s]), float(m + k * self.resid_std_[s]))
                for s, m in zip(modelled, mu)}

    # ---- persistence -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        self._check()
        return {
            "kind": "pq.ContextBaseline", "format": 1,
            "params": {"alpha": self.alpha, "numeric_inputs": list(self.numeric_inputs),
                       "categorical_inputs": list(self.categorical_inputs), "min_rows": self.min_rows,
                       "select": self.select},
            "numeric_inputs": list(self.numeric_inputs_), "categories": self.categories_,
            "mean": self.mean_, "scale": self.scale_, "coef": self.coef_,
            "intercept": self.intercept_, "resid_std": self.resid_std_, "n_rows": self.n_rows_,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ContextBaseline":
        if d.get("kind") != "pq.ContextBaseline" or d.get("format") != 1:
            raise FeatureSpecError(
                f"not a ContextBaseline v1 document: kind={d.get('kind')!r} format={d.get('format')!r}"
            )
        self = cls(**d["params"])
        self.numeric_inputs_ = list(d["numeric_inputs"])
        self.categories_ = {k: list(v) for k, v in d["categories"].items()}
        self.mean_ = dict(d["mean"])
        self.scale_ = dict(d["scale"])
        self.coef_ = {k: list(v) for k, v in d["coef"].items()}
        self.intercept_ = dict(d["intercept"])
        self.resid_std_ = dict(d["resid_std"])
        self.n_rows_ = dict(d["n_rows"])
        return self

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
