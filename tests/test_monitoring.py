"""pq.monitoring: PSI/JS maths, drift per day from the store, precision from feedback, alarm KPIs, ingest."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import insert, update

from benchmarks.synthetic_store import seed, upsert_health
from pq.alerts.discipline import AlarmBoard
from pq.edge.records import write_alerts
from pq.monitoring import alarm_kpis, js_divergence, precision_by_day, psi
from pq.monitoring.drift import drift_by_day
from pq.monitoring.ingest import ingest_health
from pq.monitoring.kpis import max_in_window
from pq.storage import schema


@pytest.mark.timeout(20)
def test_psi_and_js_separate_same_from_shifted():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 5000)
    same, shifted = rng.normal(0, 1, 3000), rng.normal(1.0, 1, 3000)
    assert psi(ref, same) < 0.02 and psi(ref, shifted) > 0.25
    assert 0 <= js_divergence(ref, same) < 0.01 < js_divergence(ref, shifted) <= 1
    assert psi(ref * 1000, same * 1000) == pytest.approx(psi(ref, same))  # scale-free (decile bins)
    with pytest.raises(ValueError, match="finite values"):
        psi([np.nan], [1.0])


@pytest.mark.timeout(60)
def test_drift_by_day_flags_the_shifted_signal(store):
    now = datetime(2026, 3, 10, 12, tzinfo=timezone.utc)
    rng = np.random.default_rng(1)
    with store.engine.begin() as conn:
        conn.execute(insert(schema.lines), [{"id": "l1", "name": "L1", "created_at": now}])
    parts, feats = [], []
    for i in range(1200):
        # 600 reference parts 20 days ago, then 300 per day on the last two days; on the last day
        # melt_temp_c moves up by one standard deviation, mould_temp_c does not.
        t = now - timedelta(days=20, minutes=-i) if i < 600 else now - timedelta(days=2 if i < 900 else 1, minutes=-(i % 300))
        shift = 1.0 if i >= 900 else 0.0
        parts.append({"line_id": "l1", "serial": f"s{i}", "cycle_end": t, "created_at": now})
        feats.append({"melt_temp_c__mean": float(rng.normal(230 + 2 * shift, 2)), "mould_temp_c__mean": float(rng.normal(50, 1))})
    with store.engine.begin() as conn:
        conn.execute(insert(schema.parts), parts)
        ids = [r[0] for r in conn.execute(schema.parts.select().with_only_columns(schema.parts.c.id).order_by(schema.parts.c.id))]
        conn.execute(insert(schema.part_features), [
            {"part_id": pid, "feature_set_version": "fs1", "source": "backfill" if k < 600 else "edge", "features": f,
             "computed_at": now} for k, (pid, f) in enumerate(zip(ids, feats))])
    rows = drift_by_day(store, now - timedelta(days=21), now - timedelta(days=19), feature_set_version="fs1", days=5, now=now)
    by = {(r.day, r.signal): r for r in rows}
    last, before = "2026-03-09", "2026-03-08"
    # PSI of two samples of one distribution (600 vs 300 parts, 10 bins) is about 0.05 by chance alone
    assert by[(last, "melt_temp_c")].psi > 0.5 and by[(before, "melt_temp_c")].psi < 0.2
    assert by[(last, "mould_temp_c")].psi < 0.2 and by[(last, "melt_temp_c")].n == 300


@pytest.mark.timeout(60)
def test_precision_kpis_and_ingest(store):
    now = datetime.now(timezone.utc)
    seed(store, lines=2, parts_per_line=20, alerts=0, active_alerts=0)
    # 30 alerts in 5 minutes on line-01, raised by the edge's own alarm board: it declares one flood
    board = AlarmBoard("line-01", flood_limit=10, flood_window_s=600)
    t0 = now - timedelta(minutes=8)
    stored = {}
    for i in range(30):
        cause = f"{'melt_temp_c' if i % 2 else 'cushion_mm'}_{i}"
        for ch in board.on_at_risk(cause, t0 + timedelta(seconds=10 * i), severity="medium", title="t",
                                   serial=f"S{i}", score=0.9):
            stored[ch.alert["id"]] = dict(ch.alert)
    write_alerts(store, list(stored.values()))
    a = schema.alerts
    with store.engine.begin() as conn:  # the operators' side: acknowledged after a minute, feedback on two thirds
        for i, r in enumerate(r for r in stored.values() if r["kind"] == "part"):
            conn.execute(update(a).where(a.c.id == r["id"]).values(
                acked_at=r["raised_at"] + timedelta(seconds=60), feedback=("confirmed", "false_alarm", None)[i % 3]))
    p = precision_by_day(store, days=1, now=now)
    assert sum(r["confirmed"] for r in p) == 10 and sum(r["false_alarm"] for r in p) == 10
    assert all(r["precision"] == 0.5 for r in p if r["alerts"] == 30)
    k = alarm_kpis(store, hours=1, now=now)
    line = k["lines"]["line-01"]
    assert line["alerts"] == 30 and line["flood_periods"] == 1 and line["per_10min_peak"] == 30
    assert 0 < line["time_in_flood_pct"] <= 100
    assert not line["within_guideline"] and line["ack_median_s"] == pytest.approx(60, abs=1)
    assert max_in_window([t0, t0 + timedelta(minutes=9), t0 + timedelta(minutes=11)]) == 2
    assert {c.rsplit("_", 1)[0] for c, _ in k["top_causes"]} == {"melt_temp_c", "cushion_mm"}
    assert "flood" not in {c for c, _ in k["top_causes"]}
    upsert_health(store, "connector:line-01", "line-01", "connected",
                  {"samples_per_s": 100.0, "spool": {"depth_records": 7, "oldest_age_s": 1.5}, "dropped": {"queue": 2},
                   "last_notification_at": (now - timedelta(seconds=3)).isoformat()})
    ing = {r["component"]: r for r in ingest_health(store, now)}
    c = ing["connector:line-01"]
    assert c["spool_depth"] == 7 and c["dropped"] == 2 and 2 < c["lag_s"] < 5
