"""Hand-built IncidentContexts and a context source that serves them, for analyzer tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

from collector.config import CollectorConfig
from incidents import AlertInfo, IncidentContext, RecentAction


def bad_deploy_context(
    alert: AlertInfo, *, now: datetime, recent: list[RecentAction] | None = None
) -> IncidentContext:
    """demo-app-a-00002 took 100% of traffic a few minutes ago and fails; 00001 was healthy."""
    service = alert.labels.get("service", "demo-app-a")
    return IncidentContext.model_validate(
        {
            "observed_at": now,
            "service": {"name": service},
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
                    "created_at": now - timedelta(minutes=3),
                    "traffic_percent": 100,
                    "ready": True,
                    "latest": True,
                    "metrics": {"request_rate_rps": 20.0, "error_rate": 0.08, "latency_p95_ms": 120},
                },
                {
                    "name": f"{service}-00001-ok",
                    "created_at": now - timedelta(days=1),
                    "traffic_percent": 0,
                    "ready": True,
                    "latest": False,
                    "metrics": {},
                    "history": {
                        "error_rate": 0.001,
                        "latency_p95_ms": 90,
                        "served_until": now - timedelta(minutes=3),
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

    def factory(self) -> Callable[[CollectorConfig], AsyncIterator[Any]]:
        async def make(config: CollectorConfig) -> AsyncIterator[StaticContextSource]:
            yield self

        return make
