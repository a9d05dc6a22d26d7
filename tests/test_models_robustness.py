"""The robustness claim on a small run of the fixed protocol (models.protocol): a process-only model
trained on one winter floods with a new supplier, alone and in a heatwave; the environment-aware model
stays near its validation rate, far below the naive model at matched recall, close to the oracle.

Full-size run and its multi-seed table: docs/models.md ("Measured on the simulator"). Here: one seed
set, 4 days of January for training, 1 day per held-out scenario at 1 Hz.
"""

from __future__ import annotations

import json

import pytest

from models.protocol import HELD_OUT, run_protocol
from models.report import write_protocol_report
from models.training import TrainConfig
from pq.features.spec import load_feature_set
from simulators.history import generate_history


# CPU-bound (five histories' worth of simulation, two models): about a minute on a quiet 2-core
# machine, several on a busy one. The bound only catches a hang; speed is `pq bench train`'s business.
@pytest.mark.timeout(900)
def test_protocol_env_aware_stays_quiet_where_the_naive_model_floods(tmp_path):
    fs = load_feature_set()
    held_out = tuple(h for h in HELD_OUT if h.name in ("new-supplier", "heatwave+new-supplier"))
    res = run_protocol(generate_history, tmp_path / "hist", seed_sets=1, seed_base=11, feature_set=fs,
                       config=TrainConfig(feature_set_version=fs.version, alarm_budget_per_h=2.0),
                       train_days=4, eval_days=1, held_out=held_out)
    (run,) = res["seed_sets"]
    assert set(run["scenarios"]) == {"new-supplier", "heatwave+new-supplier"}
    assert not (tmp_path / "hist" / "set-0" / "normal").exists()  # histories are removed once featurised
    val = run["models"]["environment-aware"]["validation_diversion"]
    assert val["diverted_share"] == pytest.approx(0.03, abs=0.002)  # the budget, on validation
    for name, g in run["decision_goal"]["scenarios"].items():
        # 5 seed sets (base 1000, 5 + 1.5 days) measured FAR ratios at matched recall of 4.8-66 and
        # environment-aware oracle ratios of 0.91-1.0 in every scenario
        assert g["far_ratio_at_matched_recall"] is None or g["far_ratio_at_matched_recall"] >= 3, (name, g)
        assert g["far_at_matched_recall_naive"] > 0.02, (name, g)
        assert isinstance(g["oracle_ratio_env"], float) and g["oracle_ratio_env"] >= 0.8, (name, g)
        assert g["oracle_recall_env"] >= 0.3, (name, g)  # the oracle catches what can be caught at 3-5 %
        # today's single-threshold figures stay in the result beside the new decisions; at 2 alerts/h the
        # environment-aware FAR stayed at 0.000-0.016 in all 20 measured rows (the naive model's ranged
        # from 0.0008 to 0.77, so the old 5x clause is no assertion that holds across seeds)
        assert run["goal"]["scenarios"][name]["far_env"] <= 0.02, (name, run["goal"]["scenarios"][name])
    # the combination no training history has makes the naive model divert 47-93 % of parts in the 5
    # measured sets against 3.4-5.2 % for the environment-aware model. Its alarm *count* is no flood
    # test: the episode rule folds a flood into a few alarms that stand (this seed set: x1.5 of
    # validation), so the goal also measures how long alarms stand: here x14 of validation for the
    # naive model, x2.2 for the environment-aware one (docs/models.md)
    both = run["decision_goal"]["scenarios"]["heatwave+new-supplier"]
    assert both["diverted_share_naive"] >= 3 * both["diverted_share_env"], both
    assert both["open_ratio_naive"] > 5 and both["open_ratio_naive"] >= 3 * both["open_ratio_env"], both
    assert both["naive_floods"], both
    # the oracle's own alarms (true mechanisms, its 3 % on training): how many alarms real trouble calls for
    assert set(run["oracle_alarms"]) == {"train", "new-supplier", "heatwave+new-supplier"}
    assert run["oracle_alarms"]["train"]["diverted_share"] == pytest.approx(0.03, abs=0.002)
    for name, g in run["decision_goal"]["scenarios"].items():
        assert g["oracle_alarms_per_h"] > 0 and g["warranted_alarm_ratio"] > 0, (name, g)
        assert not g["met"] or g["met_given_trouble"], (name, g)  # scaling by real trouble never tightens
    s = res["summary"]
    assert s["seed_sets"] == 1 and s["scenarios"] == 2
    assert s["met_given_trouble"] >= s["met"]
    assert s["min_oracle_ratio"] == min(g["oracle_ratio_env"] for g in run["decision_goal"]["scenarios"].values())
    html_path, json_path = write_protocol_report(res, tmp_path / "report")
    page = html_path.read_text()
    assert "False-alarm rate vs recall (lower is better): heatwave+new-supplier" in page and "oracle" in page
    assert json.loads(json_path.read_text())["summary"]["met_all"] == s["met_all"]
