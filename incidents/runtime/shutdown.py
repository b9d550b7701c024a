"""Stopping background work inside Cloud Run's shutdown budget.

Cloud Run gives a container about 10 s from SIGTERM to SIGKILL. aiohttp, on SIGTERM, stops
listening, runs `on_shutdown`, waits up to `shutdown_timeout` for the requests in flight, and only
then runs each `cleanup_ctx` teardown, one after another. Background workers that stop in their
teardown would stop after the requests, and after each other: their times would add up.

    early = EarlyStops.enable(app)          # at build time: one on_shutdown hook for them all
    early.register("actuator", worker.stop)  # in a cleanup_ctx, once the worker runs
    await early.finish("actuator")           # in its teardown: the stop begun at on_shutdown

At `on_shutdown` every registered stop begins at once, beside the others and beside the requests
draining, so the whole shutdown takes about as long as the slowest of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

Stop = Callable[[], Awaitable[None]]


class EarlyStops:
    def __init__(self) -> None:
        self._stops: dict[str, Stop] = {}
        self._begun: dict[str, asyncio.Task[None]] = {}

    @classmethod
    def enable(cls, app: web.Application) -> EarlyStops:
        """The app's EarlyStops, created (with its on_shutdown hook) the first time."""
        if EARLY_STOPS not in app:
            early = cls()
            app[EARLY_STOPS] = early
            app.on_shutdown.append(early._begin)
        return app[EARLY_STOPS]

    def register(self, name: str, stop: Stop) -> None:
        self._stops[name] = stop

    async def _begin(self, app: web.Application) -> None:
        for name, stop in self._stops.items():
            if name not in self._begun:
                self._begun[name] = asyncio.create_task(_logged(name, stop), name=f"stop-{name}")

    async def finish(self, name: str) -> None:
        """Wait for `name`'s stop, begun at on_shutdown (or run it now, if shutdown never began)."""
        stop = self._stops.pop(name, None)
        task = self._begun.pop(name, None)
        if task is not None:
            await task
        elif stop is not None:
            await _logged(name, stop)


async def _logged(name: str, stop: Stop) -> None:
    try:
        await stop()
    except Exception:  # one worker failing to stop cleanly must not keep the others from stopping
        log.exception("stopping %s failed", name)


EARLY_STOPS: web.AppKey[EarlyStops] = web.AppKey("early_stops", EarlyStops)
