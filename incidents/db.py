"""Database URLs, engines and sessions for the incident store.

PostgreSQL (asyncpg) is the production store; SQLite (aiosqlite) is the zero-set-up default when
`DATABASE_URL` is unset. One `Store` is built per process (by the CLI or an app factory) and passed
down; nothing here is a module-level singleton.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from incidents.exceptions import StoreUnavailable

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///.remediator/remediator.db"

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
    url: str | None = None
    pool_size: int = 10
    # Seconds a statement may wait for a lock or a connection before the store reports itself down.
    connect_timeout: float = 5.0
    echo: bool = False


class Store:
    """An engine and its session factory. `async with store.session() as s:` gives a transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

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
                pool_timeout=config.connect_timeout,
                connect_args={"timeout": config.connect_timeout},
            )
        engine = create_async_engine(url, **kwargs)
        if url.get_backend_name() == "sqlite":
            _configure_sqlite(engine)
        return cls(engine)

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

    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the database answers a trivial query."""
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:
            raise StoreUnavailable(f"incident store unavailable at {redact(self.url)}: {exc}") from exc

    async def dispose(self) -> None:
        await self.engine.dispose()


def _is_connection_problem(exc: DBAPIError) -> bool:
    return bool(exc.connection_invalidated) or isinstance(exc, OperationalError)


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
