"""Conditions page: production vs a naive model on the same served vectors, and the simulator
scenario switch (engineers only, audited, refused to operators on the server)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from pq.health import health_row, write_health_now
from pq.storage import schema
from tests._ui_helpers import CHROMIUM, CHROMIUM_ARGS, add_users, login, running_ui

pytestmark = pytest.mark.timeout(240)


def _seed_scored_history(store, n_scored: int = 60):
    """Labelled synthetic history, a naive model trained on it, and edge predictions for the last parts."""
    from models.training import TrainConfig, train
    from benchmarks.synthetic_store import seed_training_history

    seed_training_history(store, n_parts=3000, feature_set_version="synthetic-1")
    naive = train(store, TrainConfig(feature_set_version="synthetic-1", kind="naive"), trained_by="eng").version
    with store.engine.connect() as conn:
        last = conn.execute(select(schema.parts.c.line_id, schema.parts.c.serial, schema.parts.c.cycle_end)
                            .order_by(schema.parts.c.cycle_end.desc()).limit(n_scored)).all()
    with store.engine.begin() as conn:
        conn.execute(insert(schema.predictions), [
            {"id": str(uuid.uuid4()), "decided_at": r.cycle_end, "line_id": r.line_id, "serial": r.serial,
             "model_version_id": None, "feature_set_version": "synthetic-1", "score": 0.01, "threshold": 0.5,
             "decision": "ok"} for r in last])
    return naive


def test_naive_model_scores_the_same_served_vectors(sqlite_store):
    from ui.pages.conditions import naive_comparison

    store = sqlite_store
    parts, version, message = naive_comparison(store)
    assert version is None and "No naive model" in message
    naive = _seed_scored_history(store)
    parts, version, message = naive_comparison(store)
    assert message is None and version.id == naive.id and version.kind == "naive"
    assert len(parts) == 60
    assert parts["naive_score"].between(0, 1).all()
    assert parts["naive_score"].nunique() > 1  # really scored, part by part
    assert list(parts["cycle_end"]) == sorted(parts["cycle_end"])  # oldest first, for the plot


def test_scenario_switch_is_for_engineers_and_audited(sqlite_store, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    store = sqlite_store
    add_users(store)
    from simulators.scenarios import SCENARIOS

    offered = [{"name": s.name, "description": s.description} for s in SCENARIOS.values()]  # as the demo reports
    write_health_now(store, health_row("simulator", "normal", detail={"scenario": "normal", "scenarios": offered},
                                       updated_at=datetime.now(timezone.utc)))
    url = store.engine.url.render_as_string(hide_password=False)
    with running_ui(url, tmp_path / "var", tmp_path / "ui.log") as base, playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)  # waits, not sleeps: generous for a loaded runner
        login(page, base, "eng")
        page.goto(base + "/conditions")
        page.wait_for_selector("#conditions-scenario-text")
        assert "Normal" in page.inner_text("#conditions-scenario-text")
        # the buttons are the simulator's own scenarios, none copied into the UI
        shown = page.locator("#conditions-scenario-buttons button").all_inner_texts()
        assert [t.strip() for t in shown] == [s["name"].replace("-", " ").capitalize() for s in offered], shown
        page.click("button:text-is('Heatwave')")
        page.wait_for_selector("#conditions-feedback >> text=Requested: Heatwave")

        # an operator replaying the same callback with a valid session and CSRF token is refused
        op = browser.new_page()
        op.set_default_timeout(60_000)
        login(op, base, "op")
        csrf = next(c["value"] for c in op.context.cookies() if c["name"] == "_csrf_token")
        deps = op.request.get(base + "/_dash-dependencies").json()
        output = next(d["output"] for d in deps if "conditions-feedback" in d["output"])
        body = {"output": output, "outputs": {"id": "conditions-feedback", "property": "children"},
                "inputs": [[{"id": {"type": "conditions-scenario-btn", "scenario": "humid"},
                             "property": "n_clicks", "value": 1}]],
                "changedPropIds": ['{"scenario":"humid","type":"conditions-scenario-btn"}.n_clicks']}
        resp = op.request.post(base + "/_dash-update-component", data=body,
                               headers={"X-CSRFToken": csrf, "Content-Type": "application/json"})
        assert resp.status == 403
        browser.close()
    with store.engine.connect() as conn:
        detail = conn.execute(select(schema.component_health.c.detail)
                              .where(schema.component_health.c.component == "simulator")).scalar()
        audits = conn.execute(select(schema.audit_log.c.username, schema.audit_log.c.detail)
                              .where(schema.audit_log.c.action == "simulator.scenario")).all()
    assert detail["requested_scenario"] == "heatwave"
    assert [(a.username, a.detail) for a in audits] == [("eng", {"scenario": "heatwave"})]
