"""pq.alerts.actions: acknowledge, shelve, unshelve, feedback on both stores.

Each action checks the role, writes the alert row, one alert_events row and one audit row, and
is idempotent (repeating it writes nothing)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from benchmarks.synthetic_store import add_live_alert, seed
from pq.alerts import actions
from pq.errors import InvalidRequest, PermissionDenied
from pq.auth.roles import Actor
from pq.storage import schema

OP = Actor("ann", "operator", client="10.0.0.7")


def _counts(store, alert_id):
    with store.engine.connect() as conn:
        ev = conn.execute(select(func.count()).select_from(schema.alert_events)
                          .where(schema.alert_events.c.alert_id == alert_id)).scalar()
        au = conn.execute(select(func.count()).select_from(schema.audit_log)
                          .where(schema.audit_log.c.target == f"alert:{alert_id}")).scalar()
        row = conn.execute(select(schema.alerts).where(schema.alerts.c.id == alert_id)).one()
    return ev, au, row


@pytest.mark.timeout(60)
def test_acknowledge_is_idempotent_and_audited(store):
    seed(store, lines=1, parts_per_line=20, alerts=2, active_alerts=0)
    aid = add_live_alert(store, "line-01")
    r = actions.acknowledge(store, aid, actor=OP)
    assert r.changed and r.state == "acknowledged"
    again = actions.acknowledge(store, aid, actor=Actor("bob", "operator"))
    assert not again.changed and "ann" in again.message
    ev, au, row = _counts(store, aid)
    assert (ev, au) == (2, 1)  # raised + acknowledged; one audit row
    assert row.acked_by == "ann" and row.state == "acknowledged"


@pytest.mark.timeout(60)
def test_shelve_needs_reason_and_bounded_duration_then_unshelve(store):
    seed(store, lines=1, parts_per_line=20, alerts=2, active_alerts=0)
    aid = add_live_alert(store, "line-01")
    with pytest.raises(InvalidRequest, match="reason is required"):
        actions.shelve(store, aid, actor=OP, reason=" ", duration_s=600)
    with pytest.raises(InvalidRequest, match="between 60 s and"):
        actions.shelve(store, aid, actor=OP, reason="sensor repair", duration_s=10 * 86400)
    r = actions.shelve(store, aid, actor=OP, reason="sensor repair", duration_s=3600)
    assert r.changed and r.state == "shelved"
    assert not actions.shelve(store, aid, actor=OP, reason="sensor repair", duration_s=3600).changed
    assert actions.shelve(store, aid, actor=OP, reason="longer repair", duration_s=7200).changed  # extends
    back = actions.unshelve(store, aid, actor=OP)
    assert back.changed and back.state == "active"
    assert not actions.unshelve(store, aid, actor=OP).changed
    ev, au, row = _counts(store, aid)
    assert (ev, au) == (4, 3) and row.shelved_until is None and row.shelve_reason == "longer repair"


@pytest.mark.timeout(60)
def test_feedback_acknowledges_and_corrects(store):
    seed(store, lines=1, parts_per_line=20, alerts=2, active_alerts=0)
    aid = add_live_alert(store, "line-01")
    with pytest.raises(InvalidRequest, match="feedback must be one of"):
        actions.give_feedback(store, aid, actor=OP, verdict="maybe")
    r = actions.give_feedback(store, aid, actor=OP, verdict="confirmed", comment="<script>x</script> short shot")
    assert r.changed and r.state == "acknowledged"
    assert not actions.give_feedback(store, aid, actor=OP, verdict="confirmed",
                                     comment="<script>x</script> short shot").changed
    assert actions.give_feedback(store, aid, actor=OP, verdict="confirmed", comment="short shot at gate").changed
    assert actions.give_feedback(store, aid, actor=OP, verdict="false_alarm").changed
    ev, au, row = _counts(store, aid)
    # raised, acknowledged (with feedback), 3 feedback events; audit: ack + 3 feedback
    assert (ev, au) == (5, 4)
    assert row.feedback == "false_alarm" and row.feedback_comment is None and row.acked_by == "ann"


@pytest.mark.timeout(30)
def test_actions_refuse_without_role_and_unknown_alert(sqlite_store):
    seed(sqlite_store, lines=1, parts_per_line=20, alerts=2, active_alerts=0)
    aid = add_live_alert(sqlite_store, "line-01")
    with pytest.raises(PermissionDenied):
        actions.acknowledge(sqlite_store, aid, actor=Actor("x", "viewer"))
    with pytest.raises(PermissionDenied):
        actions.acknowledge(sqlite_store, aid, actor=None)
    with pytest.raises(InvalidRequest, match="does not exist"):
        actions.acknowledge(sqlite_store, "no-such-alert", actor=OP)
    ev, au, row = _counts(sqlite_store, aid)
    assert (ev, au, row.state) == (1, 0, "active")
