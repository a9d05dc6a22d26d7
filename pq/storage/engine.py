"""Opening the store: URL checks, engine set-up per dialect, and retrying an unreachable database.

Owns :class:`Store`, the handle every other part of pq receives. It knows the dialect, whether
TimescaleDB is present and which edition, and the schema version. Must not import connectors,
models, ui or simulators.

Example::

    store = Store.open(load_settings(database_url="sqlite:///var/pq.db"))
    with store.engine.begin() as conn:
        ...
"""

from __future__ import annotations

import logging
import time
from functools import cached_property
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from pq.config import Settings
from pq.errors import ConfigError, StorageError

__all__ = ["Store", "safe_url"]

logger = logging.getLogger(__name__)

_SUPPORTED = {"sqlite", "postgresql+psycopg"}


def safe_url(url: URL | str) -> str:
    """The URL with its password masked, for logs and messages."""
    return make_url(url).render_as_string(hide_password=True)


def _parse_url(raw: str) -> URL:
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError(
            f"setting PQ_DATABASE_URL: got {raw!r}, expected sqlite:///path or postgresql+psycopg://user@host/db"
        ) from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")  # the driver pq is built and measured with
    if url.drivername not in _SUPPORTED:
        raise ConfigError(
            f"setting PQ_DATABASE_URL: scheme {url.drivername!r} is not supported, "
            "expected sqlite:///path or postgresql+psycopg://user@host/db"
        )
    return url


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets the UI read while the edge writes; NORMAL sync is durable across process crashes.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


class Store:
    """A connected store: an SQLAlchemy engine plus what pq needs to know about it."""

    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.settings = settings

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, settings: Settings, *, wait: bool = True) -> "Store":
        """Create the engine and make sure the database answers, retrying with backoff.

        Raises ConfigError for a bad URL or missing driver, StorageError when the database stays
        unreachable for ``settings.db_connect_timeout_s``.
        """
        url = _parse_url(settings.database_url)
        try:
            if url.drivername == "sqlite":
                if url.database and url.database != ":memory:":
                    Path(url.database).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"timeout": 30})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(
                    url,
                    pool_size=settings.db_pool_size,
                    pool_pre_ping=True,
                    connect_args={"connect_timeout": 5, "application_name": "pq"},
                )
        except (NoSuchModuleError, ModuleNotFoundError) as exc:
            raise ConfigError(
                f"setting PQ_DATABASE_URL: no driver for {url.drivername!r} ({exc}); install pq with its dependencies"
            ) from None
        store = cls(engine, settings)
        store._wait_until_reachable(settings.db_connect_timeout_s if wait else 0)
        return store

    def _wait_until_reachable(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        delay, warned = 0.25, False
        while True:
            try:
                with self.engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                if warned:
                    logger.info("database %s reachable again", self.display_url)
                return
            except OperationalError as exc:
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StorageError(
                        f"database {self.display_url} unreachable after {timeout_s:.0f} s: {reason}"
                    ) from None
                if not warned:
                    logger.warning("database %s unreachable, retrying for up to %.0f s: %s",
                                   self.display_url, timeout_s, reason)
                    warned = True
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 5.0)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- facts -----------------------------------------------------------------------------------
    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def display_url(self) -> str:
        return safe_url(self.engine.url)

    @cached_property
    def timescale_edition(self) -> str | None:
        """'community', 'apache', or None when TimescaleDB is not installed in this database."""
        if self.dialect != "postgresql":
            return None
        with self.engine.connect() as conn:
            installed = conn.execute(
                text("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
            ).scalar()
            if installed is None:
                return None
            license_ = conn.execute(text("SELECT current_setting('timescaledb.license', true)")).scalar()
        return "apache" if license_ == "apache" else "community"
