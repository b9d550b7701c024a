"""Shared pieces of the notifier tests: a clock the test moves, workers, sinks against local fakes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from actuator.notifications import (
    DeliveryConfig,
    LinksConfig,
    NotificationConfig,
    NotificationMetrics,
    NotificationWorker,
    PagerDutyConfig,
    PagerDutySink,
    Sink,
    SinkFilter,
    SlackConfig,
    SlackSink,
    WebhookConfig,
    WebhookSink,
)
from incidents import AlertInfo, IncidentStatus
from incidents.db import Store
from incidents.models import utcnow
from incidents.outbox import OutboxRepository
from incidents.repository import IncidentRepository
from incidents.runtime import Secret
from tests.support.contexts import bad_deploy_context
from tests.support.fake_pagerduty import ROUTING_KEY
from tests.support.fake_slack import BOT_TOKEN, CHANNEL
from tests.support.fake_webhook import WEBHOOK_SECRET

LINKS = LinksConfig(remediator_url="https://remediator.example", grafana_url="https://grafana.example")
FAST = DeliveryConfig(
    max_attempts=10,
    initial_delay=timedelta(seconds=2),
    max_delay=timedelta(seconds=30),
    timeout=3.0,
    lease=timedelta(seconds=30),
    poll_interval=0.05,
)


@dataclass
class FakeClock:
    """Time that moves only when the test says so; `now` for the worker, `time` for the fakes."""

    current: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    def now(self) -> datetime:
        return self.current

    def time(self) -> float:
        return self.current.timestamp()

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


def notification_config(**overrides: Any) -> NotificationConfig:
    return replace(NotificationConfig(links=LINKS, delivery=FAST, approval_check_interval=0.05), **overrides)


def make_notifier(
    store: Store,
    sinks: list[Sink],
    *,
    clock: FakeClock | None = None,
    registry: CollectorRegistry | None = None,
    owner: str | None = None,
    **overrides: Any,
) -> NotificationWorker:
    return NotificationWorker(
        store=store,
        sinks=sinks,
        config=notification_config(**overrides),
        metrics=NotificationMetrics(registry if registry is not None else CollectorRegistry()),
        owner=owner,
        **({"clock": clock.now} if clock is not None else {}),
    )


def slack_sink(
    session: aiohttp.ClientSession, api_url: str, *, buttons: bool = True, **filters: Any
) -> SlackSink:
    config = SlackConfig(
        token=Secret(BOT_TOKEN),
        channel=CHANNEL,
        api_url=api_url,
        filter=SinkFilter(**filters),
        buttons=buttons,
    )
    return SlackSink.create(config, session, timeout=3.0)


def webhook_sink(
    session: aiohttp.ClientSession,
    url: str,
    *,
    name: str = "ops",
    clock: FakeClock | None = None,
    announce_quiet: bool = False,
    **filters: Any,
) -> WebhookSink:
    config = WebhookConfig(name=name, url=url, secret=Secret(WEBHOOK_SECRET), filter=SinkFilter(**filters))
    return WebhookSink(
        config,
        session,
        source="https://remediator.example",
        announce_quiet=announce_quiet,
        timeout=3.0,
        **({"clock": clock.time} if clock is not None else {}),
    )


def pagerduty_sink(session: aiohttp.ClientSession, url: str) -> PagerDutySink:
    return PagerDutySink(PagerDutyConfig(routing_key=Secret(ROUTING_KEY), url=url), session, timeout=3.0)


async def deliveries(store: Store, incident_id: int) -> list[tuple[str, str, str]]:
    """(event type, sink, status) of every delivery of the incident, in event order."""
    async with store.session() as session:
        rows = await OutboxRepository(session).list_for_incident(incident_id)
    return [(event_type, row.sink, row.status) for row, event_type in rows]


async def attempts(store: Store, delivery_id: int) -> list[tuple[str, str | None]]:
    async with store.session() as session:
        rows = await OutboxRepository(session).list_attempts(delivery_id)
    return [(row.outcome, row.error) for row in rows]


async def seed(
    store: Store,
    service: str = "checkout",
    *statuses: IncidentStatus,
    severity: str | None = "critical",
    now: datetime | None = None,
) -> int:
    """An alert incident with evidence and a rules decision, moved through `statuses`."""
    now = now or utcnow()
    async with store.session() as session:
        incidents = IncidentRepository(session)
        incident, _ = await incidents.open(
            service,
            now=now,
            severity=severity,
            summary=f"HighErrorRate on {service}",
            actor="alertmanager",
            message=f"HighErrorRate firing for {service}",
        )
        await incidents.add_alert(
            incident,
            fingerprint=f"fp-{service}-{now.timestamp()}",
            starts_at=now,
            alertname="HighErrorRate",
            status="firing",
            severity=severity,
            labels={"service": service},
            annotations={"summary": "error ratio 8.0% > 2%"},
            generator_url=None,
            received_at=now,
        )
        info = AlertInfo(
            name="HighErrorRate",
            status="firing",
            severity=severity,
            starts_at=now,
            fingerprint="fp",
            labels={"service": service},
            annotations={"summary": "error ratio 8.0% > 2%"},
        )
        context = bad_deploy_context(info, now=now)
        incident.context = context.to_json_dict()
        incident.decision = {
            "action": "ROLLBACK",
            "target_revision": f"{service}-00001-ok",
            "confidence": 0.95,
            "engine": "rules",
            "explanation": f"Roll back to {service}-00001-ok, which served 0.1% errors.",
        }
        incident.policy_verdict = "await_approval"
        incident.policy_reason = "approve mode: every action waits for a human"
        for status in statuses:
            await incidents.transition(incident, status, actor="test", message=f"now {status.value}", now=now)
        return incident.id


async def move(store: Store, incident_id: int, *statuses: IncidentStatus, message: str = "") -> None:
    async with store.session() as session:
        incidents = IncidentRepository(session)
        incident = await incidents.get(incident_id, for_update=True)
        for status in statuses:
            await incidents.transition(
                incident,
                status,
                actor="test",
                message=message or f"now {status.value}",
                reason=message or None,
            )
