"""POST /api/v1/slack/interactions: signed clicks approve or reject; every refusal changes nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from analyzer import AnalyzerConfig, ProcessingConfig, create_app, keys
from analyzer.policy import PolicyConfig, PolicyMode
from analyzer.slack import SlackInteractionsConfig
from incidents.db import Store
from incidents.models import Action, IncidentEvent, OutboxEvent, utcnow
from incidents.outbox import APPROVE_ACTION_ID, REJECT_ACTION_ID
from incidents.repository import IncidentRepository
from incidents.runtime import Secret
from tests.support.alerts import alert, payload
from tests.support.contexts import GENERATION, StaticContextSource, probe_alert, state_of
from tests.support.fake_slack import (
    BOT_TOKEN,
    SIGNING_SECRET,
    FakeMessage,
    FakeSlack,
    running_fake_slack,
    sign,
)

URL = "/api/v1/slack/interactions"
ALICE, BOB, MALLORY = "U0ALICE", "U0BOB", "U0MALLORY"
ONCALL = "S0ONCALL"

Client = TestClient[Any, Any]


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with running_fake_slack(groups={ONCALL: [BOB]}) as fake:
        yield fake


async def make_client(
    store: Store,
    aiohttp_client: Callable[..., Awaitable[Client]],
    slack_config: SlackInteractionsConfig | None,
) -> Client:
    config = AnalyzerConfig(
        policy=PolicyConfig(mode=PolicyMode.APPROVE),
        processing=ProcessingConfig(sweep_interval=0.05),
        slack=slack_config,
    )
    return await aiohttp_client(
        create_app(config, context_source=StaticContextSource().factory(), store=store)
    )


@pytest.fixture
async def client(
    store: Store, slack: FakeSlack, aiohttp_client: Callable[..., Awaitable[Client]]
) -> AsyncIterator[Client]:
    config = SlackInteractionsConfig(
        signing_secret=Secret(SIGNING_SECRET),
        approvers=frozenset({ALICE}),
        approver_groups=frozenset({ONCALL}),
        bot_token=Secret(BOT_TOKEN),
        api_url=slack.api_url,
    )
    test_client = await make_client(store, aiohttp_client, config)
    yield test_client
    await test_client.close()


async def awaiting_incident(client: Client) -> int:
    response = await client.post("/api/v1/alerts", json=payload(alert(service="demo-app-a")))
    (incident_id,) = (await response.json())["opened_incidents"]
    async with asyncio.timeout(10):
        await client.app[keys.PROCESSOR].wait_idle()
    return int(incident_id)


def card(slack: FakeSlack, incident_id: int) -> FakeMessage:
    """A message carrying the card's two buttons, as the notifier renders them."""
    buttons = [
        {
            "type": "button",
            "action_id": action_id,
            "value": str(incident_id),
            "text": {"type": "plain_text", "text": t},
        }
        for action_id, t in ((APPROVE_ACTION_ID, "Approve"), (REJECT_ACTION_ID, "Reject"))
    ]
    return FakeMessage(
        channel="C00000001",
        ts="1700000001.000100",
        text="card",
        blocks=[{"type": "actions", "elements": buttons}],
    )


async def click(
    client: Client,
    slack: FakeSlack,
    incident_id: int,
    *,
    action_id: str = APPROVE_ACTION_ID,
    user: str = ALICE,
    name: str = "alice",
    timestamp: int | None = None,
    secret: str = SIGNING_SECRET,
    body: bytes | None = None,
) -> int:
    if body is None:
        body, _ = slack.click_body(
            card(slack, incident_id), action_id=action_id, user_id=user, user_name=name
        )
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": sign(secret, stamp, body),
    }
    return (await client.post(URL, data=body, headers=headers)).status


async def state(store: Store, incident_id: int) -> tuple[str, int, int, int]:
    """Everything a refused click must leave alone."""
    async with store.session() as session:
        incident = await IncidentRepository(session).get(incident_id)
        events = await session.scalar(select(func.count()).select_from(IncidentEvent))
        outbox = await session.scalar(select(func.count()).select_from(OutboxEvent))
        actions = await session.scalar(select(func.count()).select_from(Action))
    return incident.status, int(events or 0), int(outbox or 0), int(actions or 0)


async def ephemeral(slack: FakeSlack, count: int) -> list[str]:
    async with asyncio.timeout(5):
        while len(slack.ephemeral) < count:
            await asyncio.sleep(0.02)
    return [message["text"] for message in slack.ephemeral]


async def test_a_signed_click_approves_as_the_slack_user(
    client: Client, slack: FakeSlack, store: Store
) -> None:
    incident_id = await awaiting_incident(client)
    assert await click(client, slack, incident_id) == 200
    detail = await (await client.get(f"/api/v1/incidents/{incident_id}")).json()
    assert detail["status"] == "queued"
    assert detail["actions"][0]["requested_by"] == f"slack:{ALICE}"
    approved = [event for event in detail["timeline"] if event["kind"] == "approval.approved"]
    assert [(event["actor"], event["message"].split(":")[0]) for event in approved] == [
        (f"slack:{ALICE}", "alice approved")
    ]
    assert approved[0]["data"] == {"by": "alice", "comment": None}
    assert await ephemeral(slack, 1) == [f"You approved incident {incident_id}."]
    assert slack.ephemeral[0]["response_type"] == "ephemeral"
    assert slack.ephemeral[0]["replace_original"] is False


async def test_a_second_click_changes_nothing_and_says_who_decided(
    client: Client, slack: FakeSlack, store: Store
) -> None:
    incident_id = await awaiting_incident(client)
    assert await click(client, slack, incident_id) == 200
    before = await state(store, incident_id)
    assert await click(client, slack, incident_id) == 200  # the same user again
    assert await click(client, slack, incident_id, action_id=REJECT_ACTION_ID, user=BOB, name="bob") == 200
    assert await state(store, incident_id) == before
    texts = await ephemeral(slack, 3)
    assert (
        texts[1:]
        == [f"Incident {incident_id} was already approved by alice; it is queued now. Nothing changed."] * 2
    )


async def test_the_approve_button_is_checked_like_the_api(
    client: Client, slack: FakeSlack, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stale approval (Cloud Run changed since the decision) and a late one (past its time to
    live) are refused on Slack too, with the reason, and change nothing but what expiry does."""
    incident_id = await awaiting_incident(client)
    before = await state(store, incident_id)
    source = client.app[keys.PROCESSOR].context_source
    assert isinstance(source, StaticContextSource)
    context = source.build(probe_alert("demo-app-a"), now=utcnow(), recent=[])
    source.cloud_run = state_of(context, generation=GENERATION + 1)
    assert await click(client, slack, incident_id) == 200
    assert await state(store, incident_id) == before
    (stale,) = await ephemeral(slack, 1)
    assert stale.startswith(
        f"Incident {incident_id}: approval refused, nothing changed: demo-app-a changed since the decision"
    )
    source.cloud_run = None
    monkeypatch.setattr("analyzer.slack.utcnow", lambda: utcnow() + timedelta(hours=1))
    assert await click(client, slack, incident_id) == 200
    late = (await ephemeral(slack, 2))[1]
    assert late.startswith(f"Incident {incident_id}: approval expired: incident {incident_id} waited 1h")
    assert "it is being analysed again on fresh evidence, and nothing was changed" in late
    # The fresh round decides the same and asks again; nothing ran.
    async with asyncio.timeout(10):
        while (current := await state(store, incident_id))[0] != "awaiting_approval":
            await asyncio.sleep(0.05)
    assert current[3] == before[3] == 0


async def test_a_member_of_an_allowed_user_group_may_reject(
    client: Client, slack: FakeSlack, store: Store
) -> None:
    incident_id = await awaiting_incident(client)
    assert await click(client, slack, incident_id, action_id=REJECT_ACTION_ID, user=BOB, name="bob") == 200
    detail = await (await client.get(f"/api/v1/incidents/{incident_id}")).json()
    assert (detail["status"], detail["status_reason"]) == ("closed", "rejected by bob")
    kinds = [(event["kind"], event["actor"]) for event in detail["timeline"]][-2:]
    assert kinds == [("approval.rejected", f"slack:{BOB}"), ("status.closed", f"slack:{BOB}")]
    assert detail["actions"] == []
    assert slack.calls_to("usergroups.users.list") == [{"usergroup": ONCALL}]


async def test_refusals_change_nothing(client: Client, slack: FakeSlack, store: Store) -> None:
    incident_id = await awaiting_incident(client)
    before = await state(store, incident_id)
    now = int(time.time())
    assert await click(client, slack, incident_id, secret="not-the-secret") == 401
    assert await click(client, slack, incident_id, timestamp=now - 301) == 401  # stale
    assert await click(client, slack, incident_id, timestamp=now + 301) == 401  # from the future
    assert await click(client, slack, incident_id, user=MALLORY, name="mallory") == 403
    body, _ = slack.click_body(
        card(slack, incident_id), action_id=APPROVE_ACTION_ID, user_id=ALICE, user_name="a"
    )
    unsigned = await client.post(
        URL, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert unsigned.status == 401
    assert "X-Slack-Signature" in (await unsigned.json())["error"]
    tampered = body.replace(str(incident_id).encode(), b"9", 1)
    headers = slack.signed_headers(body)
    assert (await client.post(URL, data=tampered, headers=headers)).status == 401
    assert await state(store, incident_id) == before
    assert slack.ephemeral == []


def form(payload_value: Any) -> bytes:
    raw = payload_value if isinstance(payload_value, str) else json.dumps(payload_value)
    return urlencode({"payload": raw}).encode()


def block_actions(**changes: Any) -> dict[str, Any]:
    document = {
        "type": "block_actions",
        "user": {"id": ALICE, "name": "alice"},
        "actions": [{"action_id": APPROVE_ACTION_ID, "value": "1"}],
        "response_url": "http://127.0.0.1:9/unused",
    }
    document.update(changes)
    return document


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", "payload"),
        (b"payload=%ZZ", "payload"),
        (urlencode({"other": "x"}).encode(), "payload"),
        (form("{not json"), "payload"),
        (form(["a list"]), "payload.type"),
        (form(block_actions(type="view_submission")), "payload.type"),
        (form(block_actions(user={})), "payload.user"),
        (form(block_actions(user={"id": "U" * 200, "name": "long"})), "payload.user"),
        (form(block_actions(user={"id": "u0alice; drop", "name": "odd"})), "payload.user"),
        (form(block_actions(actions=[])), "payload.actions"),
        (form(block_actions(actions=[{"action_id": "a"}, {"action_id": "b"}])), "payload.actions"),
        (
            form(block_actions(actions=[{"action_id": "remediator.restart", "value": "1"}])),
            "payload.actions.action_id",
        ),
        (
            form(block_actions(actions=[{"action_id": APPROVE_ACTION_ID, "value": "one"}])),
            "payload.actions.value",
        ),
        (
            form(block_actions(actions=[{"action_id": APPROVE_ACTION_ID, "value": "0"}])),
            "payload.actions.value",
        ),
    ],
)
async def test_malformed_payloads_get_400_naming_the_field(
    client: Client, slack: FakeSlack, store: Store, body: bytes, field: str
) -> None:
    incident_id = await awaiting_incident(client)
    before = await state(store, incident_id)
    headers = slack.signed_headers(body)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 400
    assert (await response.json())["field"] == field
    assert await state(store, incident_id) == before


async def test_an_unknown_incident_is_404(client: Client, slack: FakeSlack) -> None:
    assert await click(client, slack, 4242) == 404


async def test_user_groups_that_cannot_be_read_refuse(client: Client, slack: FakeSlack, store: Store) -> None:
    incident_id = await awaiting_incident(client)
    before = await state(store, incident_id)
    slack.fail_next(1, status=500)
    assert await click(client, slack, incident_id, user=BOB, name="bob") == 403
    assert await state(store, incident_id) == before
    assert await click(client, slack, incident_id, user=BOB, name="bob") == 200  # Slack is back


async def test_disabled_without_a_signing_secret(
    store: Store, slack: FakeSlack, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    client = await make_client(store, aiohttp_client, None)
    try:
        incident_id = await awaiting_incident(client)
        before = await state(store, incident_id)
        response = await client.post(URL, data=b"payload=x", headers=slack.signed_headers(b"payload=x"))
        assert response.status == 403
        assert "SLACK_SIGNING_SECRET" in (await response.json())["error"]
        assert await state(store, incident_id) == before
    finally:
        await client.close()


async def test_without_an_allow_list_anyone_who_can_click_may_decide(
    store: Store, slack: FakeSlack, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    config = SlackInteractionsConfig(signing_secret=Secret(SIGNING_SECRET), api_url=slack.api_url)
    client = await make_client(store, aiohttp_client, config)
    try:
        incident_id = await awaiting_incident(client)
        assert await click(client, slack, incident_id, user=MALLORY, name="mallory") == 200
        assert (await state(store, incident_id))[0] == "queued"
    finally:
        await client.close()
