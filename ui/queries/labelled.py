"""How model versions would have judged the parts operators labelled through alert feedback.

For the Models page's side-by-side compare: the parts behind alerts marked "confirmed defect" or
"false alarm" are re-scored with each version from their stored feature vectors. A better
candidate catches the confirmed ones and stays quiet on the false alarms.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
from sqlalchemy import and_, select, tuple_

from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["labelled_alert_check"]


def _labelled(store: Store, days: int, limit: int) -> pd.DataFrame:
    a = schema.alerts.c
    since = datetime.now(timezone.utc) - timedelta(days=days)
    with store.engine.connect() as conn:
        rows = conn.execute(select(a.line_id, a.serial, a.feedback).where(
            a.raised_at >= since, a.feedback.in_(("confirmed", "false_alarm")), a.serial.is_not(None))
            .order_by(a.raised_at.desc()).limit(limit)).all()
    return pd.DataFrame(rows, columns=["line_id", "serial", "feedback"]).drop_duplicates(["line_id", "serial"])


def _vectors(store: Store, keys: list[tuple[str, str]], feature_set_version: str) -> dict[tuple[str, str], dict]:
    p, f = schema.parts.c, schema.part_features.c
    out: dict = {}
    with store.engine.connect() as conn:
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            stmt = (select(p.line_id, p.serial, f.features)
                    .select_from(schema.parts.join(schema.part_features, schema.part_features.c.part_id == p.id))
                    .where(and_(tuple_(p.line_id, p.serial).in_(chunk), f.feature_set_version == feature_set_version)))
            for line_id, serial, feats in conn.execute(stmt):
                out[(line_id, serial)] = feats or {}
    return out


def labelled_alert_check(store: Store, version_ids: list[int], *, days: int = 180, limit: int = 5000) -> dict:
    """{version_id: {"parts", "confirmed_caught", "confirmed_missed", "false_alarms_kept",
    "false_alarms_avoided"}} plus "labelled": how many labelled alerts exist at all."""
    from models.scoring import Scorer

    labels = _labelled(store, days, limit)
    out: dict = {"labelled": int(len(labels))}
    if labels.empty:
        return out
    keys = list(zip(labels.line_id, labels.serial))
    for vid in version_ids:
        scorer = Scorer.from_version(store, vid)
        vecs = _vectors(store, keys, scorer.feature_set_version)
        have = labels[[k in vecs for k in keys]]
        if have.empty:
            out[vid] = {"parts": 0}
            continue
        X = pd.DataFrame([vecs[(r.line_id, r.serial)] for r in have.itertuples()])
        X = X.reindex(columns=scorer.feature_names).astype(float)
        flagged = np.asarray(scorer.score_frame(X)) >= scorer.threshold
        confirmed = (have.feedback == "confirmed").to_numpy()
        out[vid] = {"parts": int(len(have)),
                    "confirmed_caught": int((flagged & confirmed).sum()),
                    "confirmed_missed": int((~flagged & confirmed).sum()),
                    "false_alarms_kept": int((flagged & ~confirmed).sum()),
                    "false_alarms_avoided": int((~flagged & ~confirmed).sum())}
    return out
