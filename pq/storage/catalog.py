"""Lines and tags: the catalogue every sample refers to.

``ensure_line`` and ``ensure_tags`` are idempotent and return tag ids by name, so a connector, a
history import and the simulator's history load all register tags the same way.

Example::

    ids = ensure_tags(store, "line-1", [TagDef("melt_temp_c", "°C", "process", 220, 250)])
    ids["melt_temp_c"]
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import insert, select, update

from pq.errors import ConfigError
from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["TagDef", "ensure_line", "ensure_tags", "tag_table", "line_ids"]


@dataclass(frozen=True)
class TagDef:
    name: str
    unit: str | None = None
    role: str = "process"
    low_limit: float | None = None
    high_limit: float | None = None
    node_id: str | None = None
    description: str | None = None

    def __post_init__(self):
        if self.role not in schema.TAG_ROLES:
            raise ConfigError(f"tag {self.name!r}: role must be one of {', '.join(schema.TAG_ROLES)}, got {self.role!r}")


def ensure_line(store: Store, line_id: str, name: str | None = None, station: str | None = None) -> None:
    with store.engine.begin() as conn:
        exists = conn.execute(select(schema.lines.c.id).where(schema.lines.c.id == line_id)).first()
        if exists is None:
            conn.execute(insert(schema.lines).values(
                id=line_id, name=name or line_id, station=station, created_at=datetime.now(timezone.utc)))
        elif station or name:
            values = {k: v for k, v in (("name", name), ("station", station)) if v}
            conn.execute(update(schema.lines).where(schema.lines.c.id == line_id).values(**values))


def ensure_tags(store: Store, line_id: str, tags: list[TagDef]) -> dict[str, int]:
    """Register tags for a line (updating unit, role, limits and node id); returns {name: tag_id}."""
    ensure_line(store, line_id)
    now = datetime.now(timezone.utc)
    t = schema.tags
    with store.engine.begin() as conn:
        existing = {r.name: r.id for r in conn.execute(select(t.c.name, t.c.id).where(t.c.line_id == line_id))}
        for tag in tags:
            values = dict(unit=tag.unit, role=tag.role, low_limit=tag.low_limit, high_limit=tag.high_limit,
                          node_id=tag.node_id, description=tag.description)
            if tag.name in existing:
                conn.execute(update(t).where(t.c.id == existing[tag.name]).values(**values))
            else:
                existing[tag.name] = conn.execute(
                    insert(t).values(line_id=line_id, name=tag.name, created_at=now, **values)
                ).inserted_primary_key[0]
    store.__dict__.pop("_tag_id_cache", None)
    return existing


def tag_table(store: Store, line_id: str | None = None) -> list[dict]:
    """All tags (optionally of one line) as dicts."""
    query = select(schema.tags)
    if line_id is not None:
        query = query.where(schema.tags.c.line_id == line_id)
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query.order_by(schema.tags.c.line_id, schema.tags.c.name))]


def line_ids(store: Store) -> list[str]:
    """Every line the store knows, by id."""
    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(select(schema.lines.c.id).order_by(schema.lines.c.id))]
