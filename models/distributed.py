"""Training on histories larger than one machine: LightGBM's Dask integration.

Owns :func:`fit_distributed`, which fits a :class:`~models.estimator.DefectModel` through
``lightgbm.dask.DaskLGBMClassifier`` on a Dask cluster (the rows stay partitioned across workers;
LightGBM's own socket-based data-parallel learner joins them) and leaves the model in exactly the
state ``DefectModel.fit`` would: same hyperparameters, class weighting, per-feature statistics the
edge's drift check needs, and an artifact the registry stores like any other. Calibrate afterwards
on held-out margins, as in single-machine training.

Example::

    from dask.distributed import Client
    client = Client("tcp://scheduler:8786")
    model = fit_distributed(DefectModel(seed=1), ddf[features], ddf["defect"], client=client, rounds=300)
"""

from __future__ import annotations

import logging

from models.estimator import Calibrator, DefectModel
from pq.errors import ModelError

__all__ = ["fit_distributed"]

logger = logging.getLogger(__name__)


def fit_distributed(model: DefectModel, X, y, *, client, rounds: int | None = None) -> DefectModel:
    """Fit ``model`` on a Dask DataFrame ``X`` (numeric feature columns) and Dask Series ``y`` (0/1)."""
    import dask.dataframe as dd
    import lightgbm as lgb

    if not isinstance(X, dd.DataFrame):
        raise ModelError(f"X must be a dask DataFrame for distributed training, got {type(X).__name__}")
    counts = y.value_counts().compute()
    n_pos, n = int(counts.get(1, 0)), int(counts.sum())
    if n_pos == 0 or n_pos == n:
        raise ModelError(f"training labels hold a single class ({n_pos} defects in {n} parts); "
                         "a defect model needs both good and defective parts: widen the training window")
    pos_weight = min((n - n_pos) / n_pos, model.max_pos_weight) if model.class_weight == "balanced" else 1.0
    weight = y.map(lambda label: pos_weight if label == 1 else 1.0, meta=("weight", "f8"))

    params = model.lgb_params()
    params.pop("num_threads")  # each worker uses its own threads; LightGBM warns otherwise
    clf = lgb.DaskLGBMClassifier(client=client, n_estimators=rounds or model.max_rounds, **params)
    clf.fit(X.to_dask_array(lengths=True), y.to_dask_array(lengths=True),
            sample_weight=weight.to_dask_array(lengths=True), feature_name=[str(c) for c in X.columns])

    model.booster_ = clf.booster_
    model.pos_weight_ = float(pos_weight)
    model.best_iteration_ = int(model.booster_.current_iteration())
    model.feature_names_ = [str(c) for c in X.columns]
    nan_count, lo, hi = dd.compute(X.isna().sum(), X.min(), X.max())
    medians = X.quantile(0.5).compute()  # approximate across partitions, like the median of a sample
    model.train_nan_free_ = [c for c in model.feature_names_ if nan_count[c] == 0]
    model.medians_ = {c: float(medians[c]) for c in model.feature_names_}
    model.feature_ranges_ = {c: [float(lo[c]), float(hi[c])] for c in model.feature_names_}
    model.calibrator_ = Calibrator("identity")
    logger.info("distributed fit: %d parts on %d workers, %d features, %d rounds",
                n, len(client.scheduler_info()["workers"]), len(model.feature_names_), model.best_iteration_)
    return model
