"""The analyzer under an alert storm, on PostgreSQL, and its decision time.

1. Storm: `--alerts` Alertmanager-shaped webhook payloads (one alert each, as Alertmanager sends one
   group per alertname and service) for `--services` services x 2 alert names, every alert delivered
   `--copies` times (re-deliveries and an HA pair), shuffled, from `--concurrency` connections on
   127.0.0.1. Reports alerts/s accepted, p50/p99 response time, incidents created (must equal the
   number of services: one problem each) and alerts lost (distinct alerts not stored: must be 0).
2. Decision time: one alert at a time, webhook receipt (incident detected_at) to queued action
   (action created_at), rules engine, with the collector replaced by an instant context source so
   the collector's network time is excluded. Reports p50/p95.

The analyzer runs in a child process (`--serve`) so the load generator does not share its event loop.

    .venv/bin/python benchmarks/analyzer.py [--alerts 10000] [--services 1000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import asyncpg
from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from analyzer import AnalyzerConfig, PolicyConfig, ProcessingConfig, create_app
from incidents import Action, Incident, IncidentAlert, Store, StoreConfig, upgrade
from tests.support.contexts import StaticContextSource
from tests.support.real_parts import free_port

ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
STARTS = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def alert(service: str, name: str) -> dict[str, Any]:
    labels = {"alertname": name, "service": service, "severity": "critical"}
    return {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": f"{name} on {service}"},
        "startsAt": STARTS.isoformat().replace("+00:00", "Z"),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": hashlib.sha256(f"{service}/{name}".encode()).hexdigest()[:16],
    }


def payload(*alerts: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "version": "4",
            "status": "firing",
            "receiver": "remediator",
            "groupKey": "bench",
            "alerts": list(alerts),
        }
    ).encode()


def serve(port: int, database_url: str) -> None:
    config = AnalyzerConfig(
        store=StoreConfig(url=database_url, pool_size=20),
        processing=ProcessingConfig(workers=4, sweep_interval=1.0),
        # A thousand services each get an action: the hourly cap would hold most of them back.
        policy=PolicyConfig(max_actions_per_hour=100_000),
    )
    app = create_app(config, context_source=StaticContextSource().factory())
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def create_database() -> str:
    admin = await asyncpg.connect(make_url(ADMIN_URL).render_as_string(hide_password=False))
    name = f"remediator_bench_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    store = Store.from_config(StoreConfig(url=url))
    await upgrade(store)
    await store.dispose()
    return url


async def drop_database(url: str) -> None:
    admin = await asyncpg.connect(make_url(ADMIN_URL).render_as_string(hide_password=False))
    await admin.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    await admin.close()


async def wait_ready(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(f"{base}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("the analyzer did not become ready")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def storm(base: str, args: argparse.Namespace) -> dict[str, Any]:
    names = ("HighErrorRate", "HighLatencyP95")
    distinct = [alert(f"svc-{n:05d}", name) for n in range(args.services) for name in names]
    deliveries = [a for a in distinct for _ in range(args.copies)][: args.alerts]
    random.Random(7).shuffle(deliveries)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for item in deliveries:
        queue.put_nowait(item)
    latencies: list[float] = []
    failures: list[int] = []

    async def worker(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            item = queue.get_nowait()
            started = time.perf_counter()
            async with http.post(f"{base}/api/v1/alerts", data=payload(item)) as response:
                await response.read()
                if response.status != 200:
                    failures.append(response.status)
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(
        connector=connector, headers={"Content-Type": "application/json"}
    ) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "alerts_sent": len(deliveries),
        "distinct_alerts": len({(a["fingerprint"]) for a in deliveries}),
        "services": args.services,
        "seconds": round(elapsed, 2),
        "alerts_per_second": round(len(deliveries) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.5), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "non_2xx": len(failures),
    }


async def wait_until_decided(store: Store) -> float:
    """Let the storm's backlog drain, so decision times are measured on an idle analyzer."""
    started = time.perf_counter()
    while True:
        async with store.session() as session:
            waiting = await session.scalar(
                select(func.count()).select_from(Incident).where(Incident.status.in_(["open", "analyzing"]))
            )
        if not waiting:
            return time.perf_counter() - started
        await asyncio.sleep(0.2)


async def decision_times(base: str, store: Store, count: int) -> dict[str, Any]:
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as http:
        for n in range(count):
            async with http.post(
                f"{base}/api/v1/alerts", data=payload(alert(f"decide-{n:04d}", "HighErrorRate"))
            ):
                pass
            await asyncio.sleep(0.05)  # one at a time: no queueing behind other incidents
    await asyncio.sleep(2)
    async with store.session() as session:
        rows = (
            await session.execute(
                select(Incident.detected_at, Action.created_at)
                .join(Action, Action.incident_id == Incident.id)
                .where(Incident.service.like("decide-%"))
            )
        ).all()
    millis = [(created - detected).total_seconds() * 1000 for detected, created in rows]
    return {
        "incidents": count,
        "actions_queued": len(millis),
        "p50_ms": round(statistics.median(millis), 2) if millis else None,
        "p95_ms": round(percentile(millis, 0.95), 2) if millis else None,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    url = await create_database()
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        "--port",
        str(port),
        "--database-url",
        url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    store = Store.from_config(StoreConfig(url=url))
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_ready(base)
        storm_report = await storm(base, args)
        await asyncio.sleep(1)
        async with store.session() as session:
            incidents = await session.scalar(select(func.count()).select_from(Incident))
            stored_alerts = await session.scalar(select(func.count()).select_from(IncidentAlert))
        storm_report["incidents_created"] = incidents
        storm_report["alerts_lost"] = storm_report["distinct_alerts"] - int(stored_alerts or 0)
        storm_report["seconds_until_every_incident_decided"] = round(
            await wait_until_decided(store) + storm_report["seconds"], 1
        )
        decisions = await decision_times(base, store, args.decisions)
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 15)
        await store.dispose()
        await drop_database(url)
    return {"storm": storm_report, "decision_time": decisions}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--services", type=int, default=1_000)
    parser.add_argument("--copies", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--decisions", type=int, default=200)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve:
        serve(arguments.port, arguments.database_url)
    else:
        result = asyncio.run(main(arguments))
        print(json.dumps(result, indent=2))
