"""Cloud Monitoring notifications pushed by Pub/Sub, on SQLite and PostgreSQL: the push's OIDC token
checked against keys a local issuer publishes, the envelope, and what is acknowledged and why."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import jsonschema
import pytest
import yaml
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from analyzer import AnalyzerConfig, ProcessingConfig, create_app, keys
from analyzer.cloud_monitoring import CloudMonitoringConfig
from analyzer.exceptions import DependencyUnavailable
from analyzer.pubsub import REFRESH_FLOOR_SECONDS, GoogleCerts, PushAuthConfig, parse_push
from analyzer.routes import OPENAPI_PATH
from incidents import Incident, IncidentAlert, IncidentRepository, Store
from incidents.runtime import Secret
from tests.support.cloud_monitoring import notification, push_envelope
from tests.support.contexts import StaticContextSource
from tests.support.fake_google_oidc import (
    PUSH_AUDIENCE,
    PUSH_SERVICE_ACCOUNT,
    FakeGoogleOidc,
    serve_fake_google_oidc,
)

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
PATH = "/api/v1/cloud-monitoring/pubsub"
WEBHOOK_TOKEN = "cm-token-for-the-webhook"


@pytest.fixture
async def google() -> AsyncIterator[FakeGoogleOidc]:
    async with serve_fake_google_oidc() as fake:
        yield fake


@pytest.fixture
async def make_client(
    store: Store, aiohttp_client: ClientFactory, google: FakeGoogleOidc
) -> AsyncIterator[Callable[..., Awaitable[TestClient[Any, Any]]]]:
    clients: list[TestClient[Any, Any]] = []

    async def make(**overrides: Any) -> TestClient[Any, Any]:
        overrides.setdefault("processing", ProcessingConfig(sweep_interval=0.05, workers=2))
        overrides.setdefault(
            "cloud_monitoring",
            CloudMonitoringConfig(
                token=Secret(WEBHOOK_TOKEN),
                pubsub=PushAuthConfig(
                    audience=PUSH_AUDIENCE, service_account=PUSH_SERVICE_ACCOUNT, certs_url=google.certs_url
                ),
            ),
        )
        app = create_app(
            AnalyzerConfig(**overrides), context_source=StaticContextSource().factory(), store=store
        )
        clients.append(await aiohttp_client(app))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()


async def count(store: Store, model: type) -> int:
    async with store.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def push(client: TestClient[Any, Any], body: Any, token: str | None) -> aiohttp.ClientResponse:
    headers = bearer(token) if token is not None else {}
    if isinstance(body, bytes | str):
        return await client.post(PATH, data=body, headers={**headers, "Content-Type": "application/json"})
    return await client.post(PATH, json=body, headers=headers)


async def test_a_pushed_notification_is_recorded_once_whichever_way_it_comes(
    make_client: Any, store: Store, google: FakeGoogleOidc
) -> None:
    client = await make_client()
    token = google.token()
    response = await push(client, push_envelope(notification()), token)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert (body["new"], len(body["opened_incidents"])) == (1, 1)
    # Pub/Sub delivers at least once; the webhook channel may carry the same incident too.
    again = await (await push(client, push_envelope(notification(), message_id="2"), token)).json()
    assert (again["new"], again["duplicate"]) == (0, 1)
    webhook = await client.post(f"/api/v1/cloud-monitoring?auth_token={WEBHOOK_TOKEN}", json=notification())
    assert (await webhook.json())["duplicate"] == 1
    closed = notification(state="closed", ended_at=notification()["incident"]["started_at"] + 60)
    resolved = await (await push(client, push_envelope(closed), token)).json()
    assert resolved["resolved"] == 1
    assert await count(store, IncidentAlert) == 1
    async with store.session() as session:
        [incident] = await IncidentRepository(session).list_incidents(service="demo-app-a")
    detail = await (await client.get(f"/api/v1/incidents/{incident.id}")).json()
    assert detail["timeline"][0]["actor"] == "cloud-monitoring"
    # One fetch of the keys served every push.
    assert google.requests == 1
    metrics = await (await client.get("/metrics")).text()
    assert 'remediator_cloud_monitoring_requests_total{code="200",endpoint="pubsub"} 3.0' in metrics


async def test_a_push_without_a_valid_google_token_is_refused(
    make_client: Any, store: Store, google: FakeGoogleOidc
) -> None:
    google.add_key("rogue", publish=False)
    refused = [
        (None, "OIDC token"),
        ("not-a-jwt", "not a JWT"),
        ("a.b.c", "not a JWT"),
        ("e30.e30.c2ln", "signature or form"),
        (google.token(audience="https://elsewhere.example/push"), "audience"),
        (google.token(issuer="https://evil.example"), "not issued by Google"),
        (google.token(issued_at=0, lifetime=3600), "expired"),
        (google.token(issued_at=4_000_000_000), "not valid yet"),
        (google.token(key_id="rogue"), "signature or form"),
        (google.token()[:-6] + "AAAAAA", "signature or form"),
        (google.token(exp="later"), "signature or form"),  # signed, but a claim of the wrong type
    ]
    client = await make_client()
    for token, problem in refused:
        response = await push(client, push_envelope(notification()), token)
        assert response.status == 401, (problem, await response.text())
        assert response.headers["WWW-Authenticate"] == "Bearer"
        error = (await response.json())["error"]
        assert problem in error
        assert PUSH_AUDIENCE not in error  # the configured audience is not told to strangers
    assert await count(store, IncidentAlert) == 0


async def test_a_token_of_another_account_or_unverified_email_is_forbidden(
    make_client: Any, store: Store, google: FakeGoogleOidc
) -> None:
    client = await make_client()
    for token in (
        google.token(email="someone@other-project.iam.gserviceaccount.com"),
        google.token(email_verified=False),
        google.token(email_verified="true"),
    ):
        response = await push(client, push_envelope(notification()), token)
        assert response.status == 403
    assert await count(store, IncidentAlert) == 0


async def test_pushes_are_refused_until_configured(
    make_client: Any, store: Store, google: FakeGoogleOidc
) -> None:
    for config in (None, CloudMonitoringConfig(token=Secret(WEBHOOK_TOKEN))):
        client = await make_client(cloud_monitoring=config)
        response = await push(client, push_envelope(notification()), google.token())
        assert response.status == 403
        assert "CLOUD_MONITORING_PUBSUB_AUDIENCE" in (await response.json())["error"]
    assert await count(store, IncidentAlert) == 0


async def test_unreachable_keys_answer_503_so_pubsub_delivers_again(
    make_client: Any, store: Store, google: FakeGoogleOidc
) -> None:
    google.fail_status = 500
    client = await make_client()
    body = push_envelope(notification())
    response = await push(client, body, google.token())
    assert response.status == 503
    assert await count(store, IncidentAlert) == 0
    google.fail_status = None
    # Right after a failed fetch, pushes are answered 503 at once rather than each waiting on Google.
    assert (await push(client, body, google.token())).status == 503
    assert google.requests == 1
    certs = client.app[keys.PUSH_VERIFIER].certs
    certs.clock = lambda: time.monotonic() + REFRESH_FLOOR_SECONDS + 1
    response = await push(client, body, google.token())
    assert response.status == 200
    assert await count(store, IncidentAlert) == 1


async def test_a_rotated_key_is_fetched_once_and_old_keys_outlive_an_outage(google: FakeGoogleOidc) -> None:
    now = [1000.0]
    async with aiohttp.ClientSession() as session:
        certs = GoogleCerts(google.certs_url, session, clock=lambda: now[0])
        assert "key-1" in json.loads(await certs.get("key-1"))
        await certs.get("key-1")
        assert google.requests == 1
        google.add_key("key-2")
        await certs.get("key-2")  # an unknown key id right after a fetch: no refresh yet
        assert google.requests == 1
        now[0] += REFRESH_FLOOR_SECONDS + 1
        assert "key-2" in json.loads(await certs.get("key-2"))  # then one early refresh
        assert google.requests == 2
        await certs.get("forged")  # forged key ids cannot make it fetch again and again
        assert google.requests == 2
        now[0] += REFRESH_FLOOR_SECONDS + 1
        await certs.get("forged")
        assert google.requests == 3
        now[0] += 3601  # expired (max-age 3600), and Google does not answer: the old keys serve
        google.fail_status = 503
        assert "key-2" in json.loads(await certs.get("key-2"))
        assert "key-2" in json.loads(await certs.get("key-2"))
        assert google.requests == 4
        fresh = GoogleCerts(google.certs_url, session, clock=lambda: now[0])
        for _ in range(3):
            with pytest.raises(DependencyUnavailable):
                await fresh.get("key-1")
        assert google.requests == 5


async def test_keys_are_kept_at_least_the_refresh_floor(google: FakeGoogleOidc) -> None:
    google.max_age = 0
    now = [1000.0]
    async with aiohttp.ClientSession() as session:
        certs = GoogleCerts(google.certs_url, session, clock=lambda: now[0])
        await certs.get("key-1")
        now[0] += REFRESH_FLOOR_SECONDS - 1
        await certs.get("key-1")
        assert google.requests == 1
        now[0] += 2
        await certs.get("key-1")
        assert google.requests == 2


async def test_keys_that_are_not_googles_form_are_not_used(google: FakeGoogleOidc) -> None:
    google.published = []  # {} : no key at all
    async with aiohttp.ClientSession() as session:
        with pytest.raises(DependencyUnavailable):
            await GoogleCerts(google.certs_url, session).get("key-1")


NOT_PUSHES: list[tuple[Any, str]] = [
    ("not json", "body"),
    ([], "body"),
    ({"subscription": "projects/p/subscriptions/s"}, "message"),
    ({"message": {"data": "e30="}}, "subscription"),
    ({"message": "e30=", "subscription": "s"}, "message"),
    ({"message": {"data": 12}, "subscription": "s"}, "message.data"),
    ({"message": {"data": "%%%%"}, "subscription": "s"}, "message.data"),
    ({"message": {"data": "e30"}, "subscription": "s"}, "message.data"),
    ({"message": {"data": "e30=\n"}, "subscription": "s"}, "message.data"),
    ({"message": {"data": "\u0084e30="}, "subscription": "s"}, "message.data"),
    ({"message": {"data": "e30=", "attributes": {"a": 1}}, "subscription": "s"}, "message.attributes.a"),
    ({"message": {"data": "e30=", "messageId": 5}, "subscription": "s"}, "message.messageId"),
]


async def test_a_body_that_is_not_a_push_gets_a_400_naming_the_field(
    make_client: Any, store: Store, google: FakeGoogleOidc
) -> None:
    client = await make_client()
    token = google.token()
    for body, field in NOT_PUSHES:
        response = await push(client, body if not isinstance(body, list) else json.dumps(body), token)
        assert response.status == 400, (field, await response.text())
        assert (await response.json())["field"] == field
    assert await count(store, IncidentAlert) == 0


async def test_an_unwrapped_notification_is_told_how_to_fix_the_subscription(
    make_client: Any, google: FakeGoogleOidc
) -> None:
    client = await make_client()
    response = await push(client, notification(), google.token())
    assert response.status == 400
    assert "payload unwrapping" in (await response.json())["error"]


def raw(data: bytes) -> dict[str, Any]:
    return push_envelope(data)


def bad_notification(**fields: Any) -> dict[str, Any]:
    body = notification()
    body["incident"].update(fields)
    for name in [name for name, value in fields.items() if value is None]:
        del body["incident"][name]
    return push_envelope(body)


NEVER_RECORDABLE: list[tuple[dict[str, Any], str, str]] = [
    (push_envelope(None), "no_data", "message.data"),
    (raw(b"not json at all"), "not_json", "message.data"),
    (raw(b"\xff\xfe{}"), "not_json", "message.data"),
    (raw(b"[1, 2]"), "not_json", "message.data"),
    (bad_notification(incident_id=None), "invalid", "message.data.incident.incident_id"),
    (bad_notification(state="acknowledged"), "invalid", "message.data.incident.state"),
    (bad_notification(started_at="yesterday"), "invalid", "message.data.incident.started_at"),
]


async def test_a_message_that_can_never_be_recorded_is_acknowledged_logged_and_counted(
    make_client: Any, store: Store, google: FakeGoogleOidc, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client()
    token = google.token()
    for envelope, reason, field in NEVER_RECORDABLE:
        caplog.clear()
        response = await push(client, envelope, token)
        # 2xx: Pub/Sub would deliver it again and again, and it would fail the same way each time.
        assert response.status == 200, (field, await response.text())
        body = await response.json()
        assert (body["discarded"], body["reason"], body["field"]) == (True, reason, field)
        assert body["message_id"] == "11111111111"
        [record] = [r for r in caplog.records if r.getMessage().startswith("Pub/Sub message discarded")]
        assert record.levelname == "WARNING"
        assert (record.__dict__["message_id"], record.__dict__["reason"]) == ("11111111111", reason)
    assert await count(store, IncidentAlert) == 0
    assert await count(store, Incident) == 0
    metrics = await (await client.get("/metrics")).text()
    for reason in ("no_data", "not_json", "invalid"):
        times = sum(1 for _, counted, _ in NEVER_RECORDABLE if counted == reason)
        assert f'remediator_cloud_monitoring_discarded_total{{reason="{reason}"}} {times}.0' in metrics


async def test_pushes_take_only_json_bodies(make_client: Any, google: FakeGoogleOidc) -> None:
    client = await make_client()
    data = base64.b64encode(json.dumps(push_envelope(notification())).encode())
    response = await client.post(
        PATH, data=data, headers={**bearer(google.token()), "Content-Type": "text/plain"}
    )
    assert response.status == 415


def ecma_anchors(node: Any) -> Any:
    """The schema with each closing `$` read as ECMA 262 reads it (the very end), not as Python's `re`
    does (also before a final newline), which the jsonschema package uses."""
    if isinstance(node, dict):
        return {
            key: value[:-1] + "\\Z" if key == "pattern" and value.endswith("$") else ecma_anchors(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [ecma_anchors(item) for item in node]
    return node


def test_the_openapi_schema_takes_what_the_envelope_parser_takes() -> None:
    spec = ecma_anchors(yaml.safe_load(OPENAPI_PATH.read_text()))
    validator = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/PubSubPush", "components": spec["components"]}
    )
    for envelope in [push_envelope(notification()), push_envelope(None), push_envelope(b"")]:
        assert validator.is_valid(envelope)
        parse_push(json.dumps(envelope).encode())
    for body, field in NOT_PUSHES:
        if not isinstance(body, str):
            assert not validator.is_valid(body), field
    discarded = {
        "discarded": True,
        "reason": "no_data",
        "error": "e",
        "field": "message.data",
        "message_id": None,
    }
    jsonschema.validate(
        discarded, {"$ref": "#/components/schemas/PushDiscarded", "components": spec["components"]}
    )
