"""The table of record kind -> writer: how each spooled record reaches the store, idempotently.

Owns :func:`register_writer` and the built-in writers: ``samples``, ``tags``, ``part``,
``inspection``, ``health``, ``line_event``. The edge runtime registers its own kinds
(``prediction``, ``alert``, ``alert_event`` ...) the same way; the drainer never branches on kinds.

A writer takes ``(store, payloads)`` (all payloads of one kind from one drained batch, oldest
first), commits them, and returns the number of rows written. It must be idempotent: the drainer
acknowledges records only after the writer returned, so a crash in between replays them.

Example::

    def write_predictions(store, payloads):
        stmt = insert_ignore(store, schema.predictions, ["id", "decided_at"])
        with store.engine.begin() as conn:
            return conn.execute(stmt, payloads).rowcount

    register_writer("prediction", write_predictions)
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
import pandas as pd
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pq.spool.records import SampleBatch, TagKey
from pq.storage import schema
from pq.storage.catalog import TagDef, ensure_line, ensure_tags, tag_table
from pq.storage.engine import Store
from pq.storage.parts import upsert_inspections, upsert_parts
from pq.storage.samples import IngestResult, write_samples

__all__ = ["Writer", "register_writer", "get_writer", "writer_kinds", "TagResolver"]

logger = logging.getLogger(__name__)

Writer = Callable[[Store, list[Any]], int]
_WRITERS: dict[str, Writer] = {}


def register_writer(kind: str, writer: Writer) -> None:
    """Make ``kind`` drainable; replaces an earlier writer of the same kind."""
    _WRITERS[kind] = writer


def get_writer(kind: str) -> Writer | None:
    return _WRITERS.get(kind)


def writer_kinds() -> list[str]:
    return sorted(_WRITERS)


# -- samples -------------------------------------------------------------------------------------------

class TagResolver:
    """(line_id, tag name) -> tag_id for one store, loaded once and refreshed on a miss.

    A name the catalogue does not know (its ``tags`` record was lost, or a consumer spooled a
    sample for an undeclared tag) is registered as a ``process`` tag, counted and logged once.
    """

    def __init__(self) -> None:
        self._ids: dict[TagKey, int] = {}
        self.auto_registered = 0

    def resolve(self, store: Store, keys: tuple[TagKey, ...]) -> np.ndarray:
        missing = [k for k in keys if k not in self._ids]
        if missing:
            self._ids.update({(r["line_id"], r["name"]): r["id"] for r in tag_table(store)})
            missing = [k for k in keys if k not in self._ids]
            for line_id in sorted({k[0] for k in missing}):
                names = [k[1] for k in missing if k[0] == line_id]
                logger.warning("tags %s of line %s were not declared before their samples; registered as process",
                               ", ".join(names), line_id)
                ids = ensure_tags(store, line_id, [TagDef(n) for n in names])
                self._ids.update({(line_id, n): ids[n] for n in names})
                self.auto_registered += len(names)
        return np.array([self._ids[k] for k in keys] or [0], dtype=np.int64)


_RESOLVERS: dict[int, TagResolver] = {}
LAST_INGEST: dict[str, IngestResult] = {}  # per store URL, for health and the benchmark


def _resolver(store: Store) -> TagResolver:
    return _RESOLVERS.setdefault(id(store.engine), TagResolver())


def samples_frame(store: Store, batch: SampleBatch) -> pd.DataFrame:
    ids = _resolver(store).resolve(store, batch.tags)
    frame = pd.DataFrame({
        "tag_id": ids[batch.tag] if len(batch) else np.empty(0, np.int64),
        "ts": batch.ts_us.view("datetime64[us]"),
        "value": batch.value,
        "status": batch.status,
        "server_ts": batch.server_ts_us.view("datetime64[us]"),
    })
    if batch.text:
        text = np.full(len(batch), None, dtype=object)
        for i, s in batch.text.items():
            text[i] = s
        frame["value_text"] = text
    return frame


def write_sample_batches(store: Store, payloads: list[SampleBatch]) -> int:
    batch = SampleBatch.concat(payloads)
    result = write_samples(store, samples_frame(store, batch))
    total = LAST_INGEST.setdefault(store.display_url, IngestResult())
    total.add(result)
    return result.written


# -- catalogue, parts, inspections ---------------------------------------------------------------------

def write_tags(store: Store, payloads: list[dict]) -> int:
    """Payload: {"line_id", "line_name"?, "station"?, "tags": [TagDef fields ...]}."""
    n = 0
    for p in payloads:
        ensure_line(store, p["line_id"], p.get("line_name"), p.get("station"))
        ensure_tags(store, p["line_id"], [TagDef(**t) for t in p["tags"]])
        n += len(p["tags"])
    _RESOLVERS.pop(id(store.engine), None)
    return n


def _ensure_lines(store: Store, payloads: list[dict]) -> None:
    for line_id in sorted({p["line_id"] for p in payloads}):
        ensure_line(store, line_id)


def write_parts(store: Store, payloads: list[dict]) -> int:
    _ensure_lines(store, payloads)  # parts.line_id is a foreign key
    return upsert_parts(store, payloads)


def write_inspections(store: Store, payloads: list[dict]) -> int:
    return upsert_inspections(store, payloads)


# -- health and line events ----------------------------------------------------------------------------

def _upsert(store: Store, table, rows: list[dict], keys: list[str]) -> int:
    if not rows:
        return 0
    fn = pg_insert if store.dialect == "postgresql" else sqlite_insert
    stmt = fn(table)
    cols = [c.name for c in table.columns if c.name not in keys]
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in cols})
    with store.engine.begin() as conn:
        return conn.execute(stmt, rows).rowcount


def write_health(store: Store, payloads: list[dict]) -> int:
    """Latest state per component wins (older payloads of the same component are skipped)."""
    latest: dict[str, dict] = {}
    for p in payloads:
        latest[p["component"]] = {"component": p["component"], "line_id": p.get("line_id"), "state": p["state"],
                                  "detail": p.get("detail"), "updated_at": p.get("updated_at")
                                  or datetime.now(timezone.utc)}
    return _upsert(store, schema.component_health, list(latest.values()), ["component"])


def write_line_events(store: Store, payloads: list[dict]) -> int:
    """Insert or complete line events by id (a 'connection_lost' row gets its ended_at later)."""
    latest: dict[str, dict] = {}
    for p in payloads:
        latest[p["id"]] = {c.name: p.get(c.name) for c in schema.line_events.columns}
    return _upsert(store, schema.line_events, list(latest.values()), ["id"])


for _kind, _fn in (("samples", write_sample_batches), ("tags", write_tags), ("part", write_parts),
                   ("inspection", write_inspections), ("health", write_health), ("line_event", write_line_events)):
    register_writer(_kind, _fn)
