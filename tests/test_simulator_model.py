"""Simulator without a network: the line model, scenarios, history generation, describe, CLI input errors.

These stay fast (a few seconds on a quiet machine; their timeouts only catch a hang) so the live-server
checks in test_simulator.py can take their time.
"""

from __future__ import annotations

import socket
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from simulators.cli import simulate
from simulators.history import generate_history
from simulators.line_model import LineModel
from simulators.signals import CONTINUOUS_SIGNALS, SIGNALS

START = datetime(2025, 6, 2, tzinfo=timezone.utc)


def _run(scenario: str, days: float, seed: int = 5, sample_hz: float = 1.0, lines: int = 2):
    """Per-part means of the continuous signals + parts/truth for ``lines`` lines."""
    rows = []
    for i in range(lines):
        m = LineModel(f"line-{i + 1}", seed=seed, start=START, sample_hz=sample_hz, scenario=scenario)
        while m.t_us < days * 86400e6:
            c = m.next_cycle()
            row = {**c.part, **{f"truth_{k}": v for k, v in c.truth.items()}}
            for cs in c.cont:
                row[cs.name] = float(np.nanmean(cs.values)) if len(cs.values) and not np.isnan(cs.values).all() else np.nan
                row[f"{cs.name}__status"] = int(cs.status.max()) if cs.status is not None and len(cs.status) else 0
            row.update({n: v for n, v, _ in c.events if n not in row})
            rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.timeout(300)  # CPU-bound; the bound only catches a hang (load 7 took > 60 s)
def test_model_is_deterministic_and_seed_matters():
    def first(seed):
        m = LineModel("line-1", seed=seed, start=START)
        return [m.next_cycle() for _ in range(20)]

    a, b, c = first(3), first(3), first(4)
    for x, y in zip(a, b):
        assert x.serial == y.serial and x.t_end_us == y.t_end_us and x.events == y.events
        for cx, cy in zip(x.cont, y.cont):
            assert cx.name == cy.name
            np.testing.assert_array_equal(cx.t_us, cy.t_us)
            np.testing.assert_array_equal(cx.values, cy.values)
    assert any(not np.array_equal(x.cont[4].values, z.cont[4].values) for x, z in zip(a, c))
    serials = [x.serial for x in a]
    assert serials[0] == "L1-000001" and serials == sorted(serials)
    # cycle time around 10-30 s, samples inside the window, never on the boundary
    for x in a:
        assert 10e6 <= x.t_end_us - x.t_start_us <= 30e6
        for cs in x.cont:
            assert cs.t_us.min() > x.t_start_us and cs.t_us.max() < x.t_end_us
            assert np.all(np.diff(cs.t_us) == 100_000)  # 10 Hz default
        assert x.t_start_us % 1000 == 500 and x.t_end_us % 1000 == 500


@pytest.mark.timeout(300)  # CPU-bound; the bound only catches a hang (load 7 took > 60 s)
def test_environment_moves_readings_not_the_defect_rate():
    days = 0.5
    base = _run("normal", days)
    rate = base["defect"].mean()
    assert 0.01 <= rate <= 0.05, rate
    assert base["shift"].nunique() == 2 and base["material_lot"].nunique() >= 8  # half a day from 00:00: C, A
    for name, checks in {
        # a hot hall reads like a heater overshoot: melt hotter than the (closed-loop) barrel zones,
        # smaller cushion, shorter injection; cooling time rises with the mould temperature
        "heatwave": [("ambient_temp_c", 7, 12), ("mould_temp_c", 3, 6), ("melt_temp_c", 3.5, 6),
                     ("barrel_zone2_temp_c", 0.8, 2.5), ("cooling_time_s", 0.3, 1.0), ("cushion_mm", -0.4, -0.05),
                     ("injection_time_s", -0.06, -0.02)],
        # humid air reads like a leaking check ring: smaller cushion, longer injection
        "humid": [("humidity_pct", 18, 30), ("dryer_dew_point_c", 3, 8), ("cushion_mm", -0.8, -0.3),
                  ("injection_time_s", 0.02, 0.06)],
        # a stiff lot's set-points read like a pressure overshoot: hotter, harder, faster, smaller cushion
        "new-supplier": [("lot_mfi_g10min", -8, -4), ("lot_moisture_pct", 0.05, 0.15), ("melt_temp_c", 10, 22),
                         ("injection_pressure_bar", 10, 200), ("cushion_mm", -0.7, -0.2),
                         ("injection_time_s", -0.07, -0.025)],
    }.items():
        other = _run(name, days)
        for col, lo, hi in checks:
            shift = other[col].mean() - base[col].mean()
            assert lo <= shift <= hi, (name, col, shift)
        # well-controlled process: the true defect rate stays of the same order (paired draws)
        assert abs(other["defect"].mean() - rate) < 0.01, (name, other["defect"].mean(), rate)
        assert abs(other["truth_defect_prob"].mean() - base["truth_defect_prob"].mean()) < 0.01


def test_season_day_gives_another_seasons_hall_climate():
    """A demo puts a January-trained line into July at once: the hall is warmer and more humid by the
    season's swing, while the line's own draws (serials, material lots) stay the same."""
    jan = datetime(2025, 1, 6, tzinfo=timezone.utc)
    clock, july = (LineModel("line-1", seed=2, start=jan, sample_hz=1.0, season_day=d) for d in (None, 188))
    a, b = [clock.next_cycle() for _ in range(40)], [july.next_cycle() for _ in range(40)]
    assert [c.serial for c in a] == [c.serial for c in b]
    assert [c.part["material_lot"] for c in a] == [c.part["material_lot"] for c in b]
    d_amb = np.mean([y.part["ambient_temp_c"] - x.part["ambient_temp_c"] for x, y in zip(a, b)])
    d_hum = np.mean([y.part["humidity_pct"] - x.part["humidity_pct"] for x, y in zip(a, b)])
    assert 4.0 < d_amb < 6.0 and 14.0 < d_hum < 20.0, (d_amb, d_hum)
    july.set_season_day(None)  # back to the clock's season from the next cycle on
    assert july.season_day is None
    with pytest.raises(ValueError, match="season_day"):
        july.set_season_day(400)


@pytest.mark.timeout(300)  # CPU-bound; the bound only catches a hang (load 7 took > 60 s)
def test_defects_are_learnable_relative_to_conditions():
    df = _run("normal", 1.5, lines=2)
    nok = df[df["defect"]]
    assert set(nok["truth_mechanism"]) >= {"short_shot", "flash", "sink_mark", "splay"}
    # short shots: melt low relative to what the lot's MFI needs
    need = df["melt_temp_c"] - 2.6 * (22 - df["lot_mfi_g10min"])
    resid = need - need.groupby(df["product"]).transform("median")
    short = df["truth_mechanism"] == "short_shot"
    assert resid[short].mean() < resid[~df["defect"]].mean() - 4
    # splay: dew point high for the humidity
    dp_excess = df["dryer_dew_point_c"] - (-40 + 0.22 * (df["humidity_pct"] - 48))
    assert dp_excess[df["truth_mechanism"] == "splay"].mean() > dp_excess[~df["defect"]].mean() + 4
    # sink marks: low hold pressure (per-cycle hold = max of the curve's phase mean is lower)
    sink = df["truth_mechanism"] == "sink_mark"
    assert df.loc[sink, "cushion_mm"].mean() > df.loc[~df["defect"], "cushion_mm"].mean()


@pytest.mark.timeout(300)  # CPU-bound; the bound only catches a hang (load 7 took > 60 s)
def test_sensor_scenarios():
    drift = _run("sensor-drift", 0.25, lines=1)
    normal = _run("normal", 0.25, lines=1)
    d = (drift["melt_temp_c"] - normal["melt_temp_c"]).to_numpy()
    assert d[-50:].mean() > 10 and abs(d[:5].mean()) < 1  # drifts, starting from zero
    assert (drift["defect"] == normal["defect"]).all()  # the parts do not care
    stuck = _run("stuck-sensor", 0.05, lines=1, sample_hz=10)
    assert np.allclose(stuck["mould_temp_c"], stuck["mould_temp_c"].iloc[0], rtol=0, atol=1e-9)
    bad = _run("bad-quality", 0.25, lines=1)
    assert (bad["vibration_mm_s__status"] == 0x808C0000).mean() > 0.05
    assert bad["vibration_mm_s"].isna().any()  # Bad -> no value
    assert (bad["melt_temp_c__status"] == 0x40900000).any() and bad["melt_temp_c"].notna().all()  # Uncertain keeps it
    assert (normal[[f"{s}__status" for s in CONTINUOUS_SIGNALS]] == 0).all().all()


@pytest.mark.timeout(300)  # CPU-bound; the bound only catches a hang (load 7 took > 60 s)
def test_history_tables_files_and_speed(tmp_path):
    res = generate_history(days=0.1, lines=2, seed=11, scenario="normal,0.05:heatwave", start=START,
                           out_dir=tmp_path / "h")
    again = generate_history(days=0.1, lines=2, seed=11, scenario=[(0, "normal"), (0.05, "heatwave")], start=START)
    pd.testing.assert_frame_equal(res.parts, again.parts)
    assert res.samples.equals(again.samples)  # (assert_frame_equal is slow on 2M rows with strings)
    assert res.stats["x_realtime"] >= 100
    p = res.parts
    assert set(p["scenario"]) == {"normal", "heatwave"}
    assert p["inspected_at"].notna().all() and (p["inspected_at"] > p["cycle_end"]).all()
    assert str(p["cycle_start"].dtype) == "datetime64[ns, UTC]"
    assert p.groupby("line_id")["serial"].apply(lambda s: s.is_monotonic_increasing).all()
    assert set(p.columns) >= {"line_id", "serial", "cycle_start", "cycle_end", "product", "material_lot", "supplier",
                              "shift", "ambient_temp_c", "humidity_pct", "lot_moisture_pct", "lot_mfi_g10min",
                              "dryer_dew_point_c", "tool_wear_shots", "defect", "defect_code", "inspected_at"}
    assert ((p["defect_code"].notna()) == p["defect"]).all()
    s = res.samples
    assert list(s.columns) == ["line_id", "tag", "ts", "value", "status", "value_text"]
    assert s["value"].dtype == np.float64 and s["status"].dtype == np.uint32
    assert str(s["ts"].dtype) == "datetime64[ns, UTC]"
    # every continuous sample of a part lies inside its window
    part = p.iloc[10]
    w = s[(s.line_id == part.line_id) & (s.ts > part.cycle_start) & (s.ts <= part.cycle_end)]
    assert set(CONTINUOUS_SIGNALS) <= set(w["tag"])
    assert w.loc[w.tag == "part_serial", "value_text"].tolist() == [part.serial]
    gt = res.ground_truth
    assert len(gt) == len(p) and set(gt.columns) >= {"line_id", "serial", "mechanism", "defect_prob"}
    for f in ("parts.parquet", "samples.parquet", "ground_truth.parquet", "tags.csv", "manifest.json"):
        assert (tmp_path / "h" / f).exists()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "h" / "parts.parquet"), p)
    assert len(pd.read_parquet(tmp_path / "h" / "samples.parquet")) == len(s)
    tags = pd.read_csv(tmp_path / "h" / "tags.csv")
    assert len(tags) == len(SIGNALS) and {"name", "unit", "role", "low", "high", "node_id"} <= set(tags.columns)


def test_describe_and_cli_bad_input():
    r = CliRunner().invoke(simulate, ["describe"])
    assert r.exit_code == 0
    for needle in ("short_shot", "splay", "heatwave", "ns=2;s=line-1.InjectionUnit.melt_temp_c", "EngineeringUnits"):
        assert needle in r.output
    cases = [
        ["--sample-hz", "-1"],
        ["serve", "--scenario", "sunny"],
        ["serve", "--lines", "0"],
        ["history", "--days", "-2", "--out", "x"],
        ["history", "--scenario", "normal,x:heatwave", "--out", "x"],
        ["serve", "--signal-hz", "melt_temp_c=0"],
        ["set-scenario", "sunny"],
    ]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cases.append(["serve", "--port", str(busy.getsockname()[1])])
        for args in cases:
            r = CliRunner().invoke(simulate, args)
            assert r.exit_code != 0, args
            assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit), args
            assert "Error" in r.output, (args, r.output)
