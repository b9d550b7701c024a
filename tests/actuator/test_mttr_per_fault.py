"""MTTR is measured for the fault an action fixed: an incident that spans two faults (a bad deploy
under an escalated incident, analysed again) shows both, and its MTTR is the second one's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from actuator.mttr import recovery_times
from collector import CloudRunClients
from incidents import (
    ActionType,
    Decision,
    Incident,
    IncidentRepository,
    IncidentStatus,
    Store,
    Trigger,
    enqueue_action,
    read_action,
    request_reanalysis,
    utcnow,
)
from tests.actuator.support import SERVICE, deploy_stable_then_bad, emulator_clients, make_worker, state
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


async def test_the_action_of_a_second_fault_is_measured_from_that_fault(
    store: Store, emulator: Emulator, clients: CloudRunClients
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    now = utcnow()
    first_onset, second_onset = now - timedelta(minutes=10), now - timedelta(seconds=40)
    async with store.session() as session:
        incidents = IncidentRepository(session)
        incident, _ = await incidents.open(
            SERVICE, now=now - timedelta(minutes=9), actor="test", message="opened"
        )
        incident.fault_started_at, incident.fault_started_source = first_onset, "error_ratio_15s"
        incident.decision = Decision(
            action=ActionType.INVESTIGATE, confidence=0.5, engine="rules"
        ).to_json_dict()
        for status in (IncidentStatus.ANALYZING, IncidentStatus.DECIDED, IncidentStatus.ESCALATED):
            await incidents.transition(
                incident, status, actor="test", message=status.value, now=now - timedelta(minutes=8)
            )
        incident_id = incident.id
    async with store.session() as session:
        assert await request_reanalysis(
            session,
            incident_id,
            "a new revision took traffic",
            trigger=Trigger.NEW_REVISION,
            now=now - timedelta(seconds=30),
        )
    async with store.session() as session:
        incidents = IncidentRepository(session)
        incident = await incidents.get(incident_id, for_update=True)
        # The second round decides a rollback of the revision deployed at the second onset.
        incident.fault_started_at, incident.fault_started_source = second_onset, "revision_created"
        decided = now - timedelta(seconds=25)
        for status in (IncidentStatus.ANALYZING, IncidentStatus.DECIDED, IncidentStatus.QUEUED):
            await incidents.transition(incident, status, actor="test", message=status.value, now=decided)
        action = await enqueue_action(
            store,
            session,
            incident,
            read_action("ROLLBACK", {"target_revision": deployed.stable}),
            requested_by="analyzer",
            now=decided,
        )
        action_id = action.id
    assert await make_worker(store, clients).run_once() == action_id

    incident, action, _ = await state(store, incident_id, action_id)
    assert incident.status == "resolved"
    assert action.fault["round"] == 2
    assert action.fault["detected_at"] == (now - timedelta(seconds=30)).isoformat()
    # From the second fault's onset, not the first's (ten minutes earlier).
    assert incident.mttr_basis == "fault_started_at (revision_created)"
    assert 40 <= incident.mttr_seconds < 120
    assert incident.time_to_detect_seconds == pytest.approx(10, abs=0.01)
    assert incident.time_to_decide_seconds == pytest.approx(15, abs=0.01)
    assert action.recovery["mttr_seconds"] == incident.mttr_seconds
    assert action.recovery["time_to_mitigate_seconds"] <= action.recovery["mttr_seconds"]


def test_without_a_fault_record_the_incident_times_are_used() -> None:
    now = utcnow()
    incident = Incident(
        detected_at=now - timedelta(seconds=50),
        decided_at=now - timedelta(seconds=49),
        mitigated_at=now - timedelta(seconds=40),
        fault_started_at=now - timedelta(seconds=60),
        fault_started_source="alerts_for_state",
    )
    times = recovery_times(incident, verified_at=now)
    assert (times.mttr_seconds, times.time_to_detect_seconds, times.time_to_mitigate_seconds) == (60, 10, 20)
    fault = {
        "fault_started_at": (now - timedelta(seconds=30)).isoformat(),
        "fault_started_source": "revision_created",
        "detected_at": (now - timedelta(seconds=25)).isoformat(),
        "decided_at": (now - timedelta(seconds=24)).isoformat(),
    }
    times = recovery_times(incident, verified_at=now, fault=fault, mitigated_at=now - timedelta(seconds=20))
    assert (times.mttr_seconds, times.time_to_detect_seconds, times.time_to_decide_seconds) == (30, 5, 6)
    assert times.time_to_mitigate_seconds == 10
    assert times.basis == "fault_started_at (revision_created)"
