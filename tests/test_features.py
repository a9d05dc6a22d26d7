"""Feature windows: statistic contract, parity (streaming == batch == pandas reference), bad input,
ring-buffer policy, context baseline, spec parsing. Real computations, small data."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from benchmarks.synthetic_samples import synthetic_feature_set, synthetic_sample_history
from pq.features import _kernels as K
from pq.features.baseline import ContextBaseline
from pq.features.batch import compute_batch
from benchmarks.feature_reference import reference_features
from pq.features.spec import (
    N_KERNEL_COLS, STATS, FeatureSpecError, UnknownTagError, load_feature_set, parse_feature_set,
)
from pq.features.streaming import StreamingFeatures

pytestmark = pytest.mark.timeout(120)
RTOL = 1e-9
GOOD, BAD, UNCERTAIN = 0, 0x80000000, 0x40000000
T0 = pd.Timestamp("2025-03-01T08:00:00Z")


def _ns(series: pd.Series) -> np.ndarray:
    return series.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]").astype("int64").to_numpy()


def _stream(fs, samples, parts, tags=None, baseline=None, chunk_by_part=True, **kw):
    """Replay samples in input order, computing each part's vector at its cycle end."""
    line = parts["line_id"].iloc[0]
    s = samples[samples["line_id"] == line]
    p = parts[parts["line_id"] == line]
    sf = StreamingFeatures(fs, baseline, limits=tags, line_id=line, **kw)
    ts = _ns(s["ts"])
    order = np.argsort(ts, kind="stable")  # arrival order: by time, ties in input order
    s, ts = s.iloc[order], ts[order]
    cs, ce = _ns(p["cycle_start"]), _ns(p["cycle_end"])
    rows, reasons, pos = [], [], 0
    ctx_cols = [c for c in p.columns if c not in ("line_id", "serial", "cycle_start", "cycle_end")]
    for k in range(len(p)):
        end = np.searchsorted(ts, ce[k], side="right")
        chunk = s.iloc[pos:end]
        tchunk = ts[pos:end]
        for tag in pd.unique(chunk["tag"]):
            m = (chunk["tag"] == tag).to_numpy()
            sf.push_many(str(tag), tchunk[m], chunk["value"].to_numpy()[m], chunk["status"].to_numpy()[m])
        pos = end
        ctx = {c: p[c].iloc[k] for c in ctx_cols}
        v, r = sf.vector(int(cs[k]), int(ce[k]), ctx)
        rows.append(v)
        reasons.append(r)
    return np.array(rows), reasons, sf


def _assert_close(a: np.ndarray, b: np.ndarray, names) -> None:
    ok = np.isclose(a, b, rtol=RTOL, atol=0.0, equal_nan=True)
    if not ok.all():
        i, j = np.argwhere(~ok)[0]
        bad = sorted({names[c] for c in np.nonzero(~ok.all(axis=0))[0]})
        raise AssertionError(f"{(~ok).sum()} mismatches in {bad[:8]}; first: part {i} "
                             f"{names[j]}: {a[i, j]!r} vs {b[i, j]!r}")


# ---------------------------------------------------------------------------------------------------
# parity: streaming == batch == pandas reference, on messy data (gaps, bad, NaN/Inf, duplicates,
# single-sample and empty windows, shuffled rows, two lines)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["time", "shuffled"])
def test_parity_streaming_batch_reference_messy(order):
    fs = synthetic_feature_set(6)
    samples, parts, tags = synthetic_sample_history(80, 6, 120, n_lines=2, messy=True, order=order, seed=7)
    X = compute_batch(fs, samples, parts, tags=tags)
    R = reference_features(fs, samples, parts, tags=tags)
    names = list(fs.feature_names)
    assert list(X.columns) == names + ["reason"]
    _assert_close(X[names].to_numpy(), R[names].to_numpy(), names)
    line1 = parts["line_id"] == "line-1"
    S, reasons, sf = _stream(fs, samples, parts, tags=tags, capacity_s=3600, max_rate_hz=10)
    _assert_close(S, X[names].to_numpy()[line1.to_numpy()], names)
    assert reasons == list(X["reason"][line1.to_numpy()])
    # the messy cases really are in there
    assert (X["n_good__sig_00"] == 1).any() and (X["n_good__sig_01"] == 0).any()
    assert X["reason"].str.contains("good sample").any()
    assert X.attrs["counters"]["duplicates"] > 0 and sf.counters()["duplicate"] > 0


def _sim_history(n_cycles: int, scenario: str = "normal", seed: int = 3):
    """A small history from the simulator's line model (tests may import simulators/)."""
    lm_mod = pytest.importorskip("simulators.line_model")
    from simulators.signals import SIGNALS

    lm = lm_mod.LineModel("line-1", seed=seed, start=datetime(2025, 7, 1, 6, tzinfo=timezone.utc),
                          sample_hz=10.0, scenario=scenario)
    process = {s.name for s in SIGNALS if s.role == "process"}
    rows, parts = [], []
    for _ in range(n_cycles):
        c = lm.next_cycle()
        for cs in c.cont:
            st = cs.status if cs.status is not None else np.zeros(len(cs.t_us), np.uint32)
            rows.append(pd.DataFrame({"tag": cs.name, "t_us": cs.t_us, "value": cs.values, "status": st}))
        ev = [(n, v, s) for n, v, s in c.events if n in process]
        rows.append(pd.DataFrame({"tag": [e[0] for e in ev], "t_us": c.t_end_us,
                                  "value": [float(e[1]) for e in ev], "status": [e[2] for e in ev]}))
        part = dict(c.part)
        part["cycle_start"], part["cycle_end"] = c.t_start_us, c.t_end_us
        parts.append(part)
    s = pd.concat(rows, ignore_index=True)
    s["ts"] = pd.to_datetime(s["t_us"] + lm.start_epoch_us, unit="us", utc=True)
    s["line_id"] = "line-1"
    s["status"] = s["status"].astype(np.uint32)
    p = pd.DataFrame(parts)
    for c in ("cycle_start", "cycle_end"):
        p[c] = pd.to_datetime(p[c] + lm.start_epoch_us, unit="us", utc=True)
    p = p.drop(columns=[c for c in p.columns if c.endswith("_us")])
    tags = pd.DataFrame([(x.name, x.low, x.high) for x in SIGNALS if x.role == "process"],
                        columns=["name", "low_limit", "high_limit"])
    return s[["line_id", "tag", "ts", "value", "status"]], p, tags


@pytest.mark.parametrize("scenario", ["normal", "bad-quality"])
def test_parity_default_spec_on_simulator_history(scenario):
    fs = load_feature_set()
    samples, parts, tags = _sim_history(60, scenario)
    bl = ContextBaseline(min_rows=10).fit(compute_batch(fs, samples, parts, tags=tags).reset_index(drop=True),
                                          parts)
    X = compute_batch(fs, samples, parts, tags=tags, baseline=bl)
    R = reference_features(fs, samples, parts, tags=tags, baseline=bl)
    names = list(fs.feature_names)
    _assert_close(X[names].to_numpy(), R[names].to_numpy(), names)
    S, reasons, _ = _stream(fs, samples, parts, tags=tags, baseline=bl, capacity_s=120, max_rate_hz=20)
    _assert_close(S, X[names].to_numpy(), names)
    assert reasons == list(X["reason"])
    # per-cycle values stamped at the cycle end land in their own cycle
    assert (X["n_good__cycle_time_s"] == 1).all()
    np.testing.assert_allclose(X["cycle_time_s__last"].to_numpy(),
                               (parts["cycle_end"] - parts["cycle_start"]).dt.total_seconds(), atol=1.1e-3)
    dev = X["melt_temp_c__dev_baseline"]
    assert np.isfinite(dev).mean() > (0.9 if scenario == "normal" else 0.5)
    assert (X["reason"][dev.isna()] != "").all()


# ---------------------------------------------------------------------------------------------------
# contract: every statistic passes the same shape and NaN checks
# ---------------------------------------------------------------------------------------------------


def _one_tag_frames(windows: list[list[tuple[float, float, int]]], *, start=T0, cycle_s=10.0):
    """Parts i = 0..n-1 of cycle_s seconds; windows[i] = [(offset_s, value, status), ...] of tag x."""
    rows, parts = [], []
    for i, w in enumerate(windows):
        cs = start + pd.Timedelta(seconds=i * cycle_s)
        parts.append(("L", f"P{i}", cs, cs + pd.Timedelta(seconds=cycle_s)))
        rows += [("L", "x", cs + pd.Timedelta(seconds=o), v, st) for o, v, st in w]
    s = pd.DataFrame(rows, columns=["line_id", "tag", "ts", "value", "status"])
    s["status"] = s["status"].astype(np.uint32)
    p = pd.DataFrame(parts, columns=["line_id", "serial", "cycle_start", "cycle_end"])
    return s, p


CONTRACT_WINDOWS = [
    [(o, 50 + 3 * math.sin(o), GOOD) for o in np.arange(0.05, 10, 0.1)],  # full
    [(1.0, 55.0, GOOD), (2.0, 57.0, BAD), (3.0, 61.0, GOOD), (4.0, 40.0, GOOD)],  # bad inside
    [(5.0, 70.0, GOOD)],  # single sample
    [],  # empty
    [(1.0, np.nan, GOOD), (2.0, np.inf, GOOD), (3.0, 1.0, UNCERTAIN)],  # nothing usable
    [(0.5, 30.0, GOOD), (0.5, 99.0, GOOD), (9.5, 80.0, GOOD), (6.0, 52.0, GOOD)],  # dup + unsorted
]


@pytest.mark.parametrize("stat", [s for s in STATS if s != "dev_baseline"])
@pytest.mark.parametrize("min_good", [1, 3])
def test_every_statistic_shape_and_nan_contract(stat, min_good):
    fs = parse_feature_set({"version": "c1", "min_good": min_good,
                            "signals": [{"tag": "x", "stats": [stat]}]})
    s, p = _one_tag_frames(CONTRACT_WINDOWS)
    tags = {"x": (45.0, 60.0)}
    X = compute_batch(fs, s, p, tags=tags)
    col = X[f"x__{stat}"]
    assert X.shape == (len(p), len(fs.feature_names) + 1)
    assert all(X[c].dtype == np.float64 for c in fs.feature_names)
    n_good = X["n_good__x"].to_numpy()
    np.testing.assert_array_equal(n_good, [100, 3, 1, 0, 0, 3])
    np.testing.assert_array_equal(X["n_bad__x"].to_numpy(), [0, 1, 0, 0, 3, 0])
    need = max(min_good, STATS[stat].min_n)
    assert col[n_good < need].isna().all(), "too few good samples must give NaN"
    assert np.isfinite(col[n_good >= need]).all(), "enough good samples must give a number"
    # NaN always comes with a reason, a complete vector has none
    for v, r in zip(col, X["reason"]):
        assert (r != "") == bool(np.isnan(v))
    R = reference_features(fs, s, p, tags=tags)
    _assert_close(X[list(fs.feature_names)].to_numpy(), R.to_numpy(), list(fs.feature_names))


def test_statistics_values_on_a_hand_computed_window():
    fs = parse_feature_set({"version": "h1", "min_good": 1, "ewma_alpha": 0.5,
                            "signals": [{"tag": "x", "stats": [s for s in STATS if s != "dev_baseline"]}]})
    # offsets 1,3,6 s in a 10 s cycle; 2 s is Bad; the duplicate at 6 s (value 0) loses (first wins)
    s, p = _one_tag_frames([[(1, 10.0, GOOD), (2, 99.0, BAD), (3, 20.0, GOOD), (6, 60.0, GOOD), (6, 0.0, GOOD)]])
    X = compute_batch(fs, s, p, tags={"x": (15.0, 50.0)}).iloc[0]
    assert X["x__mean"] == pytest.approx(30.0)
    assert X["x__std"] == pytest.approx(np.std([10, 20, 60], ddof=1))
    assert (X["x__min"], X["x__max"], X["x__first"], X["x__last"], X["x__range"]) == (10, 60, 10, 60, 50)
    assert X["x__slope"] == pytest.approx(np.polyfit([1, 3, 6], [10, 20, 60], 1)[0])
    # held values: 10 for 1 s (until the Bad sample), 20 for 3 s, 60 for 4 s (until cycle end)
    assert X["x__time_below"] == pytest.approx(1.0) and X["x__time_above"] == pytest.approx(4.0)
    assert X["x__ewma"] == pytest.approx(0.5 * (0.5 * 10 + 0.5 * 20) + 0.5 * 60)
    assert (X["n_good__x"], X["n_bad__x"]) == (3, 1)


def test_kernel_columns_match_spec():
    assert K.N_COLS == N_KERNEL_COLS
    assert {s.col for s in STATS.values() if s.col >= 0} == set(range(2, N_KERNEL_COLS))


# ---------------------------------------------------------------------------------------------------
# bad input: each has a documented result
# ---------------------------------------------------------------------------------------------------


def test_empty_and_missing_cycle_windows_give_nan_and_reason():
    fs = parse_feature_set({"version": "e1", "signals": [{"tag": "x", "stats": ["mean"]}]})
    s, p = _one_tag_frames([[(1, 1.0, GOOD)] * 1, [(1, 2.0, GOOD)]])
    p.loc[0, "cycle_end"] = p.loc[0, "cycle_start"]  # zero-length
    p.loc[1, "cycle_end"] = pd.NaT
    X = compute_batch(fs, s, p)
    assert X["x__mean"].isna().all()
    assert (X["reason"] == "empty cycle window (cycle_end <= cycle_start)").all()
    sf = StreamingFeatures(fs)
    v, r = sf.vector(T0, T0)
    assert np.isnan(v[0]) and r == "empty cycle window (cycle_end <= cycle_start)"


def test_single_sample_window_with_min_good_1():
    fs = parse_feature_set({"version": "o1", "min_good": 1, "signals": [{"tag": "x", "stats": ["mean", "std", "slope", "last"]}]})
    s, p = _one_tag_frames([[(4.0, 7.5, GOOD)]])
    X = compute_batch(fs, s, p).iloc[0]
    assert X["x__mean"] == X["x__last"] == 7.5
    assert np.isnan(X["x__std"]) and np.isnan(X["x__slope"])
    assert X["reason"] == "x: std, slope need 2 good samples, got 1"


def test_unsorted_and_duplicated_timestamps_first_row_wins():
    fs = parse_feature_set({"version": "u1", "min_good": 1, "signals": [{"tag": "x", "stats": ["mean", "first", "last"]}]})
    rows = [(3.0, 30.0), (1.0, 10.0), (2.0, 20.0), (1.0, 111.0), (3.0, 333.0)]
    s, p = _one_tag_frames([[(o, v, GOOD) for o, v in rows]])
    X = compute_batch(fs, s, p).iloc[0]
    assert (X["x__mean"], X["x__first"], X["x__last"], X["n_good__x"]) == (20.0, 10.0, 30.0, 3)
    sf = StreamingFeatures(fs)
    for o, v in rows:
        sf.push("x", T0 + pd.Timedelta(seconds=o), v, GOOD)
    v, r = sf.vector(T0, T0 + pd.Timedelta(seconds=10))
    assert list(v[:3]) == [20.0, 10.0, 30.0] and r == ""
    c = sf.counters()
    assert (c["duplicate"], c["late_inserted"]) == (2, 2)


def test_nan_inf_values_and_bad_status_are_excluded_and_counted():
    fs = parse_feature_set({"version": "n1", "min_good": 2, "signals": [{"tag": "x", "stats": ["mean", "max"]}]})
    s, p = _one_tag_frames([[(1, 1.0, GOOD), (2, np.nan, GOOD), (3, np.inf, GOOD), (4, -np.inf, GOOD),
                             (5, 1e6, BAD | 0x3C0000), (6, 1e6, UNCERTAIN), (7, 3.0, GOOD)]])
    X = compute_batch(fs, s, p).iloc[0]
    assert (X["x__mean"], X["x__max"], X["n_good__x"], X["n_bad__x"]) == (2.0, 3.0, 2, 5)
    fs_u = parse_feature_set({"version": "n2", "min_good": 2, "accept_uncertain": True,
                              "signals": [{"tag": "x", "stats": ["max"]}]})
    assert compute_batch(fs_u, s, p).iloc[0]["x__max"] == 1e6


def test_unknown_tags_in_spec():
    fs = parse_feature_set({"version": "k1", "signals": [{"tags": ["x", "nope"], "stats": ["mean"]}]})
    s, p = _one_tag_frames([[(o, 1.0, GOOD) for o in (1, 2, 3)]])
    # with a tag catalog: refused up front, naming the tag
    with pytest.raises(UnknownTagError, match="nope"):
        compute_batch(fs, s, p, tags={"x": (0, 1)})
    with pytest.raises(UnknownTagError, match="nope"):
        StreamingFeatures(fs, limits={"x": (0, 1)})
    # without one: the tag simply has no samples -> NaN with a reason
    X = compute_batch(fs, s, p).iloc[0]
    assert np.isnan(X["nope__mean"]) and X["reason"] == "nope: 0 good samples (needs 3)"
    # samples of tags the spec does not read are ignored (batch) / counted (streaming)
    sf = StreamingFeatures(fs)
    sf.push_many("other", np.arange(3) * 1e9, np.ones(3))
    assert sf.counters()["unknown_tag"] == 3


def test_missing_limits_and_context_give_reasons():
    fs = parse_feature_set({"version": "m1", "signals": [{"tag": "x", "stats": ["time_above"]}],
                            "context": [{"name": "amb"}, {"name": "shift", "kind": "category", "categories": ["A", "B"]}]})
    s, p = _one_tag_frames([[(o, 1.0, GOOD) for o in (1, 2, 3)]])
    p["amb"] = [np.nan]
    p["shift"] = ["Z"]
    X = compute_batch(fs, s, p).iloc[0]
    assert np.isnan(X["x__time_above"]) and np.isnan(X["ctx__amb"]) and np.isnan(X["ctx__shift"])
    assert X["reason"] == "x: no high limit for time_above; ctx amb: missing or non-finite; ctx shift: unknown value 'Z'"


def test_bad_frames_raise_clear_errors():
    from pq.features.spec import FeatureInputError

    fs = parse_feature_set({"version": "b1", "signals": [{"tag": "x"}]})
    s, p = _one_tag_frames([[(1, 1.0, GOOD)]])
    with pytest.raises(FeatureInputError, match="lacks columns"):
        compute_batch(fs, s.drop(columns=["status"]), p)
    with pytest.raises(FeatureInputError, match="one length"):
        StreamingFeatures(fs).push_many("x", [1.0, 2.0], [1.0])


# ---------------------------------------------------------------------------------------------------
# streaming ring buffers: bounded, overflow counted and visible
# ---------------------------------------------------------------------------------------------------


def test_ring_overflow_evicts_oldest_and_flags_the_window():
    fs = parse_feature_set({"version": "r1", "min_good": 1, "signals": [{"tag": "x", "stats": ["mean", "first"]}]})
    sf = StreamingFeatures(fs, capacity_s=1.0, max_rate_hz=10.0)  # 10 samples
    assert sf.capacity == 10
    t = np.arange(25) + 0.5  # 25 samples, 1 s apart, epoch seconds
    sf.push_many("x", t, np.arange(25.0))
    c = sf.counters()
    assert (c["evicted"], c["buffered"]["x"]) == (15, 10)
    v, r = sf.vector(0.0, 30.0)  # reaches back into evicted samples
    assert np.isnan(v[0]) and r == "x: buffer overflow, samples evicted"
    v, r = sf.vector(15.0, 30.0)  # entirely within the buffer
    assert v[1] == 15.0 and r == ""
    sf.push_many("x", [1.1], [0.0])  # older than an evicted one: dropped, counted
    assert sf.counters()["too_old"] == 1


def test_streaming_vector_20x300_equals_batch_and_is_repeatable():
    """The benchmark's case (20 signals x 300 samples a window), checked for what it computes; its
    speed (p50/p99 per vector) is a figure of ``pq bench features``, not something a test asserts."""
    fs = synthetic_feature_set(20)
    samples, parts, tags = synthetic_sample_history(4, 20, 300, order="tag", seed=1)
    sf = StreamingFeatures(fs, limits=tags, line_id="line-1", capacity_s=120, max_rate_hz=20)
    ts = _ns(samples["ts"])
    for tag in fs.tags:
        m = (samples["tag"] == tag).to_numpy()
        sf.push_many(tag, ts[m], samples["value"].to_numpy()[m], samples["status"].to_numpy()[m])
    names = list(fs.feature_names)
    X = compute_batch(fs, samples, parts, tags=tags)
    ctx_cols = [c for c in parts.columns if c not in ("line_id", "serial", "cycle_start", "cycle_end")]
    k = 2
    cs, ce = _ns(parts["cycle_start"])[k], _ns(parts["cycle_end"])[k]
    ctx = {c: parts[c].iloc[k] for c in ctx_cols}
    v, reason = sf.vector(cs, ce, ctx)
    _assert_close(np.asarray(v)[None, :], X[names].to_numpy()[k:k + 1], names)
    assert reason == X["reason"].iloc[k]
    assert np.isfinite(v).sum() > len(names) // 2, "a mostly empty vector would prove little"
    for _ in range(50):  # computing a vector reads the buffers, never changes them
        again, r2 = sf.vector(cs, ce, ctx)
        np.testing.assert_array_equal(again, v)
        assert r2 == reason


# ---------------------------------------------------------------------------------------------------
# context baseline
# ---------------------------------------------------------------------------------------------------


def test_context_baseline_fit_predict_range_roundtrip_and_dev_features():
    rng = np.random.default_rng(0)
    n = 400
    ctx = pd.DataFrame({"ambient_temp_c": rng.uniform(15, 35, n), "humidity_pct": rng.uniform(30, 80, n),
                        "shift": rng.choice(["A", "B", "C"], n)})
    y = 230 + 0.4 * ctx["ambient_temp_c"] - 0.05 * ctx["humidity_pct"] + (ctx["shift"] == "B") * 0.8
    feats = pd.DataFrame({"melt_temp_c__mean": y + rng.normal(0, 0.2, n)})
    bl = ContextBaseline(alpha=1e-3).fit(feats, ctx)
    today = {"ambient_temp_c": 31.0, "humidity_pct": 70.0, "shift": "B"}
    expect = 230 + 0.4 * 31 - 0.05 * 70 + 0.8
    assert bl.predict(today)["melt_temp_c"] == pytest.approx(expect, abs=0.05)
    lo, hi = bl.normal_range("melt_temp_c", today, k=3)
    assert lo < expect < hi and hi - lo == pytest.approx(6 * 0.2, rel=0.15)
    bl2 = ContextBaseline.from_dict(json.loads(json.dumps(bl.to_dict())))
    assert bl2.predict(today) == bl.predict(today) and bl2.fingerprint() == bl.fingerprint()
    # missing context -> NaN prediction with a reason, unknown category -> average
    pred, why = bl.predict_matrix(["melt_temp_c"], {"humidity_pct": 50.0, "shift": "Q"}, 1)
    assert np.isnan(pred[0, 0]) and "ambient_temp_c missing" in why[0][1]


def test_dev_baseline_without_baseline_is_nan_with_reason():
    fs = parse_feature_set({"version": "d1", "signals": [{"tag": "x", "stats": ["mean", "dev_baseline"]}]})
    s, p = _one_tag_frames([[(o, 5.0, GOOD) for o in (1, 2, 3)]])
    X = compute_batch(fs, s, p).iloc[0]
    assert X["x__mean"] == 5.0 and np.isnan(X["x__dev_baseline"])
    assert X["reason"] == "no context baseline fitted: dev_baseline features are NaN"


# ---------------------------------------------------------------------------------------------------
# spec
# ---------------------------------------------------------------------------------------------------


def test_default_spec_loads_and_names_are_stable():
    fs = load_feature_set()
    assert fs.version == "default-1"
    names = fs.feature_names
    assert len(names) == len(set(names))
    for n in ("melt_temp_c__mean", "melt_temp_c__dev_baseline", "n_good__melt_temp_c",
              "melt_temp_c__end__slope", "ctx__ambient_temp_c", "ctx__shift", "melt_x_hold"):
        assert n in names
    assert len(fs.fingerprint) == 64


@pytest.mark.parametrize("expr, msg", [
    ("__import__('os').system('x')", "not allowed"),
    ("x.mean.__class__", "not features declared"),
    ("(lambda: 1)()", "not allowed"),
    ("open('f')", "not allowed"),
    ("x.mean if 1 else 2", "not allowed"),
    ("y.mean * 2", "not features declared"),
    ("x.mean +", "cannot parse"),
])
def test_derived_expressions_are_whitelisted(expr, msg):
    with pytest.raises(FeatureSpecError, match=msg):
        parse_feature_set({"version": "x", "signals": [{"tag": "x", "stats": ["mean"]}],
                           "derived": [{"name": "d", "expr": expr}]})


def test_derived_feature_values_and_non_finite_result():
    fs = parse_feature_set({"version": "x", "min_good": 1, "signals": [{"tag": "x", "stats": ["mean", "min"]}],
                            "derived": [{"name": "ratio", "expr": "x.mean / x.min"},
                                        {"name": "r2", "expr": "sqrt(abs(ratio)) - 1"}]})
    s, p = _one_tag_frames([[(1, 2.0, GOOD), (2, 6.0, GOOD)], [(1, 0.0, GOOD), (2, 4.0, GOOD)]])
    X = compute_batch(fs, s, p)
    assert X["ratio"].iloc[0] == 2.0 and X["r2"].iloc[0] == pytest.approx(math.sqrt(2) - 1)
    assert np.isnan(X["ratio"].iloc[1]) and X["reason"].iloc[1] == "ratio: non-finite result"


@pytest.mark.parametrize("bad, msg", [
    ({"signals": [{"tag": "x", "stats": ["median"]}]}, "unknown statistics"),
    ({"signals": [{"tag": "x", "window": "w9"}]}, "unknown window"),
    ({"signals": [{"tag": "X-1"}]}, "snake_case"),
    ({"signals": [{"tag": "x", "min_good": 0}]}, "min_good"),
    ({"signals": []}, "no \\[\\[signals\\]\\]"),
    ({"signals": [{"tag": "x"}], "windows": {"w": {"last_s": -1}}}, "last_s must be > 0"),
    ({"signals": [{"tag": "x"}, {"tag": "x"}]}, "declared twice"),
])
def test_spec_errors_name_the_entry(bad, msg):
    with pytest.raises(FeatureSpecError, match=msg):
        parse_feature_set({"version": "v", **bad})
