"""Incidents in the store as the webhook leaves them, and a pipeline over a static context source."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import CollectorRegistry

from analyzer import AnalyzerMetrics, IncidentProcessor, PolicyGuard, ProcessingConfig, RulesEngine
from incidents import IncidentRepository, Store, utcnow
from tests.support.contexts import StaticContextSource

SERVICE = "demo-app-a"


async def open_incident(store: Store, service: str = SERVICE, *, fingerprint: str = "f00d") -> int:
    now = utcnow()
    async with store.session() as session:
        repo = IncidentRepository(session)
        incident, _ = await repo.open(service, now=now, actor="test", message="opened")
        incident.alert_fired_at = now - timedelta(seconds=10)
        await repo.add_alert(
            incident,
            fingerprint=fingerprint,
            starts_at=now - timedelta(seconds=10),
            alertname="HighErrorRate",
            status="firing",
            severity="critical",
            labels={"alertname": "HighErrorRate", "service": service},
            annotations={},
            generator_url=None,
            received_at=now,
        )
        return incident.id


def processor(
    store: Store, source: StaticContextSource, config: ProcessingConfig | None = None
) -> IncidentProcessor:
    return IncidentProcessor(
        store=store,
        context_source=source,
        engine=RulesEngine(),
        policy=PolicyGuard(),
        metrics=AnalyzerMetrics(CollectorRegistry()),
        config=config,
    )


async def status_and_events(store: Store, incident_id: int) -> tuple[str, list[str]]:
    async with store.session() as session:
        repo = IncidentRepository(session)
        incident = await repo.get(incident_id)
        events = [event.kind for event in await repo.events.list_for_incident(incident_id)]
    return incident.status, events
