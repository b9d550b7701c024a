"""A real `remediator serve` holding an action, stopped the two ways a container stops.

SIGTERM (Cloud Run's scale-in or redeploy): it stops taking work, hands its lease back and exits
well within Cloud Run's 10 s, so another replica continues the action at once. kill -9 (an OOM, a
lost node): nothing of it runs on, and a worker waiting beside it takes the action over within 10 s
of the kill, with the default lease.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from incidents import Store
from tests.actuator.support import (
    SERVICE,
    deploy_stable_then_bad,
    emulator_clients,
    make_worker,
    operation_count,
    queue,
    state,
)
from tests.demo_apps.cloudrun_harness import Emulator, running_emulator
from tests.support.real_parts import free_port

pytestmark = pytest.mark.integration

# Cloud Run's budget is about 10 s from SIGTERM to SIGKILL; the stop must fit with room to spare.
STOP_BUDGET_SECONDS = 8.0
TAKEOVER_BOUND_SECONDS = 10.0


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with running_emulator() as running:
        yield running


def prometheus_app(healthy: asyncio.Event) -> web.Application:
    async def query(request: web.Request) -> web.Response:
        promql = request.query["query"]
        if "histogram_quantile" in promql:
            value = "0.08"
        elif "5.." in promql:
            value = "0" if healthy.is_set() else "5"
        else:
            value = "20"
        result = [{"metric": {}, "value": [0, value]}]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    return app


def tail(log_path: Path) -> str:
    return log_path.read_text()[-3000:]


@asynccontextmanager
async def serving(env: dict[str, str], log_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "remediator.cli",
            "serve",
            "--port",
            str(free_port()),
            env={**os.environ, **env},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log_file,  # a file, not a pipe nobody drains
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def until_verifying(
    store: Store, incident_id: int, action_id: int, process: asyncio.subprocess.Process, log_path: Path
) -> None:
    async with asyncio.timeout(60):
        while True:
            _, action, _ = await state(store, incident_id, action_id)
            if action.phase == "verifying":
                return
            if process.returncode is not None:
                pytest.fail(f"remediator serve exited early: {tail(log_path)}")
            await asyncio.sleep(0.1)


@pytest.fixture
async def serve_env(
    pg_store: Store,
    postgres_url: str,
    emulator: Emulator,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> tuple[dict[str, str], asyncio.Event]:
    healthy = asyncio.Event()
    prometheus: Any = await aiohttp_server(prometheus_app(healthy))
    env = {
        "DATABASE_URL": postgres_url,
        "CLOUD_RUN_ENDPOINT": emulator.base_url,
        "PROMETHEUS_URL": str(prometheus.make_url("")).rstrip("/"),
        "VERIFY_INTERVAL_SECONDS": "0.2",
        "VERIFY_TIMEOUT_SECONDS": "120",
        "REMEDIATOR_LOG_FORMAT": "json",
    }
    return env, healthy


async def test_sigterm_hands_the_lease_back_and_exits_within_the_budget(
    pg_store: Store, emulator: Emulator, serve_env: tuple[dict[str, str], asyncio.Event], tmp_path: Path
) -> None:
    env, healthy = serve_env
    deployed = await deploy_stable_then_bad(emulator)
    incident_id, action_id = await queue(pg_store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    log_path = tmp_path / "serve.log"
    clients = emulator_clients(emulator)
    # Another replica, idle with a 30 s poll: its NOTIFY wake-up is what makes it continue at once.
    other = make_worker(pg_store, clients, owner="other-replica", poll_interval=30.0)
    try:
        async with serving(env, log_path) as process:
            await until_verifying(pg_store, incident_id, action_id, process, log_path)
            await other.start()
            await asyncio.sleep(0.5)
            changes = operation_count(emulator)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(STOP_BUDGET_SECONDS + 5):
                code = await process.wait()
            exited_after = time.monotonic() - started
            healthy.set()
            async with asyncio.timeout(30):
                while (await state(pg_store, incident_id, action_id))[1].attempts < 2:
                    await asyncio.sleep(0.05)
            taken_over_after = time.monotonic() - started
            async with asyncio.timeout(30):
                while (await state(pg_store, incident_id, action_id))[0].status != "resolved":
                    await asyncio.sleep(0.1)
    finally:
        await other.stop()
        clients.close()
    print(f"SIGTERM to exit: {exited_after:.2f}s; to the other replica's takeover: {taken_over_after:.2f}s")
    assert code == 0, tail(log_path)
    assert exited_after < STOP_BUDGET_SECONDS, tail(log_path)
    # Its lease had 6 s or more left: only the hand-back (and its NOTIFY) explains a takeover this soon.
    assert taken_over_after < exited_after + 2.0
    incident, action, events = await state(pg_store, incident_id, action_id)
    assert (incident.status, action.attempts) == ("resolved", 2)
    assert operation_count(emulator) == changes  # continued from its phase, not applied again
    assert events.index("action.handed_back") < events.index("action.takeover")


async def test_after_kill_9_a_waiting_worker_takes_the_action_over_within_ten_seconds(
    pg_store: Store, emulator: Emulator, serve_env: tuple[dict[str, str], asyncio.Event], tmp_path: Path
) -> None:
    """With the default lease (8 s, renewed every 2 s): the takeover starts when the lease ends."""
    env, healthy = serve_env
    deployed = await deploy_stable_then_bad(emulator)
    incident_id, action_id = await queue(pg_store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    log_path = tmp_path / "serve.log"
    clients = emulator_clients(emulator)
    # The poll is the default's 5 s: only waking at the dead lease's end explains a quick takeover.
    waiting = make_worker(pg_store, clients, owner="waiting", poll_interval=5.0)
    try:
        async with serving(env, log_path) as process:
            await until_verifying(pg_store, incident_id, action_id, process, log_path)
            await waiting.start()  # idle beside it: the action is held
            await asyncio.sleep(0.5)
            changes = operation_count(emulator)
            process.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await process.wait()
            healthy.set()
            async with asyncio.timeout(TAKEOVER_BOUND_SECONDS + 5):
                while True:
                    _, action, _ = await state(pg_store, incident_id, action_id)
                    if action.attempts == 2:
                        break
                    await asyncio.sleep(0.05)
            took = time.monotonic() - killed
            async with asyncio.timeout(30):
                while (await state(pg_store, incident_id, action_id))[0].status != "resolved":
                    await asyncio.sleep(0.1)
    finally:
        await waiting.stop()
        clients.close()
    print(f"kill -9 to takeover: {took:.2f}s")
    assert took < TAKEOVER_BOUND_SECONDS
    assert operation_count(emulator) == changes
