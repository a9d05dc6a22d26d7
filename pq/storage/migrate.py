"""Schema migrations with Alembic, driven from pq (no alembic.ini to carry around).

``upgrade(store)`` brings a database to the newest schema this code knows and then sets up
TimescaleDB where it is installed. ``check(store)`` refuses a database that is behind (run
``pq db upgrade``) or ahead (a newer pq wrote it).
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from pq.errors import SchemaVersionError
from pq.storage import timescale
from pq.storage.engine import Store

__all__ = ["upgrade", "check", "current_version", "head_version"]

logger = logging.getLogger(__name__)

_SCRIPTS = Path(__file__).with_name("migrations")


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


def head_version() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_version(store: Store) -> str | None:
    with store.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _known(rev: str) -> bool:
    return any(s.revision == rev for s in ScriptDirectory.from_config(_config()).walk_revisions())


def upgrade(store: Store) -> str:
    """Create or upgrade the schema; returns the version now recorded in the database."""
    current = current_version(store)
    if current is not None and not _known(current):
        raise SchemaVersionError(
            f"database {store.display_url} is at schema version {current}, newer than this pq "
            f"(knows up to {head_version()}); upgrade pq instead of the database"
        )
    cfg = _config()
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    store.__dict__.pop("timescale_edition", None)  # the migration may have created the extension
    timescale.configure(store)
    version = current_version(store)
    logger.info("schema of %s at version %s (was %s)", store.display_url, version, current)
    return version


def check(store: Store) -> str:
    """Raise SchemaVersionError unless the database is exactly at this code's schema version."""
    current, head = current_version(store), head_version()
    if current == head:
        return current
    if current is None:
        raise SchemaVersionError(f"database {store.display_url} has no pq schema yet: run `pq db upgrade`")
    if not _known(current):
        raise SchemaVersionError(
            f"database {store.display_url} is at schema version {current}, newer than this pq "
            f"(knows up to {head}); upgrade pq"
        )
    raise SchemaVersionError(
        f"database {store.display_url} is at schema version {current}, this pq needs {head}: run `pq db upgrade`"
    )
