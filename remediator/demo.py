"""`remediator demo`: one fault, followed live from injection to verified recovery.

The stack comes up, a baseline of steady traffic is recorded, the scenario's fault is injected (the
true onset is known: that moment), and the incident is followed through Prometheus' alerts and
Remediator's own API. MTTR and its parts are measured from the true onset; the onset Remediator
estimated from the metrics is reported beside it. Exit 0 only when the expected outcome happened.

Scenarios
    bad-deploy         a new revision answering 15% 500s takes all traffic          -> ROLLBACK
    canary             a new revision at 10% of traffic answering 40% 500s          -> ROLLBACK
    latency-deploy     a new revision adding 1.5 s to every request                 -> ROLLBACK
    traffic-spike      offered load triples on a service capped at two instances    -> SCALE_UP
    dependency-outage  the serving revision's dependency fails (fault-injection API) -> INVESTIGATE,
                       traffic untouched

With `--mode approve` every action waits for a human: the incident's card appears in a local fake
Slack (printed in the terminal) and, after a pause, an on-call user clicks Approve with a signed
request, as in production (see `remediator.demoslack`).
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
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from google.cloud import run_v2

from analyzer import EvidenceConfig
from collector import MetricsProfile, MetricsTiming, PrometheusSource, queries_for, short_name
from remediator.demoslack import SlackApprover
from remediator.fakeslack import render_blocks
from remediator.processes import StackError
from remediator.saved_scenarios import RECORDABLE, ScenarioNotSaved, recorded_scenario, save_scenario
from remediator.stack import DemoProfile, DemoService, LocalStack, StackOptions

FINAL = {"resolved", "escalated", "failed", "closed", "awaiting_approval", "suppressed"}
# With a human approving in the loop, waiting for approval is a step, not the end.
FINAL_WITH_APPROVER = FINAL - {"awaiting_approval"}
FOLLOW_TIMEOUT = 300.0
# Cloud Monitoring's samples arrive minutes late, and verification waits for fresh ones.
CLOUD_RUN_FOLLOW_TIMEOUT = 900.0


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
    # How long the newest revision serves before the fault is injected. A fault within the engine's
    # change window of a deploy is read as possibly the deploy's (analyzer/evidence.py), so a fault
    # that is not a deploy's waits until the demo's fresh deploy is past that window.
    settle_after_deploy: timedelta = timedelta(0)


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


async def _startup_blip(target: DemoTarget, http: aiohttp.ClientSession) -> Injection:
    # A healthy revision that answers 503 for its first 10 s of traffic: the alert fires, and the
    # check right before acting finds it serving cleanly. Nothing is rolled back; the incident
    # closes as recovered.
    return await deploy_bad_revision(target, {"DEMO_WARMUP_ERRORS_S": "10"})


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
            "startup-blip",
            "NONE",
            "a healthy new revision that fails its first ~10 s (a cold start)",
            _startup_blip,
        ),
        DemoScenario(
            "traffic-spike",
            "SCALE_UP",
            "3x traffic on a service capped at two instances",
            _traffic_spike,
            # Two instances, not one: a ceiling of one reads as a singleton on purpose, which
            # Remediator never scales on its own.
            profile=DemoProfile(concurrency=4, service_time_ms=200, min_instances=1, max_instances=2),
            settle_after_deploy=EvidenceConfig().change_window + timedelta(seconds=30),
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
    def approved_by(self) -> str | None:
        """Who approved the waiting action, when a human was asked."""
        for event in (self.incident or {}).get("timeline") or []:
            if event["kind"] == "approval.approved":
                return str((event.get("data") or {}).get("by") or event["actor"])
        return None

    @property
    def action(self) -> str | None:
        """What Remediator did on its own (a decision held back for a human counts as INVESTIGATE)."""
        if self.incident is None or not self.incident.get("decision"):
            return None
        policy = self.incident.get("policy") or {}
        if policy.get("verdict") == "await_approval" and self.approved_by is not None:
            return str(self.incident["decision"]["action"])
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
        if self.expected_action == "NONE":
            # Nothing changed after the injection: a new revision keeps the traffic it took.
            deployed = self.injection.new_revision
            unchanged = {deployed: 100} if deployed else self.traffic_before
            return (self.incident or {}).get("status") == "closed" and self.traffic_after == unchanged
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
            "approved_by": self.approved_by,
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


async def _left_to_settle(target: DemoTarget, settle: timedelta) -> float:
    """Seconds until the newest revision has served for `settle`."""
    if settle <= timedelta(0):
        return 0.0
    clients = target.stack.clients
    assert clients is not None
    name = clients.revision_name(target.service.name, target.service.revisions[0])
    revision = await asyncio.to_thread(clients.revisions.get_revision, name=name)
    created = revision.create_time
    return max(0.0, (created + settle - _now()).total_seconds())


def metrics_source(stack: LocalStack) -> PrometheusSource:
    """The stack's own Prometheus, read with the profile's queries (what Remediator reads too)."""
    options = stack.options
    timing = None
    if options.cloud_run_metrics:
        timing = MetricsTiming(
            sample_period_seconds=options.platform_timing.sample_period_s,
            visibility_delay_seconds=options.platform_timing.visibility_delay_s,
        )
    profile = MetricsProfile(options.metrics)
    return PrometheusSource(stack.prometheus_url, timeout=5.0, queries=queries_for(profile, timing=timing))


async def establish_baseline(
    target: DemoTarget, http: aiohttp.ClientSession, seconds: float, timeline: Timeline
) -> None:
    """Steady traffic for `seconds`, seen by Prometheus, before anything is injected. With Cloud
    Run's platform metrics that also means: until their first readable minutes show it."""
    source = metrics_source(target.stack)
    try:
        deadline = time.monotonic() + seconds
        figures = None
        # Until the readable metrics show the steady load (a half of it at least): Cloud Run's first
        # readable minutes hold only part of it, and a rollback target needs a record.
        while (
            time.monotonic() < deadline
            or figures is None
            or (figures.request_rate_rps or 0.0) < target.rate / 2
        ):
            window = await source.window(target.service.name, at=_now(), window=30)
            figures = window.service
            left = max(0.0, deadline - time.monotonic())
            timeline.status(
                f"baseline: {figures.request_rate_rps or 0:.1f} req/s seen by Prometheus, {left:.0f}s to go"
            )
            await asyncio.sleep(1.0)
    finally:
        source.close()
    timeline.done()
    window_seconds = source.queries.window(30)
    timeline.line(
        f"baseline: {figures.request_rate_rps:.1f} req/s, errors {(figures.error_rate or 0) * 100:.1f}%, "
        f"p95 {figures.latency_p95_ms or 0:.0f} ms over the last {window_seconds}s of readable metrics "
        f"({target.stack.options.metrics} metrics)"
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
    target: DemoTarget,
    http: aiohttp.ClientSession,
    injection: Injection,
    timeline: Timeline,
    *,
    final: set[str] = FINAL,
) -> tuple[dict[str, Any] | None, datetime | None]:
    """Print each step of the incident as it happens; return the final incident and the alert time."""
    stack, service = target.stack, target.service.name
    # The stack's API token reads whatever REMEDIATOR_READ_TOKEN guards, and shows log lines whole.
    auth = {"Authorization": f"Bearer {stack.api_token}"}
    shown = 0
    alert_at: datetime | None = None
    incident_id: int | None = None
    detail: dict[str, Any] | None = None
    limit = CLOUD_RUN_FOLLOW_TIMEOUT if stack.options.cloud_run_metrics else FOLLOW_TIMEOUT
    deadline = time.monotonic() + limit
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
                f"{stack.remediator_url}/api/v1/incidents", params={"service": service}, headers=auth
            ) as response:
                listing = (await response.json())["incidents"]
            fresh = [i["id"] for i in listing if _time(i["detected_at"]) >= injection.onset]
            incident_id = min(fresh) if fresh else None
        if incident_id is not None:
            async with http.get(
                f"{stack.remediator_url}/api/v1/incidents/{incident_id}", headers=auth
            ) as response:
                detail = await response.json()
            for event in detail["timeline"][shown:]:
                text = _describe_event(event, detail)
                if text:
                    timeline.line(text)
            shown = len(detail["timeline"])
            if detail["status"] in final:
                return detail, alert_at
        phase = "waiting for the alert" if alert_at is None else "waiting for Remediator"
        if detail is not None:
            phase = f"incident {detail['id']}: {detail['status']}"
        timeline.status(phase)
        await asyncio.sleep(0.5)
    timeline.line(f"gave up following after {limit:.0f}s")
    return detail, alert_at


async def run_scenario(
    target: DemoTarget,
    scenario: DemoScenario,
    *,
    baseline_seconds: float,
    timeline: Timeline,
    final: set[str] = FINAL,
) -> Outcome:
    """Baseline, inject, follow: the part of the demo that needs a running stack."""
    async with aiohttp.ClientSession() as http:
        settle = await _left_to_settle(target, scenario.settle_after_deploy)
        if settle > baseline_seconds:
            timeline.line(
                f"{target.service.revisions[0]} was deployed moments ago: the fault waits {settle:.0f}s, "
                f"until the revision has served for {scenario.settle_after_deploy.total_seconds():.0f}s "
                "(past the change window in which a fault may be the deploy's)"
            )
        await establish_baseline(target, http, max(baseline_seconds, settle), timeline)
        before = await _traffic(target)
        injection = await scenario.inject(target, http)
        timeline.origin = time.monotonic() - (_now() - injection.onset).total_seconds()
        timeline.line(f"fault injected: {injection.detail}")
        incident, alert_at = await follow(target, http, injection, timeline, final=final)
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
    if s["approved_by"]:
        print(f"approved in Slack by {s['approved_by']}")
    if s["estimated_onset"]:
        print(
            f"onset: true {s['true_onset']}, estimated by Remediator {s['estimated_onset']} "
            f"({s['estimated_onset_source']}); Remediator's own MTTR {secs(s['remediator_mttr_seconds'])}"
        )
    print("outcome: as expected" if outcome.as_expected else "outcome: NOT as expected")


async def _demo(args: argparse.Namespace) -> int:
    scenario = SCENARIOS[args.scenario]
    options = StackOptions.from_args(args, dict(os.environ))
    timeline = Timeline(tty=sys.stdout.isatty() and not args.json)
    approver = SlackApprover(timeline.line, pause=args.approve_after) if args.mode == "approve" else None
    human = " after a human approves in Slack" if approver is not None else ""
    print(
        f"remediator demo: {scenario.name} ({scenario.summary}); expecting {scenario.expected_action}{human}",
        flush=True,
    )
    remediator_env: dict[str, str] = {}
    if approver is not None:
        await approver.start()
        remediator_env = approver.remediator_env(f"http://127.0.0.1:{options.remediator_port}")
    options = StackOptions(
        **{
            **options.__dict__,
            "profile": scenario.profile,
            "remediator_env": {**options.remediator_env, **remediator_env},
        }
    )
    try:
        async with LocalStack(options, say=timeline.line) as stack:
            for line in stack.describe():
                timeline.line(line)
            if approver is not None:
                timeline.line(f"fake Slack           {approver.slack.base_url}  (cards print here)")
            assert stack.service is not None
            target = DemoTarget(
                stack=stack, service=stack.service, loadgen_url=stack.loadgen_url, rate=options.rate
            )
            outcome = await run_scenario(
                target,
                scenario,
                baseline_seconds=args.baseline_seconds,
                timeline=timeline,
                final=FINAL if approver is None else FINAL_WITH_APPROVER,
            )
            if approver is not None:
                await asyncio.sleep(1.5)  # the notifier's last card update
                card = approver.card()
                if card is not None:
                    timeline.line(f"the card in Slack now:\n{render_blocks(card.blocks)}")
    finally:
        if approver is not None:
            await approver.stop()
    print_summary(outcome)
    saved = True
    if args.save_scenario is not None:
        try:
            scenario_file = save_scenario(
                recorded_scenario(outcome, scenario, metrics=options.metrics), args.save_scenario
            )
            print(f"scenario saved: {scenario_file}")
        except ScenarioNotSaved as exc:
            print(f"remediator: error: {exc.message}", file=sys.stderr)
            saved = False
    if args.json:
        print(json.dumps(outcome.summary()))
    return 0 if outcome.as_expected and saved else 1


def run_demo(args: argparse.Namespace) -> int:
    if args.scenario not in SCENARIOS:
        known = ", ".join(SCENARIOS)
        print(f"remediator: error: unknown scenario {args.scenario!r}; one of {known}", file=sys.stderr)
        return 2
    if args.save_scenario is not None and args.scenario not in RECORDABLE:
        print(
            f"remediator: error: --save-scenario: the {args.scenario} demo cannot be saved as a scenario; "
            f"these can: {', '.join(RECORDABLE)}",
            file=sys.stderr,
        )
        return 2
    try:
        return asyncio.run(_demo(args))
    except StackError as exc:
        print(f"remediator: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
