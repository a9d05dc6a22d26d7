"""The robustness claim on a small simulator run: a process-only model trained on one winter floods in a
heatwave and with a new supplier; the environment-aware model stays quiet at comparable recall.

Full-size run and its figures: docs/models.md ("Measured on the simulator"). Here: 6 days of January
for training, 1 day per held-out scenario at 1 Hz, about 30-40 s on 2 shared cores.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from models.experiment import run_experiment
from models.history import dataset_from_history_dir
from models.training import TrainConfig
from pq.features.spec import load_feature_set
from simulators.history import generate_history

UTC = timezone.utc


# CPU-bound (histories, two models, five held-out sets): under 2 min on a quiet 2-core machine,
# 3-4 min on a busy one. The bound only catches a hang; speed is `pq bench train`'s business.
@pytest.mark.timeout(900)
def test_env_aware_stays_quiet_where_the_naive_model_floods(tmp_path):
    fs = load_feature_set()

    def history(name, scenario, days, seed, start):
        generate_history(days=days, seed=seed, scenario=scenario, sample_hz=1.0, start=start, out_dir=tmp_path / name,
                         keep_samples=False)
        return dataset_from_history_dir(tmp_path / name, fs)

    train = history("normal", "normal", 6, 11, datetime(2025, 1, 6, tzinfo=UTC))
    evals = {"heatwave": history("heatwave", "heatwave", 1, 100, datetime(2025, 7, 7, tzinfo=UTC)),
             "new-supplier": history("new-supplier", "new-supplier", 1, 102, datetime(2025, 3, 10, tzinfo=UTC))}
    res = run_experiment(train, evals, TrainConfig(feature_set_version=fs.version, alarm_budget_per_h=2.0))
    for name, g in res["goal"]["scenarios"].items():
        # the full run measured naive/env FAR ratios of 15-29 (and 30-800 where the naive model floods on
        # other seeds); 5 is the goal, asserted here with room for a quarter of the data
        assert g["far_naive"] >= 0.05, (name, g)  # the naive model floods: >= 5 % of good parts alarmed
        assert g["far_env"] * 5 <= g["far_naive"], (name, g)
        assert g["far_env"] <= 0.02, (name, g)  # the environment-aware model stays near its validation rate
        # comparable recall: the full run had env 0.52 vs naive 0.44 (heatwave), 0.53 vs 0.39 (new supplier)
        assert g["recall_env"] >= g["recall_naive"] - 0.1, (name, g)
