"""Alarm KPIs per operator and shift (pq.monitoring.duty_kpis) on both stores."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from pq.monitoring.duty_kpis import UNASSIGNED, duty_kpis
from pq.storage import schema
from pq.storage.catalog import ensure_line

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)


def _alert(i, *, who, shift, minutes_ago, ack_after_s=None, level=None, kind="episode", state="active"):
    raised = NOW - timedelta(minutes=minutes_ago)
    return {"id": str(uuid.uuid4()), "line_id": "line-1", "kind": kind, "cause": f"c{i}", "state": state,
            "severity": "high", "title": "t", "raised_at": raised, "updated_at": raised, "repeat_count": 1,
            "assigned_to": who, "shift": shift, "escalation_level": level,
            "acked_at": raised + timedelta(seconds=ack_after_s) if ack_after_s is not None else None}


def test_duty_kpis_per_operator_and_shift(store):
    rows = [_alert(0, who="ann", shift="A", minutes_ago=600, ack_after_s=60),
            _alert(1, who="ann", shift="A", minutes_ago=598, ack_after_s=120),
            _alert(2, who="ann", shift="A", minutes_ago=300, level=1),
            _alert(3, who="bob", shift="B", minutes_ago=100, ack_after_s=400, level=2),
            _alert(4, who=None, shift=None, minutes_ago=50),
            _alert(5, who="bob", shift="B", minutes_ago=40, kind="system"),  # the roster alarm: not counted
            _alert(6, who="bob", shift="B", minutes_ago=30, state="suppressed"),  # held back by a flood
            _alert(7, who="ann", shift="A", minutes_ago=60 * 30)]  # outside the 24 h
    ensure_line(store, "line-1")
    parts = [{"line_id": "line-1", "serial": f"S{i}", "cycle_end": NOW - timedelta(minutes=i),
              "shift": "A" if i % 4 else "B", "created_at": NOW} for i in range(400)]  # A 3/4, B 1/4 of the parts
    with store.engine.begin() as conn:
        conn.execute(schema.alerts.insert(), rows)
        conn.execute(schema.alert_events.insert(), [{"id": str(uuid.uuid4()), "alert_id": rows[1]["id"],
                                                      "event": "shelved", "at": NOW - timedelta(minutes=500),
                                                      "username": "ann"}])
        conn.execute(schema.parts.insert(), parts)
    k = duty_kpis(store, hours=24, now=NOW)
    assert set(k["operators"]) == {"ann", "bob", UNASSIGNED} and set(k["shifts"]) == {"A", "B", "(unknown)"}
    ann = k["operators"]["ann"]
    assert ann["alarms"] == 3 and ann["acknowledged"] == 2 and ann["ack_median_s"] == 90.0
    assert ann["escalated_share"] == round(1 / 3, 3) and ann["shelved_share"] == round(1 / 3, 3)
    assert ann["hours_on_duty"] == 18.0 and ann["per_10min_avg"] == round(3 / (18 * 6), 3)
    assert ann["per_10min_peak"] == 2  # two alarms within 2 minutes
    bob = k["shifts"]["B"]
    assert bob["alarms"] == 1 and bob["escalated_share"] == 1.0 and bob["hours_on_duty"] == 6.0
    assert k["operators"][UNASSIGNED]["alarms"] == 1
