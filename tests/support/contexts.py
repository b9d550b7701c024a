"""Hand-built IncidentContexts and a context source that serves them, for analyzer tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from collector import CollectorConfig, ServiceState, SourceResult
from collector.sources.cloudrun import RevisionState
from incidents import AlertInfo, Figures, IncidentContext, RecentAction, utcnow

# What a fresh window shows while a fault still holds: 10% errors at 20 requests/s.
STILL_FAILING = Figures(request_rate_rps=20.0, error_rate=0.10, latency_p95_ms=120.0)
# The service's generation in the hand-built contexts, and in what `StaticContextSource` says Cloud
# Run shows now (until a test changes it).
GENERATION = 3


def bad_deploy_context(
    alert: AlertInfo, *, now: datetime, recent: list[RecentAction] | None = None
) -> IncidentContext:
    """demo-app-a-00002 took 100% of traffic a few minutes before the alert and fails; 00001 was
    healthy. Times are relative to the alert (a revision created after the alert began cannot have
    brought its fault), and the context is observed `now`."""
    service = alert.labels.get("service", "demo-app-a")
    deployed = alert.starts_at - timedelta(minutes=3)
    return IncidentContext.model_validate(
        {
            "observed_at": now,
            "service": {"name": service, "generation": GENERATION, "etag": f"etag-{GENERATION}"},
            "alert": alert.model_dump(),
            "thresholds": {"error_rate": 0.02, "latency_p95_ms": 1000, "min_requests": 60},
            "metrics": {
                "window_seconds": 60,
                "requests_in_window": 1200,
                "request_rate_rps": 20.0,
                "error_rate": 0.08,
                "latency_p95_ms": 120,
                "baseline": {"request_rate_rps": 20.0, "error_rate": 0.001, "latency_p95_ms": 90},
            },
            "revisions": [
                {
                    "name": f"{service}-00002-bad",
                    "created_at": deployed,
                    "traffic_percent": 100,
                    "ready": True,
                    "latest": True,
                    "metrics": {"request_rate_rps": 20.0, "error_rate": 0.08, "latency_p95_ms": 120},
                },
                {
                    "name": f"{service}-00001-ok",
                    "created_at": deployed - timedelta(days=1),
                    "traffic_percent": 0,
                    "ready": True,
                    "latest": False,
                    "metrics": {},
                    "history": {
                        "error_rate": 0.001,
                        "latency_p95_ms": 90,
                        "served_until": deployed + timedelta(seconds=30),
                    },
                    "baseline": {"request_rate_rps": 20.0, "error_rate": 0.001, "latency_p95_ms": 90},
                },
            ],
            "scaling": {"min_instances": 0, "max_instances": 10, "current_instances": 2, "utilization": 0.3},
            "recent_actions": [a.model_dump() for a in recent or []],
        }
    )


class StaticContextSource:
    """Answers every alert with `build(alert, now, recent)`; counts calls; can be made to fail or wait."""

    def __init__(
        self,
        build: Callable[..., IncidentContext] = bad_deploy_context,
        *,
        onset: tuple[datetime, str] | None = None,
    ) -> None:
        self.build = build
        self.onset = onset
        self.calls: list[AlertInfo] = []
        self.fail_with: Exception | None = None
        self.gate: asyncio.Event | None = None
        # The fresh window read right before a change (None: Prometheus did not answer).
        self.fresh: Figures | None = STILL_FAILING
        self.fresh_calls: list[tuple[str, list[str], int]] = []

    async def build_context(
        self, alert: AlertInfo, *, recent_actions: list[RecentAction], now: datetime
    ) -> IncidentContext:
        self.calls.append(alert)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return self.build(alert, now=now, recent=recent_actions)

    async def estimate_onset(self, alert: AlertInfo) -> tuple[datetime, str] | None:
        return self.onset

    async def fresh_figures(
        self, service: str, revisions: list[str], *, window_seconds: int, now: datetime
    ) -> SourceResult[Figures]:
        self.fresh_calls.append((service, revisions, window_seconds))
        if self.fresh is None:
            return SourceResult(None, "prometheus: timeout after 3s")
        return SourceResult(self.fresh)

    def factory(self) -> Callable[[CollectorConfig], AsyncIterator[Any]]:
        async def make(config: CollectorConfig) -> AsyncIterator[StaticContextSource]:
            yield self

        return make

    # What `service_state` answers (an approval re-reads Cloud Run): None derives it from `build`'s
    # context, as the collector read it; a string is a gap (Cloud Run could not be read).
    cloud_run: ServiceState | str | None = None

    async def service_state(self, service: str) -> SourceResult[ServiceState]:
        if isinstance(self.cloud_run, str):
            return SourceResult(None, self.cloud_run)
        if self.cloud_run is not None:
            return SourceResult(self.cloud_run)
        return SourceResult(state_of(self.build(probe_alert(service), now=utcnow(), recent=[])))


def probe_alert(service: str) -> AlertInfo:
    return AlertInfo(
        name="HighErrorRate",
        status="firing",
        starts_at=utcnow(),
        fingerprint="0",
        labels={"alertname": "HighErrorRate", "service": service},
    )


def state_of(context: IncidentContext, **changes: Any) -> ServiceState:
    """The Cloud Run state a context was collected from (`changes` alter it: a newer generation, ...)."""
    revisions = [
        RevisionState(
            name=revision.name,
            created_at=revision.created_at,
            ready=revision.ready,
            traffic_percent=revision.traffic_percent,
            latest=revision.latest,
            concurrency=None,
            max_instances=None,
            min_instances=None,
            cpu=None,
            memory=None,
        )
        for revision in context.revisions
    ]
    state = ServiceState(
        name=context.service.name,
        uri="",
        revisions=revisions,
        min_instances=context.scaling.min_instances,
        max_instances=context.scaling.max_instances,
        generation=context.service.generation,
        etag=context.service.etag,
    )
    return replace(state, **changes)
