"""The actuator against the Cloud Run emulator with the real google-cloud-run client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from actuator import RetryConfig
from collector import CloudRunClients
from incidents.db import Store
from tests.actuator.support import (
    SERVICE,
    ScriptedVerifier,
    deploy_stable_then_bad,
    emulator_clients,
    inject_failures,
    make_worker,
    operation_count,
    pending_failures,
    queue,
    state,
)
from tests.demo_apps.cloudrun_harness import Emulator, revision_id, running_emulator


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with running_emulator() as running:
        yield running


@pytest.fixture
async def clients(emulator: Emulator) -> AsyncIterator[CloudRunClients]:
    made = emulator_clients(emulator)
    yield made
    made.close()


def traffic(service: object) -> dict[str, int]:
    shares: dict[str, int] = {}
    for status in service.traffic_statuses:  # type: ignore[attr-defined]
        shares[revision_id(status.revision)] = shares.get(revision_id(status.revision), 0) + status.percent
    return shares


async def test_rollback_pins_all_traffic_and_records_what_it_replaced(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    verifier = ScriptedVerifier()
    assert await make_worker(store, clients, verifier=verifier).run_once() == action_id

    service = await emulator.get(SERVICE)
    assert traffic(service) == {deployed.stable: 100}
    assert [(t.revision, t.percent) for t in service.traffic] == [(deployed.stable, 100)]  # pinned
    incident, action, events = await state(store, incident_id, action_id)
    assert (action.status, action.phase, action.attempts) == ("succeeded", "done", 1)
    assert action.result["changed"] is True
    assert action.result["previous_traffic"] == [{"type": "LATEST", "revision": None, "percent": 100}]
    assert action.result["verified"] is True
    assert verifier.calls == [(SERVICE, [deployed.stable])]
    assert incident.status == "resolved"
    assert incident.mitigated_at is not None
    assert incident.mttr_seconds is not None and incident.mttr_seconds >= 30
    assert incident.mttr_basis == "fault_started_at (alerts_for_state)"
    assert incident.time_to_mitigate_seconds <= incident.mttr_seconds
    assert events[-5:] == [
        "status.acting",
        "action.applied",
        "status.verifying",
        "verification.passed",
        "status.resolved",
    ]


async def test_rollback_of_a_split_moves_every_share(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    await emulator.set_traffic(SERVICE, {deployed.stable: 50, deployed.bad: 50})
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    await make_worker(store, clients).run_once()
    assert traffic(await emulator.get(SERVICE)) == {deployed.stable: 100}
    _, action, _ = await state(store, incident_id, action_id)
    assert sorted((t["revision"], t["percent"]) for t in action.result["previous_traffic"]) == sorted(
        [(deployed.stable, 50), (deployed.bad, 50)]
    )


async def test_rollback_already_in_place_changes_nothing(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    await emulator.set_traffic(SERVICE, {deployed.stable: 100})
    changes = operation_count(emulator)
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    await make_worker(store, clients).run_once()
    assert operation_count(emulator) == changes
    incident, action, _ = await state(store, incident_id, action_id)
    assert action.result["changed"] is False
    assert "already 100%" in action.result["note"]
    assert incident.status == "resolved"


async def test_rollback_to_an_unready_revision_is_refused_at_execution(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    changes = operation_count(emulator)
    incident_id, action_id = await queue(
        store, SERVICE, "ROLLBACK", {"target_revision": f"{SERVICE}-99999-zzz"}
    )
    await make_worker(store, clients).run_once()
    incident, action, events = await state(store, incident_id, action_id)
    assert (action.status, incident.status) == ("failed", "failed")
    assert "does not exist" in action.error
    assert "action.failed" in events
    assert operation_count(emulator) == changes
    assert traffic(await emulator.get(SERVICE)) == {deployed.bad: 100}


async def test_scale_up_changes_service_scaling_without_a_new_revision(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    await deploy_stable_then_bad(emulator)
    revisions_before = len(await emulator.list_revisions(SERVICE))
    incident_id, action_id = await queue(store, SERVICE, "SCALE_UP", {"min_instances": 1, "max_instances": 8})
    await make_worker(store, clients).run_once()
    service = await emulator.get(SERVICE)
    assert (service.scaling.min_instance_count, service.scaling.max_instance_count) == (1, 8)
    assert len(await emulator.list_revisions(SERVICE)) == revisions_before
    incident, action, _ = await state(store, incident_id, action_id)
    assert action.result["previous_scaling"] == {"min_instances": 0, "max_instances": 0}
    assert action.result["scaling"] == {"min_instances": 1, "max_instances": 8}
    assert incident.status == "resolved"


async def test_release_sends_traffic_back_to_latest(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    await emulator.set_traffic(SERVICE, {deployed.stable: 100})
    incident_id, action_id = await queue(store, SERVICE, "RELEASE", {})
    await make_worker(store, clients).run_once()
    service = await emulator.get(SERVICE)
    assert [t.type_.name for t in service.traffic] == ["TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"]
    assert traffic(service) == {deployed.bad: 100}
    _, action, _ = await state(store, incident_id, action_id)
    assert action.result["previous_traffic"] == [
        {"type": "REVISION", "revision": deployed.stable, "percent": 100}
    ]


async def test_no_recovery_escalates_without_a_second_action(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    await make_worker(store, clients, verifier=ScriptedVerifier(recovered=False)).run_once()
    incident, action, events = await state(store, incident_id, action_id)
    assert action.status == "succeeded"
    assert action.result["verified"] is False
    assert incident.status == "escalated"
    assert "No further automatic action" in incident.status_reason
    assert incident.mttr_seconds is None
    assert events[-2:] == ["verification.failed", "status.escalated"]


async def test_a_429_is_retried_then_succeeds(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    await inject_failures(emulator, count=1, kind="429", methods=["PATCH"])
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    worker = make_worker(store, clients)
    await worker.run_once()
    incident, action, _ = await state(store, incident_id, action_id)
    assert (action.status, incident.status) == ("succeeded", "resolved")
    calls = worker.metrics.cloud_run_calls
    assert calls.labels("UpdateService", "retried")._value.get() == 1
    assert calls.labels("UpdateService", "ok")._value.get() == 1


async def test_repeated_503_gives_up_after_the_bounded_attempts(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    await inject_failures(emulator, count=10, kind="503", methods=["PATCH"])
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    await make_worker(store, clients).run_once()
    incident, action, _ = await state(store, incident_id, action_id)
    assert (action.status, incident.status) == ("failed", "failed")
    assert "after 3 attempts" in action.error
    assert "503" in action.error
    assert traffic(await emulator.get(SERVICE)) == {deployed.bad: 100}
    (rule,) = await pending_failures(emulator)
    assert rule["remaining"] == 7  # three attempts, then Remediator gave up


async def test_a_hanging_api_times_out_and_is_retried(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    await inject_failures(emulator, count=1, kind="hang", hang_seconds=3, methods=["PATCH"])
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    retry = RetryConfig(attempts=3, initial_delay=0.01, call_timeout=0.5, operation_timeout=10.0)
    await make_worker(store, clients, retry=retry).run_once()
    incident, action, _ = await state(store, incident_id, action_id)
    assert (action.status, incident.status) == ("succeeded", "resolved")
    assert traffic(await emulator.get(SERVICE)) == {deployed.stable: 100}


async def test_a_missing_service_fails_fast_with_the_api_message(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    incident_id, action_id = await queue(
        store, "no-such-service", "ROLLBACK", {"target_revision": "x-00001-abc"}
    )
    worker = make_worker(store, clients)
    await worker.run_once()
    incident, action, _ = await state(store, incident_id, action_id)
    assert (action.status, incident.status) == ("failed", "failed")
    assert action.error.startswith("GetService failed: 404")
    assert worker.metrics.cloud_run_calls.labels("GetService", "retried")._value.get() == 0
