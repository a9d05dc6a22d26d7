"""Batch feature path: thousands of parts at once (training, backfill), parallel Numba kernels.

Owns input normalisation of long sample frames (tag/line codes read in place, timestamps to int64
ns), the part windows, and the choice of kernel: `_kernels.fused_stats` computes every window in one
pass over rows that are in time order per (line, tag) - interleaved as a subscription delivers them
or grouped as the store returns them - without copying them; other input (a tag's rows out of time
order, overlapping windows on a line) is regrouped and sorted (`group_scatter`, `sort_groups`) and
goes through `batch_stats`. Vector assembly is shared with the streaming path (`_assemble`). Must
not import connectors/, models/, ui/ or simulators/.

Example::

    fs = load_feature_set()
    X = compute_batch(fs, samples, parts, tags=tags_df, baseline=bl)
    X.loc[("line-1", "S000123"), "melt_temp_c__mean"], X["reason"]

Why one file of ~500 lines: input normalisation, window assembly and the kernel choice are one
pipeline over the same arrays; the arithmetic itself is in ``_kernels``.
"""

from __future__ import annotations

import logging
import time
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


def _codes(col: pd.Series) -> tuple[np.ndarray, list[str]]:
    """(codes, category names) of a key column without touching its 12 M strings when it is a
    categorical (codes are read in place: no copy). Other columns are factorised first (slower:
    pass `tag` and `line_id` as category dtype for speed). Missing values get code -1."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return np.asarray(col.array.codes), [str(x) for x in col.cat.categories]
    codes, uniques = pd.factorize(col)
    return codes, [str(x) for x in uniques]


def _key_lut(fs: FeatureSet, tag_cats: list[str], line_cats: list[str], lines: list[str]) -> np.ndarray:
    """klut[(line code + 1) * (n tag codes + 1) + tag code + 1] = line index * T + tag index, or -1
    (row of a tag/line not computed, or a missing code)."""
    T = len(fs.tags)
    tix = {t: i for i, t in enumerate(fs.tags)}
    lix = {ln: i for i, ln in enumerate(lines)}
    t_idx = np.array([-1] + [tix.get(c, -1) for c in tag_cats], np.int64)
    l_idx = np.array([-1] + [lix.get(c, -1) for c in line_cats], np.int64)
    klut = l_idx[:, None] * T + t_idx[None, :]
    klut[(l_idx[:, None] < 0) | (t_idx[None, :] < 0)] = -1
    return klut.ravel()


def _same_code_dtype(tc: np.ndarray, lc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both int8 (the usual categorical codes, used in place) or both int32: the kernels are
    compiled for these two layouts only, so a new dtype never costs a compile at run time."""
    if tc.dtype == np.int8 and lc.dtype == np.int8:
        return tc, lc
    return tc.astype(np.int32, copy=False), lc.astype(np.int32, copy=False)


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
_REQUIRED_PART_COLS = ("line_id", "serial", "cycle_start", "cycle_end")


@dataclass
class _Rows:
    """The sample frame as kernel inputs: views of its columns where the dtypes allow (no copy)."""

    tcodes: np.ndarray
    lcodes: np.ndarray
    n_tc1: int  # tag codes + 1 (row stride of the key lookup table)
    klut: np.ndarray
    ts: np.ndarray
    val: np.ndarray
    status: np.ndarray


def _rows(fs: FeatureSet, samples: pd.DataFrame, lines: list[str]) -> _Rows:
    missing = [c for c in _REQUIRED_SAMPLE_COLS if c not in samples.columns]
    if missing:
        raise FeatureInputError(
            f"samples frame lacks columns {missing}; expected {list(_REQUIRED_SAMPLE_COLS)}"
        )
    tc, tcats = _codes(samples["tag"])
    lc, lcats = _codes(samples["line_id"])
    tc, lc = _same_code_dtype(tc, lc)
    return _Rows(tc, lc, len(tcats) + 1, _key_lut(fs, tcats, lcats, lines), to_ns(samples["ts"]),
                 samples["value"].to_numpy(dtype=np.float64),
                 samples["status"].to_numpy(dtype=np.uint32))


def _n_threads(parallel: bool, n_rows: int) -> int:
    if not parallel or n_rows < 200_000:  # below that, waking the thread pool costs more than it saves
        return 1
    import numba

    return int(numba.get_num_threads())


def _regroup(fs: FeatureSet, rows: _Rows, lines: list[str], parallel: bool) -> SampleBlock:
    """Counting sort of the rows by key (one scatter of ts/value/status), then a stable sort of
    the groups whose ts is not ascending; counts duplicates (first in input order wins)."""
    n_keys = len(lines) * len(fs.tags)
    ts, val, status, start, end, other, nat = K.group_scatter(
        rows.tcodes, rows.lcodes, rows.n_tc1, rows.klut, n_keys, _n_threads(parallel, len(rows.ts)),
        rows.ts, rows.val, rows.status)
    resorted = int(K.sort_groups(ts, val, status, start, end))
    counters = {"rows_in": int(len(rows.ts)), "rows_other_tags": int(other),
                "rows_nat_ts": int(nat), "groups_resorted": resorted,
                "duplicates": int(K.count_duplicates(ts, start, end))}
    return SampleBlock(lines, ts, val, status, start, end, counters)


def _log_counters(counters: Mapping[str, int]) -> None:
    if counters.get("rows_nat_ts"):
        logger.warning("features: %d samples without a timestamp ignored", counters["rows_nat_ts"])
    if counters.get("duplicates"):
        logger.info("features: %d samples with a duplicated (tag, ts) skipped (first wins)",
                    counters["duplicates"])


def prepare_samples(fs: FeatureSet, samples: pd.DataFrame, lines: list[str]) -> SampleBlock:
    """Normalise a long sample frame for the kernels, regrouped by (line, tag) and sorted by ts.
    Rows of other tags/lines, and rows without a timestamp, are left out (counted).

    Sorting is stable: for duplicated (line, tag, ts) the first row in input order wins, later ones
    are counted in counters['duplicates'] and skipped by the kernel. `compute_batch` only takes
    this path when it must (see there); it costs one copy of the sample arrays."""
    block = _regroup(fs, _rows(fs, samples, lines), lines, parallel=True)
    _log_counters(block.counters)
    return block


@dataclass
class _Parts:
    """Per part: line index (-1: line without samples), base key, window bounds, empty cycle."""

    line_idx: np.ndarray
    part_key: np.ndarray
    wlo: np.ndarray
    whi: np.ndarray
    empty: np.ndarray


def _parts(fs: FeatureSet, parts: pd.DataFrame, lines: list[str]) -> _Parts:
    missing = [c for c in _REQUIRED_PART_COLS if c not in parts.columns]
    if missing:
        raise FeatureInputError(f"parts frame lacks columns {missing}; expected {list(_REQUIRED_PART_COLS)} + context")
    plan = plan_for(fs)
    T = len(fs.tags)
    P = len(parts)
    lix = {ln: i for i, ln in enumerate(lines)}
    line_idx = np.fromiter((lix.get(str(x), -1) for x in parts["line_id"]), np.int64, count=P)
    part_key = np.where(line_idx >= 0, line_idx * T, -1).astype(np.int64)
    cs = to_ns(parts["cycle_start"])
    ce = to_ns(parts["cycle_end"])
    empty = (cs == _NAT) | (ce == _NAT) | ~(ce > cs)
    wlo, whi = window_bounds(plan, np.where(empty, 0, cs), np.where(empty, 0, ce))
    return _Parts(line_idx, part_key, wlo, whi, empty)


def _empty_stats(P: int, G: int) -> np.ndarray:
    """What window_stats writes for a window without samples: 0 good, 0 bad, NaN statistics."""
    stats = np.empty((P, G, N_KERNEL_COLS))
    stats[:, :, :2] = 0.0
    stats[:, :, 2:] = np.nan
    return stats


def _window_sequences(pp: _Parts, n_lines: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per (line, window): the parts whose window is not empty, sorted by start; None when two
    windows of one (line, window) overlap (then one pass over time-ordered rows cannot fill both)."""
    W = pp.wlo.shape[1]
    valid = (pp.wlo < pp.whi) & (pp.line_idx[:, None] >= 0)
    p_idx, w_idx = np.nonzero(valid)
    seg = pp.line_idx[p_idx] * W + w_idx
    lo = pp.wlo[p_idx, w_idx]
    order = np.lexsort((lo, seg))
    p_idx, w_idx, seg, lo = p_idx[order], w_idx[order], seg[order], lo[order]
    hi = pp.whi[p_idx, w_idx]
    same = seg[1:] == seg[:-1]
    if (same & (hi[:-1] > lo[1:])).any():
        return None
    seq_ptr = np.searchsorted(seg, np.arange(n_lines * W + 1)).astype(np.int64)
    return seq_ptr, p_idx.astype(np.int64)


def _time_splits(rows: _Rows, pp: _Parts, n_workers: int) -> np.ndarray | None:
    """Row bounds [0, r1, ..., n] giving each worker a time slice of the rows, cut at instants no
    part window spans (so no window gets samples from two workers), or None when the rows are not
    in global time order around the cuts (e.g. grouped by tag) or no such instant exists."""
    n = len(rows.ts)
    valid = pp.wlo < pp.whi
    lo, hi = pp.wlo[valid], pp.whi[valid]
    if lo.size == 0:
        return None
    o = np.argsort(lo, kind="stable")
    lo, hi = lo[o], np.maximum.accumulate(hi[o])
    gaps = hi[:-1][lo[1:] >= hi[:-1]]  # instants between windows, over all lines and windows
    if gaps.size == 0:
        return None
    cuts = [0]
    probe = 256
    for c in range(1, n_workers):
        target = rows.ts[n * c // n_workers]
        cut_t = gaps[min(int(np.searchsorted(gaps, target)), gaps.size - 1)]
        r = int(np.searchsorted(rows.ts, cut_t, side="right"))  # meaningful for time-ordered rows
        left, right = rows.ts[max(0, r - probe):r], rows.ts[r:r + probe]
        if r <= cuts[-1] + n // (4 * n_workers) or r >= n - n // (4 * n_workers):
            return None
        if (left.size and left.max() > cut_t) or (right.size and right.min() <= cut_t):
            return None
        cuts.append(r)
    cuts.append(n)
    return np.asarray(cuts, np.int64)


def _split_ok(fs: FeatureSet, pp: _Parts, seq_ptr: np.ndarray, seq_part: np.ndarray,
              n_tags: int, first_ts: np.ndarray, last_ts: np.ndarray) -> bool:
    """True when, per key, each worker's samples come strictly after the previous worker's and
    no window holds samples of two workers (so every window was computed by one worker alone)."""
    plan = plan_for(fs)
    W = pp.wlo.shape[1]
    for key in range(first_ts.shape[1]):
        has = np.nonzero(first_ts[:, key] != _NAT)[0]
        for a, b in zip(has[:-1], has[1:]):
            x_end, x_next = last_ts[a, key], first_ts[b, key]
            if not x_end < x_next:
                return False
            ln, t = divmod(key, n_tags)
            for w in {int(plan.g_win[j]) for j in np.nonzero(plan.g_tag == t)[0]}:
                seq = seq_part[seq_ptr[ln * W + w]:seq_ptr[ln * W + w + 1]]
                wl, wh = pp.wlo[seq, w], pp.whi[seq, w]
                i = int(np.searchsorted(wh, x_end))  # first window ending at or after x_end
                if i < seq.size and wl[i] < x_end and wl[i] < x_next <= wh[i]:
                    return False
    return True


def _fused(fs: FeatureSet, rows: _Rows, pp: _Parts, lines: list[str], key_lo: np.ndarray,
           key_hi: np.ndarray, stats: np.ndarray, parallel: bool) -> dict[str, int] | None:
    """Fill `stats` in one pass over the rows as they are (no regrouping copy); None when the rows
    or the parts do not allow it (a key's ts going backwards, overlapping windows)."""
    seqs = _window_sequences(pp, len(lines))
    if seqs is None:
        logger.debug("features: overlapping part windows on a line: regrouping the samples")
        return None
    seq_ptr, seq_part = seqs
    plan = plan_for(fs)
    T = len(fs.tags)
    n_keys = len(lines) * T
    n = len(rows.ts)
    klut = np.where(rows.klut >= 0, rows.klut, n_keys)
    order = np.argsort(plan.g_tag, kind="stable")
    tg_ptr = np.searchsorted(plan.g_tag[order], np.arange(T + 1)).astype(np.int64)
    # per-key buckets of `cap` samples (a power of two, 16..512): all buckets stay in L2 (~20 B a
    # sample), small enough that running a full bucket finds it in L1
    cap = 512
    while cap > 16 and 20 * cap * (n_keys + 1) > (1 << 19):
        cap //= 2
    cuts = None
    n_workers = _n_threads(parallel, n)
    if n_workers > 1:
        cuts = _time_splits(rows, pp, n_workers)
    for attempt in ("split", "one worker"):
        if attempt == "split" and cuts is None:
            continue
        bounds = cuts if attempt == "split" else np.asarray([0, n], np.int64)
        nw = len(bounds) - 1
        counts = np.zeros((nw, 4), np.int64)
        first_ts = np.full((nw, n_keys), _NAT, np.int64)
        last_ts = np.full((nw, n_keys), _NAT, np.int64)
        K.fused_stats(rows.tcodes, rows.lcodes, rows.n_tc1, klut, T, cap, rows.ts, rows.val,
                      rows.status, bounds[:-1].copy(), bounds[1:].copy(), tg_ptr,
                      order.astype(np.int64), plan.g_tag, plan.g_win, plan.g_alpha, plan.g_min,
                      seq_ptr, seq_part, pp.wlo, pp.whi, key_lo, key_hi, np.uint32(fs.bad_mask),
                      stats, counts, first_ts, last_ts)
        if counts[:, 3].any():
            logger.debug("features: samples of a tag out of time order: regrouping and sorting them")
            return None
        if nw == 1 or _split_ok(fs, pp, seq_ptr, seq_part, T, first_ts, last_ts):
            break
        logger.debug("features: time slices of the rows overlap a window: one worker instead")
        stats[:, :, :2] = 0.0
        stats[:, :, 2:] = np.nan
    return {"rows_in": n, "rows_other_tags": int(counts[:, 0].sum()),
            "rows_nat_ts": int(counts[:, 1].sum()), "groups_resorted": 0,
            "duplicates": int(counts[:, 2].sum()), "workers": nw}


def _vectors(fs: FeatureSet, stats: np.ndarray, parts: pd.DataFrame, pp: _Parts,
             key_lo: np.ndarray, key_hi: np.ndarray, baseline: Any) -> pd.DataFrame:
    """Kernel statistics [P, G, 13] -> the feature frame indexed by (line_id, serial)."""
    plan = plan_for(fs)
    gk = np.where(pp.part_key[:, None] >= 0, pp.part_key[:, None] + plan.g_tag[None, :], 0)
    lim = (np.where(pp.part_key[:, None] >= 0, key_lo[gk], np.nan),
           np.where(pp.part_key[:, None] >= 0, key_hi[gk], np.nan))
    context = {c.name: parts[c.name].to_numpy() for c in fs.context if c.name in parts.columns}
    if baseline is not None:
        for c in list(getattr(baseline, "numeric_inputs_", [])) + list(getattr(baseline, "categories_", {})):
            if c in parts.columns and c not in context:
                context[c] = parts[c].to_numpy()
    X, reasons = assemble(fs, stats, lim, context, baseline, empty_cycle=pp.empty)
    idx = pd.MultiIndex.from_arrays(
        [parts["line_id"].astype(str).to_numpy(), parts["serial"].astype(str).to_numpy()],
        names=["line_id", "serial"],
    )
    out = pd.DataFrame(X, index=idx, columns=list(fs.feature_names), copy=False)  # X is ours
    out["reason"] = pd.Series(reasons, index=idx, dtype=object)
    out.attrs["feature_set_version"] = fs.version
    return out


def compute_prepared(
    fs: FeatureSet,
    block: SampleBlock,
    parts: pd.DataFrame,
    *,
    tags: Any = None,
    baseline: Any = None,
    parallel: bool = True,
) -> pd.DataFrame:
    """Features of `parts` from a prepared (regrouped) SampleBlock; see compute_batch."""
    pp = _parts(fs, parts, block.lines)
    plan = plan_for(fs)
    key_lo, key_hi = limits_table(fs, block.lines, tags)
    stats = np.empty((len(parts), len(fs.groups), N_KERNEL_COLS))
    fn = K.batch_stats if parallel else K.batch_stats_serial
    fn(block.ts, block.val, block.status, block.grp_start, block.grp_end, pp.part_key, pp.wlo, pp.whi,
       plan.g_tag, plan.g_win, plan.g_alpha, plan.g_min, key_lo, key_hi,
       np.uint32(fs.bad_mask), stats)
    out = _vectors(fs, stats, parts, pp, key_lo, key_hi, baseline)
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

    samples: long frame line_id, tag, ts (datetime64 UTC or float epoch s), value, status (uint32),
    in any row order; pass `tag` and `line_id` as category dtype (read in place, no string work).
    parts: line_id, serial, cycle_start, cycle_end (+ context columns named as in the spec).
    tags: tag catalog (DataFrame name, low_limit, high_limit[, line_id]) or {tag: (low, high)};
    when given, tags of the spec missing from it raise UnknownTagError.
    baseline: a fitted ContextBaseline, or None (dev_baseline features NaN with a reason).

    Rows in time order per (line, tag) - interleaved as a subscription delivers them, or grouped as
    the store returns them - are computed in one pass without copying them; otherwise (or when the
    windows of one line overlap) they are regrouped and sorted first. Both give the same numbers.
    `attrs`: feature_set_version, counters (rows_in, rows_other_tags, rows_nat_ts, duplicates,
    groups_resorted), path ("one-pass" or "regrouped") and stages_s (seconds per stage).
    """
    t0 = time.perf_counter()
    names = _catalog_names(tags)
    if names is not None:
        fs.check_tags(names)
    lines = sorted({str(x) for x in parts["line_id"]}) if "line_id" in parts.columns else []
    rows = _rows(fs, samples, lines)
    pp = _parts(fs, parts, lines)
    key_lo, key_hi = limits_table(fs, lines, tags)
    stats = _empty_stats(len(parts), len(fs.groups))
    t1 = time.perf_counter()
    counters = _fused(fs, rows, pp, lines, key_lo, key_hi, stats, parallel)
    path = "one-pass"
    if counters is None:
        path = "regrouped"
        block = _regroup(fs, rows, lines, parallel)
        counters = block.counters
        stats = _empty_stats(len(parts), len(fs.groups))
        plan = plan_for(fs)
        fn = K.batch_stats if parallel else K.batch_stats_serial
        fn(block.ts, block.val, block.status, block.grp_start, block.grp_end, pp.part_key, pp.wlo,
           pp.whi, plan.g_tag, plan.g_win, plan.g_alpha, plan.g_min, key_lo, key_hi,
           np.uint32(fs.bad_mask), stats)
    _log_counters(counters)
    t2 = time.perf_counter()
    out = _vectors(fs, stats, parts, pp, key_lo, key_hi, baseline)
    t3 = time.perf_counter()
    out.attrs["counters"] = counters
    out.attrs["path"] = path
    out.attrs["stages_s"] = {"inputs": t1 - t0, "kernels": t2 - t1, "vectors": t3 - t2}
    return out
