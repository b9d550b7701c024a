"""Handing incidents to humans: the sweep for incidents nobody works on, and a human's escalate or close."""

from __future__ import annotations

from datetime import timedelta

import pytest

from incidents import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    ActionRepository,
    ActionStatus,
    HandoverRefused,
    IncidentNotFound,
    IncidentRepository,
    IncidentStatus,
    Store,
    database_now,
    escalate_unattended,
    take_over,
)
from tests.support.incident_states import incident_in

S = IncidentStatus


async def read(store: Store, incident_id: int) -> tuple[str, str | None, list[tuple[str, str]], list[str]]:
    async with store.session() as session:
        incidents = IncidentRepository(session)
        incident = await incidents.get(incident_id)
        events = [(e.kind, e.message) for e in await incidents.events.list_for_incident(incident_id)]
        actions = [a.status for a in await ActionRepository(session).list_for_incident(incident_id)]
    return incident.status, incident.status_reason, events, actions


@pytest.mark.parametrize(
    ("status", "action", "moved_to"),
    [
        (S.VERIFYING, ActionStatus.FAILED, "escalated"),
        (S.VERIFYING, ActionStatus.SUCCEEDED, "escalated"),
        (S.ACTING, ActionStatus.CANCELLED, "escalated"),
        (S.ACTING, None, "escalated"),
        (S.QUEUED, ActionStatus.CANCELLED, "failed"),
    ],
)
async def test_the_sweep_moves_an_incident_whose_actions_all_ended(
    store: Store, status: IncidentStatus, action: ActionStatus | None, moved_to: str
) -> None:
    incident_id, action_id = await incident_in(store, status, action=action)
    assert await escalate_unattended(store) == [incident_id]
    moved, reason, events, _ = await read(store, incident_id)
    assert moved == moved_to
    assert reason is not None and reason.startswith("nobody is working on it: ")
    described = f"action {action_id} {action.value}" if action else "it has no action"
    assert events[-2] == ("sweep.unattended", f"nobody is working on it: {described}")
    assert events[-1][0] == f"status.{moved_to}"
    assert await escalate_unattended(store) == []  # once


@pytest.mark.parametrize(
    ("status", "action", "lease_ended_ago"),
    [
        (S.VERIFYING, ActionStatus.RUNNING, None),  # a worker holds it
        (S.ACTING, ActionStatus.RUNNING, timedelta(seconds=5)),  # between workers: one takes it over
        (S.QUEUED, ActionStatus.QUEUED, None),  # waiting for a worker
        (S.ESCALATED, ActionStatus.FAILED, None),  # a human's already
        (S.AWAITING_APPROVAL, None, None),
    ],
)
async def test_the_sweep_leaves_incidents_someone_works_on_or_waits_for(
    store: Store, status: IncidentStatus, action: ActionStatus, lease_ended_ago: timedelta | None
) -> None:
    incident_id, _ = await incident_in(store, status, action=action, lease_ended_ago=lease_ended_ago)
    assert await escalate_unattended(store) == []
    assert (await read(store, incident_id))[0] == status.value


async def test_a_running_action_no_worker_took_over_in_minutes_is_cancelled_and_its_incident_escalated(
    store: Store,
) -> None:
    incident_id, action_id = await incident_in(
        store, S.VERIFYING, action=ActionStatus.RUNNING, lease_ended_ago=timedelta(minutes=3)
    )
    assert await escalate_unattended(store, stale_after=timedelta(minutes=2)) == [incident_id]
    status, reason, _, actions = await read(store, incident_id)
    assert (status, actions) == ("escalated", ["cancelled"])
    assert f"no worker renewed the lease of action {action_id} for 120s" in (reason or "")


@pytest.mark.parametrize("status", sorted(ACTIVE_STATUSES - {S.ESCALATED}))
async def test_a_human_escalates_any_active_incident(store: Store, status: IncidentStatus) -> None:
    incident_id, _ = await incident_in(store, status)
    assert await take_over(store, incident_id, to=S.ESCALATED, by="alice", reason="looks wrong") is status
    moved, reason, events, _ = await read(store, incident_id)
    assert (moved, reason) == ("escalated", "escalated by alice: looks wrong")
    assert events[-1] == ("status.escalated", "escalated by alice: looks wrong")


@pytest.mark.parametrize("status", sorted(ACTIVE_STATUSES))
async def test_a_human_closes_any_active_incident(store: Store, status: IncidentStatus) -> None:
    incident_id, _ = await incident_in(store, status)
    await take_over(store, incident_id, to=S.CLOSED, by="alice", reason="fixed by hand")
    moved, reason, _, _ = await read(store, incident_id)
    assert (moved, reason) == ("closed", "closed by alice: fixed by hand")


async def test_taking_over_cancels_queued_and_running_actions_and_fences_off_their_worker(
    store: Store,
) -> None:
    incident_id, action_id = await incident_in(store, S.VERIFYING, action=ActionStatus.RUNNING)
    assert action_id is not None
    await take_over(store, incident_id, to=S.CLOSED, by="bob", reason="rolled forward myself")
    status, _, events, actions = await read(store, incident_id)
    assert (status, actions) == ("closed", ["cancelled"])
    assert (
        "action.cancelled",
        f"action {action_id} cancelled: the incident was closed by bob while the action was pending; "
        "a Cloud Run change already sent may still land",
    ) in events
    async with store.session() as session:  # the worker that held it can renew no more
        repo = ActionRepository(session)
        renewed = await repo.renew_lease(
            await repo.get(action_id),
            owner="actuator-x/abc",
            now=await database_now(session),
            lease=timedelta(seconds=8),
        )
    assert not renewed


@pytest.mark.parametrize("status", sorted(FINAL_STATUSES))
async def test_an_ended_incident_cannot_be_taken_over(store: Store, status: IncidentStatus) -> None:
    incident_id, _ = await incident_in(store, status)
    for target in (S.ESCALATED, S.CLOSED):
        with pytest.raises(HandoverRefused, match=f"incident {incident_id} is {status.value}: it has ended"):
            await take_over(store, incident_id, to=target, by="alice", reason="x")


async def test_escalating_an_escalated_incident_is_refused_and_a_missing_one_not_found(store: Store) -> None:
    incident_id, _ = await incident_in(store, S.ESCALATED)
    with pytest.raises(HandoverRefused, match=f"incident {incident_id} is escalated already"):
        await take_over(store, incident_id, to=S.ESCALATED, by="alice", reason="x")
    with pytest.raises(IncidentNotFound):
        await take_over(store, 999_999, to=S.CLOSED, by="alice", reason="x")
