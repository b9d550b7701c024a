"""Alembic environment for the incident store.

Migrations run on a connection handed over by `incidents.migrate` (async engine, `run_sync`), so the
same code serves `remediator db upgrade`, app start-up and tests. Running the `alembic` command line
against `alembic.ini` is supported too: it builds its own async engine from the configured URL.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from incidents.db import resolve_database_url
from incidents.models import Base

config = context.config
target_metadata = Base.metadata


def run_with_connection(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_with_own_engine() -> None:
    url = resolve_database_url(config.get_main_option("sqlalchemy.url"))
    engine = create_async_engine(url, poolclass=NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(run_with_connection)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=str(resolve_database_url(config.get_main_option("sqlalchemy.url"))),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    shared = config.attributes.get("connection")
    if shared is not None:
        run_with_connection(shared)
    else:
        asyncio.run(run_with_own_engine())
