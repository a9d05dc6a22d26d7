"""Owners and escalation at the edge: an alarm is assigned to the on-duty operator when raised and
escalated on schedule while unacknowledged, also with the store down (roster from the local copy,
records kept by the spool), published to a real MQTT broker and a webhook that is down at first.
The clock is injected: minutes pass without sleeping."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import datetime, timedelta, timezone
from http.server import ThreadingHTTPServer

import pytest
from sqlalchemy import select

from benchmarks.processes import free_port, poll_until
from connectors.outputs.mqtt import MqttOutput
from connectors.outputs.webhook import WebhookOutput
from pq.alerts.roster import Duty, Roster
from pq.alerts.roster_store import set_duty
from pq.auth import users as users_mod
from pq.auth.roles import Actor
from pq.edge import records
from pq.edge.housekeeping import Housekeeper
from pq.edge.interfaces import PartEvent
from pq.edge.modelwatch import ModelWatcher
from pq.spool import Spool, SpoolDrainer
from pq.storage import schema
from tests.test_edge_runtime import LINE, RuleScorer, _cycle, _runtime
from tests._mqtt import subscriber
from tests.test_outputs import _Hook

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=timezone.utc)
ADMIN = Actor("root", "admin")


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now

    def advance(self, **kw):
        self.now += timedelta(**kw)


def _parts(rt, clock, melts, shift="A", start=0):
    """Decide parts, one per second of the injected clock; returns every change of every decision."""
    changes = []
    for i, m in enumerate(melts, start):
        items = _cycle(i, m)
        ev = items[-1]
        assert isinstance(ev, PartEvent)
        ev.context["shift"] = shift
        for d in rt.handle(items):
            changes += d.changes
        clock.advance(seconds=1)
    return changes


EPISODE = [250.0] * 3  # 3 of the last 10 parts at risk, one cause: an operator alarm (severity high)


def _watcher():
    w = ModelWatcher(LINE, resolve=lambda product: 1, load=lambda vid: RuleScorer(vid, diversion_threshold=0.2))
    w.poll_once()
    return w


def _rt(settings, clock, spool=None, outputs=()):
    rt = _runtime(settings, _watcher(), spool, list(outputs))
    rt.clock = clock
    rt.line_state.clock = clock
    return rt



async def _housekeep_until(hk, cond, timeout_s=30.0):
    stop = asyncio.Event()
    task = asyncio.create_task(hk.run(stop))
    try:
        for _ in range(int(timeout_s / 0.05)):
            if cond():
                return True
            await asyncio.sleep(0.05)
        return cond()
    finally:
        stop.set()
        await task


@pytest.mark.timeout(240)
def test_alarm_assigned_and_escalated_on_schedule_with_the_store_down(sqlite_store, settings_factory, tmp_path):
    store = sqlite_store
    settings = settings_factory(edge_alert_sync_s=0.1)
    records.register()
    for name in ("ann", "bob", "carol"):
        users_mod.add_user(store, name, "a long passphrase 42", "operator", actor=ADMIN)
    set_duty(store, LINE, "A", "operator", "ann", actor=ADMIN)
    set_duty(store, LINE, "*", "shift_lead", "bob", actor=ADMIN, contact="+49 151 000 000")
    set_duty(store, "*", "*", "quality_engineer", "carol", actor=ADMIN, contact="carol@plant.example")

    # 1. An edge with the store up: its housekeeper reads the roster and keeps a copy on local disk.
    clock = Clock()
    first = _rt(settings, clock)
    assert not first.duty.active and first.duty.roster is None
    assert asyncio.run(_housekeep_until(Housekeeper(first, store), lambda: first.duty.active))
    assert first.status()["duty"]["roster_source"] == "store"
    first.close()

    # 2. The edge restarts while the store is down: the roster comes from the local copy.
    topic = f"pqtest/{uuid.uuid4().hex[:8]}/alerts"
    sub, got = subscriber(topic)
    mq = MqttOutput("mqtt", topic=topic).start()
    hook_port = free_port()  # the pager gateway's webhook is down at first
    hook = WebhookOutput("pager", url=f"http://127.0.0.1:{hook_port}/pager")
    hook.max_backoff_s = 0.5
    hook.start()
    _Hook.received, _Hook.fail_first = [], 0
    spool = Spool(tmp_path / "edge.sqlite", fsync="normal")
    rt = _rt(settings, clock, spool, [mq, hook])
    server = None
    try:
        assert rt.duty.active and rt.status()["duty"]["roster_source"] == "local copy"
        changes = _parts(rt, clock, [230.0] * 2 + EPISODE)
        raised = [ch for ch in changes if ch.event == "raised"]
        assert len(raised) == 1 and raised[0].alert["kind"] == "episode" and raised[0].alert["severity"] == "high"
        alarm = raised[0].alert
        assert alarm["assigned_to"] == "ann"  # on the raise itself, as published
        assigned = [ch for ch in changes if ch.event == "assigned"]
        assert [ch.event_row["detail"] for ch in assigned] == [{"role": "operator", "username": "ann", "shift": "A"}]
        raised_at = alarm["raised_at"]

        # Unacknowledged: nothing before 5 min, the shift lead at 5, the quality engineer at 15, then nothing.
        clock.now = raised_at + timedelta(minutes=4, seconds=59)
        assert not [ch for ch in rt.tick() if ch.event == "escalated"]
        clock.now = raised_at + timedelta(minutes=5)
        esc1 = [ch for ch in rt.tick() if ch.event == "escalated"]
        assert len(esc1) == 1
        assert esc1[0].alert["escalation"] | {} == {
            "role": "shift_lead", "username": "bob", "contact": "+49 151 000 000", "level": 1,
            "asked_role": "shift_lead", "after_min": 5.0, "unacknowledged_min": 5.0, "shift": "A"}
        assert esc1[0].alert["assigned_to"] == "ann" and esc1[0].alert["escalated_to"] == "bob"
        clock.now = raised_at + timedelta(minutes=10)
        assert not [ch for ch in rt.tick() if ch.event == "escalated"]  # each step once
        clock.now = raised_at + timedelta(minutes=15)
        esc2 = [ch for ch in rt.tick() if ch.event == "escalated"]
        assert [(c.alert["escalation"]["role"], c.alert["escalation"]["username"], c.alert["escalation"]["level"])
                for c in esc2] == [("quality_engineer", "carol", 2)]
        clock.now = raised_at + timedelta(hours=2)
        assert not [ch for ch in rt.tick() if ch.event == "escalated"]

        # Published: MQTT at once; the webhook retries and counts until the gateway comes up.
        assert poll_until(lambda: [m["event"] for m in got] == ["raised", "escalated", "escalated"], 60), got
        assert got[0]["alert"]["assigned_to"] == "ann"
        assert [m["alert"]["escalation"]["username"] for m in got[1:]] == ["bob", "carol"]
        assert poll_until(lambda: hook.status()["failures"] >= 1 and hook.status()["up"] is False, 60), hook.status()
        server = ThreadingHTTPServer(("127.0.0.1", hook_port), _Hook)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        assert poll_until(lambda: hook.status()["delivered"] == 3, 60), hook.status()
        bodies = [json.loads(b) for _h, b in _Hook.received]
        assert [b["event"] for b in bodies] == ["raised", "escalated", "escalated"]
        assert bodies[1]["alert"]["escalation"]["contact"] == "+49 151 000 000"

        # The store comes back: the spool delivers the alert with its owner and every step, audited.
        assert rt.flush(60)
        drainer = SpoolDrainer(spool, store).start()
        assert drainer.flush(120), drainer.stats()
        drainer.stop(5)
        a, e = schema.alerts, schema.alert_events
        with store.engine.connect() as conn:
            row = conn.execute(select(a).where(a.c.id == alarm["id"])).one()._mapping
            events = [(r.event, r.username, r.detail) for r in
                      conn.execute(select(e).where(e.c.alert_id == alarm["id"]).order_by(e.c.at, e.c.event))]
        assert (row["assigned_to"], row["escalation_level"], row["escalated_to"], row["escalated_role"]) == \
            ("ann", 2, "carol", "quality_engineer")
        assert row["escalated_at"] == raised_at + timedelta(minutes=15)
        kinds = [ev for ev, _u, _d in events]
        assert kinds.count("assigned") == 1 and kinds.count("escalated") == 2
        assert all(u == "edge" for _e, u, _d in events)
        steps = [d for ev, _u, d in events if ev == "escalated"]
        assert [(d["role"], d["username"], d["after_min"]) for d in steps] == \
            [("shift_lead", "bob", 5.0), ("quality_engineer", "carol", 15.0)]
        assert rt.duty.misses == 0
    finally:
        rt.close()
        mq.close()
        hook.close(0.5)
        if server is not None:
            server.shutdown()
        sub.loop_stop()
        sub.disconnect()
        spool.close()


def _roster_rt(settings_factory, roster):
    clock = Clock()
    rt = _rt(settings_factory(), clock)
    rt.duty.set_roster(roster)
    return rt, clock


@pytest.mark.timeout(120)
def test_acknowledged_shelved_and_low_alarms_do_not_escalate(settings_factory):
    rt, clock = _roster_rt(settings_factory, Roster([Duty(LINE, "A", "operator", "ann"),
                                                     Duty(LINE, "A", "shift_lead", "bob")]))
    raised = [ch for ch in _parts(rt, clock, EPISODE) if ch.event == "raised"][0].alert
    # the operator acknowledges on the Alerts page; the housekeeper brings the row to the edge
    rt.apply_operator_rows([{"id": raised["id"], "state": "acknowledged", "acked_at": clock.now, "acked_by": "ann"}])
    clock.advance(minutes=30)
    assert not [ch for ch in rt.tick() if ch.event == "escalated"]
    assert rt.board.get(raised["cause"]).escalation_level is None

    rt2, clock2 = _roster_rt(settings_factory, Roster([Duty(LINE, "A", "operator", "ann")]))
    raised2 = [ch for ch in _parts(rt2, clock2, EPISODE) if ch.event == "raised"][0].alert
    until = clock2.now + timedelta(hours=1)
    rt2.apply_operator_rows([{"id": raised2["id"], "state": "shelved", "shelved_until": until,
                              "shelve_reason": "Maintenance in progress", "acked_by": "ann"}])
    clock2.advance(minutes=30)
    assert not [ch for ch in rt2.tick() if ch.event == "escalated"]


@pytest.mark.timeout(120)
def test_empty_roster_raises_a_system_alarm_and_escalates_to_who_is_there(settings_factory):
    # shift B has nobody as operator; the shift lead covers every shift
    rt, clock = _roster_rt(settings_factory, Roster([Duty(LINE, "A", "operator", "ann"),
                                                     Duty(LINE, "*", "shift_lead", "bob")]))
    changes = _parts(rt, clock, [230.0], shift="B")
    assert not changes
    tick = rt.tick()
    system = [ch for ch in tick if ch.event == "raised"]
    assert len(system) == 1 and system[0].alert["kind"] == "system" and system[0].alert["cause"] == "roster"
    assert system[0].alert["title"] == f"No operator on duty for {LINE}, shift B: alarms cannot be assigned"
    assert system[0].alert["assigned_to"] == "bob"  # the next role that has someone
    assert not [ch for ch in rt.tick() if ch.event == "raised"]  # once, not every second

    alarm = [ch for ch in _parts(rt, clock, EPISODE, shift="B", start=1) if ch.event == "raised"][0].alert
    assert alarm["assigned_to"] == "bob" and rt.duty.misses == 2  # the roster alarm's and this one's
    clock.now = alarm["raised_at"] + timedelta(minutes=5)
    esc = [ch for ch in rt.tick() if ch.event == "escalated" and ch.alert["id"] == alarm["id"]]
    assert esc[0].alert["escalation"]["username"] == "bob"
    clock.now = alarm["raised_at"] + timedelta(minutes=15)  # no quality engineer: back to the shift lead, counted
    esc = [ch for ch in rt.tick() if ch.event == "escalated" and ch.alert["id"] == alarm["id"]]
    e = esc[0].alert["escalation"]
    assert (e["asked_role"], e["role"], e["username"], e["level"]) == ("quality_engineer", "shift_lead", "bob", 2)
    assert rt.status()["duty"]["misses"] >= 3

    # shift A has an operator again: the roster alarm clears
    _parts(rt, clock, [230.0], shift="A", start=10)
    cleared = [ch for ch in rt.tick() if ch.event == "cleared" and ch.alert["cause"] == "roster"]
    assert len(cleared) == 1


@pytest.mark.timeout(120)
def test_a_line_without_any_roster_is_not_assigned_nor_nagged(settings_factory):
    rt, clock = _roster_rt(settings_factory, Roster([Duty("line-other", "A", "operator", "ann")]))
    changes = _parts(rt, clock, EPISODE)
    assert [ch.event for ch in changes] == ["raised"] and changes[0].alert["assigned_to"] is None
    clock.advance(hours=1)
    assert rt.tick() == [] and rt.status()["duty"]["active"] is False


@pytest.mark.timeout(60)
def test_an_adopted_alarm_continues_from_its_stored_step_and_a_bad_rules_file_stops_the_edge(settings_factory,
                                                                                          tmp_path):
    from pq.errors import ConfigError

    rt, clock = _roster_rt(settings_factory, Roster([Duty(LINE, "*", "operator", "ann"),
                                                     Duty(LINE, "*", "shift_lead", "bob"),
                                                     Duty(LINE, "*", "quality_engineer", "carol")]))
    raised_at = clock.now - timedelta(minutes=16)
    # an edge restarted with the store up adopts its open alarm as stored: already escalated once
    assert rt.board.load([{"id": "a1", "line_id": LINE, "kind": "episode", "cause": "melt_temp_c", "state": "active",
                           "severity": "high", "title": "t", "raised_at": raised_at, "updated_at": raised_at,
                           "repeat_count": 3, "assigned_to": "ann", "escalation_level": 1, "escalated_to": "bob",
                           "escalated_role": "shift_lead", "escalated_at": raised_at + timedelta(minutes=5)}]) == 1
    esc = [ch for ch in rt.tick() if ch.event == "escalated"]
    assert [(c.alert["escalation"]["level"], c.alert["escalation"]["username"]) for c in esc] == [(2, "carol")]
    assert not [ch for ch in rt.tick() if ch.event == "escalated"]

    bad = tmp_path / "esc.toml"
    bad.write_text("[[high]]\nafter_min = 5\nrole = \"boss\"\n")
    with pytest.raises(ConfigError, match=r"esc.toml: high\[1\].role"):
        _rt(settings_factory(escalation_file=bad), Clock())


@pytest.mark.timeout(120)
def test_a_line_whose_parts_carry_no_shift_is_assigned_by_the_plant_shift_clock(settings_factory):
    """No shift in the parts' context: the plant's shift clock (PQ_SHIFT_STARTS, A=06:00 by default) says
    whose shift it is; at 06:00 UTC that is A (ann), eight hours later B (bob)."""
    roster = Roster([Duty(LINE, "A", "operator", "ann"), Duty(LINE, "B", "operator", "bob")])
    rt, clock = _roster_rt(settings_factory, roster)
    raised = [ch for ch in _parts(rt, clock, EPISODE, shift=None) if ch.event == "raised"][0].alert
    assert raised["assigned_to"] == "ann"
    rt2, clock2 = _roster_rt(settings_factory, roster)
    clock2.advance(hours=8)
    raised2 = [ch for ch in _parts(rt2, clock2, EPISODE, shift=None) if ch.event == "raised"][0].alert
    assert raised2["assigned_to"] == "bob"
