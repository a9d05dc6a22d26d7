"""Labelled part vectors for training and reports, from the store or from frames.

Owns the join of parts, their stored feature vectors (``part_features`` for one feature-set
version), their context, inspection labels and operator feedback labels, and the handling of label
delay: a part without a label yet is left out (and counted), never taken as good. Also owns the
refit of the context baseline and the recomputation of ``__dev_baseline`` features with it, so a
model always ships the exact baseline its deviation features were computed with. Imports pq only.

Label precedence: ``"inspection"`` (default) takes the end-of-line result and uses operator
feedback only for parts that were never inspected; ``"feedback"`` lets an engineer say that
confirmed defects / false alarms recorded on alerts override the inspection.

Example::

    ds = load_dataset(store, "default-1", line_id="line-1")
    ds.X.shape, ds.y.mean(), ds.n_unlabelled
    ds = dataset_from_frames(features_df, parts_df)       # simulator history, imports, tests
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
import pandas as pd
from sqlalchemy import and_, select

from pq.errors import ModelError
from pq.storage import schema

__all__ = ["Dataset", "load_dataset", "dataset_from_frames", "fit_baseline", "apply_baseline",
           "CONTEXT_COLUMNS", "available_feature_sets", "feature_set_definition"]

logger = logging.getLogger(__name__)

# Context columns that describe conditions (regimes, baseline inputs) when the data has them.
CONTEXT_COLUMNS = ("ambient_temp_c", "humidity_pct", "supplier", "material_lot", "lot_moisture_pct",
                   "lot_mfi_g10min", "dryer_dew_point_c", "tool_wear_shots", "shift", "product")


@dataclass
class Dataset:
    """X: float features (index = position); y: 0/1; meta: who/when/conditions of each part."""

    X: pd.DataFrame
    y: pd.Series
    meta: pd.DataFrame
    feature_set_version: str
    n_unlabelled: int = 0
    label_sources: dict = field(default_factory=dict)
    # the feature set's stored definition (derived expressions, context roles, training hints);
    # empty for a feature set that is not in ``feature_sets`` (the shipped spec, frames)
    definition: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, mask) -> "Dataset":
        mask = np.asarray(mask, dtype=bool)
        return replace(self, X=self.X.loc[mask].reset_index(drop=True), y=self.y.loc[mask].reset_index(drop=True),
                       meta=self.meta.loc[mask].reset_index(drop=True))

    @property
    def window(self) -> tuple[datetime | None, datetime | None]:
        if not len(self.meta):
            return None, None
        t = pd.to_datetime(self.meta["cycle_end"], utc=True)
        return t.min().to_pydatetime(), t.max().to_pydatetime()

    def for_defect_code(self, code: str) -> "Dataset":
        """Labels for one defect code: parts with another defect count as not-this-defect."""
        y = ((self.y == 1) & (self.meta["defect_code"].astype(str) == code)).astype(int)
        return replace(self, y=y)


def _finish(X: pd.DataFrame, meta: pd.DataFrame, label: pd.Series, version: str, sources: dict) -> Dataset:
    labelled = label.notna().to_numpy()
    n_unlabelled = int((~labelled).sum())
    X = X.loc[labelled].reset_index(drop=True).astype(np.float64)
    meta = meta.loc[labelled].reset_index(drop=True)
    y = label.loc[labelled].astype(int).reset_index(drop=True)
    order = np.argsort(pd.to_datetime(meta["cycle_end"], utc=True).to_numpy(), kind="stable")
    X, meta, y = X.iloc[order].reset_index(drop=True), meta.iloc[order].reset_index(drop=True), y.iloc[order].reset_index(drop=True)
    if n_unlabelled:
        logger.info("dataset %s: %d labelled parts, %d without a label yet (left out)", version, len(y), n_unlabelled)
    return Dataset(X, y, meta, version, n_unlabelled, sources)


def dataset_from_frames(features: pd.DataFrame, parts: pd.DataFrame, feature_set_version: str = "frames") -> Dataset:
    """Join a features frame indexed by (line_id, serial) with a parts frame (line_id, serial,
    cycle_end, defect [NaN = no label yet], defect_code, context columns)."""
    need = {"line_id", "serial", "cycle_end", "defect"}
    missing = need - set(parts.columns)
    if missing:
        raise ModelError(f"parts frame: missing columns {sorted(missing)}, expected at least {sorted(need)}")
    f = features.drop(columns=[c for c in ("reason",) if c in features.columns])
    if not isinstance(f.index, pd.MultiIndex):
        if {"line_id", "serial"} <= set(f.columns):
            f = f.set_index(["line_id", "serial"])
        else:
            raise ModelError("features frame: expected an index (line_id, serial) or those columns")
    p = parts.set_index(["line_id", "serial"])
    common = p.index.intersection(f.index)
    if len(common) == 0:
        raise ModelError("features and parts share no (line_id, serial): were they computed from the same history?")
    p = p.loc[common]
    X = f.loc[common].reset_index(drop=True)
    meta = p.reset_index()
    meta["cycle_end"] = pd.to_datetime(meta["cycle_end"], utc=True)
    if "defect_code" not in meta.columns:
        meta["defect_code"] = None
    label = meta["defect"].map(lambda v: np.nan if v is None or (isinstance(v, float) and np.isnan(v)) else float(bool(v)))
    meta["label_source"] = np.where(label.notna(), "inspection", None)
    meta = meta.drop(columns=["defect"])
    return _finish(X, meta, label, feature_set_version, {"inspection": int(label.notna().sum())})


def available_feature_sets(store) -> list[tuple[str, int]]:
    """(feature_set_version, parts with vectors) in the store, most parts first."""
    from sqlalchemy import func

    pf = schema.part_features
    with store.engine.connect() as conn:
        rows = conn.execute(select(pf.c.feature_set_version, func.count()).group_by(pf.c.feature_set_version)).all()
    return sorted(((r[0], int(r[1])) for r in rows), key=lambda r: -r[1])


def load_dataset(
    store,
    feature_set_version: str,
    *,
    line_id: str | None = None,
    product: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    label_precedence: str = "inspection",
) -> Dataset:
    """Parts with stored vectors of ``feature_set_version`` and a label (see module docstring)."""
    if label_precedence not in ("inspection", "feedback"):
        raise ModelError(f"label_precedence must be inspection or feedback, got {label_precedence!r}")
    p, pf, ins, al = schema.parts, schema.part_features, schema.inspections, schema.alerts
    q = (
        select(p.c.id, p.c.line_id, p.c.serial, p.c.cycle_start, p.c.cycle_end, p.c.product, p.c.material_lot,
               p.c.shift, p.c.context, pf.c.features, ins.c.defect, ins.c.defect_code)
        .join(pf, and_(pf.c.part_id == p.c.id, pf.c.feature_set_version == feature_set_version))
        .outerjoin(ins, and_(ins.c.line_id == p.c.line_id, ins.c.serial == p.c.serial))
    )
    if line_id is not None:
        q = q.where(p.c.line_id == line_id)
    if product is not None:
        q = q.where(p.c.product == product)
    if start is not None:
        q = q.where(p.c.cycle_end >= start)
    if end is not None:
        q = q.where(p.c.cycle_end < end)
    fb = select(al.c.line_id, al.c.serial, al.c.feedback, al.c.feedback_at).where(
        al.c.feedback.in_(("confirmed", "false_alarm")), al.c.serial.is_not(None))
    if line_id is not None:
        fb = fb.where(al.c.line_id == line_id)
    with store.engine.connect() as conn:
        rows = conn.execute(q).all()
        fb_rows = conn.execute(fb).all()
    if not rows:
        known = ", ".join(f"{v} ({n} parts)" for v, n in available_feature_sets(store)) or "none"
        raise ModelError(
            f"no parts with feature vectors of feature set {feature_set_version!r}"
            f"{f' on {line_id}' if line_id else ''}{f' for product {product}' if product else ''} in the store "
            f"(feature sets stored: {known}); backfill them with `pq features backfill` or import history with `pq import`")
    X = pd.DataFrame.from_records([r.features or {} for r in rows]).astype(np.float64)
    ctx = pd.DataFrame.from_records([r.context or {} for r in rows])
    meta = pd.DataFrame({
        "part_id": [r.id for r in rows], "line_id": [r.line_id for r in rows], "serial": [r.serial for r in rows],
        "cycle_end": pd.to_datetime([r.cycle_end for r in rows], utc=True),
        "product": [r.product for r in rows], "material_lot": [r.material_lot for r in rows],
        "shift": [r.shift for r in rows], "defect_code": [r.defect_code for r in rows],
    })
    for c in ctx.columns:  # context JSON fills in what the part columns do not hold
        if c not in meta.columns:
            meta[c] = ctx[c].to_numpy()
        else:
            meta[c] = meta[c].where(meta[c].notna(), ctx[c].to_numpy())
    insp = pd.Series([np.nan if r.defect is None else float(r.defect) for r in rows])
    feedback: dict[tuple[str, str], tuple] = {}
    for r in fb_rows:  # latest feedback per part wins
        key = (r.line_id, r.serial)
        if key not in feedback or (r.feedback_at and (feedback[key][1] is None or r.feedback_at > feedback[key][1])):
            feedback[key] = (1.0 if r.feedback == "confirmed" else 0.0, r.feedback_at)
    fbs = pd.Series([feedback.get((r.line_id, r.serial), (np.nan,))[0] for r in rows])
    if label_precedence == "feedback":
        label, first, second = fbs.where(fbs.notna(), insp), "feedback", "inspection"
    else:
        label, first, second = insp.where(insp.notna(), fbs), "inspection", "feedback"
    primary = (fbs if first == "feedback" else insp).notna()
    meta["label_source"] = np.where(primary, first, np.where(label.notna(), second, None))
    sources = {first: int(primary.sum()), second: int((~primary & label.notna()).sum())}
    logger.info("dataset %s: %d parts with vectors, labels %s (precedence %s)", feature_set_version, len(rows),
                sources, label_precedence)
    return replace(_finish(X, meta, label, feature_set_version, sources),
                   definition=feature_set_definition(store, feature_set_version))


def feature_set_definition(store, feature_set_version: str) -> dict:
    """The stored definition of a feature set (``feature_sets`` row), or {} when it has none."""
    fs = schema.feature_sets
    with store.engine.connect() as conn:
        row = conn.execute(select(fs.c.definition).where(fs.c.version == feature_set_version)).first()
    return dict(row[0]) if row is not None else {}


# -- context baseline -------------------------------------------------------------------------------

def _level_column(X: pd.DataFrame, target: str) -> str | None:
    """The column holding a baseline target's window level: ``__mean``, else ``__last`` / ``__value``
    (per-cycle signals have one sample per window, where mean = last)."""
    for suffix in ("__mean", "__last", "__value"):
        if f"{target}{suffix}" in X.columns:
            return f"{target}{suffix}"
    return None


def _targets(X: pd.DataFrame) -> dict[str, str]:
    """{baseline target: level column} for every dev_baseline feature and every __mean column."""
    names = [c[: -len("__dev_baseline")] for c in X.columns if c.endswith("__dev_baseline")]
    names += [c[: -len("__mean")] for c in X.columns if c.endswith("__mean")]
    out = {}
    for t in dict.fromkeys(names):
        col = _level_column(X, t)
        if col is not None:
            out[t] = col
    return out


# Which context inputs each baseline target keeps (pq.features.baseline.ContextBaseline ``select``):
# "prune" drops, per target, the inputs that do not earn their place in blocked cross-validation, so
# correlated inputs of one season cannot share out an effect that comes apart in another
# (docs/models.md, "What was tried against the drift").
BASELINE_SELECT: str | None = "prune"


def fit_baseline(ds: Dataset, mask=None):
    """Fit pq.features' ContextBaseline on the good parts (``y == 0``) of ``ds`` (or ``mask``)."""
    from pq.features.baseline import ContextBaseline

    if mask is None:
        mask = (ds.y == 0).to_numpy()
    targets = _targets(ds.X)
    if not targets:
        return None
    levels = pd.DataFrame({f"{t}__mean": ds.X[col].to_numpy() for t, col in targets.items()})
    return ContextBaseline(select=BASELINE_SELECT).fit(levels, ds.meta, targets=list(targets), mask=mask)


def apply_baseline(X: pd.DataFrame, meta: pd.DataFrame, baseline) -> pd.DataFrame:
    """Recompute every ``<target>__dev_baseline`` column as ``<target>__mean`` minus the baseline's
    expectation for each part's context (a copy; other columns untouched)."""
    dev_cols = [c for c in X.columns if c.endswith("__dev_baseline")]
    if baseline is None or not dev_cols:
        return X
    targets = [c[: -len("__dev_baseline")] for c in dev_cols]
    modelled = set(getattr(baseline, "coef_", {}))
    expected, _ = baseline.predict_matrix([t for t in targets if t in modelled],
                                          {c: meta[c].to_numpy() for c in meta.columns}, len(X))
    X = X.copy()
    j = 0
    for col, t in zip(dev_cols, targets):
        if t not in modelled:
            continue
        level = _level_column(X, t)
        if level is not None:
            X[col] = X[level].to_numpy() - expected[:, j]
        j += 1
    return X
