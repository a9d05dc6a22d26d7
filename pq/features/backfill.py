"""Store integration: log served vectors, and recompute vectors from raw samples (backfill).

Owns reading parts / samples / the tag catalog for the feature code, and writing `part_features`
rows (part_id, feature_set_version, source, features JSON with NaN as null, reason, computed_at).
Policy: rows the edge served (source "edge") are what the model saw and are never overwritten by a
backfill; backfill rows are refreshed on every run (idempotent). Uses pq.storage's schema through
SQLAlchemy Core; must not import connectors/, models/, ui/ or simulators/.

Example::

    from pq.features.backfill import backfill, log_served_features
    log_served_features(store, fs, [("line-1", "L1-000123", x, reason)])
    backfill(store, load_feature_set(), baseline=bl, line_id="line-1")
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from sqlalchemy import and_, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pq.features.spec import FeatureSet
from pq.storage import schema
from pq.storage.samples import read_samples

logger = logging.getLogger(__name__)

__all__ = ["log_served_features", "backfill", "load_parts", "load_samples", "load_tag_catalog",
           "write_part_features"]


def _features_json(names: Sequence[str], x: np.ndarray) -> dict[str, float | None]:
    return {n: (float(v) if math.isfinite(v) else None) for n, v in zip(names, x.tolist())}


def write_part_features(store: Any, fs: FeatureSet, part_ids: Sequence[int], X: np.ndarray,
                        reasons: Sequence[str], source: str) -> int:
    """Upsert part_features rows; an existing 'edge' row is kept when source is not 'edge'."""
    if len(part_ids) == 0:
        return 0
    now = datetime.now(timezone.utc)
    names = fs.feature_names
    rows = [{"part_id": int(pid), "feature_set_version": fs.version, "source": source,
             "features": _features_json(names, X[i]), "reason": reasons[i], "computed_at": now}
            for i, pid in enumerate(part_ids)]
    t = schema.part_features
    fn = pg_insert if store.dialect == "postgresql" else sqlite_insert
    stmt = fn(t)
    upd = {c: stmt.excluded[c] for c in ("source", "features", "reason", "computed_at")}
    where = None if source == "edge" else (t.c.source != "edge")
    stmt = stmt.on_conflict_do_update(index_elements=["part_id", "feature_set_version"], set_=upd,
                                      where=where)
    with store.engine.begin() as conn:
        for i in range(0, len(rows), 2000):
            conn.execute(stmt, rows[i : i + 2000])
    return len(rows)


def log_served_features(store: Any, fs: FeatureSet,
                        rows: Iterable[tuple[str, str, np.ndarray, str]]) -> int:
    """Log vectors the edge served: rows of (line_id, serial, vector, reason). Parts must exist
    (the part event is stored first); unknown parts are counted and logged, not dropped silently."""
    rows = list(rows)
    if not rows:
        return 0
    p = schema.parts
    keys = [(r[0], r[1]) for r in rows]
    with store.engine.connect() as conn:
        found = {(a, b): i for i, a, b in conn.execute(
            select(p.c.id, p.c.line_id, p.c.serial).where(tuple_(p.c.line_id, p.c.serial).in_(keys)))}
    ok = [r for r in rows if (r[0], r[1]) in found]
    if len(ok) < len(rows):
        missing = [f"{r[0]}/{r[1]}" for r in rows if (r[0], r[1]) not in found]
        logger.warning("features: %d served vectors for unknown parts not logged: %s",
                       len(missing), ", ".join(missing[:5]))
    if not ok:
        return 0
    X = np.vstack([np.asarray(r[2], np.float64) for r in ok])
    return write_part_features(store, fs, [found[(r[0], r[1])] for r in ok], X,
                               [r[3] for r in ok], "edge")


def load_parts(store: Any, *, line_id: str | None = None, since: datetime | None = None,
               until: datetime | None = None) -> pd.DataFrame:
    """Parts with their context (JSON expanded to columns; product/material_lot/shift columns win)."""
    p = schema.parts
    q = select(p.c.id, p.c.line_id, p.c.serial, p.c.cycle_start, p.c.cycle_end, p.c.product,
               p.c.material_lot, p.c.shift, p.c.context).order_by(p.c.cycle_end)
    conds = []
    if line_id is not None:
        conds.append(p.c.line_id == line_id)
    if since is not None:
        conds.append(p.c.cycle_end > since)
    if until is not None:
        conds.append(p.c.cycle_end <= until)
    if conds:
        q = q.where(and_(*conds))
    with store.engine.connect() as conn:
        rows = conn.execute(q).all()
    df = pd.DataFrame([r._asdict() for r in rows],
                      columns=["id", "line_id", "serial", "cycle_start", "cycle_end", "product",
                               "material_lot", "shift", "context"])
    ctx = pd.DataFrame([c or {} for c in df["context"]], index=df.index)
    for c in ctx.columns:
        if c not in df.columns:
            df[c] = ctx[c]
        else:
            df[c] = df[c].where(df[c].notna(), ctx[c])
    df = df.drop(columns=["context"])
    for c in ("cycle_start", "cycle_end"):
        df[c] = pd.to_datetime(df[c], utc=True)
    return df


def load_tag_catalog(store: Any, line_ids: Sequence[str] | None = None) -> pd.DataFrame:
    t = schema.tags
    q = select(t.c.id, t.c.line_id, t.c.name, t.c.low_limit, t.c.high_limit)
    if line_ids is not None:
        q = q.where(t.c.line_id.in_(list(line_ids)))
    with store.engine.connect() as conn:
        rows = conn.execute(q).all()
    return pd.DataFrame([r._asdict() for r in rows], columns=["id", "line_id", "name", "low_limit", "high_limit"])


def load_samples(store: Any, catalog: pd.DataFrame, tags: Sequence[str], t_from: datetime,
                 t_to: datetime) -> pd.DataFrame:
    """Samples of `tags` (on the catalog's lines) with t_from < ts <= t_to, ordered by (tag, ts)
    so the batch path needs no re-sort."""
    cat = catalog[catalog["name"].isin(list(tags))]
    df = read_samples(store, cat["id"], t_from, t_to)
    by_id = cat.set_index("id")
    df["line_id"] = pd.Categorical(by_id["line_id"].reindex(df["tag_id"]).to_numpy())
    df["tag"] = pd.Categorical(by_id["name"].reindex(df["tag_id"]).to_numpy())
    df["status"] = df["status"].astype(np.uint32)
    return df[["line_id", "tag", "ts", "value", "status"]]


def backfill(store: Any, fs: FeatureSet, *, baseline: Any = None, line_id: str | None = None,
             since: datetime | None = None, until: datetime | None = None,
             batch_parts: int = 5000, progress: Any = None) -> dict[str, int]:
    """Recompute vectors of stored parts from raw samples under `fs` and write them with
    source 'backfill' (never replacing what the edge served). Returns counts."""
    from pq.features.batch import compute_batch

    parts = load_parts(store, line_id=line_id, since=since, until=until)
    counts = {"parts": len(parts), "written": 0, "incomplete": 0, "samples": 0}
    if parts.empty:
        logger.info("features backfill: no parts to recompute")
        return counts
    catalog = load_tag_catalog(store, sorted(parts["line_id"].unique()))
    for line, lp in parts.groupby("line_id", sort=True):
        fs.check_tags(catalog.loc[catalog["line_id"] == line, "name"].tolist(), where=f"tag catalog of {line}")
        for i in range(0, len(lp), batch_parts):
            chunk = lp.iloc[i : i + batch_parts].copy()
            start = chunk["cycle_start"].fillna(chunk["cycle_end"])
            t_from = start.min().to_pydatetime()
            t_to = chunk["cycle_end"].max().to_pydatetime()
            cat_line = catalog[catalog["line_id"] == line]
            samples = load_samples(store, cat_line, fs.tags, t_from, t_to)
            X = compute_batch(fs, samples, chunk, tags=cat_line, baseline=baseline)
            counts["samples"] += len(samples)
            counts["written"] += write_part_features(
                store, fs, chunk["id"].tolist(), X[list(fs.feature_names)].to_numpy(),
                X["reason"].tolist(), "backfill")
            counts["incomplete"] += int((X["reason"] != "").sum())
            if progress is not None:
                progress(line, i + len(chunk), len(lp))
    logger.info("features backfill %s: %d parts, %d samples, %d incomplete vectors",
                fs.version, counts["parts"], counts["samples"], counts["incomplete"])
    return counts
