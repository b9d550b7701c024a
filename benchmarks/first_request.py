"""Onset to alert, and onset to webhook, for a revision that fails from its first request, against a
revision that starts failing a minute into its life. Medians of several runs.

A revision failing from its first request is the hard case for scraped metrics: until Prometheus
scrapes the new revision, its requests (and errors) are in no sample, and the first sample of a
counter series already holding errors is only a starting point to rate(). One local stack (`app`
metrics, `REMEDIATOR_MODE=dry-run` so that nothing is rolled back and each fault lasts until the run
removes it) serves two services, each under its own 20 req/s load:

    fresh   each run deploys a revision answering 15% 500s, taking all traffic; the onset is the
            moment the deploy finished (the revision took the traffic)
    aged    each run deploys a healthy revision, waits a minute, then turns on 15% 500s through the
            demo app's fault-injection API; the onset is that call

Per run and service: seconds from the onset to `HighErrorRate` firing in Prometheus (polled every
0.25 s) and to Remediator's webhook receiving it (the incident's `detected_at`). Then the fault is
removed and the next run waits until the alert has resolved.

    .venv/bin/python benchmarks/first_request.py [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from remediator.stack import LocalStack, StackOptions  # noqa: E402
from tests.support.real_parts import free_port  # noqa: E402

RATE = 20.0
ERROR_RATE = "15"
AGE_BEFORE_FAULT_S = 60.0
DETECT_TIMEOUT_S = 120.0
RESOLVE_TIMEOUT_S = 180.0


def _now() -> datetime:
    return datetime.now(UTC)


async def _firing(http: aiohttp.ClientSession, stack: LocalStack, service: str) -> bool:
    async with http.get(f"{stack.prometheus_url}/api/v1/alerts") as response:
        alerts = (await response.json())["data"]["alerts"]
    return any(
        a["labels"].get("service") == service
        and a["labels"].get("alertname") == "HighErrorRate"
        and a["state"] == "firing"
        for a in alerts
    )


async def _active(http: aiohttp.ClientSession, stack: LocalStack, service: str) -> bool:
    async with http.get(f"{stack.prometheus_url}/api/v1/alerts") as response:
        alerts = (await response.json())["data"]["alerts"]
    return any(a["labels"].get("service") == service for a in alerts)


async def _detected_at(
    http: aiohttp.ClientSession, stack: LocalStack, service: str, onset: datetime
) -> datetime | None:
    auth = {"Authorization": f"Bearer {stack.api_token}"}
    async with http.get(
        f"{stack.remediator_url}/api/v1/incidents", params={"service": service}, headers=auth
    ) as response:
        listing = (await response.json())["incidents"]
    times = [datetime.fromisoformat(i["detected_at"].replace("Z", "+00:00")) for i in listing]
    fresh = [t for t in times if t >= onset]
    return min(fresh) if fresh else None


async def _measure(
    http: aiohttp.ClientSession, stack: LocalStack, service: str, onset: datetime
) -> dict[str, float | None]:
    alert_at = webhook_at = None
    deadline = time.monotonic() + DETECT_TIMEOUT_S
    while time.monotonic() < deadline and (alert_at is None or webhook_at is None):
        if alert_at is None and await _firing(http, stack, service):
            alert_at = _now()
        if webhook_at is None:
            webhook_at = await _detected_at(http, stack, service, onset)
        await asyncio.sleep(0.25)
    return {
        "onset_to_alert_s": round((alert_at - onset).total_seconds(), 2) if alert_at else None,
        "onset_to_webhook_s": round((webhook_at - onset).total_seconds(), 2) if webhook_at else None,
    }


async def _wait_quiet(http: aiohttp.ClientSession, stack: LocalStack, service: str) -> None:
    deadline = time.monotonic() + RESOLVE_TIMEOUT_S
    while time.monotonic() < deadline:
        if not await _active(http, stack, service):
            return
        await asyncio.sleep(1.0)


async def _revision_address(http: aiohttp.ClientSession, stack: LocalStack, revision: str) -> str:
    for _ in range(100):
        async with http.get(f"{stack.emulator_url}/sd/targets") as response:
            groups = await response.json()
        for group in groups:
            if group["labels"].get("revision") == revision:
                return str(group["targets"][0])
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{revision} is not in the emulator's service discovery")


async def fresh_run(http: aiohttp.ClientSession, stack: LocalStack, service: str) -> dict[str, Any]:
    await stack.deploy(service, {"DEMO_ERROR_RATE": ERROR_RATE})
    onset = _now()
    measured = await _measure(http, stack, service, onset)
    await stack.deploy(service, {"DEMO_ERROR_RATE": "0"})
    await _wait_quiet(http, stack, service)
    return {"case": "fresh", **measured}


async def aged_run(http: aiohttp.ClientSession, stack: LocalStack, service: str) -> dict[str, Any]:
    revision = await stack.deploy(service, {"DEMO_ERROR_RATE": "0"})
    await asyncio.sleep(AGE_BEFORE_FAULT_S)
    address = await _revision_address(http, stack, revision)
    async with http.post(f"http://{address}/fault/enable?type=5xx&error_rate={ERROR_RATE}") as response:
        response.raise_for_status()
    onset = _now()
    measured = await _measure(http, stack, service, onset)
    async with http.post(f"http://{address}/fault/disable") as response:
        response.raise_for_status()
    await _wait_quiet(http, stack, service)
    return {"case": "aged", **measured}


async def main_async(runs: int, as_json: bool) -> int:
    options = StackOptions(
        emulator_port=free_port(),
        prometheus_port=free_port(),
        alertmanager_port=free_port(),
        remediator_port=free_port(),
        loadgen_port=free_port(),
        rate=1.0,
        grafana=False,
        # dry-run: nothing is rolled back, each fault lasts until the run removes it. Escalations close
        # as soon as their alerts resolve, so that each run's alert opens an incident of its own.
        remediator_env={"REMEDIATOR_MODE": "dry-run", "REMEDIATOR_ESCALATED_CLOSE_SECONDS": "0"},
    )
    results: list[dict[str, Any]] = []
    async with LocalStack(options, say=lambda line: None) as stack, aiohttp.ClientSession() as http:
        services = {"fresh": "bench-fresh", "aged": "bench-aged"}
        for name in services.values():
            service = await stack.deploy_demo_service(name, stack.options.profile)
            await stack.start_loadgen(service.uri, RATE, free_port())
        await asyncio.sleep(30)  # a baseline for both
        for number in range(1, runs + 1):
            fresh, aged = await asyncio.gather(
                fresh_run(http, stack, services["fresh"]), aged_run(http, stack, services["aged"])
            )
            for result in (fresh, aged):
                result["run"] = number
                results.append(result)
                if not as_json:
                    print(
                        f"run {number} {result['case']:5}: onset->alert {result['onset_to_alert_s']}s, "
                        f"onset->webhook {result['onset_to_webhook_s']}s",
                        flush=True,
                    )
    summary: dict[str, Any] = {"runs": results, "medians": {}}
    for case in ("fresh", "aged"):
        for figure in ("onset_to_alert_s", "onset_to_webhook_s"):
            values = [r[figure] for r in results if r["case"] == case and r[figure] is not None]
            summary["medians"][f"{case}_{figure}"] = round(statistics.median(values), 2) if values else None
    if as_json:
        print(json.dumps(summary))
    else:
        print("medians:", json.dumps(summary["medians"], indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    return asyncio.run(main_async(args.runs, args.json))


if __name__ == "__main__":
    raise SystemExit(main())
