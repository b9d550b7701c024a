"""Time from an incident change committed to its Slack card and webhook event delivered.

Writes `--incidents` incidents into a scratch PostgreSQL database, each moved open -> analyzing ->
decided -> awaiting_approval (three announced events each), in bursts, while `--workers` notifiers
deliver them to the local fake Slack (`remediator.fakeslack`) and a local webhook receiver over real
HTTP. Reports p50/p95/max of event committed (`occurred_at`) to delivered (`finished_at`) per sink,
deliveries per second, and the Slack calls made (one post and two updates per incident when every card
is updated in place).

    .venv/bin/python benchmarks/notifications.py [--incidents 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from actuator.notifications import (
    DeliveryConfig,
    NotificationConfig,
    NotificationMetrics,
    NotificationWorker,
    SlackConfig,
    SlackSink,
    WebhookConfig,
    WebhookSink,
)
from benchmarks.analyzer import create_database, drop_database, free_port, percentile
from incidents import IncidentStatus
from incidents.db import Store, StoreConfig
from incidents.models import NotificationAttempt, NotificationDelivery, OutboxEvent, utcnow
from incidents.outbox import DeliveryStatus, OutboxRepository
from incidents.repository import IncidentRepository
from incidents.runtime import Secret
from remediator.fakeslack import FakeSlack

STEPS = (IncidentStatus.ANALYZING, IncidentStatus.DECIDED, IncidentStatus.AWAITING_APPROVAL)


async def receiver() -> tuple[web.AppRunner, str]:
    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/events", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/events"


async def write_incidents(store: Store, count: int, burst: int) -> None:
    for start in range(0, count, burst):
        for index in range(start, min(count, start + burst)):
            async with store.session() as session:
                incidents = IncidentRepository(session)
                incident, _ = await incidents.open(
                    f"service-{index}", now=utcnow(), severity="critical", actor="bench", message="opened"
                )
                for status in STEPS:
                    await incidents.transition(incident, status, actor="bench", message=status.value)
        await asyncio.sleep(0.2)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    url = await create_database()
    store = Store.from_config(StoreConfig(url=url, pool_size=20))
    slack = FakeSlack(token="xoxb-bench", signing_secret="bench")
    await slack.start()
    runner, webhook_url = await receiver()
    try:
        async with aiohttp.ClientSession() as http:
            config = NotificationConfig(
                delivery=DeliveryConfig(poll_interval=0.05, concurrency=args.concurrency),
                approval_page_after=None,
            )
            workers = []
            for number in range(args.workers):
                sinks = [
                    SlackSink.create(
                        SlackConfig(token=Secret("xoxb-bench"), channel="#bench", api_url=slack.api_url),
                        http,
                        timeout=10,
                    ),
                    WebhookSink(
                        WebhookConfig(name="bench", url=webhook_url, secret=Secret("bench")),
                        http,
                        source="/bench",
                    ),
                ]
                workers.append(
                    NotificationWorker(
                        store=store,
                        sinks=sinks,
                        config=config,
                        metrics=NotificationMetrics(CollectorRegistry()),
                        owner=f"bench-{number}",
                    )
                )
            for worker in workers:
                await worker.start()
            try:
                started = time.perf_counter()
                await write_incidents(store, args.incidents, args.burst)
                async with asyncio.timeout(args.timeout):
                    while True:
                        async with store.session() as session:
                            if await OutboxRepository(session).count_pending() == 0:
                                break
                        await asyncio.sleep(0.1)
                elapsed = time.perf_counter() - started
            finally:
                for worker in workers:
                    await worker.stop()
        async with store.session() as session:
            rows = (
                await session.execute(
                    select(
                        NotificationDelivery.sink,
                        NotificationDelivery.status,
                        OutboxEvent.occurred_at,
                        NotificationDelivery.finished_at,
                    ).join(OutboxEvent, OutboxEvent.id == NotificationDelivery.event_id)
                )
            ).all()
            retries = (
                await session.execute(
                    select(NotificationAttempt.sink, NotificationAttempt.error).where(
                        NotificationAttempt.outcome != DeliveryStatus.DELIVERED
                    )
                )
            ).all()
    finally:
        await runner.cleanup()
        await slack.stop()
        await store.dispose()
        await drop_database(url)
    latency: dict[str, list[float]] = {}
    for sink, status, occurred, finished in rows:
        if status == DeliveryStatus.DELIVERED and finished is not None:
            latency.setdefault(sink, []).append((finished - occurred).total_seconds() * 1000)
    return {
        "incidents": args.incidents,
        "workers": args.workers,
        "deliveries": len(rows),
        "delivered": sum(len(values) for values in latency.values()),
        "deliveries_per_second": round(len(rows) / elapsed, 1),
        "latency_ms": {
            sink: {
                "p50": round(statistics.median(values), 1),
                "p95": round(percentile(values, 0.95), 1),
                "max": round(max(values), 1),
            }
            for sink, values in sorted(latency.items())
        },
        "retries": [f"{sink}: {error}" for sink, error in retries],
        "slack_posts": len(slack.calls_to("chat.postMessage")),
        "slack_updates": len(slack.calls_to("chat.update")),
        "slack_cards": len(slack.cards()),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--incidents", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4, help="deliveries in flight per worker")
    parser.add_argument("--burst", type=int, default=20, help="incidents written back to back")
    parser.add_argument("--timeout", type=float, default=300, help="give up waiting after this many seconds")
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
