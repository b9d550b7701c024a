"""Test databases: a throw-away PostgreSQL database per test session, SQLite files per test."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from incidents import Store, StoreConfig, upgrade
from tests.support.real_parts import missing_real_part

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
T = TypeVar("T")
TABLES = (
    "notification_attempts",
    "notification_deliveries",
    "outbox_events",
    "incident_events",
    "incident_alerts",
    "actions",
    "incidents",
)


def admin_dsn() -> str:
    url = make_url(os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL))
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin_connection() -> asyncpg.Connection:
    dsn = admin_dsn()
    try:
        return await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        missing_real_part(
            "PostgreSQL",
            f"could not connect to {make_url(dsn).render_as_string(hide_password=True)} ({exc}); "
            "start it with `pg_ctlcluster --skip-systemctl-redirect <version> main start` or set "
            "TEST_DATABASE_URL",
        )
        raise


async def create_scratch_postgres_database() -> str:
    """Create a uniquely named database on the test server and return its URL."""
    admin = await _admin_connection()
    name = f"remediator_test_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return make_url(admin_dsn()).set(database=name).render_as_string(hide_password=False)


async def drop_scratch_postgres_database(url: str) -> None:
    admin = await _admin_connection()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    finally:
        await admin.close()


def run_outside_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a private loop in a worker thread.

    Session-scoped set-up must not share an event loop with the tests: each test has its own.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def migrated_store(url: str) -> Store:
    store = Store.from_config(StoreConfig(url=url, pool_size=20))
    await upgrade(store)
    return store


async def truncate_postgres(store: Store) -> None:
    async with store.engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))


def copy_sqlite_template(template: Path, target: Path) -> str:
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"
