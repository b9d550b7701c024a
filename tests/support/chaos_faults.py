"""The faults of the chaos harness, each a coroutine over a running `ChaosStack`.

Every fault runs on a demo service of its own (`DemoTarget`) and returns a `FaultReport` with the
invariant columns filled in. `benchmarks/chaos.py` runs each on a fresh stack with the product's
default settings; `tests/e2e/test_chaos.py` runs the quick ones on one shared stack with a short
lease. The timing of each fault is derived from the lease, so both hit the same code paths.

How a fault finds its moment:
- "mid-action": the emulator holds the action's UpdateService (a `hang` failure rule); the rule
  being used up says the call arrived, so the action is surely in flight, in phase `pending`;
- "while verifying": the incident's status in the database.

The faults on Remediator's own processes measure how soon the action is taken over (kill -9: when
the lease ends; SIGTERM: at once, the lease handed back) and how soon a stopped process exits.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tests.support.chaos import (
    AlertWatch,
    ChaosOptions,
    ChaosStack,
    DemoTarget,
    FaultReport,
    deliver,
    gather_limited,
    notification,
    now,
    parse_time,
    storm_alert,
    summarize,
)


@dataclass(frozen=True, kw_only=True)
class FaultSettings:
    lease_seconds: int = 8  # ACTUATOR_LEASE_SECONDS of the stack the fault runs on (the default)
    baseline_seconds: float = 30.0  # healthy traffic on the stable revision before the bad deploy
    settle_seconds: float = 150.0  # after the fault, how long incidents get to come to rest
    recovery_bound: float = 240.0  # fault to every incident at rest, generous for a 2-core machine
    storm_alerts: int = 10_000
    admin_api_outage_seconds: float = 60.0  # the Cloud Run Admin API answering 503
    storm_services: int = 100


FaultRun = Callable[[ChaosStack, DemoTarget, FaultSettings], Awaitable[FaultReport]]


@dataclass(frozen=True, kw_only=True)
class Fault:
    name: str
    description: str
    run: FaultRun
    replicas: int = 1
    alertmanager_pair: bool = False
    needs_baseline: bool = True
    extra_env: Callable[[FaultSettings], dict[str, str]] = field(default=lambda settings: {})

    def stack_options(self, settings: FaultSettings) -> ChaosOptions:
        env = {"ACTUATOR_LEASE_SECONDS": str(settings.lease_seconds), **self.extra_env(settings)}
        return ChaosOptions(
            replicas=self.replicas, alertmanager_pair=self.alertmanager_pair, remediator_env=env
        )


def slow_update_seconds(settings: FaultSettings) -> float:
    """An UpdateService slower than the lease: what a worker with a dead heartbeat cannot survive."""
    return settings.lease_seconds + 3.0


def call_timeout_env(settings: FaultSettings) -> dict[str, str]:
    # The slow update must not time out at the client: it stands for a slow Cloud Run operation.
    return {"CLOUD_RUN_CALL_TIMEOUT_SECONDS": str(int(slow_update_seconds(settings) + 15))}


async def _until_incident(chaos: ChaosStack, target: DemoTarget, statuses: set[str], onset: datetime) -> None:
    await chaos.wait_for_status(target.service.name, statuses, since=onset, within=180)


async def _finish(
    report: FaultReport,
    chaos: ChaosStack,
    target: DemoTarget,
    settings: FaultSettings,
    *,
    onset: datetime,
    fault_at: datetime,
    watch: AlertWatch,
    started: float,
) -> FaultReport:
    service = target.service.name
    incidents = await chaos.settle([service], since=onset, within=settings.settle_seconds)
    summarize(report, chaos, incidents, services=[service], fault_at=fault_at)
    report.alerts_delivered, report.alerts_lost = await watch.lost()
    report.recovery_bound = settings.recovery_bound
    report.elapsed_seconds = time.monotonic() - started
    return report


# --- PostgreSQL ---------------------------------------------------------------------------------


async def pg_restart_acting(chaos: ChaosStack, target: DemoTarget, settings: FaultSettings) -> FaultReport:
    """PostgreSQL restarted while an action is in flight (its UpdateService slower than the lease),
    the outage covering the heartbeat's first renewal."""
    report = FaultReport(
        fault="pg-restart-acting",
        description=(
            f"PostgreSQL restarted while acting: UpdateService takes {slow_update_seconds(settings):g}s "
            f"(lease {settings.lease_seconds}s), the database is down over the first lease renewal"
        ),
    )
    started = time.monotonic()
    service = target.service.name
    async with AlertWatch(chaos, [service]) as watch:
        onset = await chaos.bad_deploy(target)
        rule = await chaos.hang_next_update(service, slow_update_seconds(settings))
        await chaos.wait_rule_used(rule, within=180)
        fault_at = now()
        # The heartbeat renews every lease/3 from the claim, a moment before the update arrived.
        down = settings.lease_seconds / 3 + 1.5
        await asyncio.to_thread(chaos.pg.restart, down_seconds=down)
        report.notes.append(f"database down {down:.1f}s")
        return await _finish(
            report, chaos, target, settings, onset=onset, fault_at=fault_at, watch=watch, started=started
        )


async def pg_restart_verifying(chaos: ChaosStack, target: DemoTarget, settings: FaultSettings) -> FaultReport:
    report = FaultReport(
        fault="pg-restart-verifying",
        description="PostgreSQL restarted while the incident is verifying, down over a lease renewal",
    )
    started = time.monotonic()
    service = target.service.name
    async with AlertWatch(chaos, [service]) as watch:
        onset = await chaos.bad_deploy(target)
        await _until_incident(chaos, target, {"verifying"}, onset)
        fault_at = now()
        down = settings.lease_seconds / 3 + 1.5
        await asyncio.to_thread(chaos.pg.restart, down_seconds=down)
        report.notes.append(f"database down {down:.1f}s")
        return await _finish(
            report, chaos, target, settings, onset=onset, fault_at=fault_at, watch=watch, started=started
        )


# --- Cloud Run ----------------------------------------------------------------------------------


async def cloudrun_503_verifying(
    chaos: ChaosStack, target: DemoTarget, settings: FaultSettings
) -> FaultReport:
    """The Admin API answers 503 to every read of the service for 60 s, from the moment the change
    lands: verification's first step (reading which revisions now serve) meets the outage."""
    report = FaultReport(
        fault="cloudrun-503-verifying",
        description=(
            f"Cloud Run Admin API answers 503 for {settings.admin_api_outage_seconds:g}s "
            "as verification starts"
        ),
    )
    started = time.monotonic()
    service = target.service.name
    async with AlertWatch(chaos, [service]) as watch:
        onset = await chaos.bad_deploy(target)
        rule = await chaos.hang_next_update(service, 3.0)
        await chaos.wait_rule_used(rule, within=180)
        fault_at = now()
        await chaos.add_failure(kind="503", count=1_000_000, methods=["GET"], paths=[f"/services/{service}"])
        await asyncio.sleep(settings.admin_api_outage_seconds)
        await chaos.clear_failures()
        return await _finish(
            report, chaos, target, settings, onset=onset, fault_at=fault_at, watch=watch, started=started
        )


# --- Prometheus ---------------------------------------------------------------------------------

PROMETHEUS_FREEZE_SECONDS = 30.0


async def _alertmanager_has_alert(chaos: ChaosStack, service: str, *, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for url in chaos.alertmanager_urls:
            async with chaos.session.get(f"{url}/api/v2/alerts") as response:
                alerts = await response.json()
            if any(
                a["labels"].get("service") == service and a["status"]["state"] == "active" for a in alerts
            ):
                return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no alert for {service} reached Alertmanager within {within:g}s")


async def prometheus_stop_analysis(
    chaos: ChaosStack, target: DemoTarget, settings: FaultSettings
) -> FaultReport:
    """Prometheus frozen (SIGSTOP) once Alertmanager holds the alert: the webhook arrives a second
    later and the whole analysis runs against a Prometheus that accepts connections and never answers."""
    report = FaultReport(
        fault="prometheus-stop-analysis",
        description=f"Prometheus SIGSTOPped for {PROMETHEUS_FREEZE_SECONDS:g}s from the alert's delivery "
        "on, over the whole analysis",
    )
    started = time.monotonic()
    service = target.service.name
    async with AlertWatch(chaos, [service]) as watch:
        onset = await chaos.bad_deploy(target)
        await _alertmanager_has_alert(chaos, service, within=180)
        fault_at = now()
        chaos.freeze_prometheus()
        try:
            await asyncio.sleep(PROMETHEUS_FREEZE_SECONDS)
        finally:
            chaos.thaw_prometheus()
        incidents = await chaos.incidents([service])
        decided = [
            e["at"]
            for i in incidents
            if i.detected_at >= onset
            for e in i.events
            if e["kind"] == "status.decided"
        ]
        if decided:
            report.notes.append(f"decided {(min(decided) - fault_at).total_seconds():.1f}s into the freeze")
        return await _finish(
            report, chaos, target, settings, onset=onset, fault_at=fault_at, watch=watch, started=started
        )


async def prometheus_stop_verifying(
    chaos: ChaosStack, target: DemoTarget, settings: FaultSettings
) -> FaultReport:
    report = FaultReport(
        fault="prometheus-stop-verifying",
        description=f"Prometheus SIGSTOPped for {PROMETHEUS_FREEZE_SECONDS:g}s while the incident "
        "is verifying",
    )
    started = time.monotonic()
    service = target.service.name
    async with AlertWatch(chaos, [service]) as watch:
        onset = await chaos.bad_deploy(target)
        await _until_incident(chaos, target, {"verifying"}, onset)
        fault_at = now()
        chaos.freeze_prometheus()
        try:
            await asyncio.sleep(PROMETHEUS_FREEZE_SECONDS)
        finally:
            chaos.thaw_prometheus()
        return await _finish(
            report, chaos, target, settings, onset=onset, fault_at=fault_at, watch=watch, started=started
        )


# --- Remediator's own processes -----------------------------------------------------------------


def _takeover_delay(incidents: list[Any], after: datetime) -> float | None:
    takeovers = [
        e["at"] for i in incidents for e in i.events if e["kind"] == "action.takeover" and e["at"] >= after
    ]
    return round((min(takeovers) - after).total_seconds(), 1) if takeovers else None


async def kill9_mid_action(chaos: ChaosStack, target: DemoTarget, settings: FaultSettings) -> FaultReport:
    """kill -9 of `remediator serve` while its UpdateService is in flight (the emulator still carries
    it out), then the same process started again with the same settings."""
    report = FaultReport(
        fault="kill9-mid-action",
        description="kill -9 of `remediator serve` mid-UpdateService, restarted 1 s later with the "
        "same settings",
    )
    started = time.monotonic()
    service = target.service.name
    async with AlertWatch(chaos, [service]) as watch:
        onset = await chaos.bad_deploy(target)
        rule = await chaos.hang_next_update(service, 3.0)
        await chaos.wait_rule_used(rule, within=180)
        fault_at = now()
        port = chaos.local.options.remediator_port
        await chaos.kill_replica(port)
        await asyncio.sleep(1.0)
        await chaos.restart_replica(port)
        ready = (now() - fault_at).total_seconds()
        await _finish(
            report, chaos, target, settings, onset=onset, fault_at=fault_at, watch=watch, started=started
        )
        delay = _takeover_delay(await chaos.incidents([service]), fault_at)
        report.notes.append(
            f"action taken over {delay}s after the kill; the restarted process answered /readyz after "
            f"{ready:.1f}s (lease {settings.lease_seconds}s)"
            if delay is not None
            else "no takeover recorded"
        )
        return report


async def replica_killed_mid_action(
    chaos: ChaosStack, target: DemoTarget, settings: FaultSettings
) -> FaultReport:
    """Two replicas on one database, fed by an Alertmanager HA pair; the replica running the action
    is killed (-9) mid-UpdateService and stays dead: the other must finish the action, once."""
    report = FaultReport(
        fault="replica-killed-mid-action",
        description="2 replicas + Alertmanager HA pair; kill -9 of the replica holding the action, "
        "mid-UpdateService",
    )
    started = time.monotonic()
    service = target.service.name
    async with AlertWatch(chaos, [service]) as watch:
        onset = await chaos.bad_deploy(target)
        rule = await chaos.hang_next_update(service, 3.0)
        await chaos.wait_rule_used(rule, within=180)
        fault_at = now()
        holder = await chaos.replica_doing_cloud_run_calls(chaos.replica_ports)
        if holder is None:
            raise AssertionError(
                "no replica has read the rollback target: cannot tell which holds the action"
            )
        await chaos.kill_replica(holder)
        report.notes.append(f"killed the replica on port {holder}; the other stays up")
        await _finish(
            report, chaos, target, settings, onset=onset, fault_at=fault_at, watch=watch, started=started
        )
        delay = _takeover_delay(await chaos.incidents([service]), fault_at)
        report.notes.append(
            f"action taken over {delay}s after the kill, by the surviving replica "
            f"(lease {settings.lease_seconds}s)"
            if delay is not None
            else "no takeover recorded"
        )
        return report


# Cloud Run sends SIGKILL about 10 s after SIGTERM; Remediator's stop is meant to fit in 8.
SIGTERM_EXIT_BOUND_SECONDS = 8.0


async def sigterm_verifying(chaos: ChaosStack, target: DemoTarget, settings: FaultSettings) -> FaultReport:
    """Two replicas on one database, fed by an Alertmanager HA pair; the replica verifying the action
    gets SIGTERM (Cloud Run scaling in, or a redeploy): it must exit within Cloud Run's budget,
    handing its lease back, and the other must continue the action at once, without a second change."""
    report = FaultReport(
        fault="sigterm-verifying",
        description="2 replicas + Alertmanager HA pair; SIGTERM to the replica verifying the action",
    )
    started = time.monotonic()
    service = target.service.name
    async with AlertWatch(chaos, [service]) as watch:
        onset = await chaos.bad_deploy(target)
        await _until_incident(chaos, target, {"verifying"}, onset)
        holder = await chaos.replica_doing_cloud_run_calls(chaos.replica_ports)
        if holder is None:
            raise AssertionError(
                "no replica has read the rollback target: cannot tell which holds the action"
            )
        fault_at = now()
        exited = await chaos.terminate_replica(holder)
        report.notes.append(f"the replica on port {holder} exited {exited:.1f}s after SIGTERM")
        if exited > SIGTERM_EXIT_BOUND_SECONDS:
            report.broken.append(
                f"exited {exited:.1f}s after SIGTERM (bound {SIGTERM_EXIT_BOUND_SECONDS:g}s)"
            )
        await _finish(
            report, chaos, target, settings, onset=onset, fault_at=fault_at, watch=watch, started=started
        )
        delay = _takeover_delay(await chaos.incidents([service]), fault_at)
        report.notes.append(
            f"action taken over {delay}s after the SIGTERM, by the other replica "
            f"(lease {settings.lease_seconds}s: the lease was handed back)"
            if delay is not None
            else "no takeover recorded"
        )
        return report


# --- storms -------------------------------------------------------------------------------------

STORM_WAVES = 5
STORM_CONCURRENCY = 16


def storm_groups(
    services: list[str], alertnames: tuple[str, ...], per_group: int, starts_at: datetime
) -> list[tuple[dict[str, str], list[dict[str, Any]]]]:
    """Alertmanager's grouping by (alertname, service): every group's alerts, distinct by route."""
    return [
        (
            {"alertname": name, "service": service},
            [storm_alert(service, name, number, starts_at) for number in range(per_group)],
        )
        for service in services
        for name in alertnames
    ]


async def _deliver_waves(
    chaos: ChaosStack,
    groups: list[tuple[dict[str, str], list[dict[str, Any]]]],
    ports: list[int],
    *,
    halfway: Callable[[], Awaitable[None]] | None = None,
) -> tuple[set[tuple[str, str]], int, dict[int | str, int]]:
    """Send each group in cumulative waves (as each group interval re-sends the whole group with
    the alerts that joined), every notification to every replica, concurrently across groups.
    Returns the alerts some replica answered 2xx for, the deliveries no replica accepted, and the
    count of each final answer."""
    delivered: set[tuple[str, str]] = set()
    undelivered = 0
    answers: dict[int | str, int] = {}
    # Each replica's webhook is its own integration in Alertmanager: a dead one does not hold up the
    # other. Retries are bounded as Alertmanager bounds them by the group interval.
    slots = {port: asyncio.Semaphore(STORM_CONCURRENCY) for port in ports}

    async def send(port: int, body: bytes) -> Any:
        async with slots[port]:
            return await deliver(chaos, port, body, attempts=3)

    for wave in range(1, STORM_WAVES + 1):
        if halfway is not None and wave == STORM_WAVES // 2 + 1:
            await halfway()
        jobs = []
        for group_labels, alerts in groups:
            batch = alerts[: max(1, len(alerts) * wave // STORM_WAVES)]
            body = json.dumps(notification(group_labels, batch)).encode()
            for port in ports:
                jobs.append((batch, send(port, body)))
        results = await asyncio.gather(*(job for _, job in jobs))
        by_batch: dict[int, list[Any]] = {}
        for (batch, _), result in zip(jobs, results, strict=True):
            by_batch.setdefault(id(batch), [batch]).append(result)
            answers[result.final] = answers.get(result.final, 0) + 1
        for batch, *results_for_batch in by_batch.values():
            if any(r.delivered for r in results_for_batch):
                delivered.update((a["fingerprint"], a["startsAt"]) for a in batch)
            else:
                undelivered += 1
    return delivered, undelivered, answers


async def _count_lost(chaos: ChaosStack, delivered: set[tuple[str, str]]) -> int:
    recorded = await chaos.recorded_alerts(sorted({fingerprint for fingerprint, _ in delivered}))
    recorded_keys = {(fingerprint, at) for fingerprint, at in recorded}
    return sum(1 for fingerprint, at in delivered if (fingerprint, parse_time(at)) not in recorded_keys)


async def storm_replica_killed(chaos: ChaosStack, target: DemoTarget, settings: FaultSettings) -> FaultReport:
    count, service_count = settings.storm_alerts, settings.storm_services
    names = ("HighErrorRate", "HighLatencyP95")
    per_group = max(1, count // (service_count * len(names)))
    report = FaultReport(
        fault="storm-replica-killed",
        description=(
            f"{service_count * len(names) * per_group:,} alerts in {service_count * len(names)} groups "
            f"({service_count} services), {STORM_WAVES} cumulative waves to both replicas; "
            "one replica killed -9 halfway"
        ),
    )
    started = time.monotonic()
    onset = now() - timedelta(seconds=1)
    services = [f"storm-{number:03d}" for number in range(service_count)]
    groups = storm_groups(services, names, per_group, onset)
    ports = chaos.replica_ports
    killed: list[datetime] = []

    async def kill_one() -> None:
        await chaos.kill_replica(ports[0])
        killed.append(now())

    delivered, undelivered, answers = await _deliver_waves(chaos, groups, ports, halfway=kill_one)
    fault_at = killed[0] if killed else onset
    report.alerts_delivered = len(delivered)
    report.alerts_lost = await _count_lost(chaos, delivered)
    report.notes.append(f"final answers per delivery: {dict(sorted(answers.items(), key=str))}")
    if undelivered:
        report.notes.append(f"{undelivered} notification(s) no replica accepted after retries")
    incidents = await chaos.settle(
        services, since=onset - timedelta(seconds=5), within=settings.settle_seconds
    )
    summarize(report, chaos, incidents, services=services, fault_at=fault_at)
    report.did = _count_statuses(incidents)
    report.recovery_bound = settings.recovery_bound
    report.elapsed_seconds = time.monotonic() - started
    return report


def _count_statuses(incidents: list[Any]) -> str:
    counts: dict[str, int] = {}
    for incident in incidents:
        counts[incident.status] = counts.get(incident.status, 0) + 1
    actions = sum(len(i.actions) for i in incidents)
    return (
        f"{len(incidents)} incidents: "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + f"; {actions} actions"
    )


# --- poison payloads ----------------------------------------------------------------------------


def poison_alerts(service: str, starts_at: datetime) -> dict[str, dict[str, Any]]:
    """One alert for each kind of input PostgreSQL or the webhook may choke on."""
    long_service = storm_alert("p" * 300, "HighErrorRate", 0, starts_at)
    long_severity = storm_alert(service, "HighErrorRate", 900, starts_at, severity="s" * 40)
    nul_label = storm_alert(service, "HighErrorRate", 901, starts_at, detail="bad\x00value")
    nul_annotation = storm_alert(service, "HighErrorRate", 902, starts_at)
    nul_annotation["annotations"]["description"] = "error\x00ratio"
    many_labels = storm_alert(
        service, "HighErrorRate", 903, starts_at, **{f"label_{n:04d}": "x" for n in range(1000)}
    )
    huge_annotation = storm_alert(service, "HighErrorRate", 904, starts_at)
    huge_annotation["annotations"]["description"] = "x" * (1 << 20)
    return {
        "service label 300 chars": long_service,
        "severity 40 chars": long_severity,
        "NUL in a label": nul_label,
        "NUL in an annotation": nul_annotation,
        "1,000 labels": many_labels,
        "1 MiB annotation": huge_annotation,
    }


async def poison_payloads(chaos: ChaosStack, target: DemoTarget, settings: FaultSettings) -> FaultReport:
    """Each poison alert rides in a notification with five valid alerts (a group of one alertname
    across services, as a `group_by: [alertname]` route sends), mixed into a storm of valid groups."""
    report = FaultReport(
        fault="poison-payloads",
        description="poison alerts (long service/severity, NUL, 1,000 labels, 1 MiB annotation) each in a "
        "notification with 5 valid alerts, amid 1,000 valid alerts, to every replica",
    )
    started = time.monotonic()
    onset = now() - timedelta(seconds=1)
    services = [f"poison-{number:02d}" for number in range(10)]
    storm = storm_groups(services, ("HighErrorRate",), 100, onset)
    valid_by_kind: dict[str, list[dict[str, Any]]] = {}
    groups = list(storm)
    for number, (kind, poison) in enumerate(poison_alerts(services[0], onset).items()):
        valid = [
            storm_alert(services[(number + k) % len(services)], "PoisonGroup", 100 * number + k, onset)
            for k in range(5)
        ]
        valid_by_kind[kind] = valid
        groups.append(({"alertname": "PoisonGroup"}, [*valid, poison]))
    ports = chaos.replica_ports
    answers_by_kind: dict[str, list[Any]] = {}
    jobs = []
    for group_labels, alerts in groups:
        body = json.dumps(notification(group_labels, alerts)).encode()
        for port in ports:
            jobs.append((alerts, lambda port=port, body=body: deliver(chaos, port, body, attempts=3)))
    results = await gather_limited([job for _, job in jobs], STORM_CONCURRENCY)
    for (alerts, _), result in zip(jobs, results, strict=True):
        for kind, valid in valid_by_kind.items():
            if alerts[: len(valid)] == valid:
                answers_by_kind.setdefault(kind, []).append(result.final)
    valid_fingerprints = {
        (a["fingerprint"], a["startsAt"]) for valid in valid_by_kind.values() for a in valid
    }
    valid_fingerprints |= {(a["fingerprint"], a["startsAt"]) for _, alerts in storm for a in alerts}
    # Every valid alert Alertmanager sent must be recorded, whatever the answer: it never retries a
    # 4xx, and retries a 5xx forever.
    report.alerts_delivered = len(valid_fingerprints)
    report.alerts_lost = await _count_lost(chaos, valid_fingerprints)
    lost_by_kind = {
        kind: await _count_lost(chaos, {(a["fingerprint"], a["startsAt"]) for a in valid})
        for kind, valid in valid_by_kind.items()
    }
    for kind, answers in answers_by_kind.items():
        report.notes.append(
            f"{kind}: answered {sorted(set(map(str, answers)))}, "
            f"{lost_by_kind[kind]}/5 valid alerts not recorded"
        )
    incidents = await chaos.settle(
        services, since=onset - timedelta(seconds=5), within=settings.settle_seconds
    )
    summarize(report, chaos, incidents, services=services, fault_at=onset)
    report.did = _count_statuses(incidents)
    report.recovery_bound = settings.recovery_bound
    report.elapsed_seconds = time.monotonic() - started
    return report


FAULTS: dict[str, Fault] = {
    fault.name: fault
    for fault in (
        Fault(
            name="pg-restart-acting",
            description="PostgreSQL restarted while an incident is acting",
            run=pg_restart_acting,
            extra_env=call_timeout_env,
        ),
        Fault(
            name="pg-restart-verifying",
            description="PostgreSQL restarted while an incident is verifying",
            run=pg_restart_verifying,
        ),
        Fault(
            name="cloudrun-503-verifying",
            description="Cloud Run Admin API 503 for 60 s during verification",
            run=cloudrun_503_verifying,
        ),
        Fault(
            name="prometheus-stop-analysis",
            description="Prometheus SIGSTOP during analysis",
            run=prometheus_stop_analysis,
        ),
        Fault(
            name="prometheus-stop-verifying",
            description="Prometheus SIGSTOP during verification",
            run=prometheus_stop_verifying,
        ),
        Fault(
            name="kill9-mid-action",
            description="kill -9 of serve mid-action, then a restart",
            run=kill9_mid_action,
        ),
        Fault(
            name="replica-killed-mid-action",
            description="two replicas, the one holding the action killed",
            run=replica_killed_mid_action,
            replicas=2,
            alertmanager_pair=True,
        ),
        Fault(
            name="sigterm-verifying",
            description="two replicas, the one verifying the action stopped with SIGTERM",
            run=sigterm_verifying,
            replicas=2,
            alertmanager_pair=True,
        ),
        Fault(
            name="storm-replica-killed",
            description="10,000-alert storm to both replicas, one killed",
            run=storm_replica_killed,
            replicas=2,
            alertmanager_pair=True,
            needs_baseline=False,
        ),
        Fault(
            name="poison-payloads",
            description="poison payloads mixed into a storm",
            run=poison_payloads,
            needs_baseline=False,
        ),
    )
}


async def run_fault_on_fresh_stack(
    fault: Fault, settings: FaultSettings, *, say: Callable[[str], None]
) -> FaultReport:
    """One fault, on a stack of its own (a private PostgreSQL, the stack's demo service and load)."""
    async with ChaosStack(fault.stack_options(settings), say=say) as chaos:
        target = chaos.default_target()
        if fault.needs_baseline:
            await chaos.wait_for_baseline(target, settings.baseline_seconds, since=time.monotonic())
        return await fault.run(chaos, target, settings)
