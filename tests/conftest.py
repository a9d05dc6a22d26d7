"""Shared fixtures: real stores on both backends.

- ``settings_factory``: Settings rooted in the test's tmp_path (overrides as keywords).
- ``sqlite_store``: a fresh, upgraded embedded SQLite store per test.
- ``pg_store``: PostgreSQL (+ TimescaleDB where installed) from ``PQ_TEST_POSTGRES_URL``: one fresh
  database per test session, created here and dropped at the end, tables emptied before each test.
  Skipped only where no PostgreSQL is configured; CI always configures it.
- ``store``: the same test on both stores.
"""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from pq.config import load_settings
from pq.storage import Store, migrate, schema

PG_ENV = "PQ_TEST_POSTGRES_URL"


@pytest.fixture
def settings_factory(tmp_path):
    def make(**overrides):
        overrides.setdefault("data_dir", tmp_path / "var")
        overrides.setdefault("database_url", f"sqlite:///{tmp_path / 'pq.db'}")
        overrides.setdefault("db_connect_timeout_s", 5)
        return load_settings(**overrides)

    return make


@pytest.fixture
def sqlite_store(settings_factory):
    store = Store.open(settings_factory())
    migrate.upgrade(store)
    yield store
    store.dispose()


@pytest.fixture(scope="session")
def pg_database_url():
    """URL of a fresh PostgreSQL database for this test session."""
    admin_url = os.environ.get(PG_ENV)
    if not admin_url:
        pytest.skip(f"{PG_ENV} is not set: no PostgreSQL configured")
    admin_url = make_url(admin_url).set(drivername="postgresql+psycopg")
    name = f"pq_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name)
    created = Store.open(load_settings(database_url=url.render_as_string(hide_password=False)))
    migrate.upgrade(created)
    created.dispose()
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
        ), {"n": name})
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def _truncate_all(store: Store) -> None:
    names = ", ".join(f'"{t}"' for t in schema.metadata.tables)
    with store.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture
def pg_store(pg_database_url, settings_factory):
    store = Store.open(settings_factory(database_url=pg_database_url))
    _truncate_all(store)
    yield store
    store.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request):
    return request.getfixturevalue("sqlite_store" if request.param == "sqlite" else "pg_store")


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium under Playwright, one per test module (launching costs seconds)."""
    from pathlib import Path

    from tests._ui_helpers import CHROMIUM, CHROMIUM_ARGS

    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
