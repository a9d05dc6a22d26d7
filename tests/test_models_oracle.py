"""The oracle (models.oracle) and the decision thresholds (models.thresholds) on small exact cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from models.oracle import NO_GROUND_TRUTH, _auc, curves, ground_truth_for, oracle_figures, oracle_recall_at
from models.thresholds import diversion_threshold, threshold_for_recall


def test_oracle_recall_ranks_by_true_probability():
    y = np.array([1, 0, 1, 0, 0, 1])
    truth = np.array([0.9, 0.3, 0.1, 0.05, 0.02, 0.7])
    assert oracle_recall_at(y, truth, 2) == pytest.approx(2 / 3)  # parts 0 and 5
    assert oracle_recall_at(y, truth, 0) == 0.0
    assert oracle_recall_at(np.zeros(3), truth[:3], 2) is None


def test_oracle_figures_put_the_model_beside_the_oracle_at_its_own_alert_count():
    y = np.array([1, 0, 1, 0, 0, 1])
    truth = np.array([0.9, 0.3, 0.1, 0.05, 0.02, 0.7])
    p = np.array([0.2, 0.9, 0.1, 0.3, 0.0, 0.8])
    alert = p >= 0.5  # two alerts (parts 1 and 5): the model catches one defect of three
    o = oracle_figures(y, p, alert, truth)
    assert o["alerts"] == 2 and o["recall"] == pytest.approx(1 / 3, abs=1e-4)
    assert o["oracle_recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert o["oracle_ratio"] == pytest.approx(0.5, abs=1e-3)
    assert o["oracle_auc"] == pytest.approx(roc_auc_score(y, truth), abs=1e-4)
    none = oracle_figures(y, p, alert, None)
    assert none["oracle_recall"] == none["oracle_ratio"] == none["oracle_auc"] == NO_GROUND_TRUTH


def test_rank_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.05
    s = np.round(rng.random(2000) + 0.4 * y, 2)  # many ties
    assert _auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert _auc(np.zeros(5), s[:5]) is None


def test_ground_truth_is_joined_by_line_and_serial_and_refused_when_partial():
    meta = pd.DataFrame({"line_id": ["line-1", "line-1", "line-2"], "serial": ["A", "B", "A"]})
    truth = pd.DataFrame({"line_id": ["line-2", "line-1", "line-1"], "serial": ["A", "B", "A"],
                          "defect_prob": [0.3, 0.2, 0.1]})
    assert ground_truth_for(meta, truth).tolist() == [0.1, 0.2, 0.3]
    assert ground_truth_for(meta, truth.iloc[:2]) is None  # a partial oracle is no oracle
    assert ground_truth_for(meta, None) is None


def test_curves_reach_the_oracle_limit():
    y = np.array([0] * 90 + [1] * 10)
    truth = np.where(y == 1, 0.9, 0.01)
    c = curves(y, {"oracle": truth, "flat": np.zeros(100)}, max_share=0.5)
    i = c["oracle"]["alerts"].index(10)
    assert c["oracle"]["recall"][i] == 1.0 and c["oracle"]["far"][i] == 0.0
    assert c["flat"]["recall"][i] < 1.0


def test_diversion_threshold_diverts_the_budgeted_share_on_validation():
    p = np.random.default_rng(1).random(10_000)
    thr = diversion_threshold(p, 0.03)
    assert (p >= thr).mean() == pytest.approx(0.03, abs=1e-4)
    ties = np.r_[np.zeros(50), np.ones(50)]
    assert (ties >= diversion_threshold(ties, 0.3)).mean() == 0.0  # ties never push the share over budget
    with pytest.raises(ValueError, match="share"):
        diversion_threshold(p, 0.0)


def test_threshold_for_recall_is_the_highest_that_reaches_it():
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    y = np.array([1, 0, 1, 0, 1])
    assert threshold_for_recall(p, y, 2 / 3) == 0.7
    assert threshold_for_recall(p, y, 1.0) == 0.5
    assert threshold_for_recall(p, np.zeros(5), 0.5) is None
