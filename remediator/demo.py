"""`remediator demo`: one fault, followed live from injection to verified recovery.

The stack comes up, a baseline of steady traffic is recorded, the scenario's fault is injected (the
true onset is known: that moment), and the incident is followed through Prometheus' alerts and
Remediator's own API. MTTR and its parts are measured from the true onset; the onset Remediator
estimated from the metrics is reported beside it. Exit 0 only when the expected outcome happened.

Scenarios
    bad-deploy         a new revision answering 15% 500s takes all traffic          -> ROLLBACK
    canary             a new revision at 10% of traffic answering 40% 500s          -> ROLLBACK
    latency-deploy     a new revision adding 1.5 s to every request                 -> ROLLBACK
    traffic-spike      offered load triples on a service capped at one instance     -> SCALE_UP
    dependency-outage  the serving revision's dependency fails (fault-injection API) -> INVESTIGATE,
                       traffic untouched
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from google.cloud import run_v2

from collector import short_name
from remediator.processes import StackError
from remediator.stack import DemoProfile, DemoService, LocalStack, StackOptions

FINAL = {"resolved", "escalated", "failed", "closed", "awaiting_approval", "suppressed"}
FOLLOW_TIMEOUT = 300.0


@dataclass(frozen=True)
class DemoTarget:
    """One demo service under load: what a scenario injects into and follows."""

    stack: LocalStack
    service: DemoService
    loadgen_url: str
    rate: float


@dataclass
class Injection:
    onset: datetime
    detail: str
    new_revision: str | None = None


@dataclass(frozen=True)
class DemoScenario:
    name: str
    expected_action: str
    summary: str
    inject: Callable[[DemoTarget, aiohttp.ClientSession], Awaitable[Injection]]
    profile: DemoProfile = field(default_factory=DemoProfile)


def _now() -> datetime:
    return datetime.now(UTC)


async def deploy_bad_revision(
    target: DemoTarget, env: dict[str, str], *, canary_percent: int | None = None
) -> Injection:
    traffic = None
    if canary_percent is not None:
        stable = target.service.revisions[0]
        traffic = [
            run_v2.TrafficTarget(
                type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                revision=stable,
                percent=100 - canary_percent,
            ),
            run_v2.TrafficTarget(
                type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST,
                percent=canary_percent,
            ),
        ]
    started = _now()
    revision = await target.stack.deploy(target.service.name, env, traffic=traffic)
    # The fault reaches users when the new revision takes traffic: when the deploy finished.
    onset = _now()
    share = f"{canary_percent}% of traffic" if canary_percent is not None else "all traffic"
    detail = f"deployed {revision} with {env} taking {share} ({(onset - started).total_seconds():.1f}s)"
    return Injection(onset=onset, detail=detail, new_revision=revision)


async def _bad_deploy(target: DemoTarget, http: aiohttp.ClientSession) -> Injection:
    return await deploy_bad_revision(target, {"DEMO_ERROR_RATE": "15"})


async def _canary(target: DemoTarget, http: aiohttp.ClientSession) -> Injection:
    return await deploy_bad_revision(target, {"DEMO_ERROR_RATE": "40"}, canary_percent=10)


async def _latency_deploy(target: DemoTarget, http: aiohttp.ClientSession) -> Injection:
    return await deploy_bad_revision(target, {"DEMO_LATENCY_MS": "1500"})


async def _traffic_spike(target: DemoTarget, http: aiohttp.ClientSession) -> Injection:
    rate = target.rate * 3
    async with http.put(f"{target.loadgen_url}/rate", json={"rate": rate}) as response:
        response.raise_for_status()
    return Injection(onset=_now(), detail=f"load raised from {target.rate:g} to {rate:g} req/s")


async def _dependency_outage(target: DemoTarget, http: aiohttp.ClientSession) -> Injection:
    serving = target.service.revisions[0]
    async with http.get(f"{target.stack.emulator_url}/sd/targets") as response:
        groups = await response.json()
    target = next(g["targets"][0] for g in groups if g["labels"].get("revision") == serving)
    url = f"http://{target}/fault/enable?type=5xx&error_rate=20"
    async with http.post(url) as response:
        response.raise_for_status()
    return Injection(onset=_now(), detail=f"fault injected on {serving}: 20% 500s (its dependency is down)")


SCENARIOS: dict[str, DemoScenario] = {
    s.name: s
    for s in (
        DemoScenario("bad-deploy", "ROLLBACK", "a new revision with 5xx errors", _bad_deploy),
        DemoScenario("canary", "ROLLBACK", "a new revision at 10% traffic failing", _canary),
        DemoScenario("latency-deploy", "ROLLBACK", "a new revision 1.5 s slower", _latency_deploy),
        DemoScenario(
            "traffic-spike",
            "SCALE_UP",
            "3x traffic on a service capped at one instance",
            _traffic_spike,
            profile=DemoProfile(concurrency=4, service_time_ms=100, min_instances=1, max_instances=1),
        ),
        DemoScenario(
            "dependency-outage", "INVESTIGATE", "the running revision's dependency fails", _dependency_outage
        ),
    )
}


class Timeline:
    """One line per step with the time since injection; a live status line on a terminal."""

    def __init__(self, *, tty: bool) -> None:
        self.tty = tty
        self.origin: float | None = None
        self._status = ""

    def _stamp(self) -> str:
        if self.origin is None:
            return "      "
        return f"{time.monotonic() - self.origin:+6.1f}s"

    def line(self, text: str) -> None:
        self._clear()
        print(f"[{self._stamp()}] {text}", flush=True)
        self._draw()

    def status(self, text: str) -> None:
        if not self.tty:
            return
        self._status = text
        self._draw()

    def _width(self) -> int:
        return shutil.get_terminal_size((100, 20)).columns

    def _draw(self) -> None:
        if self.tty and self._status:
            text = f"  {self._stamp()} {self._status}"[: self._width() - 1]
            sys.stdout.write("\r" + text)
            sys.stdout.flush()

    def _clear(self) -> None:
        if self.tty and self._status:
            sys.stdout.write("\r" + " " * (self._width() - 1) + "\r")

    def done(self) -> None:
        self._clear()
        self._status = ""


@dataclass
class Outcome:
    scenario: str
    expected_action: str
    incident: dict[str, Any] | None
    injection: Injection
    traffic_before: dict[str, int]
    traffic_after: dict[str, int]
    alert_firing_at: datetime | None
    previous_revision: str

    @property
    def action(self) -> str | None:
        """What Remediator did on its own (a decision held back for a human counts as INVESTIGATE)."""
        if self.incident is None or not self.incident.get("decision"):
            return None
        policy = self.incident.get("policy") or {}
        if policy.get("verdict") in ("await_approval", "suppress", "overrule"):
            return "INVESTIGATE"
        return str(self.incident["decision"]["action"])

    @property
    def target_revision(self) -> str | None:
        decision = (self.incident or {}).get("decision") or {}
        return decision.get("target_revision") if self.action == "ROLLBACK" else None

    def _at(self, key: str) -> datetime | None:
        value = ((self.incident or {}).get("timestamps") or {}).get(key)
        return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None

    def _since_onset(self, key: str) -> float | None:
        at = self._at(key)
        return round((at - self.injection.onset).total_seconds(), 2) if at else None

    @property
    def verified(self) -> bool:
        return (self.incident or {}).get("status") == "resolved"

    @property
    def as_expected(self) -> bool:
        """The expected action happened and did what it should (or, for INVESTIGATE, changed nothing)."""
        if self.action != self.expected_action:
            return False
        if self.expected_action == "INVESTIGATE":
            return self.traffic_after == self.traffic_before
        if self.expected_action == "ROLLBACK":
            previous = self.previous_revision
            return (
                self.verified and self.target_revision == previous and self.traffic_after == {previous: 100}
            )
        return self.verified

    def summary(self) -> dict[str, Any]:
        incident = self.incident or {}
        estimated = self._at("fault_started_at")
        mttr = self._since_onset("verified_at") if self.verified else None
        return {
            "scenario": self.scenario,
            "incident_id": incident.get("id"),
            "action": self.action,
            "target_revision": self.target_revision,
            "expected_action": self.expected_action,
            "verified": self.verified,
            "mttr_seconds": mttr,
            "time_to_detect_seconds": self._since_onset("detected_at"),
            "time_to_mitigate_seconds": self._since_onset("mitigated_at"),
            "time_to_verify_seconds": mttr,
            "time_to_alert_seconds": round((self.alert_firing_at - self.injection.onset).total_seconds(), 2)
            if self.alert_firing_at
            else None,
            "inside_remediator_seconds": _seconds_between(self._at("detected_at"), self._at("mitigated_at")),
            "true_onset": self.injection.onset.isoformat().replace("+00:00", "Z"),
            "estimated_onset": estimated.isoformat().replace("+00:00", "Z") if estimated else None,
            "estimated_onset_source": (incident.get("timestamps") or {}).get("fault_started_source"),
            "remediator_mttr_seconds": (incident.get("mttr") or {}).get("seconds"),
            "status": incident.get("status"),
            "as_expected": self.as_expected,
        }


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None


async def _traffic(target: DemoTarget) -> dict[str, int]:
    clients = target.stack.clients
    assert clients is not None
    service = await asyncio.to_thread(
        clients.services.get_service, name=clients.service_name(target.service.name)
    )
    shares: dict[str, int] = {}
    for status in service.traffic_statuses:
        name = short_name(status.revision)
        shares[name] = shares.get(name, 0) + int(status.percent)
    return shares


async def _prometheus_scalar(http: aiohttp.ClientSession, url: str, promql: str) -> float | None:
    async with http.get(f"{url}/api/v1/query", params={"query": promql}) as response:
        body = await response.json()
    result = body.get("data", {}).get("result", [])
    try:
        return float(result[0]["value"][1]) if result else None
    except (TypeError, ValueError):
        return None


async def establish_baseline(
    target: DemoTarget, http: aiohttp.ClientSession, seconds: float, timeline: Timeline
) -> None:
    """Steady traffic for `seconds`, seen by Prometheus, before anything is injected."""
    prometheus = target.stack.prometheus_url
    requests = "http_server_request_duration_seconds"
    selector = f'{{service="{target.service.name}"}}'
    failed = f'{{service="{target.service.name}",http_response_status_code=~"5.."}}'
    deadline = time.monotonic() + seconds
    rate = None
    while time.monotonic() < deadline or rate is None:
        rate = await _prometheus_scalar(http, prometheus, f"sum(rate({requests}_count{selector}[30s]))")
        left = max(0.0, deadline - time.monotonic())
        timeline.status(f"baseline: {rate or 0:.1f} req/s seen by Prometheus, {left:.0f}s to go")
        await asyncio.sleep(1.0)
    errors = await _prometheus_scalar(
        http,
        prometheus,
        f"sum(rate({requests}_count{failed}[1m])) / sum(rate({requests}_count{selector}[1m]))",
    )
    p95 = await _prometheus_scalar(
        http, prometheus, f"histogram_quantile(0.95, sum by (le) (rate({requests}_bucket{selector}[1m])))"
    )
    timeline.done()
    timeline.line(
        f"baseline: {rate:.1f} req/s, errors {(errors or 0) * 100:.1f}%, p95 {(p95 or 0) * 1000:.0f} ms "
        f"over {seconds:g}s"
    )


def _describe_event(event: dict[str, Any], incident: dict[str, Any]) -> str | None:
    kind, message = event["kind"], event["message"]
    if kind == "incident.opened":
        return f"webhook received: incident {incident['id']} opened ({message})"
    if kind == "status.decided":
        decision = (event.get("data") or {}).get("decision") or {}
        target = f" -> {decision['target_revision']}" if decision.get("target_revision") else ""
        return (
            f"decision: {decision.get('action')}{target} by {decision.get('engine')} "
            f"(confidence {decision.get('confidence', 0):.2f}): {decision.get('explanation', '')}"
        )
    if kind.startswith("policy."):
        return f"policy: {kind.split('.', 1)[1]}: {message}"
    if kind in ("action.applied", "action.failed", "verification.passed", "verification.failed"):
        return f"{kind.replace('.', ' ')}: {message}"
    if kind in (
        "status.resolved",
        "status.escalated",
        "status.failed",
        "status.closed",
        "status.awaiting_approval",
    ):
        return f"{kind.split('.', 1)[1].replace('_', ' ')}: {message}"
    return None


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def follow(
    target: DemoTarget, http: aiohttp.ClientSession, injection: Injection, timeline: Timeline
) -> tuple[dict[str, Any] | None, datetime | None]:
    """Print each step of the incident as it happens; return the final incident and the alert time."""
    stack, service = target.stack, target.service.name
    shown = 0
    alert_at: datetime | None = None
    incident_id: int | None = None
    detail: dict[str, Any] | None = None
    deadline = time.monotonic() + FOLLOW_TIMEOUT
    while time.monotonic() < deadline:
        if alert_at is None:
            async with http.get(f"{stack.prometheus_url}/api/v1/alerts") as response:
                alerts = (await response.json())["data"]["alerts"]
            firing = [a for a in alerts if a["labels"].get("service") == service and a["state"] == "firing"]
            if firing:
                alert_at = _now()
                timeline.line(
                    f"alert firing: {', '.join(sorted({a['labels']['alertname'] for a in firing}))}"
                )
        if incident_id is None:
            async with http.get(
                f"{stack.remediator_url}/api/v1/incidents", params={"service": service}
            ) as response:
                listing = (await response.json())["incidents"]
            fresh = [i["id"] for i in listing if _time(i["detected_at"]) >= injection.onset]
            incident_id = min(fresh) if fresh else None
        if incident_id is not None:
            async with http.get(f"{stack.remediator_url}/api/v1/incidents/{incident_id}") as response:
                detail = await response.json()
            for event in detail["timeline"][shown:]:
                text = _describe_event(event, detail)
                if text:
                    timeline.line(text)
            shown = len(detail["timeline"])
            if detail["status"] in FINAL:
                return detail, alert_at
        phase = "waiting for the alert" if alert_at is None else "waiting for Remediator"
        if detail is not None:
            phase = f"incident {detail['id']}: {detail['status']}"
        timeline.status(phase)
        await asyncio.sleep(0.5)
    timeline.line(f"gave up following after {FOLLOW_TIMEOUT:.0f}s")
    return detail, alert_at


async def run_scenario(
    target: DemoTarget, scenario: DemoScenario, *, baseline_seconds: float, timeline: Timeline
) -> Outcome:
    """Baseline, inject, follow: the part of the demo that needs a running stack."""
    async with aiohttp.ClientSession() as http:
        await establish_baseline(target, http, baseline_seconds, timeline)
        before = await _traffic(target)
        injection = await scenario.inject(target, http)
        timeline.origin = time.monotonic() - (_now() - injection.onset).total_seconds()
        timeline.line(f"fault injected: {injection.detail}")
        incident, alert_at = await follow(target, http, injection, timeline)
        after = await _traffic(target)
    timeline.done()
    return Outcome(
        scenario=scenario.name,
        expected_action=scenario.expected_action,
        incident=incident,
        injection=injection,
        traffic_before=before,
        traffic_after=after,
        alert_firing_at=alert_at,
        previous_revision=target.service.revisions[0],
    )


def print_summary(outcome: Outcome) -> None:
    s = outcome.summary()

    def secs(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}s"

    print()
    print(
        f"scenario {s['scenario']}: expected {s['expected_action']}, "
        f"Remediator did {s['action'] or 'nothing'}"
        + (f" -> {s['target_revision']}" if s["target_revision"] else "")
        + f" ({s['status']})"
    )
    if s["verified"]:
        print(
            f"MTTR {secs(s['mttr_seconds'])} from the true onset: alert {secs(s['time_to_alert_seconds'])}, "
            f"detected {secs(s['time_to_detect_seconds'])}, mitigated {secs(s['time_to_mitigate_seconds'])}, "
            f"verified {secs(s['time_to_verify_seconds'])}; inside Remediator (webhook to change applied) "
            f"{secs(s['inside_remediator_seconds'])}"
        )
    if s["estimated_onset"]:
        print(
            f"onset: true {s['true_onset']}, estimated by Remediator {s['estimated_onset']} "
            f"({s['estimated_onset_source']}); Remediator's own MTTR {secs(s['remediator_mttr_seconds'])}"
        )
    print("outcome: as expected" if outcome.as_expected else "outcome: NOT as expected")


async def _demo(args: argparse.Namespace) -> int:
    scenario = SCENARIOS[args.scenario]
    options = StackOptions.from_args(args, dict(os.environ))
    options = StackOptions(**{**options.__dict__, "profile": scenario.profile})
    timeline = Timeline(tty=sys.stdout.isatty() and not args.json)
    print(
        f"remediator demo: {scenario.name} ({scenario.summary}); expecting {scenario.expected_action}",
        flush=True,
    )
    async with LocalStack(options, say=timeline.line) as stack:
        for line in stack.describe():
            timeline.line(line)
        assert stack.service is not None
        target = DemoTarget(
            stack=stack, service=stack.service, loadgen_url=stack.loadgen_url, rate=options.rate
        )
        outcome = await run_scenario(
            target, scenario, baseline_seconds=args.baseline_seconds, timeline=timeline
        )
    print_summary(outcome)
    if args.json:
        print(json.dumps(outcome.summary()))
    return 0 if outcome.as_expected else 1


def run_demo(args: argparse.Namespace) -> int:
    if args.scenario not in SCENARIOS:
        known = ", ".join(SCENARIOS)
        print(f"remediator: error: unknown scenario {args.scenario!r}; one of {known}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_demo(args))
    except StackError as exc:
        print(f"remediator: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
