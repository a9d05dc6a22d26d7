"""The scaling path is real: pq's defect model trained through lightgbm.dask on a local Dask cluster."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from benchmarks.synthetic_parts import synthetic_part_history
from models.estimator import DefectModel

pytestmark = pytest.mark.timeout(900)  # catches a hang only


def test_dask_training_matches_the_single_machine_model():
    dd = pytest.importorskip("dask.dataframe")
    distributed = pytest.importorskip("dask.distributed")
    from models.distributed import fit_distributed

    features, parts = synthetic_part_history(n_parts=6000, n_signals=6, seed=3)
    X = features.reset_index(drop=True).astype("float64")
    y = parts["defect"].astype(int).reset_index(drop=True)
    train, test = np.arange(len(X)) < 4500, np.arange(len(X)) >= 4500

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        ddf = dd.from_pandas(X[train], npartitions=4)
        dy = dd.from_pandas(y[train], npartitions=4)
        model = fit_distributed(DefectModel(seed=1, num_leaves=15), ddf, dy, client=client, rounds=120)
        assert len(client.scheduler_info()["workers"]) == 2

    # the artifact round-trips and scores like any registered model
    restored, _ = DefectModel.from_bytes(model.to_bytes())
    p_dist = restored.predict_proba(X[test])[:, 1]
    auc_dist = roc_auc_score(y[test], p_dist)
    single = DefectModel(seed=1, num_leaves=15).fit(X[train], y[train], num_boost_round=120)
    auc_single = roc_auc_score(y[test], single.predict_proba(X[test])[:, 1])
    assert auc_dist > 0.75, auc_dist
    assert abs(auc_dist - auc_single) < 0.05, (auc_dist, auc_single)
    assert set(restored.feature_ranges_) == set(X.columns)
    assert restored.pos_weight_ > 1  # class imbalance handled as in single-machine training
