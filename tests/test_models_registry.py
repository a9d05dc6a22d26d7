"""models.registry and training on a real store (SQLite and PostgreSQL): versions, promotion rules,
rollback, audit, corrupted artifacts, a failed training leaving the registry unchanged, import."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, update

from models import registry
from models.dataset import load_dataset
from models.importer import import_history, load_mapping
from models.scoring import Scorer
from models.training import TrainConfig, train
from pq.errors import FeatureMismatch, ModelError
from pq.storage import schema

AI4I = Path("/work/shared/data/ai4i2020/ai4i2020.csv")
MAPPING = Path(__file__).resolve().parents[1] / "models" / "mappings" / "ai4i2020.toml"


@pytest.fixture
def imported(store, tmp_path):
    """The first 3000 AI4I parts imported through the real importer (CSV with the mapping)."""
    if not AI4I.exists():
        pytest.skip("AI4I 2020 sample data not present")
    small = tmp_path / "ai4i_small.csv"
    small.write_text("".join(AI4I.read_text().splitlines(keepends=True)[:3001]))
    res = import_history(store, small, load_mapping(MAPPING))
    assert res.parts == 3000 and res.inspections == 3000 and not res.rejected
    return store


def _cfg(**kw):
    return TrainConfig(feature_set_version="import-ai4i2020", min_defects=5, **kw)


@pytest.mark.timeout(900)  # catches a hang only: training on 2 busy cores took up to 280 s
def test_import_is_idempotent_and_leak_free(imported, tmp_path):
    store = imported
    again = import_history(store, tmp_path / "ai4i_small.csv", load_mapping(MAPPING))
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.parts)).scalar() == 3000
        assert conn.execute(select(func.count()).select_from(schema.part_features)).scalar() == 3000
    assert again.parts == 3000
    ds = load_dataset(store, "import-ai4i2020")
    assert len(ds) == 3000 and not any(c in ("TWF", "HDF", "PWF", "OSF", "RNF") for c in ds.X.columns)
    assert set(ds.X.columns) == {"process_temp_k__value", "rotational_speed_rpm__value", "torque_nm__value",
                                 "ctx__ambient_temp_k", "ctx__tool_wear_min", "ctx__product_type",
                                 "temp_diff_k", "power_w", "wear_torque_min_nm"}
    assert set(ds.meta.loc[ds.y == 1, "defect_code"].dropna()) <= {"TWF", "HDF", "PWF", "OSF", "RNF"}


@pytest.mark.timeout(900)  # catches a hang only: training on 2 busy cores took up to 280 s
def test_train_register_promote_rollback_with_audit(imported):
    store = imported
    steps = []
    v1 = train(store, _cfg(), trained_by="alice", progress=lambda f, m: steps.append(f)).version
    assert steps[-1] == 1.0 and steps == sorted(steps)
    v2 = train(store, _cfg(seed=3), trained_by="alice").version
    assert (v1.version, v2.version) == (1, 2) and v1.artifact_sha256 and v1.card["threshold"]["rule"]
    assert registry.production_version(store, "mill-1", "L") is None

    registry.promote(store, v1.id, approved_by="bob", reason="first model")
    assert registry.production_version(store, "mill-1", "L").id == v1.id
    with pytest.raises(ModelError, match="already in production"):
        registry.promote(store, v1.id, approved_by="bob", reason="again")
    registry.promote(store, v2.id, approved_by="bob", reason="retrained", override=True)
    assert registry.production_version(store, "mill-1", None).id == v2.id
    registry.rollback(store, "*/*", approved_by="carol", reason="operators complain")
    assert registry.production_version(store, "mill-1", "M").id == v1.id
    with pytest.raises(ModelError, match="nothing to roll back"):
        registry.rollback(store, "*/*", approved_by="carol", reason="again")
    # a more specific scope wins over */*
    registry.promote(store, v2.id, scope="mill-1/H", approved_by="bob", reason="H only")
    assert registry.production_version(store, "mill-1", "H").id == v2.id
    assert registry.production_version(store, "mill-1", "L").id == v1.id

    with store.engine.connect() as conn:
        actions = [r.action for r in conn.execute(select(schema.audit_log).order_by(schema.audit_log.c.id))]
        users = {r.username for r in conn.execute(select(schema.audit_log))}
    assert actions.count("model.register") == 2 and actions.count("model.promote") == 3
    assert "model.rollback" in actions and {"alice", "bob", "carol"} <= users

    scorer = Scorer.from_version(store, v1.id)
    assert scorer.feature_set_version == "import-ai4i2020" and scorer.version_id == v1.id


@pytest.mark.timeout(900)  # catches a hang only: training on 2 busy cores took up to 280 s
def test_promotion_refusals(imported):
    store = imported
    good = train(store, _cfg(), trained_by="alice").version
    registry.promote(store, good.id, approved_by="bob", reason="baseline")
    bad = train(store, _cfg(kind="naive", alarm_budget_per_h=30.0), trained_by="alice").version
    with pytest.raises(ModelError, match="worse than production"):
        registry.promote(store, bad.id, approved_by="bob", reason="try")
    dep = registry.promote(store, bad.id, approved_by="bob", reason="accepting more alarms for recall", override=True)
    assert dep.override
    # the two decisions gate too: diverting 40 % of parts and calling the operator for every one of them
    noisy = train(store, _cfg(diversion_share=0.4, episode_k=1, episode_n=1), trained_by="alice").version
    rate = noisy.card["decisions"]["alarms_per_h"]
    assert rate > registry.ALARM_CEILING_PER_H, noisy.card["decisions"]
    with pytest.raises(ModelError, match=rf"operator alarms {rate}/h on validation \(ceiling 6/h"):
        registry.promote(store, noisy.id, approved_by="bob", reason="more recall")
    checks = registry.compare(store, noisy.id, bad.id)
    assert [r["metric"] for r in checks["worse"] if r["regime"] == "decisions"][:1] == ["alarms_per_h"]
    with pytest.raises(FeatureMismatch, match="cannot be overridden"):
        registry.promote(store, good.id, approved_by="bob", reason="x", override=True, edge_feature_set_version="default-1")
    with store.engine.begin() as conn:  # an operator may not promote; role checked in the registry
        conn.execute(insert(schema.users).values(username="olga", password_hash="x", role="operator", active=True,
                                                 failed_logins=0, created_at=datetime.now(timezone.utc)))
    with pytest.raises(ModelError, match="role 'operator'"):
        registry.promote(store, good.id, approved_by="olga", reason="x")
    with pytest.raises(ModelError, match="not a pq user"):
        registry.promote(store, good.id, approved_by="mallory", reason="x", require_known_user=True)


@pytest.mark.timeout(900)  # catches a hang only: training on 2 busy cores took up to 280 s
def test_failed_training_leaves_registry_unchanged_and_corruption_is_detected(imported):
    store = imported
    with pytest.raises(ModelError, match="labelled parts"):
        train(store, _cfg(min_labelled=100_000), trained_by="alice")
    with pytest.raises(ModelError, match="no parts with feature vectors of feature set 'nope'"):
        train(store, TrainConfig(feature_set_version="nope"), trained_by="alice")
    assert registry.list_versions(store) == []
    v = train(store, _cfg(), trained_by="alice").version
    with store.engine.begin() as conn:
        conn.execute(update(schema.model_versions).where(schema.model_versions.c.id == v.id)
                     .values(artifact=b"\x1f\x8b garbage"))
    with pytest.raises(ModelError, match="corrupted"):
        Scorer.from_version(store, v.id)


@pytest.mark.timeout(900)  # catches a hang only: training on 2 busy cores took up to 280 s
def test_training_job_rows_for_the_ui(imported):
    from models.training import run_job, start_job

    store = imported
    job = start_job(store, {"feature_set_version": "import-ai4i2020"}, requested_by="alice")
    res = run_job(store, job, _cfg(), trained_by="alice")
    failed = start_job(store, {}, requested_by="alice")
    assert run_job(store, failed, _cfg(min_labelled=10**6), trained_by="alice") is None
    with store.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(schema.training_jobs))}
    assert rows[job].status == "done" and rows[job].progress == 1.0 and rows[job].model_version_id == res.version.id
    assert rows[failed].status == "failed" and "labelled parts" in rows[failed].error
