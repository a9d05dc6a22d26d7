"""Feature store integration: served vectors logged, backfill recomputes from raw samples and
never overwrites what the edge served. Runs on the embedded SQLite store and on PostgreSQL."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from benchmarks.synthetic_samples import synthetic_feature_set, synthetic_sample_history
from pq.features.backfill import backfill, log_served_features
from pq.features.batch import compute_batch
from pq.storage import schema
from pq.storage.catalog import TagDef, ensure_tags
from pq.storage.parts import upsert_parts
from pq.storage.samples import write_samples

pytestmark = pytest.mark.timeout(120)


def _fill(store, n_parts=30):
    samples, parts, tags = synthetic_sample_history(n_parts, 4, 40, messy=True, seed=5)
    samples = samples.drop_duplicates(["tag", "ts"])  # the store keys samples by (tag, ts)
    ids = ensure_tags(store, "line-1", [TagDef(r.name, low_limit=None if np.isnan(r.low_limit) else r.low_limit,
                                               high_limit=r.high_limit) for r in tags.itertuples()])
    frame = pd.DataFrame({"tag_id": samples["tag"].map(ids).astype("int64"), "ts": samples["ts"],
                          "value": samples["value"], "status": samples["status"].astype("int64")})
    write_samples(store, frame)
    upsert_parts(store, [{"line_id": r.line_id, "serial": r.serial,
                          "cycle_start": r.cycle_start.floor("us").to_pydatetime(),
                          "cycle_end": r.cycle_end.floor("us").to_pydatetime(),
                          "shift": r.shift, "context": {"ambient_temp_c": r.ambient_temp_c}}
                         for r in parts.itertuples()])
    return samples, parts, tags


def test_backfill_matches_batch_and_keeps_edge_rows(store):
    fs = synthetic_feature_set(4)
    samples, parts, tags = _fill(store)
    # what the edge served for the first part (deliberately different numbers)
    served = np.full(len(fs.feature_names), 1.25)
    assert log_served_features(store, fs, [("line-1", parts["serial"][0], served, "edge reason"),
                                           ("line-1", "no-such-part", served, "")]) == 1
    counts = backfill(store, fs, batch_parts=7)
    assert counts["parts"] == len(parts) and counts["written"] == len(parts)
    with store.engine.connect() as conn:
        rows = conn.execute(select(schema.part_features, schema.parts.c.serial)
                            .join(schema.parts, schema.parts.c.id == schema.part_features.c.part_id)).all()
    by_serial = {r.serial: r for r in rows}
    assert by_serial[parts["serial"][0]].source == "edge"
    assert by_serial[parts["serial"][0]].features[fs.feature_names[0]] == 1.25
    # the store stores µs and turns non-finite values into Bad status: compare with the same input
    tags_line = tags[tags["line_id"] == "line-1"]
    parts_us = parts.assign(cycle_start=parts["cycle_start"].dt.floor("us"), cycle_end=parts["cycle_end"].dt.floor("us"))
    ref = compute_batch(fs, samples.assign(ts=samples["ts"].dt.floor("us")), parts_us, tags=tags_line)
    for serial in parts["serial"][1:]:
        r = by_serial[serial]
        assert r.source == "backfill" and r.feature_set_version == fs.version
        got = np.array([np.nan if r.features[n] is None else r.features[n] for n in fs.feature_names])
        np.testing.assert_allclose(got, ref.loc[("line-1", serial), list(fs.feature_names)].to_numpy(float),
                                   rtol=1e-9, equal_nan=True)
        assert r.reason == ref.loc[("line-1", serial), "reason"]
    # idempotent
    assert backfill(store, fs)["written"] == len(parts)
