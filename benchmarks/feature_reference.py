"""Straightforward pandas reference of a feature set: the parity oracle and the benchmark baseline.

Written the way a data scientist would (merge_asof to assign samples to parts, boolean filters
for sub-windows, groupby + agg / transform / ewm), independent of the Numba kernels; it shares only
the spec (and the baseline model and the derived-expression parser, which are not statistics).
Assumes the cycles of one line do not overlap (true on a real machine). Test and benchmark support,
not product code: it lives beside the suites, and the tests import it from here.

Example::

    ref = reference_features(fs, samples, parts, tags=tags_df)   # same layout as compute_batch
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pq.features.spec import STATS, FeatureSet

__all__ = ["reference_features"]


def _ns(s: pd.Series) -> pd.Series:
    if pd.api.types.is_float_dtype(s):
        return (s * 1e9).round().astype("int64")
    s = pd.to_datetime(s, utc=True)
    return s.dt.tz_localize(None).astype("datetime64[ns]").astype("int64")


def _limits(fs: FeatureSet, tags: Any) -> pd.DataFrame:
    rows = []
    if isinstance(tags, pd.DataFrame):
        t = tags.rename(columns={"name": "tag"})
        cols = [c for c in ("line_id", "tag", "low_limit", "high_limit") if c in t.columns]
        rows = t[cols].to_dict("records")
    elif isinstance(tags, dict):
        rows = [{"tag": k, "low_limit": v[0], "high_limit": v[1]} for k, v in tags.items()]
    df = pd.DataFrame(rows, columns=["line_id", "tag", "low_limit", "high_limit"])
    for tag, (lo, hi) in fs.limits.items():
        m = df["tag"] == tag
        if not m.any():
            df = pd.concat([df, pd.DataFrame([{"tag": tag}])], ignore_index=True)
            m = df["tag"] == tag
        if not np.isnan(lo):
            df.loc[m, "low_limit"] = lo
        if not np.isnan(hi):
            df.loc[m, "high_limit"] = hi
    return df


def reference_features(
    fs: FeatureSet, samples: pd.DataFrame, parts: pd.DataFrame, *, tags: Any = None,
    baseline: Any = None,
) -> pd.DataFrame:
    """Features of `parts` in the layout of compute_batch (without the reason column)."""
    parts = parts.reset_index(drop=True).copy()
    parts["part"] = np.arange(len(parts))
    parts["line_id"] = parts["line_id"].astype(str)
    parts["cs"] = _ns(parts["cycle_start"])
    parts["ce"] = _ns(parts["cycle_end"])
    dur = (parts["ce"] - parts["cs"]).astype(float)

    s = samples[["line_id", "tag", "ts", "value", "status"]].copy()
    s["line_id"] = s["line_id"].astype(str)
    s["tag"] = s["tag"].astype(str)
    s = s[s["tag"].isin(fs.tags)]
    s["ts"] = _ns(s["ts"])
    # duplicated (line, tag, ts): the first row in input order wins
    s = s.sort_values(["line_id", "tag", "ts"], kind="stable")
    s = s.drop_duplicates(["line_id", "tag", "ts"], keep="first")
    s["ok"] = ((s["status"].astype("int64") & fs.bad_mask) == 0) & np.isfinite(s["value"])

    # assign each sample to the part whose cycle (cs, ce] contains it
    s = s.sort_values("ts", kind="stable")
    p = parts[parts["ce"] > parts["cs"]].sort_values("cs")[["line_id", "part", "cs", "ce"]]
    m = pd.merge_asof(s, p, left_on="ts", right_on="cs", by="line_id",
                      allow_exact_matches=False, direction="backward")
    m = m[m["part"].notna() & (m["ts"] <= m["ce"])]
    m["part"] = m["part"].astype("int64")
    lim = _limits(fs, tags)
    if "line_id" in lim.columns and lim["line_id"].notna().any():
        m = m.merge(lim, on=["line_id", "tag"], how="left")
    else:
        m = m.merge(lim.drop(columns=["line_id"]).drop_duplicates("tag"), on="tag", how="left")

    out: dict[str, pd.Series] = {}
    for wname in dict.fromkeys(g.window for g in fs.groups):
        wd = fs.windows[wname]
        a = parts["cs"] + np.rint(wd.start_frac * dur + wd.start_offset_s * 1e9).astype("int64")
        b = parts["cs"] + np.rint(wd.end_frac * dur + wd.end_offset_s * 1e9).astype("int64")
        ws = a.clip(parts["cs"], parts["ce"])
        we = b.clip(parts["cs"], parts["ce"])
        w = m.assign(ws=ws.to_numpy()[m["part"]], we=we.to_numpy()[m["part"]])
        w = w[(w["ts"] > w["ws"]) & (w["ts"] <= w["we"])].sort_values(["part", "tag", "ts"])
        # hold time of each sample: until the next sample (any status) or the window end
        nxt = w.groupby(["part", "tag"])["ts"].shift(-1, fill_value=-1)
        w["hold_s"] = (np.where(nxt < 0, w["we"], nxt) - w["ts"]) / 1e9
        w["above"] = np.where(w["value"] > w["high_limit"], w["hold_s"], 0.0)
        w["below"] = np.where(w["value"] < w["low_limit"], w["hold_s"], 0.0)
        n_bad = (~w["ok"]).groupby([w["part"], w["tag"]]).sum()
        g = w[w["ok"]].copy()
        g["t"] = (g["ts"] - g.groupby(["part", "tag"])["ts"].transform("first")) / 1e9
        gb = g.groupby(["part", "tag"])
        agg = gb["value"].agg(["count", "mean", "std", "min", "max", "first", "last"])
        agg["range"] = agg["max"] - agg["min"]
        tc = g["t"] - gb["t"].transform("mean")
        xc = g["value"] - gb["value"].transform("mean")
        agg["slope"] = (tc * xc).groupby([g["part"], g["tag"]]).sum() / (tc * tc).groupby(
            [g["part"], g["tag"]]).sum()
        agg["time_above"] = gb["above"].sum()
        agg["time_below"] = gb["below"].sum()
        hl = gb[["high_limit", "low_limit"]].first()
        agg.loc[hl["high_limit"].isna(), "time_above"] = np.nan
        agg.loc[hl["low_limit"].isna(), "time_below"] = np.nan
        for grp in (x for x in fs.groups if x.window == wname):
            sel = g[g["tag"] == grp.tag]
            ew = sel.groupby("part")["value"].apply(
                lambda v, a=grp.ewma_alpha: v.ewm(alpha=a, adjust=False).mean().iloc[-1])
            a1 = agg.xs(grp.tag, level="tag") if grp.tag in agg.index.get_level_values("tag") \
                else pd.DataFrame(columns=agg.columns, dtype=float)
            a1 = a1.reindex(parts.index)
            a1["ewma"] = ew.reindex(parts.index)
            n_good = a1["count"].fillna(0)
            nb = n_bad.xs(grp.tag, level="tag") if grp.tag in n_bad.index.get_level_values("tag") \
                else pd.Series(dtype=float)
            few = n_good < grp.min_good
            for st in grp.stats:
                if st == "dev_baseline":
                    continue
                v = a1[st].astype(float).where(~few)
                if STATS[st].min_n >= 2:
                    v = v.where(n_good >= 2)
                out[grp.feature_name(st)] = v
            out[grp.n_good_name] = n_good.astype(float)
            out[grp.n_bad_name] = nb.reindex(parts.index).fillna(0).astype(float)
            if "dev_baseline" in grp.stats:
                out[grp.feature_name("dev_baseline")] = a1["mean"].astype(float).where(~few)

    # context
    for c in fs.context:
        col = parts[c.name] if c.name in parts.columns else pd.Series(np.nan, index=parts.index)
        if c.kind == "numeric":
            v = pd.to_numeric(col, errors="coerce").astype(float)
            out[f"ctx__{c.name}"] = v.where(np.isfinite(v))
        else:
            cat = pd.Categorical(col.map(lambda x: None if pd.isna(x) else str(x)),
                                 categories=list(c.categories))
            if c.encoding == "codes":
                out[f"ctx__{c.name}"] = pd.Series(cat.codes, index=parts.index).replace(-1, np.nan).astype(float)
            else:
                d = pd.get_dummies(cat).astype(float).set_axis(list(c.feature_names), axis=1)
                d.index = parts.index
                d[pd.Series(cat.codes, index=parts.index) < 0] = np.nan
                for name in c.feature_names:
                    out[name] = d[name]
    # deviation from the context baseline
    targets = fs.baseline_targets
    if targets:
        cols = [f"{t}__dev_baseline" for t in targets]
        if baseline is None:
            for c in cols:
                out[c] = pd.Series(np.nan, index=parts.index)
        else:
            ctx = {c: parts[c].to_numpy() for c in parts.columns}
            pred, _ = baseline.predict_matrix(list(targets), ctx, len(parts))
            for i, c in enumerate(cols):
                out[c] = out[c] - pred[:, i]
    for d in fs.derived:
        v = d.evaluate({r: out[r] for r in d.refs})
        out[d.name] = pd.Series(v, index=parts.index).astype(float).where(np.isfinite(v))
    out = pd.DataFrame({n: out[n] for n in fs.feature_names}, index=parts.index).astype(float)
    out.index = pd.MultiIndex.from_arrays(
        [parts["line_id"].to_numpy(), parts["serial"].astype(str).to_numpy()], names=["line_id", "serial"])
    return out
