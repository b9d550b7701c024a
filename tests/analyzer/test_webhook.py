"""The Alertmanager webhook and the processing behind it, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import DataError

from analyzer import AnalyzerConfig, PolicyConfig, PolicyMode, ProcessingConfig, create_app, keys
from analyzer.admission import AlertLimits, admit_alerts
from analyzer.webhook import ParsedPayload, ingest
from incidents import (
    Action,
    Incident,
    IncidentAlert,
    IncidentRepository,
    IncidentStatus,
    Store,
    StoreConfig,
    utcnow,
)
from incidents.runtime import Secret
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
    # The rolled-back revision was created three minutes before the alert: the fault began with it.
    assert incident.fault_started_source == "revision_created"
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
        "fault.confirmed",
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
    # The analysis must hold the incident (waiting at the gate) before the alert resolves; otherwise
    # the resolution closes an incident nobody claimed yet and there is no decision to discard.
    async with asyncio.timeout(10):
        while not source.calls:
            await asyncio.sleep(0.01)
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


async def test_a_payload_that_records_nothing_is_refused_with_its_rejections(
    make_client: Any, store: Store
) -> None:
    # One alert ignored (no service), one rejected (not a revision name): nothing is written, so the
    # rejection is the answer (400), not a 200 that hides it.
    client = await make_client()
    bad = alert(service="demo-app-a")
    bad["labels"]["revision"] = "*"
    response = await client.post("/api/v1/alerts", json=payload(alert(service=""), bad))
    assert response.status == 400
    body = await response.json()
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [(1, "bad_revision_name")]
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
    response = await client.post(
        "/api/v1/alerts", data=json.dumps(big), headers={"Content-Type": "application/json"}
    )
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


async def post_json(client: TestClient[Any, Any], body: dict[str, Any]) -> Any:
    response = await client.post("/api/v1/alerts", json=body)
    return response.status, await response.json()


async def test_poison_alerts_are_skipped_one_by_one_and_the_others_recorded(
    make_client: Any, store: Store
) -> None:
    """Each of these broke PostgreSQL's insert (500, retried for ever by Alertmanager, the whole
    notification lost) while SQLite took them; now each is refused alone, on both."""
    client = await make_client()
    nul_annotation = alert(alertname="HighLatencyP95", severity="warning")
    nul_annotation["annotations"]["description"] = "p95\x00 over 1 s\x07"
    body = payload(
        alert(),
        alert(service="s" * 300),
        alert(service="payments", severity="x" * 40),
        alert(service="payments", extra_labels={"team": "pay\x00ments"}),
        nul_annotation,
        {**alert(service="payments"), "startsAt": "2026-13-01T00:00:00Z"},
        alert(service="payments"),
    )
    status, result = await post_json(client, body)
    assert status == 200
    assert [(r["index"], r["reason"], r["field"]) for r in result["rejected"]] == [
        (1, "bad_service_name", "alerts.1.labels.service"),
        (2, "value_too_long", "alerts.2.labels.severity"),
        (3, "control_character", "alerts.3.labels.team"),
        (5, "bad_timestamp", "alerts.5.startsAt"),
    ]
    assert all(r["message"] for r in result["rejected"])
    assert (result["received"], result["new"], len(result["opened_incidents"])) == (7, 3, 2)
    await settle(client)
    assert await count(store, IncidentAlert) == 3
    async with store.session() as session:
        stored = {a.alertname: a for a in await session.scalars(select(IncidentAlert))}
    assert stored["HighLatencyP95"].annotations["description"] == "p95 over 1 s"
    assert {incident.service for incident in await all_incidents(store)} == {"demo-app-a", "payments"}
    metrics = await (await client.get("/metrics")).text()
    for reason, times in (("bad_service_name", 1), ("value_too_long", 1), ("control_character", 1)):
        assert f'remediator_alerts_rejected_total{{reason="{reason}"}} {times}.0' in metrics
    assert 'remediator_alerts_rejected_total{reason="too_many_labels"} 0.0' in metrics
    assert 'remediator_webhook_requests_total{code="200"} 1.0' in metrics
    # The same payload again: the recorded alerts are duplicates, the poison still refused, no 5xx.
    status, again = await post_json(client, body)
    assert (status, again["duplicate"], again["new"], len(again["rejected"])) == (200, 3, 0, 4)


def refuse_alerts(monkeypatch: pytest.MonkeyPatch, *fingerprints: str) -> None:
    """The store refuses these alerts' rows, as PostgreSQL refuses a value a column cannot hold."""
    insert = IncidentRepository.add_alert

    async def add_alert(self: IncidentRepository, incident: Incident, **row: Any) -> bool:
        if row["fingerprint"] in fingerprints:
            raise DataError("INSERT INTO incident_alerts ...", {}, Exception("value too long for type"))
        return await insert(self, incident, **row)

    monkeypatch.setattr(IncidentRepository, "add_alert", add_alert)


async def test_a_row_the_store_refuses_costs_only_its_own_alert(
    make_client: Any, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rule the admission lacks must not cost the notification: the refused alert's savepoint is
    rolled back (with the incident it opened) and the others are recorded."""
    client = await make_client()
    refused = alert(service="payments", alertname="HighLatencyP95")
    refuse_alerts(monkeypatch, refused["fingerprint"])
    body = payload(alert(), refused, alert(service="payments"))
    status, result = await post_json(client, body)
    assert status == 200, result
    assert (result["new"], len(result["opened_incidents"])) == (2, 2)
    [rejection] = result["rejected"]
    assert (rejection["index"], rejection["reason"], rejection["field"]) == (
        1,
        "refused_by_store",
        "alerts.1",
    )
    assert "value too long" in rejection["message"]
    await settle(client)
    incidents = {incident.service: incident for incident in await all_incidents(store)}
    assert sorted(incidents) == ["demo-app-a", "payments"]
    async with store.session() as session:
        alerts = list(await session.scalars(select(IncidentAlert).order_by(IncidentAlert.id)))
    assert [(a.alertname, a.incident_id) for a in alerts] == [
        ("HighErrorRate", incidents["demo-app-a"].id),
        ("HighErrorRate", incidents["payments"].id),
    ]
    metrics = await (await client.get("/metrics")).text()
    assert 'remediator_alerts_rejected_total{reason="refused_by_store"} 1.0' in metrics
    # Not remembered as recorded: a resend tries the refused alert again.
    status, again = await post_json(client, body)
    assert (status, again["duplicate"], [r["index"] for r in again["rejected"]]) == (200, 2, [1])


async def test_a_payload_whose_every_row_the_store_refuses_is_a_400(
    make_client: Any, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client()
    body = payload(alert(), alert(service="payments"))
    refuse_alerts(monkeypatch, *(a["fingerprint"] for a in body["alerts"]))
    status, error = await post_json(client, body)
    assert status == 400, error
    assert error["field"] == "alerts.0"
    assert "the incident store refused the alert" in error["error"]
    assert [(r["index"], r["reason"]) for r in error["rejected"]] == [
        (0, "refused_by_store"),
        (1, "refused_by_store"),
    ]
    assert await count(store, Incident) == 0
    metrics = await (await client.get("/metrics")).text()
    assert 'remediator_webhook_requests_total{code="400"} 1.0' in metrics


async def test_rows_postgresql_refuses_are_skipped_alone_and_sqlite_keeps_them(store: Store) -> None:
    """The same alerts on both stores, past the admission (as a rule it lacked would let them):
    PostgreSQL refuses a severity longer than its column and a NUL in JSONB, SQLite keeps both; on
    neither does the valid alert beside them get lost."""
    admitted, _ = admit_alerts([alert(), alert(service="payments"), alert(service="orders")], AlertLimits())
    valid, long_severity, nul_label = admitted
    long_severity = replace(long_severity, labels={**long_severity.labels, "severity": "x" * 40})
    nul_label = replace(nul_label, labels={**nul_label.labels, "team": "pay\x00ments"})
    parsed = ParsedPayload(received=3, alerts=[valid, long_severity, nul_label], rejected=[])
    result = await ingest(store, parsed, now=utcnow())
    recorded = {incident.service for incident in await all_incidents(store)}
    if store.dialect == "postgresql":
        assert [(r.index, r.reason) for r in result.rejected] == [
            (1, "refused_by_store"),
            (2, "refused_by_store"),
        ]
        assert "character varying(32)" in result.rejected[0].message
        assert (result.new, recorded) == (1, {"demo-app-a"})
    else:
        assert (result.rejected, result.new) == ([], 3)
        assert recorded == {"demo-app-a", "payments", "orders"}


async def test_a_one_mib_annotation_is_cut_and_the_alerts_beside_it_are_kept(
    make_client: Any, store: Store
) -> None:
    """Under the default body limit a notification with a 1 MiB description is read whole: the
    description is cut to REMEDIATOR_MAX_ANNOTATION_CHARS, and no alert of it is lost (a 413 used to
    drop all six, and Alertmanager does not retry a 4xx)."""
    client = await make_client()
    verbose = alert(service="payments")
    verbose["annotations"]["description"] = "x" * (1 << 20)
    body = payload(*[alert(service=f"svc-{n}") for n in range(5)], verbose)
    response = await client.post(
        "/api/v1/alerts",
        data=io.BytesIO(json.dumps(body).encode()),  # a stream: a large bytes body blocks the loop
        headers={"Content-Type": "application/json"},
    )
    result = await response.json()
    assert response.status == 200, result
    assert (result["new"], result["rejected"]) == (6, [])
    async with store.session() as session:
        stored = await session.scalar(
            select(IncidentAlert).where(IncidentAlert.fingerprint == verbose["fingerprint"])
        )
    assert stored is not None
    marker = f"... [cut {(1 << 20) - 4096} characters]"
    assert stored.annotations["description"] == "x" * (4096 - len(marker)) + marker


async def all_incidents(store: Store) -> list[Incident]:
    async with store.session() as session:
        return list(await IncidentRepository(session).list_incidents())


async def test_a_payload_with_no_recordable_alert_is_a_400_naming_each_problem(
    make_client: Any, store: Store
) -> None:
    client = await make_client()
    body = payload(
        alert(service="x" * 256),
        {**alert(), "fingerprint": "zz\x00"},
        alert(extra_labels={"note": "\x00"}),
    )
    status, error = await post_json(client, body)
    assert status == 400
    assert error["field"] == "alerts.0.labels.service"
    assert "no alert of the payload can be recorded" in error["error"]
    assert "and 2 more" in error["error"]
    assert [(r["index"], r["reason"]) for r in error["rejected"]] == [
        (0, "bad_service_name"),
        (1, "bad_fingerprint"),
        (2, "control_character"),
    ]
    assert await count(store, Incident) == 0
    assert await count(store, IncidentAlert) == 0
    metrics = await (await client.get("/metrics")).text()
    assert 'remediator_webhook_requests_total{code="400"} 1.0' in metrics
    assert 'remediator_alerts_rejected_total{reason="bad_fingerprint"} 1.0' in metrics


async def test_more_alerts_than_the_cap_are_refused_whole(make_client: Any, store: Store) -> None:
    client = await make_client(alert_limits=AlertLimits(max_alerts=3))
    status, error = await post_json(client, payload(*[alert(service=f"svc-{n}") for n in range(4)]))
    assert (status, error["field"]) == (400, "alerts")
    assert "4 alerts in one payload, more than the limit of 3" in error["error"]
    assert await count(store, Incident) == 0
    status, _ = await post_json(client, payload(*[alert(service=f"svc-{n}") for n in range(3)]))
    assert status == 200
    assert await count(store, Incident) == 3


@pytest.mark.parametrize(
    "headers",
    [{"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}],
)
async def test_the_webhook_takes_only_json_bodies(
    make_client: Any, store: Store, headers: dict[str, str]
) -> None:
    """A web page can post a form or text/plain to any address without a preflight; never JSON."""
    client = await make_client()
    response = await client.post(
        "/api/v1/alerts", data=json.dumps(payload(alert())).encode(), headers=headers
    )
    assert response.status == 415
    assert "application/json" in (await response.json())["error"]
    assert await count(store, Incident) == 0
    metrics = await (await client.get("/metrics")).text()
    assert 'remediator_webhook_requests_total{code="415"} 1.0' in metrics


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
    assert await ready.json() == {"status": "ready", "store": "ok"}
    insecure = await make_client(insecure_no_auth=True)
    warned = await (await insecure.get("/readyz")).json()
    assert warned["status"] == "ready"
    assert "--insecure-no-auth" in warned["warnings"][0]
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
    body = await response.json()
    assert body == {"status": "unavailable", "store": "unreachable"}  # no host, user or database name
    await client.close()
    await store.dispose()
