"""Conditions page: production vs a naive model on the same served vectors, as two decisions (parts
diverted, operator alarms) with the alarm budget, and the simulator scenario switch (engineers
only, audited, refused to operators on the server)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select

from pq.health import health_row, write_health_now
from pq.storage import schema
from tests._ui_helpers import add_users, login, running_ui, shot

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


def _seed_two_decisions(store):
    """A naive and a production model on synthetic history; edge predictions for 60 parts (the 30 the
    naive model scores highest, so it diverts and calls, and the 30 latest), decided over the last
    20 minutes; 3 of them diverted by production; production's alarms: one episode in the window,
    one flood alert (not an operator call about parts) and one episode from before the window."""
    from benchmarks.synthetic_store import seed_training_history
    from models.scoring import Scorer
    from models.training import TrainConfig, train

    seed_training_history(store, n_parts=3000, feature_set_version="synthetic-1")
    naive = train(store, TrainConfig(feature_set_version="synthetic-1", kind="naive"), trained_by="eng").version
    prod = train(store, TrainConfig(feature_set_version="synthetic-1"), trained_by="eng").version
    p, f = schema.parts, schema.part_features
    with store.engine.connect() as conn:
        rows = conn.execute(select(p.c.line_id, p.c.serial, p.c.cycle_end, f.c.features)
                            .join(f, f.c.part_id == p.c.id).order_by(p.c.cycle_end)).all()
    import numpy as np
    import pandas as pd

    scorer = Scorer.from_version(store, naive.id)
    X = pd.DataFrame.from_records([{k: (np.nan if v is None else v) for k, v in r.features.items()} for r in rows])
    score = scorer.score_frame(X.reindex(columns=scorer.feature_names))
    chosen = sorted(set(np.argsort(-score)[:30]) | set(range(len(rows) - 30, len(rows))))
    now = datetime.now(timezone.utc)
    decided = {i: now - timedelta(seconds=20 * (len(chosen) - j)) for j, i in enumerate(chosen)}
    diverted = set(chosen[-3:])
    with store.engine.begin() as conn:
        conn.execute(insert(schema.predictions), [
            {"id": str(uuid.uuid4()), "decided_at": decided[i], "line_id": rows[i].line_id, "serial": rows[i].serial,
             "model_version_id": prod.id, "feature_set_version": "synthetic-1", "score": 0.9 if i in diverted else 0.01,
             "threshold": 0.5, "decision": "at_risk" if i in diverted else "ok"} for i in chosen])
        line = rows[chosen[-1]].line_id
        conn.execute(insert(schema.alerts), [
            {"id": str(uuid.uuid4()), "line_id": line, "kind": kind, "cause": cause, "state": "active",
             "severity": "medium", "title": "Melt temperature high", "raised_at": at, "updated_at": at}
            for kind, cause, at in (("episode", "melt_temp_c", now - timedelta(minutes=2)),
                                    ("flood", "flood", now - timedelta(minutes=1)),
                                    ("episode", "cushion_mm", now - timedelta(hours=3)))])
    return naive, prod, decided[chosen[20]]


def test_two_decisions_of_both_models_from_stored_rows(sqlite_store):
    from ui.pages.conditions import naive_comparison, production_alarms, summary_sentence, two_decisions

    store = sqlite_store
    naive, prod, switch_at = _seed_two_decisions(store)
    parts, version, message = naive_comparison(store)
    assert message is None and len(parts) == 60
    # diverted: the naive model's own diversion threshold from its card, not the old alert threshold
    threshold = naive.card["decisions"]["threshold"]
    assert (parts["naive_at_risk"] == (parts["naive_score"] >= threshold)).all()
    assert parts["naive_at_risk"].sum() >= 3 and parts["naive_alarm"].sum() >= 1
    # an alarm opens on a diverted part whose cause is named, as the edge's episodes do
    assert parts.loc[parts["naive_alarm"], "naive_at_risk"].all()
    assert parts.loc[parts["naive_alarm"], "naive_cause"].notna().all()
    alarms = production_alarms(store, parts["line_id"].unique(), parts["decided_at"].iloc[0])
    assert list(alarms["kind"]) == ["episode"]  # the flood alert and the older episode do not count
    counts = two_decisions(parts, alarms)
    assert counts["prod_diverted"] == 3 and counts["prod_alarms"] == 1
    assert counts["naive_diverted"] == int(parts["naive_at_risk"].sum())
    later = two_decisions(parts, alarms, switch_at)
    assert later["parts"] == 40 and later["prod_alarms"] == 1
    text = summary_sentence(later, scenario="heatwave", since=switch_at)
    assert text.startswith("Since the switch to Heatwave") and "(40 parts)" in text
    assert "production diverted 3 and called the operator once" in text


def test_page_shows_both_decisions_and_the_alarm_budget(sqlite_store, tmp_path, browser):
    from ui.pages.conditions import naive_comparison, two_decisions, production_alarms

    store = sqlite_store
    add_users(store)
    naive, prod, switch_at = _seed_two_decisions(store)
    write_health_now(store, health_row("simulator", "heatwave", detail={
        "scenario": "heatwave", "since": switch_at.isoformat(), "scenarios": [{"name": "heatwave"}]}))
    parts, _, _ = naive_comparison(store)
    counts = two_decisions(parts, production_alarms(store, parts["line_id"].unique(), parts["decided_at"].iloc[0]),
                           switch_at)
    url = store.engine.url.render_as_string(hide_password=False)
    with running_ui(url, tmp_path / "var", tmp_path / "ui.log") as base:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        login(page, base, "eng")
        page.goto(base + "/conditions")
        page.wait_for_selector("#conditions-summary")
        summary = page.inner_text("#conditions-summary")
        assert re.match(r"Since the switch to Heatwave \d+ min ago \(40 parts\): ", summary), summary
        naive_parts = "1 part" if counts["naive_diverted"] == 1 else f"{counts['naive_diverted']} parts"
        assert f"the naive model would have diverted {naive_parts} and " in summary, summary
        assert "production diverted 3 and called the operator once." in summary, summary
        graph = page.locator("#conditions-decisions-graph")
        graph.locator("text=Operator alarms").wait_for()
        legend = " ".join(graph.locator(".legendtext").all_text_contents())
        rate = prod.card["decisions"]["alarms_per_h"]
        assert "ISA-18.2 ceiling: 6 alarms/h" in legend, legend
        assert f"Production on validation: {rate:.2g} alarms/h" in legend, legend
        assert "Naive" in legend and "Production (environment-aware)" in legend, legend
        assert graph.locator("text=Parts diverted for inspection").count() == 1
        assert graph.locator("text=switch to Heatwave").count() == 1
        shot(page, "conditions-two-decisions")


def test_scenario_switch_is_for_engineers_and_audited(sqlite_store, tmp_path, browser):
    store = sqlite_store
    add_users(store)
    from simulators.scenarios import SCENARIOS

    offered = [{"name": s.name, "description": s.description} for s in SCENARIOS.values()]  # as the demo reports
    write_health_now(store, health_row("simulator", "normal", detail={"scenario": "normal", "scenarios": offered},
                                       updated_at=datetime.now(timezone.utc)))
    url = store.engine.url.render_as_string(hide_password=False)
    with running_ui(url, tmp_path / "var", tmp_path / "ui.log") as base:
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
    with store.engine.connect() as conn:
        detail = conn.execute(select(schema.component_health.c.detail)
                              .where(schema.component_health.c.component == "simulator")).scalar()
        audits = conn.execute(select(schema.audit_log.c.username, schema.audit_log.c.detail)
                              .where(schema.audit_log.c.action == "simulator.scenario")).all()
    assert detail["requested_scenario"] == "heatwave"
    assert [(a.username, a.detail) for a in audits] == [("eng", {"scenario": "heatwave"})]
