"""How incidents follow one another, on the real local stack: every real process, three demo services
side by side, each under its own 20 req/s load.

    recurrence       a bad deploy is rolled back and verified; a second bad deploy 15 s later gets a
                     new incident, linked to the first, that proposes a rollback within 60 s
    re-analysis      a dependency fault escalates; a bad deploy under the escalated incident is
                     analysed again and rolled back (or held by the policy, with the reason)
    first request    a revision failing from its first request pages no later than one that starts
                     failing a minute into its life
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from google.cloud import run_v2

from remediator.stack import DemoService, LocalStack, StackOptions
from tests.support.databases import run_outside_loop
from tests.support.real_parts import binary_or_missing, free_port

pytestmark = pytest.mark.e2e

RATE = 20.0
BASELINE_S = 30.0
SECOND_DEPLOY_AFTER_S = 15.0
# Prometheus scrapes every 5 s: two alerts on the same data can differ by one scrape.
ONE_SCRAPE_S = 5.0


def _now() -> datetime:
    return datetime.now(UTC)


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class Probe:
    """Reads the stack as a person would: Remediator's API and Prometheus' alerts."""

    def __init__(self, stack: LocalStack, http: aiohttp.ClientSession) -> None:
        self.stack = stack
        self.http = http
        self.auth = {"Authorization": f"Bearer {stack.api_token}"}

    async def incidents(self, service: str) -> list[dict[str, Any]]:
        url = f"{self.stack.remediator_url}/api/v1/incidents"
        async with self.http.get(url, params={"service": service}, headers=self.auth) as response:
            return list(reversed((await response.json())["incidents"]))

    async def incident(self, incident_id: int) -> dict[str, Any]:
        url = f"{self.stack.remediator_url}/api/v1/incidents/{incident_id}"
        async with self.http.get(url, headers=self.auth) as response:
            return dict(await response.json())

    async def until(self, what: str, check: Any, *, within: float, every: float = 0.5) -> Any:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = await check()
            if found:
                return found
            await asyncio.sleep(every)
        raise AssertionError(f"not within {within:g}s: {what}")

    async def alert_firing(self, service: str) -> bool:
        async with self.http.get(f"{self.stack.prometheus_url}/api/v1/alerts") as response:
            alerts = (await response.json())["data"]["alerts"]
        return any(a["labels"].get("service") == service and a["state"] == "firing" for a in alerts)

    async def address(self, revision: str) -> str:
        async with self.http.get(f"{self.stack.emulator_url}/sd/targets") as response:
            groups = await response.json()
        return str(next(g["targets"][0] for g in groups if g["labels"]["revision"] == revision))


async def _service(stack: LocalStack, name: str) -> DemoService:
    service = await stack.deploy_demo_service(name, stack.options.profile)
    await stack.start_loadgen(service.uri, RATE, free_port())
    return service


async def recurrence(stack: LocalStack, probe: Probe) -> dict[str, Any]:
    service = await _service(stack, "e2e-recur")
    await asyncio.sleep(BASELINE_S)
    await stack.deploy(service.name, {"DEMO_ERROR_RATE": "15"})

    async def resolved() -> dict[str, Any] | None:
        rows = await probe.incidents(service.name)
        return rows[0] if rows and rows[0]["status"] == "resolved" else None

    first = await probe.until("the first bad deploy rolled back and verified", resolved, within=120)
    await asyncio.sleep(SECOND_DEPLOY_AFTER_S)
    # The rollback pinned the traffic: the second deploy sends it all to the new revision again.
    all_to_latest = [
        run_v2.TrafficTarget(
            type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST, percent=100
        )
    ]
    second_revision = await stack.deploy(
        service.name, {"DEMO_ERROR_RATE": "15", "DEMO_RELEASE": "4"}, traffic=all_to_latest
    )
    deployed = _now()

    async def proposed() -> dict[str, Any] | None:
        rows = await probe.incidents(service.name)
        later = [row for row in rows if row["id"] != first["id"]]
        if not later or not later[0].get("recommendation"):
            return None
        return await probe.incident(later[0]["id"])

    second = await probe.until("a new incident with a decision", proposed, within=90)
    return {
        "first": await probe.incident(first["id"]),
        "second": second,
        "deployed": deployed,
        "second_revision": second_revision,
        "stable": service.revisions[0],
    }


async def reanalysis(stack: LocalStack, probe: Probe) -> dict[str, Any]:
    service = await _service(stack, "e2e-reanalyse")
    await asyncio.sleep(BASELINE_S)
    serving = service.revisions[0]
    async with probe.http.post(f"http://{await probe.address(serving)}/fault/enable?type=5xx&error_rate=20"):
        pass

    async def escalated() -> dict[str, Any] | None:
        rows = await probe.incidents(service.name)
        return rows[0] if rows and rows[0]["status"] == "escalated" else None

    incident = await probe.until("the dependency fault escalated", escalated, within=90)
    bad = await stack.deploy(service.name, {"DEMO_ERROR_RATE": "15", "DEMO_RELEASE": "3"})

    async def analysed_again() -> dict[str, Any] | None:
        detail = await probe.incident(incident["id"])
        rounds = [e for e in detail["timeline"] if e["kind"] == "analysis.round"]
        return detail if len(rounds) >= 2 else None

    detail = await probe.until("the incident analysed again", analysed_again, within=90)
    return {
        "detail": detail,
        "bad": bad,
        "serving": serving,
        "incidents": await probe.incidents(service.name),
    }


async def first_request(stack: LocalStack, probe: Probe) -> dict[str, float]:
    fresh = await _service(stack, "e2e-fresh")
    aged = await _service(stack, "e2e-aged")
    aged_revision = await stack.deploy(aged.name, {"DEMO_RELEASE": "3"})
    await asyncio.sleep(60)  # the aged revision serves healthily for a minute
    address = await probe.address(aged_revision)
    started: dict[str, float] = {}

    async def break_aged() -> None:
        async with probe.http.post(f"http://{address}/fault/enable?type=5xx&error_rate=15"):
            started["aged"] = time.monotonic()

    async def break_fresh() -> None:
        await stack.deploy(fresh.name, {"DEMO_ERROR_RATE": "15"})
        started["fresh"] = time.monotonic()  # the revision took the traffic when the deploy finished

    await asyncio.gather(break_aged(), break_fresh())
    detected: dict[str, float] = {}

    async def both_firing() -> bool:
        for case, name in (("fresh", fresh.name), ("aged", aged.name)):
            if case not in detected and await probe.alert_firing(name):
                detected[case] = time.monotonic() - started[case]
        return len(detected) == 2

    await probe.until("both alerts firing", both_firing, within=90, every=0.25)
    return detected


async def _run() -> dict[str, Any]:
    options = StackOptions(
        emulator_port=free_port(),
        prometheus_port=free_port(),
        alertmanager_port=free_port(),
        remediator_port=free_port(),
        loadgen_port=free_port(),
        rate=1.0,
        grafana=False,
    )
    async with LocalStack(options, say=print) as stack, aiohttp.ClientSession() as http:
        probe = Probe(stack, http)
        recurred, reanalysed, detection = await asyncio.gather(
            recurrence(stack, probe), reanalysis(stack, probe), first_request(stack, probe)
        )
    return {"recurrence": recurred, "reanalysis": reanalysed, "first_request": detection}


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    binary_or_missing("prometheus")
    binary_or_missing("prometheus-alertmanager")
    return run_outside_loop(_run())


def test_a_second_bad_deploy_after_a_resolved_incident_gets_a_new_incident_proposing_a_rollback(
    results: dict[str, Any],
) -> None:
    found = results["recurrence"]
    first, second = found["first"], found["second"]
    assert first["status"] == "resolved"
    assert [a["type"] for a in first["actions"]] == ["ROLLBACK"]
    assert second["previous_incident"]["id"] == first["id"]
    assert second["previous_incident"]["relation"] == "recurred_after_resolution"
    assert second["id"] in [link["id"] for link in first["following_incidents"]]
    proposed = second["proposed_decision"]
    assert proposed["action"] == "ROLLBACK", second["timeline"]
    assert proposed["target_revision"] == found["stable"]
    decided = _time(second["timestamps"]["decided_at"])
    delay = (decided - found["deployed"]).total_seconds()
    print(f"recurrence: rollback proposed {delay:.1f}s after the second bad deploy took traffic")
    assert delay <= 60
    # The analysis used fresh evidence: the second bad revision, failing, in its context.
    revisions = {r["name"]: r for r in second["context"]["revisions"]}
    assert revisions[found["second_revision"]]["traffic_percent"] == 100
    # The action is the policy's to hold (the first rollback is within the cooldown), with its reason.
    if second["policy"]["verdict"] != "execute":
        assert second["policy"]["reason"], second["policy"]


def test_a_bad_deploy_under_an_escalated_incident_is_analysed_again_never_silently_joined(
    results: dict[str, Any],
) -> None:
    found = results["reanalysis"]
    detail = found["detail"]
    requested = [e for e in detail["timeline"] if e["kind"] == "analysis.requested"]
    assert requested and requested[0]["data"]["trigger"] == "new_revision"
    assert found["bad"] in requested[0]["message"]
    rounds = [e["data"] for e in detail["timeline"] if e["kind"] == "analysis.round"]
    assert rounds[0]["decision"]["action"] == "INVESTIGATE"
    second = rounds[1]
    decided = second["decision"]["action"]
    print(f"re-analysis: round 2 {decided} ({second['verdict']}): {second['policy_reason']}")
    assert found["bad"] in [r["name"] for r in second["evidence"]["revisions"]]
    if second["decision"]["action"] == "ROLLBACK" and second["verdict"] == "execute":
        assert detail["actions"] and detail["actions"][-1]["fault"]["round"] == 2
    else:
        # Held back, with the reason: by the policy, or by the engine, which judged the new revision
        # as the regression but found no revision known to be safe (the one before it was failing
        # from the dependency fault).
        assert second["policy_reason"] or found["bad"] in (detail["status_reason"] or ""), detail


def test_a_revision_failing_from_its_first_request_pages_no_later_than_one_failing_after_a_minute(
    results: dict[str, Any],
) -> None:
    detected = results["first_request"]
    print(f"onset to alert: fresh {detected['fresh']:.1f}s, aged {detected['aged']:.1f}s")
    assert detected["fresh"] <= detected["aged"] + ONE_SCRAPE_S
