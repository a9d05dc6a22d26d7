"""Batch feature paths: the one-pass kernel over rows as they arrive (time-interleaved or grouped by
tag), its time-sliced workers, and the regrouping fallback give bit-identical numbers, reasons and
counters; out-of-order rows, overlapping windows, rows without a timestamp or of other tags, string
and wide categorical columns all take a documented path. Real computations, small data."""

from __future__ import annotations

import gc

import numpy as np
import pandas as pd
import pytest

from benchmarks.synthetic_samples import synthetic_feature_set, synthetic_sample_history
from pq.features.batch import _split_ok, compute_batch, compute_prepared, prepare_samples
from benchmarks.feature_reference import reference_features
from pq.features.spec import parse_feature_set
from pq.features.streaming import StreamingFeatures

pytestmark = pytest.mark.timeout(180)
NAMES_CACHE: dict[int, list[str]] = {}


def _regrouped(fs, samples, parts, tags):
    lines = sorted({str(x) for x in parts["line_id"]})
    return compute_prepared(fs, prepare_samples(fs, samples, lines), parts, tags=tags)


def _assert_same(a: pd.DataFrame, b: pd.DataFrame, fs) -> None:
    names = list(fs.feature_names)
    x, y = a[names].to_numpy(), b[names].to_numpy()
    same = (x == y) | (np.isnan(x) & np.isnan(y))
    if not same.all():
        i, j = np.argwhere(~same)[0]
        raise AssertionError(f"{(~same).sum()} values differ; first: row {i} {names[j]}: {x[i, j]!r} vs {y[i, j]!r}")
    assert list(a["reason"]) == list(b["reason"])
    assert list(a.index) == list(b.index)


@pytest.mark.parametrize("order", ["time", "tag"])
@pytest.mark.parametrize("messy", [False, True])
@pytest.mark.parametrize("n_lines", [1, 2])
def test_one_pass_equals_regrouped_bit_for_bit(order, messy, n_lines):
    fs = synthetic_feature_set(5)
    samples, parts, tags = synthetic_sample_history(60, 5, 80, n_lines=n_lines, messy=messy, order=order, seed=11)
    samples["tag"] = samples["tag"].astype("category")
    ref = _regrouped(fs, samples, parts, tags)
    for parallel in (True, False):
        X = compute_batch(fs, samples, parts, tags=tags, parallel=parallel)
        assert X.attrs["path"] == "one-pass"
        _assert_same(X, ref, fs)
        c = X.attrs["counters"]
        assert c["duplicates"] == ref.attrs["counters"]["duplicates"]
        assert (c["duplicates"] > 0) == messy
        assert set(X.attrs["stages_s"]) == {"inputs", "kernels", "vectors"}


def test_one_pass_matches_the_pandas_reference_on_messy_data():
    fs = synthetic_feature_set(6)
    samples, parts, tags = synthetic_sample_history(50, 6, 100, n_lines=2, messy=True, order="time", seed=4)
    X = compute_batch(fs, samples, parts, tags=tags)
    R = reference_features(fs, samples, parts, tags=tags)
    assert X.attrs["path"] == "one-pass"
    names = list(fs.feature_names)
    np.testing.assert_allclose(X[names].to_numpy(), R[names].to_numpy(), rtol=1e-9, atol=0)


def test_time_sliced_workers_match_one_worker():
    import numba

    if numba.get_num_threads() < 2:
        pytest.skip("one Numba thread: nothing to split")
    fs = synthetic_feature_set(4)
    samples, parts, tags = synthetic_sample_history(700, 4, 100, messy=True, order="time", seed=3)
    samples["tag"] = samples["tag"].astype("category")
    assert len(samples) > 200_000  # below that one worker is used
    before = samples.copy()
    X = compute_batch(fs, samples, parts, tags=tags)
    one = compute_batch(fs, samples, parts, tags=tags, parallel=False)
    assert X.attrs["counters"]["workers"] == numba.get_num_threads()
    assert one.attrs["counters"]["workers"] == 1
    _assert_same(X, one, fs)
    assert X.attrs["counters"]["duplicates"] == one.attrs["counters"]["duplicates"] > 0
    pd.testing.assert_frame_equal(samples, before)  # the frame is read in place, never written
    # rows grouped by tag are not in global time order: no time slices, still one pass
    g = samples.sort_values(["tag", "ts"], kind="stable")
    Xg = compute_batch(fs, g, parts, tags=tags)
    assert (Xg.attrs["path"], Xg.attrs["counters"]["workers"]) == ("one-pass", 1)
    _assert_same(Xg, one, fs)


def test_split_check_refuses_a_window_fed_by_two_workers():
    fs = parse_feature_set({"version": "s1", "signals": [{"tag": "x", "stats": ["mean"]}]})
    from pq.features.batch import _parts, _window_sequences

    t0 = pd.Timestamp("2025-01-01T00:00:00Z")
    parts = pd.DataFrame({"line_id": "L", "serial": ["a", "b"],
                          "cycle_start": [t0, t0 + pd.Timedelta(seconds=10)],
                          "cycle_end": [t0 + pd.Timedelta(seconds=10), t0 + pd.Timedelta(seconds=20)]})
    pp = _parts(fs, parts, ["L"])
    seq_ptr, seq_part = _window_sequences(pp, 1)
    s = lambda x: int((t0 + pd.Timedelta(seconds=x)).value)  # noqa: E731
    first = np.array([[s(1)], [s(12)]])
    # worker 0 ends in part a's window, worker 1 starts in part b's: fine
    assert _split_ok(fs, pp, seq_ptr, seq_part, 1, first, np.array([[s(9)], [s(19)]]))
    # worker 0's last sample and worker 1's first one in the same window: refused
    assert not _split_ok(fs, pp, seq_ptr, seq_part, 1, np.array([[s(1)], [s(11)]]), np.array([[s(10.5)], [s(19)]]))
    # worker 1 starts before worker 0 ends: refused
    assert not _split_ok(fs, pp, seq_ptr, seq_part, 1, np.array([[s(1)], [s(5)]]), np.array([[s(9)], [s(19)]]))


def test_a_row_out_of_time_order_takes_the_regrouping_path():
    fs = synthetic_feature_set(4)
    samples, parts, tags = synthetic_sample_history(30, 4, 60, messy=True, order="time", seed=9)
    ok = compute_batch(fs, samples, parts, tags=tags)
    # move one sample of sig_02 far back in the frame: its tag is no longer in time order
    i = int(np.nonzero((samples["tag"] == "sig_02").to_numpy())[0][500])
    late = pd.concat([samples.iloc[:100], samples.iloc[[i]], samples.drop(index=i).iloc[100:]], ignore_index=True)
    X = compute_batch(fs, late, parts, tags=tags)
    assert X.attrs["path"] == "regrouped" and X.attrs["counters"]["groups_resorted"] == 1
    _assert_same(X, ok, fs)
    # shuffled rows (no duplicated ts, so "first" does not depend on the shuffle)
    clean, parts, tags = synthetic_sample_history(30, 4, 60, order="time", seed=9)
    shuffled = clean.sample(frac=1.0, random_state=1)
    Xs = compute_batch(fs, shuffled, parts, tags=tags)
    assert Xs.attrs["path"] == "regrouped"
    _assert_same(Xs, compute_batch(fs, clean, parts, tags=tags), fs)


def test_overlapping_windows_on_one_line_take_the_regrouping_path():
    fs = synthetic_feature_set(3)
    samples, parts, tags = synthetic_sample_history(12, 3, 50, order="time", seed=2)
    # an extra part spanning two others (e.g. a re-declared cycle): windows overlap
    extra = parts.iloc[[3]].assign(serial="overlap", cycle_end=parts["cycle_end"].iloc[4])
    both = pd.concat([parts, extra], ignore_index=True)
    X = compute_batch(fs, samples, both, tags=tags)
    assert X.attrs["path"] == "regrouped"
    alone = compute_batch(fs, samples, extra, tags=tags)
    assert alone.attrs["path"] == "one-pass"
    _assert_same(X.iloc[[-1]], alone, fs)
    _assert_same(X.iloc[:-1], compute_batch(fs, samples, parts, tags=tags), fs)


def test_rows_without_ts_of_other_tags_lines_or_missing_codes_are_counted_and_ignored():
    fs = synthetic_feature_set(3)
    samples, parts, tags = synthetic_sample_history(20, 3, 40, order="time", seed=5)
    clean = compute_batch(fs, samples, parts, tags=tags)
    noise = samples.iloc[::7].copy()
    noise.loc[noise.index[0::4], "tag"] = "not_in_spec"
    noise.loc[noise.index[1::4], "line_id"] = "other-line"
    noise.loc[noise.index[2::4], "ts"] = pd.NaT
    noise.loc[noise.index[3::4], "tag"] = None
    n_other = len(noise.index[0::4]) + len(noise.index[1::4]) + len(noise.index[3::4])
    n_nat = len(noise.index[2::4])
    # noise rows come after the originals in the frame; NaT and other-tag rows never count, so
    # the remaining rows of each tag are still in time order
    dirty = pd.concat([samples, noise], ignore_index=True)
    dirty = dirty.iloc[np.argsort(dirty["ts"].fillna(dirty["ts"].max()).to_numpy(), kind="stable")]
    for cat in (False, True):
        d = dirty.copy()
        if cat:
            d["tag"] = d["tag"].astype("category")
            d["line_id"] = d["line_id"].astype("category")
        X = compute_batch(fs, d, parts, tags=tags)
        c = X.attrs["counters"]
        assert (c["rows_other_tags"], c["rows_nat_ts"]) == (n_other, n_nat)
        assert X.attrs["path"] == "one-pass"
        _assert_same(X, clean, fs)
        R = _regrouped(fs, d, parts, tags)
        assert (R.attrs["counters"]["rows_other_tags"], R.attrs["counters"]["rows_nat_ts"]) == (n_other, n_nat)
        _assert_same(R, clean, fs)


def test_string_columns_and_wide_categoricals_give_the_same_vectors():
    fs = synthetic_feature_set(3)
    samples, parts, tags = synthetic_sample_history(15, 3, 40, order="time", seed=6)
    base = compute_batch(fs, samples, parts, tags=tags)  # object columns (factorised)
    wide = samples.copy()
    wide["tag"] = pd.Categorical(wide["tag"], categories=[f"unused_{i}" for i in range(200)] + list(fs.tags))
    assert wide["tag"].array.codes.dtype == np.int16
    X = compute_batch(fs, wide, parts, tags=tags)
    assert X.attrs["path"] == "one-pass"
    _assert_same(X, base, fs)


def test_empty_inputs():
    fs = synthetic_feature_set(2)
    samples, parts, tags = synthetic_sample_history(3, 2, 10, seed=1)
    X = compute_batch(fs, samples.iloc[:0], parts, tags=tags)
    assert (X["n_good__sig_00"] == 0).all() and X["reason"].str.contains("0 good samples").all()
    X0 = compute_batch(fs, samples, parts.iloc[:0], tags=tags)
    assert len(X0) == 0 and list(X0.columns) == list(fs.feature_names) + ["reason"]


def test_streaming_vector_leaves_nothing_for_the_garbage_collector():
    fs = synthetic_feature_set(6)
    samples, parts, tags = synthetic_sample_history(4, 6, 100, order="tag", seed=1)
    sf = StreamingFeatures(fs, limits=tags, line_id="line-1")
    ts = samples["ts"].astype("int64").to_numpy()
    for tag in fs.tags:
        m = (samples["tag"] == tag).to_numpy()
        sf.push_many(tag, ts[m], samples["value"].to_numpy()[m], samples["status"].to_numpy()[m])
    cs, ce = parts["cycle_start"].iloc[2], parts["cycle_end"].iloc[2]
    ctx = {"ambient_temp_c": 20.0, "shift": "B"}
    sf.vector(cs, ce, ctx)
    runs = []
    cb = lambda phase, info: runs.append(info["generation"]) if phase == "start" else None  # noqa: E731
    gc.collect()
    gc.callbacks.append(cb)
    try:
        for _ in range(3000):  # > the 700 allocations that trigger a young-generation collection
            sf.vector(cs, ce, ctx)
    finally:
        gc.callbacks.remove(cb)
    assert runs == []
