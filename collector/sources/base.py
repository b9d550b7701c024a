"""The one interface every evidence source shares."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Generic, TypeVar

from collector.exceptions import SourceFailed

T = TypeVar("T")


@dataclass(frozen=True)
class SourceResult(Generic[T]):
    """A source's answer: `value` when it answered, otherwise `gap` says what is missing and why."""

    value: T | None
    gap: str | None = None

    @property
    def ok(self) -> bool:
        return self.gap is None


async def bounded(source: str, call: Awaitable[T], *, seconds: float) -> SourceResult[T]:
    """Run one source call with a deadline; failures and timeouts become a named gap."""
    try:
        async with asyncio.timeout(seconds):
            return SourceResult(await call)
    except TimeoutError:
        return SourceResult(None, f"{source}: timeout after {seconds:g}s")
    except SourceFailed as exc:
        return SourceResult(None, exc.message)
    except Exception as exc:  # a source must never take the context down with it
        return SourceResult(None, f"{source}: {type(exc).__name__}: {exc}"[:300])
