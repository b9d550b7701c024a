"""The Alertmanager webhook and the processing behind it, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from analyzer import keys
from analyzer.app import AnalyzerConfig, create_app
from analyzer.policy import PolicyConfig, PolicyMode
from analyzer.processing import ProcessingConfig
from incidents import IncidentStatus
from incidents.db import Store, StoreConfig
from incidents.models import Action, Incident, IncidentAlert, utcnow
from incidents.repository import IncidentRepository
from incidents.secrets import Secret
from tests.support.alerts import alert, payload
from tests.support.contexts import StaticContextSource

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
TOKEN = "s3cret-webhook-token"


@pytest.fixture
def source() -> StaticContextSource:
    return StaticContextSource()


@pytest.fixture
async def make_client(
    store: Store, aiohttp_client: ClientFactory, source: StaticContextSource
) -> AsyncIterator[Callable[..., Awaitable[TestClient[Any, Any]]]]:
    clients: list[TestClient[Any, Any]] = []

    async def make(**overrides: Any) -> TestClient[Any, Any]:
        overrides.setdefault("processing", ProcessingConfig(sweep_interval=0.05, workers=2))
        config = AnalyzerConfig(**overrides)
        app = create_app(config, context_source=source.factory(), store=store)
        clients.append(await aiohttp_client(app))
        return clients[-1]

    yield make
    # Stop every app (and its background work) before the store fixture disposes the engine.
    for client in clients:
        await client.close()


async def settle(client: TestClient[Any, Any]) -> None:
    async with asyncio.timeout(10):
        await client.app[keys.PROCESSOR].wait_idle()


async def count(store: Store, model: type) -> int:
    async with store.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def only_incident(store: Store) -> Incident:
    async with store.session() as session:
        rows = await IncidentRepository(session).list_incidents()
    assert len(rows) == 1
    return rows[0]


async def test_firing_alert_opens_an_incident_and_queues_a_rollback(make_client: Any, store: Store) -> None:
    client = await make_client()
    response = await client.post("/api/v1/alerts", json=payload(alert()))
    assert response.status == 200
    body = await response.json()
    assert (body["new"], body["duplicate"], len(body["opened_incidents"])) == (1, 0, 1)
    await settle(client)
    incident = await only_incident(store)
    assert incident.status == "queued"
    assert incident.engine == "rules"
    assert incident.decision["action"] == "ROLLBACK"
    assert incident.decision["target_revision"] == "demo-app-a-00001-ok"
    assert incident.fault_started_source == "alert_starts_at"
    async with store.session() as session:
        action = await session.scalar(select(Action))
    assert action is not None
    assert (action.type, action.status, action.incident_id) == ("ROLLBACK", "queued", incident.id)
    assert action.params["target_revision"] == "demo-app-a-00001-ok"
    assert action.params["from_revision"] == "demo-app-a-00002-bad"

    detail = await (await client.get(f"/api/v1/incidents/{incident.id}")).json()
    kinds = [event["kind"] for event in detail["timeline"]]
    assert kinds == [
        "incident.opened",
        "status.analyzing",
        "status.decided",
        "policy.execute",
        "action.queued",
        "status.queued",
    ]
    assert detail["recommendation"]["action"] == "ROLLBACK"
    assert detail["context"]["schema"] == "incident-context/v1"
    assert detail["actions"][0]["type"] == "ROLLBACK"
    assert detail["alerts"][0]["alertname"] == "HighErrorRate"


async def test_redelivery_and_concurrent_ha_delivery_never_open_a_second_incident(
    make_client: Any, store: Store, source: StaticContextSource
) -> None:
    client = await make_client()
    body = payload(alert())
    responses = await asyncio.gather(*(client.post("/api/v1/alerts", json=body) for _ in range(10)))
    assert [r.status for r in responses] == [200] * 10
    results = [await r.json() for r in responses]
    assert sum(r["new"] for r in results) == 1
    assert sum(r["duplicate"] for r in results) == 9
    await settle(client)
    again = await (await client.post("/api/v1/alerts", json=body)).json()
    assert (again["new"], again["duplicate"]) == (0, 1)
    assert await count(store, Incident) == 1
    assert await count(store, IncidentAlert) == 1
    assert await count(store, Action) == 1
    assert len(source.calls) == 1


async def test_another_alert_for_the_service_joins_its_open_incident(make_client: Any, store: Store) -> None:
    source_gate = asyncio.Event()
    client = await make_client()
    client.app[keys.PROCESSOR].context_source.gate = source_gate
    await client.post("/api/v1/alerts", json=payload(alert()))
    latency = alert(alertname="HighLatencyP95", severity="warning")
    body = await (await client.post("/api/v1/alerts", json=payload(latency))).json()
    assert body["opened_incidents"] == []
    assert len(body["joined_incidents"]) == 1
    other = await (await client.post("/api/v1/alerts", json=payload(alert(service="payments")))).json()
    assert len(other["opened_incidents"]) == 1
    source_gate.set()
    await settle(client)
    assert await count(store, Incident) == 2
    incident = await only_incident_for(store, "demo-app-a")
    async with store.session() as session:
        alerts = await IncidentRepository(session).list_alerts(incident.id)
    assert sorted(a.alertname for a in alerts) == ["HighErrorRate", "HighLatencyP95"]


async def only_incident_for(store: Store, service: str) -> Incident:
    async with store.session() as session:
        rows = await IncidentRepository(session).list_incidents(service=service)
    assert len(rows) == 1
    return rows[0]


async def test_alert_resolving_before_any_action_closes_the_incident(
    make_client: Any, store: Store, source: StaticContextSource
) -> None:
    client = await make_client()
    source.gate = asyncio.Event()
    firing = alert()
    await client.post("/api/v1/alerts", json=payload(firing))
    resolved = {**firing, "status": "resolved", "endsAt": "2026-11-28T12:05:00Z"}
    body = await (await client.post("/api/v1/alerts", json=payload(resolved))).json()
    assert body["resolved"] == 1
    assert len(body["closed_incidents"]) == 1
    source.gate.set()  # the analysis finishes after the incident closed: its decision is discarded
    await settle(client)
    incident = await only_incident(store)
    assert incident.status == "closed"
    assert "recovered on its own" in (incident.status_reason or "")
    assert await count(store, Action) == 0
    detail = await (await client.get(f"/api/v1/incidents/{incident.id}")).json()
    kinds = [e["kind"] for e in detail["timeline"]]
    assert "alert.resolved" in kinds
    assert "analysis.discarded" in kinds


async def test_resolved_alert_cancels_a_queued_action_but_only_records_on_an_acting_incident(
    make_client: Any, store: Store
) -> None:
    client = await make_client()
    firing = alert()
    await client.post("/api/v1/alerts", json=payload(firing))
    await settle(client)
    incident = await only_incident(store)
    assert incident.status == "queued"
    async with store.session() as session:
        repo = IncidentRepository(session)
        row = await repo.get(incident.id)
        await repo.transition(row, IncidentStatus.ACTING, actor="test", message="applying")
    resolved = {**firing, "status": "resolved"}
    body = await (await client.post("/api/v1/alerts", json=payload(resolved))).json()
    assert body["closed_incidents"] == []
    incident = await only_incident(store)
    assert incident.status == "acting"
    detail = await (await client.get(f"/api/v1/incidents/{incident.id}")).json()
    assert detail["timeline"][-1]["kind"] == "alert.all_resolved"

    # Another service: resolved while its action is only queued -> closed and the action cancelled.
    other = alert(service="payments")
    await client.post("/api/v1/alerts", json=payload(other))
    await settle(client)
    await client.post("/api/v1/alerts", json=payload({**other, "status": "resolved"}))
    payments = await only_incident_for(store, "payments")
    assert payments.status == "closed"
    async with store.session() as session:
        action = await session.scalar(select(Action).where(Action.service == "payments"))
    assert action is not None
    assert action.status == "cancelled"


async def test_resolved_alert_never_seen_firing_is_ignored(make_client: Any, store: Store) -> None:
    client = await make_client()
    body = await (await client.post("/api/v1/alerts", json=payload(alert(status="resolved")))).json()
    assert (body["ignored"], body["resolved"]) == (1, 0)
    assert await count(store, Incident) == 0


async def test_alerts_without_a_service_label_are_ignored(make_client: Any, store: Store) -> None:
    client = await make_client()
    body = await (await client.post("/api/v1/alerts", json=payload(alert(service="")))).json()
    assert (body["received"], body["ignored"], body["new"]) == (1, 1, 0)
    assert await count(store, Incident) == 0


async def test_bearer_token_is_required_when_configured(make_client: Any, store: Store) -> None:
    client = await make_client(webhook_token=Secret(TOKEN))
    body = payload(alert())
    missing = await client.post("/api/v1/alerts", json=body)
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = await client.post("/api/v1/alerts", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    basic = await client.post("/api/v1/alerts", json=body, headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status == 401
    assert await count(store, Incident) == 0
    ok = await client.post("/api/v1/alerts", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status == 200
    metrics = await (await client.get("/metrics")).text()
    assert 'remediator_webhook_requests_total{code="401"} 3.0' in metrics
    assert 'remediator_webhook_requests_total{code="200"} 1.0' in metrics


async def test_oversized_body_is_refused_with_413_and_nothing_stored(make_client: Any, store: Store) -> None:
    client = await make_client(max_body_bytes=2048)
    big = payload(*[alert(service=f"svc-{n}") for n in range(40)])
    response = await client.post("/api/v1/alerts", data=json.dumps(big))
    assert response.status == 413
    assert "limit" in (await response.json())["error"]
    assert await count(store, Incident) == 0


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (b"{not json", "body", "malformed JSON"),
        (json.dumps({**payload(alert()), "version": "3"}).encode(), "version", "v4"),
        (
            json.dumps({k: v for k, v in payload(alert()).items() if k != "alerts"}).encode(),
            "alerts",
            "alerts",
        ),
        (json.dumps({**payload(alert()), "alerts": []}).encode(), "alerts", "alerts"),
        (
            json.dumps(payload({**alert(), "startsAt": "yesterday"})).encode(),
            "alerts.0.startsAt",
            "startsAt",
        ),
        (json.dumps(payload({**alert(), "fingerprint": ""})).encode(), "alerts.0.fingerprint", "fingerprint"),
        (
            json.dumps(payload({**alert(), "labels": {"service": "x"}})).encode(),
            "alerts.0.labels",
            "alertname",
        ),
        (json.dumps(payload({**alert(), "status": "pending"})).encode(), "alerts.0.status", "status"),
    ],
)
async def test_invalid_payloads_get_400_naming_the_problem_and_store_nothing(
    make_client: Any, store: Store, body: bytes, field: str, message: str
) -> None:
    client = await make_client()
    response = await client.post("/api/v1/alerts", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    error = await response.json()
    assert error["field"] == field
    assert message in error["error"]
    assert await count(store, Incident) == 0


async def test_work_left_in_analyzing_by_a_crashed_process_is_picked_up(
    make_client: Any, store: Store
) -> None:
    now = utcnow()
    async with store.session() as session:
        repo = IncidentRepository(session)
        incident, _ = await repo.open("demo-app-a", now=now, actor="test", message="opened")
        await repo.add_alert(
            incident,
            fingerprint="f00d",
            starts_at=now,
            alertname="HighErrorRate",
            status="firing",
            severity="critical",
            labels={"alertname": "HighErrorRate", "service": "demo-app-a"},
            annotations={},
            generator_url=None,
            received_at=now,
        )
        await repo.transition(incident, IncidentStatus.ANALYZING, actor="analyzer", message="x", now=now)
        incident.lease_owner = "analyzer-that-died"
        incident.lease_expires_at = now - timedelta(seconds=1)
    client = await make_client()
    async with asyncio.timeout(10):
        while (await only_incident(store)).status == "analyzing":
            await asyncio.sleep(0.05)
    await settle(client)
    incident = await only_incident(store)
    assert incident.status == "queued"
    detail = await (await client.get(f"/api/v1/incidents/{incident.id}")).json()
    assert "analysis restarted after an interrupted attempt" in [e["message"] for e in detail["timeline"]]


async def test_analysis_failure_is_recorded_retried_and_finally_fails_the_incident(
    make_client: Any, store: Store, source: StaticContextSource
) -> None:
    source.fail_with = RuntimeError("collector exploded")
    client = await make_client(processing=ProcessingConfig(sweep_interval=0.05, max_attempts=2))
    await client.post("/api/v1/alerts", json=payload(alert()))
    async with asyncio.timeout(15):
        while (await only_incident(store)).status != "failed":
            await asyncio.sleep(0.1)
    incident = await only_incident(store)
    assert "collector exploded" in (incident.status_reason or "")
    detail = await (await client.get(f"/api/v1/incidents/{incident.id}")).json()
    errors = [e for e in detail["timeline"] if e["kind"] == "analysis.error"]
    assert len(errors) == 2
    assert await count(store, Action) == 0
    metrics = await (await client.get("/metrics")).text()
    assert "remediator_analysis_errors_total 2.0" in metrics


async def test_policy_modes_hold_actions_back(make_client: Any, store: Store) -> None:
    client = await make_client(policy=PolicyConfig(mode=PolicyMode.DRY_RUN))
    await client.post("/api/v1/alerts", json=payload(alert()))
    await settle(client)
    incident = await only_incident(store)
    assert incident.status == "suppressed"
    assert incident.policy_verdict == "suppress"
    assert "dry-run" in (incident.policy_reason or "")
    assert await count(store, Action) == 0


async def test_health_readiness_and_metrics(make_client: Any) -> None:
    client = await make_client()
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["store"] == "ok"
    await client.post("/api/v1/alerts", json=payload(alert()))
    await settle(client)
    metrics = await client.get("/metrics")
    text = await metrics.text()
    assert metrics.content_type == "text/plain"
    assert 'remediator_alerts_received_total{outcome="new"} 1.0' in text
    assert 'remediator_decisions_total{action="ROLLBACK",engine="rules",verdict="execute"} 1.0' in text
    assert "remediator_decision_duration_seconds_count" in text


async def test_readyz_reports_an_unreachable_store(
    aiohttp_client: ClientFactory, source: StaticContextSource
) -> None:
    store = Store.from_config(StoreConfig(url="postgresql://nobody@127.0.0.1:1/none", connect_timeout=1))
    app = create_app(AnalyzerConfig(), context_source=source.factory(), store=store)
    client = await aiohttp_client(app)
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["status"] == "unavailable"
    await client.close()
    await store.dispose()
