"""The human loop end to end: card in Slack, a signed Approve click, the rollback on the Cloud Run
emulator, and the card following along until the MTTR, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from analyzer import AnalyzerConfig, ProcessingConfig, create_app, keys
from analyzer.policy import PolicyConfig, PolicyMode
from analyzer.slack import SlackInteractionsConfig
from collector import CloudRunClients
from incidents import AlertInfo, IncidentContext, RecentAction
from incidents.db import Store
from incidents.outbox import APPROVE_ACTION_ID
from incidents.runtime import Secret
from tests.actuator.notification_support import make_notifier, slack_sink
from tests.actuator.support import SERVICE, Deployed, deploy_stable_then_bad, emulator_clients, make_worker
from tests.demo_apps.cloudrun_harness import Emulator, running_emulator
from tests.support.alerts import alert, payload
from tests.support.contexts import StaticContextSource, bad_deploy_context
from tests.support.fake_slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, running_fake_slack

Client = TestClient[Any, Any]
ALICE = "U0ALICE"


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with running_emulator() as running:
        yield running


@pytest.fixture
async def clients(emulator: Emulator) -> AsyncIterator[CloudRunClients]:
    made = emulator_clients(emulator)
    yield made
    made.close()


def context_on(deployed: Deployed) -> Callable[..., IncidentContext]:
    """The bad-deploy evidence, naming the emulator's real revisions."""

    def build(
        alert_info: AlertInfo, *, now: datetime, recent: list[RecentAction] | None = None
    ) -> IncidentContext:
        document = bad_deploy_context(alert_info, now=now, recent=recent).to_json_dict()
        document["revisions"][0]["name"] = deployed.bad
        document["revisions"][1]["name"] = deployed.stable
        return IncidentContext.model_validate(document)

    return build


async def test_approve_in_slack_and_the_rollback_runs(
    store: Store,
    emulator: Emulator,
    clients: CloudRunClients,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    async with running_fake_slack() as slack, aiohttp.ClientSession() as http:
        config = AnalyzerConfig(
            policy=PolicyConfig(mode=PolicyMode.APPROVE),
            processing=ProcessingConfig(sweep_interval=0.05),
            slack=SlackInteractionsConfig(
                signing_secret=Secret(SIGNING_SECRET),
                approvers=frozenset({ALICE}),
                bot_token=Secret(BOT_TOKEN),
                api_url=slack.api_url,
            ),
        )
        source = StaticContextSource(context_on(deployed))
        client = await aiohttp_client(create_app(config, context_source=source.factory(), store=store))
        notifier = make_notifier(store, [slack_sink(http, slack.api_url)])
        actuator = make_worker(store, clients)
        try:
            await run_the_loop(client, slack, notifier, actuator, http, deployed, clients)
        finally:
            await client.close()


async def run_the_loop(
    client: Client,
    slack: FakeSlack,
    notifier: Any,
    actuator: Any,
    http: aiohttp.ClientSession,
    deployed: Deployed,
    clients: CloudRunClients,
) -> None:
    response = await client.post("/api/v1/alerts", json=payload(alert(service=SERVICE)))
    (incident_id,) = (await response.json())["opened_incidents"]
    async with asyncio.timeout(10):
        await client.app[keys.PROCESSOR].wait_idle()
    await notifier.run_once()
    (card,) = slack.cards()
    assert [button["action_id"] for button in card.buttons] == ["remediator.approve", "remediator.reject"]
    assert f"ROLLBACK → `{deployed.stable}`" in str(card.blocks)
    assert await actuator.run_once() is None  # nothing runs before a human says so

    status = await slack.click(
        http,
        str(client.make_url("/api/v1/slack/interactions")),
        card,
        action_id=APPROVE_ACTION_ID,
        user_id=ALICE,
        user_name="alice",
    )
    assert status == 200
    await notifier.run_once()
    (card,) = slack.cards()
    assert card.buttons == []
    assert card.field("Status") == "⏳ Action queued"  # approved, then queued: both delivered
    assert "Approved by *alice*" in str(card.blocks)
    assert [reply.text for reply in card.thread] == [":white_check_mark: *approved*: by alice"]

    assert await actuator.run_once() is not None
    service = await asyncio.to_thread(clients.services.get_service, name=Emulator.name(SERVICE))
    assert {t.revision.rsplit("/", 1)[-1]: t.percent for t in service.traffic_statuses} == {
        deployed.stable: 100
    }

    await notifier.run_once()
    (card,) = slack.cards()
    detail = await (await client.get(f"/api/v1/incidents/{incident_id}")).json()
    assert detail["status"] == "resolved"
    mttr = detail["mttr"]["seconds"]
    assert f"MTTR {mttr:.1f} s" in str(card.blocks)
    assert "Resolved" in str(card.blocks)
    replies = [reply.text for reply in card.thread]
    assert replies[1].startswith(
        f":arrow_right: *action applied*: roll back {SERVICE} to {deployed.stable}: applied"
    )
    assert replies[2].startswith(":large_green_circle: *resolved*: recovered: scripted healthy; MTTR ")
    assert len(replies) == 3
    assert len(slack.calls_to("chat.postMessage")) == 4  # the card, then three thread replies
    assert detail["notifications"] == {"pending": 0, "delivered": 7, "skipped": 0, "failed": []}
