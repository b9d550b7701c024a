"""The closed loop on Cloud Run's platform metrics only (`--metrics cloud-run`, fast timing): no demo
app is scraped, Prometheus alerts on the request metrics the emulator records as Cloud Run's front
end (5 s samples readable 10 s late), and Remediator reads them through the emulator's
Managed-Prometheus-shaped API with OAuth2 tokens for the stack's own service-account key.

A bad deploy and a failing canary run side by side on one stack; both end rolled back and verified.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from remediator.demo import SCENARIOS, DemoTarget, Outcome, run_scenario
from remediator.stack import PLATFORM_TIMINGS, LocalStack, StackOptions
from tests.e2e.test_closed_loop import PrefixedTimeline
from tests.support.databases import run_outside_loop
from tests.support.real_parts import binary_or_missing, free_port

pytestmark = pytest.mark.e2e

SCENARIO_SERVICES = {"bad-deploy": "cr-bad-deploy", "canary": "cr-canary"}


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Any]:
    binary_or_missing("prometheus")
    binary_or_missing("prometheus-alertmanager")
    return run_outside_loop(_run_scenarios())


async def _run_scenarios() -> dict[str, Any]:
    options = StackOptions(
        emulator_port=free_port(),
        prometheus_port=free_port(),
        alertmanager_port=free_port(),
        remediator_port=free_port(),
        loadgen_port=free_port(),
        rate=5.0,
        grafana=False,
        metrics="cloud-run",
        platform_timing=PLATFORM_TIMINGS["fast"],
    )
    results: dict[str, Any] = {}
    async with LocalStack(options, say=print) as stack:
        async with aiohttp.ClientSession() as http:
            # Prometheus lists its targets once it has loaded the config's scrape jobs.
            for _ in range(60):
                async with http.get(f"{stack.prometheus_url}/api/v1/targets") as response:
                    targets = (await response.json())["data"]["activeTargets"]
                if targets:
                    break
                await asyncio.sleep(0.5)
            results["jobs"] = sorted({target["labels"]["job"] for target in targets})
            async with http.get(
                f"{stack.managed_prometheus_url}/api/v1/query", params={"query": "up"}
            ) as response:
                results["unauthenticated_status"] = response.status

        async def one(name: str, service_name: str) -> None:
            scenario = SCENARIOS[name]
            service = await stack.deploy_demo_service(service_name, scenario.profile)
            port = free_port()
            await stack.start_loadgen(service.uri, 20.0, port)
            target = DemoTarget(
                stack=stack, service=service, loadgen_url=f"http://127.0.0.1:{port}", rate=20.0
            )
            results[name] = await run_scenario(
                target, scenario, baseline_seconds=20, timeline=PrefixedTimeline(name)
            )

        await asyncio.gather(*(one(name, service) for name, service in SCENARIO_SERVICES.items()))
        results["remediator_log"] = (stack.state / "logs" / "remediator.log").read_text(errors="replace")
    return results


def test_nothing_is_instrumented_and_the_query_api_wants_a_token(outcomes: dict[str, Any]) -> None:
    assert outcomes["jobs"] == ["cloudrun-platform", "remediator"]  # the apps' own /metrics are not scraped
    assert outcomes["unauthenticated_status"] == 401


@pytest.mark.parametrize("scenario", ["bad-deploy", "canary"])
def test_the_platform_metrics_alone_drive_a_verified_rollback(
    outcomes: dict[str, Any], scenario: str
) -> None:
    outcome: Outcome = outcomes[scenario]
    summary = outcome.summary()
    assert outcome.as_expected, summary
    assert summary["action"] == "ROLLBACK"
    assert summary["target_revision"] == outcome.previous_revision
    assert outcome.traffic_after == {outcome.previous_revision: 100}
    incident = outcome.incident
    assert incident is not None and incident["status"] == "resolved"
    assert incident["actions"][0]["result"]["verified"] is True
    # Remediator read every figure it needed: no metrics gap, no authentication failure.
    assert [gap for gap in incident["context"].get("gaps") or [] if gap.startswith("prometheus")] == []
    assert incident["context"]["metrics"]["error_rate"] is not None
    assert "authentication failed" not in outcomes["remediator_log"]
