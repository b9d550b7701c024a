"""Updates carry the etag they were computed from: a late apply never overwrites a newer change.

Against the Cloud Run emulator, which refuses a stale etag as Cloud Run does (ABORTED, 409).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry

from actuator import ActuatorMetrics, CloudRunChanger, RetryConfig
from actuator.cloudrun import pinned_to
from actuator.exceptions import ServiceChanged
from collector import CloudRunClients, traffic_by_revision
from incidents import Store
from tests.actuator.support import (
    FAST_RETRY,
    SERVICE,
    deploy_stable_then_bad,
    emulator_clients,
    inject_failures,
    make_worker,
    operation_count,
    pending_failures,
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


def changer(clients: CloudRunClients, retry: RetryConfig = FAST_RETRY) -> CloudRunChanger:
    return CloudRunChanger(clients, retry=retry, metrics=ActuatorMetrics(CollectorRegistry()))


async def test_an_update_computed_from_a_service_that_changed_since_is_refused(
    emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    cloud_run = changer(clients)
    read = await cloud_run.get_service(SERVICE)
    # Someone splits the traffic after Remediator read the service.
    await emulator.set_traffic(SERVICE, {deployed.stable: 50, deployed.bad: 50})
    changes = operation_count(emulator)
    with pytest.raises(ServiceChanged) as refused:
        await cloud_run.set_traffic(SERVICE, pinned_to(deployed.stable, current=read), etag=read.etag)
    assert f"{SERVICE} changed since it was read" in refused.value.message
    assert "409" in refused.value.message and refused.value.code == 409
    with pytest.raises(ServiceChanged):
        await cloud_run.set_scaling(SERVICE, min_instances=1, max_instances=5, etag=read.etag)
    assert operation_count(emulator) == changes
    assert traffic_by_revision(await emulator.get(SERVICE)) == {deployed.stable: 50, deployed.bad: 50}

    current = await cloud_run.get_service(SERVICE)
    updated = await cloud_run.set_traffic(
        SERVICE, pinned_to(deployed.stable, current=current), etag=current.etag
    )
    assert traffic_by_revision(updated) == {deployed.stable: 100}


class FirstAnswerLost:
    """The Admin API client, except that the first UpdateService is carried out by Cloud Run and its
    answer never arrives (a timeout at the client): what makes a retry of a landed update."""

    def __init__(self, services: Any) -> None:
        self.services = services
        self.lost = 0

    def update_service(self, **kwargs: Any) -> Any:
        operation = self.services.update_service(**kwargs)
        if self.lost:
            return operation
        operation.result(timeout=10)
        self.lost += 1
        raise requests.ReadTimeout("read timed out")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.services, name)


async def test_a_retry_refused_because_its_own_first_attempt_landed_is_a_success(
    emulator: Emulator, clients: CloudRunClients
) -> None:
    """The retry carries the same etag, now stale (the first attempt moved it on), and is refused;
    the re-read finds the service as the update wants it: done, once."""
    deployed = await deploy_stable_then_bad(emulator)
    losing = FirstAnswerLost(clients.services)
    cloud_run = changer(replace(clients, services=losing))
    read = await cloud_run.get_service(SERVICE)
    changes = operation_count(emulator)
    updated = await cloud_run.set_traffic(SERVICE, pinned_to(deployed.stable, current=read), etag=read.etag)
    assert losing.lost == 1
    assert traffic_by_revision(updated) == {deployed.stable: 100}
    assert operation_count(emulator) == changes + 1  # one change, not two
    calls = cloud_run.metrics.cloud_run_calls
    assert calls.labels("UpdateService", "retried")._value.get() == 1
    assert calls.labels("UpdateService", "failed")._value.get() == 1  # the refused retry


async def test_a_rollback_whose_service_changed_before_it_landed_fails_and_keeps_the_newer_change(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    """The actuator read the service, then its UpdateService was slow to arrive; meanwhile a human
    split the traffic. The late rollback is refused instead of overwriting the split, and the
    incident fails with the reason (a human must look; nothing is retried on a changed service)."""
    deployed = await deploy_stable_then_bad(emulator)
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    await inject_failures(
        emulator, kind="hang", hang_seconds=1.0, count=1, methods=["PATCH"], paths=[f"/services/{SERVICE}"]
    )
    work = asyncio.create_task(make_worker(store, clients).run_once())
    async with asyncio.timeout(10):
        while await pending_failures(emulator):  # the worker's UpdateService is in flight
            await asyncio.sleep(0.02)
    await emulator.set_traffic(SERVICE, {deployed.stable: 50, deployed.bad: 50})
    assert await work == action_id
    incident, action, events = await state(store, incident_id, action_id)
    assert (action.status, incident.status) == ("failed", "failed")
    assert f"{SERVICE} changed since it was read" in action.error
    assert "action.failed" in events
    assert traffic_by_revision(await emulator.get(SERVICE)) == {deployed.stable: 50, deployed.bad: 50}
