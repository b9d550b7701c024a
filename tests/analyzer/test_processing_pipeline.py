"""The per-incident pipeline: lease, evidence, decision, policy and the queued action in one commit."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from incidents import (
    ActionRepository,
    ActionStatus,
    AlertInfo,
    IncidentContext,
    IncidentRepository,
    IncidentStatus,
    RecentAction,
    Store,
    database_now,
    utcnow,
)
from tests.analyzer.processing_support import open_incident, processor, status_and_events
from tests.support.contexts import StaticContextSource, bad_deploy_context


async def test_a_decision_is_committed_with_its_action_and_the_incident_queued(store: Store) -> None:
    incident_id = await open_incident(store)
    await processor(store, StaticContextSource()).process(incident_id)
    status, events = await status_and_events(store, incident_id)
    assert status == "queued"
    steps = ["status.analyzing", "status.decided", "action.queued", "status.queued"]
    assert [kind for kind in events if kind in steps] == steps
    async with store.session() as session:
        (action,) = await ActionRepository(session).list_for_incident(incident_id)
    assert action.type == "ROLLBACK" and action.params["decision_engine"] == "rules"


async def test_an_incident_under_another_live_lease_is_left_alone(store: Store) -> None:
    incident_id = await open_incident(store)
    async with store.session() as session:
        incident = await IncidentRepository(session).get(incident_id)
        incident.status, incident.lease_owner = "analyzing", "analyzer-elsewhere"
        incident.lease_expires_at = utcnow() + timedelta(minutes=1)
    source = StaticContextSource()
    await processor(store, source).process(incident_id)
    assert source.calls == []
    assert (await status_and_events(store, incident_id))[0] == "analyzing"


async def test_a_decision_is_discarded_when_the_incident_moved_on_during_analysis(store: Store) -> None:
    incident_id = await open_incident(store)
    source = StaticContextSource()
    source.gate = asyncio.Event()
    analysis = asyncio.create_task(processor(store, source).process(incident_id))
    async with asyncio.timeout(10):
        while not source.calls:
            await asyncio.sleep(0.01)
    async with store.session() as session:  # the alert resolved meanwhile
        repo = IncidentRepository(session)
        incident = await repo.get(incident_id, for_update=True)
        await repo.transition(incident, IncidentStatus.CLOSED, actor="webhook", message="recovered")
    source.gate.set()
    await analysis
    status, events = await status_and_events(store, incident_id)
    assert status == "closed"
    assert "analysis.discarded" in events and "action.queued" not in events
    async with store.session() as session:
        assert await ActionRepository(session).list_for_incident(incident_id) == []


async def test_the_database_clock_is_every_replicas_clock(store: Store) -> None:
    async with store.session() as session:
        first = await database_now(session)
        second = await database_now(session)
    assert first.tzinfo is not None and first.utcoffset() == timedelta(0)
    assert abs((first - utcnow()).total_seconds()) < 5  # the test's database runs on this machine
    assert second >= first  # the actual time at each call, not the transaction's start


async def test_replicas_with_skewed_clocks_do_not_act_twice_inside_a_cooldown(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One replica's clock runs 20 minutes behind, the other's 20 minutes ahead. The behind one
    rolls back; the ahead one, deciding on a new incident for the same service a moment later, is
    inside the 10-minute cooldown on the database's clock, while its own clock says 40 minutes
    passed: it must hold back."""
    skew = {"seconds": 0.0}
    monkeypatch.setattr(
        "analyzer.processing.pipeline.utcnow", lambda: utcnow() + timedelta(seconds=skew["seconds"])
    )

    # Cloud Run and Prometheus stamp what they report with their own (true) clocks.
    def true_times(alert: AlertInfo, *, now: datetime, recent: list[RecentAction]) -> IncidentContext:
        return bad_deploy_context(alert, now=utcnow(), recent=recent)

    source = StaticContextSource(true_times)
    skew["seconds"] = -1200
    first = await open_incident(store, fingerprint="f1")
    await processor(store, source).process(first)
    assert (await status_and_events(store, first))[0] == "queued"
    async with store.session() as session:  # applied and over: the service is free for a new incident
        repo = IncidentRepository(session)
        (action,) = await ActionRepository(session).list_for_incident(first)
        action.status = ActionStatus.SUCCEEDED.value
        incident = await repo.get(first, for_update=True)
        await repo.transition(incident, IncidentStatus.CLOSED, actor="test", message="over")

    skew["seconds"] = 1200
    second = await open_incident(store, fingerprint="f2")
    await processor(store, source).process(second)
    status, events = await status_and_events(store, second)
    assert status == "suppressed", events
    async with store.session() as session:
        incident = await IncidentRepository(session).get(second)
        assert await ActionRepository(session).list_for_incident(second) == []
    assert incident.status_reason is not None and incident.status_reason.startswith("cooldown:")
