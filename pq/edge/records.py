"""The edge's spool record kinds and their idempotent store writers.

Owns the kinds ``prediction``, ``alert``, ``alert_event``, ``part_features`` and ``shadow_score``
(a challenger's decision beside production's on the same part; ``health`` and
``line_event`` are the spool's own): how a decision made in memory reaches the store, written by
the spool's drainer, never on the decision path. Ids are UUIDs minted at the edge, so a replay
after a crash or an outage writes nothing twice. :func:`register` adds the writers to the spool's
kind -> writer table (call it before starting a drainer). Must not import connectors, models, ui
or simulators.

Alert rows: the edge owns the columns listed in ``pq.alerts.discipline`` (state, repeat count,
score, text ...); operators own ``acked_*``, ``shelved_*`` and ``feedback_*``, which these writers
never overwrite. A state the edge wrote before it saw an operator's action ("active" arriving after
the operator acknowledged or shelved) does not undo the action.

Example::

    register()                       # once per process
    spool.append("prediction", prediction_row)
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from sqlalchemy import and_, case, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pq.storage import schema
from pq.storage.catalog import ensure_line
from pq.storage.engine import Store
from pq.storage.parts import insert_ignore

__all__ = ["register", "write_predictions", "write_alerts", "write_alert_events", "write_part_features",
           "write_shadow_scores", "EDGE_KINDS", "PREDICTION_COLUMNS"]

logger = logging.getLogger(__name__)

PREDICTION_COLUMNS = tuple(c.name for c in schema.predictions.columns)
_ALERT_EDGE_COLUMNS = ("id", "line_id", "kind", "cause", "state", "severity", "serial", "station", "product",
                       "material_lot", "shift", "score", "title", "action", "explanation", "model_version_id",
                       "repeat_count", "raised_at", "updated_at", "cleared_at",
                       "assigned_to", "escalation_level", "escalated_to", "escalated_role", "escalated_at")
_EVENT_COLUMNS = tuple(c.name for c in schema.alert_events.columns)


def _last_by_id(payloads: list[dict], cols) -> list[dict]:
    latest: dict[str, dict] = {}
    for p in payloads:  # oldest first: the last record of an id is its newest state
        latest[p["id"]] = {c: p.get(c) for c in cols}
    return list(latest.values())


def write_predictions(store: Store, payloads: list[dict]) -> int:
    rows = _last_by_id(payloads, PREDICTION_COLUMNS)
    with store.engine.begin() as conn:
        conn.execute(insert_ignore(store, schema.predictions, ["id", "decided_at"]), rows)
    return len(rows)


def write_alerts(store: Store, payloads: list[dict]) -> int:
    rows = _last_by_id(payloads, _ALERT_EDGE_COLUMNS)
    if not rows:
        return 0
    t = schema.alerts
    stmt = (pg_insert if store.dialect == "postgresql" else sqlite_insert)(t)
    ex = stmt.excluded
    # plain comparisons, not IN: an expanding IN cannot be used with executemany
    reopening = or_(ex.state == "active", ex.state == "suppressed")
    state = case(
        (t.c.state == "cleared", t.c.state),  # cleared is final; a new occurrence gets a new id
        (and_(t.c.state == "acknowledged", reopening), t.c.state),
        (and_(t.c.state == "shelved", reopening,
              or_(t.c.shelved_until.is_(None), t.c.shelved_until > ex.updated_at)), t.c.state),
        else_=ex.state,
    )
    update = {c: ex[c] for c in _ALERT_EDGE_COLUMNS if c not in ("id", "raised_at", "state")}
    update["state"] = state
    stmt = stmt.on_conflict_do_update(index_elements=["id"], set_=update)
    with store.engine.begin() as conn:
        conn.execute(stmt, rows)
    return len(rows)


def write_alert_events(store: Store, payloads: list[dict]) -> int:
    rows = _last_by_id(payloads, _EVENT_COLUMNS)
    with store.engine.begin() as conn:
        conn.execute(insert_ignore(store, schema.alert_events, ["id"]), rows)
    return len(rows)


def write_part_features(store: Store, payloads: list[dict]) -> int:
    """Payload: line_id, serial, cycle_start, cycle_end, product, material_lot, shift, context,
    feature_set_version, features {name: value|None}, reason, computed_at.

    The part row may not be in the store yet (the connector's spool drains separately): it is
    inserted if missing, never overwritten, so the connector's later upsert still wins.
    """
    if not payloads:
        return 0
    now = datetime.now(timezone.utc)
    for line_id in sorted({p["line_id"] for p in payloads}):
        ensure_line(store, line_id)
    part_rows = [{"line_id": p["line_id"], "serial": p["serial"], "cycle_start": p.get("cycle_start"),
                  "cycle_end": p["cycle_end"], "product": p.get("product"), "material_lot": p.get("material_lot"),
                  "shift": p.get("shift"), "context": p.get("context"), "created_at": now} for p in payloads]
    p_t = schema.parts
    with store.engine.begin() as conn:
        conn.execute(insert_ignore(store, p_t, ["line_id", "serial"]), part_rows)
        keys = {(p["line_id"], p["serial"]) for p in payloads}
        ids = {}
        for line_id in {k[0] for k in keys}:
            serials = [k[1] for k in keys if k[0] == line_id]
            for r in conn.execute(select(p_t.c.id, p_t.c.serial).where(
                    p_t.c.line_id == line_id, p_t.c.serial.in_(serials))):
                ids[(line_id, r.serial)] = r.id
        rows = {}
        for p in payloads:
            rows[(ids[(p["line_id"], p["serial"])], p["feature_set_version"])] = {
                "part_id": ids[(p["line_id"], p["serial"])], "feature_set_version": p["feature_set_version"],
                "source": "edge", "features": p["features"], "reason": p.get("reason") or None,
                "computed_at": p.get("computed_at") or now}
        # What the model saw replaces a backfilled vector of the same part (the backfill keeps an edge
        # row, pq/features/backfill.py); an edge row already stored stays, so a spool replay is a no-op.
        fn = pg_insert if store.dialect == "postgresql" else sqlite_insert
        stmt = fn(schema.part_features)
        stmt = stmt.on_conflict_do_update(
            index_elements=["part_id", "feature_set_version"],
            set_={c: stmt.excluded[c] for c in ("source", "features", "reason", "computed_at")},
            where=schema.part_features.c.source != "edge")
        conn.execute(stmt, list(rows.values()))
    return len(rows)


_SHADOW_COLUMNS = tuple(c.name for c in schema.shadow_scores.columns)


def write_shadow_scores(store: Store, payloads: list[dict]) -> int:
    """Payload: one shadow_scores row (id = the production prediction's id); a replay writes nothing twice."""
    rows = _last_by_id(payloads, _SHADOW_COLUMNS)
    with store.engine.begin() as conn:
        conn.execute(insert_ignore(store, schema.shadow_scores, ["id", "decided_at"]), rows)
    return len(rows)


EDGE_KINDS = {"prediction": write_predictions, "alert": write_alerts, "alert_event": write_alert_events,
              "part_features": write_part_features, "shadow_score": write_shadow_scores}


def register() -> None:
    """Add the edge's kinds to the spool's writer table (idempotent)."""
    from pq.spool import register_writer

    for kind, fn in EDGE_KINDS.items():
        register_writer(kind, fn)
