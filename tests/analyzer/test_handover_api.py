"""`POST /api/v1/incidents/{id}/escalate` and `/close`: a human takes an incident over, through the API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import jsonschema
import pytest
import yaml
from aiohttp.test_utils import TestClient

from analyzer import AnalyzerConfig, ProcessingConfig, create_app
from analyzer.routes import OPENAPI_PATH
from incidents import ActionStatus, IncidentStatus, Store
from incidents.runtime import Secret
from tests.support.contexts import StaticContextSource
from tests.support.incident_states import incident_in

API_TOKEN = "api-token-for-tests"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SPEC = yaml.safe_load(OPENAPI_PATH.read_text())


def check(document: Any, schema_name: str) -> None:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": SPEC["components"]}
    jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)


def app_client_factory(
    store: Store, api_token: str | None
) -> Callable[[Callable[..., Awaitable[TestClient[Any, Any]]]], Awaitable[TestClient[Any, Any]]]:
    async def make(aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]) -> TestClient[Any, Any]:
        config = AnalyzerConfig(
            api_token=Secret(api_token) if api_token else None,
            processing=ProcessingConfig(sweep_interval=3600),
        )
        app = create_app(config, context_source=StaticContextSource().factory(), store=store)
        return await aiohttp_client(app)

    return make


@pytest.fixture
async def client(
    store: Store, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> AsyncIterator[TestClient[Any, Any]]:
    test_client = await app_client_factory(store, API_TOKEN)(aiohttp_client)
    yield test_client
    await test_client.close()


@pytest.mark.parametrize(("verb", "status"), [("escalate", "escalated"), ("close", "closed")])
async def test_a_human_escalates_or_closes_an_acting_incident_and_its_action_is_cancelled(
    client: TestClient[Any, Any], store: Store, verb: str, status: str
) -> None:
    incident_id, action_id = await incident_in(store, IncidentStatus.ACTING, action=ActionStatus.RUNNING)
    response = await client.post(
        f"/api/v1/incidents/{incident_id}/{verb}",
        json={"reason": "the rollback target is broken too", "by": "alice"},
        headers=AUTH,
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    check(body, "HandoverResult")
    assert body == {"id": incident_id, "status": status}
    detail = await (await client.get(f"/api/v1/incidents/{incident_id}", headers=AUTH)).json()
    assert detail["status"] == status
    assert detail["status_reason"] == f"{status} by alice: the rollback target is broken too"
    assert [a["status"] for a in detail["actions"]] == ["cancelled"]
    kinds = [(e["kind"], e["actor"]) for e in detail["timeline"]]
    assert ("action.cancelled", "user:alice") in kinds and (f"status.{status}", "user:alice") in kinds
    assert action_id is not None


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (None, "reason", "escalating an incident needs a JSON body with its reason"),
        ({}, "reason", "reason: Field required"),
        ({"reason": "   "}, "reason", "reason: String should match pattern"),
        ({"reason": "x" * 1001}, "reason", "reason: String should have at most 1000 characters"),
        ({"reason": "ok", "by": "a\x00b"}, "by", "by: String should match pattern"),
        ([1], "body", "body must be a JSON object"),
    ],
)
async def test_a_bad_body_is_a_400_naming_the_problem(
    client: TestClient[Any, Any], store: Store, body: Any, field: str, message: str
) -> None:
    incident_id, _ = await incident_in(store, IncidentStatus.VERIFYING)
    response = await client.post(
        f"/api/v1/incidents/{incident_id}/escalate",
        **({} if body is None else {"json": body}),
        headers=AUTH,
    )
    assert response.status == 400
    error = await response.json()
    check(error, "Error")
    assert error["field"] == field
    assert error["error"].startswith(message)


async def test_unknown_ended_and_already_escalated_incidents_are_404_and_409_with_clear_messages(
    client: TestClient[Any, Any], store: Store
) -> None:
    body = {"reason": "x"}
    response = await client.post("/api/v1/incidents/424242/close", json=body, headers=AUTH)
    assert (response.status, (await response.json())["error"]) == (404, "incident 424242 not found")
    resolved, _ = await incident_in(store, IncidentStatus.RESOLVED)
    response = await client.post(f"/api/v1/incidents/{resolved}/escalate", json=body, headers=AUTH)
    assert response.status == 409
    assert (await response.json())["error"] == (
        f"incident {resolved} is resolved: it has ended, there is nothing to take over"
    )
    escalated, _ = await incident_in(store, IncidentStatus.ESCALATED, service="payments")
    response = await client.post(f"/api/v1/incidents/{escalated}/escalate", json=body, headers=AUTH)
    assert (response.status, (await response.json())["error"]) == (
        409,
        f"incident {escalated} is escalated already",
    )
    response = await client.post(f"/api/v1/incidents/{escalated}/close", json=body, headers=AUTH)
    assert response.status == 200  # an escalated incident a human closes


async def test_taking_over_needs_the_api_token(
    client: TestClient[Any, Any],
    store: Store,
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> None:
    incident_id, _ = await incident_in(store, IncidentStatus.VERIFYING)
    url = f"/api/v1/incidents/{incident_id}/close"
    assert (await client.post(url, json={"reason": "x"})).status == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await client.post(url, json={"reason": "x"}, headers=wrong)).status == 401
    disabled = await app_client_factory(store, None)(aiohttp_client)
    try:
        response = await disabled.post(url, json={"reason": "x"})
        assert response.status == 403
        assert "set REMEDIATOR_API_TOKEN" in (await response.json())["error"]
    finally:
        await disabled.close()
