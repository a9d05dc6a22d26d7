"""Scoring a part with an explanation an operator can act on.

Owns :class:`Scorer` (built from a registry version or artifact bytes), :class:`Score` and
:class:`SignalContribution`. A score is the calibrated defect probability, the version's threshold
and, for at-risk parts (or when asked), LightGBM's own TreeSHAP contributions (``pred_contrib``)
summed per signal, each with the signal's value and its normal range for the part's conditions
(from the context baseline shipped in the artifact; the training range of good parts otherwise).
Imports pq and models only; the edge runtime receives a Scorer from the composition root (pq/cli/).

Input checks: a vector missing features raises FeatureMismatch; a NaN in a feature that never was
NaN in training is flagged (``nan_unseen:<feature>``) and replaced by the training median, because
LightGBM would silently score it as 0.

Fast path: plain ``predict`` for every part; TreeSHAP (about 10x the cost) only for parts at risk.

Example::

    scorer = Scorer.from_version(store, 7)
    s = scorer.score(vector, context={"ambient_temp_c": 31.5, "supplier": "NovaResin"})
    s.probability, s.at_risk, s.contributions[0].signal, s.flags
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from models.estimator import DefectModel, signal_of
from pq.alerts.episodes import DEFAULT_EPISODE_RULE, EpisodeRule
from pq.errors import FeatureMismatch, ModelError

__all__ = ["Scorer", "Score", "SignalContribution", "value_feature_candidates"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignalContribution:
    signal: str
    contribution: float  # log-odds pushed towards "defect" (+) or "good" (-), summed over the signal's features
    value: float | None  # the signal's window mean (or context value) for this part
    normal_lo: float | None  # normal range for the part's conditions
    normal_hi: float | None
    direction: str  # high | low | normal | unknown (value against the normal range)
    kind: str = "process"  # process | context | derived

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Score:
    probability: float
    threshold: float
    at_risk: bool
    contributions: tuple[SignalContribution, ...] = ()
    flags: tuple[str, ...] = ()
    model_version_id: int | None = None

    def to_dict(self) -> dict:
        return {"probability": self.probability, "threshold": self.threshold, "at_risk": self.at_risk,
                "contributions": [c.to_dict() for c in self.contributions], "flags": list(self.flags),
                "model_version_id": self.model_version_id}


def value_feature_candidates(signal: str) -> tuple[str, ...]:
    """The features that can stand for ``signal``'s reading, best first (per-cycle actual values such
    as injection_time_s have only ``__last``); the UI's trend reads the same one the explanation does."""
    return (f"{signal}__mean", f"{signal}__value", f"{signal}__last", f"ctx__{signal}", signal)


def _value_feature(signal: str, names: set[str]) -> str | None:
    return next((cand for cand in value_feature_candidates(signal) if cand in names), None)


class Scorer:
    """A loaded model version ready to score single parts (edge) or frames (reports)."""

    def __init__(self, model: DefectModel, doc: dict, version_id: int | None = None, top_n: int = 5):
        self.model = model
        self.doc = doc
        self.version_id = version_id
        self.top_n = top_n
        self.feature_names: list[str] = list(model.feature_names_)
        self.feature_set_version: str = doc.get("feature_set_version", "")
        self.threshold: float = float(doc["threshold"])
        # The part-diversion decision (models.decisions); None for artifacts trained before it existed,
        # which the edge then serves with the single alert threshold.
        self.decisions: dict = doc.get("decisions") or {}
        self.diversion_threshold: float | None = (float(self.decisions["threshold"])
                                                  if self.decisions.get("threshold") is not None else None)
        rule = self.decisions.get("episode_rule") or {}
        self.episode_rule = EpisodeRule(int(rule.get("k", DEFAULT_EPISODE_RULE.k)), int(rule.get("n", DEFAULT_EPISODE_RULE.n)))
        self.kind: str = doc.get("kind", "")
        self.name: str = doc.get("name", "")
        self.card: dict = doc.get("card") or {}
        self.baseline = None
        if doc.get("baseline"):
            from pq.features.baseline import ContextBaseline

            self.baseline = ContextBaseline.from_dict(doc["baseline"])
        self.normal_ranges: dict[str, list] = doc.get("normal_ranges") or {}
        # {feature: [min, max]} seen in training (the edge's drift check)
        self.feature_ranges: dict[str, list] = dict(model.feature_ranges_)
        # signals that always moved within a training cycle (the edge's stuck-sensor check)
        self.moving_signals: frozenset[str] = frozenset(doc.get("moving_signals") or ())
        self._booster = model.booster_
        self._calib = model.calibrator_
        self._index = {f: i for i, f in enumerate(self.feature_names)}
        self._ctx_features = [(f[5:], i) for f, i in self._index.items() if f.startswith("ctx__") and f.count("__") == 1]
        self._nan_free_idx = np.array([self._index[f] for f in model.train_nan_free_], dtype=np.int64)
        self._medians = np.array([model.medians_.get(f, 0.0) for f in self.feature_names])
        self._medians = np.where(np.isfinite(self._medians), self._medians, 0.0)
        sigs = [signal_of(f) for f in self.feature_names]
        self.signals: list[str] = list(dict.fromkeys(sigs))
        sig_ix = {s: i for i, s in enumerate(self.signals)}
        self._sig_of_feature = np.array([sig_ix[s] for s in sigs], dtype=np.int64)
        names = set(self.feature_names)
        feats_of: dict[str, list[str]] = {}
        for f, sg in zip(self.feature_names, sigs):
            feats_of.setdefault(sg, []).append(f)
        self._sig_kind = ["context" if all(f.startswith("ctx__") for f in feats_of[sg])
                          else "derived" if feats_of[sg] == [sg] else "process" for sg in self.signals]
        self._value_feat = [_value_feature(s, names) for s in self.signals]

    # -- loading -------------------------------------------------------------------------------------
    @classmethod
    def from_bytes(cls, blob: bytes, expected_sha256: str | None = None, version_id: int | None = None,
                   top_n: int = 5) -> "Scorer":
        if expected_sha256 is not None and hashlib.sha256(blob).hexdigest() != expected_sha256:
            raise ModelError(f"artifact{f' of #{version_id}' if version_id else ''} is corrupted (sha256 mismatch); "
                             "promote another version or retrain")
        model, doc = DefectModel.from_bytes(blob, what=f"artifact of #{version_id}" if version_id else "artifact")
        if "threshold" not in doc:
            raise ModelError("artifact has no threshold: it was not produced by models.training")
        return cls(model, doc, version_id, top_n)

    @classmethod
    def from_version(cls, store, version_id: int, top_n: int = 5) -> "Scorer":
        from models.registry import load_artifact

        v, blob = load_artifact(store, version_id)
        scorer = cls.from_bytes(blob, v.artifact_sha256, v.id, top_n)
        logger.info("loaded scorer %s (feature set %s, %d features, threshold %.4f)", v.label,
                    scorer.feature_set_version, len(scorer.feature_names), scorer.threshold)
        return scorer

    # -- input ---------------------------------------------------------------------------------------
    def _row(self, vector: Mapping[str, float] | np.ndarray) -> tuple[np.ndarray, list[str]]:
        if isinstance(vector, np.ndarray):
            row = np.asarray(vector, dtype=np.float64).ravel()
            if row.shape[0] != len(self.feature_names):
                raise FeatureMismatch(f"model #{self.version_id} expects {len(self.feature_names)} features, "
                                      f"got an array of {row.shape[0]}")
            row = row.copy()
        else:
            try:
                row = np.fromiter((vector[f] for f in self.feature_names), dtype=np.float64,
                                  count=len(self.feature_names))
            except KeyError:
                missing = [f for f in self.feature_names if f not in vector]
                raise FeatureMismatch(
                    f"model #{self.version_id} expects {len(self.feature_names)} features, got {len(vector)} "
                    f"(missing: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}); the edge must use "
                    f"feature set {self.feature_set_version!r}") from None
            except (TypeError, ValueError) as exc:
                raise FeatureMismatch(f"model #{self.version_id}: feature values must be numbers ({exc})") from None
        flags: list[str] = []
        if len(self._nan_free_idx):
            bad = self._nan_free_idx[np.isnan(row[self._nan_free_idx])]
            if len(bad):
                flags.extend(f"nan_unseen:{self.feature_names[i]}" for i in bad)
                row[bad] = self._medians[bad]
        return row, flags

    # -- scoring -------------------------------------------------------------------------------------
    def score(self, vector: Mapping[str, float] | np.ndarray, context: Mapping[str, Any] | None = None,
              explain: bool | None = None, threshold: float | None = None) -> Score:
        """Probability, decision and (for at-risk parts, or when ``explain``) per-signal reasons.

        ``threshold`` overrides the version's alert threshold (the edge passes the diversion threshold)."""
        row, flags = self._row(vector)
        X = row.reshape(1, -1)
        raw = self._booster.predict(X, raw_score=True, num_threads=1)
        p = float(self._calib(raw)[0])
        threshold = self.threshold if threshold is None else float(threshold)
        at_risk = p >= threshold
        contributions: tuple[SignalContribution, ...] = ()
        if explain or (explain is None and at_risk):
            contrib = self._booster.predict(X, pred_contrib=True, num_threads=1)[0, :-1]
            contributions = self._explain(row, contrib, context, vector if isinstance(vector, Mapping) else None)
        return Score(p, threshold, bool(at_risk), contributions, tuple(flags), self.version_id)

    def _context_from_row(self, row: np.ndarray) -> dict[str, Any]:
        return {name: row[i] for name, i in self._ctx_features}

    def _explain(self, row: np.ndarray, contrib: np.ndarray, context: Mapping[str, Any] | None,
                 vector: Mapping[str, float] | None = None) -> tuple:
        per_signal = np.bincount(self._sig_of_feature, weights=contrib, minlength=len(self.signals))
        order = np.argsort(-np.abs(per_signal))[: self.top_n]
        ctx = dict(self._context_from_row(row)) | dict(context or {})
        ranges: dict[str, tuple[float, float]] = {}
        if self.baseline is not None and hasattr(self.baseline, "coef_"):
            try:
                ranges = self.baseline.normal_ranges([self.signals[j] for j in order], ctx)
            except (KeyError, ValueError):  # context unusable for this baseline: fall back below
                ranges = {}
        out = []
        for j in order:
            sig = self.signals[j]
            vf = self._value_feat[j]
            value = float(row[self._index[vf]]) if vf is not None else None
            lo, hi = ranges.get(sig, (None, None))
            if value is None:
                # an environment-aware model may use only the deviation from today's normal: the
                # operator still needs the reading, from the served vector or normal + deviation
                served = (vector or {}).get(f"{sig}__mean")
                dev = self._index.get(f"{sig}__dev_baseline")
                if served is not None and math.isfinite(served):
                    value = float(served)
                elif dev is not None and lo is not None and math.isfinite(lo) and math.isfinite(row[dev]):
                    value = (lo + hi) / 2.0 + float(row[dev])  # the baseline's range is centred on normal
            if (lo is None or not math.isfinite(lo)) and sig in self.normal_ranges:
                lo, hi = self.normal_ranges[sig]
            if value is None or lo is None or not math.isfinite(value):
                direction = "unknown"
            else:
                direction = "high" if value > hi else "low" if value < lo else "normal"
            out.append(SignalContribution(sig, float(per_signal[j]), value, lo, hi, direction, self._sig_kind[j]))
        return tuple(out)

    def score_frame(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities for many parts (reports, backtests); same NaN handling as score()."""
        return self._calib(self._booster.predict(self._matrix(X), raw_score=True, num_threads=self.model.n_threads))

    def top_signals(self, X: pd.DataFrame) -> np.ndarray:
        """The signal with the largest TreeSHAP contribution towards "defect" for each row of ``X``:
        the cause an operator alarm is grouped by (:mod:`pq.alerts.episodes`). Pass only the rows
        that need one; TreeSHAP costs about ten predictions."""
        if not len(X):
            return np.array([], dtype=object)
        contrib = self._booster.predict(self._matrix(X), pred_contrib=True, num_threads=self.model.n_threads)[:, :-1]
        per_signal = contrib @ np.eye(len(self.signals))[self._sig_of_feature]  # (rows, features) -> (rows, signals)
        return np.asarray(self.signals, dtype=object)[np.argmax(per_signal, axis=1)]

    def _matrix(self, X: pd.DataFrame) -> np.ndarray:
        missing = [f for f in self.feature_names if f not in X.columns]
        if missing:
            raise FeatureMismatch(f"model #{self.version_id} expects {len(self.feature_names)} features "
                                  f"(missing: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''})")
        A = X[self.feature_names].to_numpy(dtype=np.float64, copy=True)
        if len(self._nan_free_idx):
            sub = A[:, self._nan_free_idx]
            nan = np.isnan(sub)
            if nan.any():
                logger.warning("model #%s: %d NaN values in features that had none in training, imputed with the "
                               "training median", self.version_id, int(nan.sum()))
                sub[nan] = np.broadcast_to(self._medians[self._nan_free_idx], sub.shape)[nan]
                A[:, self._nan_free_idx] = sub
        return A
