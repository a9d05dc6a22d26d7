"""Champion / challenger in shadow: registry rules, the edge scoring a challenger beside production on
the same served vector, a challenger that fails, the live comparison against an offline replay, the
shadow evidence in the promotion audit, and the CLI's role check.

Real LightGBM models, trained in a second on vectors from the edge's own streaming feature path;
real stores (SQLite and PostgreSQL), the real spool and drainer.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from models import registry
from models.estimator import DefectModel
from models.scoring import Scorer
from models.shadow import compare_live, compare_replay
from pq.alerts.playbook import PlaybookLoader
from pq.auth import users
from pq.auth.roles import Actor
from pq.edge import records
from pq.edge.interfaces import PartEvent, Sample
from pq.edge.modelwatch import ModelWatcher
from pq.edge.runtime import LineRuntime
from pq.errors import FeatureMismatch, ModelError
from pq.features import StreamingFeatures, load_feature_set
from pq.spool import Spool, SpoolDrainer
from pq.storage import schema

pytestmark = pytest.mark.timeout(300)

FS = load_feature_set()
LINE = "line-9"
T0_NS = 1_760_000_000 * 1_000_000_000
ADMIN = Actor("root", "admin", client="test")


def _cycle(i: int, melt: float, rng: np.random.Generator):
    """One 1-s cycle: 10 Hz samples of every spec tag, then the cycle-complete event."""
    start = T0_NS + i * 1_000_000_000
    items = []
    for tag in FS.tags:
        for k in range(10):
            v = melt + rng.normal(0, 0.3) if tag == "melt_temp_c" else 100.0 + k * 0.1 + rng.normal(0, 0.3)
            items.append(Sample(tag, start + k * 100_000_000, v, 0))
    ambient = 16.0 + (i % 40) * 0.4  # the part's conditions cross the ambient bands of models.regimes
    ctx = {"product": "housing-a", "material_lot": f"L{i // 25}", "shift": "AB"[i // 30 % 2], "ambient_temp_c": ambient}
    items.append(PartEvent(f"S{i:05d}", start, start + 1_000_000_000, time.perf_counter(), ctx))
    return items


def _melts(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(226.0, 254.0, n)


def _vectors(melts: np.ndarray, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sf = StreamingFeatures(FS, None, capacity_s=30, max_rate_hz=20)
    rows = []
    for i, m in enumerate(melts):
        items = _cycle(i, m, rng)
        for tag in FS.tags:
            mine = [s for s in items[:-1] if s.tag == tag]
            sf.push_many(tag, np.array([s.ts_ns for s in mine]), np.array([s.value for s in mine]),
                         np.zeros(len(mine), np.int64))
        ev = items[-1]
        rows.append(sf.vector(ev.cycle_start_ns, ev.cycle_end_ns, ev.context)[0])
    X = pd.DataFrame(rows, columns=list(FS.feature_names))
    return X.loc[:, X.notna().all()]


@pytest.fixture(scope="module")
def artifacts():
    """Production learns "defect above 240 °C", the challenger "above 245 °C": they disagree in between."""
    melts = _melts(500, 1)
    X = _vectors(melts, 2)

    def fit(cut: float, seed: int, diversion: float) -> bytes:
        y = (melts > cut).astype(int)
        model = DefectModel(n_threads=1, seed=seed, num_leaves=7).fit(X, y, num_boost_round=40)
        return model.to_bytes({"threshold": 0.5, "feature_set_version": FS.version, "name": "defect",
                               "kind": "environment-aware",
                               "decisions": {"threshold": diversion, "episode_rule": {"k": 2, "n": 5}}})

    return fit(240.0, 1, 0.4), fit(245.0, 2, 0.5)


def _register(store, blob: bytes, fsv: str = FS.version):
    model, doc = DefectModel.from_bytes(blob)
    return registry.register(store, name="defect", kind="environment-aware", line_id=None, product=None,
                             feature_set_version=fsv, feature_names=model.feature_names_, train_start=None,
                             train_end=None, params=None, metrics=None, regime_metrics=None, threshold=0.5,
                             card={"decisions": doc["decisions"]}, artifact=blob, trained_by="alice")


def _people(store):
    users.add_user(store, "eve", "a long passphrase", "engineer", actor=ADMIN)
    users.add_user(store, "oscar", "a long passphrase", "operator", actor=ADMIN)


def _runtime(settings, watcher, spool):
    return LineRuntime(LINE, scorers=watcher, sink=spool, settings=settings, station="press-9",
                       playbook=PlaybookLoader(),
                       feature_factory=lambda scorer: StreamingFeatures(FS, scorer.baseline, capacity_s=30,
                                                                        max_rate_hz=20))


def _watcher(store, *, shadow: bool, load_shadow=None):
    def resolve(product):
        v = registry.production_version(store, LINE, product)
        return v.id if v else None

    def resolve_shadow(product):
        v = registry.shadow_version(store, LINE, product)
        return v.id if v else None

    w = ModelWatcher(LINE, resolve=resolve, load=lambda vid: Scorer.from_version(store, vid),
                     resolve_shadow=resolve_shadow if shadow else None, load_shadow=load_shadow)
    w.poll_once()
    return w


def test_shadow_rules_in_the_registry(store, artifacts):
    _people(store)
    prod, chal = _register(store, artifacts[0]), _register(store, artifacts[1])
    other = _register(store, artifacts[1], fsv="import-other")
    with pytest.raises(ModelError, match="no version is in production"):
        registry.start_shadow(store, chal.id, line_id=LINE, by="eve", reason="try")
    registry.promote(store, prod.id, approved_by="eve", reason="first model")
    with pytest.raises(ModelError, match="is the production version"):
        registry.start_shadow(store, prod.id, line_id=LINE, by="eve", reason="try")
    with pytest.raises(FeatureMismatch, match="feature set 'import-other' but production"):
        registry.start_shadow(store, other.id, line_id=LINE, by="eve", reason="try")
    with pytest.raises(ModelError, match="role 'operator'"):
        registry.start_shadow(store, chal.id, line_id=LINE, by="oscar", reason="try")
    assert registry.shadow_version(store, LINE, "housing-a") is None
    registry.start_shadow(store, chal.id, line_id=LINE, by="eve", reason="stricter cut")
    assert registry.shadow_version(store, LINE, "housing-a").id == chal.id
    assert registry.shadow_version(store, "line-other", None) is None
    assert set(registry.shadows(store)) == {f"{LINE}/*"}
    registry.stop_shadow(store, line_id=LINE, by="eve", reason="enough")
    from models.shadow import put_in_shadow  # the retraining scheduler's hand-over

    with pytest.raises(ModelError, match="serves all lines"):
        put_in_shadow(store, chal.id, None, "scheduler")
    assert put_in_shadow(store, chal.id, LINE, "scheduler").startswith(f"in shadow on {LINE}/*")
    registry.stop_shadow(store, line_id=LINE, by="eve", reason="enough")
    assert registry.shadow_version(store, LINE, None) is None
    with pytest.raises(ModelError, match="no version runs in shadow"):
        registry.stop_shadow(store, line_id=LINE, by="eve")
    with store.engine.connect() as conn:
        actions = [r.action for r in conn.execute(select(schema.audit_log.c.action)
                                                  .where(schema.audit_log.c.action.like("model.shadow%"))
                                                  .order_by(schema.audit_log.c.id))]
    assert actions == ["model.shadow", "model.shadow_stop"] * 2


def test_challenger_in_shadow_live_equals_replay_and_promotion_states_evidence(store, artifacts, settings_factory,
                                                                                tmp_path):
    records.register()
    _people(store)
    prod, chal = _register(store, artifacts[0]), _register(store, artifacts[1])
    registry.promote(store, prod.id, approved_by="eve", reason="first model")
    registry.start_shadow(store, chal.id, line_id=LINE, by="eve", reason="stricter cut")
    settings = settings_factory(edge_drift_margin=1.0)  # every part scored: the counts below are exact
    spool = Spool(tmp_path / "edge.sqlite", fsync="normal")
    with_shadow = _runtime(settings, _watcher(store, shadow=True), spool)
    without = _runtime(settings, _watcher(store, shadow=False), None)
    melts = _melts(80, 5)
    try:
        got, ref = [], []
        for i, m in enumerate(melts):
            got += with_shadow.handle(_cycle(i, m, np.random.default_rng(100 + i)))
            ref += without.handle(_cycle(i, m, np.random.default_rng(100 + i)))
        # production's decisions are the same with and without the challenger beside it
        strip = lambda d: (d.prediction["serial"], d.decision, d.prediction["score"], d.prediction["model_version_id"])  # noqa: E731
        assert [strip(d) for d in got] == [strip(d) for d in ref]
        scored = [d for d in got if d.decision != "not_scored"]
        assert len(scored) == len(melts) and {d.decision for d in scored} == {"ok", "at_risk"}
        assert with_shadow.shadow_counts == {"scored": len(scored), "failed": 0}
        assert with_shadow.flush(60)
        drainer = SpoolDrainer(spool, store).start()
        assert drainer.flush(120), drainer.stats()
        drainer.stop(5)
    finally:
        with_shadow.close()
        spool.close()
    with store.engine.connect() as conn:
        rows = conn.execute(select(schema.shadow_scores)).all()
    assert {r.serial for r in rows} == {d.prediction["serial"] for d in scored}  # a row for every scored part
    by_serial = {d.prediction["serial"]: d for d in scored}
    assert all(r.production_probability == pytest.approx(by_serial[r.serial].prediction["score"]) for r in rows)
    assert all(r.production_version_id == prod.id and r.challenger_version_id == chal.id for r in rows)
    live = compare_live(store, chal.id, line_id=LINE)
    replay = compare_replay(store, chal.id, line_id=LINE)
    o = live["overall"]
    assert o["parts"] == len(scored) and 0.5 < o["agreement"] < 1.0  # they disagree between 240 and 245 °C
    assert o["challenger"]["diverted_share"] < o["production"]["diverted_share"]
    assert o["production"]["alarms"] >= 1
    assert {b["regime"] for b in live["bands"]} >= {"ambient", "material_lot", "shift", "product"}
    for key in ("overall", "bands", "period", "versions"):
        assert replay[key] == live[key], key
    # the same through the CLI
    from pq.cli import cli

    env = {"PQ_DATABASE_URL": store.settings.database_url, "PQ_DATA_DIR": str(store.settings.data_dir)}
    got = {mode: CliRunner().invoke(cli, ["models", "compare", str(chal.id), mode, "--line", LINE, "--json"], env=env)
           for mode in ("--live", "--replay")}
    assert all(r.exit_code == 0 for r in got.values()), {m: r.output[-500:] for m, r in got.items()}
    as_json = {m: json.loads(r.output.strip().splitlines()[-1]) for m, r in got.items()}
    assert as_json["--live"]["overall"] == as_json["--replay"]["overall"] == json.loads(json.dumps(live["overall"]))
    listing = CliRunner().invoke(cli, ["models", "list"], env=env)
    assert listing.exit_code == 0 and f"~ shadow {LINE}/*" in listing.output, listing.output

    # labels arrive: FAR and recall of each
    with store.engine.begin() as conn:
        conn.execute(schema.inspections.insert(), [
            {"line_id": LINE, "serial": f"S{i:05d}", "defect": bool(m > 242.0), "inspected_at": rows[0].decided_at,
             "source": "inspection"} for i, m in enumerate(melts)])
    o = compare_live(store, chal.id, line_id=LINE)["overall"]
    assert o["labelled"] == len(scored) and o["production"]["recall"] == 1.0 and o["challenger"]["far"] == 0.0

    registry.promote(store, chal.id, approved_by="eve", reason="shadow shows fewer diversions", override=True)
    assert registry.shadow_version(store, LINE, None) is None  # promoted: its shadow ended
    with store.engine.connect() as conn:
        detail = conn.execute(select(schema.audit_log.c.detail).where(schema.audit_log.c.action == "model.promote")
                              .order_by(schema.audit_log.c.id.desc())).first().detail
    ev = detail["shadow_evidence"]
    assert ev["parts"] == len(scored) and ev["agreement"] == o["agreement"] and ev["labelled"] == len(scored)
    assert ev["periods"][0]["scope"] == f"{LINE}/*" and ev["periods"][0]["until"] is not None
    assert ev["challenger"]["alarms_per_h"] is not None and ev["production"]["recall"] == 1.0


class _Breaks:
    """The real challenger, until its fourth part: then it raises (or returns NaN)."""

    def __init__(self, scorer, nan: bool):
        self._s, self.nan, self.calls = scorer, nan, 0

    def __getattr__(self, name):
        return getattr(self._s, name)

    def score(self, *a, **kw):
        self.calls += 1
        if self.calls >= 4:
            if self.nan:
                s = self._s.score(*a, **kw)
                return type(s)(math.nan, s.threshold, False, (), (), s.model_version_id)
            raise RuntimeError("booster exploded")
        return self._s.score(*a, **kw)


@pytest.mark.parametrize("nan", [False, True], ids=["raises", "nan"])
def test_failing_challenger_leaves_shadow_and_production_continues(sqlite_store, artifacts, settings_factory,
                                                                   tmp_path, nan):
    store = sqlite_store
    records.register()
    prod, chal = _register(store, artifacts[0]), _register(store, artifacts[1])
    registry.promote(store, prod.id, approved_by="eve", reason="first model")
    registry.start_shadow(store, chal.id, line_id=LINE, by="eve", reason="try")
    watcher = _watcher(store, shadow=True, load_shadow=lambda vid: _Breaks(Scorer.from_version(store, vid), nan))
    spool = Spool(tmp_path / "edge.sqlite", fsync="normal")
    rt = _runtime(settings_factory(edge_drift_margin=1.0), watcher, spool)
    try:
        decisions = [d for i, m in enumerate(_melts(12, 7)) for d in rt.handle(_cycle(i, m, np.random.default_rng(i)))]
        assert all(d.decision in ("ok", "at_risk") for d in decisions), [d.prediction["reason"] for d in decisions]
        assert rt.shadow_counts == {"scored": 3, "failed": 1}
        assert watcher.challenger_for("housing-a") is None  # out of shadow at this edge
        assert str(chal.id) in watcher.status()["shadow_retired"]
        assert rt.flush(60)
        drainer = SpoolDrainer(spool, store).start()
        assert drainer.flush(60), drainer.stats()
        drainer.stop(5)
    finally:
        rt.close()
        spool.close()
    with store.engine.connect() as conn:
        n_shadow = conn.execute(select(func.count()).select_from(schema.shadow_scores)).scalar()
        n_pred = conn.execute(select(func.count()).select_from(schema.predictions)).scalar()
        events = conn.execute(select(schema.line_events).where(schema.line_events.c.kind == "shadow_removed")).all()
    assert n_shadow == 3 and n_pred == 12
    assert len(events) == 1 and f"Model {chal.id} taken out of shadow" in events[0].detail["reason"]


def test_cli_shadow_checks_the_role(sqlite_store, artifacts):
    from pq.cli import cli

    store = sqlite_store
    _people(store)
    prod, chal = _register(store, artifacts[0]), _register(store, artifacts[1])
    registry.promote(store, prod.id, approved_by="eve", reason="first model")
    env = {"PQ_DATABASE_URL": store.settings.database_url, "PQ_DATA_DIR": str(store.settings.data_dir)}
    run = lambda *args: CliRunner().invoke(cli, ["models", "shadow", *args], env=env)  # noqa: E731
    res = run(str(chal.id), "--line", LINE, "--reason", "try", "--user", "oscar")
    assert res.exit_code != 0 and "role 'operator'" in res.output and registry.shadow_version(store, LINE, None) is None
    res = run(str(prod.id), "--line", LINE, "--reason", "try", "--user", "eve")
    assert res.exit_code != 0 and "is the production version" in res.output
    res = run(str(chal.id), "--line", LINE, "--reason", "stricter cut", "--user", "eve")
    assert res.exit_code == 0, res.output
    assert registry.shadow_version(store, LINE, None).id == chal.id
    res = CliRunner().invoke(cli, ["models", "compare", str(chal.id), "--live", "--line", LINE], env=env)
    assert res.exit_code == 0 and "has not scored any part in shadow yet" in res.output
    res = run("--stop", "--line", LINE, "--user", "eve")
    assert res.exit_code == 0 and registry.shadow_version(store, LINE, None) is None


def _callback(client, dash_app, token, output_contains, outputs, inputs, state, changed):
    key = next(k for k in dash_app.callback_map if output_contains in k)
    outs = [{"id": i, "property": p} for i, p in outputs]
    body = {"output": key, "outputs": outs if len(outs) > 1 else outs[0],
            "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs],
            "state": [{"id": i, "property": p, "value": v} for i, p, v in state], "changedPropIds": [changed]}
    return client.post("/_dash-update-component", json=body, headers={"X-CSRFToken": token})


def _ui_login(client, name):
    from tests._ui_helpers import PASSWORDS

    client.get("/login")
    with client.session_transaction() as s:
        token = s["csrf"]
    client.post("/login", data={"username": name, "password": PASSWORDS[name], "csrf": token, "next": "/models"})
    with client.session_transaction() as s:
        return s.get("csrf", token)


def test_ui_shadow_page_role_checked_and_audited(sqlite_store, artifacts, settings_factory):
    from tests._ui_helpers import add_users
    from ui.app import create_app

    store = sqlite_store
    add_users(store)
    prod, chal = _register(store, artifacts[0]), _register(store, artifacts[1])
    registry.promote(store, prod.id, approved_by="eng", reason="first model")
    dash_app = create_app(settings_factory(), store)
    start = dict(outputs=[("shadow-message", "children"), ("shadow-running", "children")],
                 inputs=[("shadow-start", "n_clicks", 1), ("shadow-stop", "n_clicks", None)],
                 state=[("shadow-version", "value", chal.id), ("shadow-line", "value", LINE),
                        ("shadow-reason", "value", "stricter cut on the new supplier")],
                 changed="shadow-start.n_clicks")
    op = dash_app.server.test_client()
    assert _callback(op, dash_app, _ui_login(op, "op"), "shadow-message", **start).status_code == 403
    assert registry.shadow_version(store, LINE, None) is None
    eng = dash_app.server.test_client()
    token = _ui_login(eng, "eng")
    r = _callback(eng, dash_app, token, "shadow-message", **start)
    assert r.status_code == 200 and b"runs in shadow" in r.data, r.data[:400]
    assert registry.shadow_version(store, LINE, None).id == chal.id
    with store.engine.connect() as conn:
        row = conn.execute(select(schema.audit_log).where(schema.audit_log.c.action == "model.shadow")).one()
    assert row.username == "eng" and row.client != "cli"
    body = {"output": "page-content.children", "outputs": {"id": "page-content", "property": "children"},
            "inputs": [{"id": "url", "property": "pathname", "value": "/models/shadow"}],
            "state": [{"id": "url", "property": "search", "value": ""}], "changedPropIds": ["url.pathname"]}
    r = eng.post("/_dash-update-component", json=body, headers={"X-CSRFToken": token})
    assert r.status_code == 200 and b"shadow-running-table" in r.data and LINE.encode() in r.data
    r = _callback(eng, dash_app, token, "shadow-result",
                  outputs=[("shadow-result", "children")], inputs=[("shadow-compare", "n_clicks", 1)],
                  state=[("shadow-candidate", "value", chal.id), ("shadow-compare-line", "value", LINE),
                         ("shadow-mode", "value", "live"), ("shadow-window", "start_date", None),
                         ("shadow-window", "end_date", None)], changed="shadow-compare.n_clicks")
    assert r.status_code == 200 and b"has not scored any part in shadow" in r.data, r.data[:400]


# ------------------------------------------------------------------ on the simulator's live line
from tests.test_e2e_edge import (LINE as SIM_LINE, LIVE_SPEED, LIVE_START, SAMPLE_HZ, SCENARIO,  # noqa: E402
                                 Recorder, _register_and_promote, _tagmap_for, _until, trained_model)  # noqa: F401


def _stricter(artifact: bytes, factor: float) -> bytes:
    """The same booster with a higher diversion threshold: a challenger that diverts fewer parts."""
    import gzip
    import json

    doc = json.loads(gzip.decompress(artifact))
    doc["decisions"]["threshold"] = min(0.99, doc["decisions"]["threshold"] * factor)
    return gzip.compress(json.dumps(doc).encode(), mtime=0)


@pytest.mark.timeout(900)  # the first run trains the session's model (tests/test_e2e_edge.py) too
def test_challenger_in_shadow_on_the_simulator_line(store, settings_factory, trained_model):  # noqa: F811
    """A live simulator line through EdgeProcess (what `pq edge run` runs): a challenger put in shadow
    mid-run is picked up by the model poll, scores every part production scores, changes none of
    production's decisions, and the live comparison equals the replay of the same parts."""
    from prometheus_client import CollectorRegistry

    from pq.cli.edge_process import EdgeProcess
    from pq.edge.metrics import EdgeMetrics
    from pq.storage import Store
    from simulators.server import SimulatorServer

    store_url = store.engine.url.render_as_string(hide_password=False)
    v1 = _register_and_promote(store, trained_model, "e2e", "e2e: production")
    reg = dict(trained_model["reg"], artifact=_stricter(trained_model["reg"]["artifact"], 1.5))
    v2 = registry.register(store, trained_by="e2e", **reg).id
    settings = settings_factory(database_url=store_url, edge_flood_limit=10_000, spool_fsync="normal",
                                connector_watchdog_s=10.0, connector_request_timeout_s=30.0, edge_model_poll_s=1.0)

    async def scenario():
        async with SimulatorServer(lines=1, seed=21, speed=LIVE_SPEED, scenario=SCENARIO, port=0, sample_hz=SAMPLE_HZ,
                                   start=LIVE_START) as sim:
            rec = Recorder()
            proc = EdgeProcess(SIM_LINE, settings=settings, open_store=lambda: Store.open(settings),
                               tagmap=_tagmap_for(sim.endpoint), outputs=[rec], metrics=EdgeMetrics(CollectorRegistry()))
            await asyncio.to_thread(proc.start)
            stop = asyncio.Event()
            task = asyncio.create_task(proc.run(stop))
            try:
                await _until(lambda: len(rec.decisions) >= 5, 180, "no part decided after the edge started")
                await asyncio.to_thread(registry.start_shadow, store, v2, line_id=SIM_LINE, by="e2e",
                                        reason="e2e: stricter diversion")
                await _until(lambda: proc.runtime.shadow_counts["scored"] >= 40, 300,
                             lambda: f"the challenger scored {proc.runtime.shadow_counts} parts")
            finally:
                stop.set()
                await asyncio.wait_for(task, 60)
                status = proc.runtime.status()
                await asyncio.to_thread(proc.close, 60)
            return rec, status

    import asyncio

    rec, status = asyncio.run(scenario())
    assert set(status["model"]["shadow"].values()) == {v2} and not status["model"]["shadow_retired"], status["model"]
    assert status["shadow"]["failed"] == 0
    p, sh = schema.predictions, schema.shadow_scores
    with store.engine.connect() as conn:
        preds = {r.id: r for r in conn.execute(select(p).where(p.c.line_id == SIM_LINE))}
        rows = conn.execute(select(sh).order_by(sh.c.decided_at)).all()
    assert len(rows) == status["shadow"]["scored"] >= 40
    first = rows[0].decided_at
    scored_since = {i for i, r in preds.items() if r.decided_at >= first and r.decision != "not_scored"}
    assert {r.id for r in rows} == scored_since  # every part production scored has its shadow row
    for r in rows:  # production decided as it would have alone: its own score, its own threshold
        pr = preds[r.id]
        assert (r.production_version_id, r.production_decision) == (v1, pr.decision)
        assert r.production_probability == pytest.approx(pr.score) and r.challenger_version_id == v2
    assert sum(r.challenger_decision == "at_risk" for r in rows) <= sum(r.production_decision == "at_risk" for r in rows)
    live = compare_live(store, v2, line_id=SIM_LINE)
    replay = compare_replay(store, v2, line_id=SIM_LINE, since=rows[0].cycle_end)
    assert live["overall"]["parts"] == len(rows) and live["bands"]
    for key in ("overall", "bands", "period", "versions"):
        assert replay[key] == live[key], key
