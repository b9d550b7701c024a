"""Running the notifier as a `cleanup_ctx` (in `remediator serve` and `remediator actuator`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from actuator.notifications.base import Sink
from actuator.notifications.config import NotificationConfig
from actuator.notifications.metrics import NotificationMetrics
from actuator.notifications.pagerduty import PagerDutySink
from actuator.notifications.slack import SlackSink
from actuator.notifications.webhooks import WebhookSink
from actuator.notifications.worker import NotificationWorker
from incidents.db import Store
from incidents.runtime import EarlyStops

NOTIFIER: web.AppKey[NotificationWorker] = web.AppKey("notifier", NotificationWorker)

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def build_sinks(config: NotificationConfig, session: aiohttp.ClientSession) -> list[Sink]:
    """The sinks the settings name, sharing one HTTP session."""
    timeout = config.delivery.timeout
    sinks: list[Sink] = []
    if config.slack is not None:
        sinks.append(SlackSink.create(config.slack, session, timeout=timeout))
    sinks.extend(
        WebhookSink(
            webhook,
            session,
            source=config.event_source,
            announce_quiet=config.announce_quiet_closes,
            timeout=timeout,
        )
        for webhook in config.webhooks
    )
    if config.pagerduty is not None:
        sinks.append(PagerDutySink(config.pagerduty, session, timeout=timeout))
    return sinks


def notifier_context(
    config: NotificationConfig,
    *,
    registry: CollectorRegistry,
    store: Callable[[web.Application], Store],
) -> CleanupContext:
    """A cleanup_ctx that runs a NotificationWorker for the application's lifetime."""

    async def run_notifier(app: web.Application) -> AsyncIterator[None]:
        metrics = NotificationMetrics(registry)
        async with aiohttp.ClientSession() as session:
            worker = NotificationWorker(
                store=store(app), sinks=build_sinks(config, session), config=config, metrics=metrics
            )
            app[NOTIFIER] = worker
            early = EarlyStops.enable(app)  # stopped at shutdown's start (incidents/runtime/shutdown.py)
            early.register("notifier", worker.stop)
            await worker.start()
            try:
                yield
            finally:
                await early.finish("notifier")

    return run_notifier
