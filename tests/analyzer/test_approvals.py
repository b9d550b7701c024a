"""Approvals that stay true: they expire, and they are checked against Cloud Run as it is now."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from analyzer import AnalyzerConfig, PolicyConfig, PolicyMode, ProcessingConfig, create_app, keys
from analyzer.approvals import expire_overdue_approvals
from incidents import (
    Action,
    IncidentContext,
    IncidentEvent,
    IncidentRepository,
    IncidentStatus,
    Store,
    utcnow,
)
from incidents.models import OutboxEvent
from incidents.outbox import OutboxRepository
from incidents.runtime import Secret
from tests.analyzer.processing_support import open_incident
from tests.support.alerts import alert, payload
from tests.support.contexts import GENERATION, StaticContextSource, bad_deploy_context, probe_alert, state_of

API_TOKEN = "api-token-for-approvals"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
TTL = timedelta(minutes=30)
Client = TestClient[Any, Any]


async def waiting_since(store: Store, since: datetime, service: str = "demo-app-a") -> int:
    """An incident that has waited for approval of a rollback since `since`."""
    incident_id = await open_incident(store, service, fingerprint=f"f-{service}-{since.timestamp()}")
    context = bad_deploy_context(probe_alert(service), now=since)
    decision = {
        "action": "ROLLBACK",
        "target_revision": f"{service}-00001-ok",
        "confidence": 0.7,
        "root_cause": "a bad deploy",
        "explanation": "roll back",
        "engine": "rules",
    }
    async with store.session() as session:
        incidents = IncidentRepository(session)
        incident = await incidents.get(incident_id, for_update=True)
        incident.context, incident.decision = context.to_json_dict(), decision
        for status in (IncidentStatus.ANALYZING, IncidentStatus.DECIDED, IncidentStatus.AWAITING_APPROVAL):
            await incidents.transition(incident, status, actor="test", message=status.value, now=since)
    return incident_id


async def snapshot(store: Store, incident_id: int) -> tuple[str, int, int, int]:
    """Everything a refused approval must leave alone."""
    async with store.session() as session:
        incident = await IncidentRepository(session).get(incident_id)
        events = await session.scalar(select(func.count()).select_from(IncidentEvent))
        outbox = await session.scalar(select(func.count()).select_from(OutboxEvent))
        actions = await session.scalar(select(func.count()).select_from(Action))
    return incident.status, int(events or 0), int(outbox or 0), int(actions or 0)


async def wait_again(store: Store, incident_id: int, since: datetime) -> None:
    """The round after an expiry decided the same and asks a human again, from `since`."""
    async with store.session() as session:
        incidents = IncidentRepository(session)
        incident = await incidents.get(incident_id, for_update=True)
        for status in (IncidentStatus.ANALYZING, IncidentStatus.DECIDED, IncidentStatus.AWAITING_APPROVAL):
            await incidents.transition(incident, status, actor="test", message=status.value, now=since)


async def test_an_approval_nobody_gave_in_time_is_analysed_again_once_then_escalated(store: Store) -> None:
    now = utcnow()
    overdue = await waiting_since(store, now - TTL - timedelta(seconds=1), "demo-app-a")
    fresh = await waiting_since(store, now - TTL + timedelta(minutes=1), "payments")
    assert await expire_overdue_approvals(store, ttl=TTL, now=now) == [overdue]
    async with store.session() as session:
        incidents = IncidentRepository(session)
        incident = await incidents.get(overdue)
        kinds = [event.kind for event in await incidents.events.list_for_incident(overdue)]
        announced = [
            event.type for event in await OutboxRepository(session).list_events_for_incident(overdue)
        ]
        assert (await incidents.get(fresh)).status == IncidentStatus.AWAITING_APPROVAL
    # What was true half an hour ago is not evidence now: the first expiry looks again.
    assert incident.status == IncidentStatus.OPEN
    assert incident.analysis_round == 2
    # The same fault, read again with fresh figures: the round does not start a new one.
    assert incident.round_started_at is None and incident.fault_not_before is None
    assert incident.round_reason is not None
    assert incident.round_reason.startswith("approval expired: nobody answered within 30m00s")
    assert "(the decision was to roll back to demo-app-a-00001-ok)" in incident.round_reason
    # The first round's evidence is kept on the timeline before the fresh one replaces it.
    assert kinds[-4:] == ["approval.expired", "analysis.round", "analysis.requested", "status.open"]
    assert "approval_expired" in announced and "escalated" not in announced
    # Another replica's sweep, a moment later, finds nothing left to do.
    assert await expire_overdue_approvals(store, ttl=TTL, now=now + timedelta(seconds=1)) == []

    # The fresh round asked again, and nobody answered that either: one look only, then a human.
    await wait_again(store, overdue, now)
    # (`fresh` has waited its 30 minutes by then too: its first expiry.)
    assert set(await expire_overdue_approvals(store, ttl=TTL, now=now + TTL)) == {overdue, fresh}
    async with store.session() as session:
        incidents = IncidentRepository(session)
        incident = await incidents.get(overdue)
        kinds = [event.kind for event in await incidents.events.list_for_incident(overdue)]
        announced = [
            event.type for event in await OutboxRepository(session).list_events_for_incident(overdue)
        ]
    assert incident.status == IncidentStatus.ESCALATED
    assert incident.analysis_round == 2
    assert incident.status_reason is not None
    assert incident.status_reason.startswith("approval expired: nobody approved within 30m00s")
    assert "nothing was done (the decision was to roll back to demo-app-a-00001-ok)" in incident.status_reason
    assert kinds[-2:] == ["approval.expired", "status.escalated"]
    assert announced[-2:] == ["approval_expired", "escalated"]


@pytest.fixture
def source() -> StaticContextSource:
    return StaticContextSource()


@pytest.fixture
async def client(
    store: Store, source: StaticContextSource, aiohttp_client: Callable[..., Awaitable[Client]]
) -> AsyncIterator[Client]:
    config = AnalyzerConfig(
        api_token=Secret(API_TOKEN),
        policy=PolicyConfig(mode=PolicyMode.APPROVE),
        processing=ProcessingConfig(sweep_interval=0.05),
        approval_ttl=TTL,
    )
    test_client = await aiohttp_client(create_app(config, context_source=source.factory(), store=store))
    yield test_client
    await test_client.close()


async def awaiting(client: Client) -> int:
    response = await client.post("/api/v1/alerts", json=payload(alert(service="demo-app-a")))
    (incident_id,) = (await response.json())["opened_incidents"]
    async with asyncio.timeout(10):
        await client.app[keys.PROCESSOR].wait_idle()
    return int(incident_id)


async def approve(client: Client, incident_id: int) -> tuple[int, dict[str, Any]]:
    response = await client.post(
        f"/api/v1/incidents/{incident_id}/approve", json={"by": "alice"}, headers=AUTH
    )
    return response.status, await response.json()


async def approvals_counted(client: Client, outcome: str) -> str:
    text = await (await client.get("/metrics")).text()
    return next(
        line
        for line in text.splitlines()
        if line.startswith(f'remediator_approvals_total{{outcome="{outcome}"}}')
    )


async def test_approving_after_the_ttl_is_refused_with_the_reason_and_looks_again(
    client: Client, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    incident_id = await awaiting(client)
    # The approver comes back 31 minutes later (before the sweep noticed).
    later = utcnow() + timedelta(minutes=31)
    monkeypatch.setattr("analyzer.routes.utcnow", lambda: later)
    status, error = await approve(client, incident_id)
    assert status == 409, error
    assert error["error"].startswith(f"approval expired: incident {incident_id} waited 31m")
    assert "it is being analysed again on fresh evidence, and nothing was changed" in error["error"]
    assert await approvals_counted(client, "expired") == 'remediator_approvals_total{outcome="expired"} 1.0'
    # The fresh round (the same evidence here, in approve mode) asks again; nothing ran meanwhile.
    async with asyncio.timeout(10):
        await client.app[keys.PROCESSOR].wait_idle()
    state, _, _, actions = await snapshot(store, incident_id)
    assert (state, actions) == ("awaiting_approval", 0)

    # Nobody answers the second ask either: the late click after it escalates.
    monkeypatch.setattr("analyzer.routes.utcnow", lambda: later + timedelta(minutes=31))
    status, error = await approve(client, incident_id)
    assert status == 409, error
    assert "it is escalated, and nothing was changed" in error["error"]
    state, _, _, actions = await snapshot(store, incident_id)
    assert (state, actions) == ("escalated", 0)
    # Approving again says why it is no longer waiting.
    status, error = await approve(client, incident_id)
    assert status == 409
    assert (
        f"incident {incident_id} is escalated (approval expired: nobody approved within 30m00s"
        in error["error"]
    )


async def test_the_running_analyzer_expires_approvals_on_its_own(
    store: Store, source: StaticContextSource, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    config = AnalyzerConfig(
        api_token=Secret(API_TOKEN),
        policy=PolicyConfig(mode=PolicyMode.APPROVE),
        processing=ProcessingConfig(sweep_interval=0.05),
        approval_ttl=timedelta(seconds=0.3),
    )
    client = await aiohttp_client(create_app(config, context_source=source.factory(), store=store))
    try:
        incident_id = await awaiting(client)
        async with asyncio.timeout(10):
            while (await snapshot(store, incident_id))[0] != "escalated":
                await asyncio.sleep(0.05)
        # Asked, expired, analysed again and asked again, expired again: escalated, nothing changed.
        assert (
            await approvals_counted(client, "expired") == 'remediator_approvals_total{outcome="expired"} 2.0'
        )
        assert (await snapshot(store, incident_id))[3] == 0
    finally:
        await client.close()


def changed_service(source: StaticContextSource, **changes: Any) -> None:
    """Cloud Run, read now, differs from what the decision was made on."""
    context = source.build(probe_alert("demo-app-a"), now=utcnow(), recent=[])
    source.cloud_run = state_of(context, **changes)


async def test_an_approval_is_refused_when_the_service_changed_since_the_decision(
    client: Client, store: Store, source: StaticContextSource
) -> None:
    incident_id = await awaiting(client)
    before = await snapshot(store, incident_id)
    changed_service(source, generation=GENERATION + 1)
    status, error = await approve(client, incident_id)
    assert status == 409, error
    assert error["error"] == (
        "approval refused, nothing changed: demo-app-a changed since the decision (generation "
        f"{GENERATION} then, {GENERATION + 1} now: a deploy, a traffic or a scaling change); the decision "
        "was made on a service that is no longer there"
    )
    assert await snapshot(store, incident_id) == before
    assert await approvals_counted(client, "stale") == 'remediator_approvals_total{outcome="stale"} 1.0'
    source.cloud_run = None  # as it was when deciding
    status, result = await approve(client, incident_id)
    assert (status, result["status"]) == (200, "queued")
    assert await approvals_counted(client, "approved") == 'remediator_approvals_total{outcome="approved"} 1.0'


@pytest.mark.parametrize(
    ("ready", "message"),
    [
        (None, "rollback target demo-app-a-00001-ok no longer exists"),
        (False, "rollback target demo-app-a-00001-ok is not ready"),
    ],
)
async def test_an_approval_is_refused_when_the_rollback_target_is_gone_or_not_ready(
    client: Client, store: Store, source: StaticContextSource, ready: bool | None, message: str
) -> None:
    incident_id = await awaiting(client)
    before = await snapshot(store, incident_id)
    context = source.build(probe_alert("demo-app-a"), now=utcnow(), recent=[])
    state = state_of(context)
    target = "demo-app-a-00001-ok"
    if ready is None:
        revisions = [r for r in state.revisions if r.name != target]
    else:
        revisions = [replace(r, ready=ready) if r.name == target else r for r in state.revisions]
    source.cloud_run = replace(state, revisions=revisions)
    status, error = await approve(client, incident_id)
    assert (status, error["error"]) == (409, f"approval refused, nothing changed: {message}")
    assert await snapshot(store, incident_id) == before


async def test_an_approval_cloud_run_cannot_check_is_503_and_changes_nothing(
    client: Client, store: Store, source: StaticContextSource
) -> None:
    incident_id = await awaiting(client)
    before = await snapshot(store, incident_id)
    source.cloud_run = "cloud_run: timeout after 3s"
    status, error = await approve(client, incident_id)
    assert status == 503, error
    assert "Cloud Run could not be read to check the approval (cloud_run: timeout after 3s)" in error["error"]
    assert await snapshot(store, incident_id) == before
    assert (
        await approvals_counted(client, "unchecked") == 'remediator_approvals_total{outcome="unchecked"} 1.0'
    )
    source.cloud_run = None  # Cloud Run answers again
    assert (await approve(client, incident_id))[0] == 200


async def test_a_decision_made_without_cloud_runs_state_cannot_be_approved(
    store: Store, source: StaticContextSource, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    """A context with no generation (Cloud Run unread when deciding, or recorded before it was kept):
    whether the service changed since cannot be told, so the approval is refused."""

    def unread(alert: Any, *, now: datetime, recent: Any) -> IncidentContext:
        context = bad_deploy_context(alert, now=now, recent=recent)
        return context.model_copy(update={"service": context.service.model_copy(update={"generation": None})})

    source.build = unread
    config = AnalyzerConfig(
        api_token=Secret(API_TOKEN),
        policy=PolicyConfig(mode=PolicyMode.APPROVE),
        processing=ProcessingConfig(sweep_interval=0.05),
    )
    client = await aiohttp_client(create_app(config, context_source=source.factory(), store=store))
    try:
        incident_id = await awaiting(client)
        before = await snapshot(store, incident_id)
        status, error = await approve(client, incident_id)
        assert status == 409
        assert "the generation of demo-app-a when the decision was made is unknown" in error["error"]
        assert await snapshot(store, incident_id) == before
    finally:
        await client.close()
