"""Scheduled retraining (models.scheduler, models.proposals, `pq models scheduler`, the Models page's
section) on real stores with a small generated history: a due schedule runs once and proposes without
touching production; approval promotes through the registry's gate with the approver in the audit; a
schedule missed for several periods runs once on start; a failing candidate is kept with its report;
label and drift triggers; a stop during training registers nothing; the store down at start is retried
and reported without a traceback; operators can neither add a schedule nor decide a proposal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select, update

from benchmarks.synthetic_store import seed_training_history
from models import proposals, registry
from models.scheduler import Scheduler, add_schedule, due_reason, get_schedule, list_schedules, run_schedule
from models.training import TrainConfig, train
from pq.errors import InvalidRequest, ModelError, PermissionDenied
from pq.storage import schema
from tests._ui_helpers import add_users

pytestmark = pytest.mark.timeout(300)  # catches a hang only: each training here takes seconds

FS = "synthetic-1"
# a small history: 1,500 parts of 3 min (about three days), 79 defects; training takes a few seconds
SMALL = {"feature_set_version": FS, "min_defects": 5, "min_labelled": 100}


@pytest.fixture
def history(store):
    add_users(store)
    seed_training_history(store, n_parts=1500, feature_set_version=FS)
    return store


def _production(store):
    """A production version trained exactly as the schedules below train (same data, same settings)."""
    v = train(store, TrainConfig(**SMALL), trained_by="eng").version
    registry.promote(store, v.id, approved_by="eng", reason="initial model for the test")
    return v


def _make_due(store, schedule_id: int, ago: timedelta) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(schema.training_schedules).where(schema.training_schedules.c.id == schedule_id)
                     .values(next_due_at=datetime.now(timezone.utc) - ago))


def _audit(store, action: str) -> list:
    a = schema.audit_log
    with store.engine.connect() as conn:
        return conn.execute(select(a).where(a.c.action == action).order_by(a.c.id)).all()


def test_due_schedule_proposes_once_and_approval_promotes_through_the_gate(history):
    store = history
    prod = _production(store)
    s = add_schedule(store, "*/*", approver="eng", actor="eng", every_days=7, config=SMALL)
    assert s.next_due_at > datetime.now(timezone.utc)
    sched = Scheduler(lambda: store)
    assert sched.run(once=True) == 0  # not due yet
    _make_due(store, s.id, timedelta(minutes=1))

    assert sched.run(once=True) == 1
    assert sched.run(once=True) == 0  # ran once: due again in a week, not at the next poll
    from pq.health import read_health

    (health,) = read_health(store, "scheduler")
    assert health["state"] == "idle" and health["detail"]["message"] == "nothing due at the last poll"
    (p,) = proposals.list_proposals(store)
    assert (p.status, p.verdict, p.production_version_id) == ("proposed", "passed", prod.id)
    assert p.trigger == "every 7 days" and p.shadow.startswith("shadow: not available")
    assert p.report["gate"]["worse"] == [] and p.report["gate"]["production"] == prod.label
    same = p.report["same_window"]
    assert same["parts"] == 1500 and same["candidate"]["version_id"] == p.candidate_version_id
    assert same["production"]["version_id"] == prod.id and same["production"]["overall"]["far"] is not None
    # proposed, never promoted: production is untouched and the approver is told
    assert registry.production_map(store) == {"*/*": prod.id}
    assert registry.get_version(store, p.candidate_version_id).trained_by == "scheduler"
    (notice,) = _audit(store, "model.proposal_proposed")
    assert notice.detail["approver"] == "eng" and notice.target == f"model_version:{p.candidate_version_id}"
    s = get_schedule(store, s.id)
    assert s.last_run_at is not None and s.next_due_at > datetime.now(timezone.utc) + timedelta(days=6)
    assert f"proposal #{p.id}" in s.last_result

    with pytest.raises(PermissionDenied, match="engineer or admin"):
        proposals.approve(store, p.id, username="op", reason="looks good to me")
    with pytest.raises(InvalidRequest, match="reason"):
        proposals.approve(store, p.id, username="eng", reason=" ")
    assert registry.production_map(store) == {"*/*": prod.id}

    dep = proposals.approve(store, p.id, username="boss", reason="not worse in any band; retrained on the last days")
    assert registry.production_map(store) == {"*/*": p.candidate_version_id} and dep.approved_by == "boss"
    promoted = _audit(store, "model.promote")[-1]
    assert promoted.username == "boss" and promoted.target == f"model_version:{p.candidate_version_id}"
    assert "not worse in any band" in promoted.detail["reason"] and f"proposal #{p.id}" in promoted.detail["reason"]
    p = proposals.get_proposal(store, p.id)
    assert (p.status, p.decided_by) == ("approved", "boss")
    assert get_schedule(store, s.id).last_result == f"proposal #{p.id} approved by boss"
    with pytest.raises(InvalidRequest, match="approved, not open"):
        proposals.reject(store, p.id, username="eng", reason="changed my mind")


def test_missed_schedule_runs_once_on_start(history):
    store = history
    s = add_schedule(store, "*/*", approver="eng", actor="eng", every_days=1, config=SMALL)
    _make_due(store, s.id, timedelta(days=3, hours=12))  # down for three and a half periods
    shadowed = []

    def put_in_shadow(store_, version_id, line_id, actor):  # the composition root's hook (shadow deployments)
        shadowed.append((version_id, line_id, actor))
        return "in shadow on every line"

    sched = Scheduler(lambda: store, shadow=put_in_shadow)
    assert sched.run(once=True) == 1
    assert sched.run(once=True) == 0
    (p,) = proposals.list_proposals(store)
    assert "missed while the scheduler was down; runs once" in p.trigger
    assert p.production_version_id is None and p.status == "proposed"  # no production: only the alarm ceiling
    assert shadowed == [(p.candidate_version_id, None, "scheduler")] and p.shadow == "in shadow on every line"
    assert get_schedule(store, s.id).next_due_at > datetime.now(timezone.utc) + timedelta(hours=23)


def test_failing_candidate_is_kept_with_the_report_that_failed_it(history):
    store = history
    prod = _production(store)
    # five times the alarm budget: the candidate's false-alarm rate is far above production's in every band
    s = add_schedule(store, "*/*", approver="eng", actor="eng", every_days=7, config=SMALL | {"alarm_budget_per_h": 10})
    p = run_schedule(store, s, trigger="test")
    assert (p.status, p.verdict) == ("failed", "failed")
    worse = p.report["gate"]["worse"]
    assert worse and {w["metric"] for w in worse} >= {"far"}
    assert p.report["verdict"].startswith("worse than production: ")
    cand = registry.get_version(store, p.candidate_version_id)  # kept, registered, not promoted
    assert cand.id != prod.id and registry.production_map(store) == {"*/*": prod.id}
    assert p.shadow is None
    assert _audit(store, "model.proposal_failed")[-1].target == f"model_version:{cand.id}"
    with pytest.raises(InvalidRequest, match="failed, not open"):
        proposals.approve(store, p.id, username="eng", reason="promote it anyway")
    assert proposals.open_proposals(store) == []


def test_training_that_cannot_run_is_a_failed_proposal_with_the_reason(sqlite_store):
    store = sqlite_store
    add_users(store)
    s = add_schedule(store, "line-9/*", approver="eng", actor="eng", every_days=7, config=SMALL)
    p = run_schedule(store, s, trigger="test")
    assert p.status == "failed" and p.candidate_version_id is None
    assert "error" in p.report and p.report["verdict"].startswith("no candidate: ")


def test_label_and_drift_triggers(sqlite_store):
    store = sqlite_store
    add_users(store)
    s = add_schedule(store, "line-1/*", approver="eng", actor="eng", every_days=None, min_new_labels=3, on_drift=True,
                     config=SMALL)
    assert s.next_due_at is None and due_reason(store, s) is None
    now = datetime.now(timezone.utc)
    with store.engine.begin() as conn:
        conn.execute(insert(schema.inspections), [
            {"line_id": "line-1" if i < 2 else "line-2", "serial": f"s{i}", "defect": False, "inspected_at": now,
             "source": "inspection"} for i in range(4)])
    assert due_reason(store, s) is None  # two on line-1: the other line's labels do not count
    with store.engine.begin() as conn:
        conn.execute(insert(schema.inspections).values(line_id="line-1", serial="s9", defect=True, inspected_at=now,
                                                       source="inspection"))
    assert due_reason(store, s) == "3 new labels (threshold 3)"
    s2 = add_schedule(store, "line-1/*", approver="eng", actor="eng", every_days=None, on_drift=True, config=SMALL)
    assert due_reason(store, s2) is None
    with store.engine.begin() as conn:
        conn.execute(insert(schema.line_events).values(id=str(uuid.uuid4()), line_id="line-1", source="monitoring",
                                                       kind="drift", started_at=datetime.now(timezone.utc)))
    assert due_reason(store, s2) == "drift alarm (1 since the last run)"
    from models.scheduler import set_enabled

    assert set_enabled(store, s2.id, False, actor="eng").enabled is False
    assert due_reason(store, get_schedule(store, s2.id)) is None  # paused
    with pytest.raises(PermissionDenied):
        set_enabled(store, s2.id, True, actor="op")
    assert due_reason(store, set_enabled(store, s2.id, True, actor="boss")) == "drift alarm (1 since the last run)"
    assert [r.username for r in _audit(store, "model.schedule_pause")] == ["eng"]


def test_stop_during_training_registers_nothing_and_stays_due(sqlite_store):
    store = sqlite_store
    add_users(store)
    seed_training_history(store, n_parts=1500, feature_set_version=FS)
    s = add_schedule(store, "*/*", approver="eng", actor="eng", every_days=7, config=SMALL)
    _make_due(store, s.id, timedelta(minutes=1))
    sched = Scheduler(lambda: store)
    sched.store = store
    sched.stop.set()  # SIGTERM arrived: the first progress report unwinds the training
    assert sched.run_one(get_schedule(store, s.id), "test") is None
    assert registry.list_versions(store) == [] and proposals.list_proposals(store) == []
    assert due_reason(store, get_schedule(store, s.id)) == "every 7 days"


def test_schedule_input_is_checked(sqlite_store):
    store = sqlite_store
    add_users(store)
    with pytest.raises(ModelError, match="scope must be LINE/PRODUCT"):
        add_schedule(store, "line-1", approver="eng", actor="eng")
    with pytest.raises(ModelError, match="unknown key.*budget"):
        add_schedule(store, "*/*", approver="eng", actor="eng", config={"budget": 2})
    with pytest.raises(ModelError, match="kind must be one of"):
        add_schedule(store, "*/*", approver="eng", actor="eng", config={"kind": "magic"})
    with pytest.raises(ModelError, match="needs a trigger"):
        add_schedule(store, "*/*", approver="eng", actor="eng", every_days=None)
    assert list_schedules(store) == []


def test_operators_and_strangers_may_not_schedule_or_decide(sqlite_store):
    store = sqlite_store
    add_users(store)
    with pytest.raises(PermissionDenied, match="'op' has role operator"):
        add_schedule(store, "*/*", approver="eng", actor="op")
    with pytest.raises(PermissionDenied, match="approver 'op'"):
        add_schedule(store, "*/*", approver="op", actor="eng")
    with pytest.raises(PermissionDenied, match="not a pq user"):
        add_schedule(store, "*/*", approver="eng", actor="mallory")
    s = add_schedule(store, "*/*", approver="eng", actor="eng")
    with pytest.raises(PermissionDenied):
        from models.scheduler import remove_schedule

        remove_schedule(store, s.id, actor="op")
    p = proposals.record_proposal(store, schedule_id=s.id, scope="*/*", trigger="test", candidate_version_id=None,
                                  production_version_id=None, report={}, verdict="passed", status="proposed")
    for decide in (proposals.approve, proposals.reject):
        with pytest.raises(PermissionDenied):
            decide(store, p.id, username="op", reason="operators decide too")
    assert proposals.get_proposal(store, p.id).status == "proposed"
    assert [r.username for r in _audit(store, "model.schedule_add")] == ["eng"]


def _run_pq(*args, env, timeout=60):
    full = {k: v for k, v in os.environ.items() if not k.startswith("PQ_")} | env
    return subprocess.run([sys.executable, "-m", "pq.cli", *args], capture_output=True, text=True, env=full,
                          timeout=timeout)


def test_store_down_at_start_is_retried_and_reported_without_traceback(tmp_path):
    env = {"PQ_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/pq", "PQ_DATA_DIR": str(tmp_path)}
    proc = _run_pq("models", "scheduler", "--store-wait-s", "1", "--retry-s", "0.2", env=env)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("store not reachable") == 1  # reported once, then retried quietly
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: scheduler: the store stayed unreachable for 1 s")


def test_cli_refuses_an_operator_and_sigterm_stops_the_scheduler(sqlite_store, tmp_path):
    store = sqlite_store
    add_users(store)
    env = {"PQ_DATABASE_URL": store.engine.url.render_as_string(hide_password=False), "PQ_DATA_DIR": str(tmp_path)}
    proc = _run_pq("models", "schedule", "add", "*/*", "--approver", "eng", "--user", "op", env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "has role operator" in proc.stderr
    proc = _run_pq("models", "schedule", "add", "line-1/*", "--approver", "eng", "--user", "eng", "--labels", "50",
                   env=env)
    assert proc.returncode == 0 and "schedule #1 for line-1/*: 50 new labels" in proc.stdout, proc.stderr
    full = {k: v for k, v in os.environ.items() if not k.startswith("PQ_")} | env
    sched = subprocess.Popen([sys.executable, "-m", "pq.cli", "models", "scheduler", "--poll-s", "0.5"],
                             stderr=subprocess.PIPE, text=True, env=full)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("1 schedule(s)" in ln for ln in lines):
            lines.append(sched.stderr.readline())
        assert any("1 schedule(s)" in ln for ln in lines), lines
        sched.send_signal(signal.SIGTERM)
        rest = sched.communicate(timeout=30)[1]
    finally:
        if sched.poll() is None:
            sched.kill()
    assert sched.returncode == 0 and "Traceback" not in rest and "scheduler stopped: 0 proposal(s)" in rest


def test_models_page_section_decides_on_the_server_with_roles(sqlite_store, settings_factory):
    from tests.test_ui_security import _callback_output, _login
    from ui.app import create_app

    store = sqlite_store
    add_users(store)
    s = add_schedule(store, "*/*", approver="eng", actor="eng")
    p = proposals.record_proposal(store, schedule_id=s.id, scope="*/*", trigger="test", candidate_version_id=None,
                                  production_version_id=None, report={"verdict": "test"}, verdict="passed",
                                  status="proposed")
    dash_app = create_app(settings_factory(), store)
    output = _callback_output(dash_app, "models-proposal-message.children")
    outputs = [{"id": o.split(".")[0], "property": o.split(".", 1)[1]} for o in output.strip(".").split("...")]

    def body(reason, button="models-proposal-reject"):
        return {"output": output, "outputs": outputs,
                "inputs": [{"id": "models-proposal-approve", "property": "n_clicks",
                            "value": 1 if button.endswith("approve") else None},
                           {"id": "models-proposal-reject", "property": "n_clicks",
                            "value": 1 if button.endswith("reject") else None}],
                "state": [{"id": "models-proposal", "property": "value", "value": p.id},
                          {"id": "models-proposal-reason", "property": "value", "value": reason},
                          {"id": "models-changed", "property": "data", "value": 0}],
                "changedPropIds": [f"{button}.n_clicks"]}

    op = dash_app.server.test_client()
    _, token = _login(op, "op")
    assert op.post("/_dash-update-component", json=body("operators decide too"),
                   headers={"X-CSRFToken": token}).status_code == 403
    eng = dash_app.server.test_client()
    _, token = _login(eng, "eng")
    r = eng.post("/_dash-update-component", json=body(""), headers={"X-CSRFToken": token})
    assert r.status_code == 200 and "a reason is required" in r.get_data(as_text=True)
    assert proposals.get_proposal(store, p.id).status == "proposed"
    r = eng.post("/_dash-update-component", json=body("the drift was a sensor swap"), headers={"X-CSRFToken": token})
    assert r.status_code == 200 and f"Proposal #{p.id} rejected" in r.get_data(as_text=True)
    p = proposals.get_proposal(store, p.id)
    assert (p.status, p.decided_by, p.reason) == ("rejected", "eng", "the drift was a sensor swap")
    assert _audit(store, "model.proposal_rejected")[-1].username == "eng"
    # the page itself lists the schedule and the decided proposal
    from ui.pages.models_schedules import _lists

    box, options = _lists(store)
    assert options == [] and "every 7 days" in str(box) and "the drift was a sensor swap" in str(box)


@pytest.mark.browser
def test_engineer_approves_a_proposal_on_the_models_page(sqlite_store, tmp_path, browser):
    from tests._ui_helpers import login, running_ui, shot

    store = sqlite_store
    add_users(store)
    seed_training_history(store, n_parts=1500, feature_set_version=FS)
    prod = _production(store)
    s = add_schedule(store, "*/*", approver="eng", actor="eng", every_days=7, config=SMALL)
    p = run_schedule(store, s, trigger="every 7 days")
    assert p.status == "proposed"
    with running_ui(store.engine.url.render_as_string(hide_password=False), tmp_path / "var", tmp_path / "ui.log") as base:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        login(page, base, "eng")
        page.goto(base + "/models")
        page.wait_for_selector(f"#models-proposal-row-{p.id}")
        assert "waits for approval" in page.inner_text(f"#models-proposal-row-{p.id}")
        assert "every 7 days" in page.inner_text("#models-schedules-table")
        page.click("#models-proposal")
        page.get_by_role("option").filter(has_text=f"#{p.id} */*").first.click()
        page.keyboard.press("Escape")
        page.click("#models-proposal-approve")
        page.wait_for_selector("#models-proposal-message .pq-error")  # no reason: refused
        page.fill("#models-proposal-reason", "Same data, not worse in any band; approved from the page")
        page.click("#models-proposal-approve")
        page.wait_for_selector("#models-proposal-message .pq-ok", timeout=30_000)
        page.wait_for_function(f"document.querySelector('#models-proposal-row-{p.id}')"
                               f".innerText.includes('approved')", timeout=30_000)
        shot(page, "engineer-models-scheduled-retraining")
    assert registry.production_map(store) == {"*/*": p.candidate_version_id} and prod.id != p.candidate_version_id
    assert proposals.get_proposal(store, p.id).decided_by == "eng"
    assert _audit(store, "model.promote")[-1].username == "eng"


def test_store_lost_between_polls_is_reported_once_and_retried(pg_database_url, settings_factory, caplog):
    """A real PostgreSQL database dropped under the running scheduler, then brought back."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from pq.storage import Store, migrate

    admin = create_engine(make_url(pg_database_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = f"pq_sched_{uuid.uuid4().hex[:8]}"
    url = make_url(pg_database_url).set(database=name).render_as_string(hide_password=False)

    def create():
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        s = Store.open(settings_factory(database_url=url))
        migrate.upgrade(s)
        s.dispose()

    def drop():
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))

    create()
    store = Store.open(settings_factory(database_url=url))
    try:
        sched = Scheduler(lambda: store, poll_s=0.1)
        sched.open()
        assert sched.tick() == []
        drop()
        caplog.set_level("INFO", logger="models.scheduler")
        assert sched.tick() == [] and sched.tick() == []  # no traceback, nothing run
        lost = [r for r in caplog.records if "store unavailable" in r.getMessage()]
        assert len(lost) == 1 and lost[0].levelname == "WARNING"  # reported once, retried quietly
        create()
        assert sched.tick() == []
        assert any("store reachable again" in r.getMessage() for r in caplog.records)
    finally:
        store.dispose()
        drop()
        admin.dispose()


def test_cli_run_now_proposes_and_only_an_engineer_approves(sqlite_store, tmp_path):
    store = sqlite_store
    add_users(store)
    seed_training_history(store, n_parts=1500, feature_set_version=FS)
    env = {"PQ_DATABASE_URL": store.engine.url.render_as_string(hide_password=False), "PQ_DATA_DIR": str(tmp_path),
           "PQ_MODEL_MIN_DEFECTS": "5", "PQ_MODEL_MIN_LABELLED_PARTS": "100", "PQ_MODEL_FEATURE_SET": FS}
    assert _run_pq("models", "schedule", "add", "*/*", "--approver", "eng", "--user", "eng", "--on-drift",
                   env=env).returncode == 0
    proc = _run_pq("models", "schedule", "run-now", "1", "--reason", "drift", "--user", "eng", env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "proposal #1 [proposed] */*: candidate #1 vs production none" in proc.stdout
    assert "schedule #1 (*/*): [ 97%] model fitted" in proc.stderr  # progress is logged, step by step
    assert "proposal #1 [proposed]" in _run_pq("models", "proposals", "list", env=env).stdout
    proc = _run_pq("models", "proposals", "approve", "1", "--user", "op", "--reason", "operators decide", env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and registry.production_map(store) == {}
    proc = _run_pq("models", "proposals", "approve", "1", "--user", "eng", "--reason", "first model, judged", env=env)
    assert proc.returncode == 0 and "#1 is now in production for */*" in proc.stdout, proc.stderr
    assert proposals.get_proposal(store, 1).trigger == "run-now by eng: drift"
    assert "approved by eng" in _run_pq("models", "schedule", "list", env=env).stdout


def test_the_scheduler_process_puts_a_passing_candidate_in_shadow_on_its_line(history):
    """The composition root's hook (pq models scheduler) is the real shadow deployment: the proposed
    candidate runs beside production on the schedule's line, and production stays what it was."""
    from pq.cli.models import _shadow

    store = history
    prod = _production(store)
    with store.engine.connect() as conn:
        line = conn.execute(select(schema.parts.c.line_id).limit(1)).scalar_one()
    s = add_schedule(store, f"{line}/*", approver="eng", actor="eng", every_days=7, config=SMALL)
    _make_due(store, s.id, timedelta(minutes=1))
    assert Scheduler(lambda: store, shadow=_shadow).run(once=True) == 1
    (p,) = proposals.list_proposals(store)
    assert p.status == "proposed" and p.shadow.startswith(f"in shadow on {line}/"), p.shadow
    assert registry.shadow_version(store, line, None).id == p.candidate_version_id
    assert registry.production_version(store, line, None).id == prod.id
