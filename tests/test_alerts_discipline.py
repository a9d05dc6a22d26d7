"""Alarm discipline, playbook, explanations and KPIs: the rules, on real stores where they touch one."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import select

from pq.alerts.discipline import AlarmBoard
from pq.alerts.explain import (Reading, explain_contributions, fmt_number, fmt_range, fmt_reading, sentence,
                               title_for)
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
def test_episode_alarm_ignores_ok_parts_clears_with_its_episode_and_comes_back_after_its_shelf():
    """An episode alarm lives as long as its episode: OK parts do not clear it (the episode rule
    decides when the condition is over); a shelf that expires while the episode lasts brings it back."""
    b = AlarmBoard("line-1", clear_after_ok=3)
    raised = b.on_at_risk("melt_temp_c", T0, kind="episode", severity="medium", title="3 of the last 10", serial="S3")
    assert [(c.event, c.alert["kind"]) for c in raised] == [("raised", "episode")]
    for i in range(5):
        assert b.on_scored(T0 + timedelta(seconds=i), ()) == []  # five OK parts: a part alert would have cleared
    assert b.on_episode_cleared("hold_pressure_bar", T0) == []  # another cause's episode: nothing to clear
    a = b.get("melt_temp_c")
    a.state, a.shelved_until = "shelved", T0 + timedelta(minutes=15)
    back = b.tick(T0 + timedelta(minutes=16))
    assert [(c.event, c.alert["state"]) for c in back] == [("unshelved", "active")]
    cleared = b.on_episode_cleared("melt_temp_c", T0 + timedelta(minutes=17))
    assert [c.event for c in cleared] == ["cleared"] and cleared[0].event_row["detail"]["episode_ended"]
    assert b.get("melt_temp_c") is None and b.on_episode_cleared("melt_temp_c", T0) == []


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
def test_playbook_file_caught_empty_while_being_saved_keeps_previous(tmp_path):
    """An editor saving in place truncates the file, then writes it: a reload in between sees an
    empty (valid) TOML file, which must not replace the playbook with no labels and no actions."""
    f = tmp_path / "pb.toml"
    f.write_text("[signals.mould_temp_c]\nlabel = 'Mould temperature'\n")
    loader = PlaybookLoader(f)
    f.write_text("")
    assert loader.reload() is False
    assert loader.current.label_for("mould_temp_c") == "Mould temperature"
    assert "empty" in loader.error and "keeping" in loader.error
    f.write_text("[signals.mould_temp_c]\nlabel = 'Mould temp (zone 2)'\n")
    assert loader.reload() and loader.error is None
    assert loader.current.label_for("mould_temp_c") == "Mould temp (zone 2)"


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


_S = "for today's conditions"


@pytest.mark.parametrize("args, expected", [
    # the headline: once "0.014 s below normal (now 1.2 s, normal 1.22–1.31 s)"
    (("Injection time", "s", 1.204, 1.218, 1.31, "low"),
     f"Injection time 0.014 s below normal {_S} (now 1.204 s, normal 1.218–1.310 s)"),
    (("Melt temperature", "°C", 231.4, 225.0, 230.0, "high"),
     f"Melt temperature 1.4 °C above normal {_S} (now 231.4 °C, normal 225.0–230.0 °C)"),
    (("Melt temperature", "°C", 222.0, 231.0, 239.0, "low"),
     f"Melt temperature 9 °C below normal {_S} (now 222 °C, normal 231–239 °C)"),
    (("Hold pressure", "bar", 1234.4, 1000.0, 1200.0, "high"),
     f"Hold pressure 34 bar above normal {_S} (now 1234 bar, normal 1000–1200 bar)"),
    (("Vibration", "mm/s", 0.00123, 0.0004, 0.0011, "high"),  # tiny values: no scientific notation
     f"Vibration 0.00013 mm/s above normal {_S} (now 0.00123 mm/s, normal 0.00040–0.00110 mm/s)"),
    (("Melt temperature slope", "°C/s", -0.02, -0.01, 0.01, "low"),  # negative bounds: "to", not a dash
     f"Melt temperature slope 0.010 °C/s below normal {_S} (now -0.020 °C/s, normal -0.010 to 0.010 °C/s)"),
    # inside the range: the band's width sets the precision; the hint says which side is unusual
    (("Injection time", "s", 1.30, 1.22, 1.31, "high"),
     f"Injection time on the high side {_S} (now 1.30 s, normal 1.22–1.31 s)"),
    (("Humidity", "%", 55.0, 30.0, 60.0, None), f"Humidity unusual {_S} (now 55 %, normal 30–60 %)"),
    # a hint that contradicts the numbers loses: the words follow the reading
    (("Cushion", "mm", 9.1, 4.0, 8.0, "low"), f"Cushion 1.1 mm above normal {_S} (now 9.1 mm, normal 4.0–8.0 mm)"),
    # one-sided ranges
    (("Cushion", "mm", 3.4, 4.0, None, "low"), f"Cushion 0.6 mm below normal {_S} (now 3.4 mm, normal above 4.0 mm)"),
    (("Cushion", "mm", 3.25, None, 4.0, "low"), f"Cushion on the low side {_S} (now 3.25 mm, normal below 4.00 mm)"),
    (("Cushion", "mm", None, 4.0, 8.0, "low"), "Cushion: no value in this cycle"),
    (("Cushion", "mm", float("nan"), 4.0, 8.0, "low"), "Cushion: no value in this cycle"),
])
def test_sentence_numbers_share_one_precision(args, expected):
    assert sentence(*args) == expected


@pytest.mark.timeout(10)
def test_reading_outside_the_range_reads_outside_and_adds_up():
    """Over many magnitudes: every number has the same decimals; a reading inside the range prints
    inside it; one outside by 1 % of the band or more prints outside, with a gap that is the printed
    difference and within a fifth of the true one; a finer gap prints on the limit, never inside."""
    rng = random.Random(12)
    for _ in range(3000):
        scale = 10.0 ** rng.uniform(-4, 4)
        lo = rng.uniform(-2, 2) * scale
        hi = lo + rng.uniform(0.001, 1) * scale
        value = rng.choice((lo, hi)) + rng.choice((-1, 1)) * rng.uniform(1e-4, 2) * (hi - lo)
        r = fmt_reading(value, lo, hi)
        assert len({len(t.split(".")[1]) if "." in t else 0 for t in (r.value, r.lo, r.hi)}) == 1, r
        v, a, b = Decimal(r.value), Decimal(r.lo), Decimal(r.hi)
        assert a < b, (lo, hi, r)
        if lo <= value <= hi:
            assert r.side is None and a <= v <= b, (value, lo, hi, r)
            continue
        gap = lo - value if value < lo else value - hi
        if gap >= 0.01 * (hi - lo):  # a gap of 1 % of the band or more is always shown
            assert r.side == ("below" if value < lo else "above"), (value, lo, hi, r)
            assert Decimal(r.gap) == pytest.approx(Decimal(gap), rel=Decimal("0.21")), (value, lo, hi, r)
        if r.side == "below":
            assert value < lo and v < a and Decimal(r.gap) == a - v, (value, lo, hi, r)
        elif r.side == "above":
            assert value > hi and v > b and Decimal(r.gap) == v - b, (value, lo, hi, r)
        else:  # a finer gap: the reading prints on the limit, never inside the range
            assert v == (a if value < lo else b), (value, lo, hi, r)
        s = sentence("X", "u", value, lo, hi, None)
        assert (r.value in s and r.lo in s and r.hi in s), s


def test_fmt_reading_edges():
    assert fmt_reading(None, None, None) == Reading("–", "–", "–", None, None, None)
    assert fmt_reading(1.5, None, None).value == "1.50"  # a lone number: 3 significant figures
    assert fmt_reading(-0.0004, -0.001, 0.001).value == "-0.0004"
    assert fmt_reading(0.00004, -0.01, 0.01).value == "0.000"  # never "-0.000"
    assert fmt_reading(-0.00004, -0.01, 0.01).value == "0.000"
    r = fmt_reading(230.05, 225.0, 230.0)  # a gap of exactly 5 in the last decimal
    assert (r.value, r.hi, r.gap, r.side) == ("230.05", "230.00", "0.05", "above")
    r = fmt_reading(230.004, 225.0, 230.0)  # 0.08 % of the band: on the limit, not "0.004 above"
    assert (r.value, r.hi, r.gap, r.side) == ("230.00", "230.00", None, None)
    assert sentence("Melt temperature", "°C", 230.004, 225.0, 230.0, "high") == (
        f"Melt temperature on the high side {_S} (now 230.00 °C, normal 225.00–230.00 °C)")
    assert fmt_range(fmt_reading(5.0, 4.0, 8.0), "mm") == "4.0–8.0 mm"
    assert fmt_reading(3.25, 4.0, None).value == "3.3" and fmt_reading(-3.25, None, -4.0).value == "-3.3"  # half up


def test_title_carries_the_consistent_sentence():
    pb = load_playbook_file(DEFAULT_PLAYBOOK_PATH)
    top = explain_contributions([{"signal": "injection_time_s", "contribution": 0.9, "value": 1.204,
                                  "normal_lo": 1.218, "normal_hi": 1.31}], pb)
    assert title_for("S42", 0.87, top) == (f"Part S42 at risk (87 %): Injection time 0.014 s below normal {_S} "
                                           "(now 1.204 s, normal 1.218–1.310 s)")
