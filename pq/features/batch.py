"""Batch feature path: thousands of parts at once (training, backfill), parallel Numba kernels.

Owns input normalisation of long sample frames (tag/line codes, timestamps to int64 ns, grouping
and sorting by (line, tag, ts)), the part windows and the call into `_kernels.batch_stats`; vector
assembly is shared with the streaming path (`_assemble`). Must not import connectors/, models/,
ui/ or simulators/.

Example::

    fs = load_feature_set()
    X = compute_batch(fs, samples, parts, tags=tags_df, baseline=bl)
    X.loc[("line-1", "S000123"), "melt_temp_c__mean"], X["reason"]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from pq.features import _kernels as K
from pq.features._assemble import assemble, plan_for, window_bounds
from pq.features.spec import N_KERNEL_COLS, FeatureInputError, FeatureSet

logger = logging.getLogger(__name__)

__all__ = ["compute_batch", "prepare_samples", "compute_prepared", "SampleBlock", "to_ns", "limits_table"]

_NAT = np.iinfo(np.int64).min


def to_ns(ts: Any) -> np.ndarray:
    """Timestamps to int64 ns since the epoch (UTC). Accepts datetime64 (naive = UTC, or tz-aware),
    pandas Series/Index, or float epoch seconds. NaT / NaN -> int64 min."""
    if isinstance(ts, (pd.Series, pd.Index)) and isinstance(ts.dtype, pd.DatetimeTZDtype):
        # tz-aware values are stored as UTC: read them without a copy
        i8 = np.asarray(ts.array.asi8)
        scale = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}[ts.dtype.unit]
        if scale == 1:
            return i8
        return np.where(i8 == _NAT, _NAT, i8 * scale)
    if isinstance(ts, (pd.Series, pd.Index)):
        if isinstance(ts.dtype, pd.DatetimeTZDtype):
            ts = ts.dt.tz_convert("UTC").dt.tz_localize(None) if isinstance(ts, pd.Series) else \
                ts.tz_convert("UTC").tz_localize(None)
        arr = ts.to_numpy()
    else:
        arr = np.asarray(ts)
    if arr.dtype.kind == "M":
        return arr.astype("datetime64[ns]").view(np.int64)
    if arr.dtype.kind == "f":
        out = np.full(arr.shape, _NAT, np.int64)
        ok = np.isfinite(arr)
        out[ok] = np.rint(arr[ok] * 1e9).astype(np.int64)
        return out
    if arr.dtype == object:
        return to_ns(pd.to_datetime(pd.Series(arr.ravel()), utc=True))
    raise FeatureInputError(
        f"timestamps must be datetime64 or float epoch seconds, got dtype {arr.dtype}"
    )


def _codes(col: pd.Series, categories: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(raw codes int32, lookup table raw code -> index in `categories` or -1).

    Categorical columns cost nothing here; other columns are factorised first (slower: pass
    `tag` and `line_id` as category dtype for speed)."""
    cats = pd.Index(categories)
    if not isinstance(col.dtype, pd.CategoricalDtype):
        codes, uniques = pd.factorize(col.astype(str))
        return codes.astype(np.int32), cats.get_indexer(pd.Index(uniques).astype(str)).astype(np.int64)
    lut = cats.get_indexer(col.cat.categories.astype(str)).astype(np.int64)
    return col.cat.codes.to_numpy().astype(np.int32), lut


def limits_table(
    fs: FeatureSet, lines: list[str], tags: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per key (line index * T + tag index) the (low, high) limits.

    Priority: the spec's [limits] table, then `tags` (a DataFrame with name|tag, low_limit,
    high_limit and optionally line_id; or a mapping tag -> (low, high)). Missing -> NaN.
    """
    T = len(fs.tags)
    lo = np.full(len(lines) * T, np.nan)
    hi = np.full(len(lines) * T, np.nan)
    tix = {t: i for i, t in enumerate(fs.tags)}
    lix = {ln: i for i, ln in enumerate(lines)}

    def put(line_i: list[int], t: str, low: Any, high: Any) -> None:
        if t not in tix:
            return
        for li in line_i:
            k = li * T + tix[t]
            lo[k] = np.nan if low is None or pd.isna(low) else float(low)
            hi[k] = np.nan if high is None or pd.isna(high) else float(high)

    everyone = list(range(len(lines)))
    if isinstance(tags, pd.DataFrame):
        name_col = "name" if "name" in tags.columns else "tag"
        for r in tags.itertuples(index=False):
            d = r._asdict()
            li = [lix[d["line_id"]]] if "line_id" in d and d["line_id"] in lix else (
                everyone if "line_id" not in d else [])
            put(li, d[name_col], d.get("low_limit"), d.get("high_limit"))
    elif isinstance(tags, Mapping):
        for t, (low, high) in tags.items():
            put(everyone, t, low, high)
    for t, (low, high) in fs.limits.items():
        if t in tix:
            for li in everyone:
                k = li * T + tix[t]
                if not np.isnan(low):
                    lo[k] = low
                if not np.isnan(high):
                    hi[k] = high
    return lo, hi


def _catalog_names(tags: Any) -> list[str] | None:
    if tags is None:
        return None
    if isinstance(tags, pd.DataFrame):
        return [str(x) for x in tags["name" if "name" in tags.columns else "tag"]]
    return [str(x) for x in tags]


@dataclass
class SampleBlock:
    """Samples grouped by key = line index * T + tag index, sorted by ts inside each group."""

    lines: list[str]
    ts: np.ndarray
    val: np.ndarray
    status: np.ndarray
    grp_start: np.ndarray
    grp_end: np.ndarray
    counters: dict[str, int] = field(default_factory=dict)


_REQUIRED_SAMPLE_COLS = ("line_id", "tag", "ts", "value", "status")


def prepare_samples(fs: FeatureSet, samples: pd.DataFrame, lines: list[str]) -> SampleBlock:
    """Normalise a long sample frame for the kernels. Rows of other tags/lines are left out.

    Unsorted input is sorted (stable: for duplicated (line, tag, ts) the first row in input
    order wins, later ones are counted in counters['duplicates'] and skipped by the kernel)."""
    missing = [c for c in _REQUIRED_SAMPLE_COLS if c not in samples.columns]
    if missing:
        raise FeatureInputError(
            f"samples frame lacks columns {missing}; expected {list(_REQUIRED_SAMPLE_COLS)}"
        )
    T = len(fs.tags)
    n_keys = len(lines) * T
    tc, tlut = _codes(samples["tag"], list(fs.tags))
    lc, llut = _codes(samples["line_id"], lines)
    keys = K.make_keys(tc, tlut, lc, llut, T)
    ts = to_ns(samples["ts"])
    val = samples["value"].to_numpy(dtype=np.float64)
    status = samples["status"].to_numpy(dtype=np.uint32)
    nat = ts == _NAT
    counters = {"rows_in": int(len(samples)), "rows_other_tags": int((keys < 0).sum())}
    if nat.any():
        keys = np.where(nat, -1, keys)
        counters["rows_nat_ts"] = int(nat.sum())
        logger.warning("features: %d samples without a timestamp ignored", int(nat.sum()))
    if (keys >= 0).all() and K.check_grouped_sorted(keys, ts):
        start, end = K.group_bounds(keys, n_keys)
    else:
        import numba

        ts, val, status, start, end = K.group_scatter(keys, n_keys, numba.get_num_threads(), ts, val, status)
        bad = K.unsorted_groups(ts, start, end)
        counters["groups_resorted"] = int(bad.size)
        for g in bad:
            a, b = start[g], end[g]
            o = np.argsort(ts[a:b], kind="stable")
            ts[a:b], val[a:b], status[a:b] = ts[a:b][o], val[a:b][o], status[a:b][o]
    dup = int(K.count_duplicates(ts, start, end))
    counters["duplicates"] = dup
    if dup:
        logger.info("features: %d samples with a duplicated (tag, ts) skipped (first wins)", dup)
    return SampleBlock(lines, ts, val, status, start, end, counters)


_REQUIRED_PART_COLS = ("line_id", "serial", "cycle_start", "cycle_end")


def compute_prepared(
    fs: FeatureSet,
    block: SampleBlock,
    parts: pd.DataFrame,
    *,
    tags: Any = None,
    baseline: Any = None,
    parallel: bool = True,
) -> pd.DataFrame:
    """Features of `parts` from a prepared SampleBlock; see compute_batch."""
    missing = [c for c in _REQUIRED_PART_COLS if c not in parts.columns]
    if missing:
        raise FeatureInputError(f"parts frame lacks columns {missing}; expected {list(_REQUIRED_PART_COLS)} + context")
    plan = plan_for(fs)
    T = len(fs.tags)
    P = len(parts)
    lix = {ln: i for i, ln in enumerate(block.lines)}
    line_idx = np.fromiter((lix.get(str(x), -1) for x in parts["line_id"]), np.int64, count=P)
    part_key = np.where(line_idx >= 0, line_idx * T, -1).astype(np.int64)
    cs = to_ns(parts["cycle_start"])
    ce = to_ns(parts["cycle_end"])
    empty = (cs == _NAT) | (ce == _NAT) | ~(ce > cs)
    wlo, whi = window_bounds(plan, np.where(empty, 0, cs), np.where(empty, 0, ce))
    key_lo, key_hi = limits_table(fs, block.lines, tags)
    G = len(fs.groups)
    stats = np.empty((P, G, N_KERNEL_COLS))
    fn = K.batch_stats if parallel else K.batch_stats_serial
    fn(block.ts, block.val, block.status, block.grp_start, block.grp_end, part_key, wlo, whi,
       plan.g_tag, plan.g_win, plan.g_alpha, plan.g_min, key_lo, key_hi,
       np.uint32(fs.bad_mask), stats)
    gk = np.where(part_key[:, None] >= 0, part_key[:, None] + plan.g_tag[None, :], 0)
    lim = (np.where(part_key[:, None] >= 0, key_lo[gk], np.nan),
           np.where(part_key[:, None] >= 0, key_hi[gk], np.nan))
    context = {c.name: parts[c.name].to_numpy() for c in fs.context if c.name in parts.columns}
    if baseline is not None:
        for c in list(getattr(baseline, "numeric_inputs_", [])) + list(getattr(baseline, "categories_", {})):
            if c in parts.columns and c not in context:
                context[c] = parts[c].to_numpy()
    X, reasons = assemble(fs, stats, lim, context, baseline, empty_cycle=empty)
    idx = pd.MultiIndex.from_arrays(
        [parts["line_id"].astype(str).to_numpy(), parts["serial"].astype(str).to_numpy()],
        names=["line_id", "serial"],
    )
    out = pd.DataFrame(X, index=idx, columns=list(fs.feature_names))
    out["reason"] = pd.Series(reasons, index=idx, dtype=object)
    out.attrs["feature_set_version"] = fs.version
    out.attrs["counters"] = dict(block.counters)
    return out


def compute_batch(
    fs: FeatureSet,
    samples: pd.DataFrame,
    parts: pd.DataFrame,
    *,
    tags: Any = None,
    baseline: Any = None,
    parallel: bool = True,
) -> pd.DataFrame:
    """Feature vectors of many parts: DataFrame indexed by (line_id, serial), one float64 column
    per `fs.feature_names`, plus `reason` ("" when complete).

    samples: long frame line_id, tag, ts (datetime64 UTC or float epoch s), value, status (uint32).
    parts: line_id, serial, cycle_start, cycle_end (+ context columns named as in the spec).
    tags: tag catalog (DataFrame name, low_limit, high_limit[, line_id]) or {tag: (low, high)};
    when given, tags of the spec missing from it raise UnknownTagError.
    baseline: a fitted ContextBaseline, or None (dev_baseline features NaN with a reason).
    """
    names = _catalog_names(tags)
    if names is not None:
        fs.check_tags(names)
    lines = sorted({str(x) for x in parts["line_id"]}) if "line_id" in parts.columns else []
    block = prepare_samples(fs, samples, lines)
    return compute_prepared(fs, block, parts, tags=tags, baseline=baseline, parallel=parallel)
