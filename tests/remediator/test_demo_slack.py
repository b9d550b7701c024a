"""The demo's human in the loop: the card printed in the terminal and a signed Approve click."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from actuator.notifications import SlackSink
from analyzer import keys
from analyzer.app import create_app
from incidents.db import Store
from incidents.repository import IncidentRepository
from remediator.demo import Outcome
from remediator.demoslack import DEMO_USER_ID, SlackApprover
from remediator.settings import Settings
from tests.actuator.notification_support import make_notifier
from tests.support.alerts import alert, payload
from tests.support.contexts import StaticContextSource

Client = TestClient[Any, Any]


@pytest.fixture
async def approver() -> AsyncIterator[tuple[SlackApprover, list[str]]]:
    lines: list[str] = []
    running = SlackApprover(lines.append, pause=0.0)
    await running.start()
    yield running, lines
    await running.stop()


async def test_the_demo_user_sees_the_card_and_approves_with_a_signed_click(
    store: Store,
    approver: tuple[SlackApprover, list[str]],
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    slack_approver, lines = approver
    # The analyzer configured exactly as the demo configures `remediator serve`.
    settings = Settings.from_env(slack_approver.remediator_env("http://127.0.0.1:1"))
    client = await aiohttp_client(
        create_app(settings.analyzer, context_source=StaticContextSource().factory(), store=store)
    )
    slack_approver.interactions_url = str(client.make_url("/api/v1/slack/interactions"))
    try:
        async with aiohttp.ClientSession() as http:
            assert settings.notifications.slack is not None
            notifier = make_notifier(store, [SlackSink.create(settings.notifications.slack, http, timeout=3)])
            response = await client.post("/api/v1/alerts", json=payload(alert(service="demo-app-a")))
            (incident_id,) = (await response.json())["opened_incidents"]
            async with asyncio.timeout(10):
                await client.app[keys.PROCESSOR].wait_idle()
            await notifier.run_once()
            async with asyncio.timeout(10):
                while slack_approver.clicked_by is None:
                    await asyncio.sleep(0.02)
            await notifier.run_once()
    finally:
        await client.close()
    async with store.session() as session:
        incident = await IncidentRepository(session).get(incident_id)
        timeline = await IncidentRepository(session).events.list_for_incident(incident_id)
    assert incident.status == "queued"
    assert [event.actor for event in timeline if event.kind == "approval.approved"] == [
        f"slack:{DEMO_USER_ID}"
    ]
    card = next(line for line in lines if line.startswith("slack card in #incidents, waiting for a human:"))
    assert "[ Approve ]   [ Reject ]" in card
    assert "Decision: ROLLBACK → demo-app-a-00001-ok by rules, confidence" in card
    assert "slack card posted: 🟡 Open" in lines
    assert "slack: on-call (U0ONCALL) clicks Approve" in lines
    assert "slack: Remediator answered the signed click with HTTP 200" in lines
    assert "slack thread: ✅ approved: by on-call" in lines
    assert "slack card updated: ✅ Approved" in lines


def test_an_approved_action_counts_as_taken_and_an_unanswered_one_as_investigate() -> None:
    waiting: dict[str, Any] = {
        "decision": {"action": "ROLLBACK", "target_revision": "r1"},
        "policy": {"verdict": "await_approval"},
        "timeline": [],
    }
    approved = {
        **waiting,
        "timeline": [{"kind": "approval.approved", "actor": "slack:U1", "data": {"by": "alice"}}],
    }

    def outcome(incident: dict[str, Any]) -> Outcome:
        return Outcome(
            scenario="bad-deploy",
            expected_action="ROLLBACK",
            incident=incident,
            injection=None,  # type: ignore[arg-type]
            traffic_before={},
            traffic_after={},
            alert_firing_at=None,
            previous_revision="r1",
        )

    assert (outcome(waiting).action, outcome(waiting).approved_by) == ("INVESTIGATE", None)
    assert (outcome(approved).action, outcome(approved).approved_by) == ("ROLLBACK", "alice")
