"""Synthetic raw-sample histories for the feature benchmark and tests (no simulator needed).

Owns `synthetic_sample_history` (long samples + parts + tag catalog with the awkward cases real lines
produce when asked: bad and uncertain status, NaN/Inf values, gaps, duplicated and unsorted rows,
windows with one or no sample) and `synthetic_feature_set` (every statistic over the cycle plus a
last-5-s window, context and a derived feature). Needs no simulator: it exercises the feature code alone.

Example::

    samples, parts, tags = synthetic_sample_history(n_parts=1000, n_signals=20, samples_per_part=300)
    fs = synthetic_feature_set(20)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pq.features.spec import FeatureSet, parse_feature_set

__all__ = ["synthetic_sample_history", "synthetic_feature_set"]

BAD = np.uint32(0x80000000)
UNCERTAIN = np.uint32(0x40000000)


def synthetic_feature_set(n_signals: int = 20, version: str = "synthetic-1") -> FeatureSet:
    tags = [f"sig_{i:02d}" for i in range(n_signals)]
    return parse_feature_set({
        "version": version,
        "min_good": 3,
        "ewma_alpha": 0.2,
        "windows": {"last5s": {"last_s": 5.0}},
        "signals": [
            {"tags": tags},
            {"tags": tags[: max(1, n_signals // 4)], "window": "last5s",
             "stats": ["mean", "std", "slope", "min", "max"]},
        ],
        "context": [
            {"name": "ambient_temp_c"},
            {"name": "shift", "kind": "category", "categories": ["A", "B", "C"]},
        ],
        "derived": [{"name": "s0_x_s1", "expr": f"{tags[0]}.mean * {tags[min(1, n_signals - 1)]}.max"}],
    })


def synthetic_sample_history(
    n_parts: int = 200,
    n_signals: int = 20,
    samples_per_part: int = 300,
    *,
    n_lines: int = 1,
    cycle_s: float = 30.0,
    seed: int = 0,
    messy: bool = False,
    order: str = "time",
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(samples, parts, tags). Samples are on a jittered grid, `samples_per_part` per signal and
    cycle. `messy` adds bad/uncertain status, NaN/Inf, gaps, duplicates, single-sample and empty
    windows. `order`: "time" (interleaved tags, as a subscription delivers them), "tag" (grouped
    by line, tag, ts, as a store query returns them) or "shuffled"."""
    rng = np.random.default_rng(seed)
    t0 = np.datetime64("2025-01-06T06:00:00", "ns").astype(np.int64)
    tags = [f"sig_{i:02d}" for i in range(n_signals)]
    lines = [f"line-{i + 1}" for i in range(n_lines)]
    per_line = [n_parts // n_lines + (1 if i < n_parts % n_lines else 0) for i in range(n_lines)]
    parts_rows = []
    frames = []
    for li, line in enumerate(lines):
        n = per_line[li]
        dur = cycle_s * (1.0 + 0.05 * rng.standard_normal(n)).clip(0.8, 1.2)
        ends = t0 + np.cumsum(np.rint(dur * 1e9).astype(np.int64)) + 500_000
        starts = np.concatenate([[t0 + 500_000], ends[:-1]])
        amb = 20 + 6 * np.sin(np.arange(n) / 300.0) + rng.standard_normal(n)
        shift = np.array(["A", "B", "C"])[(np.arange(n) // max(1, n // 9)) % 3]
        for k in range(n):
            parts_rows.append((line, f"L{li + 1}-{k:07d}", starts[k], ends[k], amb[k], shift[k]))
        span = ends[-1] - starts[0]
        m = samples_per_part * n
        step = span / m
        base = starts[0] + (np.arange(m) * step).astype(np.int64)
        for ti, tag in enumerate(tags):
            ts = base + rng.integers(0, max(1, int(step * 0.3)), m)
            level = 100.0 + 10 * ti + 0.3 * np.interp(ts, starts, amb)
            val = level + rng.standard_normal(m) * (1 + ti % 3) + 5 * np.sin(ts / 7e9)
            st = np.zeros(m, np.uint32)
            if messy:
                r = rng.random(m)
                st[r < 0.02] = BAD | np.uint32(0x003C0000)
                st[(r >= 0.02) & (r < 0.03)] = UNCERTAIN
                val[(r >= 0.03) & (r < 0.035)] = np.nan
                val[(r >= 0.035) & (r < 0.037)] = np.inf
                keep = np.ones(m, bool)
                # gaps: drop whole stretches; every 7th part of this tag keeps a single sample,
                # every 11th keeps none
                pid = np.searchsorted(ends, ts, side="left")
                keep &= ~((pid % 7 == ti % 7) & (np.arange(m) % samples_per_part != 5))
                keep &= ~(pid % 11 == (ti + 3) % 11)
                gap0 = rng.integers(0, m)
                keep[gap0 : gap0 + samples_per_part // 2] = False
                ts, val, st = ts[keep], val[keep], st[keep]
                # duplicated timestamps with a different value (first must win)
                dup = rng.random(ts.size) < 0.01
                ts = np.concatenate([ts, ts[dup]])
                val = np.concatenate([val, val[dup] + 1000.0])
                st = np.concatenate([st, st[dup]])
            frames.append(pd.DataFrame({"line_id": line, "tag": tag, "ts": ts, "value": val, "status": st}))
    samples = pd.concat(frames, ignore_index=True)
    if messy:  # the duplicate rows were appended after the originals: keep that relative order
        samples = samples.iloc[np.argsort(samples["ts"].to_numpy(), kind="stable")]
    if order == "time":
        samples = samples.iloc[np.argsort(samples["ts"].to_numpy(), kind="stable")]
    elif order == "tag":
        samples = samples.sort_values(["line_id", "tag", "ts"], kind="stable")
    elif order == "shuffled":
        # shuffle but keep duplicates' relative order so "first wins" stays well defined
        key = rng.random(len(samples))
        samples = samples.assign(_k=key).sort_values("_k", kind="stable").drop(columns="_k")
    samples = samples.reset_index(drop=True)
    samples["ts"] = samples["ts"].astype("datetime64[ns]").dt.tz_localize("UTC")
    samples["status"] = samples["status"].astype(np.uint32)
    parts = pd.DataFrame(parts_rows, columns=["line_id", "serial", "cycle_start", "cycle_end",
                                              "ambient_temp_c", "shift"])
    for c in ("cycle_start", "cycle_end"):
        parts[c] = parts[c].astype("datetime64[ns]").dt.tz_localize("UTC")
    lim = []
    for line in lines:
        for ti, tag in enumerate(tags):
            lvl = 100.0 + 10 * ti + 6.0
            lim.append((line, tag, lvl - 4.0 if ti % 5 else np.nan, lvl + 4.0))
    tags_df = pd.DataFrame(lim, columns=["line_id", "name", "low_limit", "high_limit"])
    return samples, parts, tags_df
