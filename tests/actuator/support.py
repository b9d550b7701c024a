"""Shared pieces of the actuator tests: a service on the emulator, queued actions, stand-in verifiers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from actuator import (
    ActionWorker,
    ActuatorConfig,
    ActuatorMetrics,
    Check,
    CloudRunChanger,
    RetryConfig,
    VerificationResult,
    VerifyConfig,
)
from collector import CloudRunClients
from incidents import (
    ActionRepository,
    ActionType,
    Decision,
    IncidentRepository,
    IncidentStatus,
    Store,
    database_now,
    enqueue_action,
    read_action,
    utcnow,
)
from tests.demo_apps.cloudrun_harness import Emulator, revision_id, shop_template

SERVICE = "checkout"
FAST_RETRY = RetryConfig(
    attempts=3, initial_delay=0.01, max_delay=0.05, call_timeout=2.0, operation_timeout=10.0
)


@dataclass
class Deployed:
    stable: str
    bad: str


async def deploy_stable_then_bad(emulator: Emulator, service: str = SERVICE) -> Deployed:
    """A service whose first revision is healthy and whose second (now at 100%) returns 500s."""
    created = await emulator.create(service, shop_template())
    stable = revision_id(created.latest_ready_revision)
    updated = await emulator.deploy_env(service, {"DEMO_ERROR_RATE": "50"})
    return Deployed(stable=stable, bad=revision_id(updated.latest_ready_revision))


def operation_count(emulator: Emulator) -> int:
    """Every create/update/delete on the emulator makes one operation: a count of changes."""
    return len(emulator.control.operations.list())


async def inject_failures(emulator: Emulator, **rule: Any) -> None:
    """Make the next Admin API calls fail, through the emulator's failure-control endpoint."""
    async with emulator.http.post(f"{emulator.base_url}/_emulator/failures", json=rule) as response:
        assert response.status in (200, 201), await response.text()


async def pending_failures(emulator: Emulator) -> list[dict[str, Any]]:
    async with emulator.http.get(f"{emulator.base_url}/_emulator/failures") as response:
        body = await response.json()
    return list(body.get("pending", body) if isinstance(body, dict) else body)


@dataclass
class ScriptedVerifier:
    """Stands in for RecoveryVerifier where recovery itself is not under test."""

    recovered: bool = True
    calls: list[tuple[str, list[str]]] = field(default_factory=list)

    async def verify(
        self, service: str, serving: Any, *, deadline: datetime, on_check: Any = None
    ) -> VerificationResult:
        self.calls.append((service, await serving()))
        check = Check(at=utcnow(), figures=None, healthy=self.recovered, reason="scripted")
        return VerificationResult(
            recovered=self.recovered,
            checks=1,
            last=check,
            reason="scripted healthy" if self.recovered else "scripted unhealthy",
        )


def make_worker(
    store: Store,
    clients: CloudRunClients,
    *,
    verifier: Any = None,
    retry: RetryConfig = FAST_RETRY,
    lease: timedelta = timedelta(seconds=30),
    clock: Any = utcnow,
    owner: str | None = None,
    poll_interval: float = 0.05,
    verify: VerifyConfig | None = None,
    **config: Any,
) -> ActionWorker:
    """A worker on `store` and `clients`; `config` sets further ActuatorConfig fields."""
    metrics = ActuatorMetrics(CollectorRegistry())
    actuator_config = ActuatorConfig(
        lease=lease,
        poll_interval=poll_interval,
        retry=retry,
        verify=verify or VerifyConfig(timeout=timedelta(seconds=30)),
        **config,
    )
    return ActionWorker(
        store=store,
        changer=CloudRunChanger(clients, retry=retry, metrics=metrics),
        verifier=verifier or ScriptedVerifier(),
        metrics=metrics,
        config=actuator_config,
        clock=clock,
        owner=owner,
    )


def emulator_clients(emulator: Emulator) -> CloudRunClients:
    return CloudRunClients.create(project="local", region="local", endpoint=emulator.base_url)


async def queue(
    store: Store,
    service: str,
    action_type: str,
    params: dict[str, Any],
    *,
    fault_started_at: datetime | None = None,
) -> tuple[int, int]:
    """An alert incident that reached `queued` with one action, as the analyzer leaves it."""
    now = utcnow()
    async with store.session() as session:
        incidents = IncidentRepository(session)
        incident, _ = await incidents.open(service, now=now, actor="test", message="opened")
        incident.fault_started_at = fault_started_at or now - timedelta(seconds=30)
        incident.fault_started_source = "alerts_for_state"
        incident.alert_fired_at = now - timedelta(seconds=10)
        decision = Decision(action=ActionType.NONE, confidence=1.0, engine="rules")
        incident.decision = decision.to_json_dict()
        for status in (IncidentStatus.ANALYZING, IncidentStatus.DECIDED, IncidentStatus.QUEUED):
            await incidents.transition(incident, status, actor="test", message=status.value, now=now)
        action = await enqueue_action(
            store, session, incident, read_action(action_type, params), requested_by="analyzer", now=now
        )
        return incident.id, action.id


async def expire_lease(store: Store, action_id: int) -> None:
    """Time passes for a dead worker's lease: it ended a second ago, on the database's clock (which
    leases are compared on, whatever a worker's own clock says)."""
    async with store.session() as session:
        action = await ActionRepository(session).get(action_id, for_update=True)
        action.lease_expires_at = await database_now(session) - timedelta(seconds=1)


async def state(store: Store, incident_id: int, action_id: int) -> tuple[Any, Any, list[str]]:
    async with store.session() as session:
        incidents = IncidentRepository(session)
        incident = await incidents.get(incident_id)
        action = await ActionRepository(session).get(action_id)
        events = [event.kind for event in await incidents.events.list_for_incident(incident_id)]
    return incident, action, events
