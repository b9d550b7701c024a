"""Leases with fencing: a fresh token per claim, renewals that ride out a store blip, work that stops
only when the lease cannot be kept, takeovers from the recorded phase, the database's clock, and
leases handed back on stop. Every test runs on SQLite and PostgreSQL against the Cloud Run emulator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from google.cloud import run_v2

from actuator import ActionWorker, ActuatorConfig, RecoveryVerifier, VerificationResult, VerifyConfig
from collector import CloudRunClients, HealthThresholds, PrometheusSource
from incidents import ActionRepository, Store, StoreUnavailable, database_now, utcnow
from tests.actuator.support import (
    SERVICE,
    deploy_stable_then_bad,
    emulator_clients,
    expire_lease,
    inject_failures,
    make_worker,
    operation_count,
    queue,
    state,
)
from tests.demo_apps.cloudrun_harness import Emulator, running_emulator


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with running_emulator() as running:
        yield running


@pytest.fixture
async def clients(emulator: Emulator) -> AsyncIterator[CloudRunClients]:
    made = emulator_clients(emulator)
    yield made
    made.close()


@dataclass
class HeldVerifier:
    """Verification that lasts until the test lets it end (or `seconds` pass)."""

    recovered: bool = True
    seconds: float | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def verify(
        self, service: str, serving: Any, *, deadline: datetime, on_check: Any = None
    ) -> VerificationResult:
        await serving()
        self.started.set()
        if self.seconds is None:
            await self.release.wait()
        else:
            await asyncio.sleep(self.seconds)
        reason = "held healthy" if self.recovered else "held unhealthy"
        return VerificationResult(recovered=self.recovered, checks=1, last=None, reason=reason)


class StoreOutage:
    """Makes the store unavailable on demand, as a database restart does to every session."""

    def __init__(self, store: Store) -> None:
        self.down = False
        self._session = store.session
        store.session = self.session  # type: ignore[method-assign]

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Any]:
        if self.down:
            raise StoreUnavailable("incident store unavailable: connection refused (test outage)")
        async with self._session() as session:
            yield session


async def until(predicate: Callable[[], Awaitable[bool]], *, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s")
        await asyncio.sleep(0.02)


async def in_phase(store: Store, action_id: int, phase: str) -> bool:
    async with store.session() as session:
        return (await ActionRepository(session).get(action_id)).phase == phase


def lease_events(worker: ActionWorker, event: str) -> float:
    return worker.metrics.lease_events.labels(event)._value.get()


async def test_a_fresh_token_per_claim_fences_off_the_earlier_claim_of_the_same_worker_name(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    """The same process (same name) claiming again after its lease lapsed holds a new token: what
    its earlier claim still does can no longer touch the action or the incident."""
    deployed = await deploy_stable_then_bad(emulator)
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    stale = HeldVerifier(recovered=False)
    first = make_worker(store, clients, owner="actuator-a", verifier=stale, heartbeat_interval=3600)
    earlier = asyncio.create_task(first.run_once())
    await asyncio.wait_for(stale.started.wait(), 10)
    async with store.session() as session:
        first_token = (await ActionRepository(session).get(action_id)).lease_owner
    await expire_lease(store, action_id)

    live = HeldVerifier(recovered=True)
    again = make_worker(store, clients, owner="actuator-a", verifier=live)  # the same name, a new claim
    current = asyncio.create_task(again.run_once())
    await asyncio.wait_for(live.started.wait(), 10)
    async with store.session() as session:
        second_token = (await ActionRepository(session).get(action_id)).lease_owner

    stale.release.set()  # the earlier claim wakes up, unhealthy, and tries to escalate
    await asyncio.wait_for(earlier, 10)
    incident, action, events = await state(store, incident_id, action_id)
    assert (incident.status, action.status, action.lease_owner) == ("verifying", "running", second_token)
    assert "verification.failed" not in events and "status.escalated" not in events

    live.release.set()
    assert await asyncio.wait_for(current, 10) == action_id
    incident, action, events = await state(store, incident_id, action_id)
    assert first_token is not None and first_token.startswith("actuator-a/")
    assert second_token is not None and second_token.startswith("actuator-a/") and second_token != first_token
    assert (incident.status, action.status, action.attempts) == ("resolved", "succeeded", 2)
    assert action.result["verified"] is True
    assert events.count("status.resolved") == 1
    assert operation_count(emulator) == 3  # create, the bad deploy, one rollback


async def test_the_heartbeat_rides_out_a_store_outage_shorter_than_the_lease(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    outage = StoreOutage(store)
    verifier = HeldVerifier()
    worker = make_worker(
        store, clients, verifier=verifier, lease=timedelta(seconds=4), heartbeat_interval=0.2
    )
    running = asyncio.create_task(worker.run_once())
    await asyncio.wait_for(verifier.started.wait(), 10)
    outage.down = True
    await asyncio.sleep(1.5)  # well inside the lease: renewals fail and are retried
    outage.down = False
    await asyncio.sleep(0.6)  # a renewal gets through
    verifier.release.set()
    assert await asyncio.wait_for(running, 10) == action_id
    incident, action, events = await state(store, incident_id, action_id)
    assert (incident.status, action.status, action.attempts) == ("resolved", "succeeded", 1)
    assert "action.takeover" not in events
    assert lease_events(worker, "renewal_failed") >= 3
    assert lease_events(worker, "lost") == 0


async def test_a_store_outage_past_the_lease_stops_the_work_and_the_takeover_verifies_without_reapplying(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    outage = StoreOutage(store)
    verifier = HeldVerifier()
    lease = timedelta(seconds=1.5)
    worker = make_worker(store, clients, verifier=verifier, lease=lease, heartbeat_interval=0.3)
    running = asyncio.create_task(worker.run_once())
    await asyncio.wait_for(verifier.started.wait(), 10)
    changes = operation_count(emulator)
    outage.down = True
    started = time.monotonic()
    await asyncio.wait_for(running, 10)  # the work stopped on its own: no exception, nothing recorded
    stopped_after = time.monotonic() - started
    outage.down = False
    assert stopped_after < lease.total_seconds() + 0.5
    assert lease_events(worker, "lost") == 1
    _, action, _ = await state(store, incident_id, action_id)
    assert (action.status, action.phase, action.result["changed"]) == ("running", "verifying", True)

    await expire_lease(store, action_id)
    successor = make_worker(store, clients, owner="successor")
    assert await successor.run_once() == action_id
    incident, action, events = await state(store, incident_id, action_id)
    assert (incident.status, action.status, action.attempts) == ("resolved", "succeeded", 2)
    assert action.result["changed"] is True  # the first worker's record of its change survives
    assert operation_count(emulator) == changes  # verified, not applied again
    assert events.count("action.applied") == 1
    assert "action.takeover" in events


async def test_an_idle_worker_takes_over_when_the_lease_ends_not_at_its_next_poll(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    async with store.session() as session:  # a worker that then died: its lease ends in 1 s
        claimed = await ActionRepository(session).claim_next(
            owner="dead/0", now=await database_now(session), lease=timedelta(seconds=1)
        )
        assert claimed is not None and claimed.id == action_id
    worker = make_worker(store, clients, poll_interval=30.0)
    started = time.monotonic()
    await worker.start()
    try:

        async def taken_over() -> bool:
            _, action, _ = await state(store, incident_id, action_id)
            return bool(action.attempts == 2)

        await until(taken_over, within=5.0)
        took = time.monotonic() - started
    finally:
        await worker.stop()
    assert took < 2.0  # the lease's second, and a moment: not the 30 s poll


async def test_leases_are_compared_on_the_database_clock_not_the_workers(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    _, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    async with store.session() as session:
        assert await ActionRepository(session).claim_next(
            owner="alive/0", now=await database_now(session), lease=timedelta(seconds=30)
        )
    hour_ahead = make_worker(store, clients, clock=lambda: utcnow() + timedelta(hours=1))
    assert await hour_ahead.run_once() is None  # its clock says the lease ended long ago; it did not
    async with store.session() as session:
        action = await ActionRepository(session).get(action_id)
    assert (action.lease_owner, action.attempts) == ("alive/0", 1)


async def test_stop_hands_the_lease_back_and_another_worker_continues_at_once(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    verifier = HeldVerifier()
    stopping = make_worker(store, clients, owner="stopping", verifier=verifier)
    await stopping.start()
    await asyncio.wait_for(verifier.started.wait(), 10)
    changes = operation_count(emulator)
    started = time.monotonic()
    await stopping.stop()
    assert time.monotonic() - started < 1.0  # verification only reads: it stops at once
    async with store.session() as session:
        action = await ActionRepository(session).get(action_id)
        now = await database_now(session)
    assert (action.status, action.phase) == ("running", "verifying")
    assert action.lease_expires_at is not None and action.lease_expires_at <= now
    assert lease_events(stopping, "handed_back") == 1

    successor = make_worker(store, clients, owner="successor")
    assert await successor.run_once() == action_id  # at once: no lease to wait out
    incident, action, events = await state(store, incident_id, action_id)
    assert (incident.status, action.attempts) == ("resolved", 2)
    assert operation_count(emulator) == changes
    assert events.index("action.handed_back") < events.index("action.takeover")


async def test_a_lease_handed_back_wakes_an_idle_worker_at_once(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    verifier = HeldVerifier()
    stopping = make_worker(store, clients, owner="stopping", verifier=verifier)
    await stopping.start()
    await asyncio.wait_for(verifier.started.wait(), 10)
    # Idle beside it, with a 30 s poll and the held lease's 30 s ahead: only a wake-up explains a
    # quick takeover.
    idle = make_worker(store, clients, owner="idle", poll_interval=30.0)
    await idle.start()
    try:
        await asyncio.sleep(0.3)
        await stopping.stop()
        stopped = time.monotonic()

        async def taken_over() -> bool:
            return bool((await state(store, incident_id, action_id))[1].attempts == 2)

        await until(taken_over, within=5.0)
        assert time.monotonic() - stopped < 2.0
    finally:
        await idle.stop()


def slowed_update(worker: ActionWorker, seconds: float) -> asyncio.Event:
    """The worker's UpdateService takes `seconds` (a slow Cloud Run); the event marks it sent."""
    sent = asyncio.Event()
    real_set_traffic = worker.changer.set_traffic

    async def slow(
        service: str, traffic: list[run_v2.TrafficTarget], *, etag: str | None = None
    ) -> run_v2.Service:
        sent.set()
        await asyncio.sleep(seconds)
        return await real_set_traffic(service, traffic, etag=etag)

    worker.changer.set_traffic = slow  # type: ignore[method-assign]
    return sent


async def test_stop_lets_an_update_in_flight_land_then_hands_back_without_a_second_change(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    stopping = make_worker(store, clients, owner="stopping", verifier=HeldVerifier(), shutdown_grace=5.0)
    sent = slowed_update(stopping, 0.5)
    changes = operation_count(emulator)
    await stopping.start()
    await asyncio.wait_for(sent.wait(), 10)
    started = time.monotonic()
    await stopping.stop()
    assert time.monotonic() - started < 3.0
    assert operation_count(emulator) == changes + 1  # the update landed before the worker stopped
    assert lease_events(stopping, "handed_back") == 1

    assert await make_worker(store, clients, owner="successor").run_once() == action_id
    incident, _, _ = await state(store, incident_id, action_id)
    assert incident.status == "resolved"
    assert operation_count(emulator) == changes + 1  # the successor read it in place: no second change


async def test_stop_does_not_hand_back_a_lease_whose_update_may_still_land(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    _, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    stopping = make_worker(store, clients, owner="stopping", shutdown_grace=0.2)
    sent = slowed_update(stopping, 1.0)
    await stopping.start()
    await asyncio.wait_for(sent.wait(), 10)
    started = time.monotonic()
    await stopping.stop()
    assert time.monotonic() - started < 1.0  # the grace, not the update
    async with store.session() as session:
        action = await ActionRepository(session).get(action_id)
        now = await database_now(session)
    # The lease lapses on its own: by then the update has landed (or its process is gone).
    assert action.lease_expires_at is not None and action.lease_expires_at > now
    assert lease_events(stopping, "handed_back") == 0


class CrashingVerifier:
    async def verify(self, service: str, serving: Any, **_: Any) -> VerificationResult:
        raise RuntimeError("a bug in verification")


async def test_a_crash_during_verification_escalates_the_incident_instead_of_leaving_it_verifying(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    await make_worker(store, clients, verifier=CrashingVerifier()).run_once()
    incident, action, events = await state(store, incident_id, action_id)
    assert action.status == "failed"
    assert incident.status == "escalated"
    assert "is in place but its verification failed" in incident.status_reason
    assert events[-2:] == ["action.failed", "status.escalated"]


def healthy_prometheus() -> web.Application:
    async def query(request: web.Request) -> web.Response:
        promql = request.query["query"]
        value = "0.08" if "histogram_quantile" in promql else "0" if "5.." in promql else "20"
        result = [{"metric": {}, "value": [0, value]}]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    return app


@pytest.mark.parametrize(("failed_reads", "outcome"), [(3, "resolved"), (1_000_000, "escalated")])
async def test_cloud_run_503_while_verifying_counts_as_unhealthy_checks_never_a_stuck_incident(
    store: Store,
    emulator: Emulator,
    clients: CloudRunClients,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    failed_reads: int,
    outcome: str,
) -> None:
    """GetService answers 503 from the moment the change lands: for one check's retries (then
    recovery is verified), or until the deadline (then the incident escalates, at the deadline)."""
    deployed = await deploy_stable_then_bad(emulator)
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    prometheus: TestServer = await aiohttp_server(healthy_prometheus())
    source = PrometheusSource(str(prometheus.make_url("")).rstrip("/"), timeout=1.0)
    verify = VerifyConfig(consecutive_checks=2, interval=0.1, window_seconds=10, timeout=timedelta(seconds=2))
    verifier = RecoveryVerifier(source, thresholds=HealthThresholds(), config=verify)
    worker = make_worker(store, clients, verifier=verifier, verify=verify)
    real_set_traffic = worker.changer.set_traffic

    async def then_outage(
        service: str, traffic: list[run_v2.TrafficTarget], *, etag: str | None = None
    ) -> run_v2.Service:
        updated = await real_set_traffic(service, traffic, etag=etag)
        await inject_failures(
            emulator, kind="503", count=failed_reads, methods=["GET"], paths=[f"/services/{SERVICE}"]
        )
        return updated

    worker.changer.set_traffic = then_outage  # type: ignore[method-assign]
    started = time.monotonic()
    try:
        await worker.run_once()
    finally:
        source.close()
    incident, action, events = await state(store, incident_id, action_id)
    assert incident.status == outcome
    assert action.status == "succeeded"
    assert time.monotonic() - started < 8.0
    if outcome == "escalated":
        assert action.result["verified"] is False
        assert "could not check: GetService failed after 3 attempts: 503" in incident.status_reason
        assert events[-2:] == ["verification.failed", "status.escalated"]


def test_the_heartbeat_is_a_quarter_of_the_lease_at_most_two_seconds() -> None:
    assert ActuatorConfig().lease == timedelta(seconds=8)
    assert ActuatorConfig().heartbeat == 2.0
    assert ActuatorConfig(lease=timedelta(seconds=4)).heartbeat == 1.0
    assert ActuatorConfig(lease=timedelta(seconds=4), heartbeat_interval=0.5).heartbeat == 0.5
