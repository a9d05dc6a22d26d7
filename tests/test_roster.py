"""Rosters in the store and ``pq roster``: admin only, every change audited, bad input named."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from pq.alerts.roster_store import list_duties, load_roster, remove_duty, set_duty
from pq.auth import users as users_mod
from pq.auth.roles import Actor
from pq.errors import InvalidRequest, PermissionDenied
from pq.storage import schema
from tests.test_cli import run_pq

ADMIN = Actor("root", "admin", client="10.0.0.1")
PASSWORD = "a long passphrase 42"


def _users(store):
    for name, role in (("ann", "operator"), ("bob", "operator"), ("carol", "engineer"), ("eve", "operator")):
        users_mod.add_user(store, name, PASSWORD, role, actor=ADMIN)
    users_mod.set_active(store, "eve", False, actor=ADMIN)


def _audit(store):
    t = schema.audit_log
    with store.engine.connect() as conn:
        return [(r.username, r.action, r.target, r.detail) for r in
                conn.execute(select(t).where(t.c.action.like("roster.%")).order_by(t.c.id))]


def test_roster_changes_are_admin_only_audited_and_replace_the_holder(store):
    _users(store)
    for role in ("operator", "engineer"):
        with pytest.raises(PermissionDenied, match="admin"):
            set_duty(store, "line-1", "A", "operator", "ann", actor=Actor("carol", role))
    assert list_duties(store) == [] and _audit(store) == []

    set_duty(store, "line-1", "A", "operator", "ann", actor=ADMIN)
    set_duty(store, "line-1", "A", "operator", "bob", actor=ADMIN, contact="+49 151 000")  # replaces ann
    set_duty(store, "*", "*", "shift_lead", "carol", actor=ADMIN)
    set_duty(store, "line-2", "B", "operator", "ann", actor=ADMIN)
    got = [(d.line_id, d.shift, d.role, d.username, d.contact) for d in list_duties(store, "line-1")]
    assert got == [("*", "*", "shift_lead", "carol", None), ("line-1", "A", "operator", "bob", "+49 151 000")]
    roster = load_roster(store, "line-1")
    assert roster.find("line-1", "A", "operator")[0].username == "bob"
    assert roster.find("line-1", "B", "operator") == (roster.on_duty("line-1", "B", "shift_lead"), True)

    with pytest.raises(InvalidRequest, match="no user named 'zed'"):
        set_duty(store, "line-1", "A", "operator", "zed", actor=ADMIN)
    with pytest.raises(InvalidRequest, match="disabled"):
        set_duty(store, "line-1", "A", "operator", "eve", actor=ADMIN)
    with pytest.raises(InvalidRequest, match="duty role"):
        set_duty(store, "line-1", "A", "boss", "ann", actor=ADMIN)
    with pytest.raises(PermissionDenied):
        remove_duty(store, "line-1", "A", "operator", actor=Actor("ann", "operator"))
    assert remove_duty(store, "line-1", "A", "operator", actor=ADMIN) == "bob"
    with pytest.raises(InvalidRequest, match="nobody is on the roster"):
        remove_duty(store, "line-1", "A", "operator", actor=ADMIN)

    audit = _audit(store)
    assert [a[1] for a in audit] == ["roster.set"] * 4 + ["roster.remove"]
    assert audit[1] == ("root", "roster.set", "roster:line-1/A/operator",
                        {"username": "bob", "before": "ann", "contact": "+49 151 000"})
    assert audit[-1][3] == {"username": "bob"}


@pytest.mark.timeout(180)
def test_pq_roster_set_list_remove(store):
    _users(store)
    env = {"PQ_DATABASE_URL": store.settings.database_url}
    proc = run_pq("roster", "set", "line-1", "A", "operator", "ann", "--contact", "ann@plant.example", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "ann is operator for line line-1, shift A" in proc.stdout
    assert run_pq("roster", "set", "*", "*", "shift_lead", "bob", env=env).returncode == 0
    listing = run_pq("roster", "list", "--line", "line-1", env=env)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[1].split() == ["*", "*", "shift_lead", "bob"]
    assert lines[2].split() == ["line-1", "A", "operator", "ann", "ann@plant.example"]

    bad = run_pq("roster", "set", "line-1", "A", "operator", "zed", env=env)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "no user named 'zed'" in bad.stderr
    bad_role = run_pq("roster", "set", "line-1", "A", "boss", "ann", env=env)
    assert bad_role.returncode == 2 and "boss" in bad_role.stderr
    assert run_pq("roster", "remove", "line-1", "A", "operator", env=env).returncode == 0
    assert [d.username for d in list_duties(store)] == ["bob"]
    audit = _audit(store)
    assert [a[1] for a in audit] == ["roster.set", "roster.set", "roster.remove"]
    assert all(a[0].startswith("cli:") for a in audit)
