"""The database's clock: the one clock every replica of Remediator shares.

Cooldowns and the hourly cap compare the time an action was queued with "now". Written and read by
different replicas, each with its own clock, those two readings can disagree by however far the
machines drift apart, and a replica whose clock runs behind would see a cooldown as over while it
still holds. Both readings come from here instead: PostgreSQL's `clock_timestamp()` (the actual
time at the call, not the transaction's start: a decision may wait on the policy lock first), or,
for the embedded SQLite store (one file on one machine, no replicas), that machine's clock as
SQLite reads it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# SQLite has no time zones: strftime('now') is UTC, to the millisecond.
_SQLITE_NOW = text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
_POSTGRESQL_NOW = text("SELECT clock_timestamp()")


async def database_now(session: AsyncSession) -> datetime:
    """The database's current time, as an aware UTC datetime."""
    if session.get_bind().dialect.name == "postgresql":
        value = await session.scalar(_POSTGRESQL_NOW)
        assert isinstance(value, datetime)
        return value.astimezone(UTC)
    stamp = await session.scalar(_SQLITE_NOW)
    return datetime.fromisoformat(str(stamp)).replace(tzinfo=UTC)
