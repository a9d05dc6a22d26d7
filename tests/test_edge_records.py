"""The edge's served feature vectors in the store, on both backends: what the model saw replaces a
backfilled vector of the same part, and a spool replay changes nothing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
from sqlalchemy import select

from pq.edge.records import write_part_features
from pq.features.backfill import write_part_features as write_backfill
from pq.features.spec import load_feature_set
from pq.storage import schema
from pq.storage.catalog import ensure_line
from pq.storage.parts import upsert_parts

T0 = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)


def _row(store, part_id: int):
    t = schema.part_features
    with store.engine.connect() as conn:
        return conn.execute(select(t.c.source, t.c.features, t.c.reason).where(t.c.part_id == part_id)).one()


def _served(fs, value: float) -> dict:
    return {"line_id": "line-9", "serial": "L9-000001", "cycle_start": T0, "cycle_end": T0 + timedelta(seconds=17),
            "feature_set_version": fs.version, "features": {fs.feature_names[0]: value}, "reason": None,
            "computed_at": T0 + timedelta(seconds=18)}


def test_served_vector_replaces_backfill_and_replay_is_a_no_op(store):
    fs = load_feature_set()
    ensure_line(store, "line-9")
    upsert_parts(store, [{"line_id": "line-9", "serial": "L9-000001", "cycle_start": T0,
                          "cycle_end": T0 + timedelta(seconds=17), "created_at": T0}])
    with store.engine.connect() as conn:
        part_id = conn.execute(select(schema.parts.c.id).where(schema.parts.c.serial == "L9-000001")).scalar_one()
    X = np.full((1, len(fs.feature_names)), 1.5)
    write_backfill(store, fs, [part_id], X, [None], "backfill")
    assert _row(store, part_id).source == "backfill"

    assert write_part_features(store, [_served(fs, 2.5)]) == 1
    row = _row(store, part_id)
    assert row.source == "edge" and row.features == {fs.feature_names[0]: 2.5}, row

    write_part_features(store, [_served(fs, 9.9)])  # the same record replayed after a crash, or a stale copy
    assert _row(store, part_id).features == {fs.feature_names[0]: 2.5}
    write_backfill(store, fs, [part_id], X, [None], "backfill")  # a later backfill keeps what was served
    assert _row(store, part_id).source == "edge"
