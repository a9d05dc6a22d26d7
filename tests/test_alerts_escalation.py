"""Rosters and escalation rules: the pure lookups and decisions, and the rules file's errors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pq.alerts.escalation import DEFAULT_ESCALATION_PATH, Step, load_rules, next_step, parse_rules
from pq.alerts.roster import Duty, Roster, validate_duty
from pq.errors import ConfigError, InvalidRequest

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=timezone.utc)


def test_roster_most_specific_entry_wins_and_star_covers_the_rest():
    r = Roster([Duty("line-1", "A", "operator", "ann"), Duty("line-1", "*", "operator", "otto"),
                Duty("*", "B", "shift_lead", "bob"), Duty("*", "*", "shift_lead", "sue"),
                Duty("*", "*", "quality_engineer", "carol", "carol@plant.example")])
    assert r.on_duty("line-1", "A", "operator").username == "ann"
    assert r.on_duty("line-1", "C", "operator").username == "otto"
    assert r.on_duty("line-1", "B", "shift_lead").username == "bob"
    assert r.on_duty("line-1", "A", "shift_lead").username == "sue"
    assert r.on_duty("line-2", None, "operator") is None  # unknown shift: only * entries count
    assert r.covers("line-1") and r.covers("line-9")  # the * entries name every line
    assert not Roster([Duty("line-1", "A", "operator", "ann")]).covers("line-2")
    assert Roster.from_json(r.to_json()) == r
    assert len(r.for_line("line-2")) == 3


def test_roster_find_falls_back_to_the_next_role_that_has_someone_and_says_so():
    r = Roster([Duty("line-1", "A", "shift_lead", "bob"), Duty("line-1", "A", "quality_engineer", "carol")])
    assert r.find("line-1", "A", "operator") == (r.on_duty("line-1", "A", "shift_lead"), True)
    assert r.find("line-1", "A", "quality_engineer")[0].username == "carol"
    r2 = Roster([Duty("line-1", "A", "shift_lead", "bob")])
    duty, missed = r2.find("line-1", "A", "quality_engineer")  # nobody above: back down to the shift lead
    assert duty.username == "bob" and missed
    assert Roster().find("line-1", "A", "operator") == (None, True)


@pytest.mark.parametrize("args, word", [(("", "A", "operator"), "line"), (("line 1", "A", "operator"), "line"),
                                        (("line-1", "", "operator"), "shift"),
                                        (("line-1", "A", "supervisor"), "duty role"),
                                        (("line-1", "A", "operator", "x" * 201), "contact")])
def test_validate_duty_names_the_bad_field(args, word):
    with pytest.raises(InvalidRequest, match=word):
        validate_duty(*args)


def test_shipped_rules_high_5_15_medium_10_30_low_none():
    rules = load_rules(None)
    assert rules.source == str(DEFAULT_ESCALATION_PATH)
    assert rules.for_severity("high") == (Step(5.0, "shift_lead"), Step(15.0, "quality_engineer"))
    assert rules.for_severity("medium") == (Step(10.0, "shift_lead"), Step(30.0, "quality_engineer"))
    assert rules.for_severity("low") == ()


def _alert(**kw):
    return {"state": "active", "severity": "high", "raised_at": T0, "escalation_level": 0} | kw


def test_next_step_in_order_once_each_and_only_while_unacknowledged():
    rules = load_rules(None)
    assert next_step(_alert(), T0 + timedelta(minutes=4, seconds=59), rules) is None
    assert next_step(_alert(), T0 + timedelta(minutes=5), rules) == (1, Step(5.0, "shift_lead"))
    # one step at a time, even when both are due (an edge back after a long stop)
    assert next_step(_alert(), T0 + timedelta(minutes=20), rules) == (1, Step(5.0, "shift_lead"))
    assert next_step(_alert(escalation_level=1), T0 + timedelta(minutes=14), rules) is None
    assert next_step(_alert(escalation_level=1), T0 + timedelta(minutes=15), rules)[0] == 2
    assert next_step(_alert(escalation_level=2), T0 + timedelta(hours=5), rules) is None  # no more steps
    assert next_step(_alert(escalation_level=None), T0 + timedelta(minutes=5), rules)[0] == 1  # stored NULL
    for state in ("acknowledged", "shelved", "suppressed", "cleared"):
        assert next_step(_alert(state=state), T0 + timedelta(hours=1), rules) is None, state
    assert next_step(_alert(severity="low"), T0 + timedelta(hours=1), rules) is None
    assert next_step(_alert(severity="medium"), T0 + timedelta(minutes=9), rules) is None
    assert next_step(_alert(severity="medium"), T0 + timedelta(minutes=10), rules)[0] == 1


@pytest.mark.parametrize("text, where", [
    ("[[high]]\nafter_min = 5\nrole = shift_lead\n", "line 3"),  # TOML syntax: the line
    ("[[high]]\nafter_min = 5\nrole = \"boss\"\n", "high[1].role"),
    ("[[high]]\nafter_min = 0\nrole = \"shift_lead\"\n", "high[1].after_min"),
    ("[[high]]\nafter_min = 10\nrole = \"shift_lead\"\n[[high]]\nafter_min = 5\nrole = \"quality_engineer\"\n",
     "high[2].after_min"),
    ("[[high]]\nafter_min = 5\nrole = \"shift_lead\"\nwho = \"bob\"\n", "high[1]: unknown key(s) who"),
    ("critical = []\n", "top level: unknown key(s) critical"),
    ("high = 5\n", "high: expected a list"),
    ("version = 2\n", "version"),
])
def test_bad_rules_name_file_and_line_or_key(text, where):
    with pytest.raises(ConfigError) as exc:
        parse_rules(text, source="esc.toml")
    assert "esc.toml" in str(exc.value) and where in str(exc.value), str(exc.value)


def test_rules_file_that_cannot_be_read(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "missing.toml")
    (tmp_path / "esc.toml").write_text("[[medium]]\nafter_min = 1.5\nrole = \"quality_engineer\"\n")
    rules = load_rules(tmp_path / "esc.toml")
    assert rules.for_severity("medium") == (Step(1.5, "quality_engineer"),) and rules.for_severity("high") == ()
