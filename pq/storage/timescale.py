"""TimescaleDB where it is installed: hypertables, compression, retention.

Editions differ (see DESIGN.md): the community edition has compression and background retention
policies, the Apache edition (Debian's source build, some clouds) has hypertables and
``drop_chunks`` only, so pq runs retention itself there (``pq db retention``). Plain PostgreSQL
and SQLite get a plain DELETE.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, text

from pq.storage import schema
from pq.storage.engine import Store

__all__ = ["configure", "apply_retention", "HYPERTABLES"]

logger = logging.getLogger(__name__)

# table -> (time column, chunk interval). Samples dominate volume; predictions grow one row per part,
# shadow_scores one per part while a challenger runs in shadow.
HYPERTABLES = {"samples": ("ts", "1 day"), "predictions": ("decided_at", "7 days"),
               "shadow_scores": ("decided_at", "7 days")}


def configure(store: Store) -> None:
    """Idempotent: create the extension if the server has it, hypertables, and edition policies."""
    if store.dialect != "postgresql":
        return
    with store.engine.begin() as conn:
        available = conn.execute(
            text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        ).scalar()
        if not available:
            logger.info("TimescaleDB not installed on %s: plain PostgreSQL tables", store.display_url)
            return
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS timescaledb"))
        for table, (column, chunk) in HYPERTABLES.items():
            conn.execute(
                text(
                    f"SELECT create_hypertable('{table}', by_range('{column}', INTERVAL '{chunk}'), "
                    "if_not_exists => TRUE, migrate_data => TRUE)"
                )
            )
    store.__dict__.pop("timescale_edition", None)
    if store.timescale_edition == "community":
        days = store.settings.retention_days
        with store.engine.begin() as conn:
            conn.execute(text(
                "ALTER TABLE samples SET (timescaledb.compress, "
                "timescaledb.compress_segmentby = 'tag_id', timescaledb.compress_orderby = 'ts')"
            ))
            conn.execute(text("SELECT add_compression_policy('samples', INTERVAL '7 days', if_not_exists => TRUE)"))
            conn.execute(text(
                f"SELECT add_retention_policy('samples', INTERVAL '{int(days)} days', if_not_exists => TRUE)"
            ))
    logger.info("TimescaleDB %s edition on %s: hypertables %s",
                store.timescale_edition, store.display_url, ", ".join(HYPERTABLES))


def apply_retention(store: Store, *, now: datetime | None = None) -> int:
    """Drop raw samples older than ``retention_days``; returns chunks dropped or rows deleted.

    The community edition does this in the background by policy; calling it there is harmless.
    """
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(days=store.settings.retention_days)
    with store.engine.begin() as conn:
        if store.timescale_edition is not None:
            dropped = conn.execute(
                text("SELECT count(*) FROM drop_chunks('samples', older_than => :cutoff)"), {"cutoff": cutoff}
            ).scalar()
        else:
            dropped = conn.execute(delete(schema.samples).where(schema.samples.c.ts < cutoff)).rowcount
    logger.info("retention on %s: removed %s (older than %s)", store.display_url, dropped, cutoff.isoformat())
    return int(dropped or 0)
