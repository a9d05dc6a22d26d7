"""Parts and inspections: idempotent upserts keyed by (line_id, serial).

An inspection may arrive before or after its part (label delay, store-and-forward replays): the
two are joined on (line_id, serial) when read, never linked at write time.

Example::

    upsert_parts(store, [{"line_id": "line-1", "serial": "L1-000001", "cycle_end": now, ...}])
    upsert_inspections(store, [{"line_id": "line-1", "serial": "L1-000001", "defect": False, "inspected_at": now}])
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["upsert_parts", "upsert_inspections", "insert_ignore"]


def insert_ignore(store: Store, table, index_elements: list[str]):
    """``INSERT ... ON CONFLICT (index_elements) DO NOTHING`` for the store's dialect."""
    fn = pg_insert if store.dialect == "postgresql" else sqlite_insert
    return fn(table).on_conflict_do_nothing(index_elements=index_elements)


def _upsert(store: Store, table, rows: list[dict], keys: list[str], update_cols: list[str]) -> int:
    if not rows:
        return 0
    fn = pg_insert if store.dialect == "postgresql" else sqlite_insert
    stmt = fn(table)
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in update_cols})
    with store.engine.begin() as conn:
        return conn.execute(stmt, rows).rowcount


_PART_COLS = ["cycle_start", "cycle_end", "product", "material_lot", "shift", "context"]


def upsert_parts(store: Store, rows: list[dict]) -> int:
    """Insert or refresh parts; rows need line_id, serial, cycle_end (aware UTC)."""
    now = datetime.now(timezone.utc)
    full = [{c: r.get(c) for c in ["line_id", "serial", *_PART_COLS]} | {"created_at": now} for r in rows]
    return _upsert(store, schema.parts, full, ["line_id", "serial"], _PART_COLS)


def upsert_inspections(store: Store, rows: list[dict]) -> int:
    """Insert or correct inspection results; rows need line_id, serial, defect, inspected_at."""
    full = [{"line_id": r["line_id"], "serial": r["serial"], "defect": bool(r["defect"]),
             "defect_code": r.get("defect_code"), "inspected_at": r["inspected_at"],
             "source": r.get("source", "inspection")} for r in rows]
    return _upsert(store, schema.inspections, full, ["line_id", "serial"],
                   ["defect", "defect_code", "inspected_at", "source"])
