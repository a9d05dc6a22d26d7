"""`pq bench features`: the batch path against pandas and the np.copy floor, plus streaming latency.

On one synthetic history (20 signals x 300 samples per part by default, interleaved in time as a
subscription delivers them, ~2% of windows with gaps etc. when --messy) it times, in the same run:
- the batch path end to end (`compute_batch`: codes and views of the frame, the one-pass kernel,
  vector assembly and the DataFrame), with its stages, on all threads and on one;
- the regrouping path on the same rows (what out-of-order input costs: one scatter copy + sort);
- the pandas reference (`reference.py`, merge_asof + groupby agg/transform/ewm);
- `np.copy` of the same sample arrays (ts, value, status): the memory-bandwidth floor;
- the streaming path: `StreamingFeatures.vector` for one part at cycle end (p50/p99), back to back
  and paced (1 ms sleep between calls, as the edge calls it after awaiting the cycle-end event).
Peak memory is the peak RSS above the pre-run level, sampled every 2 ms while each path runs.
JSON: ``ratio`` = pandas seconds / batch seconds (higher is better); ``*_vs_copy_floor_x`` = batch
(or kernel) seconds / np.copy seconds (times the floor: lower is better). ``--quick``: a small
history, same paths and keys.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable

import click
import numpy as np

from benchmarks.output import json_option, quick_option

__all__ = ["features", "run_bench"]


class _PeakRSS:
    def __init__(self) -> None:
        import psutil

        self._p = psutil.Process()
        self.base = self.peak = self._p.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._p.memory_info().rss)

    def __enter__(self) -> "_PeakRSS":
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._p.memory_info().rss)

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 1e6


def _timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, float, Any]:
    best, out, mem = float("inf"), None, 0.0
    for _ in range(repeat):
        with _PeakRSS() as m:
            t0 = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t0
        best = min(best, dt)
        mem = max(mem, m.mb)
    return best, mem, out


def run_bench(n_parts: int = 2000, n_signals: int = 20, samples_per_part: int = 300, *,
              seed: int = 0, messy: bool = False, pandas: bool = True, stream_iters: int = 2000,
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    import pandas as pd

    from pq.features.batch import compute_batch, compute_prepared, prepare_samples
    from benchmarks.feature_reference import reference_features
    from pq.features.streaming import StreamingFeatures
    from benchmarks.synthetic_samples import synthetic_feature_set, synthetic_sample_history
    from pq.features.warmup import warmup

    t0 = time.perf_counter()
    warmup()
    warm_s = time.perf_counter() - t0
    fs = synthetic_feature_set(n_signals)
    samples, parts, tags = synthetic_sample_history(n_parts, n_signals, samples_per_part, seed=seed,
                                             messy=messy, order="time")
    samples["tag"] = samples["tag"].astype("category")
    samples["line_id"] = samples["line_id"].astype("category")
    n = len(samples)
    echo(f"data: {n_parts} parts x {n_signals} signals x {samples_per_part} samples = {n:,} samples, "
         f"{len(fs.feature_names)} features per part (numba load {warm_s:.2f} s)")

    # the np.copy floor on the same data: the three sample arrays
    from pq.features.batch import to_ns

    ts = to_ns(samples["ts"])
    val = samples["value"].to_numpy()
    st = samples["status"].to_numpy()
    copy_s, _, _ = _timed(lambda: (np.copy(ts), np.copy(val), np.copy(st)), repeat=3)

    compute_batch(fs, samples.head(1000), parts.head(3), tags=tags)  # warm the code paths
    best: dict[str, Any] = {}

    def batch() -> Any:
        X = compute_batch(fs, samples, parts, tags=tags)
        if not best or sum(X.attrs["stages_s"].values()) < sum(best["stages_s"].values()):
            best.update(X.attrs)
        return X

    batch_s, batch_mb, X = _timed(batch, repeat=3)
    one_s, _, _ = _timed(lambda: compute_batch(fs, samples, parts, tags=tags, parallel=False), repeat=2)
    lines = sorted(parts["line_id"].astype(str).unique())
    regroup_s, regroup_mb, _ = _timed(
        lambda: compute_prepared(fs, prepare_samples(fs, samples, lines), parts, tags=tags), repeat=2)
    st_s = best["stages_s"]
    res: dict[str, Any] = {
        "suite": "features", "parts": n_parts, "signals": n_signals, "samples": n,
        "features_per_part": len(fs.feature_names),
        "parts_per_s": n_parts / batch_s, "samples_per_s": n / batch_s, "batch_s": batch_s,
        "batch_inputs_s": st_s["inputs"], "batch_kernel_s": st_s["kernels"],
        "batch_vectors_s": st_s["vectors"], "batch_path": best["path"],
        "batch_workers": best["counters"].get("workers", 1), "batch_one_worker_s": one_s,
        "batch_regrouped_s": regroup_s, "batch_regrouped_peak_mem_mb": regroup_mb,
        "copy_floor_s": copy_s, "batch_vs_copy_floor_x": batch_s / copy_s,
        "kernel_vs_copy_floor_x": st_s["kernels"] / copy_s, "batch_peak_mem_mb": batch_mb,
    }
    echo(f"batch (end to end): {batch_s:.3f} s  {n_parts / batch_s:,.0f} parts/s  "
         f"{n / batch_s / 1e6:,.1f} M samples/s  peak +{batch_mb:,.0f} MB  "
         f"({best['path']}, {res['batch_workers']} worker(s))")
    echo(f"  stages: inputs {st_s['inputs'] * 1e3:.1f} ms, kernel {st_s['kernels'] * 1e3:.1f} ms, "
         f"vectors {st_s['vectors'] * 1e3:.1f} ms; one worker end to end {one_s:.3f} s")
    echo(f"  same rows regrouped first (out-of-order input path): {regroup_s:.3f} s  peak +{regroup_mb:,.0f} MB")
    echo(f"np.copy floor: {copy_s:.3f} s -> batch {batch_s / copy_s:.1f}x the floor "
         f"(kernel stage alone {st_s['kernels'] / copy_s:.1f}x)")
    if pandas:
        pd_s, pd_mb, R = _timed(lambda: reference_features(fs, samples, parts, tags=tags))
        names = list(fs.feature_names)
        ok = np.isclose(X[names].to_numpy(), R[names].to_numpy(), rtol=1e-9, atol=0, equal_nan=True)
        res.update({"pandas_parts_per_s": n_parts / pd_s, "pandas_samples_per_s": n / pd_s,
                    "pandas_s": pd_s, "pandas_peak_mem_mb": pd_mb, "ratio": pd_s / batch_s,
                    "parity_mismatches": int((~ok).sum())})
        echo(f"pandas reference: {pd_s:.2f} s  {n_parts / pd_s:,.0f} parts/s  peak +{pd_mb:,.0f} MB"
             f"  -> batch is {pd_s / batch_s:.1f}x faster; {int((~ok).sum())} values differ (rtol 1e-9)")

    # streaming: one part's vector at cycle end, buffers holding 120 s of every signal
    k = min(len(parts) - 1, 5)
    sub = parts.iloc[: k + 1]
    end_ns = int(pd.Timestamp(sub["cycle_end"].iloc[-1]).value)
    sf = StreamingFeatures(fs, None, capacity_s=120.0, max_rate_hz=20.0, limits=tags, line_id=lines[0])
    m = ts <= end_ns
    s_tag = samples["tag"].to_numpy()[m]
    for tag in fs.tags:
        mm = s_tag == tag
        sf.push_many(tag, ts[m][mm], val[m][mm], st[m][mm])
    cs = int(pd.Timestamp(sub["cycle_start"].iloc[-1]).value)
    ctx = {"ambient_temp_c": 21.0, "shift": "A"}
    sf.vector(cs, end_ns, ctx)
    import gc

    gc_runs = [0]

    def count_gc(phase: str, info: dict) -> None:
        gc_runs[0] += phase == "start"

    gc.callbacks.append(count_gc)
    try:
        for mode, pause_s in (("", 0.0), ("paced_", 0.001)):
            lat = np.empty(stream_iters)
            for i in range(stream_iters):
                if pause_s:
                    time.sleep(pause_s)
                t1 = time.perf_counter()
                sf.vector(cs, end_ns, ctx)
                lat[i] = time.perf_counter() - t1
            p50, p99 = np.percentile(lat, [50, 99]) * 1e3
            res.update({f"stream_{mode}p50_ms": p50, f"stream_{mode}p99_ms": p99})
            echo(f"streaming vector ({n_signals} signals x ~{samples_per_part} samples), "
                 f"{'1 ms apart' if pause_s else 'back to back'}: p50 {p50:.3f} ms  p99 {p99:.3f} ms  "
                 f"({stream_iters} calls)")
    finally:
        gc.callbacks.remove(count_gc)
    res.update({"stream_signals": n_signals, "stream_samples_per_signal": samples_per_part,
                "stream_gc_runs": gc_runs[0]})
    echo(f"  garbage collections during {2 * stream_iters} vectors: {gc_runs[0]}")
    import resource

    res["peak_mem_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    echo(f"process peak RSS {res['peak_mem_mb']:,.0f} MB")
    return res


@click.command("features")
@click.option("--parts", "n_parts", default=2000, show_default=True, help="Parts in the history.")
@click.option("--signals", "n_signals", default=20, show_default=True, help="Process signals.")
@click.option("--samples-per-part", default=300, show_default=True, help="Samples per signal and part.")
@click.option("--seed", default=0, show_default=True)
@click.option("--messy/--clean", default=False, show_default=True,
              help="Add bad status, NaN/Inf, gaps and duplicates to the data.")
@click.option("--no-pandas", is_flag=True, help="Skip the (slow) pandas reference.")
@click.option("--stream-iters", default=2000, show_default=True, help="Streaming vectors timed.")
@quick_option({"--parts": 100, "--signals": 5, "--samples-per-part": 100, "--stream-iters": 200})
@json_option
def features(n_parts: int, n_signals: int, samples_per_part: int, seed: int, messy: bool,
             no_pandas: bool, stream_iters: int, quick: bool, as_json: bool) -> None:
    """Feature windows: batch vs pandas vs np.copy floor, and streaming latency."""
    res = run_bench(n_parts, n_signals, samples_per_part, seed=seed, messy=messy,
                    pandas=not no_pandas, stream_iters=stream_iters, echo=click.echo)
    if as_json:
        click.echo(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in res.items()}))
