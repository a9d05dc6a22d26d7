"""Turn kernel output into feature vectors: shared by the batch and the streaming path.

Owns the mapping from the kernel's per-(part, group) statistic rows to the feature-set's columns,
context encoding, deviation from the context baseline, derived features and the `reason` text.
NumPy only (no pandas; window bounds call the Numba kernel module, imported when first used).
Must not import connectors/, models/, ui/ or simulators/.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np

from pq.features.spec import K_N_BAD, K_N_GOOD, N_KERNEL_COLS, STATS, FeatureSet, WindowDef

_NS = 1_000_000_000


@dataclass(frozen=True)
class Plan:
    """Index arrays compiled once per feature set."""

    tags: tuple[str, ...]
    windows: tuple[WindowDef, ...]
    g_tag: np.ndarray  # int64[G]
    g_win: np.ndarray  # int64[G]
    g_alpha: np.ndarray  # float64[G]
    g_min: np.ndarray  # int64[G]
    kern_dst: np.ndarray  # feature column indices filled straight from the kernel
    kern_src: np.ndarray  # flat (group * N_KERNEL_COLS + col) source indices
    dev_dst: np.ndarray  # feature index of each dev_baseline feature
    dev_mean_src: np.ndarray  # flat kernel index of that group's mean
    dev_target: tuple[str, ...]  # baseline target name (group prefix) of each dev feature
    dev_group: np.ndarray  # group index of each dev feature
    n_features: int
    labels: tuple[str, ...]  # group labels for reasons
    need2: np.ndarray  # bool[G]: a statistic needing 2 samples while min_good < 2
    need2_text: tuple[str, ...]
    need_lo: np.ndarray  # bool[G]: time_below requested
    need_hi: np.ndarray  # bool[G]: time_above requested
    ctx_start: int
    index: dict  # feature name -> column
    w_start_frac: np.ndarray  # float64[W] window bound = cycle_start + frac * duration + offset
    w_start_off: np.ndarray  # float64[W] offsets in ns
    w_end_frac: np.ndarray
    w_end_off: np.ndarray


@lru_cache(maxsize=32)
def plan_for(fs: FeatureSet) -> Plan:
    tags = fs.tags
    wins = fs.window_list
    tix = {t: i for i, t in enumerate(tags)}
    wix = {w.name: i for i, w in enumerate(wins)}
    names = fs.feature_names
    fix = {n: i for i, n in enumerate(names)}
    kd, ks, dd, ds, dt, dg = [], [], [], [], [], []
    for j, g in enumerate(fs.groups):
        for s in g.stats:
            sd = STATS[s]
            if sd.col >= 0:
                kd.append(fix[g.feature_name(s)])
                ks.append(j * N_KERNEL_COLS + sd.col)
            else:  # dev_baseline
                dd.append(fix[g.feature_name(s)])
                ds.append(j * N_KERNEL_COLS + STATS["mean"].col)
                dt.append(g.prefix)
                dg.append(j)
        kd += [fix[g.n_good_name], fix[g.n_bad_name]]
        ks += [j * N_KERNEL_COLS + K_N_GOOD, j * N_KERNEL_COLS + K_N_BAD]
    i64 = lambda x: np.asarray(x, np.int64)  # noqa: E731
    return Plan(
        tags=tags,
        windows=wins,
        g_tag=i64([tix[g.tag] for g in fs.groups]),
        g_win=i64([wix[g.window] for g in fs.groups]),
        g_alpha=np.asarray([g.ewma_alpha for g in fs.groups], np.float64),
        g_min=i64([g.min_good for g in fs.groups]),
        kern_dst=i64(kd),
        kern_src=i64(ks),
        dev_dst=i64(dd),
        dev_mean_src=i64(ds),
        dev_target=tuple(dt),
        dev_group=i64(dg),
        n_features=len(names),
        labels=tuple(g.label for g in fs.groups),
        need2=np.asarray([g.min_good < 2 and any(STATS[s].min_n >= 2 for s in g.stats)
                          for g in fs.groups], bool),
        need2_text=tuple(", ".join(s for s in g.stats if STATS[s].min_n >= 2) for g in fs.groups),
        need_lo=np.asarray([any(STATS[s].limit == "low" for s in g.stats) for g in fs.groups], bool),
        need_hi=np.asarray([any(STATS[s].limit == "high" for s in g.stats) for g in fs.groups], bool),
        ctx_start=len(fs.group_feature_names),
        index=fix,
        w_start_frac=np.asarray([w.start_frac for w in wins], np.float64),
        w_start_off=np.asarray([w.start_offset_s * _NS for w in wins], np.float64),
        w_end_frac=np.asarray([w.end_frac for w in wins], np.float64),
        w_end_off=np.asarray([w.end_offset_s * _NS for w in wins], np.float64),
    )


def window_bounds(plan: Plan, cs_ns: np.ndarray, ce_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[P, W] int64 window bounds: cycle_start + frac * duration + offset, clipped to the cycle.

    Parts whose cycle is empty or unknown (cycle_end <= cycle_start) get empty windows. Computed
    by `_kernels.window_bounds`, the code the streaming kernel uses too.
    """
    from pq.features import _kernels as K

    cs = np.ascontiguousarray(cs_ns, np.int64)
    ce = np.ascontiguousarray(ce_ns, np.int64)
    P, W = cs.shape[0], len(plan.windows)
    lo = np.empty((P, W), np.int64)
    hi = np.empty((P, W), np.int64)
    K.window_bounds(cs, ce, plan.w_start_frac, plan.w_start_off, plan.w_end_frac, plan.w_end_off,
                    lo, hi)
    return lo, hi


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def encode_context(
    fs: FeatureSet, columns: Mapping[str, Any], n: int
) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]:
    """Context features [n, C] and (mask, reason) pairs. Missing -> NaN, unknown category -> NaN."""
    names = fs.context_feature_names
    out = np.full((n, len(names)), np.nan)
    issues: list[tuple[np.ndarray, str]] = []
    c = 0
    for cf in fs.context:
        width = len(cf.feature_names)
        col = columns.get(cf.name)
        if col is None:
            issues.append((np.ones(n, bool), f"ctx {cf.name}: missing"))
            c += width
            continue
        if cf.kind == "numeric":
            v = _to_float(col, n)
            out[:, c] = v
            miss = ~np.isfinite(v)
            if miss.any():
                out[miss, c] = np.nan
                issues.append((miss, f"ctx {cf.name}: missing or non-finite"))
        else:
            lut = {k: i for i, k in enumerate(cf.categories)}
            vals = _to_obj(col, n)
            codes = np.fromiter(
                (lut.get(_cat_key(x), -1) if not _is_missing(x) else -2 for x in vals),
                np.int64, count=n,
            )
            ok = codes >= 0
            if cf.encoding == "codes":
                out[ok, c] = codes[ok]
            else:
                block = np.zeros((n, width))
                block[np.nonzero(ok)[0], codes[ok]] = 1.0
                block[~ok] = np.nan
                out[:, c : c + width] = block
            for bad_code, text in ((-2, "missing"), (-1, "unknown value")):
                m = codes == bad_code
                if m.any():
                    if bad_code == -1:
                        for val in sorted({str(x) for x in vals[m]}):
                            mm = m & np.fromiter((str(x) == val for x in vals), bool, count=n)
                            issues.append((mm, f"ctx {cf.name}: unknown value {val!r}"))
                    else:
                        issues.append((m, f"ctx {cf.name}: {text}"))
        c += width
    return out, issues


def _cat_key(x: Any) -> str:
    return str(x)


def _is_missing(x: Any) -> bool:
    if x is None:
        return True
    if isinstance(x, float) and math.isnan(x):
        return True
    try:  # pandas NA / NaT without importing pandas
        return bool(x != x)
    except (TypeError, ValueError):
        return False


def _to_float(col: Any, n: int) -> np.ndarray:
    arr = np.asarray(col)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    if arr.dtype.kind in "fiub":
        return arr.astype(np.float64)
    out = np.full(n, np.nan)
    for i, x in enumerate(arr):
        try:
            out[i] = float(x) if not _is_missing(x) else np.nan
        except (TypeError, ValueError):
            out[i] = np.nan
    return out


def _to_obj(col: Any, n: int) -> np.ndarray:
    arr = np.asarray(col, dtype=object)
    if arr.ndim == 0:
        arr = np.full(n, arr.item(), dtype=object)
    return arr


class _Reasons:
    """Per-part reason texts, joined with "; " in the order they were added.

    Kept as one object array of str (str is not tracked by the garbage collector) instead of one
    list per part: thousands of small lists per batch made the cyclic GC run full collections
    over the whole heap (tens of ms), and each streaming vector allocated one more."""

    __slots__ = ("text",)

    def __init__(self, n: int) -> None:
        self.text = np.full(n, "", dtype=object)

    def add(self, p: int, text: str) -> None:
        cur = self.text[p]
        self.text[p] = f"{cur}; {text}" if cur else text

    def add_mask(self, mask: np.ndarray, text: str) -> None:
        idx = np.nonzero(mask)[0]
        if idx.size < 8:
            for p in idx:
                self.add(p, text)
            return
        cur = self.text[idx]
        self.text[idx] = np.where(cur != "", cur + ("; " + text), text)

    def add_all(self, text: str) -> None:
        t = self.text
        has = t != ""
        t[~has] = text
        if has.any():
            t[has] = t[has] + ("; " + text)

    def strings(self) -> list[str]:
        return self.text.tolist()


def _sample_reasons(plan: Any, stats: np.ndarray, skip: np.ndarray, key_lim: tuple[np.ndarray, np.ndarray] | None,
                    reasons: _Reasons) -> None:
    """Too few good samples, per-statistic minimums, missing limits (vectorised over groups)."""
    NG = stats[:, :, K_N_GOOD]
    NB = stats[:, :, K_N_BAD]
    live = ~skip[:, None]
    few = (NG < plan.g_min[None, :]) & live
    if few.any():
        for p, j in zip(*np.nonzero(few)):
            ng, nb = int(NG[p, j]), int(NB[p, j])
            extra = f"; {nb} excluded" if nb else ""
            reasons.add(p, f"{plan.labels[j]}: {_plural(ng, 'good sample')} "
                           f"(needs {int(plan.g_min[j])}{extra})")
    # per group (column) over all parts at once: a part's texts still come in group order
    if plan.need2.any():
        one = (NG == 1) & plan.need2[None, :] & live
        for j in np.nonzero(one.any(axis=0))[0]:
            reasons.add_mask(one[:, j], f"{plan.labels[j]}: {plan.need2_text[j]} need 2 good samples, got 1")
    if key_lim is not None:
        enough = (NG >= plan.g_min[None, :]) & live
        for lim, need, stat in ((key_lim[0], plan.need_lo, "time_below"),
                                (key_lim[1], plan.need_hi, "time_above")):
            if need.any():
                m = np.isnan(lim) & need[None, :] & enough
                side = "low" if stat == "time_below" else "high"
                for j in np.nonzero(m.any(axis=0))[0]:
                    reasons.add_mask(m[:, j], f"{plan.labels[j]}: no {side} limit for {stat}")


def _deviations(plan: Any, X: np.ndarray, flat: np.ndarray, baseline: Any, context: Mapping[str, Any], P: int,
                reasons: _Reasons) -> None:
    """Each baselined signal's window mean minus what the context baseline expects today."""
    means = flat[:, plan.dev_mean_src]
    if baseline is None:
        X[:, plan.dev_dst] = np.nan
        reasons.add_all("no context baseline fitted: dev_baseline features are NaN")
        return
    pred, why = baseline.predict_matrix(plan.dev_target, context, P)
    X[:, plan.dev_dst] = means - pred
    for mask, text in why:
        reasons.add_mask(mask, text)


def _derived(fs: FeatureSet, plan: Any, X: np.ndarray, P: int, reasons: _Reasons) -> None:
    """Derived features from the columns already filled; a non-finite result from finite inputs is said."""
    fix = plan.index
    for d in fs.derived:
        refs = d.refs
        cols = {r: X[:, fix[r]] for r in refs}
        v = np.asarray(d.evaluate(cols), np.float64)
        if v.ndim == 0:
            v = np.full(P, float(v))
        inputs_ok = np.ones(P, bool)
        for r in refs:
            inputs_ok &= np.isfinite(cols[r])
        nonfinite = ~np.isfinite(v)
        v = np.where(nonfinite, np.nan, v)
        X[:, fix[d.name]] = v
        reasons.add_mask(nonfinite & inputs_ok, f"{d.name}: non-finite result")


def assemble(
    fs: FeatureSet,
    stats: np.ndarray,
    key_lim: tuple[np.ndarray, np.ndarray] | None,
    context: Mapping[str, Any],
    baseline: Any,
    *,
    empty_cycle: np.ndarray | None = None,
    group_invalid: Sequence[tuple[int, np.ndarray, str]] = (),
) -> tuple[np.ndarray, list[str]]:
    """Feature matrix [P, F] in fs.feature_names order and one reason string per part.

    stats: kernel output [P, G, 13]; key_lim: per part and group the (low, high) limits used
    ([P, G] each) or None; group_invalid: (group, mask over parts, reason) - those groups' stats
    are blanked (streaming uses it for evicted samples).
    """
    plan = plan_for(fs)
    P, G = stats.shape[0], stats.shape[1]
    reasons = _Reasons(P)
    for j, mask, text in group_invalid:
        if mask.any():
            stats[mask, j, 2:] = np.nan
            reasons.add_mask(mask, f"{fs.groups[j].label}: {text}")
    flat = stats.reshape(P, G * N_KERNEL_COLS)
    X = np.full((P, plan.n_features), np.nan)
    X[:, plan.kern_dst] = flat[:, plan.kern_src]

    if empty_cycle is not None and empty_cycle.any():
        reasons.add_mask(empty_cycle, "empty cycle window (cycle_end <= cycle_start)")
    skip = empty_cycle if empty_cycle is not None else np.zeros(P, bool)
    _sample_reasons(plan, stats, skip, key_lim, reasons)
    if fs.context:
        c0 = plan.ctx_start
        C, issues = encode_context(fs, context, P)
        X[:, c0 : c0 + C.shape[1]] = C
        for mask, text in issues:
            reasons.add_mask(mask, text)
    if plan.dev_dst.size:
        _deviations(plan, X, flat, baseline, context, P, reasons)
    if fs.derived:
        _derived(fs, plan, X, P, reasons)
    return X, reasons.strings()
