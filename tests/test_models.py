"""models/: estimator contract, training rules, scoring input checks, artifact integrity, experiment report."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from benchmarks.synthetic_parts import synthetic_part_history
from models.dataset import dataset_from_frames
from models.estimator import DefectModel, signal_of
from models.metrics import choose_threshold
from models.regimes import assign_regimes, cv_groups, time_folds
from models.scoring import Scorer
from models.training import TrainConfig, train_frames
from pq.errors import FeatureMismatch, ModelError, NotFittedError


def _ds(n=3000, seed=1, scenario="normal", tail=0, start="2024-04-01"):
    f, p = synthetic_part_history(n_parts=n, n_signals=5, seed=seed, scenario=scenario, cycle_s=300.0,
                             unlabelled_tail=tail, start=start)
    return dataset_from_frames(f, p)


@pytest.fixture(scope="module")
def trained():
    ds = _ds(tail=40)
    return ds, train_frames(ds, TrainConfig(feature_set_version="frames", seed=7))


@pytest.mark.timeout(900)  # catches a hang only: training on 2 busy cores took up to 280 s
def test_label_delay_parts_are_left_out_not_good():
    ds = _ds(tail=40)
    assert ds.n_unlabelled == 40 and len(ds) == 3000 - 40
    assert set(np.unique(ds.y)) <= {0, 1}


@pytest.mark.timeout(900)  # catches a hang only: training on 2 busy cores took up to 280 s
def test_estimator_contract_unfitted_and_columns():
    m = DefectModel(num_leaves=7)
    assert m.get_params()["num_leaves"] == 7 and not hasattr(m, "booster_")
    with pytest.raises(NotFittedError):
        m.predict_proba(pd.DataFrame({"a": [1.0]}))
    ds = _ds(n=1500)
    assert m.fit(ds.X, ds.y, num_boost_round=5) is m
    assert m.booster_ and m.feature_names_ == list(ds.X.columns)
    with pytest.raises(FeatureMismatch, match="missing"):
        m.predict_proba(ds.X.drop(columns=[ds.X.columns[0]]))
    p = m.predict_proba(ds.X)
    assert p.shape == (len(ds), 2) and np.allclose(p.sum(axis=1), 1)


@pytest.mark.timeout(900)  # catches a hang only: training on 2 busy cores took up to 280 s
def test_training_is_reproducible_and_card_states_threshold(trained):
    ds, out = trained
    again = train_frames(ds, TrainConfig(feature_set_version="frames", seed=7))
    assert again.threshold == out.threshold
    assert np.allclose(again.oof_proba, out.oof_proba)
    card = out.card
    assert card["threshold"]["rule"] == "alarm_budget" and card["threshold"]["alarm_budget_per_h"] == 2.0
    assert out.metrics["alerts_per_h"] <= 2.0 + 1e-9
    assert card["data"]["unlabelled_left_out"] == 40
    assert {"ambient", "humidity", "shift"} <= set(out.regime_metrics)
    assert out.metrics["auc"] > 0.6


@pytest.mark.timeout(900)  # catches a hang only: training on 2 busy cores took up to 280 s
def test_validation_never_puts_a_day_or_lot_on_both_sides():
    from models.regimes import split_rows

    ds = _ds()
    meta = ds.meta.copy()
    meta["material_lot"] = [f"lot-{i // 500}" for i in range(len(meta))]  # lots run across midnight
    folds = time_folds(meta, 3)
    day = pd.to_datetime(meta["cycle_end"]).dt.floor("D").to_numpy()
    lot = meta["material_lot"].to_numpy()
    for f in range(3):
        tr, va = split_rows(meta, folds, f)
        assert len(tr) > 0 and len(va) > 0
        assert not set(day[tr]) & set(day[va])
        assert not set(lot[tr]) & set(lot[va])
    assert len(np.unique(cv_groups(meta))) >= 1


@pytest.mark.timeout(900)  # catches a hang only: training on 2 busy cores took up to 280 s
def test_threshold_rules():
    rng = np.random.default_rng(0)
    y = (rng.random(1000) < 0.1).astype(int)
    p = np.clip(y * 0.5 + rng.random(1000) * 0.5, 0, 1)
    thr, rule = choose_threshold(p, y, hours=100.0, alarm_budget_per_h=0.5)
    assert (p >= thr).sum() <= 50 and rule["rule"] == "alarm_budget"
    thr, _ = choose_threshold(p, y, hours=100.0, target_recall=0.9)
    assert ((p >= thr) & (y == 1)).sum() / y.sum() >= 0.9
    with pytest.raises(ModelError):
        choose_threshold(p, y, 1.0)


@pytest.mark.timeout(900)  # catches a hang only: training on 2 busy cores took up to 280 s
def test_bad_input_errors_say_what_to_do():
    ds = _ds(n=1500)
    with pytest.raises(ModelError, match="at least 5000 labelled parts"):
        train_frames(ds, TrainConfig(feature_set_version="f", min_labelled=5000))
    single = ds.subset(ds.y.to_numpy() == 0)
    with pytest.raises(ModelError, match="single-class|good parts"):
        train_frames(single, TrainConfig(feature_set_version="f"))
    ds.X["sig000_x__slope"] = np.nan  # a statistic both kinds of model use
    with pytest.raises(ModelError, match="no value for any training part.*sig000_x__slope"):
        train_frames(ds, TrainConfig(feature_set_version="f"))
    out = train_frames(ds, TrainConfig(feature_set_version="f", drop_empty_features=True))
    assert "sig000_x__slope" not in out.feature_names


@pytest.mark.timeout(900)  # catches a hang only: training on 2 busy cores took up to 280 s
def test_naive_model_uses_process_signals_only(trained):
    ds, _ = trained
    out = train_frames(ds, TrainConfig(feature_set_version="frames", kind="naive"))
    assert not any(f.startswith("ctx__") or f.endswith("__dev_baseline") for f in out.feature_names)


def test_feature_selection_per_kind():
    from models.training import _derived_refs, select_features
    from pq.features.spec import load_feature_set

    fs = load_feature_set()
    cols, refs = list(fs.feature_names), _derived_refs(fs.version)
    naive = select_features(cols, "naive", derived_refs=refs)
    env = select_features(cols, "environment-aware", derived_refs=refs)
    # pilots' way: process signals only, nothing computed from context (the dryer dew point excess)
    assert "melt_temp_c__mean" in naive and "melt_x_hold" in naive
    assert not any(c.startswith("ctx__") or c.endswith("__dev_baseline") for c in naive)
    assert "dew_point_excess_c" not in naive
    # environment-aware: deviations instead of levels of baselined signals, wear as risk context
    assert "melt_temp_c__dev_baseline" in env and "melt_temp_c__slope" in env
    assert not {"melt_temp_c__mean", "melt_temp_c__end__mean", "hold_pressure_bar__max", "cushion_mm__last",
                "melt_x_hold", "melt_minus_nozzle_c", "ctx__ambient_temp_c", "ctx__lot_mfi_g10min"} & set(env)
    assert {"ctx__tool_wear_shots", "dew_point_excess_c"} <= set(env)


@pytest.mark.timeout(900)  # catches a hang only: training on 2 busy cores took up to 280 s
def test_scorer_explains_per_signal_and_flags_unseen_nan(trained):
    ds, out = trained
    scorer = Scorer.from_bytes(out.artifact())
    vec = ds.X.iloc[5].to_dict()
    s = scorer.score(vec, explain=True)
    assert 0 <= s.probability <= 1 and s.threshold == out.threshold and not s.flags
    sigs = [c.signal for c in s.contributions]
    assert len(sigs) == len(set(sigs)) and all("__" not in x for x in sigs)
    # per-signal sums equal LightGBM's own per-feature TreeSHAP summed by signal
    contrib = scorer.model.booster_.predict(ds.X.iloc[[5]][scorer.feature_names].to_numpy(), pred_contrib=True)[0]
    by_sig = pd.Series(contrib[:-1], index=[signal_of(f) for f in scorer.feature_names]).groupby(level=0).sum()
    for c in s.contributions:
        assert c.contribution == pytest.approx(by_sig[c.signal])
        assert c.direction in ("high", "low", "normal", "unknown")
    proc = [c for c in s.contributions if c.kind == "process"]
    assert proc and proc[0].normal_lo is not None and proc[0].normal_lo < proc[0].normal_hi
    vec["sig001_x__dev_baseline"] = float("nan")
    s2 = scorer.score(vec)
    assert "nan_unseen:sig001_x__dev_baseline" in s2.flags
    with pytest.raises(FeatureMismatch, match="missing: sig000_x__dev_baseline"):
        scorer.score({k: v for k, v in vec.items() if k != "sig000_x__dev_baseline"})
    p = scorer.score_frame(ds.X.iloc[:50])
    assert p.shape == (50,) and scorer.score(ds.X.iloc[3].to_dict()).probability == pytest.approx(p[3])


@pytest.mark.timeout(900)  # catches a hang only: training on 2 busy cores took up to 280 s
def test_explanations_give_operators_the_reading_even_from_deviation_only_models(trained):
    """The environment-aware model scores deviations, not levels; the alert still needs the value."""
    ds, out = trained
    scorer = Scorer.from_bytes(out.artifact())
    baselined = [c for c in scorer.signals if f"{c}__dev_baseline" in scorer.feature_names
                 and f"{c}__mean" not in scorer.feature_names]
    assert baselined, "the environment-aware model uses deviations instead of levels"
    vec = ds.X.iloc[7].to_dict()
    ctx = ds.meta.iloc[7].to_dict()
    s = scorer.score(vec, context=ctx, explain=True)
    for c in s.contributions:
        if c.signal in baselined:
            assert c.value is not None and c.direction != "unknown", c
            if f"{c.signal}__mean" in vec:  # the served reading itself
                assert c.value == pytest.approx(vec[f"{c.signal}__mean"])
    # without the level in the vector: today's normal plus the deviation
    lean = {k: v for k, v in vec.items() if not k.endswith("__mean")}
    lean |= {k: vec[k] for k in scorer.feature_names}
    for c in scorer.score(lean, context=ctx, explain=True).contributions:
        if c.signal in baselined:
            mid = (c.normal_lo + c.normal_hi) / 2
            assert c.value == pytest.approx(mid + vec[f"{c.signal}__dev_baseline"])


@pytest.mark.timeout(900)  # catches a hang only: training on 2 busy cores took up to 280 s
def test_corrupted_or_foreign_artifact_is_a_clear_error(trained):
    _, out = trained
    blob = out.artifact()
    with pytest.raises(ModelError, match="corrupted"):
        Scorer.from_bytes(blob[:-20])
    with pytest.raises(ModelError, match="sha256"):
        Scorer.from_bytes(blob, expected_sha256="0" * 64)
    doc = json.loads(gzip.decompress(blob))
    doc["format"] = "other/9"
    with pytest.raises(ModelError, match="format"):
        Scorer.from_bytes(gzip.compress(json.dumps(doc).encode()))


@pytest.mark.timeout(900)  # catches a hang only: training on 2 busy cores took up to 280 s
def test_experiment_and_report(tmp_path):
    from models.experiment import run_experiment
    from models.report import write_report

    train = _ds(n=3000)
    evals = {"heatwave": _ds(n=1200, seed=5, scenario="heatwave", start="2024-07-01")}
    res = run_experiment(train, evals, TrainConfig(feature_set_version="frames"))
    g = res["goal"]["scenarios"]["heatwave"]
    assert g["far_naive"] > g["far_env"]  # a hot hall fools the naive model
    html_path, json_path = write_report(res, tmp_path)
    text = html_path.read_text()
    assert "plotly" in text and "heatwave" in text and "False-alarm rate by ambient" in text
    assert json.loads(json_path.read_text())["scenarios"]["heatwave"]["naive"]["overall"]["far"] == g["far_naive"]
    # frames without simulator ground truth: the oracle columns say so instead of inventing a limit
    env = res["scenarios"]["heatwave"]["environment-aware"]
    assert env["overall"]["oracle_recall"] == env["diversion"]["oracle_ratio"] == "no ground truth"
    assert "no ground truth" in text and "Diversion at the validation quantile" in text
    assert env["diversion"]["threshold"] == res["models"]["environment-aware"]["validation_diversion"]["threshold"]


@pytest.mark.timeout(30)
def test_regimes_bands():
    meta = pd.DataFrame({"ambient_temp_c": [10.0, 20.0, 35.0, np.nan], "shift": ["A", "B", None, "A"]})
    r = assign_regimes(meta)
    assert list(r["ambient"]) == ["<18 °C", "18–24 °C", "≥30 °C", "unknown"]
    assert list(r["shift"]) == ["A", "B", "unknown", "A"]
