"""The actuator against the Cloud Run emulator with the real google-cloud-run client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from google.cloud import run_v2

from actuator import RetryConfig
from collector import CloudRunClients
from incidents import ActionRepository, Store
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

TrafficType = run_v2.TrafficTargetAllocationType


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


@pytest.mark.parametrize(
    ("stored_type", "stored_params", "reason"),
    [
        ("ROLLBACK", {"decision_engine": "rules"}, "target_revision: Field required"),
        ("SCALE_UP", {"min_instances": 9, "max_instances": 2}, "min_instances must not exceed max_instances"),
        ("RESTART", {}, "unknown action type 'RESTART'"),
    ],
)
async def test_a_stored_action_that_does_not_validate_fails_with_its_reason_and_the_worker_goes_on(
    store: Store,
    emulator: Emulator,
    clients: CloudRunClients,
    stored_type: str,
    stored_params: dict,
    reason: str,
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    async with store.session() as session:  # a row written by something that broke the contract
        row = await ActionRepository(session).get(action_id)
        row.type, row.params = stored_type, stored_params
    changes_before = operation_count(emulator)
    worker = make_worker(store, clients)
    assert await worker.run_once() == action_id
    incident, action, events = await state(store, incident_id, action_id)
    assert (action.status, incident.status) == ("failed", "failed")
    assert reason in action.error and reason in incident.status_reason
    assert "action.failed" in events
    assert operation_count(emulator) == changes_before  # nothing was changed on Cloud Run

    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    assert await worker.run_once() == action_id
    incident, action, _ = await state(store, incident_id, action_id)
    assert (action.status, incident.status) == ("succeeded", "resolved")


async def test_a_running_worker_takes_a_queued_action_at_once_not_at_its_poll(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    worker = make_worker(store, clients, poll_interval=60)
    await worker.start()
    try:
        await asyncio.sleep(0.5)  # the worker found nothing and waits (PostgreSQL: and listens)
        incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
        async with asyncio.timeout(15):
            while (await state(store, incident_id, action_id))[1].status != "succeeded":
                await asyncio.sleep(0.05)
    finally:
        await worker.stop()
    assert traffic(await emulator.get(SERVICE)) == {deployed.stable: 100}


async def set_tagged_traffic(
    emulator: Emulator, targets: list[tuple[str, int, str | None]]
) -> run_v2.Service:
    """(revision or LATEST, percent, tag) targets, set the way a client does: get, edit, update."""
    service = await emulator.get(SERVICE)
    del service.traffic[:]
    for revision, percent, tag in targets:
        latest = revision == "LATEST"
        service.traffic.append(
            run_v2.TrafficTarget(
                type_=TrafficType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
                if latest
                else TrafficType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                revision="" if latest else revision,
                percent=percent,
                tag=tag or "",
            )
        )
    operation = await emulator.call(emulator.services.update_service, service=service)
    return await emulator.wait(operation)


def targets_of(service: run_v2.Service) -> set[tuple[str, int, str]]:
    return {
        (revision_id(t.revision) if t.revision else "LATEST", int(t.percent), t.tag) for t in service.traffic
    }


async def test_a_rollback_keeps_the_services_traffic_tags(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    await set_tagged_traffic(
        emulator, [(deployed.bad, 100, "current"), (deployed.stable, 0, "stable"), ("LATEST", 0, "latest")]
    )
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    await make_worker(store, clients).run_once()
    service = await emulator.get(SERVICE)
    assert {name: share for name, share in traffic(service).items() if share} == {deployed.stable: 100}
    # The tag on the target stays on its (now 100%) entry; the others keep their URLs at 0%.
    assert targets_of(service) == {
        (deployed.stable, 100, "stable"),
        (deployed.bad, 0, "current"),
        ("LATEST", 0, "latest"),
    }
    incident, _, _ = await state(store, incident_id, action_id)
    assert incident.status == "resolved"
    changes = operation_count(emulator)
    await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    await make_worker(store, clients).run_once()
    assert operation_count(emulator) == changes  # in place (tags aside): nothing to change


async def test_a_release_keeps_the_services_traffic_tags(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    await set_tagged_traffic(emulator, [(deployed.stable, 100, "stable"), (deployed.bad, 0, "canary")])
    await queue(store, SERVICE, "RELEASE", {})
    await make_worker(store, clients).run_once()
    service = await emulator.get(SERVICE)
    assert targets_of(service) == {
        ("LATEST", 100, ""),
        (deployed.stable, 0, "stable"),
        (deployed.bad, 0, "canary"),
    }
    changes = operation_count(emulator)
    await queue(store, f"{SERVICE}", "RELEASE", {})  # already released (tags aside): nothing to change
    await make_worker(store, clients).run_once()
    assert operation_count(emulator) == changes


async def test_the_allow_list_is_checked_again_when_the_action_runs(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    """Queued before the settings changed (or by an older process): refused at execution."""
    deployed = await deploy_stable_then_bad(emulator)
    changes = operation_count(emulator)
    incident_id, action_id = await queue(store, SERVICE, "ROLLBACK", {"target_revision": deployed.stable})
    await make_worker(store, clients, allowed_services=frozenset({"payments"})).run_once()
    incident, action, _ = await state(store, incident_id, action_id)
    assert (action.status, incident.status) == ("failed", "failed")
    assert action.error == "refused at execution: checkout is not in REMEDIATOR_ALLOWED_SERVICES"
    assert operation_count(emulator) == changes


async def test_the_scale_ceiling_is_checked_again_when_the_action_runs(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    await deploy_stable_then_bad(emulator)
    changes = operation_count(emulator)
    incident_id, action_id = await queue(
        store, SERVICE, "SCALE_UP", {"min_instances": 1, "max_instances": 50}
    )
    await make_worker(store, clients, max_instances_ceiling=20).run_once()
    incident, action, _ = await state(store, incident_id, action_id)
    assert (action.status, incident.status) == ("failed", "failed")
    assert action.error == "refused at execution: max 50 instances exceeds REMEDIATOR_MAX_INSTANCES=20"
    assert operation_count(emulator) == changes
