"""How incidents follow one another: recurrence after a verified recovery, re-analysis when the world
changes under a waiting incident, escalations that end. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from analyzer import AnalyzerConfig, AnalyzerMetrics, ProcessingConfig, create_app, keys
from analyzer.processing.rounds import round_alert
from analyzer.processing.watch import Baseline, LifecycleWatcher, baseline_of, change_between
from analyzer.webhook import RecentNotifications
from incidents import (
    Action,
    AlertInfo,
    Incident,
    IncidentContext,
    IncidentRepository,
    IncidentStatus,
    LifecycleConfig,
    RecentAction,
    Store,
    Trigger,
    request_reanalysis,
    utcnow,
)
from tests.support.alerts import alert, payload
from tests.support.contexts import StaticContextSource, bad_deploy_context

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
SERVICE = "demo-app-a"


def dependency_context(
    alert: AlertInfo, *, now: datetime, recent: list[RecentAction] | None = None
) -> IncidentContext:
    """The revision that has served everything for days fails now: not a deploy, a human must look."""
    context = bad_deploy_context(alert, now=now, recent=recent).to_json_dict()
    old = {
        "name": f"{SERVICE}-00001-ok",
        "created_at": now - timedelta(days=2),
        "traffic_percent": 100,
        "ready": True,
        "latest": True,
        "metrics": {"request_rate_rps": 20.0, "error_rate": 0.08, "latency_p95_ms": 120},
        "baseline": {"request_rate_rps": 20.0, "error_rate": 0.001, "latency_p95_ms": 90},
    }
    context["revisions"] = [old]
    return IncidentContext.model_validate(context)


class WorldSource(StaticContextSource):
    """A context source whose Cloud Run traffic the test sets."""

    def __init__(self, build: Callable[..., IncidentContext] = bad_deploy_context) -> None:
        super().__init__(build)
        self.shares: dict[str, dict[str, int]] = {}

    async def traffic(self, service: str) -> dict[str, int]:
        return self.shares[service]


@pytest.fixture
def source() -> WorldSource:
    return WorldSource()


@pytest.fixture
async def make_client(
    store: Store, aiohttp_client: ClientFactory, source: WorldSource
) -> AsyncIterator[Callable[..., Awaitable[TestClient[Any, Any]]]]:
    clients: list[TestClient[Any, Any]] = []

    async def make(**overrides: Any) -> TestClient[Any, Any]:
        overrides.setdefault("processing", ProcessingConfig(sweep_interval=0.05, workers=2))
        # The watcher runs in the app too; these tests drive it by hand, so keep its own loop slow.
        overrides.setdefault("lifecycle", LifecycleConfig(watch_interval=600))
        app = create_app(AnalyzerConfig(**overrides), context_source=source.factory(), store=store)
        clients.append(await aiohttp_client(app))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()


async def settle(client: TestClient[Any, Any]) -> None:
    async with asyncio.timeout(10):
        await client.app[keys.PROCESSOR].wait_idle()


async def incidents_of(store: Store) -> list[Incident]:
    async with store.session() as session:
        return list(reversed(await IncidentRepository(session).list_incidents(service=SERVICE)))


async def kinds(store: Store, incident_id: int) -> list[str]:
    async with store.session() as session:
        return [e.kind for e in await IncidentRepository(session).events.list_for_incident(incident_id)]


async def resolve_as_verified(store: Store, incident_id: int, *, ago: timedelta) -> None:
    """Take a queued incident through its action to a verified recovery `ago` in the past."""
    at = utcnow() - ago
    async with store.session() as session:
        repo = IncidentRepository(session)
        incident = await repo.get(incident_id, for_update=True)
        for status in (IncidentStatus.ACTING, IncidentStatus.VERIFYING, IncidentStatus.RESOLVED):
            await repo.transition(incident, status, actor="test", message=status.value, now=at)
        action = await session.scalar(select(Action).where(Action.incident_id == incident_id))
        assert action is not None
        action.status, action.applied_at = "succeeded", at
        action.result = {
            "traffic": [{"type": "REVISION", "revision": f"{SERVICE}-00001-ok", "percent": 100}],
            "verified": True,
            "verification": {"revisions": [f"{SERVICE}-00001-ok"]},
        }


def watcher(store: Store, source: WorldSource, **config: Any) -> tuple[LifecycleWatcher, list[int]]:
    notified: list[int] = []
    config.setdefault("change_settle", timedelta(0))
    return (
        LifecycleWatcher(
            store=store,
            traffic=source,
            config=LifecycleConfig(**config),
            metrics=AnalyzerMetrics(CollectorRegistry()),
            notify=notified.extend,
        ),
        notified,
    )


# recurrence


async def test_an_alert_still_firing_after_the_grace_opens_a_linked_incident_that_is_analysed_afresh(
    make_client: Any, store: Store, source: WorldSource
) -> None:
    client = await make_client(
        lifecycle=LifecycleConfig(watch_interval=600, recurrence_grace=timedelta(seconds=90))
    )
    client.app[keys.RECENT_NOTIFICATIONS].ttl = timedelta(0)  # every delivery reads the store
    firing = payload(alert())
    await client.post("/api/v1/alerts", json=firing)
    await settle(client)
    [first] = await incidents_of(store)
    await resolve_as_verified(store, first.id, ago=timedelta(seconds=30))

    # Within the grace: the tail of the fault that was fixed (the alert's window, keep_firing_for).
    tail = await (await client.post("/api/v1/alerts", json=firing)).json()
    assert (tail["new"], tail["duplicate"], tail["opened_incidents"]) == (0, 1, [])

    async with store.session() as session:
        row = await IncidentRepository(session).get(first.id, for_update=True)
        row.verified_at = utcnow() - timedelta(seconds=120)
    calls = len(source.calls)
    body = await (await client.post("/api/v1/alerts", json=firing)).json()
    assert body["new"] == 1 and len(body["opened_incidents"]) == 1
    await settle(client)
    first, second = await incidents_of(store)
    assert second.id == body["opened_incidents"][0]
    assert "remediator_incidents_recurred_total 1.0" in await (await client.get("/metrics")).text()
    assert (second.previous_incident_id, second.previous_relation) == (first.id, "recurred_after_resolution")
    # Analysed with fresh evidence: the context was read again, for the round that began now, and the
    # fault cannot have begun before the previous recovery was verified.
    assert len(source.calls) == calls + 1
    assert source.calls[-1].starts_at == second.round_started_at
    assert second.fault_not_before == first.verified_at
    assert second.decision is not None and second.decision["action"] == "ROLLBACK"
    # The first incident's action is within the cooldown: the policy holds the action, not the analysis.
    assert second.status == IncidentStatus.SUPPRESSED
    assert "cooldown" in (second.policy_reason or "")

    detail = await (await client.get(f"/api/v1/incidents/{second.id}")).json()
    assert detail["previous_incident"] == {
        "id": first.id,
        "relation": "recurred_after_resolution",
        "description": "recurred after resolution",
    }
    assert [a["alertname"] for a in detail["alerts"]] == ["HighErrorRate"]
    previous = await (await client.get(f"/api/v1/incidents/{first.id}")).json()
    assert [link["id"] for link in previous["following_incidents"]] == [second.id]
    assert "incident.followed" in [e["kind"] for e in previous["timeline"]]

    # The alert finally resolves: both records of it do, and the new incident closes.
    resolved = await (
        await client.post("/api/v1/alerts", json=payload({**alert(), "status": "resolved"}))
    ).json()
    assert resolved["resolved"] == 1 and resolved["closed_incidents"] == [second.id]


async def test_an_alert_firing_again_with_the_same_identity_after_it_resolved_opens_a_new_incident(
    make_client: Any, store: Store, source: WorldSource
) -> None:
    client = await make_client()
    client.app[keys.RECENT_NOTIFICATIONS].ttl = timedelta(0)
    source.gate = asyncio.Event()
    firing = alert()
    await client.post("/api/v1/alerts", json=payload(firing))
    await client.post("/api/v1/alerts", json=payload({**firing, "status": "resolved"}))
    source.gate.set()
    await settle(client)
    body = await (await client.post("/api/v1/alerts", json=payload(firing))).json()
    assert len(body["opened_incidents"]) == 1
    await settle(client)
    first, second = await incidents_of(store)
    assert first.status == IncidentStatus.CLOSED
    assert second.status == IncidentStatus.QUEUED
    assert "again" in (await _opened_message(store, second.id))


async def _opened_message(store: Store, incident_id: int) -> str:
    async with store.session() as session:
        events = await IncidentRepository(session).events.list_for_incident(incident_id)
    return next(e.message for e in events if e.kind == "incident.opened")


async def test_the_watcher_opens_a_recurrence_as_soon_as_a_new_revision_takes_the_traffic(
    make_client: Any, store: Store, source: WorldSource
) -> None:
    """A second bad deploy right after a verified rollback: the alert never stopped firing, and no
    grace needs to pass, because what serves is no longer what the recovery was verified on."""
    client = await make_client()
    await client.post("/api/v1/alerts", json=payload(alert()))
    await settle(client)
    [first] = await incidents_of(store)
    await resolve_as_verified(store, first.id, ago=timedelta(seconds=5))
    watch, notified = watcher(store, source, change_settle=timedelta(seconds=20))

    source.shares[SERVICE] = {f"{SERVICE}-00001-ok": 100}  # as the recovery left it
    assert await watch.tick() == []
    source.shares[SERVICE] = {f"{SERVICE}-00003-new": 100}
    assert await watch.tick() == []  # the change must hold for the settle time first
    watch._seen = {k: (key, at - timedelta(seconds=21)) for k, (key, at) in watch._seen.items()}
    started = await watch.tick()
    assert len(started) == 1 and notified == started
    first, second = await incidents_of(store)
    assert second.id == started[0]
    assert second.previous_relation == "recurred_after_resolution"
    assert "00003-new (100%) took traffic" in (second.round_reason or "")
    assert await watch.tick() == []  # the resolved incident is followed now: nothing more


# re-analysis


async def _escalated(client: TestClient[Any, Any], store: Store, source: WorldSource) -> Incident:
    source.build = dependency_context
    await client.post("/api/v1/alerts", json=payload(alert()))
    await settle(client)
    [incident] = await incidents_of(store)
    assert incident.status == IncidentStatus.ESCALATED, incident.status_reason
    return incident


async def test_a_new_revision_under_an_escalated_incident_is_a_new_fault_judged_on_its_own(
    make_client: Any, store: Store, source: WorldSource
) -> None:
    client = await make_client()
    incident = await _escalated(client, store, source)
    watch, notified = watcher(store, source)
    source.shares[SERVICE] = {f"{SERVICE}-00001-ok": 100}
    assert await watch.tick() == []  # what the analysis saw: nothing to do

    source.build = bad_deploy_context  # the bad deploy takes all traffic
    source.shares[SERVICE] = {f"{SERVICE}-00002-bad": 100}
    assert await watch.tick() == [incident.id]
    client.app[keys.PROCESSOR].notify(notified)
    await settle(client)
    [after] = await incidents_of(store)
    assert after.analysis_round == 2
    assert after.round_reason is not None and "00002-bad (100%) took traffic" in after.round_reason
    # Nothing was done for the first fault, so nothing holds the second back: it is rolled back.
    assert after.status == IncidentStatus.QUEUED
    assert after.decision is not None and after.decision["target_revision"] == f"{SERVICE}-00001-ok"
    timeline = await kinds(store, incident.id)
    assert timeline.count("analysis.round") == 2  # each round, with its evidence and decision
    assert timeline.index("analysis.requested") < timeline.index("status.open") < len(timeline) - 1

    detail = await (await client.get(f"/api/v1/incidents/{incident.id}")).json()
    rounds = [e for e in detail["timeline"] if e["kind"] == "analysis.round"]
    assert [r["data"]["decision"]["action"] for r in rounds] == ["INVESTIGATE", "ROLLBACK"]
    assert rounds[1]["data"]["evidence"]["revisions"][0]["name"] == f"{SERVICE}-00002-bad"
    requested = next(e for e in detail["timeline"] if e["kind"] == "analysis.requested")
    assert requested["data"]["trigger"] == "new_revision"
    assert requested["data"]["traffic_now"] == {f"{SERVICE}-00002-bad": 100}
    assert [(f["round"], f["action"]) for f in detail["faults"]] == [(1, "INVESTIGATE"), (2, "ROLLBACK")]
    assert detail["faults"][1]["action_id"] == detail["actions"][0]["id"]
    assert detail["actions"][0]["fault"]["round"] == 2
    assert detail["actions"][0]["fault"]["detected_at"] == after.round_started_at.isoformat()


async def test_a_new_alert_name_sends_an_escalated_incident_back_to_analysis(
    make_client: Any, store: Store, source: WorldSource
) -> None:
    client = await make_client()
    incident = await _escalated(client, store, source)
    # The same alert again changes nothing; a new name is news.
    again = await (await client.post("/api/v1/alerts", json=payload(alert()))).json()
    assert again["reanalysed_incidents"] == []
    latency = alert(alertname="HighLatencyP95", severity="warning")
    body = await (await client.post("/api/v1/alerts", json=payload(latency))).json()
    assert body["reanalysed_incidents"] == [incident.id]
    exposition = await (await client.get("/metrics")).text()
    assert 'remediator_reanalyses_total{trigger="alert_joined"} 1.0' in exposition
    await settle(client)
    [after] = await incidents_of(store)
    assert after.analysis_round == 2 and after.status == IncidentStatus.ESCALATED
    assert after.round_reason == "HighLatencyP95 joined the incident"


async def test_reanalysis_only_for_statuses_that_wait_on_the_world(make_client: Any, store: Store) -> None:
    client = await make_client()
    await client.post("/api/v1/alerts", json=payload(alert()))
    await settle(client)
    [incident] = await incidents_of(store)
    assert incident.status == IncidentStatus.QUEUED
    async with store.session() as session:
        assert not await request_reanalysis(session, incident.id, "approval expired")


async def test_after_a_failed_verification_only_a_new_fault_is_analysed_again(
    make_client: Any, store: Store
) -> None:
    client = await make_client()
    await client.post("/api/v1/alerts", json=payload(alert()))
    await settle(client)
    [incident] = await incidents_of(store)
    async with store.session() as session:
        repo = IncidentRepository(session)
        row = await repo.get(incident.id, for_update=True)
        for status in (IncidentStatus.ACTING, IncidentStatus.VERIFYING, IncidentStatus.ESCALATED):
            await repo.transition(row, status, actor="test", message=status.value)
        action = await session.scalar(select(Action).where(Action.incident_id == incident.id))
        assert action is not None
        action.status, action.result = "succeeded", {"verified": False}
    async with store.session() as session:
        moved = await request_reanalysis(
            session, incident.id, "traffic moved", trigger=Trigger.TRAFFIC_MOVED, now=utcnow()
        )
    assert not moved
    assert (await kinds(store, incident.id))[-1] == "world.changed"
    async with store.session() as session:
        assert await request_reanalysis(
            session, incident.id, "a new revision took traffic", trigger=Trigger.NEW_REVISION
        )


# the end of escalations


async def test_an_escalated_incident_closes_once_its_alerts_stayed_resolved_for_the_grace(
    make_client: Any, store: Store, source: WorldSource
) -> None:
    client = await make_client()
    incident = await _escalated(client, store, source)
    body = await (await client.post("/api/v1/alerts", json=payload({**alert(), "status": "resolved"}))).json()
    assert body["closed_incidents"] == []  # not at once: an alert firing again soon belongs here
    watch, _ = watcher(store, source, escalated_close_grace=timedelta(seconds=120))
    watch.traffic = None
    await watch.tick()
    assert (await incidents_of(store))[0].status == IncidentStatus.ESCALATED
    later = utcnow() + timedelta(seconds=121)
    watch._clock = lambda: later
    await watch.tick()
    [closed] = await incidents_of(store)
    assert closed.id == incident.id and closed.status == IncidentStatus.CLOSED
    assert "stayed resolved" in (closed.status_reason or "")


async def test_an_alert_firing_again_within_the_grace_rejoins_and_reanalyses_the_escalation(
    make_client: Any, store: Store, source: WorldSource
) -> None:
    client = await make_client()
    client.app[keys.RECENT_NOTIFICATIONS].ttl = timedelta(0)
    incident = await _escalated(client, store, source)
    await client.post("/api/v1/alerts", json=payload({**alert(), "status": "resolved"}))
    refired = alert(starts_at=datetime.fromisoformat("2026-11-28T12:10:00+00:00"))
    body = await (await client.post("/api/v1/alerts", json=payload(refired))).json()
    assert body["joined_incidents"] == [incident.id]
    assert body["reanalysed_incidents"] == [incident.id]


async def test_an_incident_escalated_longer_than_the_hold_limit_no_longer_takes_new_alerts(
    make_client: Any, store: Store, source: WorldSource
) -> None:
    client = await make_client(
        lifecycle=LifecycleConfig(watch_interval=600, escalated_hold_limit=timedelta(minutes=30))
    )
    incident = await _escalated(client, store, source)
    async with store.session() as session:
        row = await IncidentRepository(session).get(incident.id, for_update=True)
        row.updated_at = utcnow() - timedelta(minutes=31)
    newer = alert(starts_at=datetime.fromisoformat("2026-11-28T12:40:00+00:00"))
    body = await (await client.post("/api/v1/alerts", json=payload(newer))).json()
    assert body["closed_incidents"] == [incident.id]
    assert len(body["opened_incidents"]) == 1
    await settle(client)
    old, new = await incidents_of(store)
    assert old.status == IncidentStatus.CLOSED and "escalated for more than 30 min" in (
        old.status_reason or ""
    )
    assert (new.previous_incident_id, new.previous_relation) == (old.id, "superseded_escalated")


# the parts


def test_recent_notifications_are_answered_from_memory_only_for_their_ttl() -> None:
    from analyzer.admission import AlertLimits, admit_alerts

    [admitted], _ = admit_alerts([alert()], AlertLimits())
    recent = RecentNotifications(ttl=timedelta(seconds=20))
    now = utcnow()
    recent.remember([admitted], now=now)
    assert recent.seen(admitted, now=now + timedelta(seconds=19))
    assert not recent.seen(admitted, now=now + timedelta(seconds=20))


def test_traffic_changes_read_against_the_baseline() -> None:
    exact = Baseline(shares={"a-1": 100}, exact=True, source="analysis")
    assert change_between(exact, {"a-1": 100}) is None
    new = change_between(exact, {"a-1": 90, "a-2": 10})
    assert new is not None and new.trigger is Trigger.NEW_REVISION
    moved = change_between(Baseline(shares={"a-1": 50, "a-2": 50}, exact=True, source="x"), {"a-1": 100})
    assert moved is not None and moved.trigger is Trigger.TRAFFIC_MOVED
    # Only the set of serving revisions is known: shares moving between them is not a change.
    loose = Baseline(shares={"a-1": 0, "a-2": 0}, exact=False, source="x")
    assert change_between(loose, {"a-1": 30, "a-2": 70}) is None


def test_the_baseline_is_what_the_last_analysis_or_applied_action_saw() -> None:
    now = utcnow()
    incident = Incident(
        context={
            "observed_at": (now - timedelta(seconds=60)).isoformat(),
            "revisions": [{"name": "a-2", "traffic_percent": 100}, {"name": "a-1", "traffic_percent": 0}],
        }
    )
    assert baseline_of(incident, []) == Baseline(shares={"a-2": 100}, exact=True, source="analysis")
    rollback = Action(
        id=7,
        applied_at=now,
        result={"traffic": [{"type": "REVISION", "revision": "a-1", "percent": 100}]},
    )
    assert baseline_of(incident, [rollback]) == Baseline(shares={"a-1": 100}, exact=True, source="action 7")
    assert baseline_of(Incident(context=None), []) is None  # unknown: no change can be told


def test_a_later_round_judges_its_own_fault() -> None:
    starts = utcnow() - timedelta(minutes=5)
    info = AlertInfo(
        name="HighErrorRate",
        status="firing",
        starts_at=starts,
        fingerprint="f00d",
        labels={"service": SERVICE},
    )
    assert round_alert(Incident(round_started_at=None), info) is info
    later = starts + timedelta(minutes=4)
    assert round_alert(Incident(round_started_at=later), info).starts_at == later
