"""Benchmarks ``pq bench train`` and ``pq bench score``.

``train``: the whole training pipeline (grouped folds with early stopping, calibration, final fit)
on synthetic 100k parts x 200 features with 2 threads, against a single bare ``lightgbm.train``
with the same rounds (ratio = bare seconds / ours: the price of honest validation), and, given
``--history DIR`` (``pq simulate history --out DIR``), the simulator's default history end to end.

``score``: one part at a time as the edge does: probability only, and probability + per-signal
TreeSHAP explanation (goal p99 < 2 ms); throughput for 10k parts with explanations only for
at-risk parts; ratio = bare LightGBM predict + pred_contrib p99 / ours explained p99.

With ``--json`` the last stdout line is one JSON object.
"""

from __future__ import annotations

import json
import time

import click
import numpy as np

__all__ = ["train", "score"]


def _frame(n_parts: int, n_features: int, seed: int = 0):
    from models.dataset import dataset_from_frames
    from models.synthetic import synthetic_history

    n_signals = max(1, -(-(n_features - 3) // 4))  # ceil: enough columns to cut exactly n_features
    f, p = synthetic_history(n_parts=n_parts, n_signals=n_signals, seed=seed, cycle_s=30.0)
    f = f[[c for c in f.columns if not c.startswith("n_good__")]]
    keep = list(f.columns[:n_features - 3]) + ["ctx__ambient_temp_c", "ctx__humidity_pct", "ctx__lot_mfi_g10min"]
    return dataset_from_frames(f[list(dict.fromkeys(keep))], p)


@click.command()
@click.option("--parts", default=100_000, show_default=True)
@click.option("--features", "n_features", default=200, show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--history", type=click.Path(exists=True, file_okay=False), help="Also time the simulator history in DIR.")
@click.option("--json", "as_json", is_flag=True)
def train(parts, n_features, threads, history, as_json):
    """Training time: 100k x 200 (2 threads) and the simulator's default history."""
    import lightgbm as lgb

    from models.estimator import DefectModel
    from models.training import TrainConfig, train_frames

    ds = _frame(parts, n_features)
    click.echo(f"synthetic: {len(ds)} parts x {ds.X.shape[1]} features, {int(ds.y.sum())} defects, {threads} threads")
    cfg = TrainConfig(feature_set_version="bench", n_threads=threads, seed=1)
    t0 = time.perf_counter()
    out = train_frames(ds, cfg)
    ours = time.perf_counter() - t0
    rounds = out.card["training"]["trees"]
    m = DefectModel(n_threads=threads, seed=1)
    t0 = time.perf_counter()
    lgb.train(m.lgb_params(), lgb.Dataset(ds.X.to_numpy(), ds.y.to_numpy()), num_boost_round=rounds)
    bare = time.perf_counter() - t0
    fig = {"parts": len(ds), "features": int(ds.X.shape[1]), "threads": threads, "train_s": round(ours, 2),
           "bare_lightgbm_s": round(bare, 2), "trees": rounds, "folds": cfg.folds, "ratio": round(bare / ours, 3),
           "validation_auc": out.metrics["auc"]}
    click.echo(f"pq train pipeline ({cfg.folds} grouped folds + calibration + final fit): {ours:.1f} s; "
               f"bare lightgbm.train with the same {rounds} trees: {bare:.1f} s (ratio {bare / ours:.3f})")
    if history:
        from models.history import dataset_from_history_dir

        t0 = time.perf_counter()
        hds = dataset_from_history_dir(history)
        feat_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        hout = train_frames(hds, TrainConfig(feature_set_version=hds.feature_set_version, n_threads=threads, seed=1))
        hist_s = time.perf_counter() - t0
        fig |= {"history_parts": len(hds), "history_features": int(hds.X.shape[1]), "history_features_s": round(feat_s, 2),
                "history_train_s": round(hist_s, 2), "history_validation_auc": hout.metrics["auc"]}
        click.echo(f"simulator history {history}: {len(hds)} parts x {hds.X.shape[1]} features; features {feat_s:.1f} s, "
                   f"training {hist_s:.1f} s")
    if as_json:
        click.echo(json.dumps(fig))


def _pct(a, q):
    return float(np.percentile(np.asarray(a) * 1e3, q))


@click.command()
@click.option("--features", "n_features", default=200, show_default=True)
@click.option("--parts", "n_score", default=10_000, show_default=True, help="Parts scored for throughput.")
@click.option("--json", "as_json", is_flag=True)
def score(n_features, n_score, as_json):
    """Scoring one part with explanations: p50/p99 latency, and throughput for 10k parts."""
    from models.scoring import Scorer
    from models.training import TrainConfig, train_frames

    ds = _frame(20_000 + n_score, n_features, seed=3)
    train_ds, test = ds.subset(np.arange(len(ds)) < 20_000), ds.subset(np.arange(len(ds)) >= 20_000)
    out = train_frames(train_ds, TrainConfig(feature_set_version="bench", seed=1))
    scorer = Scorer.from_bytes(out.artifact())
    vectors = test.X[scorer.feature_names].to_dict("records")
    ctx = [{"ambient_temp_c": v["ctx__ambient_temp_c"], "humidity_pct": v["ctx__humidity_pct"]} for v in vectors]
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
    A = test.X[scorer.feature_names].to_numpy()
    for i in range(3000):
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
    scorer.score_frame(test.X)
    batch_s = time.perf_counter() - t0
    fig = {"features": len(scorer.feature_names), "trees": out.card["training"]["trees"],
           "score_p50_ms": round(_pct(lat_p, 50), 3), "score_p99_ms": round(_pct(lat_p, 99), 3),
           "explain_p50_ms": round(_pct(lat_e, 50), 3), "explain_p99_ms": round(_pct(lat_e, 99), 3),
           "bare_lightgbm_explain_p99_ms": round(_pct(bare, 99), 3),
           "parts": len(vectors), "at_risk": int(at_risk), "parts_per_s": round(len(vectors) / loop_s, 1),
           "batch_parts_per_s": round(len(vectors) / batch_s, 1),
           "ratio": round(_pct(bare, 99) / _pct(lat_e, 99), 3)}
    click.echo(f"model: {fig['features']} features, {fig['trees']} trees")
    click.echo(f"one part, probability only:        p50 {fig['score_p50_ms']:.3f} ms  p99 {fig['score_p99_ms']:.3f} ms")
    click.echo(f"one part, with explanation:        p50 {fig['explain_p50_ms']:.3f} ms  p99 {fig['explain_p99_ms']:.3f} ms "
               f"(goal p99 < 2 ms; bare LightGBM predict+contrib p99 {fig['bare_lightgbm_explain_p99_ms']:.3f} ms)")
    click.echo(f"{len(vectors)} parts one by one, explaining the {at_risk} at risk: {fig['parts_per_s']:.0f} parts/s; "
               f"as one batch (no explanations): {fig['batch_parts_per_s']:.0f} parts/s")
    if as_json:
        click.echo(json.dumps(fig))
