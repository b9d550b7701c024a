"""Chaos on the real local stack: faults in Remediator's own dependencies, and its invariants after.

`ChaosStack` runs `LocalStack` (emulator, demo service, Prometheus, Alertmanager, `remediator serve`)
on a private PostgreSQL server that it may restart, kill or freeze, optionally with a second `serve`
replica and an Alertmanager HA pair, and offers each fault as a method. It reads the outcome from
the sources of truth, never from what Remediator says of itself:

- changes applied: the emulator's own log, one `service updated` line per UpdateService it carried
  out (a traffic or scaling change carries no new revision);
- alerts: what Alertmanager holds (or what the harness delivered, for a storm) against the rows in
  `incident_alerts`;
- incidents and actions: the database, read directly.

The invariants (see `FaultReport.violations`):
- never stuck: no incident is left in a status only Remediator can move it out of (open ... verifying)
  once the fault is over and the settle time has passed;
- never twice: exactly one UpdateService per decision that queued a change;
- never lost: every alert that was delivered (answered 2xx) is recorded;
- recovery within the bound the caller gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg

from incidents.models import utcnow
from remediator.demo import DemoTarget, deploy_bad_revision
from remediator.processes import ChildProcess
from remediator.stack import AlertmanagerPeer, DemoProfile, LocalStack, StackOptions
from tests.support.private_postgres import PrivatePostgres
from tests.support.real_parts import free_port

# Statuses only Remediator itself moves an incident out of. `escalated`, `awaiting_approval` and
# `suppressed` wait for a human (or for the alert to resolve): at rest, not stuck.
MACHINE_OWNED = frozenset({"open", "analyzing", "decided", "queued", "acting", "verifying"})
FINISHED_ACTIONS = frozenset({"succeeded", "failed", "cancelled"})
# An incident in one of these with every action finished can never move again: nothing claims it.
ORPHANABLE = frozenset({"decided", "queued", "acting", "verifying"})

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- what a fault left behind -------------------------------------------------------------------


@dataclass
class IncidentRow:
    id: int
    service: str
    status: str
    status_reason: str | None
    detected_at: datetime
    resolved_at: datetime | None
    updated_at: datetime
    actions: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def machine_owned(self) -> bool:
        return self.status in MACHINE_OWNED

    @property
    def orphaned(self) -> bool:
        """In a status only a worker moves it out of, with no action left for any worker to claim."""
        return self.status in ORPHANABLE and all(a["status"] in FINISHED_ACTIONS for a in self.actions)

    @property
    def decisions(self) -> int:
        """Decisions that queued a change (cancelled before anyone ran them: none)."""
        return sum(
            1
            for a in self.actions
            if not a["manual"] and not (a["status"] == "cancelled" and a["attempts"] == 0)
        )

    def at_rest_since(self) -> datetime | None:
        if self.machine_owned:
            return None
        moves = [e["at"] for e in self.events if e["kind"] == f"status.{self.status}"]
        return moves[-1] if moves else self.updated_at

    def self_takeovers(self) -> int:
        """Takeovers of an action by the worker that already held it: its lease lapsed while it lived."""
        starters: dict[int, str] = {}
        count = 0
        for event in self.events:
            message = event["message"] or ""
            if event["kind"] == "status.acting" and " started by " in message:
                action_id = (event["data"] or {}).get("action_id")
                starters[action_id] = message.rsplit(" started by ", 1)[1].strip()
            if event["kind"] == "action.takeover":
                owner = message.split(" took over action ", 1)[0]
                action_part = message.split(" took over action ", 1)[1].split(" ", 1)[0]
                with contextlib.suppress(ValueError):
                    if starters.get(int(action_part)) == owner:
                        count += 1
        return count

    def describe(self) -> str:
        text = self.status
        for action in self.actions:
            text += f"; {action['type']} {action['status']}"
            if action["attempts"] > 1:
                text += f" (claimed {action['attempts']}x)"
        return text


@dataclass
class FaultReport:
    fault: str
    description: str
    did: str = ""
    stuck: int = 0
    stuck_detail: list[str] = field(default_factory=list)
    decisions: int = 0
    changes: int = 0
    changes_per_decision: list[int] = field(default_factory=list)
    alerts_delivered: int = 0
    alerts_lost: int = 0
    recover_seconds: float | None = None
    recovery_bound: float | None = None
    notes: list[str] = field(default_factory=list)
    # Bounds of the fault's own that broke (e.g. a stop slower than Cloud Run allows).
    broken: list[str] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    def violations(self) -> list[str]:
        found = list(self.broken)
        if self.stuck:
            found.append(f"{self.stuck} incident(s) stuck: {'; '.join(self.stuck_detail)}")
        wrong = [n for n in self.changes_per_decision if n != 1]
        if wrong:
            found.append(f"changes per decision {self.changes_per_decision} (must each be 1)")
        if self.alerts_lost:
            found.append(f"{self.alerts_lost} delivered alert(s) not recorded")
        if self.recovery_bound is not None and (
            self.recover_seconds is None or self.recover_seconds > self.recovery_bound
        ):
            found.append(f"no recovery within {self.recovery_bound:g}s (took {self.recover_seconds})")
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "description": self.description,
            "did": self.did,
            "stuck": self.stuck,
            "stuck_detail": self.stuck_detail,
            "decisions": self.decisions,
            "changes": self.changes,
            "changes_per_decision": self.changes_per_decision,
            "alerts_delivered": self.alerts_delivered,
            "alerts_lost": self.alerts_lost,
            "recover_seconds": self.recover_seconds,
            "recovery_bound": self.recovery_bound,
            "notes": self.notes,
            "violations": self.violations(),
            "elapsed_seconds": round(self.elapsed_seconds, 1),
        }


# --- the stack ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ChaosOptions:
    replicas: int = 1  # `remediator serve` processes on the one database
    alertmanager_pair: bool = False
    # Extra settings for every `serve` (shorter leases or verification in the fast tests).
    remediator_env: dict[str, str] = field(default_factory=dict)
    rate: float = 20.0


class ChaosStack:
    def __init__(self, options: ChaosOptions | None = None, *, say: Say = _quiet) -> None:
        self.options = options or ChaosOptions()
        self.say = say
        self.postgres: PrivatePostgres | None = None
        self.database_url = ""
        self.stack: LocalStack | None = None
        self.http: aiohttp.ClientSession | None = None
        self._frozen_prometheus = False

    async def __aenter__(self) -> ChaosStack:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self.postgres = await asyncio.to_thread(PrivatePostgres.create)
        self.database_url = await asyncio.to_thread(self.postgres.create_database, "remediator")
        peer = None
        if self.options.alertmanager_pair:
            peer = AlertmanagerPeer(
                port=free_port(), cluster_port=free_port(), first_cluster_port=free_port()
            )
        options = StackOptions(
            emulator_port=free_port(),
            prometheus_port=free_port(),
            alertmanager_port=free_port(),
            remediator_port=free_port(),
            loadgen_port=free_port(),
            rate=self.options.rate,
            database_url=self.database_url,
            remediator_env=dict(self.options.remediator_env),
            grafana=False,
            remediator_replica_ports=tuple(free_port() for _ in range(self.options.replicas - 1)),
            alertmanager_peer=peer,
        )
        self.stack = LocalStack(options, say=self.say)
        await self.stack.start()
        self.http = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._frozen_prometheus:
            with contextlib.suppress(Exception):
                self.thaw_prometheus()
        if self.http is not None:
            await self.http.close()
            self.http = None
        if self.stack is not None:
            await self.stack.stop()
            self.stack = None
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.close)
            self.postgres = None

    # addresses

    @property
    def local(self) -> LocalStack:
        assert self.stack is not None, "the stack is not started"
        return self.stack

    @property
    def pg(self) -> PrivatePostgres:
        assert self.postgres is not None, "the stack is not started"
        return self.postgres

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self.http is not None, "the stack is not started"
        return self.http

    @property
    def replica_ports(self) -> list[int]:
        return list(self.local.remediators)

    def webhook_url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/api/v1/alerts"

    @property
    def alertmanager_urls(self) -> list[str]:
        urls = [self.local.alertmanager_url]
        if self.local.options.alertmanager_peer is not None:
            urls.append(f"http://127.0.0.1:{self.local.options.alertmanager_peer.port}")
        return urls

    # demo services

    async def add_target(self, name: str, *, rate: float | None = None) -> DemoTarget:
        """A fresh demo service (two healthy revisions) with its own steady load."""
        service = await self.local.deploy_demo_service(name, DemoProfile())
        port = free_port()
        rate = rate or self.options.rate
        await self.local.start_loadgen(service.uri, rate, port)
        return DemoTarget(
            stack=self.local, service=service, loadgen_url=f"http://127.0.0.1:{port}", rate=rate
        )

    def default_target(self) -> DemoTarget:
        assert self.local.service is not None
        return DemoTarget(
            stack=self.local,
            service=self.local.service,
            loadgen_url=self.local.loadgen_url,
            rate=self.options.rate,
        )

    async def wait_for_baseline(self, target: DemoTarget, seconds: float, *, since: float) -> None:
        """Until the stable revision has served `seconds` of healthy traffic that Prometheus saw."""
        await asyncio.sleep(max(0.0, since + seconds - time.monotonic()))
        query = (
            f'sum(rate(http_server_request_duration_seconds_count{{service="{target.service.name}"}}[30s]))'
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            async with self.session.get(
                f"{self.local.prometheus_url}/api/v1/query", params={"query": query}
            ) as r:
                result = (await r.json())["data"]["result"]
            if result and float(result[0]["value"][1]) > 1.0:
                return
            await asyncio.sleep(1)
        raise AssertionError(f"Prometheus never saw traffic on {target.service.name}")

    async def bad_deploy(self, target: DemoTarget) -> datetime:
        """A new revision answering 15% 500s takes all traffic; returns the true onset."""
        injection = await deploy_bad_revision(target, {"DEMO_ERROR_RATE": "15"})
        self.say(f"{target.service.name}: {injection.detail}")
        return injection.onset

    # the emulator: failures and its own record of changes

    async def add_failure(self, **rule: Any) -> dict[str, Any]:
        async with self.session.post(f"{self.local.emulator_url}/_emulator/failures", json=rule) as response:
            body = await response.json()
            assert response.status == 201, body
            return dict(body)

    async def pending_failures(self) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.local.emulator_url}/_emulator/failures") as response:
            return list((await response.json())["pending"])

    async def clear_failures(self) -> None:
        async with self.session.delete(f"{self.local.emulator_url}/_emulator/failures") as response:
            response.raise_for_status()

    async def hang_next_update(self, service: str, seconds: float) -> int:
        """The next UpdateService (PATCH) of `service` hangs `seconds` before the emulator carries it
        out: a slow Cloud Run, and a window in which the action is surely in flight."""
        rule = await self.add_failure(
            kind="hang", hang_seconds=seconds, count=1, methods=["PATCH"], paths=[f"/services/{service}"]
        )
        return int(rule["id"])

    async def wait_rule_used(self, rule_id: int, *, within: float) -> float:
        """Until the emulator used up the rule (the call it waits for arrived); returns that moment."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if all(rule["id"] != rule_id for rule in await self.pending_failures()):
                return time.monotonic()
            await asyncio.sleep(0.1)
        raise TimeoutError(f"the emulator's failure rule {rule_id} was not used within {within:g}s")

    def updates_carried_out(self, service: str) -> list[datetime]:
        """UpdateService calls the emulator carried out on `service` that changed traffic or scaling
        (a deploy makes a new revision; Remediator never does)."""
        path = self.local.state / "logs" / "emulator.log"
        found = []
        with contextlib.suppress(OSError), path.open(encoding="utf-8", errors="replace") as log:
            for line in log:
                if '"service updated"' not in line:
                    continue
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("service") == service and entry.get("new_revision") is None:
                        found.append(parse_time(entry["timestamp"]))
        return found

    # processes: Prometheus and `remediator serve`

    def _prometheus(self) -> ChildProcess:
        return next(child for child in self.local.children if child.name == "prometheus")

    def freeze_prometheus(self) -> None:
        pid = self._prometheus().pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        self._frozen_prometheus = True

    def thaw_prometheus(self) -> None:
        pid = self._prometheus().pid
        assert pid is not None
        os.kill(pid, signal.SIGCONT)
        self._frozen_prometheus = False

    async def kill_replica(self, port: int) -> None:
        """kill -9 of one `remediator serve` (nothing of it runs on: no shutdown, no lease release)."""
        child = self.local.remediators[port]
        assert child.process is not None and child.running
        child.process.kill()
        await child.process.wait()

    async def terminate_replica(self, port: int, *, within: float = 10.0) -> float:
        """SIGTERM to one `remediator serve`, as Cloud Run stops a container; seconds until it exited.
        Past `within` (Cloud Run's SIGKILL) it is killed and `within` is returned."""
        child = self.local.remediators[port]
        assert child.process is not None and child.running
        started = time.monotonic()
        child.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(within):
                await child.process.wait()
        except TimeoutError:
            child.process.kill()
            await child.process.wait()
            return within
        return time.monotonic() - started

    async def restart_replica(self, port: int) -> None:
        await self.local.start_remediator(port)

    async def replica_doing_cloud_run_calls(self, ports: Iterable[int]) -> int | None:
        """The replica whose actuator has read a revision (the apply phase's second call)."""
        for port in ports:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self.session.get(
                    f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=3)
                ) as response:
                    text = await response.text()
                for line in text.splitlines():
                    if (
                        line.startswith("remediator_cloud_run_calls_total{")
                        and 'method="GetRevision"' in line
                        and float(line.rsplit(" ", 1)[1]) > 0
                    ):
                        return port
        return None

    # the database, read directly (tolerant of the faults the harness causes)

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(self.database_url, timeout=5)
        try:
            return list(await connection.fetch(query, *args, timeout=10))
        finally:
            await connection.close()

    async def incidents(self, services: Sequence[str]) -> list[IncidentRow]:
        """The services' incidents with their actions and status events, from one snapshot (a worker
        commits an action's end and its incident's move together; two reads could split them)."""
        connection = await asyncpg.connect(self.database_url, timeout=5)
        try:
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                return await self._read_incidents(connection, services)
        finally:
            await connection.close()

    @staticmethod
    async def _read_incidents(connection: asyncpg.Connection, services: Sequence[str]) -> list[IncidentRow]:
        rows = await connection.fetch(
            "SELECT id, service, status, status_reason, detected_at, resolved_at, updated_at "
            "FROM incidents WHERE service = ANY($1::text[]) ORDER BY id",
            list(services),
            timeout=10,
        )
        incidents = {row["id"]: IncidentRow(**dict(row)) for row in rows}
        if not incidents:
            return []
        ids = list(incidents)
        for row in await connection.fetch(
            "SELECT id, incident_id, type, status, phase, attempts, manual, lease_owner, "
            "lease_expires_at, error FROM actions WHERE incident_id = ANY($1::bigint[]) ORDER BY id",
            ids,
            timeout=10,
        ):
            incidents[row["incident_id"]].actions.append(dict(row))
        for row in await connection.fetch(
            "SELECT incident_id, at, kind, message, data FROM incident_events "
            "WHERE incident_id = ANY($1::bigint[]) AND (kind LIKE 'status.%' OR kind LIKE 'action.%') "
            "ORDER BY id",
            ids,
            timeout=10,
        ):
            event = dict(row)
            event["data"] = json.loads(event["data"]) if isinstance(event["data"], str) else event["data"]
            incidents[row["incident_id"]].events.append(event)
        return list(incidents.values())

    async def recorded_alerts(self, fingerprints: Sequence[str]) -> set[tuple[str, datetime]]:
        rows = await self._fetch(
            "SELECT fingerprint, starts_at FROM incident_alerts WHERE fingerprint = ANY($1::text[])",
            list(fingerprints),
        )
        return {(row["fingerprint"], row["starts_at"]) for row in rows}

    async def wait_for_status(
        self, service: str, statuses: set[str], *, since: datetime, within: float
    ) -> IncidentRow:
        """Until the service's incident opened after `since` is in one of `statuses`."""
        deadline = time.monotonic() + within
        last = None
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                for incident in await self.incidents([service]):
                    if incident.detected_at >= since:
                        last = incident
                        if incident.status in statuses:
                            return incident
            await asyncio.sleep(0.1)
        raise TimeoutError(
            f"{service}: no incident reached {sorted(statuses)} within {within:g}s "
            f"(last: {last.describe() if last else 'none'})"
        )

    async def settle(self, services: Sequence[str], *, since: datetime, within: float) -> list[IncidentRow]:
        """Wait until every incident of `services` opened after `since` is at rest, or provably stuck
        (orphaned), or `within` seconds passed; returns them as they are then."""
        deadline = time.monotonic() + within
        incidents: list[IncidentRow] = []
        while True:
            with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                incidents = [i for i in await self.incidents(services) if i.detected_at >= since]
                moving = [i for i in incidents if i.machine_owned and not i.orphaned]
                if incidents and not moving:
                    return incidents
            if time.monotonic() > deadline:
                return incidents
            await asyncio.sleep(0.5)


class AlertWatch:
    """What the Alertmanagers hold for some services, polled in the background: the alerts they
    deliver (active ones; inhibited or silenced ones are never sent)."""

    def __init__(self, chaos: ChaosStack, services: Sequence[str]) -> None:
        self.chaos = chaos
        self.services = set(services)
        self.seen: dict[tuple[str, datetime], float] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AlertWatch:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _poll(self) -> None:
        while True:
            for url in self.chaos.alertmanager_urls:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                    async with self.chaos.session.get(
                        f"{url}/api/v2/alerts", timeout=aiohttp.ClientTimeout(total=3)
                    ) as response:
                        alerts = await response.json()
                    for alert in alerts:
                        if (
                            alert["labels"].get("service") in self.services
                            and alert["status"]["state"] == "active"
                        ):
                            key = (alert["fingerprint"], parse_time(alert["startsAt"]))
                            self.seen.setdefault(key, time.monotonic())
            await asyncio.sleep(2)

    async def lost(self, *, within: float = 30.0) -> tuple[int, int]:
        """(alerts Alertmanager held to deliver, of those not recorded). Alertmanager sends a group
        a second after an alert joins it and retries every group interval (10 s), so an alert still
        unrecorded after `within` seconds more is lost."""
        deadline = time.monotonic() + within
        while True:
            held = list(self.seen)
            recorded: set[tuple[str, datetime]] = set()
            with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                recorded = await self.chaos.recorded_alerts([fingerprint for fingerprint, _ in held])
            missing = [key for key in held if key not in recorded]
            if not missing or time.monotonic() > deadline:
                return len(held), len(missing)
            await asyncio.sleep(1)


def summarize(
    report: FaultReport,
    chaos: ChaosStack,
    incidents: list[IncidentRow],
    *,
    services: Sequence[str],
    fault_at: datetime,
) -> None:
    """Fill the report's invariant columns from the incidents and the emulator's log."""
    report.did = "; ".join(f"#{i.id} {i.describe()}" for i in incidents) or "no incident"
    stuck = [i for i in incidents if i.machine_owned]
    report.stuck = len(stuck)
    report.stuck_detail = [
        f"#{i.id} {i.status}"
        + (f" with every action finished ({', '.join(a['status'] for a in i.actions)})" if i.orphaned else "")
        for i in stuck
    ]
    for service in services:
        decided = [i for i in incidents if i.service == service and i.decisions]
        changes = len(chaos.updates_carried_out(service))
        report.decisions += sum(i.decisions for i in decided)
        report.changes += changes
        if decided:
            report.changes_per_decision.append(changes if len(decided) == 1 else changes / len(decided))  # type: ignore[arg-type]
        elif changes:
            report.changes_per_decision.append(changes)  # a change with no decision behind it
    rests = [i.at_rest_since() for i in incidents]
    if incidents and all(rests):
        last_rest = max((r - fault_at).total_seconds() for r in rests if r)
        if last_rest < 0:
            # Every incident was at rest before the fault hit (a storm's incidents escalate at once):
            # there was nothing to recover, which is not a negative time.
            report.notes.append(f"every incident was at rest {-last_rest:.1f}s before the fault")
        report.recover_seconds = round(max(last_rest, 0.0), 1)
    takeovers = sum(i.self_takeovers() for i in incidents)
    if takeovers:
        report.notes.append(
            f"{takeovers} takeover(s) by the worker that already held the action "
            "(its lease lapsed while it ran)"
        )


# --- Alertmanager v4 notifications for storms ---------------------------------------------------


def storm_alert(
    service: str, alertname: str, number: int, starts_at: datetime, **labels: str
) -> dict[str, Any]:
    """One alert as Alertmanager sends it; `number` makes it distinct within its group."""
    all_labels = {
        "alertname": alertname,
        "service": service,
        "severity": "critical",
        "route": f"/r{number}",
        **labels,
    }
    return {
        "status": "firing",
        "labels": all_labels,
        "annotations": {"summary": f"{alertname} on {service}", "description": "error ratio 8.0% > 2%"},
        "startsAt": starts_at.isoformat().replace("+00:00", "Z"),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=x",
        "fingerprint": uuid.uuid5(uuid.NAMESPACE_OID, repr(sorted(all_labels.items()))).hex[:16],
    }


def notification(group_labels: dict[str, str], alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """The v4 webhook body of one group, as Alertmanager's webhook notifier builds it
    (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config)."""
    common = dict(alerts[0]["labels"])
    for alert in alerts[1:]:
        common = {k: v for k, v in common.items() if alert["labels"].get(k) == v}
    key = ",".join(f'{k}="{v}"' for k, v in sorted(group_labels.items()))
    return {
        "version": "4",
        "groupKey": f'{{}}/{{service=~".+"}}:{{{key}}}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "remediator",
        "groupLabels": group_labels,
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": alerts,
    }


@dataclass
class Delivery:
    """One notification to one replica, retried as Alertmanager retries (5xx and connection errors;
    a 4xx is final: Alertmanager drops the notification)."""

    port: int
    statuses: list[int | str] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        return any(isinstance(s, int) and 200 <= s < 300 for s in self.statuses)

    @property
    def final(self) -> int | str | None:
        return self.statuses[-1] if self.statuses else None


async def deliver(
    chaos: ChaosStack, port: int, body: bytes, *, attempts: int = 5, first_delay: float = 0.5
) -> Delivery:
    delivery = Delivery(port=port)
    delay = first_delay
    headers = {"Authorization": f"Bearer {chaos.local.webhook_token}", "Content-Type": "application/json"}
    for attempt in range(attempts):
        try:
            # A stream, not raw bytes: aiohttp warns that a large bytes body blocks the loop.
            async with chaos.session.post(
                chaos.webhook_url(port),
                data=io.BytesIO(body),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=30),
            ) as response:
                await response.read()
                delivery.statuses.append(response.status)
                if response.status < 500:
                    return delivery
        except (aiohttp.ClientError, TimeoutError) as exc:
            delivery.statuses.append(type(exc).__name__)
        if attempt + 1 < attempts:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 4.0)
    return delivery


async def gather_limited(jobs: Iterable[Callable[[], Awaitable[Any]]], limit: int) -> list[Any]:
    slots = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with slots:
            return await job()

    return await asyncio.gather(*(one(job) for job in jobs))


def now() -> datetime:
    return utcnow()
