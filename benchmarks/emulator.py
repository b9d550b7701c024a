"""Benchmark of the local Cloud Run emulator: router throughput and latency, and deploy-to-serving time.

    .venv/bin/python benchmarks/emulator.py [--requests 4000] [--concurrency 32] [--rounds 3] [--deploys 5]

Starts `python -m demo_apps.cloudrun` as a subprocess with one shop service, then measures:

1. requests/s and latency through the service's router, against the same load sent straight to the
   revision's own port (same load generator: aiohttp, N concurrent connections, a fixed number of
   requests, repeated; medians reported). Added latency is also measured one request at a time.
2. the time from `update_service` (a template change) until the new revision answers through the
   router, repeated.

Prints a table and one JSON line; stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from google.api_core.client_options import ClientOptions
from google.api_core.future import polling
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2

from tests.support.real_parts import free_port

PARENT = "projects/local/locations/local"
SERVICE_ID = "bench"
PATH = "/api/catalog"
# The shop's simulated work is turned off so that the numbers are the emulator's.
SHOP_ENV = {"DEMO_COLD_START_MS": "0", "DEMO_SERVICE_TIME_MS": "0"}
FAST_POLLING = polling.DEFAULT_POLLING.with_delay(initial=0.05, multiplier=1.5, maximum=0.25)


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(http: aiohttp.ClientSession, url: str, total: int, concurrency: int) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    remaining = total

    async def worker() -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            async with http.get(url) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            latencies.append((time.perf_counter() - started) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LoadResult(total, time.perf_counter() - began, latencies, errors)


async def wait_healthy(http: aiohttp.ClientSession, url: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            async with http.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def template(release: int) -> run_v2.RevisionTemplate:
    env = {**SHOP_ENV, "RELEASE": str(release)}
    container = run_v2.Container(
        image="demo-app-a", env=[run_v2.EnvVar(name=key, value=value) for key, value in env.items()]
    )
    return run_v2.RevisionTemplate(containers=[container])


async def measure_deploys(
    services: run_v2.ServicesClient, http: aiohttp.ClientSession, uri: str, count: int
) -> list[float]:
    timings = []
    for release in range(2, 2 + count):
        service = await asyncio.to_thread(services.get_service, name=f"{PARENT}/services/{SERVICE_ID}")
        service.template = template(release)
        started = time.perf_counter()
        operation = await asyncio.to_thread(services.update_service, service=service)
        new_revision = operation.metadata.latest_created_revision.rsplit("/", 1)[-1]
        while True:
            async with http.get(uri + "/healthz") as response:
                await response.read()
                if response.headers.get("X-Revision") == new_revision:
                    break
            if time.perf_counter() - started > 60:
                raise RuntimeError(f"{new_revision} never served")
            await asyncio.sleep(0.005)
        timings.append(time.perf_counter() - started)
        await asyncio.to_thread(operation.result, timeout=60, polling=FAST_POLLING)
    return timings


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    emulator = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "demo_apps.cloudrun", "--port", str(port), "--log-level", "WARNING"],
        stdout=asyncio.subprocess.DEVNULL,
    )
    services = run_v2.ServicesClient(
        transport="rest",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=base_url),
    )
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            await wait_healthy(http, base_url + "/healthz")
            operation = await asyncio.to_thread(
                services.create_service,
                parent=PARENT,
                service=run_v2.Service(template=template(1)),
                service_id=SERVICE_ID,
            )
            service = await asyncio.to_thread(operation.result, timeout=60, polling=FAST_POLLING)
            async with http.get(base_url + "/sd/targets") as response:
                [target] = (await response.json())[0]["targets"]
            targets = {"direct": f"http://{target}{PATH}", "router": f"{service.uri}{PATH}"}

            # Warm up both paths (connections, the shop's first requests).
            for url in targets.values():
                await load(http, url, 500, args.concurrency)

            throughput: dict[str, list[LoadResult]] = {"direct": [], "router": []}
            sequential: dict[str, list[LoadResult]] = {"direct": [], "router": []}
            for _ in range(args.rounds):
                for name, url in targets.items():
                    throughput[name].append(await load(http, url, args.requests, args.concurrency))
                for name, url in targets.items():
                    sequential[name].append(await load(http, url, args.sequential, 1))

            deploys = await measure_deploys(services, http, service.uri, args.deploys)
    finally:
        services.transport.close()
        emulator.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(emulator.wait(), 30)
        except TimeoutError:
            emulator.kill()
            await emulator.wait()

    def median(results: list[LoadResult], metric: str) -> float:
        values = [
            result.rps if metric == "rps" else result.percentile(0.5 if metric == "p50" else 0.99)
            for result in results
        ]
        return statistics.median(values)

    summary: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "requests_per_round": args.requests,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "errors": sum(result.errors for results in throughput.values() for result in results),
    }
    for name in ("direct", "router"):
        summary[f"{name}_rps"] = round(median(throughput[name], "rps"), 1)
        summary[f"{name}_p50_ms"] = round(median(throughput[name], "p50"), 3)
        summary[f"{name}_p99_ms"] = round(median(throughput[name], "p99"), 3)
        summary[f"{name}_sequential_p50_ms"] = round(median(sequential[name], "p50"), 3)
        summary[f"{name}_sequential_p99_ms"] = round(median(sequential[name], "p99"), 3)
    summary["added_p50_ms"] = round(summary["router_p50_ms"] - summary["direct_p50_ms"], 3)
    summary["added_p99_ms"] = round(summary["router_p99_ms"] - summary["direct_p99_ms"], 3)
    summary["added_sequential_p50_ms"] = round(
        summary["router_sequential_p50_ms"] - summary["direct_sequential_p50_ms"], 3
    )
    summary["added_sequential_p99_ms"] = round(
        summary["router_sequential_p99_ms"] - summary["direct_sequential_p99_ms"], 3
    )
    summary["deploy_to_serving_s"] = [round(value, 3) for value in deploys]
    summary["deploy_to_serving_median_s"] = round(statistics.median(deploys), 3)
    summary["deploy_to_serving_max_s"] = round(max(deploys), 3)
    return summary


def print_table(summary: dict[str, Any]) -> None:
    rows = [
        ("", "direct to revision", "through router", "added"),
        (
            f"requests/s (c={summary['concurrency']})",
            f"{summary['direct_rps']:.0f}",
            f"{summary['router_rps']:.0f}",
            "",
        ),
        (
            f"p50 ms (c={summary['concurrency']})",
            f"{summary['direct_p50_ms']:.2f}",
            f"{summary['router_p50_ms']:.2f}",
            f"{summary['added_p50_ms']:+.2f}",
        ),
        (
            f"p99 ms (c={summary['concurrency']})",
            f"{summary['direct_p99_ms']:.2f}",
            f"{summary['router_p99_ms']:.2f}",
            f"{summary['added_p99_ms']:+.2f}",
        ),
        (
            "p50 ms (c=1)",
            f"{summary['direct_sequential_p50_ms']:.2f}",
            f"{summary['router_sequential_p50_ms']:.2f}",
            f"{summary['added_sequential_p50_ms']:+.2f}",
        ),
        (
            "p99 ms (c=1)",
            f"{summary['direct_sequential_p99_ms']:.2f}",
            f"{summary['router_sequential_p99_ms']:.2f}",
            f"{summary['added_sequential_p99_ms']:+.2f}",
        ),
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print()
    deploys = ", ".join(f"{value:.2f}" for value in summary["deploy_to_serving_s"])
    print(
        f"deploy -> serving through the router: median {summary['deploy_to_serving_median_s']:.2f} s, "
        f"max {summary['deploy_to_serving_max_s']:.2f} s  ({deploys})"
    )
    print(f"errors: {summary['errors']}, medians of {summary['rounds']} rounds, {summary['cpus']} CPUs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per round and path")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent connections")
    parser.add_argument(
        "--sequential", type=int, default=500, help="one-at-a-time requests per round and path"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--deploys", type=int, default=5)
    args = parser.parse_args()
    summary = asyncio.run(run(args))
    print_table(summary)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
