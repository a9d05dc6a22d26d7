"""``pq bench score``: one part at a time as the edge scores it, with and without explanations.

Probability only, and probability + per-signal TreeSHAP explanation (goal p99 < 2 ms); throughput
for 10k parts with explanations only for at-risk parts; ratio = bare LightGBM predict +
pred_contrib p99 / ours explained p99. Each part is scored as the edge sees it: the vector the
model's features name (deviations recomputed with the artifact's own context baseline) and the raw
context the baseline takes as inputs.

``--quick``: small sizes (seconds, not minutes), the same code path and JSON keys. With ``--json``
the last stdout line is one JSON object, ``suite`` naming the suite.
"""

from __future__ import annotations

import json
import time

import click
import numpy as np

from benchmarks.output import json_option, quick_option
from benchmarks.synthetic_parts import synthetic_dataset, training_cycle_s

__all__ = ["score"]


def _pct(a, q):
    return float(np.percentile(np.asarray(a) * 1e3, q))


def _contexts(scorer, X, meta) -> list[dict]:
    """Per part, the raw context the scorer's baseline takes as inputs (what the edge passes along),
    from the parts' context columns or else their ``ctx__<name>`` feature; none without a baseline."""
    bl = scorer.baseline
    names = [*bl.numeric_inputs_, *bl.categories_] if bl is not None else []
    cols = {}
    for name in names:
        if name in meta.columns:
            cols[name] = meta[name].to_numpy()
        elif f"ctx__{name}" in X.columns:
            cols[name] = X[f"ctx__{name}"].to_numpy()
    return [dict(zip(cols, row)) for row in zip(*cols.values())] if cols else [{} for _ in range(len(X))]


@click.command()
@click.option("--features", "n_features", default=200, show_default=True)
@click.option("--train-parts", default=20_000, show_default=True, help="Parts the model is trained on.")
@click.option("--parts", "n_score", default=10_000, show_default=True,
              help="Parts scored for throughput (the first 3,000 also for latency).")
@click.option("--threads", default=2, show_default=True,
              help="LightGBM threads for training and the batch figure (one part at a time always uses 1).")
@quick_option({"--features": 50, "--train-parts": 2000, "--parts": 500, "--threads": 1})
@json_option
def score(n_features, train_parts, n_score, threads, quick, as_json):
    """Scoring one part with explanations: p50/p99 latency, and throughput for 10k parts."""
    from models.dataset import apply_baseline
    from models.scoring import Scorer
    from models.training import TrainConfig, train_frames

    ds = synthetic_dataset(train_parts + n_score, n_features, seed=3, cycle_s=training_cycle_s(train_parts))
    train_ds, test = ds.subset(np.arange(len(ds)) < train_parts), ds.subset(np.arange(len(ds)) >= train_parts)
    out = train_frames(train_ds, TrainConfig(feature_set_version="bench", n_threads=threads, seed=1))
    scorer = Scorer.from_bytes(out.artifact())
    test_X = apply_baseline(test.X, test.meta, scorer.baseline)  # the deviations as the artifact computes them
    vectors = test_X[scorer.feature_names].to_dict("records")
    ctx = _contexts(scorer, test.X, test.meta)
    for v, c in zip(vectors[:200], ctx):  # warm-up
        scorer.score(v, c, explain=True)
    lat_p, lat_e, bare = [], [], []
    for v, c in zip(vectors[:3000], ctx):
        t0 = time.perf_counter()
        scorer.score(v, c, explain=False)
        lat_p.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        scorer.score(v, c, explain=True)
        lat_e.append(time.perf_counter() - t0)
    booster = scorer.model.booster_
    A = test_X[scorer.feature_names].to_numpy()
    for i in range(min(3000, len(A))):
        row = A[i:i + 1]
        t0 = time.perf_counter()
        booster.predict(row, raw_score=True, num_threads=1)
        booster.predict(row, pred_contrib=True, num_threads=1)
        bare.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    at_risk = 0
    for v, c in zip(vectors, ctx):
        at_risk += scorer.score(v, c).at_risk
    loop_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scorer.score_frame(test_X)
    batch_s = time.perf_counter() - t0
    fig = {"suite": "score", "features": len(scorer.feature_names), "frame_features": int(ds.X.shape[1]),
           "threads": threads, "trees": out.card["training"]["trees"],
           "score_p50_ms": round(_pct(lat_p, 50), 3), "score_p99_ms": round(_pct(lat_p, 99), 3),
           "explain_p50_ms": round(_pct(lat_e, 50), 3), "explain_p99_ms": round(_pct(lat_e, 99), 3),
           "bare_lightgbm_explain_p99_ms": round(_pct(bare, 99), 3),
           "parts": len(vectors), "at_risk": int(at_risk), "parts_per_s": round(len(vectors) / loop_s, 1),
           "batch_parts_per_s": round(len(vectors) / batch_s, 1),
           "ratio": round(_pct(bare, 99) / _pct(lat_e, 99), 3)}
    click.echo(f"model: {fig['features']} features (of {fig['frame_features']} in the frame), {fig['trees']} trees")
    click.echo(f"one part, probability only:        p50 {fig['score_p50_ms']:.3f} ms  p99 {fig['score_p99_ms']:.3f} ms")
    click.echo(f"one part, with explanation:        p50 {fig['explain_p50_ms']:.3f} ms  p99 {fig['explain_p99_ms']:.3f} ms "
               f"(goal p99 < 2 ms; bare LightGBM predict+contrib p99 {fig['bare_lightgbm_explain_p99_ms']:.3f} ms)")
    click.echo(f"{len(vectors)} parts one by one, explaining the {at_risk} at risk: {fig['parts_per_s']:.0f} parts/s; "
               f"as one batch (no explanations): {fig['batch_parts_per_s']:.0f} parts/s")
    if as_json:
        click.echo(json.dumps(fig))
