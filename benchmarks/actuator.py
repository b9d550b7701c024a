"""Time from an action claimed to traffic switched, against the Cloud Run emulator.

Starts the emulator (a child process) with one demo service and two revisions, then queues `--actions`
rollbacks alternating between the two revisions in a scratch PostgreSQL database, and lets one actuator
worker run them (real google-cloud-run client, real store, lease and all; verification is instant here
because recovery is not what this measures: `benchmarks/mttr.py` measures traffic switched to verified).
Reports p50/p95 of claimed (action started_at) to traffic switched (applied_at, after the operation).

    .venv/bin/python benchmarks/actuator.py [--actions 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from google.cloud import run_v2
from prometheus_client import CollectorRegistry

from actuator import (
    OPERATION_POLLING,
    ActionWorker,
    ActuatorConfig,
    ActuatorMetrics,
    CloudRunChanger,
    VerificationResult,
)
from benchmarks.analyzer import create_database, drop_database, free_port
from collector import CloudRunClients, short_name
from incidents import ActionRepository, Store, StoreConfig


class InstantVerifier:
    async def verify(
        self, service: str, revisions: list[str], *, deadline: datetime, on_check: Any = None
    ) -> Any:
        return VerificationResult(recovered=True, checks=1, last=None, reason="not measured here")


async def deploy(clients: CloudRunClients, name: str) -> list[str]:
    services = clients.services
    template = run_v2.RevisionTemplate(containers=[run_v2.Container(image="demo-app-a")])
    parent = f"projects/{clients.project}/locations/{clients.region}"

    def create() -> None:
        services.create_service(
            parent=parent, service=run_v2.Service(template=template), service_id=name
        ).result(timeout=60, polling=OPERATION_POLLING)
        current = services.get_service(name=clients.service_name(name))
        current.template.containers[0].env.append(run_v2.EnvVar(name="DEMO_RELEASE", value="2"))
        services.update_service(service=current).result(timeout=60, polling=OPERATION_POLLING)

    await asyncio.to_thread(create)
    revisions = await asyncio.to_thread(
        lambda: list(clients.revisions.list_revisions(parent=clients.service_name(name)))
    )
    return [short_name(r.name) for r in revisions]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    emulator = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "demo_apps.cloudrun",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = await create_database()
    store = Store.from_config(StoreConfig(url=url))
    clients = CloudRunClients.create(project="local", region="local", endpoint=f"http://127.0.0.1:{port}")
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
        revisions = await deploy(clients, "bench-actuator")
        async with store.session() as session:
            repository = ActionRepository(session)
            for number in range(args.actions):
                await repository.enqueue(
                    service="bench-actuator",
                    type="ROLLBACK",
                    params={"target_revision": revisions[number % 2]},
                    incident_id=None,
                    manual=True,
                    requested_by="benchmark",
                )
        metrics = ActuatorMetrics(CollectorRegistry())
        config = ActuatorConfig()
        worker = ActionWorker(
            store=store,
            changer=CloudRunChanger(clients, retry=config.retry, metrics=metrics),
            verifier=InstantVerifier(),  # type: ignore[arg-type]
            metrics=metrics,
            config=config,
        )
        while await worker.run_once() is not None:
            pass
        async with store.session() as session:
            rows = await ActionRepository(session).list_recent_for_service(
                "bench-actuator", since=datetime.now().astimezone() - timedelta(hours=1)
            )
        switched = [
            (row.applied_at - row.started_at).total_seconds() * 1000
            for row in rows
            if row.applied_at and row.started_at and (row.result or {}).get("changed")
        ]
    finally:
        clients.close()
        await store.dispose()
        await drop_database(url)
        emulator.terminate()
        await asyncio.wait_for(emulator.wait(), 15)
    ordered = sorted(switched)
    return {
        "actions": args.actions,
        "traffic_switches_measured": len(switched),
        "claimed_to_switched_p50_ms": round(statistics.median(ordered), 1),
        "claimed_to_switched_p95_ms": round(ordered[round(0.95 * (len(ordered) - 1))], 1),
        "claimed_to_switched_max_ms": round(ordered[-1], 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--actions", type=int, default=40)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
