"""Database URLs, engines and sessions for the incident store.

PostgreSQL (asyncpg) is the production store; SQLite (aiosqlite) is the zero-set-up default when
`DATABASE_URL` is unset. One `Store` is built per process (by the CLI or an app factory) and passed
down; nothing here is a module-level singleton.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event, make_url, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from incidents.exceptions import StoreUnavailable

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///.remediator/remediator.db"
# Session.info key: the channels whose waiters in this process the commit wakes.
WAKE_AFTER_COMMIT = "incidents.wake_after_commit"

_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def resolve_database_url(url: str | None) -> URL:
    """Normalize `DATABASE_URL`: `postgresql://` and `sqlite:///` get their async drivers.

    Raises `ValueError` naming the problem for anything that is not PostgreSQL or SQLite.
    """
    raw = url.strip() if url else DEFAULT_DATABASE_URL
    try:
        parsed = make_url(raw)
    except Exception as exc:  # SQLAlchemy raises ArgumentError with the URL in the message
        raise ValueError(f"DATABASE_URL is not a database URL: {exc}") from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"DATABASE_URL uses {parsed.drivername!r}; Remediator supports postgresql:// and sqlite:///"
        )
    return parsed.set(drivername=driver)


def redact(url: URL) -> str:
    """The URL with its password hidden, for logs and error messages."""
    return url.render_as_string(hide_password=True)


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    """The database and how long anything may wait on it.

    Every wait on PostgreSQL is bounded, so a worker whose database is down, frozen or locked learns
    it within a known time (`StoreUnavailable`) instead of hanging past its lease:
    `connect_timeout` to open a connection, `pool_timeout` to get one from the pool,
    `statement_timeout` for one statement (the server cancels it; the client gives up a second
    later, for a server too stuck to cancel anything), `lock_timeout` for one wait on a row, table
    or advisory lock. SQLite, in-process, has its busy timeout instead.
    """

    url: str | None = None
    pool_size: int = 10
    connect_timeout: float = 5.0
    pool_timeout: float = 5.0
    statement_timeout: float = 5.0
    lock_timeout: float = 3.0
    echo: bool = False


# How much longer than the server's statement timeout the client waits for an answer.
CLIENT_TIMEOUT_MARGIN_SECONDS = 1.0
# SQLSTATEs of a statement PostgreSQL cancelled on a timeout: query_canceled (statement_timeout)
# and lock_not_available (lock_timeout). The store is too slow or too busy: not our error.
_TIMEOUT_SQLSTATES = frozenset({"57014", "55P03"})


def postgresql_connect_args(config: StoreConfig) -> dict[str, Any]:
    """asyncpg's connect() arguments that carry the store's time bounds
    (https://magicstack.github.io/asyncpg/current/api/index.html#connection)."""
    return {
        "timeout": config.connect_timeout,
        "command_timeout": config.statement_timeout + CLIENT_TIMEOUT_MARGIN_SECONDS,
        "server_settings": {
            "statement_timeout": str(int(config.statement_timeout * 1000)),
            "lock_timeout": str(int(config.lock_timeout * 1000)),
        },
    }


class Store:
    """An engine and its session factory. `async with store.session() as s:` gives a transaction."""

    def __init__(self, engine: AsyncEngine, *, connect_timeout: float = StoreConfig.connect_timeout) -> None:
        self.engine = engine
        self.connect_timeout = connect_timeout
        # Waiters in this process, by notification channel: a commit that queues work wakes them
        # directly (incidents/queue.py), with no poll and no round trip to the database.
        self.local_waiters: dict[str, set[Callable[[], None]]] = {}

        # One listener for the store's sessions (a listener per session would be registered, and
        # kept, for every transaction that queues work).
        class StoreSession(Session):
            pass

        event.listen(StoreSession, "after_commit", self._wake_local_waiters)
        self.sessions = async_sessionmaker(engine, expire_on_commit=False, sync_session_class=StoreSession)

    def wake_after_commit(self, session: AsyncSession, channel: str) -> None:
        """Wake this process's waiters on `channel` when the session's transaction commits."""
        session.info.setdefault(WAKE_AFTER_COMMIT, set()).add(channel)

    def _wake_local_waiters(self, session: Session) -> None:
        for channel in session.info.pop(WAKE_AFTER_COMMIT, ()):
            for wake in list(self.local_waiters.get(channel, ())):
                wake()

    @classmethod
    def from_config(cls, config: StoreConfig) -> Store:
        url = resolve_database_url(config.url)
        kwargs: dict[str, Any] = {"echo": config.echo}
        if url.get_backend_name() == "sqlite":
            database = url.database or ""
            if database and database != ":memory:":
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": config.connect_timeout}
        else:
            kwargs.update(
                pool_size=config.pool_size,
                max_overflow=config.pool_size,
                pool_pre_ping=True,
                pool_timeout=config.pool_timeout,
                connect_args=postgresql_connect_args(config),
            )
        engine = create_async_engine(url, **kwargs)
        if url.get_backend_name() == "sqlite":
            _configure_sqlite(engine)
        return cls(engine, connect_timeout=config.connect_timeout)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def url(self) -> URL:
        return self.engine.url

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        async with self.sessions() as session:
            try:
                async with session.begin():
                    yield session
            except (OperationalError, DBAPIError) as exc:
                if _is_connection_problem(exc):
                    raise StoreUnavailable(f"incident store unavailable: {exc.orig or exc}") from exc
                raise
            except sa_exc.TimeoutError as exc:  # no pooled connection free within pool_timeout
                raise StoreUnavailable(f"incident store busy: {exc}") from exc
            except OSError as exc:  # refused, reset, or a timeout (TimeoutError) while connecting
                raise StoreUnavailable(
                    f"incident store unavailable: {type(exc).__name__}: {exc}".rstrip(": ")
                ) from exc

    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the database answers a trivial query."""
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:
            raise StoreUnavailable(f"incident store unavailable at {redact(self.url)}: {exc}") from exc

    async def listen(self, channel: str, on_notify: Callable[[], None]) -> asyncpg.Connection:
        """PostgreSQL only: a connection of its own that calls `on_notify` for each NOTIFY on
        `channel`. The caller closes it; a pooled connection would carry the LISTEN to other users."""
        dsn = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        connection = await asyncpg.connect(dsn, timeout=self.connect_timeout)
        try:
            await connection.add_listener(channel, lambda *_: on_notify())
        except BaseException:
            await connection.close()
            raise
        return connection

    async def dispose(self) -> None:
        await self.engine.dispose()


def _is_connection_problem(exc: DBAPIError) -> bool:
    if exc.connection_invalidated or isinstance(exc, OperationalError):
        return True
    return getattr(exc.orig, "sqlstate", None) in _TIMEOUT_SQLSTATES


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL, foreign keys, a busy timeout, and `BEGIN IMMEDIATE` for every transaction.

    SQLite upgrades a deferred read transaction to a write lock lazily and fails at once (no busy
    wait) when two connections try it together; taking the write lock at BEGIN serializes writers
    cleanly instead. This is SQLAlchemy's documented recipe for pysqlite-style drivers.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
