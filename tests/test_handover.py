"""The shift handover: the shift clock, the summary against the alert table, notes, and `pq handover send`
through a real MQTT broker (Mosquitto on 127.0.0.1:1883)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from benchmarks.processes import poll_until
from pq.alerts import actions
from pq.alerts.discipline import AlarmBoard
from pq.auth.roles import Actor
from pq.config import load_settings
from pq.edge.records import write_alert_events, write_alerts, write_predictions
from pq.errors import ConfigError, InvalidRequest, PermissionDenied
from pq.monitoring.handover import add_note, handover_summary
from pq.shifts import Shift, ShiftClock, parse_shift_starts, zone
from pq.storage import schema
from pq.storage.catalog import ensure_line
from pq.storage.parts import upsert_inspections, upsert_parts
from tests._mqtt import subscriber
from pq.spool.writers import write_line_events

ROOT = Path(__file__).resolve().parents[1]
OPERATOR = Actor("ann", "operator", client="test")


# ------------------------------------------------------------------ the shift clock
def test_shift_clock_finds_shifts_across_midnight_and_daylight_saving():
    clock = ShiftClock(parse_shift_starts("C=22:00, A=06:00,B=14:00"), zone("Europe/Berlin"))
    # 03:30 UTC on the night Berlin springs forward: still the night shift that began at 22:00 local (21:00 UTC)
    night = clock.shift_at(datetime(2026, 3, 29, 3, 30, tzinfo=timezone.utc))
    assert (night.name, night.start, night.end) == ("C", datetime(2026, 3, 28, 21, 0, tzinfo=timezone.utc),
                                                    datetime(2026, 3, 29, 4, 0, tzinfo=timezone.utc))  # one hour short
    assert clock.next(night).name == "A" and clock.previous(night).name == "B"
    assert [s.name for s in clock.recent(night.start + timedelta(minutes=1), 4)] == ["C", "B", "A", "C"]
    assert clock.shift_at(night.end).start == night.end  # end is exclusive: the next shift starts there


@pytest.mark.parametrize("text, words", [("A=25:00", "expected NAME=HH:MM"), ("", "at least one shift"),
                                         ("A=06:00,A=14:00", "names must differ"),
                                         ("A=06:00,B=06:00", "same time")])
def test_bad_shift_settings_are_one_clear_line(text, words):
    with pytest.raises(ConfigError, match=words) as exc:
        load_settings(shift_starts=text)
    assert "PQ_SHIFT_STARTS" in str(exc.value)
    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Base'"):
        load_settings(plant_timezone="Mars/Base")


# ------------------------------------------------------------------ the summary
def _write(store, changes) -> None:
    write_alerts(store, [c.alert for c in changes if c.write_alert])
    write_alert_events(store, [c.event_row for c in changes if c.event_row])


def _seed(store, line: str, now: datetime) -> tuple[Shift, dict]:
    """A running shift (started 2 h ago) with alarms, a flood, operator actions, parts, diverted parts,
    inspections and degraded periods; and what an operator reading the alert table would count."""
    shift = Shift("A", now - timedelta(hours=2), now + timedelta(hours=6))
    ensure_line(store, line)
    board = AlarmBoard(line, flood_limit=3, flood_window_s=600, clear_after_ok=2)
    changes = board.on_at_risk("old_cause", now - timedelta(hours=3), title="Raised in the shift before", serial="P0",
                               severity="high")
    t0 = now - timedelta(minutes=90)
    for i in range(5):  # five new causes within ten minutes: the fourth starts a flood, the rest are held back
        changes += board.on_at_risk(f"cause_{i}", t0 + timedelta(seconds=30 * i), title=f"Cause {i} high",
                                    serial=f"S{i}", severity="medium", action=f"Check {i}")
    changes += board.on_scored(t0 + timedelta(minutes=30), causes={"cause_1", "cause_2", "cause_3", "cause_4", "flood"})
    changes += board.on_scored(t0 + timedelta(minutes=31), causes={"cause_1", "cause_2", "cause_3", "cause_4", "flood"})
    _write(store, changes)  # cause_0 and old_cause cleared after two OK parts (clear_after_ok=2)
    ids = {a.cause: a.id for a in board.open_alerts()}
    by_cause = {}
    for c in changes:
        by_cause[c.alert["cause"]] = c.alert
    actions.acknowledge(store, ids["cause_1"], actor=OPERATOR)
    actions.shelve(store, ids["cause_2"], actor=OPERATOR, reason="sensor being replaced", duration_s=3600)
    with store.engine.begin() as conn:  # an escalation as the edge records it
        conn.execute(schema.alert_events.insert().values(id=str(uuid.uuid4()), alert_id=ids["cause_3"], event="escalated",
                                                         at=now - timedelta(minutes=5), username="edge",
                                                         detail={"role": "shift_lead", "username": "bob"}))
    in_shift = [a for a in by_cause.values() if a["raised_at"] >= shift.start]
    held = [c for c in changes if c.event == "suppressed"]
    with store.engine.connect() as conn:
        open_now = conn.execute(select(schema.alerts.c.cause).where(
            schema.alerts.c.line_id == line, schema.alerts.c.cleared_at.is_(None))).scalars().all()

    parts, preds = [], []
    for i in range(12):
        end = now - timedelta(minutes=150 - 10 * i)  # the first three before the shift
        serial = f"{line}-{i:03d}"
        parts.append({"line_id": line, "serial": serial, "cycle_start": end - timedelta(seconds=20), "cycle_end": end,
                      "product": "housing-a", "material_lot": "L1", "shift": "A", "context": {}, "created_at": end})
        decision = "at_risk" if i in (4, 6, 8, 10) else "not_scored" if i == 5 else "ok"
        preds.append({"id": str(uuid.uuid4()), "decided_at": end, "line_id": line, "serial": serial,
                      "score": None if decision == "not_scored" else 0.9 if decision == "at_risk" else 0.1,
                      "threshold": 0.5, "decision": decision})
    upsert_parts(store, parts)
    write_predictions(store, preds)
    upsert_inspections(store, [{"line_id": line, "serial": f"{line}-004", "defect": True, "inspected_at": now},
                               {"line_id": line, "serial": f"{line}-006", "defect": False, "inspected_at": now}])
    write_line_events(store, [
        {"id": str(uuid.uuid4()), "line_id": line, "source": f"edge:{line}", "kind": "degraded",
         "started_at": now - timedelta(minutes=80), "ended_at": now - timedelta(minutes=70),
         "detail": {"reason": "melt temperature: no good value for 12 s"}},
        {"id": str(uuid.uuid4()), "line_id": line, "source": f"edge:{line}", "kind": "degraded",
         "started_at": now - timedelta(minutes=3), "ended_at": None,
         "detail": {"reason": "hall humidity sensor reports Bad"}},
        {"id": str(uuid.uuid4()), "line_id": line, "source": f"edge:{line}", "kind": "degraded",  # the shift before
         "started_at": now - timedelta(hours=5), "ended_at": now - timedelta(hours=4), "detail": {"reason": "old"}},
    ])
    expected = {"raised": len(in_shift), "held_in_flood": len(held), "called": len(in_shift) - len(held),
                "acknowledged": 1, "shelved": 1, "escalated": 1, "still_open": len(open_now)}
    return shift, expected


def test_summary_counts_match_the_alert_table(store):
    now = datetime.now(timezone.utc)
    shift, expected = _seed(store, "line-h", now)
    assert expected["held_in_flood"] >= 1 and expected["raised"] == 6  # five causes + the flood alarm itself

    s = handover_summary(store, "line-h", shift, now=now + timedelta(seconds=1))
    assert s.alarms == expected
    assert s.parts == {"made": 9, "scored": 8, "not_scored": 1, "diverted": 4}
    assert s.diverted == {"defect": 1, "ok": 1, "waiting": 2}
    assert s.waiting_serials == ["line-h-008", "line-h-010"]
    assert [d["reason"] for d in s.degraded] == ["melt temperature: no good value for 12 s",
                                                 "hall humidity sensor reports Bad"]
    watch = "\n".join(s.watch)
    assert "Shelved until" in watch and "sensor being replaced" in watch
    assert "acknowledged by ann" in watch and "Check 1" in watch
    assert "pq is still degraded" in watch and "hall humidity" in watch and "melt temperature" not in watch
    assert "2 diverted part(s) still wait for inspection: line-h-008, line-h-010" in watch
    assert s.running and "so far" in s.headline and s.headline in s.text()

    # the shift before saw only the old alarm and the old degraded period
    before = handover_summary(store, "line-h", Shift("C", shift.start - timedelta(hours=8), shift.start), now=now)
    assert (before.alarms["raised"], before.alarms["still_open"]) == (1, 1)
    assert before.parts["made"] == 3 and [d["reason"] for d in before.degraded] == ["old"]
    assert not before.running


def test_notes_are_role_checked_bounded_and_audited(store):
    now = datetime.now(timezone.utc)
    ensure_line(store, "line-n")
    shift = Shift("B", now - timedelta(hours=1), now + timedelta(hours=7))
    with pytest.raises(PermissionDenied):
        add_note(store, "line-n", shift, actor=None, note="anyone?")
    with pytest.raises(PermissionDenied):
        add_note(store, "line-n", shift, actor=Actor("x", "visitor"), note="unknown role")
    with pytest.raises(InvalidRequest, match="empty"):
        add_note(store, "line-n", shift, actor=OPERATOR, note="   ")
    with pytest.raises(InvalidRequest, match="at most"):
        add_note(store, "line-n", shift, actor=OPERATOR, note="x" * 5000)
    add_note(store, "line-n", shift, actor=OPERATOR, note="Dryer 2 door seal leaks; maintenance comes at 16:00")
    s = handover_summary(store, "line-n", shift, now=now)
    assert [(n["author"], n["note"]) for n in s.notes] == [("ann", "Dryer 2 door seal leaks; maintenance comes at 16:00")]
    assert "Dryer 2 door seal" in s.text()
    other = handover_summary(store, "line-n", Shift("A", shift.start - timedelta(hours=8), shift.start), now=now)
    assert other.notes == []
    with store.engine.connect() as conn:
        rows = conn.execute(select(schema.audit_log.c.username, schema.audit_log.c.action)
                            .where(schema.audit_log.c.action == "handover.note")).all()
    assert rows == [("ann", "handover.note")]


# ------------------------------------------------------------------ pq handover send

@pytest.mark.timeout(240)
def test_send_publishes_the_ended_shift_once_through_mqtt(tmp_path, settings_factory):
    from pq.storage import Store, migrate

    db = tmp_path / "pq.db"
    settings = settings_factory(database_url=f"sqlite:///{db}")
    store = Store.open(settings)
    migrate.upgrade(store)
    now = datetime.now(timezone.utc)
    # Shifts every 8 hours from the current hour: the previous shift is the 8 h before the current one.
    h = now.hour
    starts = ",".join(f"{n}={(h + 8 * k) % 24:02d}:00" for k, n in enumerate("ABC"))
    clock = ShiftClock(parse_shift_starts(starts))
    ended = clock.previous(clock.shift_at(now))
    ensure_line(store, "line-s")
    board = AlarmBoard("line-s")
    _write(store, board.on_at_risk("melt_temp_c", ended.start + timedelta(minutes=10), title="Melt temperature high",
                                   serial="S1", severity="high"))
    expected = handover_summary(store, "line-s", ended, now=now)
    assert expected.alarms["raised"] == 1 and expected.alarms["still_open"] == 1

    topic_root = f"pqtest/{uuid.uuid4().hex[:8]}"
    outputs = tmp_path / "outputs.toml"
    outputs.write_text(f'[[mqtt]]\nhost = "127.0.0.1"\nport = 1883\ntopic = "{topic_root}/{{line_id}}/{{event}}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("PQ_")}
    env |= {"PQ_DATABASE_URL": f"sqlite:///{db}", "PQ_DATA_DIR": str(tmp_path / "var"), "PQ_SHIFT_STARTS": starts,
            "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pq.cli", "handover", "send", "--line", "line-s", "--outputs", str(outputs)]
    sub, got = subscriber(f"{topic_root}/line-s/handover")
    try:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert "sent: Shift" in proc.stdout
        assert poll_until(lambda: got, timeout_s=60), "no handover message reached the broker"
        body = got[0]
        assert body["event"] == "handover"
        msg = body["alert"]
        assert msg["line_id"] == "line-s" and msg["shift"] == ended.name
        assert msg["alarms"] == expected.alarms and msg["parts"] == expected.parts
        assert "Melt temperature high" in msg["text"]
        sent = json.loads((tmp_path / "var" / "handover_sent.json").read_text())
        assert sent == {"line-s": ended.key}

        # --follow after a restart: the ended shift was already sent, so nothing goes out again ...
        follower = subprocess.Popen(cmd + ["--follow", "--check-every", "0.5"], env=env, cwd=ROOT,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = follower.stdout.readline()  # printed after its first pass over the lines
            assert line.startswith("following: the next handover goes out when shift"), (line, follower.stderr.read())
        finally:
            follower.terminate()
            out, err = follower.communicate(timeout=60)
        assert follower.returncode in (0, -15), err
        assert "sent:" not in out and len(got) == 1
    finally:
        sub.loop_stop()
        sub.disconnect()
