"""Background workers' stops begin together at shutdown, beside the requests draining."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aiohttp import web

from incidents.runtime import EarlyStops


def worker_context(name: str, seconds: float, log: list[str]) -> object:
    async def run(app: web.Application) -> AsyncIterator[None]:
        early = EarlyStops.enable(app)

        async def stop() -> None:
            log.append(f"{name} stopping")
            await asyncio.sleep(seconds)
            log.append(f"{name} stopped")

        early.register(name, stop)
        yield
        await early.finish(name)

    return run


async def test_stops_begin_together_at_shutdown_and_teardowns_wait_for_them() -> None:
    log: list[str] = []
    app = web.Application()
    for name in ("analysis", "actuator", "notifier"):
        app.cleanup_ctx.append(worker_context(name, 0.4, log))  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    started = time.monotonic()
    await runner.cleanup()
    took = time.monotonic() - started
    assert took < 0.9  # 0.4 s together, not 1.2 s one after another
    assert log[:3] == ["analysis stopping", "actuator stopping", "notifier stopping"]
    assert sorted(log[3:]) == ["actuator stopped", "analysis stopped", "notifier stopped"]


async def test_a_stop_that_fails_does_not_keep_the_others_from_stopping() -> None:
    stopped: list[str] = []

    async def broken() -> None:
        raise RuntimeError("stuck")

    async def fine() -> None:
        stopped.append("fine")

    early = EarlyStops()
    early.register("broken", broken)
    early.register("fine", fine)
    await early._begin(web.Application())
    await early.finish("broken")
    await early.finish("fine")
    assert stopped == ["fine"]


async def test_without_a_shutdown_the_teardown_runs_the_stop_itself() -> None:
    stopped: list[str] = []

    async def stop() -> None:
        stopped.append("stopped")

    early = EarlyStops()
    early.register("worker", stop)
    await early.finish("worker")
    assert stopped == ["stopped"]
