"""Exactly once: concurrent workers, one action per service in flight, and recovery from a dead worker."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from google.cloud import run_v2

from incidents import ActionRepository, RollbackAction, Store
from tests.actuator.support import (
    SERVICE,
    deploy_stable_then_bad,
    emulator_clients,
    expire_lease,
    make_worker,
    operation_count,
    queue,
    state,
)
from tests.demo_apps.cloudrun_harness import Emulator, running_emulator
from tests.support.real_parts import free_port

Condition = run_v2.Condition


class InMemoryChanger:
    """A Cloud Run stand-in that records when each change runs, to catch overlap and repeats."""

    def __init__(self) -> None:
        self.in_flight: Counter[str] = Counter()
        self.overlaps: list[str] = []
        self.changes: list[tuple[str, str]] = []

    async def get_service(self, service: str) -> run_v2.Service:
        return run_v2.Service(
            name=service,
            traffic=[run_v2.TrafficTarget(type_=run_v2.TrafficTargetAllocationType(1), percent=100)],
            traffic_statuses=[run_v2.TrafficTargetStatus(revision=f"{service}-00002-bad", percent=100)],
            latest_ready_revision=f"{service}-00002-bad",
        )

    async def get_revision(self, service: str, revision: str) -> run_v2.Revision:
        ready = Condition(type_="Ready", state=Condition.State.CONDITION_SUCCEEDED)
        return run_v2.Revision(name=revision, conditions=[ready])

    async def set_traffic(
        self, service: str, traffic: list[run_v2.TrafficTarget], *, etag: str | None = None
    ) -> run_v2.Service:
        self.in_flight[service] += 1
        if self.in_flight[service] > 1:
            self.overlaps.append(service)
        self.changes.append((service, traffic[0].revision))
        await asyncio.sleep(0.02)
        self.in_flight[service] -= 1
        return run_v2.Service(
            name=service,
            traffic=traffic,
            traffic_statuses=[run_v2.TrafficTargetStatus(revision=traffic[0].revision, percent=100)],
        )


async def test_two_workers_run_every_action_exactly_once_one_per_service(pg_store: Store) -> None:
    queued = []
    for number in range(24):
        service = f"svc-{number % 6}"
        async with pg_store.session() as session:
            action = await ActionRepository(session).enqueue(
                service=service,
                request=RollbackAction(target_revision=f"{service}-00001-ok"),
                incident_id=None,
                manual=False,
                requested_by="test",
            )
            queued.append(action.id)
    changer = InMemoryChanger()
    workers = [make_worker(pg_store, clients=None, owner=f"worker-{n}") for n in range(2)]  # type: ignore[arg-type]
    for worker in workers:
        worker.changer = changer  # type: ignore[assignment]

    async def drain(worker: Any) -> None:
        while await worker.run_once() is not None:
            pass

    await asyncio.gather(*(drain(w) for w in workers), *(drain(w) for w in workers))
    assert changer.overlaps == []
    assert len(changer.changes) == 24
    async with pg_store.session() as session:
        actions = [await ActionRepository(session).get(action_id) for action_id in queued]
    assert [(a.status, a.attempts) for a in actions] == [("succeeded", 1)] * 24


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with running_emulator() as running:
        yield running


async def test_worker_dying_after_the_change_is_continued_without_a_second_change(
    store: Store, emulator: Emulator
) -> None:
    """The change is made, then the worker dies before recording it: the next one re-reads Cloud Run."""
    deployed = await deploy_stable_then_bad(emulator)
    clients = emulator_clients(emulator)
    try:
        incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
        doomed = make_worker(store, clients, lease=timedelta(seconds=5), owner="doomed")
        real_set_traffic = doomed.changer.set_traffic

        async def change_then_die(
            service: str, traffic: list[run_v2.TrafficTarget], *, etag: str | None = None
        ) -> run_v2.Service:
            await real_set_traffic(service, traffic, etag=etag)
            raise asyncio.CancelledError  # the process is gone between the PATCH and its record

        doomed.changer.set_traffic = change_then_die  # type: ignore[method-assign]
        changes_before = operation_count(emulator)
        with pytest.raises(asyncio.CancelledError):
            await doomed.run_once()
        assert operation_count(emulator) == changes_before + 1
        _, action, _ = await state(store, incident_id, action_id)
        assert (action.status, action.phase) == ("running", "pending")
        assert action.lease_owner.startswith("doomed/")  # the worker's name and a fresh token

        await expire_lease(store, action_id)
        successor = make_worker(store, clients, owner="successor")
        assert await successor.run_once() == action_id
        assert operation_count(emulator) == changes_before + 1  # not applied twice
        incident, action, events = await state(store, incident_id, action_id)
        assert (action.status, action.attempts) == ("succeeded", 2)
        assert action.result["changed"] is False
        assert action.result["previous_traffic"] == [{"type": "LATEST", "revision": None, "percent": 100}]
        assert incident.status == "resolved"
        assert events.count("status.resolved") == 1
        assert "action.takeover" in events
    finally:
        clients.close()


def _fake_prometheus_app(healthy: asyncio.Event) -> web.Application:
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


async def test_killed_actuator_process_is_finished_by_a_new_worker_exactly_once(
    pg_store: Store, postgres_url: str, emulator: Emulator, aiohttp_server: Any, tmp_path: Any
) -> None:
    """SIGKILL a real `remediator actuator` after its PATCH, during verification; a new worker finishes."""
    deployed = await deploy_stable_then_bad(emulator)
    healthy = asyncio.Event()
    prometheus: TestServer = await aiohttp_server(_fake_prometheus_app(healthy))
    incident_id, action_id = await queue(pg_store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    changes_before = operation_count(emulator)
    env = {
        **os.environ,
        "DATABASE_URL": postgres_url,
        "CLOUD_RUN_ENDPOINT": emulator.base_url,
        "PROMETHEUS_URL": str(prometheus.make_url("")).rstrip("/"),
        "ACTUATOR_LEASE_SECONDS": "3",
        "VERIFY_INTERVAL_SECONDS": "0.2",
        "VERIFY_TIMEOUT_SECONDS": "120",
        "REMEDIATOR_LOG_FORMAT": "json",
    }
    log_path = tmp_path / "actuator.log"
    log_file = log_path.open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "remediator.cli",
        "actuator",
        "--port",
        str(free_port()),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log_file,  # a file, not a pipe nobody drains
    )
    try:
        async with asyncio.timeout(30):
            while True:
                _, action, _ = await state(pg_store, incident_id, action_id)
                if action.phase == "verifying":
                    break
                if process.returncode is not None:
                    pytest.fail(f"actuator exited early: {log_path.read_text()[-2000:]}")
                await asyncio.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        async with asyncio.timeout(10):
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log_file.close()
    assert operation_count(emulator) == changes_before + 1
    healthy.set()

    clients = emulator_clients(emulator)
    try:
        await expire_lease(pg_store, action_id)
        successor = make_worker(pg_store, clients, owner="successor")
        async with asyncio.timeout(30):
            assert await successor.run_once() == action_id
    finally:
        clients.close()
    incident, action, events = await state(pg_store, incident_id, action_id)
    assert operation_count(emulator) == changes_before + 1  # the change was not applied twice
    assert (action.status, action.attempts) == ("succeeded", 2)
    assert action.result["changed"] is True  # the first worker's record of its change survives
    assert incident.status == "resolved"
    assert events.count("status.resolved") == 1
    assert events.count("action.applied") == 1
