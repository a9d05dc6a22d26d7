"""Environmental regimes and validation groups.

Owns the table of regime definitions (ambient temperature bands, humidity bands, supplier, material
lot, shift, product), the assignment of parts to regimes, and the grouping used for validation: a
part's group is its production day joined with every other day its material lot was used on, so no
day and no lot ever sits on both sides of a split. Imports pq only (nothing here imports LightGBM).

Example::

    labels = assign_regimes(meta)            # DataFrame: one column per regime, e.g. "ambient"
    labels["ambient"].iloc[0]                # '18–24 °C'
    folds = time_folds(meta, n_folds=3)      # int array, fold of each part, contiguous in time
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pq.errors import ModelError

__all__ = ["RegimeDef", "DEFAULT_REGIMES", "assign_regimes", "cv_groups", "time_folds", "split_rows", "parse_regime"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegimeDef:
    """One way of slicing parts by condition: numeric bands (``edges``) or categories (no edges)."""

    name: str
    column: str  # column of Dataset.meta; a ctx__<column> feature is the fallback
    edges: tuple[float, ...] = ()
    unit: str = ""
    max_categories: int = 12  # lots: the most frequent ones, the rest pooled as "other"

    def label(self, lo: float, hi: float) -> str:
        if math.isinf(lo):
            return f"<{hi:g} {self.unit}".strip()
        if math.isinf(hi):
            return f"≥{lo:g} {self.unit}".strip()
        return f"{lo:g}–{hi:g} {self.unit}".strip()


# Bands chosen around the simulator's and a typical hall's seasons: spring 14–24 °C, a heatwave
# pushes the hall past 30 °C; humid season adds ~25 %RH on top of 35–60 %.
DEFAULT_REGIMES: tuple[RegimeDef, ...] = (
    RegimeDef("ambient", "ambient_temp_c", (18.0, 24.0, 30.0), "°C"),
    RegimeDef("humidity", "humidity_pct", (45.0, 65.0), "%RH"),
    RegimeDef("supplier", "supplier"),
    RegimeDef("material_lot", "material_lot"),
    RegimeDef("shift", "shift"),
    RegimeDef("product", "product"),
)


def parse_regime(text: str) -> RegimeDef:
    """``"air_temp:air_temp_k:299,300.5,302:K"`` -> bands; ``"type:product"`` -> categories."""
    parts = text.split(":")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ModelError(f"regime {text!r}: expected NAME:COLUMN[:EDGE,EDGE,...[:UNIT]]")
    edges: tuple[float, ...] = ()
    if len(parts) > 2 and parts[2]:
        try:
            edges = tuple(sorted(float(e) for e in parts[2].split(",")))
        except ValueError:
            raise ModelError(f"regime {text!r}: edges must be numbers separated by commas, got {parts[2]!r}") from None
    return RegimeDef(parts[0], parts[1], edges, parts[3] if len(parts) > 3 else "")


def _column(meta: pd.DataFrame, X: pd.DataFrame | None, col: str) -> pd.Series | None:
    if col in meta.columns and meta[col].notna().any():
        return meta[col]
    if X is not None and f"ctx__{col}" in X.columns:
        return X[f"ctx__{col}"]
    return None


def assign_regimes(
    meta: pd.DataFrame, regimes: tuple[RegimeDef, ...] = DEFAULT_REGIMES, X: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One string column per regime that the data can describe (others are left out)."""
    out = {}
    for r in regimes:
        s = _column(meta, X, r.column)
        if s is None:
            continue
        if r.edges:
            v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)
            bounds = (-math.inf, *r.edges, math.inf)
            idx = np.searchsorted(np.asarray(r.edges), v, side="right")
            labels = np.array([r.label(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)], dtype=object)
            col = labels[np.clip(idx, 0, len(labels) - 1)]
            col[np.isnan(v)] = "unknown"
            out[r.name] = col
        else:
            s = s.astype(object).where(s.notna(), "unknown").astype(str)
            top = s.value_counts().index[: r.max_categories]
            out[r.name] = s.where(s.isin(top), "other").to_numpy(dtype=object)
    return pd.DataFrame(out, index=meta.index)


def cv_groups(meta: pd.DataFrame) -> np.ndarray:
    """Group id per part: production days joined through the material lots they share (union-find)."""
    day = pd.to_datetime(meta["cycle_end"], utc=True).dt.floor("D")
    day_codes, _ = pd.factorize(day)
    parent = np.arange(day_codes.max() + 1 if len(day_codes) else 0)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if "material_lot" in meta.columns and meta["material_lot"].notna().any():
        pairs = pd.DataFrame({"lot": meta["material_lot"].to_numpy(), "day": day_codes}).dropna().drop_duplicates()
        for _, days in pairs.groupby("lot")["day"]:
            d = days.to_numpy()
            for other in d[1:]:
                a, b = find(int(d[0])), find(int(other))
                if a != b:
                    parent[max(a, b)] = min(a, b)
    roots = np.array([find(int(c)) for c in range(len(parent))], dtype=np.int64)
    return roots[day_codes] if len(day_codes) else np.zeros(0, dtype=np.int64)


def time_folds(meta: pd.DataFrame, n_folds: int) -> np.ndarray:
    """Fold per part: groups (day + lot) ordered by time and cut into contiguous, balanced blocks.

    Contiguous blocks mean each fold is a different stretch of weather, lots and wear, so the
    validation score is what a model sees in conditions it was not trained on. When lots tie so many
    days together that fewer groups than folds remain, days alone are used and a warning says so.
    """
    if n_folds < 2:
        raise ModelError(f"folds must be >= 2, got {n_folds}")
    t = pd.to_datetime(meta["cycle_end"], utc=True).astype("int64").to_numpy()

    def cut(groups: np.ndarray) -> np.ndarray | None:
        g = pd.DataFrame({"g": groups, "t": t}).groupby("g").agg(start=("t", "min"), n=("t", "size")).sort_values("start")
        cum = g["n"].cumsum().to_numpy() - g["n"].to_numpy() / 2  # group midpoints in part counts
        fold_of_group = np.minimum((cum / len(t) * n_folds).astype(int), n_folds - 1)
        mapping = dict(zip(g.index.to_numpy(), fold_of_group))
        folds = np.array([mapping[x] for x in groups], dtype=np.int64)
        sizes = np.bincount(folds, minlength=n_folds)
        return folds if (sizes >= 0.1 * len(t) / n_folds * 2).all() else None

    folds = cut(cv_groups(meta))
    if folds is None:
        # lots running across midnight chain the days together; fold by day and let split_rows purge
        # the shared days and lots from the training side
        logger.info("material lots chain the days into too few groups for %d folds; folding by day, purging "
                    "shared days and lots from training", n_folds)
        days, _ = pd.factorize(pd.to_datetime(meta["cycle_end"], utc=True).dt.floor("D"))
        if len(np.unique(days)) < n_folds:
            raise ModelError(
                f"validation needs at least {n_folds} production days (one per fold), got {len(np.unique(days))}; "
                "train on a longer history or lower the number of folds")
        folds = cut(days)
        if folds is None:
            raise ModelError(f"could not cut {len(np.unique(days))} production days into {n_folds} balanced folds; "
                             "train on a longer history or lower the number of folds")
    return folds


def split_rows(meta: pd.DataFrame, folds: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows) of ``fold``, with every part that shares a production day
    or a material lot with the validation side purged from training: nothing straddles the split
    even when lots run across midnight and tie all days together."""
    val = folds == fold
    day = pd.to_datetime(meta["cycle_end"], utc=True).dt.floor("D").to_numpy()
    shared = np.isin(day, np.unique(day[val]))
    if "material_lot" in meta.columns:
        lots = meta["material_lot"].to_numpy(dtype=object)
        val_lots = {x for x in lots[val] if x is not None and x == x}
        shared |= np.array([x in val_lots for x in lots])
    train = ~val & ~shared
    return np.flatnonzero(train), np.flatnonzero(val)
