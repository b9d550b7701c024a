"""The notifier against a local fake Slack, webhook receiver and PagerDuty, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from actuator.notifications import DeliveryConfig
from analyzer.views import notifications_view
from analyzer.webhook import ingest, parse_payload
from incidents import IncidentStatus
from incidents.db import Store, StoreConfig
from incidents.models import utcnow
from incidents.outbox import OutboxRepository
from incidents.repository import IncidentRepository
from tests.actuator.notification_support import (
    FAST,
    FakeClock,
    attempts,
    deliveries,
    make_notifier,
    move,
    pagerduty_sink,
    seed,
    slack_sink,
    webhook_sink,
)
from tests.support.alerts import alert, payload
from tests.support.fake_pagerduty import FakePagerDuty, running_fake_pagerduty
from tests.support.fake_slack import FakeSlack, running_fake_slack
from tests.support.fake_webhook import FakeWebhookReceiver, running_webhook_receiver

S = IncidentStatus
TO_APPROVAL = (S.ANALYZING, S.DECIDED, S.AWAITING_APPROVAL)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with running_fake_slack() as fake:
        yield fake


@pytest.fixture
async def receiver() -> AsyncIterator[FakeWebhookReceiver]:
    async with running_webhook_receiver() as running:
        yield running


@pytest.fixture
async def pagerduty() -> AsyncIterator[FakePagerDuty]:
    async with running_fake_pagerduty() as fake:
        yield fake


def buttons(slack: FakeSlack) -> list[str]:
    (card,) = slack.cards()
    return [button["action_id"] for button in card.buttons]


# Slack


async def test_one_card_per_incident_updated_in_place_with_buttons_only_while_awaiting(
    store: Store, slack: FakeSlack, http: aiohttp.ClientSession
) -> None:
    notifier = make_notifier(store, [slack_sink(http, slack.api_url)])
    incident_id = await seed(store)
    await notifier.run_once()
    assert len(slack.cards()) == 1 and slack.cards()[0].updates == 0
    assert buttons(slack) == []

    await move(store, incident_id, *TO_APPROVAL)
    await notifier.run_once()
    (card,) = slack.cards()
    assert card.updates == 2  # decided, then awaiting approval: the same message both times
    assert buttons(slack) == ["remediator.approve", "remediator.reject"]
    assert [button["value"] for button in card.buttons] == [str(incident_id)] * 2
    assert len(slack.calls_to("chat.postMessage")) == 1

    # Every alert resolved while waiting: the humans who were asked hear it is over, buttons go.
    await move(store, incident_id, S.CLOSED, message="recovered on its own: every alert resolved")
    await notifier.run_once()
    (card,) = slack.cards()
    assert buttons(slack) == []
    assert [reply.text for reply in card.thread] == [
        ":white_circle: *closed*: recovered on its own: every alert resolved"
    ]
    assert await deliveries(store, incident_id) == [
        (kind, "slack", "delivered") for kind in ("opened", "decided", "awaiting_approval", "closed")
    ]


async def test_a_card_deleted_in_slack_is_posted_again(
    store: Store, slack: FakeSlack, http: aiohttp.ClientSession
) -> None:
    notifier = make_notifier(store, [slack_sink(http, slack.api_url)])
    incident_id = await seed(store)
    await notifier.run_once()
    slack.messages.clear()  # someone deleted the card
    await move(store, incident_id, S.ANALYZING, S.DECIDED)
    await notifier.run_once()
    (card,) = slack.cards()
    assert card.field("Status") == "🧠 Decided"
    assert len(slack.calls_to("chat.update")) == 1  # answered message_not_found
    assert len(slack.calls_to("chat.postMessage")) == 2
    assert await deliveries(store, incident_id) == [
        ("opened", "slack", "delivered"),
        ("decided", "slack", "delivered"),
    ]


async def test_the_card_carries_the_evidence_the_decision_and_links(
    store: Store, slack: FakeSlack, http: aiohttp.ClientSession
) -> None:
    notifier = make_notifier(store, [slack_sink(http, slack.api_url)])
    incident_id = await seed(store, "checkout", *TO_APPROVAL)
    await notifier.run_once()
    (card,) = slack.cards()
    text = str(card.blocks)
    assert card.blocks[0] == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": f"checkout: HighErrorRate (incident {incident_id})",
            "emoji": True,
        },
    }
    assert "errors 8.0% (before 0.1%)" in text  # the service, now against before
    assert "`checkout-00002-bad` (100% of traffic): errors 8.0% (before n/a), p95 120 ms" in text
    assert "`checkout-00001-ok` (0% of traffic)" in text
    assert "*Decision*: ROLLBACK → `checkout-00001-ok` by rules, confidence 0.95" in text
    assert "*Policy*: await_approval: approve mode: every action waits for a human" in text
    assert f"<https://remediator.example/api/v1/incidents/{incident_id}|Incident API>" in text
    assert (
        "<https://grafana.example/d/remediator-service-health?var-service=checkout|Grafana dashboard>" in text
    )
    assert card.text.startswith(f"checkout: HighErrorRate (incident {incident_id})")


async def test_untrusted_text_is_escaped_on_the_card(
    store: Store, slack: FakeSlack, http: aiohttp.ClientSession
) -> None:
    notifier = make_notifier(store, [slack_sink(http, slack.api_url)])
    incident_id = await seed(store)
    async with store.session() as session:
        incident = await IncidentRepository(session).get(incident_id, for_update=True)
        incident.summary = "<!channel> click <https://evil.example|here> & win"
        await IncidentRepository(session).transition(incident, S.ANALYZING, actor="t", message="x")
        await IncidentRepository(session).transition(incident, S.DECIDED, actor="t", message="x")
    await notifier.run_once()
    text = str(slack.cards()[0].blocks)
    assert "&lt;!channel&gt; click &lt;https://evil.example|here&gt; &amp; win" in text
    assert "<!channel>" not in text


async def test_no_buttons_when_clicks_cannot_be_verified(
    store: Store, slack: FakeSlack, http: aiohttp.ClientSession
) -> None:
    notifier = make_notifier(store, [slack_sink(http, slack.api_url, buttons=False)])
    await seed(store, "checkout", *TO_APPROVAL)
    await notifier.run_once()
    assert buttons(slack) == []


async def test_repeats_of_the_same_alert_never_post_again(
    store: Store, slack: FakeSlack, http: aiohttp.ClientSession
) -> None:
    notifier = make_notifier(store, [slack_sink(http, slack.api_url)])
    body = parse_payload(__import__("json").dumps(payload(alert(service="checkout"))).encode())
    for _ in range(3):  # Alertmanager's repeat_interval, and an HA pair
        await ingest(store, body, now=utcnow())
        await notifier.run_once()
    assert len(slack.cards()) == 1
    assert len(slack.calls_to("chat.postMessage")) == 1
    assert slack.calls_to("chat.update") == []


async def test_slack_refusing_for_good_gives_up_at_once_and_says_so(
    store: Store, http: aiohttp.ClientSession
) -> None:
    async with running_fake_slack() as slack:
        slack.token = "another-token"  # our token is refused: invalid_auth
        registry = CollectorRegistry()
        notifier = make_notifier(store, [slack_sink(http, slack.api_url)], registry=registry)
        incident_id = await seed(store)
        await notifier.run_once()
    assert await deliveries(store, incident_id) == [("opened", "slack", "failed")]
    assert await attempts(store, 1) == [("failed", "Slack answered HTTP 200 invalid_auth")]
    async with store.session() as session:
        timeline = await IncidentRepository(session).events.list_for_incident(incident_id)
        view = notifications_view(await OutboxRepository(session).list_for_incident(incident_id))
    failed = [event for event in timeline if event.kind == "notification.failed"]
    assert [event.message for event in failed] == [
        "slack: refused delivering opened: Slack answered HTTP 200 invalid_auth"
    ]
    assert failed[0].actor == "notifier"
    assert view["failed"][0] | {"at": None} == {
        "sink": "slack",
        "event_id": 1,
        "event_type": "opened",
        "attempts": 1,
        "error": "Slack answered HTTP 200 invalid_auth",
        "at": None,
    }
    assert (
        'remediator_notifications_total{outcome="failed",sink="slack"} 1.0'
        in generate_latest(registry).decode()
    )


# durability and retries


async def test_an_event_committed_before_a_restart_is_delivered_once_after_it(
    store: Store, receiver: FakeWebhookReceiver, http: aiohttp.ClientSession
) -> None:
    incident_id = await seed(store, "checkout", S.ANALYZING, S.DECIDED)
    # The process that wrote the events stops before any delivery; a new one starts on the same store.
    url = store.url.render_as_string(hide_password=False)
    await store.dispose()
    restarted = Store.from_config(StoreConfig(url=url))
    try:
        notifier = make_notifier(restarted, [webhook_sink(http, receiver.url)])
        assert await notifier.run_once() == 2
        assert await notifier.run_once() == 0
    finally:
        await restarted.dispose()
    assert receiver.types() == ["opened", "decided"]
    assert [item.event["id"] for item in receiver.received] == ["1", "2"]
    assert all(item.signature_ok for item in receiver.received)
    assert incident_id == 1


async def test_a_worker_that_dies_holding_a_delivery_is_taken_over_after_its_lease(
    store: Store, receiver: FakeWebhookReceiver, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    await seed(store, now=clock.now())
    crashed = make_notifier(store, [webhook_sink(http, receiver.url)], clock=clock, owner="crashed")
    await crashed.dispatch()
    assert len(await crashed._claim(limit=1)) == 1  # claimed, then the process died before sending
    survivor = make_notifier(store, [webhook_sink(http, receiver.url)], clock=clock, owner="survivor")
    assert await survivor.run_once() == 0  # the lease is still live
    clock.advance(FAST.lease.total_seconds() + 1)
    assert await survivor.run_once() == 1
    assert receiver.types() == ["opened"]


async def test_a_sink_down_for_a_minute_gets_the_event_once_it_recovers(
    store: Store, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    recovers_at = clock.time() + 60
    async with running_webhook_receiver(failing=lambda: clock.time() < recovers_at) as receiver:
        notifier = make_notifier(store, [webhook_sink(http, receiver.url, clock=clock)], clock=clock)
        incident_id = await seed(store, now=clock.now())
        delivered_at = None
        for _ in range(120):
            await notifier.run_once()
            if receiver.received:
                delivered_at = clock.time()
                break
            clock.advance(1)
    assert delivered_at is not None and delivered_at >= recovers_at
    # Backoff 2, 4, 8, 16, 30 s: tries at +0, +2, +6, +14, +30, +60.
    assert delivered_at - recovers_at <= FAST.max_delay.total_seconds()
    tries = await attempts(store, 1)
    assert [outcome for outcome, _ in tries] == ["retry"] * 5 + ["delivered"]
    assert tries[0][1] == "webhook:ops answered HTTP 500: receiver down"
    assert receiver.requests == 6
    assert await deliveries(store, incident_id) == [("opened", "webhook:ops", "delivered")]


async def test_slack_down_for_a_minute_still_gets_one_card(store: Store, http: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with running_fake_slack(clock=clock.time) as slack:
        slack.fail_until(clock.time() + 60, status=503)
        notifier = make_notifier(store, [slack_sink(http, slack.api_url)], clock=clock)
        incident_id = await seed(store, now=clock.now())
        await move(store, incident_id, S.ANALYZING, S.DECIDED)
        for _ in range(90):
            await notifier.run_once()
            clock.advance(1)
        assert len(slack.cards()) == 1
        assert slack.cards()[0].updates == 1
    assert await deliveries(store, incident_id) == [
        ("opened", "slack", "delivered"),
        ("decided", "slack", "delivered"),
    ]


async def test_giving_up_after_the_bound_is_visible_on_the_incident_and_in_metrics(
    store: Store, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    registry = CollectorRegistry()
    delivery = DeliveryConfig(
        max_attempts=3, initial_delay=timedelta(seconds=1), max_delay=timedelta(seconds=4)
    )
    async with running_webhook_receiver(failing=lambda: True, fail_status=503) as receiver:
        notifier = make_notifier(
            store, [webhook_sink(http, receiver.url)], clock=clock, registry=registry, delivery=delivery
        )
        incident_id = await seed(store, now=clock.now())
        for _ in range(10):
            await notifier.run_once()
            clock.advance(5)
        assert receiver.requests == 3
    assert await deliveries(store, incident_id) == [("opened", "webhook:ops", "failed")]
    async with store.session() as session:
        timeline = await IncidentRepository(session).events.list_for_incident(incident_id)
    (failed,) = [event for event in timeline if event.kind == "notification.failed"]
    assert failed.message.startswith("webhook:ops: gave up after 3 attempts delivering opened: ")
    assert failed.data == {
        "sink": "webhook:ops",
        "event_id": 1,
        "event_type": "opened",
        "attempts": 3,
        "error": "webhook:ops answered HTTP 503: receiver down",
    }
    metrics = generate_latest(registry).decode()
    assert 'remediator_notifications_total{outcome="retried",sink="webhook:ops"} 2.0' in metrics
    assert 'remediator_notifications_total{outcome="failed",sink="webhook:ops"} 1.0' in metrics
    assert "remediator_notifications_delivery_duration_seconds_count" in metrics


async def test_a_sink_that_is_down_does_not_hold_up_the_others(
    store: Store, receiver: FakeWebhookReceiver, http: aiohttp.ClientSession
) -> None:
    async with running_fake_slack() as slack:
        slack.fail_next(100)
        notifier = make_notifier(store, [slack_sink(http, slack.api_url), webhook_sink(http, receiver.url)])
        incident_id = await seed(store, "checkout", S.ANALYZING, S.DECIDED)
        await notifier.run_once()
    assert receiver.types() == ["opened", "decided"]
    assert sorted(await deliveries(store, incident_id)) == [
        ("decided", "slack", "pending"),
        ("decided", "webhook:ops", "delivered"),
        ("opened", "slack", "pending"),
        ("opened", "webhook:ops", "delivered"),
    ]


async def test_two_workers_deliver_every_event_exactly_once(
    pg_store: Store, receiver: FakeWebhookReceiver, http: aiohttp.ClientSession
) -> None:
    for index in range(8):
        await seed(pg_store, f"service-{index}", S.ANALYZING, S.DECIDED, S.ESCALATED)
    workers = [
        make_notifier(pg_store, [webhook_sink(http, receiver.url)], owner=f"replica-{n}") for n in (1, 2)
    ]
    for worker in workers:
        await worker.start()
    try:
        async with asyncio.timeout(30):
            while len(receiver.received) < 24:  # opened, decided, escalated each
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # anything sent twice would arrive now
    finally:
        for worker in workers:
            await worker.stop()
    ids = [item.event["id"] for item in receiver.received]
    assert sorted(ids, key=int) == [str(n) for n in range(1, 25)]
    async with pg_store.session() as session:
        owners = {
            attempt.owner
            for delivery_id in range(1, 25)
            for attempt in await OutboxRepository(session).list_attempts(delivery_id)
        }
    assert owners <= {"replica-1", "replica-2"}


# event webhooks


async def test_webhook_events_are_signed_cloudevents(
    store: Store, receiver: FakeWebhookReceiver, http: aiohttp.ClientSession
) -> None:
    notifier = make_notifier(store, [webhook_sink(http, receiver.url)])
    incident_id = await seed(store, "checkout", S.ANALYZING, S.DECIDED, S.ESCALATED)
    await notifier.run_once()
    assert receiver.types() == ["opened", "decided", "escalated"]
    escalated = receiver.received[-1]
    assert escalated.signature_ok
    assert escalated.headers["Content-Type"] == "application/cloudevents+json; charset=utf-8"
    event = escalated.event
    assert {
        key: event[key] for key in ("specversion", "id", "source", "type", "subject", "datacontenttype")
    } == {
        "specversion": "1.0",
        "id": "3",
        "source": "https://remediator.example",
        "type": "dev.remediator.incident.escalated",
        "subject": "checkout",
        "datacontenttype": "application/json",
    }
    assert datetime.fromisoformat(event["time"].replace("Z", "+00:00")).tzinfo is not None
    incident = event["data"]["incident"]
    assert (incident["id"], incident["status"], incident["severity"]) == (
        incident_id,
        "escalated",
        "critical",
    )
    assert incident["alert_names"] == ["HighErrorRate"]
    assert incident["decision"]["action"] == "ROLLBACK"
    assert incident["links"]["incident"] == f"https://remediator.example/api/v1/incidents/{incident_id}"
    assert event["data"]["event"] == {
        "type": "escalated",
        "actor": "test",
        "message": "now escalated",
        "detail": {"from": "decided", "to": "escalated"},
        "quiet": False,
    }
    # A receiver holding another secret, or a tampered body, does not verify.
    from actuator.notifications import verify_signature

    assert not verify_signature("another-secret", escalated.headers, escalated.body)
    assert not verify_signature(receiver.secret, escalated.headers, escalated.body + b" ")


async def test_per_sink_filters_and_quiet_closes(store: Store, http: aiohttp.ClientSession) -> None:
    async with (
        running_webhook_receiver() as everything,
        running_webhook_receiver() as pages,
        running_webhook_receiver() as loud,
    ):
        sinks = [
            webhook_sink(http, everything.url, name="all"),
            webhook_sink(
                http, pages.url, name="pages", events=frozenset({"escalated"}), min_severity="critical"
            ),
            webhook_sink(http, loud.url, name="loud", announce_quiet=True),
        ]
        registry = CollectorRegistry()
        notifier = make_notifier(store, sinks, registry=registry)
        warning = await seed(store, "checkout", S.ANALYZING, S.DECIDED, S.ESCALATED, severity="warning")
        unknown = await seed(store, "payments", S.ANALYZING, S.DECIDED, S.ESCALATED, severity=None)
        recovered = await seed(store, "search", S.CLOSED)
        await notifier.run_once()
    assert everything.types() == [
        "opened",
        "decided",
        "escalated",
        "opened",
        "decided",
        "escalated",
        "opened",
    ]
    # Below the minimum severity: dropped. An unknown severity is not a low one: passed.
    assert [(e["subject"], e["type"].rsplit(".", 1)[1]) for e in pages.events()] == [
        ("payments", "escalated")
    ]
    # Recovered on its own: quiet by default, announced where asked for.
    assert loud.types()[-2:] == ["opened", "closed"]
    assert ("closed", "webhook:all", "skipped") in await deliveries(store, recovered)
    assert ("escalated", "webhook:pages", "skipped") in await deliveries(store, warning)
    assert ("escalated", "webhook:pages", "delivered") in await deliveries(store, unknown)
    every = [row for incident in (warning, unknown, recovered) for row in await deliveries(store, incident)]
    skipped = sum(1 for _, sink, status in every if sink == "webhook:pages" and status == "skipped")
    assert skipped == 7
    metrics = generate_latest(registry).decode()
    assert f'remediator_notifications_total{{outcome="skipped",sink="webhook:pages"}} {skipped}.0' in metrics


# PagerDuty


async def test_pagerduty_pages_on_escalation_and_resolves_when_it_is_over(
    store: Store, pagerduty: FakePagerDuty, http: aiohttp.ClientSession
) -> None:
    notifier = make_notifier(store, [pagerduty_sink(http, pagerduty.url)])
    quiet = await seed(store, "search", S.ANALYZING, S.DECIDED, S.CLOSED)
    incident_id = await seed(store, "checkout", S.ANALYZING, S.DECIDED)
    await move(store, incident_id, S.ESCALATED, message="not verified within 180s: errors 8.0%")
    await notifier.run_once()
    assert pagerduty.refused == []
    (trigger,) = pagerduty.events
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == f"remediator-incident-{incident_id}"
    assert trigger["payload"]["source"] == "checkout"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["summary"] == "checkout: escalated: not verified within 180s: errors 8.0%"
    assert trigger["payload"]["class"] == "HighErrorRate"
    assert trigger["links"][0] == {
        "href": f"https://remediator.example/api/v1/incidents/{incident_id}",
        "text": f"Remediator incident {incident_id}",
    }
    await move(store, incident_id, S.CLOSED, message="every alert resolved")
    await notifier.run_once()
    assert pagerduty.events[-1] == {
        "routing_key": trigger["routing_key"],
        "event_action": "resolve",
        "dedup_key": f"remediator-incident-{incident_id}",
    }
    # Nothing was paged for the incident that needed nobody: its close resolves nothing.
    assert ("closed", "pagerduty", "skipped") in await deliveries(store, quiet)
    assert len(pagerduty.events) == 2


async def test_an_approval_nobody_answers_pages_once(
    store: Store, pagerduty: FakePagerDuty, slack: FakeSlack, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    notifier = make_notifier(
        store,
        [slack_sink(http, slack.api_url), pagerduty_sink(http, pagerduty.url)],
        clock=clock,
        approval_page_after=timedelta(minutes=5),
    )
    incident_id = await seed(store, "checkout", *TO_APPROVAL, now=clock.now())
    await notifier.run_once()
    clock.advance(299)
    assert await notifier.check_approvals() == 0
    clock.advance(2)
    assert await notifier.check_approvals() == 1
    assert await notifier.check_approvals() == 0  # once per wait
    await notifier.run_once()
    (trigger,) = pagerduty.events
    assert (
        trigger["payload"]["summary"]
        == "checkout: approval overdue: no answer after 5m01s waiting for approval"
    )
    (card,) = slack.cards()
    assert [reply.text for reply in card.thread] == [
        ":alarm_clock: *approval overdue*: no answer after 5m01s waiting for approval"
    ]
    assert buttons(slack) == ["remediator.approve", "remediator.reject"]  # still waiting
    async with store.session() as session:
        kinds = [
            event.kind for event in await IncidentRepository(session).events.list_for_incident(incident_id)
        ]
    assert kinds.count("approval.overdue") == 1


def test_backoff_grows_to_its_ceiling() -> None:
    delivery = DeliveryConfig(initial_delay=timedelta(seconds=2), max_delay=timedelta(seconds=30))
    assert [delivery.backoff(n).total_seconds() for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]


async def test_a_delivery_is_stamped_with_the_clock_it_was_given(
    store: Store, receiver: FakeWebhookReceiver, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    notifier = make_notifier(store, [webhook_sink(http, receiver.url, clock=clock)], clock=clock)
    await seed(store, now=clock.now())
    await notifier.run_once()
    assert receiver.received[0].headers["X-Remediator-Timestamp"] == str(int(clock.time()))
