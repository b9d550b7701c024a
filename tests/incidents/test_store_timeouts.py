"""Every wait on PostgreSQL is bounded: connect, pool, statement, lock, and a server that never answers.

Each bound surfaces as `StoreUnavailable` (the API answers 503, a worker retries or lets its lease go)
within about its configured time, never as a hang. The database's clock, which leases use, is read
from the server on both backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import asyncpg
import pytest
from sqlalchemy import text

from incidents import Store, StoreConfig, StoreUnavailable, database_now, upgrade, utcnow
from incidents.db import postgresql_connect_args
from incidents.migrate import without_time_limits
from tests.support.private_postgres import PrivatePostgres, private_postgres_or_missing


def quick(url: str, **bounds: float) -> Store:
    return Store.from_config(StoreConfig(url=url, pool_size=1, **bounds))


@contextlib.asynccontextmanager
async def timed(at_most: float) -> AsyncIterator[None]:
    started = time.monotonic()
    yield
    elapsed = time.monotonic() - started
    assert elapsed < at_most, f"took {elapsed:.2f}s, bound {at_most}s"


def test_the_bounds_reach_asyncpg_and_the_server() -> None:
    args = postgresql_connect_args(
        StoreConfig(connect_timeout=2, statement_timeout=4, lock_timeout=1.5, pool_timeout=3)
    )
    assert args == {
        "timeout": 2,
        "command_timeout": 5.0,
        "server_settings": {"statement_timeout": "4000", "lock_timeout": "1500"},
    }


async def test_a_slow_statement_is_cancelled_at_the_statement_timeout(postgres_url: str) -> None:
    store = quick(postgres_url, statement_timeout=0.3)
    try:
        async with timed(2.0):
            with pytest.raises(StoreUnavailable, match="statement timeout"):
                async with store.session() as session:
                    await session.execute(text("SELECT pg_sleep(5)"))
        async with store.session() as session:  # the connection is usable again
            assert await session.scalar(text("SELECT 1")) == 1
    finally:
        await store.dispose()


async def test_a_lock_wait_ends_at_the_lock_timeout(pg_store: Store, postgres_url: str) -> None:
    store = quick(postgres_url, lock_timeout=0.3)
    holder = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await holder.execute("BEGIN; LOCK TABLE incidents IN ACCESS EXCLUSIVE MODE")
        async with timed(2.0):
            with pytest.raises(StoreUnavailable, match="lock timeout"):
                async with store.session() as session:
                    await session.execute(text("SELECT count(*) FROM incidents"))
    finally:
        await holder.close()
        await store.dispose()


async def test_waiting_for_a_pooled_connection_ends_at_the_pool_timeout(postgres_url: str) -> None:
    store = quick(postgres_url, pool_timeout=0.3)  # pool_size 1 + overflow 1: two connections
    try:
        held = [await store.engine.connect() for _ in range(2)]
        try:
            async with timed(2.0):
                with pytest.raises(StoreUnavailable, match="busy"):
                    async with store.session() as session:
                        await session.execute(text("SELECT 1"))
        finally:
            for connection in held:
                await connection.close()
    finally:
        await store.dispose()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a half-dead load balancer)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


async def test_a_server_that_never_answers_the_handshake_fails_at_the_connect_timeout(
    silent_server: int,
) -> None:
    store = quick(f"postgresql://nobody@127.0.0.1:{silent_server}/none", connect_timeout=0.5)
    try:
        async with timed(3.0):
            with pytest.raises(StoreUnavailable, match="TimeoutError"):
                async with store.session() as session:
                    await session.execute(text("SELECT 1"))
    finally:
        await store.dispose()


async def test_a_frozen_server_is_given_up_on_a_second_after_the_statement_timeout() -> None:
    """SIGSTOP: the server cannot even cancel the statement; the client's own timeout ends the wait."""
    private_postgres_or_missing()
    server = await asyncio.to_thread(PrivatePostgres.create)
    try:
        url = await asyncio.to_thread(server.create_database, "frozen")
        store = quick(url, statement_timeout=0.5, connect_timeout=0.5)
        try:
            async with store.session() as session:
                assert await session.scalar(text("SELECT 1")) == 1
            server.freeze()
            try:
                async with timed(4.0):
                    with pytest.raises(StoreUnavailable):
                        async with store.session() as session:
                            await session.execute(text("SELECT 1"))
            finally:
                server.thaw()
            async with store.session() as session:  # and the pool recovers once it answers again
                assert await session.scalar(text("SELECT 1")) == 1
        finally:
            await store.dispose()
    finally:
        await asyncio.to_thread(server.close)


async def test_migrations_are_not_bound_by_the_statement_timeout(postgres_url: str) -> None:
    store = quick(postgres_url, statement_timeout=0.3, lock_timeout=0.3)
    try:
        async with store.engine.begin() as connection:
            await without_time_limits(connection)  # what upgrade() and downgrade() run first
            await connection.execute(text("SELECT pg_sleep(0.6)"))
        await upgrade(store)
    finally:
        await store.dispose()


async def test_the_database_clock_is_read_from_the_database(store: Store) -> None:
    async with store.session() as session:
        first = await database_now(session)
        await asyncio.sleep(0.01)
        second = await database_now(session)
    assert first.tzinfo is not None
    assert abs(first - utcnow()) < timedelta(seconds=5)  # the same machine here
    assert second > first  # the current time, not the transaction's start
