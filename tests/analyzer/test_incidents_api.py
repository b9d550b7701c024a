"""The incidents HTTP API and its OpenAPI document."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import jsonschema
import pytest
import yaml
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from analyzer import AnalyzerConfig, PolicyConfig, PolicyMode, ProcessingConfig, create_app, keys
from analyzer.admission import AlertLimits, AlertRejected, admit_alert
from analyzer.routes import OPENAPI_PATH
from incidents import AlertInfo, IncidentContext, LogLine, RecentAction, Store
from incidents.runtime import Secret
from tests.support.alerts import alert, payload
from tests.support.contexts import StaticContextSource, bad_deploy_context

API_TOKEN = "api-token-for-tests"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SPEC = yaml.safe_load(OPENAPI_PATH.read_text())


def check(document: Any, schema_name: str) -> None:
    """Validate a response body against a schema of the OpenAPI document."""
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": SPEC["components"]}
    jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)


@pytest.fixture
async def client(
    store: Store, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> AsyncIterator[TestClient[Any, Any]]:
    config = AnalyzerConfig(
        api_token=Secret(API_TOKEN),
        policy=PolicyConfig(mode=PolicyMode.APPROVE),
        processing=ProcessingConfig(sweep_interval=0.05),
    )
    app = create_app(config, context_source=StaticContextSource().factory(), store=store)
    test_client = await aiohttp_client(app)
    yield test_client
    # Stop the app (and its background work) before the store fixture disposes the engine.
    await test_client.close()


async def open_incidents(client: TestClient[Any, Any], *services: str) -> list[int]:
    ids = []
    for service in services:
        body = await (await client.post("/api/v1/alerts", json=payload(alert(service=service)))).json()
        ids.extend(body["opened_incidents"])
    async with asyncio.timeout(10):
        await client.app[keys.PROCESSOR].wait_idle()
    return ids


def test_openapi_document_is_valid() -> None:
    validate(SPEC)


async def test_every_route_is_documented_and_every_documented_route_exists(
    client: TestClient[Any, Any],
) -> None:
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in client.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {
        (method, path.replace("{incident_id}", "{incident_id}"))
        for path, operations in SPEC["paths"].items()
        for method in operations
    }
    assert served == documented


async def test_openapi_is_served_as_yaml_and_json(client: TestClient[Any, Any]) -> None:
    as_json = await (await client.get("/api/v1/openapi.json")).json()
    assert as_json == SPEC
    as_yaml = await client.get("/api/v1/openapi.yaml")
    assert yaml.safe_load(await as_yaml.text()) == SPEC


async def test_the_served_document_states_this_servers_webhook_limits(
    store: Store, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> None:
    limits = AlertLimits(max_alerts=7, max_labels=9, max_label_chars=300)
    app = create_app(
        AnalyzerConfig(alert_limits=limits), context_source=StaticContextSource().factory(), store=store
    )
    client = await aiohttp_client(app)
    document = await (await client.get("/api/v1/openapi.json")).json()
    validate(document)
    schemas = document["components"]["schemas"]
    assert schemas["AlertmanagerWebhook"]["properties"]["alerts"]["maxItems"] == 7
    labels = schemas["AlertmanagerAlert"]["properties"]["labels"]
    assert (labels["maxProperties"], labels["additionalProperties"]["maxLength"]) == (9, 300)
    assert yaml.safe_load(await (await client.get("/api/v1/openapi.yaml")).text()) == document
    await client.close()


def test_the_document_describes_what_the_webhook_admits() -> None:
    """Schema-valid means admitted and schema-invalid means refused: the document's rules are the
    admission's, checked on the same alerts."""
    validator = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/AlertmanagerAlert", "components": SPEC["components"]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    base = alert()
    cases = [
        base,
        {**base, "labels": {**base["labels"], "service": "s" * 50}},
        {**base, "labels": {**base["labels"], "service": ""}},
        {**base, "labels": {**base["labels"], "revision": "demo-app-a-00002-bad"}},
        {**base, "labels": {**base["labels"], "revision": "r" * 64}},
        {**base, "labels": {**base["labels"], "revision_name": "Demo-app-a-00002"}},
        {**base, "labels": {**base["labels"], "revision_name": ""}},
        {**base, "labels": {**base["labels"], "severity": "x" * 33}},
        {**base, "labels": {**base["labels"], "team": "a\x00b"}},
        {**base, "labels": {**base["labels"], "alertname": "x" * 256}},
        {**base, "labels": {**base["labels"], "": "x"}},
        {**base, "fingerprint": "xyz"},
        {**base, "fingerprint": "f" * 65},
        {**base, "startsAt": "2026-11-28T12:00:00.123456789Z"},
        {**base, "startsAt": "yesterday"},
        {**base, "endsAt": None},
        {**base, "annotations": {"description": "\x00 anything goes"}},
        {**base, "annotations": {"a\x01": "x"}},
        {**base, "labels": {**base["labels"], **{f"l{n}": "v" for n in range(61)}}},
    ]
    for case in cases:
        try:
            admit_alert(case, AlertLimits())
            admitted = True
        except AlertRejected:
            admitted = False
        assert validator.is_valid(case) == admitted, case


async def test_list_and_detail_match_the_schema_and_filter(client: TestClient[Any, Any]) -> None:
    first, second = await open_incidents(client, "demo-app-a", "payments")
    listing = await (await client.get("/api/v1/incidents")).json()
    check(listing["incidents"][0], "IncidentSummary")
    assert [i["id"] for i in listing["incidents"]] == [second, first]
    summary = listing["incidents"][1]
    assert summary["status"] == "awaiting_approval"
    assert summary["recommendation"]["action"] == "ROLLBACK"
    assert summary["recommendation"]["confidence"] >= 0.8
    assert summary["error_rate"] == pytest.approx(0.08)
    assert summary["alert_names"] == ["HighErrorRate"]

    only_payments = await (await client.get("/api/v1/incidents?service=payments")).json()
    assert [i["id"] for i in only_payments["incidents"]] == [second]
    limited = await (await client.get("/api/v1/incidents?limit=1")).json()
    assert len(limited["incidents"]) == 1
    by_status = await (await client.get("/api/v1/incidents?status=closed,resolved")).json()
    assert by_status["incidents"] == []

    detail = await (await client.get(f"/api/v1/incidents/{first}")).json()
    check(detail, "IncidentDetail")
    assert detail["context"]["service"]["name"] == "demo-app-a"
    assert detail["policy"]["verdict"] == "await_approval"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("status=burning", "status"),
        ("status=", "status"),
        ("status=open,,closed", "status"),
        ("service=", "service"),
        ("service=Demo_App", "service"),
        ("service=%00", "service"),
        ("service=" + "a" * 300, "service"),
    ],
)
async def test_bad_list_queries_get_400(client: TestClient[Any, Any], query: str, field: str) -> None:
    response = await client.get(f"/api/v1/incidents?{query}")
    assert response.status == 400
    body = await response.json()
    check(body, "Error")
    assert body["field"] == field


async def test_unknown_and_malformed_incident_ids(client: TestClient[Any, Any]) -> None:
    missing = await client.get("/api/v1/incidents/9999")
    assert missing.status == 404
    body = await missing.json()
    check(body, "Error")
    assert body["incident_id"] == 9999
    assert (await client.get("/api/v1/incidents/abc")).status == 400
    assert (await client.get("/api/v1/incidents/0")).status == 400
    assert (await client.get("/api/v1/incidents/-3")).status == 400
    assert (await client.get("/api/v1/incidents/%EF%BC%91")).status == 400  # a fullwidth digit one
    # Beyond a bigint: no such incident (it used to reach the driver and fail with a 500).
    for huge in ("9223372036854775808", "837434227069608119136633749504"):
        response = await client.get(f"/api/v1/incidents/{huge}")
        assert response.status == 404, huge
        check(await response.json(), "Error")
        explained = await client.post(f"/api/v1/incidents/{huge}/explain", headers=AUTH)
        assert explained.status == 404
    assert (await client.get("/api/v1/incidents/9223372036854775807")).status == 404


async def test_a_method_a_path_does_not_have_is_405_with_allow(client: TestClient[Any, Any]) -> None:
    for method, path, allowed in (
        ("DELETE", "/api/v1/incidents", {"GET", "HEAD"}),
        ("TRACE", "/api/v1/alerts", {"POST"}),
        ("GET", "/api/v1/incidents/1/approve", {"POST"}),
        ("PUT", "/metrics", {"GET", "HEAD"}),
    ):
        response = await client.request(method, path)
        assert response.status == 405, (method, path)
        assert set(response.headers["Allow"].split(",")) == allowed
        check(await response.json(), "Error")


async def test_approve_queues_the_action_and_records_who(client: TestClient[Any, Any], store: Store) -> None:
    (incident_id,) = await open_incidents(client, "demo-app-a")
    url = f"/api/v1/incidents/{incident_id}/approve"
    assert (await client.post(url, json={"by": "alice"})).status == 401
    wrong = await client.post(url, json={"by": "alice"}, headers={"Authorization": "Bearer wrong"})
    assert wrong.status == 401
    bad_body = await client.post(url, data=b"[1]", headers={**AUTH, "Content-Type": "application/json"})
    assert bad_body.status == 400
    # A body must say it is JSON: a browser's cross-site form post never can.
    form = await client.post(url, data={"by": "mallory"}, headers=AUTH)
    assert form.status == 415
    response = await client.post(url, json={"by": "alice", "comment": "checked the graphs"}, headers=AUTH)
    assert response.status == 200
    check(await response.json(), "ApprovalResult")
    detail = await (await client.get(f"/api/v1/incidents/{incident_id}")).json()
    assert detail["status"] == "queued"
    assert detail["actions"][0]["requested_by"] == "user:alice"
    assert any(
        e["kind"] == "approval.approved" and "checked the graphs" in e["message"] for e in detail["timeline"]
    )
    again = await client.post(url, json={"by": "bob"}, headers=AUTH)
    assert again.status == 409
    check(await again.json(), "Error")


async def test_reject_closes_without_acting(client: TestClient[Any, Any]) -> None:
    (incident_id,) = await open_incidents(client, "demo-app-a")
    response = await client.post(
        f"/api/v1/incidents/{incident_id}/reject", json={"by": "bob", "comment": "known issue"}, headers=AUTH
    )
    assert response.status == 200
    detail = await (await client.get(f"/api/v1/incidents/{incident_id}")).json()
    assert detail["status"] == "closed"
    assert detail["status_reason"] == "rejected by bob: known issue"
    assert detail["actions"] == []


async def test_approvals_are_disabled_without_an_api_token(
    store: Store, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> None:
    app = create_app(AnalyzerConfig(), context_source=StaticContextSource().factory(), store=store)
    client = await aiohttp_client(app)
    response = await client.post("/api/v1/incidents/1/approve", json={"by": "alice"})
    assert response.status == 403
    assert "REMEDIATOR_API_TOKEN" in (await response.json())["error"]
    await client.close()


async def test_explain_composes_a_summary_from_the_evidence(client: TestClient[Any, Any]) -> None:
    (incident_id,) = await open_incidents(client, "demo-app-a")
    assert (await client.post(f"/api/v1/incidents/{incident_id}/explain")).status == 401
    response = await client.post(f"/api/v1/incidents/{incident_id}/explain", headers=AUTH)
    assert response.status == 200
    body = await response.json()
    check(body, "Explanation")
    assert body["source"] == "rules"
    assert "demo-app-a" in body["summary"]
    assert "ROLLBACK to demo-app-a-00001-ok" in body["summary"]
    assert (await client.post("/api/v1/incidents/4242/explain", headers=AUTH)).status == 404


READ_TOKEN = "read-token-for-tests"
SECRET_LOG = (
    "POST /api/checkout 500 Authorization: Bearer sk_live_abcdefghijklmnopqrstuvwxyz123456 "
    "user=alice@example.com password=hunter2 key=3f786850e387550fdab836ed7e6dc881de23001b " + "x" * 300
)


def context_with_logs(alert: AlertInfo, *, now: datetime, recent: list[RecentAction]) -> IncidentContext:
    context = bad_deploy_context(alert, now=now, recent=recent)
    line = LogLine(timestamp=now, severity="ERROR", revision="demo-app-a-00002-bad", message=SECRET_LOG)
    return context.model_copy(update={"logs": [line]})


@pytest.fixture
async def guarded(
    store: Store, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> AsyncIterator[TestClient[Any, Any]]:
    """An analyzer with all three tokens, whose incidents carry a log line full of secrets."""
    config = AnalyzerConfig(
        webhook_token=Secret("webhook-token-for-tests"),
        api_token=Secret(API_TOKEN),
        read_token=Secret(READ_TOKEN),
        policy=PolicyConfig(mode=PolicyMode.APPROVE),
        processing=ProcessingConfig(sweep_interval=0.05),
        explain_per_minute=2,
    )
    app = create_app(
        config, context_source=StaticContextSource(build=context_with_logs).factory(), store=store
    )
    test_client = await aiohttp_client(app)
    yield test_client
    await test_client.close()


async def test_the_read_token_guards_incidents_and_metrics(guarded: TestClient[Any, Any]) -> None:
    webhook = {"Authorization": "Bearer webhook-token-for-tests"}
    body = await (await guarded.post("/api/v1/alerts", json=payload(alert()), headers=webhook)).json()
    (incident_id,) = body["opened_incidents"]
    async with asyncio.timeout(10):
        await guarded.app[keys.PROCESSOR].wait_idle()
    reads = ("/api/v1/incidents", f"/api/v1/incidents/{incident_id}", "/metrics")
    for path in reads:
        for headers in ({}, {"Authorization": "Bearer wrong"}, webhook):
            response = await guarded.get(path, headers=headers)
            assert response.status == 401, (path, headers)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            check(await response.json(), "Error")
        for token in (READ_TOKEN, API_TOKEN):
            assert (await guarded.get(path, headers={"Authorization": f"Bearer {token}"})).status == 200
    # Health, readiness and the document stay open: probes and clients need them.
    for path in ("/healthz", "/readyz", "/api/v1/openapi.json"):
        assert (await guarded.get(path)).status == 200
    # The read token grants reads only.
    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    assert (await guarded.post(f"/api/v1/incidents/{incident_id}/approve", headers=read)).status == 401
    assert (await guarded.post(f"/api/v1/incidents/{incident_id}/explain", headers=read)).status == 401
    assert (await guarded.post("/api/v1/alerts", json=payload(alert()), headers=read)).status == 401


async def test_log_lines_are_redacted_unless_the_caller_holds_the_api_token(
    guarded: TestClient[Any, Any],
) -> None:
    webhook = {"Authorization": "Bearer webhook-token-for-tests"}
    body = await (await guarded.post("/api/v1/alerts", json=payload(alert()), headers=webhook)).json()
    (incident_id,) = body["opened_incidents"]
    async with asyncio.timeout(10):
        await guarded.app[keys.PROCESSOR].wait_idle()
    url = f"/api/v1/incidents/{incident_id}"
    reader = await (await guarded.get(url, headers={"Authorization": f"Bearer {READ_TOKEN}"})).json()
    check(reader, "IncidentDetail")
    (line,) = reader["context"]["logs"]
    message = line["message"]
    for secret in (
        "sk_live_abcdefghijklmnopqrstuvwxyz123456",
        "alice@example.com",
        "hunter2",
        "3f786850e3875",
    ):
        assert secret not in message
    assert "POST /api/checkout 500" in message
    assert len(message) <= 200
    assert (line["revision"], line["severity"]) == ("demo-app-a-00002-bad", "ERROR")
    operator = await (await guarded.get(url, headers=AUTH)).json()
    assert operator["context"]["logs"][0]["message"] == SECRET_LOG
    # The stored context is untouched: only the view is redacted.
    assert operator["context"]["service"] == reader["context"]["service"]


async def test_explain_always_needs_the_api_token(
    store: Store, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> None:
    app = create_app(AnalyzerConfig(), context_source=StaticContextSource().factory(), store=store)
    client = await aiohttp_client(app)
    (incident_id,) = await open_incidents(client, "demo-app-a")
    response = await client.post(f"/api/v1/incidents/{incident_id}/explain")
    assert response.status == 403
    assert "REMEDIATOR_API_TOKEN" in (await response.json())["error"]
    await client.close()


async def test_explain_is_rate_limited_with_retry_after(guarded: TestClient[Any, Any]) -> None:
    webhook = {"Authorization": "Bearer webhook-token-for-tests"}
    body = await (await guarded.post("/api/v1/alerts", json=payload(alert()), headers=webhook)).json()
    (incident_id,) = body["opened_incidents"]
    async with asyncio.timeout(10):
        await guarded.app[keys.PROCESSOR].wait_idle()
    url = f"/api/v1/incidents/{incident_id}/explain"
    assert (await guarded.post(url)).status == 401
    assert [(await guarded.post(url, headers=AUTH)).status for _ in range(2)] == [200, 200]
    limited = await guarded.post(url, headers=AUTH)
    assert limited.status == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    check(await limited.json(), "Error")
    # Refused requests spend nothing: an unknown incident is still a 404, not a 429.
    assert (await guarded.post("/api/v1/incidents/4242/explain", headers=AUTH)).status == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"by": "al\x00ice"}, "by"),
        ({"by": "   "}, "by"),
        ({"by": ""}, "by"),
        ({"by": "x" * 101}, "by"),
        ({"by": 5}, "by"),
        ({"by": "alice", "comment": "looks\x00fine"}, "comment"),
        ({"by": "alice", "comment": "c" * 1001}, "comment"),
    ],
)
async def test_approval_text_the_timeline_cannot_hold_is_a_400(
    client: TestClient[Any, Any], store: Store, body: dict[str, Any], field: str
) -> None:
    (incident_id,) = await open_incidents(client, "demo-app-a")
    response = await client.post(f"/api/v1/incidents/{incident_id}/reject", json=body, headers=AUTH)
    assert response.status == 400
    error = await response.json()
    assert error["field"] == field
    detail = await (await client.get(f"/api/v1/incidents/{incident_id}")).json()
    assert detail["status"] == "awaiting_approval"
    # A lone surrogate cannot be stored either: it is not valid JSON text for the parser.
    lone = await client.post(
        f"/api/v1/incidents/{incident_id}/reject",
        data=b'{"by": "\\ud800"}',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert (lone.status, (await lone.json())["field"]) == (400, "body")
    multiline = await client.post(
        f"/api/v1/incidents/{incident_id}/reject",
        json={"by": "bob", "comment": "line\nline\ttab"},
        headers=AUTH,
    )
    assert multiline.status == 200
