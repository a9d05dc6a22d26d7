"""Browser: an admin puts an operator on the roster; the operator's alert card says who owns it and
whom it was escalated to; an operator cannot change the roster, even with a crafted POST; the
Monitoring page shows the alarm load per operator."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, update

from benchmarks.synthetic_store import add_live_alert, seed
from pq.alerts.roster_store import list_duties
from pq.storage import schema
from tests._ui_helpers import CHROMIUM, add_users, login, running_ui, shot

pytestmark = pytest.mark.browser

pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)


def _choose(page, dropdown: str, text: str) -> None:
    page.click(dropdown)
    page.get_by_role("option").filter(has_text=text).first.click()
    page.keyboard.press("Escape")


@pytest.mark.timeout(180)
def test_roster_page_alert_owner_and_duty_kpis(sqlite_store, tmp_path, browser):
    store = sqlite_store
    seed(store, lines=2, parts_per_line=100, alerts=5, active_alerts=0)
    add_users(store)
    with running_ui(store.engine.url.render_as_string(hide_password=False), tmp_path / "var",
                    tmp_path / "ui.log") as base:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        login(page, base, "boss")
        page.click("#nav-roster")
        page.wait_for_selector("#roster-table")
        page.fill("#roster-line", "line-01")
        page.fill("#roster-shift", "B")
        _choose(page, "#roster-user", "op")
        page.fill("#roster-contact", "+49 151 000")
        page.click("#roster-set")
        page.wait_for_selector("#roster-message .pq-ok")
        assert "op is operator for line line-01, shift B" in page.inner_text("#roster-message")
        assert "+49 151 000" in page.inner_text("#roster-table")
        shot(page, "admin-roster")
        assert [(d.line_id, d.shift, d.role, d.username) for d in list_duties(store)] == \
            [("line-01", "B", "operator", "op")]

        # the edge assigned an alarm to op and escalated it to the shift lead (eng) 2 minutes ago
        now = datetime.now(timezone.utc)
        alert_id = add_live_alert(store, "line-01", serial="01-LIVE00042", title="Melt temperature 9 °C below normal",
                                  at=now - timedelta(minutes=7))
        with store.engine.begin() as conn:
            conn.execute(update(schema.alerts).where(schema.alerts.c.id == alert_id).values(
                assigned_to="op", escalation_level=1, escalated_to="eng", escalated_role="shift_lead",
                escalated_at=now - timedelta(minutes=2), shift="B"))
        op = browser.new_page(viewport={"width": 1400, "height": 1000})
        login(op, base, "op")
        op.click("#nav-alerts")
        card = op.locator("article:has-text('01-LIVE00042')")
        card.wait_for(timeout=10_000)
        assert "Assigned to op · escalated to the shift lead (eng) 2 min ago" in card.inner_text()
        shot(op, "operator-alert-owner")
        assert op.locator("#nav-roster").count() == 0
        op.goto(base + "/roster")
        op.wait_for_selector("#page-denied")
        csrf = next(c["value"] for c in op.context.cookies() if c["name"] == "_csrf_token")
        deps = op.request.get(base + "/_dash-dependencies").json()
        output = next(d["output"] for d in deps if "roster-message" in d["output"])
        body = {"output": output,
                "outputs": [{"id": "roster-message", "property": "children"}, {"id": "roster-list", "property": "children"}],
                "inputs": [{"id": "roster-set", "property": "n_clicks", "value": 1},
                           {"id": "roster-remove", "property": "n_clicks", "value": None}],
                "state": [{"id": "roster-line", "property": "value", "value": "line-01"},
                          {"id": "roster-shift", "property": "value", "value": "B"},
                          {"id": "roster-role", "property": "value", "value": "operator"},
                          {"id": "roster-user", "property": "value", "value": "op"},
                          {"id": "roster-contact", "property": "value", "value": "crafted"}],
                "changedPropIds": ["roster-set.n_clicks"]}
        resp = op.request.post(base + "/_dash-update-component", data=body,
                               headers={"X-CSRFToken": csrf, "Content-Type": "application/json"})
        assert resp.status == 403
        assert [d.contact for d in list_duties(store)] == ["+49 151 000"]

        eng = browser.new_page(viewport={"width": 1400, "height": 1000})
        login(eng, base, "eng")
        eng.click("#nav-monitoring")
        eng.wait_for_selector("#monitoring-duty-operators")
        row = eng.locator("#monitoring-duty-operators tr:has(td:text-is('op'))").inner_text()
        assert "100%" in row  # its one alarm was escalated
        assert "B" in eng.inner_text("#monitoring-duty-shifts")
        shot(eng, "engineer-duty-kpis")
    with store.engine.connect() as conn:
        audits = conn.execute(select(schema.audit_log.c.username, schema.audit_log.c.action)
                              .where(schema.audit_log.c.action.like("roster.%"))).all()
    assert audits == [("boss", "roster.set")]
