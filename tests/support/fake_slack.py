"""The local fake Slack (`remediator.fakeslack`, which the demo uses too) running for a test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from remediator.fakeslack import FakeMessage, FakeSlack, render_blocks, sign

BOT_TOKEN = "xoxb-test-token"
SIGNING_SECRET = "test-signing-secret"
CHANNEL = "#incidents"

__all__ = [
    "BOT_TOKEN",
    "CHANNEL",
    "SIGNING_SECRET",
    "FakeMessage",
    "FakeSlack",
    "render_blocks",
    "running_fake_slack",
    "sign",
]


@asynccontextmanager
async def running_fake_slack(
    *, groups: dict[str, list[str]] | None = None, clock: Callable[[], float] | None = None, **kwargs: Any
) -> AsyncIterator[FakeSlack]:
    fake = FakeSlack(
        token=BOT_TOKEN,
        signing_secret=SIGNING_SECRET,
        groups=groups,
        **({"clock": clock} if clock else {}),
        **kwargs,
    )
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
