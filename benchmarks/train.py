"""``pq bench train``: the whole training pipeline against a bare ``lightgbm.train``.

Times the pipeline (grouped folds with early stopping, calibration, final fit) on synthetic 100k
parts x 200 features with 2 threads, against a single bare ``lightgbm.train`` with the same rounds
(ratio = bare seconds / ours: the price of honest validation), and, given ``--history DIR``
(``pq simulate history --out DIR``), the simulator's default history end to end.

``--quick``: small sizes (seconds, not minutes), the same code path and JSON keys. With ``--json``
the last stdout line is one JSON object, ``suite`` naming the suite.
"""

from __future__ import annotations

import json
import time

import click

from benchmarks.output import json_option, quick_option
from benchmarks.synthetic_parts import synthetic_dataset

__all__ = ["train"]


@click.command()
@click.option("--parts", default=100_000, show_default=True, help="Synthetic parts (at least 6 days of history).")
@click.option("--features", "n_features", default=200, show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--history", type=click.Path(exists=True, file_okay=False), help="Also time the simulator history in DIR.")
@quick_option({"--parts": 2000, "--features": 40, "--threads": 1})
@json_option
def train(parts, n_features, threads, history, quick, as_json):
    """Training time: 100k x 200 (2 threads) and the simulator's default history."""
    import lightgbm as lgb

    from models.estimator import DefectModel
    from models.training import TrainConfig, train_frames

    ds = synthetic_dataset(parts, n_features)
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
    fig = {"suite": "train", "parts": len(ds), "features": int(ds.X.shape[1]), "threads": threads, "train_s": round(ours, 3),
           "bare_lightgbm_s": round(bare, 3), "trees": rounds, "folds": cfg.folds, "ratio": round(bare / ours, 4),
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
