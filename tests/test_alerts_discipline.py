"""Alarm discipline, playbook, explanations and KPIs: the rules, on real stores where they touch one."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from pq.alerts.discipline import AlarmBoard
from pq.alerts.explain import explain_contributions, fmt_number
from pq.alerts.kpis import compute_kpis, max_in_window, refresh_kpis
from pq.alerts.playbook import DEFAULT_PLAYBOOK_PATH, PlaybookLoader, load_playbook_file, parse_playbook
from pq.edge.records import write_alert_events, write_alerts
from pq.errors import ConfigError
from pq.storage import schema
from pq.storage.catalog import ensure_line

T0 = datetime(2025, 6, 1, 8, 0, tzinfo=timezone.utc)


def _raise(board, cause, t, serial="S1", score=0.9):
    return board.on_at_risk(cause, t, severity="high", title=f"{cause} at risk", serial=serial, score=score)


@pytest.mark.timeout(10)
def test_repeats_update_one_alert_per_cause():
    b = AlarmBoard("line-1")
    c1 = _raise(b, "melt_temp_c", T0)
    c2 = _raise(b, "melt_temp_c", T0 + timedelta(seconds=5), serial="S2")
    assert [c.event for c in c1] == ["raised"] and [c.event for c in c2] == ["updated"]
    assert c1[0].alert["id"] == c2[0].alert["id"]
    assert c2[0].alert["repeat_count"] == 2 and c2[0].alert["serial"] == "S2"
    _raise(b, "hold_pressure_bar", T0 + timedelta(seconds=6))
    assert b.counts()["active"] == 2


@pytest.mark.timeout(10)
def test_clears_after_ok_parts_and_new_occurrence_is_new_alert():
    b = AlarmBoard("line-1", clear_after_ok=3)
    first = _raise(b, "melt_temp_c", T0)[0].alert["id"]
    assert b.on_scored(T0, ()) == [] and b.on_scored(T0, ()) == []
    cleared = b.on_scored(T0 + timedelta(seconds=1), ())
    assert [c.event for c in cleared] == ["cleared"] and cleared[0].alert["state"] == "cleared"
    again = _raise(b, "melt_temp_c", T0 + timedelta(seconds=2))[0].alert["id"]
    assert again != first


@pytest.mark.timeout(10)
def test_flood_gives_one_flood_alert_and_suppresses_the_rest():
    b = AlarmBoard("line-1", flood_limit=10, flood_window_s=600)
    published = []
    for i in range(15):
        for ch in _raise(b, f"sig_{i}_c", T0 + timedelta(seconds=i)):
            if ch.publish:
                published.append((ch.event, ch.alert["kind"]))
    assert published.count(("raised", "part")) == 10
    assert published.count(("raised", "flood")) == 1
    assert b.counts()["suppressed"] == 5 and b.flooding
    # 11 minutes later the window is empty: the flood clears, once.
    ends = b.tick(T0 + timedelta(minutes=11))
    assert [(c.event, c.alert["kind"]) for c in ends] == [("cleared", "flood")]
    assert b.tick(T0 + timedelta(minutes=12)) == []


@pytest.mark.timeout(10)
def test_operator_ack_and_shelve_are_respected_and_shelve_expires():
    b = AlarmBoard("line-1", clear_after_ok=5)
    a = _raise(b, "melt_temp_c", T0)[0].alert
    row = dict(a, state="acknowledged", acked_at=T0 + timedelta(seconds=30), acked_by="ann")
    ch = b.merge_stored([row], T0 + timedelta(seconds=31))
    assert [c.event for c in ch] == ["acknowledged"] and ch[0].event_row is None  # the UI wrote the event
    rep = _raise(b, "melt_temp_c", T0 + timedelta(seconds=40))
    assert rep[0].alert["state"] == "acknowledged" and not rep[0].publish  # no re-annunciation
    until = T0 + timedelta(minutes=30)
    b.merge_stored([dict(row, state="shelved", shelved_until=until, shelve_reason="sensor swap")], T0 + timedelta(minutes=1))
    rep = _raise(b, "melt_temp_c", T0 + timedelta(minutes=2))
    assert rep[0].alert["state"] == "shelved" and not rep[0].publish
    assert b.tick(T0 + timedelta(minutes=29)) == []
    back = b.tick(until + timedelta(seconds=1))
    assert [c.event for c in back] == ["unshelved"] and back[0].alert["state"] == "active" and back[0].publish


@pytest.mark.timeout(30)
def test_store_write_never_undoes_an_operator_action(store):
    ensure_line(store, "line-1")
    b = AlarmBoard("line-1")
    ch = _raise(b, "melt_temp_c", T0)
    write_alerts(store, [ch[0].alert])
    write_alert_events(store, [ch[0].event_row, ch[0].event_row])  # replayed: written once
    with store.engine.begin() as conn:
        conn.execute(schema.alerts.update().values(state="acknowledged", acked_by="ann", acked_at=T0))
    late = _raise(b, "melt_temp_c", T0 + timedelta(seconds=1), serial="S9")  # edge has not seen the ack yet
    write_alerts(store, [late[0].alert])
    with store.engine.connect() as conn:
        row = conn.execute(select(schema.alerts)).one()._mapping
        n_events = len(conn.execute(select(schema.alert_events)).all())
    assert row["state"] == "acknowledged" and row["acked_by"] == "ann"
    assert row["repeat_count"] == 2 and row["serial"] == "S9" and n_events == 1


@pytest.mark.timeout(30)
def test_kpis_per_line(store):
    ensure_line(store, "line-1")
    b = AlarmBoard("line-1", flood_limit=3)
    for i in range(5):
        for ch in _raise(b, f"sig_{i % 2}_{i}_c", T0 + timedelta(minutes=i)):
            write_alerts(store, [ch.alert])
    with store.engine.begin() as conn:
        conn.execute(schema.alerts.update().where(schema.alerts.c.cause == "sig_0_0_c")
                     .values(acked_at=T0 + timedelta(seconds=90)))
    k = compute_kpis(store, "line-1", T0, 3600)
    assert k["alerts"] == 5 and k["floods"] == 1 and k["alerts_per_10min_max"] == 5
    assert k["mean_time_to_ack_s"] == pytest.approx(90)
    rows = refresh_kpis(store, "line-1", T0 + timedelta(minutes=30))
    assert rows[1]["alerts"] == 5
    refresh_kpis(store, "line-1", T0 + timedelta(minutes=31))  # idempotent upsert
    with store.engine.connect() as conn:
        assert len(conn.execute(select(schema.alert_kpis)).all()) == 2
    assert max_in_window([T0, T0 + timedelta(minutes=9), T0 + timedelta(minutes=11)]) == 2


@pytest.mark.timeout(10)
def test_playbook_actions_context_and_mechanisms():
    pb = load_playbook_file(DEFAULT_PLAYBOOK_PATH)
    ctx = {"serial": "S1", "material_lot": "L123", "supplier": "B-Plastics"}
    assert "L123" in pb.action_for("humidity_pct", "high", ctx)
    assert pb.cause_for("humidity_pct") == "moisture" == pb.cause_for("dryer_dew_point_c")
    assert "new supplier" in pb.action_for("melt_temp_c", "low", ctx)
    assert "heater bands" in pb.action_for("melt_temp_c", "low", dict(ctx, supplier="A-Poly"))
    assert "S1" in pb.action_for("unknown_signal_c", None, ctx)  # default action


@pytest.mark.timeout(10)
@pytest.mark.parametrize("text, expected", [
    ("[signals.melt_temp_c\nlow = 'x'", "line 1"),
    ("[signals.melt_temp_c]\nlwo = 'x'", "signals.melt_temp_c: unknown key(s) lwo"),
    ("[signals.melt_temp_c]\nlow = 'check {lot}'", "unknown placeholder(s) {lot}"),
    ("[mechanisms.m]\nsignals = []\naction = 'x'", "mechanisms.m.signals"),
])
def test_playbook_errors_name_the_place(text, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")
                       .replace("}", r"\}")):
        parse_playbook(text, source="edit")


@pytest.mark.timeout(10)
def test_playbook_syntax_error_keeps_previous(tmp_path, caplog):
    f = tmp_path / "pb.toml"
    f.write_text("[signals.melt_temp_c]\nlow = 'Version one'\n")
    loader = PlaybookLoader(f)
    assert loader.current.action_for("melt_temp_c", "low", {}) == "Version one"
    f.write_text("[signals.melt_temp_c\nlow = 'broken'\n")
    assert loader.reload() is False
    assert loader.current.action_for("melt_temp_c", "low", {}) == "Version one"
    assert "TOML syntax error" in loader.error and "keeping" in loader.error
    assert loader.reload() is False  # unchanged file: not re-parsed, not re-logged
    assert sum("TOML syntax error" in r.message for r in caplog.records) == 1
    f.write_text("[signals.melt_temp_c]\nlow = 'Version two'\n")
    assert loader.reload() and loader.error is None


@pytest.mark.timeout(10)
def test_explanations_in_operator_words():
    pb = load_playbook_file(DEFAULT_PLAYBOOK_PATH)
    items = explain_contributions([
        {"signal": "melt_temp_c", "contribution": 0.8, "value": 222.0, "normal_lo": 231.0, "normal_hi": 239.0},
        {"signal": "hold_pressure_bar", "contribution": -0.3, "value": 600, "normal_lo": 550, "normal_hi": 650},
        {"signal": "humidity_pct", "contribution": 0.2, "value": 71.0, "normal_lo": 30.0, "normal_hi": 60.0},
    ], pb)
    assert [i["signal"] for i in items] == ["melt_temp_c", "humidity_pct"]  # only towards a defect
    assert items[0]["sentence"] == ("Melt temperature 9 °C below normal for today's conditions "
                                    "(now 222 °C, normal 231–239 °C)")
    assert items[1]["direction"] == "high" and "11 % above normal" in items[1]["sentence"]
    assert fmt_number(0.12345) == "0.123" and fmt_number(float("nan")) == "–"
