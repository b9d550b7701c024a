"""Two replicas, exactly once: two `remediator serve` processes (each with its actuator) on one
PostgreSQL database, fed by a real Alertmanager HA pair, against the Cloud Run emulator.

Each Alertmanager of the pair sends every notification to both replicas (as `docs` and the README
describe a production pair), and the test sends the same notification to both replicas once more,
at the same moment. A bad deploy then meets four-plus deliveries of one alert and two analyzers and
two actuators competing for it, and must still come out as one incident, one decision, one applied
change (counted by the emulator, which carries out each UpdateService), resolved. About a minute on
a 2-core machine: the stack starts in ~10 s, the stable revision needs 20 s of healthy traffic, the
alert fires ~20 s after the bad deploy, and verification holds for 10 s.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from tests.support.chaos import (
    AlertWatch,
    ChaosOptions,
    ChaosStack,
    FaultReport,
    notification,
    summarize,
)
from tests.support.databases import run_outside_loop
from tests.support.private_postgres import private_postgres_or_missing
from tests.support.real_parts import binary_or_missing

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

STACK_ENV = {
    "ACTUATOR_LEASE_SECONDS": "6",
    "VERIFY_INTERVAL_SECONDS": "2",
    "VERIFY_WINDOW_SECONDS": "10",
    "VERIFY_TIMEOUT_SECONDS": "60",
}
BASELINE_SECONDS = 20


def test_two_replicas_behind_an_alertmanager_pair_act_exactly_once() -> None:
    binary_or_missing("prometheus")
    binary_or_missing("prometheus-alertmanager")
    private_postgres_or_missing()
    outcome = run_outside_loop(_run())
    report: FaultReport = outcome["report"]
    print(
        json.dumps({**report.as_dict(), **{k: v for k, v in outcome.items() if k != "report"}}, default=str)
    )

    (incident,) = outcome["incidents"]  # one problem, one incident
    assert incident["status"] == "resolved", incident
    assert incident["decisions"] == 1, incident  # one status.decided: one analyzer decided
    assert [(a["type"], a["status"], a["manual"]) for a in incident["actions"]] == [
        ("ROLLBACK", "succeeded", False)
    ]
    assert report.changes_per_decision == [1], report.as_dict()  # one UpdateService, by one actuator
    assert report.violations() == [], report.as_dict()
    # Both replicas were fed, and the repeats were recognised as such, never recorded twice.
    assert all(delivered >= 1 for delivered in outcome["notifications_by_replica"].values()), outcome
    assert outcome["duplicates"] >= 2, outcome
    assert outcome["replayed"] == [{"new": 0, "duplicate": 1}] * 2, outcome


async def _run() -> dict[str, Any]:
    started = time.monotonic()
    options = ChaosOptions(replicas=2, alertmanager_pair=True, remediator_env=STACK_ENV)
    async with ChaosStack(options, say=print) as chaos:
        target = chaos.default_target()
        service = target.service.name
        await chaos.wait_for_baseline(target, BASELINE_SECONDS, since=started)
        async with AlertWatch(chaos, [service]) as watch:
            return await _bad_deploy(chaos, service, watch, started)


async def _bad_deploy(chaos: ChaosStack, service: str, watch: AlertWatch, started: float) -> dict[str, Any]:
    """The bad deploy, the replay once the incident is open, then what came of it."""
    onset = await chaos.bad_deploy(chaos.default_target())
    since = onset - timedelta(seconds=5)
    await chaos.wait_for_status(
        service,
        {"analyzing", "decided", "queued", "acting", "verifying", "resolved"},
        since=since,
        within=120,
    )
    replayed = await _replay_to_every_replica(chaos, service)
    await chaos.wait_for_status(
        service, {"resolved", "escalated", "failed", "closed"}, since=since, within=120
    )
    incidents = await chaos.settle([service], since=since, within=30)
    report = FaultReport(
        fault="two-replicas",
        description="2 replicas + Alertmanager HA pair, every notification to both, one bad deploy",
    )
    summarize(report, chaos, incidents, services=[service], fault_at=onset)
    # Every alert an Alertmanager of the pair held to deliver is recorded.
    report.alerts_delivered, report.alerts_lost = await watch.lost()
    report.elapsed_seconds = time.monotonic() - started
    received = {port: await _webhook_counts(chaos, port) for port in chaos.replica_ports}
    return {
        "report": report,
        "incidents": [
            {
                "id": incident.id,
                "status": incident.status,
                "decisions": sum(1 for e in incident.events if e["kind"] == "status.decided"),
                "actions": incident.actions,
            }
            for incident in incidents
        ],
        "replayed": replayed,
        "notifications_by_replica": {port: counts["requests_200"] for port, counts in received.items()},
        "duplicates": sum(counts["duplicate"] for counts in received.values()),
        "elapsed_seconds": round(report.elapsed_seconds, 1),
    }


async def _replay_to_every_replica(chaos: ChaosStack, service: str) -> list[dict[str, int]]:
    """The service's firing alert as Alertmanager holds it, sent to both replicas at once."""
    async with chaos.session.get(
        f"{chaos.alertmanager_urls[0]}/api/v2/alerts", params={"filter": f'service="{service}"'}
    ) as response:
        held = [a for a in await response.json() if a["status"]["state"] == "active"]
    alerts = [
        {
            "status": "firing",
            "labels": a["labels"],
            "annotations": a["annotations"],
            "startsAt": a["startsAt"],
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": a["generatorURL"],
            "fingerprint": a["fingerprint"],
        }
        for a in held
    ]
    assert len(alerts) == 1, held
    body = json.dumps(
        notification({"alertname": alerts[0]["labels"]["alertname"], "service": service}, alerts)
    )
    answers = await asyncio.gather(*(_post(chaos, port, body.encode()) for port in chaos.replica_ports))
    return [{"new": answer["new"], "duplicate": answer["duplicate"]} for answer in answers]


async def _post(chaos: ChaosStack, port: int, body: bytes) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {chaos.local.webhook_token}", "Content-Type": "application/json"}
    async with chaos.session.post(
        chaos.webhook_url(port), data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
    ) as response:
        answer = await response.json()
        assert response.status == 200, answer
        return dict(answer)


async def _webhook_counts(chaos: ChaosStack, port: int) -> dict[str, float]:
    async with chaos.session.get(
        f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=5)
    ) as response:
        text = await response.text()
    counts = {"requests_200": 0.0, "duplicate": 0.0}
    for line in text.splitlines():
        if line.startswith('remediator_webhook_requests_total{code="200"}'):
            counts["requests_200"] = float(line.rsplit(" ", 1)[1])
        if line.startswith('remediator_alerts_received_total{outcome="duplicate"}'):
            counts["duplicate"] = float(line.rsplit(" ", 1)[1])
    return counts
