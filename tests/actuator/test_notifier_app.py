"""The notifier runs in `remediator actuator` and `remediator serve`, and reports in their /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from actuator import ActuatorConfig
from actuator import create_app as create_actuator_app
from actuator.notifications import NOTIFIER, NotificationConfig, SinkFilter, WebhookConfig
from collector import CollectorConfig
from incidents.db import Store, StoreConfig
from incidents.runtime import Secret
from remediator.server import build_server_app
from remediator.settings import Settings
from tests.actuator.notification_support import FAST, seed
from tests.support.fake_webhook import WEBHOOK_SECRET, running_webhook_receiver


async def test_remediator_actuator_delivers_events_and_counts_them(
    store: Store, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> None:
    async with running_webhook_receiver() as receiver:
        notifications = NotificationConfig(
            webhooks=(
                WebhookConfig(
                    name="ops", url=receiver.url, secret=Secret(WEBHOOK_SECRET), filter=SinkFilter()
                ),
            ),
            delivery=FAST,
        )
        app = create_actuator_app(
            ActuatorConfig(poll_interval=0.05),
            CollectorConfig(cloud_run_endpoint="http://127.0.0.1:9"),
            StoreConfig(url=store.url.render_as_string(hide_password=False)),
            notifications=notifications,
        )
        client = await aiohttp_client(app)
        try:
            assert client.app[NOTIFIER].sinks.keys() == {"webhook:ops"}
            await seed(store)
            async with asyncio.timeout(10):
                while not receiver.received:
                    await asyncio.sleep(0.05)
            async with asyncio.timeout(10):
                while True:
                    metrics = await (await client.get("/metrics")).text()
                    if (
                        'remediator_notifications_total{outcome="delivered",sink="webhook:ops"} 1.0'
                        in metrics
                    ):
                        break
                    await asyncio.sleep(0.05)
            assert 'remediator_notifications_events_total{type="opened"} 1.0' in metrics
            assert "remediator_notifications_pending" in metrics
        finally:
            await client.close()
    assert receiver.types() == ["opened"]


def test_remediator_serve_runs_the_notifier_with_the_actuator_only() -> None:
    settings = Settings.from_env({})

    def contexts(app: Any) -> list[str]:
        return [context.__name__ for context in app.cleanup_ctx]

    assert "run_notifier" in contexts(build_server_app(settings))
    assert "run_notifier" not in contexts(build_server_app(settings, with_actuator=False))
