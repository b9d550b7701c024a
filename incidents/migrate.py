"""Schema migrations (Alembic), run programmatically on the store's own engine."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from incidents.db import Store

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


async def upgrade(store: Store, revision: str = "head") -> None:
    """Bring the schema to `revision` (default: the newest)."""

    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with store.engine.begin() as connection:
        await without_time_limits(connection)
        await connection.run_sync(run)


async def without_time_limits(connection: AsyncConnection) -> None:
    """A migration may rewrite a large table or wait for a long transaction to let go of it: the
    store's statement and lock timeouts are for the service's own short statements, not for it."""
    if connection.dialect.name == "postgresql":
        await connection.execute(text("SET LOCAL statement_timeout = 0"))
        await connection.execute(text("SET LOCAL lock_timeout = 0"))


async def downgrade(store: Store, revision: str) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with store.engine.begin() as connection:
        await without_time_limits(connection)
        await connection.run_sync(run)


async def current_revision(store: Store) -> str | None:
    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with store.engine.connect() as connection:
        return await connection.run_sync(read)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def is_up_to_date(store: Store) -> bool:
    return await current_revision(store) == head_revision()
