"""What ``pq db info`` shows: the store, TimescaleDB edition, schema version and row counts."""

from __future__ import annotations

from sqlalchemy import func, select

from pq.storage import migrate, schema
from pq.storage.engine import Store

__all__ = ["describe"]


def describe(store: Store) -> dict:
    current = migrate.current_version(store)
    out = {
        "store": store.display_url,
        "dialect": store.dialect,
        "timescaledb": store.timescale_edition or "not installed",
        "schema_version": current or "none (run `pq db upgrade`)",
        "code_schema_version": migrate.head_version(),
    }
    if current is not None:
        counts = {}
        with store.engine.connect() as conn:
            for name, table in schema.metadata.tables.items():
                counts[name] = conn.execute(select(func.count()).select_from(table)).scalar()
        out["rows"] = counts
    return out
