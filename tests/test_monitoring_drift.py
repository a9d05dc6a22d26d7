"""Drift explained by context on simulator histories (a new supplier is expected, a drifting sensor is
not), read from the store, the label-free precision estimate against labels, and the Monitoring page."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import insert, select

from pq.monitoring.drift_context import drift_explained, explain_drift, load_window
from pq.monitoring.precision_estimate import expected_precision, precision_estimate
from pq.storage import schema

UTC = timezone.utc
FS = "default-1"


@pytest.mark.timeout(20)
def test_js_distance_is_evidentlys_scale():
    from pq.monitoring.drift import JS_DISTANCE_DRIFT, js_distance

    rng = np.random.default_rng(3)
    ref = rng.normal(0, 1, 5000)
    assert js_distance(ref, rng.normal(0, 1, 3000)) < 0.05 < JS_DISTANCE_DRIFT < js_distance(ref, rng.normal(0.5, 1, 3000))
    # all recent values beyond the reference's top decile: the most ten decile bins can show (the
    # natural-log maximum of disjoint histograms is sqrt(ln 2) = 0.83)
    assert 0.7 < js_distance(ref, ref + 100) == js_distance(ref, ref + 1000) < math.sqrt(math.log(2))


def _history(days: float, scenario: str, start: datetime, seed: int) -> pd.DataFrame:
    """One frame per part: the default feature set computed by pq's batch path, joined with the
    parts table's context (supplier, lot, product, shift, ambient...)."""
    from pq.features.batch import compute_batch
    from pq.features.spec import load_feature_set
    from simulators.history import generate_history

    fs = load_feature_set()
    assert fs.version == FS
    res = generate_history(days=days, seed=seed, scenario=scenario, start=start)
    feats = compute_batch(fs, res.samples, res.parts, tags=res.tags.rename(columns={"low": "low_limit", "high": "high_limit"}))
    return feats.reset_index().merge(res.parts, on=["line_id", "serial"])


@pytest.fixture(scope="module")
def histories():
    """A day of normal production in March (the training reference, and the baseline fitted on its good
    parts as training does), then half a day a week later: NovaResin lots, or a melt thermocouple
    drifting up 3 °C/h (same conditions as a normal day)."""
    from models.dataset import dataset_from_frames, fit_baseline

    reference = _history(1.0, "normal", datetime(2025, 3, 3, tzinfo=UTC), seed=1)
    ds = dataset_from_frames(reference.set_index(["line_id", "serial"]).filter(like="__"), reference, FS)
    baseline = fit_baseline(ds)
    later = datetime(2025, 3, 10, tzinfo=UTC)
    return {"reference": reference, "baseline": baseline,
            "new-supplier": _history(0.5, "new-supplier", later, seed=2),
            "sensor-drift": _history(0.5, "sensor-drift", later, seed=2),
            "normal": _history(0.5, "normal", later, seed=2)}


@pytest.mark.timeout(300)
def test_new_supplier_is_expected_and_a_drifting_sensor_is_not(histories):
    ref, bl = histories["reference"], histories["baseline"]

    supplier = explain_drift(ref, histories["new-supplier"], baseline=bl).by_signal()
    # the scenario's set-points compensate the stiffer lots: hotter melt, higher pressures
    for signal in ("melt_temp_c", "injection_pressure_bar", "hold_pressure_bar", "nozzle_temp_c"):
        s = supplier[signal]
        assert s.status == "drifting" and s.verdict == "expected", (signal, s)
        assert abs(s.deviation_shift_sd) < 1.5 and "expected for today's conditions" in s.sentence
    melt = supplier["melt_temp_c"]
    assert melt.shift > 8 and melt.sentence.startswith("Melt temp moved +"), melt.sentence
    assert "lot melt flow (MFI)" in melt.sentence  # the baseline's reason: the lots' MFI fell
    changes = " | ".join(c.words for c in explain_drift(ref, histories["new-supplier"], baseline=bl).context)
    assert "supplier Polymera -> NovaResin (100% of parts)" in changes, changes

    fault = explain_drift(ref, histories["sensor-drift"], baseline=bl)
    by = fault.by_signal()
    assert by["melt_temp_c"].verdict == "unexpected" and by["melt_temp_c"].deviation_shift_sd > 3
    assert "not explained by conditions" in by["melt_temp_c"].sentence
    assert [s.signal for s in fault.signals if s.verdict == "unexpected"] == ["melt_temp_c"]  # nothing else
    assert fault.signals[0].signal == "melt_temp_c"  # unexpected first
    assert not any("supplier" in c.words for c in fault.context)  # no context change behind it

    # a plain offset on one reading (a pressure transducer's zero shifted), conditions as on a normal day
    offset = histories["normal"].copy()
    offset["injection_pressure_bar__mean"] += 15.0
    normal, shifted = (explain_drift(ref, f, baseline=bl).by_signal() for f in (histories["normal"], offset))
    assert normal["injection_pressure_bar"].verdict in ("stable", "expected"), normal["injection_pressure_bar"]
    assert shifted["injection_pressure_bar"].verdict == "unexpected", shifted["injection_pressure_bar"]
    assert [s for s in shifted if shifted[s].verdict == "unexpected"] == ["injection_pressure_bar"]

    # without a baseline (none shipped, no stored deviations) nothing is called expected
    blind = explain_drift(ref, histories["new-supplier"]).by_signal()
    assert blind["melt_temp_c"].verdict == "no baseline" and "Changed at the same time" in blind["melt_temp_c"].sentence


def _store_parts(store, frame: pd.DataFrame, *, prefix: str, source: str, end: datetime) -> None:
    """Parts and their feature vectors as the edge (or a backfill) stores them, shifted to end at ``end``."""
    with store.engine.begin() as conn:
        if conn.execute(select(schema.lines.c.id).where(schema.lines.c.id == "line-1")).first() is None:
            conn.execute(insert(schema.lines), [{"id": "line-1", "name": "Line 1", "created_at": end}])
    cycle_end = pd.to_datetime(frame["cycle_end"], utc=True)
    offset = end - cycle_end.max().to_pydatetime()
    feature_cols = [c for c in frame.columns if "__" in c or c in ("melt_x_hold", "melt_minus_nozzle_c")]
    context_cols = ["supplier", "ambient_temp_c", "humidity_pct", "lot_moisture_pct", "lot_mfi_g10min",
                    "dryer_dew_point_c", "tool_wear_shots"]
    now = datetime.now(UTC)
    parts, vectors = [], []
    for (_, r), t in zip(frame.iterrows(), cycle_end):
        parts.append({"line_id": "line-1", "serial": f"{prefix}{r['serial']}", "cycle_end": t.to_pydatetime() + offset,
                      "product": r["product"], "material_lot": r["material_lot"], "shift": r["shift"],
                      "context": {c: (r[c].item() if hasattr(r[c], "item") else r[c]) for c in context_cols},
                      "created_at": now})
        vectors.append({c: (float(r[c]) if math.isfinite(float(r[c])) else None) for c in feature_cols})
    with store.engine.begin() as conn:
        conn.execute(insert(schema.parts), parts)
        ids = dict(conn.execute(select(schema.parts.c.serial, schema.parts.c.id)
                                .where(schema.parts.c.serial.like(f"{prefix}%"))).all())
        conn.execute(insert(schema.part_features), [
            {"part_id": ids[p["serial"]], "feature_set_version": FS, "source": source, "features": v, "computed_at": now}
            for p, v in zip(parts, vectors)])


@pytest.mark.timeout(300)
def test_drift_explained_reads_both_windows_from_the_store(histories, store):
    now = datetime(2025, 3, 20, 12, tzinfo=UTC)
    ref = histories["reference"].iloc[::3]           # a third of the day is plenty of reference
    recent = histories["new-supplier"].iloc[::3]
    _store_parts(store, ref, prefix="r-", source="backfill", end=now - timedelta(days=10))
    _store_parts(store, recent, prefix="n-", source="edge", end=now - timedelta(minutes=1))
    train_start, train_end = now - timedelta(days=12), now - timedelta(days=9)

    report = drift_explained(store, train_start, train_end, feature_set_version=FS, hours=24, now=now,
                             baseline=histories["baseline"])
    assert report.n_reference == len(ref) and report.n_recent == len(recent) and report.with_baseline
    by = report.by_signal()
    assert by["melt_temp_c"].verdict == "expected" and by["injection_pressure_bar"].verdict == "expected"
    assert any(c.name == "supplier" for c in report.context)
    # a long window is thinned evenly (every k-th part), not cut to its newest parts
    thin = load_window(store, train_start, train_end, feature_set_version=FS, limit=400)
    assert 300 <= len(thin) <= 400, len(thin)
    full = pd.to_datetime(ref["cycle_end"], utc=True)
    span = pd.to_datetime(thin["cycle_end"], utc=True)
    assert span.max() - span.min() > 0.9 * (full.max() - full.min())  # the whole day, start to end
    assert thin["melt_temp_c__mean"].notna().all() and set(thin["supplier"]) == {"Polymera"}
    assert thin["ambient_temp_c"].between(-30, 60).all() and thin["product"].notna().all()
    # a window with too few parts is not judged; another feature set has no vectors at all
    assert drift_explained(store, train_start, train_end, feature_set_version=FS, hours=24,
                           now=now + timedelta(days=2)) is None
    assert drift_explained(store, train_start, train_end, feature_set_version="other-1", hours=24, now=now) is None


@pytest.mark.timeout(300)
def test_label_free_precision_estimate_matches_the_inspections(store):
    """The simulator knows each part's true defect probability: perfectly calibrated scores. Divert the
    top 10 % of an unstable day; the mean probability of the diverted parts must match the share of
    them that inspection found defective (a wrong sign or an unnormalised mean would not)."""
    from simulators.history import generate_history

    assert expected_precision([0.9, 0.5, 0.7, None, float("nan")]) == pytest.approx(0.7)
    assert expected_precision([]) is None

    res = generate_history(days=1.0, seed=5, scenario="unstable-process", keep_samples=False)
    truth = res.ground_truth.merge(res.parts[["serial", "cycle_end"]], on="serial")
    p = truth["defect_prob"].to_numpy()
    diverted = truth[p >= np.quantile(p, 0.9)]
    now = datetime.now(UTC)
    shift = now - timedelta(minutes=1) - pd.to_datetime(truth["cycle_end"], utc=True).max().to_pydatetime()
    decided = [t.to_pydatetime() + shift for t in pd.to_datetime(diverted["cycle_end"], utc=True)]
    with store.engine.begin() as conn:
        conn.execute(insert(schema.predictions), [
            {"id": str(uuid.uuid4()), "decided_at": d, "line_id": "line-1", "serial": r.serial, "model_version_id": None,
             "feature_set_version": FS, "score": float(r.defect_prob), "threshold": 0.5, "decision": "at_risk"}
            for d, r in zip(decided, diverted.itertuples())])
    e = precision_estimate(store, days=2, now=now)
    assert e["diverted"] == len(diverted) > 300 and e["labelled"] == 0 and e["measured"] is None
    assert e["estimated"] == pytest.approx(diverted["defect_prob"].mean(), abs=1e-3)

    # labels arrive: inspection results for every diverted part
    with store.engine.begin() as conn:
        conn.execute(insert(schema.inspections), [
            {"line_id": "line-1", "serial": r.serial, "defect": bool(r.defect), "defect_code": None, "inspected_at": d,
             "source": "inspection"} for d, r in zip(decided, diverted.itertuples())])
    e = precision_estimate(store, days=2, now=now)
    assert e["labelled"] == len(diverted) and e["label_share"] == 1.0
    assert 0.3 < e["measured"] < 0.95, e  # far from 0.5, so a flipped estimate (1 - p) would be caught
    assert e["estimated"] == pytest.approx(e["measured"], abs=0.08), e
    assert sum(d["diverted"] for d in e["days"]) == len(diverted)


def _register_with_baseline(store, histories, train_start, train_end):
    """A registered version whose artifact ships the reference's context baseline (a tiny booster:
    the page reads the training window and the baseline, never the trees)."""
    from models import registry
    from models.estimator import DefectModel

    ref = histories["reference"]
    X = ref[["melt_temp_c__mean", "cushion_mm__last"]].astype(float)
    y = ref["defect"].astype(int).to_numpy().copy()
    y[:20] = 1  # a handful of positives so the booster can be fitted at all
    model = DefectModel(num_leaves=4).fit(X, pd.Series(y), num_boost_round=3)
    blob = model.to_bytes({"threshold": 0.5, "feature_set_version": FS, "kind": "environment-aware", "name": "defect",
                           "baseline": histories["baseline"].to_dict(), "card": {}})
    return registry.register(store, name="defect", kind="environment-aware", line_id=None, product=None,
                             feature_set_version=FS, feature_names=list(X.columns), train_start=train_start,
                             train_end=train_end, params=None, metrics=None, regime_metrics=None, threshold=0.5,
                             card={}, artifact=blob, trained_by="test")


@pytest.mark.timeout(300)
def test_monitoring_page_shows_the_verdict(histories, sqlite_store, tmp_path, browser):
    from tests._ui_helpers import add_users, login, running_ui, shot

    store = sqlite_store
    add_users(store)
    now = datetime.now(UTC)
    _store_parts(store, histories["reference"].iloc[::4], prefix="r-", source="backfill", end=now - timedelta(days=10))
    _store_parts(store, histories["sensor-drift"].iloc[::4], prefix="s-", source="edge", end=now - timedelta(minutes=1))
    _register_with_baseline(store, histories, now - timedelta(days=12), now - timedelta(days=9))
    with store.engine.begin() as conn:  # 4 diverted parts scored 0.5-0.8, two inspected: one defect
        conn.execute(insert(schema.predictions), [
            {"id": str(uuid.uuid4()), "decided_at": now - timedelta(minutes=10 + i), "line_id": "line-1",
             "serial": f"s-L1-00000{i + 1}", "model_version_id": None, "feature_set_version": FS, "score": sc,
             "threshold": 0.5, "decision": "at_risk"} for i, sc in enumerate((0.5, 0.6, 0.7, 0.8))])
        conn.execute(insert(schema.inspections), [
            {"line_id": "line-1", "serial": f"s-L1-00000{i + 1}", "defect": i == 0, "defect_code": None,
             "inspected_at": now - timedelta(minutes=5), "source": "inspection"} for i in range(2)])
    url = store.engine.url.render_as_string(hide_password=False)
    with running_ui(url, tmp_path / "var", tmp_path / "ui.log") as base:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(90_000)
        login(page, base, "eng")
        page.goto(base + "/monitoring")
        page.wait_for_selector("#monitoring-drift-table")
        verdict = page.inner_text("#monitoring-drift-verdict")
        assert "unexpected (melt_temp_c)." in verdict, verdict
        row = page.locator("#monitoring-drift-table tr", has_text="melt_temp_c").first.inner_text()
        assert "unexpected" in row and "not explained by conditions, check the sensor" in row, row
        assert "expected for today's conditions" in page.inner_text("#monitoring-drift-table")
        estimate = page.inner_text("#monitoring-precision-estimate")
        assert ("Precision of the 4 diverted parts over 14 days: estimated 65% from the model's probabilities, "
                "measured 50% on the 2 of them inspected so far.") in estimate, estimate
        shot(page, "engineer-monitoring-drift-explained")
