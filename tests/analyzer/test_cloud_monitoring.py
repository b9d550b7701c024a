"""Cloud Monitoring's webhook notifications as a trigger, on SQLite and PostgreSQL: the same records,
idempotency, joining and resolution as Alertmanager's webhook, and a 4xx naming each bad field."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
import yaml
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from analyzer import AnalyzerConfig, ProcessingConfig, create_app, keys
from analyzer.cloud_monitoring import (
    BasicCredentials,
    CloudMonitoringConfig,
    fingerprint,
    parse_notification,
)
from analyzer.exceptions import PayloadInvalid
from analyzer.routes import OPENAPI_PATH
from incidents import Incident, IncidentAlert, IncidentRepository, Store
from incidents.runtime import Secret
from tests.support.alerts import alert, payload
from tests.support.cloud_monitoring import STARTED_AT, notification
from tests.support.contexts import StaticContextSource

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
TOKEN = "cm-token-0123456789abcdef"
USER, PASSWORD = "cloud-monitoring", "basic-password-for-tests"
URL = f"/api/v1/cloud-monitoring?auth_token={TOKEN}"
SPEC = yaml.safe_load(OPENAPI_PATH.read_text())
CONFIG = CloudMonitoringConfig(
    token=Secret(TOKEN), basic=BasicCredentials(username=USER, password=Secret(PASSWORD))
)


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
        overrides.setdefault("cloud_monitoring", CONFIG)
        app = create_app(AnalyzerConfig(**overrides), context_source=source.factory(), store=store)
        clients.append(await aiohttp_client(app))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()


async def settle(client: TestClient[Any, Any]) -> None:
    async with asyncio.timeout(10):
        await client.app[keys.PROCESSOR].wait_idle()


async def count(store: Store, model: type) -> int:
    async with store.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def incidents_of(store: Store, service: str) -> list[Incident]:
    async with store.session() as session:
        return list(await IncidentRepository(session).list_incidents(service=service))


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_an_open_notification_opens_an_incident_like_an_alertmanager_alert(
    make_client: Any, store: Store
) -> None:
    client = await make_client()
    response = await client.post(URL, json=notification())
    assert response.status == 200
    body = await response.json()
    assert (body["received"], body["new"], body["duplicate"], len(body["opened_incidents"])) == (1, 1, 0, 1)
    await settle(client)
    [incident] = await incidents_of(store, "demo-app-a")
    assert incident.status == "queued"
    assert incident.decision is not None and incident.decision["action"] == "ROLLBACK"
    assert incident.severity == "critical"
    assert incident.summary is not None and "0.081" in incident.summary
    async with store.session() as session:
        [stored] = await IncidentRepository(session).list_alerts(incident.id)
    # The PromQL condition's alert rule names the alert, as Alertmanager would.
    assert stored.alertname == "HighErrorRate"
    assert stored.fingerprint == fingerprint("0.nwl1u3ie0gk0")
    assert len(stored.fingerprint) == 32
    assert stored.starts_at.replace(tzinfo=UTC) == datetime.fromtimestamp(STARTED_AT, UTC)
    assert stored.labels["service"] == "demo-app-a"
    assert stored.labels["revision_name"] == "demo-app-a-00002-bad"
    assert stored.labels["cloud_monitoring_incident_id"] == "0.nwl1u3ie0gk0"
    assert stored.annotations["policy_name"] == "Remediator: HighErrorRate"
    assert stored.annotations["observed_value"] == "0.081"
    assert stored.generator_url is not None and stored.generator_url.startswith("https://console.cloud")
    detail = await (await client.get(f"/api/v1/incidents/{incident.id}")).json()
    assert detail["timeline"][0]["actor"] == "cloud-monitoring"
    metrics = await (await client.get("/metrics")).text()
    assert 'remediator_cloud_monitoring_requests_total{code="200",endpoint="webhook"} 1.0' in metrics
    assert 'remediator_cloud_monitoring_notifications_total{outcome="new"} 1.0' in metrics
    assert "remediator_incidents_opened_total 1.0" in metrics


async def test_repeats_and_concurrent_deliveries_record_one_alert(make_client: Any, store: Store) -> None:
    client = await make_client()
    responses = await asyncio.gather(*(client.post(URL, json=notification()) for _ in range(6)))
    assert [r.status for r in responses] == [200] * 6
    results = [await r.json() for r in responses]
    assert sum(r["new"] for r in results) == 1
    assert sum(r["duplicate"] for r in results) == 5
    # Cloud Monitoring's repeat notifications carry the same incident id and start.
    again = await (await client.post(URL, json=notification())).json()
    assert (again["new"], again["duplicate"]) == (0, 1)
    await settle(client)
    assert await count(store, IncidentAlert) == 1
    assert await count(store, Incident) == 1


async def test_a_notification_joins_the_services_open_incident(
    make_client: Any, store: Store, source: StaticContextSource
) -> None:
    client = await make_client()
    source.gate = asyncio.Event()  # the analysis waits: the incident stays open
    opened = await (await client.post("/api/v1/alerts", json=payload(alert()))).json()
    body = await (await client.post(URL, json=notification(alert_rule="HighLatencyP95"))).json()
    assert body["opened_incidents"] == []
    assert body["joined_incidents"] == opened["opened_incidents"]
    source.gate.set()
    await settle(client)
    [incident] = await incidents_of(store, "demo-app-a")
    async with store.session() as session:
        alerts = await IncidentRepository(session).list_alerts(incident.id)
    assert sorted(a.alertname for a in alerts) == ["HighErrorRate", "HighLatencyP95"]
    detail = await (await client.get(f"/api/v1/incidents/{incident.id}")).json()
    joined = [e for e in detail["timeline"] if e["kind"] == "alert.joined"]
    assert [e["actor"] for e in joined] == ["cloud-monitoring"]


async def test_closed_resolves_the_alert_and_closes_an_incident_nothing_acted_on(
    make_client: Any, store: Store, source: StaticContextSource
) -> None:
    client = await make_client()
    source.gate = asyncio.Event()
    await client.post(URL, json=notification())
    async with asyncio.timeout(10):
        while not source.calls:
            await asyncio.sleep(0.01)
    ended = STARTED_AT + 300
    closed = notification(state="closed", ended_at=ended)
    body = await (await client.post(URL, json=closed)).json()
    assert (body["resolved"], len(body["closed_incidents"])) == (1, 1)
    repeat = await (await client.post(URL, json=closed)).json()
    assert (repeat["resolved"], repeat["duplicate"]) == (0, 1)
    source.gate.set()
    await settle(client)
    [incident] = await incidents_of(store, "demo-app-a")
    assert incident.status == "closed"
    async with store.session() as session:
        [stored] = await IncidentRepository(session).list_alerts(incident.id)
    assert stored.status == "resolved"
    assert stored.ends_at is not None
    assert stored.ends_at.replace(tzinfo=UTC) == datetime.fromtimestamp(ended, UTC)


async def test_what_remediator_cannot_act_on_is_answered_and_ignored(make_client: Any, store: Store) -> None:
    client = await make_client()
    for body in (
        notification(service=None),  # not a Cloud Run service's resource
        notification(state="closed"),  # closed, never seen open
        notification(version="test", state="OPEN", started_at=0),  # the console's test notification
    ):
        response = await client.post(URL, json=body)
        assert response.status == 200
        result = await response.json()
        assert (result["received"], result["ignored"], result["new"]) == (1, 1, 0)
    assert await count(store, IncidentAlert) == 0
    assert await count(store, Incident) == 0


async def test_the_channels_token_or_basic_credentials_are_required(make_client: Any, store: Store) -> None:
    client = await make_client()
    good = await client.post("/api/v1/cloud-monitoring", json=notification(), headers=basic(USER, PASSWORD))
    assert good.status == 200
    refused = [
        await client.post("/api/v1/cloud-monitoring", json=notification(incident_id=f"x{n}"), **kwargs)
        for n, kwargs in enumerate(
            [
                {},
                {"params": {"auth_token": TOKEN + "x"}},
                {"params": {"auth_token": ""}},
                {"headers": basic(USER, PASSWORD + "x")},
                {"headers": basic(USER + "x", PASSWORD)},
                {"headers": {"Authorization": "Basic %%%"}},
                {"headers": {"Authorization": f"Bearer {TOKEN}"}},
            ]
        )
    ]
    for response in refused:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
        assert "auth_token" in (await response.json())["error"]
    assert await count(store, IncidentAlert) == 1
    metrics = await (await client.get("/metrics")).text()
    assert 'remediator_cloud_monitoring_requests_total{code="401",endpoint="webhook"} 7.0' in metrics

    token_only = await make_client(cloud_monitoring=CloudMonitoringConfig(token=Secret(TOKEN)))
    response = await token_only.post(
        "/api/v1/cloud-monitoring", json=notification(), headers=basic(USER, PASSWORD)
    )
    assert response.status == 401


async def test_the_webhook_is_refused_until_credentials_are_set(make_client: Any, store: Store) -> None:
    for config in (None, CloudMonitoringConfig()):
        client = await make_client(cloud_monitoring=config)
        response = await client.post(URL, json=notification())
        assert response.status == 403
        assert "CLOUD_MONITORING_TOKEN" in (await response.json())["error"]
    assert await count(store, IncidentAlert) == 0


def without(field: str) -> dict[str, Any]:
    body = notification()
    if field == "incident":
        del body["incident"]
    else:
        del body["incident"][field]
    return body


def changed(**fields: Any) -> dict[str, Any]:
    body = notification()
    body["incident"].update(fields)
    return body


def with_service(name: Any) -> dict[str, Any]:
    body = notification()
    body["incident"]["resource"]["labels"]["service_name"] = name
    return body


BAD_NOTIFICATIONS: list[tuple[Any, str]] = [
    (without("incident"), "incident"),
    (without("incident_id"), "incident.incident_id"),
    (without("state"), "incident.state"),
    (without("started_at"), "incident.started_at"),
    ({"incident": notification()["incident"]}, "version"),
    ({**notification(), "version": "2.0"}, "version"),
    ({**notification(), "version": 1.2}, "version"),
    (changed(state="acknowledged"), "incident.state"),
    (changed(state=1), "incident.state"),
    (changed(incident_id=12345), "incident.incident_id"),
    (changed(incident_id=""), "incident.incident_id"),
    (changed(incident_id="0.abc\x00def"), "incident.incident_id"),
    (changed(incident_id="x" * 256), "incident.incident_id"),
    (changed(started_at="1700000000"), "incident.started_at"),
    (changed(started_at=1700000000.5), "incident.started_at"),
    (changed(started_at=True), "incident.started_at"),
    (changed(started_at=-1), "incident.started_at"),
    (changed(started_at=253402300800), "incident.started_at"),
    (changed(ended_at="soon"), "incident.ended_at"),
    (changed(resource={"labels": ["service_name"]}), "incident.resource.labels"),
    (changed(resource={"labels": {"service_name": 7}}), "incident.resource.labels.service_name"),
    (with_service("Demo_App"), "incident.resource.labels.service_name"),
    (with_service(""), "incident.resource.labels.service_name"),
    (changed(summary=["not", "text"]), "incident.summary"),
    (changed(condition="HighErrorRate"), "incident.condition"),
    ([notification()], "body"),
    ("not json", "body"),
]


async def test_bad_notifications_get_a_400_naming_the_field_and_record_nothing(
    make_client: Any, store: Store
) -> None:
    client = await make_client()
    for body, field in BAD_NOTIFICATIONS:
        if isinstance(body, str):
            response = await client.post(URL, data=body, headers={"Content-Type": "application/json"})
        else:
            response = await client.post(URL, json=body)
        assert response.status == 400, (field, await response.text())
        error = await response.json()
        assert error["field"] == field, error
    assert await count(store, IncidentAlert) == 0
    metrics = await (await client.get("/metrics")).text()
    failed = len(BAD_NOTIFICATIONS)
    assert (
        f'remediator_cloud_monitoring_requests_total{{code="400",endpoint="webhook"}} {failed}.0' in metrics
    )


async def test_the_webhook_takes_only_json_bodies(make_client: Any, store: Store) -> None:
    client = await make_client()
    response = await client.post(URL, data="version=1.2", headers={"Content-Type": "text/plain"})
    assert response.status == 415
    assert await count(store, IncidentAlert) == 0


def incident(**fields: Any) -> bytes:
    body = notification()
    body["incident"].update(fields)
    return json.dumps(body).encode()


def test_the_alert_takes_the_rule_then_the_policy_then_the_condition_name() -> None:
    assert parse_notification(incident()).alert.labels["alertname"] == "HighErrorRate"
    no_rule = notification(alert_rule=None)
    assert parse_notification(json.dumps(no_rule)).alert.labels["alertname"] == "Remediator: HighErrorRate"
    assert parse_notification(incident(condition=None, policy_name=None)).alert.labels["alertname"] == (
        "HighErrorRate (Cloud Run request metrics, PromQL)"
    )
    nameless = parse_notification(incident(condition=None, policy_name="\x00", condition_name=None))
    assert nameless.alert.labels["alertname"] == "CloudMonitoringIncident"
    long_name = parse_notification(incident(condition=None, policy_name="p" * 600)).alert
    assert len(long_name.labels["alertname"]) == 255
    assert long_name.labels["alertname"].endswith("characters]")


def test_the_mapping_of_state_time_severity_and_free_text() -> None:
    closed = parse_notification(incident(state="CLOSED", ended_at=STARTED_AT + 60.0)).alert
    assert closed.status == "resolved"
    assert closed.ends_at == datetime.fromtimestamp(STARTED_AT + 60, UTC)
    still_open = parse_notification(incident(ended_at=STARTED_AT + 60)).alert
    assert (still_open.status, still_open.ends_at) == ("firing", None)
    assert parse_notification(incident(severity="Warning")).alert.labels["severity"] == "warning"
    assert "severity" not in parse_notification(incident(severity="No severity")).alert.labels
    text = parse_notification(incident(summary="line one\nline\x00 two", documentation="runbook")).alert
    assert text.annotations["summary"] == "line one\nline two"
    assert text.annotations["documentation"] == "runbook"
    assert parse_notification(incident(threshold_value=0.02)).alert.annotations["threshold_value"] == "0.02"
    newer = notification(version="1.3")
    assert parse_notification(json.dumps(newer)).alert.labels["service"] == "demo-app-a"
    test = parse_notification(json.dumps(notification(version="test")))
    assert test.test and test.alert.service is None


def test_the_fingerprint_is_the_incident_ids_and_never_alertmanagers() -> None:
    assert fingerprint("0.abc") == hashlib.sha256(b"cloud-monitoring:0.abc").hexdigest()[:32]
    assert fingerprint("0.abc") != fingerprint("0.abd")
    with pytest.raises(PayloadInvalid) as refused:
        parse_notification(b"{}")
    assert refused.value.field == "version"


def test_the_openapi_schema_takes_what_the_parser_takes() -> None:
    """The served document's schema and the parser agree, case by case (the fuzz test relies on it)."""
    schema = {"$ref": "#/components/schemas/CloudMonitoringNotification", "components": SPEC["components"]}
    validator = jsonschema.Draft202012Validator(schema)
    accepted = [
        notification(),
        notification(state="CLOSED", ended_at=STARTED_AT + 5),
        notification(service=None, version="test"),
        notification(version="1.3"),
        changed(started_at=float(STARTED_AT), resource=None, metric=None, condition=None, url=None),
    ]
    for body in accepted:
        assert validator.is_valid(body), body
        parse_notification(json.dumps(body))
    for body, field in BAD_NOTIFICATIONS:
        if not isinstance(body, str):
            assert not validator.is_valid(body), field
