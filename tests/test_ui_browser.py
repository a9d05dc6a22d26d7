"""Browser tests: the real `pq ui` process, real Chromium (Debian's), a real seeded database.

Operator: sign in, see a live alert appear, acknowledge it, give feedback, see it leave the queue;
fail to reach the models page; fail to call the promote callback with a crafted POST (403, nothing
changed). Engineer: retrain, watch progress, compare, promote with a reason, find it in the audit
log. Screenshots of each screen go to test-output/screenshots/.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select

from benchmarks.synthetic_store import add_live_alert, seed
from pq.storage import schema
from tests._ui_helpers import CHROMIUM, add_users, login, running_ui, shot

pytestmark = pytest.mark.browser

pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)


def _seeded(store):
    seed(store, lines=3, parts_per_line=300, alerts=30, active_alerts=2)
    add_users(store)
    return store


def _serve(store, tmp_path):
    return running_ui(store.engine.url.render_as_string(hide_password=False), tmp_path / "var", tmp_path / "ui.log")


@pytest.fixture
def ui_sqlite(sqlite_store, tmp_path):
    store = _seeded(sqlite_store)
    with _serve(store, tmp_path) as base:
        yield store, base


@pytest.fixture
def ui_any(store, tmp_path):
    """The same flow on the embedded store and on PostgreSQL/TimescaleDB."""
    store = _seeded(store)
    with _serve(store, tmp_path) as base:
        yield store, base


@pytest.mark.timeout(120)
def test_operator_live_alert_ack_feedback_leaves_queue(ui_any, browser):
    store, base = ui_any
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    login(page, base, "op")
    page.wait_for_selector("#overview-tiles .pq-tile")
    shot(page, "operator-lines-overview")
    # The part decision beside the alarms: each tile counts what was diverted in the last hour, as stored,
    # and names the latest diverted parts with their reason.
    hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    with store.engine.connect() as conn:
        diverted = dict(conn.execute(
            select(schema.predictions.c.line_id, func.count()).where(
                schema.predictions.c.decision == "at_risk", schema.predictions.c.decided_at >= hour_ago)
            .group_by(schema.predictions.c.line_id)).all())
        latest = conn.execute(select(schema.predictions.c.line_id, schema.predictions.c.serial).where(
            schema.predictions.c.decision == "at_risk").order_by(schema.predictions.c.decided_at.desc()).limit(1)).one()
    assert sum(diverted.values()) > 0, "the seeded store diverts no part: the tile cannot be checked"
    for line_id in ("line-01", "line-02", "line-03"):
        # the tile was rendered before the query: since then a part may have left the hour, none arrived
        shown = int(page.inner_text(f"#overview-diverted-{line_id}"))
        assert diverted.get(line_id, 0) <= shown <= diverted.get(line_id, 0) + 2, (line_id, shown, diverted)
    tile = page.inner_text(f"#overview-tile-{latest.line_id}")
    assert "Set aside for inspection" in tile and latest.serial in tile

    page.click("#nav-alerts")
    page.wait_for_selector("#alerts-list .pq-card")
    alert_id = add_live_alert(store, "line-02", signal="melt_temp_c", direction="low", severity="high",
                              serial="02-LIVE00001", title="Melt temperature 9 °C below normal for this lot")
    card = page.locator("article:has-text('02-LIVE00001')")
    card.wait_for(timeout=6_000)  # live: within a refresh or two, no reload
    # Newest and most severe first: the new urgent alert is on top.
    assert "02-LIVE00001" in page.locator("#alerts-list .pq-card").first.inner_text()
    shot(page, "operator-alert-queue")

    card.get_by_role("button", name="Acknowledge").click()
    page.wait_for_selector("#alerts-message .pq-ok")
    card.get_by_text("what did you find?").wait_for()
    with store.engine.connect() as conn:
        row = conn.execute(select(schema.alerts).where(schema.alerts.c.id == alert_id)).one()
    assert row.state == "acknowledged" and row.acked_by == "op"

    card.get_by_role("link", name="Details").click()
    page.wait_for_selector("#detail-why")
    page.wait_for_selector("#detail-trend .main-svg")
    shot(page, "operator-alert-detail")
    page.get_by_label("False alarm").check()
    comment = "<b>measured OK</b> on the CMM"
    page.fill("#detail-comment", comment)
    page.click("#detail-save-feedback")
    page.wait_for_selector("#detail-message .pq-ok")
    # User text is shown as text, never as markup.
    assert comment in page.inner_text("#detail-feedback-status")
    assert page.locator("#detail-feedback-status b").count() == 0
    shot(page, "operator-alert-feedback")

    page.click("text=< Back to alerts")
    page.wait_for_selector("#alerts-list")
    page.wait_for_timeout(500)
    assert page.locator("article:has-text('02-LIVE00001')").count() == 0
    with store.engine.connect() as conn:
        row = conn.execute(select(schema.alerts).where(schema.alerts.c.id == alert_id)).one()
        events = conn.execute(select(schema.alert_events.c.event).where(
            schema.alert_events.c.alert_id == alert_id)).scalars().all()
        audits = conn.execute(select(schema.audit_log.c.action).where(
            schema.audit_log.c.target == f"alert:{alert_id}")).scalars().all()
    assert row.feedback == "false_alarm" and row.feedback_comment == comment and row.feedback_by == "op"
    assert sorted(events) == ["acknowledged", "feedback", "raised"]
    assert sorted(audits) == ["alert.acknowledged", "alert.feedback"]


@pytest.mark.timeout(120)
def test_operator_cannot_reach_models_or_promote(ui_sqlite, browser):
    store, base = ui_sqlite
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    login(page, base, "op")
    assert page.locator("#nav-models").count() == 0
    page.goto(base + "/models")
    page.wait_for_selector("#page-denied")
    shot(page, "operator-models-denied")
    with store.engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(schema.model_deployments)).scalar()
    # A crafted POST straight to Dash's callback endpoint, with the operator's own valid session and
    # CSRF token, naming the real promote callback: the role check on the server must refuse it.
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "_csrf_token")
    deps = page.request.get(base + "/_dash-dependencies").json()
    promote_output = next(d["output"] for d in deps if "models-promote-message" in d["output"])
    body = {"output": promote_output,
            "outputs": [{"id": "models-promote-message", "property": "children"},
                        {"id": "models-changed", "property": "data"}],
            "inputs": [{"id": "models-promote", "property": "n_clicks", "value": 1}],
            "state": [{"id": "models-candidate", "property": "value", "value": 1},
                      {"id": "models-reason", "property": "value", "value": "crafted"},
                      {"id": "models-changed", "property": "data", "value": 0}],
            "changedPropIds": ["models-promote.n_clicks"]}
    resp = page.request.post(base + "/_dash-update-component", data=body,
                             headers={"X-CSRFToken": csrf, "Content-Type": "application/json"})
    assert resp.status == 403
    # Any callback id that was never registered with a role is refused too (deny by default).
    body_unknown = dict(body, output="nothing-here.children")
    assert page.request.post(base + "/_dash-update-component", data=body_unknown,
                             headers={"X-CSRFToken": csrf}).status == 403
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.model_deployments)).scalar() == before
        audits = conn.execute(select(schema.audit_log.c.action).where(schema.audit_log.c.username == "op")).scalars().all()
    assert "model.promote" not in audits


@pytest.fixture
def ui_trained(sqlite_store, tmp_path):
    """A store with labelled history and one production model, and `pq ui` on it."""
    from models import registry
    from models.training import TrainConfig, train
    from benchmarks.synthetic_store import seed_training_history

    store = sqlite_store
    seed(store, lines=2, parts_per_line=200, alerts=10, active_alerts=1)
    add_users(store)
    seed_training_history(store, n_parts=3000, feature_set_version="synthetic-1")
    first = train(store, TrainConfig(feature_set_version="synthetic-1"), trained_by="eng")
    registry.promote(store, first.version.id, approved_by="eng", reason="initial model for the test")
    with running_ui(str(store.engine.url.render_as_string(hide_password=False)), tmp_path / "var",
                    tmp_path / "ui.log") as base:
        yield store, base, first.version.id


@pytest.mark.timeout(240)
def test_engineer_retrain_compare_promote_audit(ui_trained, browser):
    store, base, production_id = ui_trained
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    login(page, base, "eng")
    page.click("#nav-models")
    page.wait_for_selector("#models-versions-table")
    page.fill("#models-diversion", "3.5")  # the part decision's budget: at most 3.5 % of parts diverted
    page.click("#models-retrain")
    page.wait_for_selector("#models-retrain-message .pq-ok")
    page.wait_for_selector(".pq-progress-bar")
    shot(page, "engineer-models-retrain-progress")
    # Leave the page while it trains, come back: the job carries on and the page shows it.
    page.click("#nav-lines")
    page.wait_for_selector("#overview-tiles")
    page.click("#nav-models")
    page.wait_for_selector("text=registered", timeout=150_000)
    with store.engine.connect() as conn:
        job = conn.execute(select(schema.training_jobs).order_by(schema.training_jobs.c.id.desc())).first()
    assert job.status == "done" and job.progress == 1.0 and job.requested_by == "eng"
    candidate_id = job.model_version_id
    with store.engine.connect() as conn:
        card = conn.execute(select(schema.model_versions.c.card).where(schema.model_versions.c.id == candidate_id)).scalar()
    assert card["decisions"]["share_budget"] == 0.035 and card["decisions"]["diverted_share"] <= 0.035

    page.reload()
    page.wait_for_selector("#models-versions-table")
    row = page.locator("#models-versions-table tr", has_text=f"(#{candidate_id})").first.inner_text()
    assert f"{card['decisions']['diverted_share'] * 100:.1f} %" in row, row  # the table shows the part decision
    _choose(page, "#models-compare-candidate", f"#{candidate_id})")
    _choose(page, "#models-compare-production", f"#{production_id}")
    page.click("#models-compare")
    page.wait_for_selector("#models-compare-table")
    shot(page, "engineer-models-compare")

    _choose(page, "#models-candidate", f"#{candidate_id})")
    page.click("#models-promote")
    page.wait_for_selector("#models-promote-message .pq-error")  # no reason: refused
    page.fill("#models-reason", "Retrained on the last week; not worse in any regime")
    page.click("#models-promote")
    page.wait_for_selector("#models-promote-message .pq-ok", timeout=30_000)
    shot(page, "engineer-models-promoted")
    with store.engine.connect() as conn:
        dep = conn.execute(select(schema.model_deployments).order_by(schema.model_deployments.c.id.desc())).first()
    assert dep.model_version_id == candidate_id and dep.approved_by == "eng"

    page.click("#nav-audit-log")
    page.wait_for_selector("#audit-table")
    page.fill("#audit-text", f"model_version:{candidate_id}")
    page.keyboard.press("Enter")
    page.wait_for_selector("#audit-table td:has-text('model.promote')")
    assert "eng" in page.inner_text("#audit-table")
    shot(page, "engineer-audit-log")
    for path, selector, name in (("/monitoring", "#monitoring-precision", "engineer-monitoring"),
                                 ("/playbook", "#playbook-text", "engineer-playbook")):
        page.goto(base + path)
        page.wait_for_selector(selector)
        page.wait_for_timeout(800)
        shot(page, name)


def _choose(page, dropdown: str, text: str) -> None:
    page.click(dropdown)
    # Dash 4 dropdowns render their options in a popover outside the component.
    page.get_by_role("option").filter(has_text=text).first.click()
    page.keyboard.press("Escape")
