"""The incidents HTTP API and its OpenAPI document."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import jsonschema
import pytest
import yaml
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from analyzer import keys
from analyzer.app import AnalyzerConfig, create_app
from analyzer.policy import PolicyConfig, PolicyMode
from analyzer.processing import ProcessingConfig
from analyzer.routes import OPENAPI_PATH
from incidents.db import Store
from incidents.secrets import Secret
from tests.support.alerts import alert, payload
from tests.support.contexts import StaticContextSource

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
    [("limit=0", "limit"), ("limit=501", "limit"), ("limit=ten", "limit"), ("status=burning", "status")],
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


async def test_approve_queues_the_action_and_records_who(client: TestClient[Any, Any], store: Store) -> None:
    (incident_id,) = await open_incidents(client, "demo-app-a")
    url = f"/api/v1/incidents/{incident_id}/approve"
    assert (await client.post(url, json={"by": "alice"})).status == 401
    wrong = await client.post(url, json={"by": "alice"}, headers={"Authorization": "Bearer wrong"})
    assert wrong.status == 401
    bad_body = await client.post(url, data=b"[1]", headers=AUTH)
    assert bad_body.status == 400
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
