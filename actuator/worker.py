"""The actuator worker: claims queued actions, applies them to Cloud Run once, verifies recovery.

One action, in phases recorded on its row so that a worker taking over an expired lease knows
what is left:

    pending    read Cloud Run, record what is there now (to undo), change it, wait for the operation
    applied    the change is in place; the incident is `verifying`
    verifying  polling fresh metrics on the revisions now serving
    done       resolved (MTTR recorded) or escalated (no recovery in time; no second action)

Crash safety: a worker that dies leaves a `running` action whose lease expires; the next worker
claims it, re-reads Cloud Run before touching anything (a change already in place is not applied
again) and carries on from the recorded phase. While working, a heartbeat renews the lease; a worker
that loses its lease stops at once.

Wake-ups: PostgreSQL `LISTEN remediator_actions` (the analyzer NOTIFYs in the transaction that queues
an action), with a short poll as fallback; SQLite polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from actuator.annotations import GrafanaAnnotations
from actuator.cloudrun import CloudRunChanger, all_to_latest, pinned_to, traffic_spec
from actuator.config import ActuatorConfig
from actuator.exceptions import ActionRefused, CloudRunCallFailed, LeaseLost, PermanentCloudRunError
from actuator.metrics import ActuatorMetrics
from actuator.mttr import apply_recovery_times, recovery_times
from actuator.verification import Check, RecoveryVerifier
from collector.sources.cloudrun import is_ready, traffic_by_revision
from incidents import ActionPhase, ActionStatus, IncidentStatus
from incidents.db import Store
from incidents.models import Action, Incident, utcnow
from incidents.repository import ActionRepository, IncidentRepository

log = logging.getLogger(__name__)

ACTIONS_CHANNEL = "remediator_actions"
ACTOR = "actuator"


@dataclass(frozen=True, kw_only=True)
class ActionSnapshot:
    """What the worker needs of an action between transactions."""

    id: int
    incident_id: int | None
    service: str
    type: str
    params: dict[str, Any]
    phase: str
    result: dict[str, Any]
    applied_at: datetime | None
    manual: bool

    @classmethod
    def of(cls, action: Action) -> ActionSnapshot:
        return cls(
            id=action.id,
            incident_id=action.incident_id,
            service=action.service,
            type=action.type,
            params=dict(action.params or {}),
            phase=action.phase,
            result=dict(action.result or {}),
            applied_at=action.applied_at,
            manual=action.manual,
        )

    def describe(self) -> str:
        if self.type == "ROLLBACK":
            return f"roll back {self.service} to {self.params.get('target_revision')}"
        if self.type in ("SCALE_UP", "SCALE"):
            return (
                f"scale {self.service} to min {self.params.get('min_instances')} / "
                f"max {self.params.get('max_instances')} instances"
            )
        return f"release {self.service} to its latest ready revision"


class ActionWorker:
    def __init__(
        self,
        *,
        store: Store,
        changer: CloudRunChanger,
        verifier: RecoveryVerifier,
        metrics: ActuatorMetrics,
        config: ActuatorConfig,
        annotations: GrafanaAnnotations | None = None,
        owner: str | None = None,
        max_concurrent: int = 4,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.changer = changer
        self.verifier = verifier
        self.metrics = metrics
        self.config = config
        self.annotations = annotations
        self.owner = owner or f"actuator-{uuid.uuid4().hex[:8]}"
        self._clock = clock
        self._slots = asyncio.Semaphore(max_concurrent)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    # lifecycle

    async def start(self) -> None:
        self._stopping.clear()
        if self.store.dialect == "postgresql":
            self._listen_task = asyncio.create_task(self._listen(), name="actuator-listen")
        self._loop_task = asyncio.create_task(self._claim_loop(), name="actuator-claim")

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop claiming; give running actions `grace_seconds`, then cancel them (their leases expire
        and another worker continues them from their recorded phase)."""
        self._stopping.set()
        self._wake.set()
        tasks = [t for t in (self._loop_task, self._listen_task) if t is not None]
        for task in tasks:
            task.cancel()
        if self._running:
            _, pending = await asyncio.wait(self._running, timeout=grace_seconds)
            for task in pending:
                task.cancel()
        for task in [*tasks, *self._running]:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        self._wake.set()

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            await self._slots.acquire()
            try:
                action = await self._claim()
            except Exception:
                self._slots.release()
                log.exception("claiming an action failed; retrying")
                await asyncio.sleep(self.config.poll_interval)
                continue
            if action is None:
                self._slots.release()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.poll_interval)
                continue
            task = asyncio.create_task(self._execute_and_release(action), name=f"action-{action.id}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _execute_and_release(self, action: ActionSnapshot) -> None:
        try:
            await self.execute(action)
        finally:
            self._slots.release()

    async def _listen(self) -> None:
        """LISTEN for queued actions; reconnect on failure (the poll covers the gap)."""
        dsn = self.store.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stopping.is_set():
            try:
                connection = await asyncpg.connect(dsn, timeout=5)
                lost = asyncio.Event()
                try:
                    connection.add_termination_listener(lambda *_, lost=lost: lost.set())
                    await connection.add_listener(ACTIONS_CHANNEL, lambda *_: self._wake.set())
                    self._wake.set()  # anything queued while we were not listening
                    waits = {asyncio.ensure_future(lost.wait()), asyncio.ensure_future(self._stopping.wait())}
                    try:
                        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for waiting in waits:
                            waiting.cancel()
                finally:
                    await connection.close()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("LISTEN connection failed; polling until it is back", extra={"error": str(exc)})
                await asyncio.sleep(2)

    # claiming

    async def _claim(self, action_id: int | None = None) -> ActionSnapshot | None:
        now = self._clock()
        async with self.store.session() as session:
            actions = ActionRepository(session)
            if action_id is None:
                action = await actions.claim_next(owner=self.owner, now=now, lease=self.config.lease)
            else:
                action = await actions.claim_by_id(
                    action_id, owner=self.owner, now=now, lease=self.config.lease
                )
            if action is None:
                return None
            if action.incident_id is not None:
                incidents = IncidentRepository(session)
                incident = await incidents.get(action.incident_id, for_update=True)
                status = IncidentStatus(incident.status)
                if status is IncidentStatus.QUEUED:
                    await incidents.transition(
                        incident,
                        IncidentStatus.ACTING,
                        actor=ACTOR,
                        message=f"action {action.id} started by {self.owner}",
                        now=now,
                        data={"action_id": action.id},
                    )
                elif status in (IncidentStatus.ACTING, IncidentStatus.VERIFYING):
                    await incidents.events.add(
                        incident.id,
                        "action.takeover",
                        f"{self.owner} took over action {action.id} (attempt {action.attempts}) "
                        f"in phase {action.phase}",
                        actor=ACTOR,
                        at=now,
                    )
                else:
                    action.status = ActionStatus.CANCELLED.value
                    action.finished_at = now
                    action.lease_owner = None
                    await incidents.events.add(
                        incident.id,
                        "action.cancelled",
                        f"action {action.id} cancelled: the incident is {status.value}",
                        actor=ACTOR,
                        at=now,
                    )
                    return None
            return ActionSnapshot.of(action)

    async def run_once(self, action_id: int | None = None) -> int | None:
        """Claim one action (the given one, or the oldest runnable) and take it to its end."""
        action = await self._claim(action_id)
        if action is None:
            return None
        await self.execute(action)
        return action.id

    # executing

    async def execute(self, action: ActionSnapshot) -> None:
        work = asyncio.create_task(self._run(action))
        heartbeat = asyncio.create_task(self._heartbeat(action, work))
        try:
            await work
        except LeaseLost:
            log.warning("lease lost; another worker continues", extra={"action_id": action.id})
        except asyncio.CancelledError:
            if not heartbeat.done() or not isinstance(heartbeat.exception(), LeaseLost):
                raise
        except Exception:
            log.exception("action crashed", extra={"action_id": action.id, "incident_id": action.incident_id})
            await self._record_crash(action)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError, LeaseLost):
                await heartbeat

    async def _heartbeat(self, action: ActionSnapshot, work: asyncio.Task[None]) -> None:
        interval = self.config.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            async with self.store.session() as session:
                renewed = await ActionRepository(session).renew_lease(
                    await ActionRepository(session).get(action.id),
                    owner=self.owner,
                    now=self._clock(),
                    lease=self.config.lease,
                )
            if not renewed:
                work.cancel()
                raise LeaseLost(f"lease on action {action.id} lost", incident_id=action.incident_id)

    async def _run(self, action: ActionSnapshot) -> None:
        extra = {"action_id": action.id, "incident_id": action.incident_id, "service": action.service}
        if action.phase == ActionPhase.PENDING:
            started = time.perf_counter()
            try:
                result = await self._apply(action)
            except (CloudRunCallFailed, ActionRefused) as exc:
                log.error("action failed: %s", exc.message, extra=extra)
                await self._fail(action, exc.message)
                return
            self.metrics.action_duration.labels(action.type, "apply").observe(time.perf_counter() - started)
            action = await self._mark_applied(action, result)
            log.info("change applied", extra={**extra, "changed": result.get("changed")})
        started = time.perf_counter()
        await self._verify(action)
        self.metrics.action_duration.labels(action.type, "verify").observe(time.perf_counter() - started)

    async def _apply(self, action: ActionSnapshot) -> dict[str, Any]:
        service = action.service
        current = await self.changer.get_service(service)
        if action.type == "ROLLBACK":
            target = str(action.params["target_revision"])
            try:
                revision = await self.changer.get_revision(service, target)
            except PermanentCloudRunError as exc:
                if exc.code == 404:
                    raise ActionRefused(f"rollback target {target} does not exist", service=service) from exc
                raise
            if not is_ready(revision):
                raise ActionRefused(
                    f"rollback target {target} is not ready", service=service, revision=target
                )
            before = traffic_spec(current)
            await self._record_intent(action, {"previous_traffic": before})
            if traffic_by_revision(current) == {target: 100}:
                return {"changed": False, "note": f"traffic already 100% on {target}", "traffic": before}
            updated = await self.changer.set_traffic(service, pinned_to(target))
            return {"changed": True, "traffic": traffic_spec(updated)}
        if action.type == "RELEASE":
            before = traffic_spec(current)
            await self._record_intent(action, {"previous_traffic": before})
            if before == [{"type": "LATEST", "revision": None, "percent": 100}]:
                return {"changed": False, "note": "traffic already 100% on LATEST", "traffic": before}
            updated = await self.changer.set_traffic(service, all_to_latest())
            return {"changed": True, "traffic": traffic_spec(updated)}
        if action.type in ("SCALE_UP", "SCALE"):
            wanted = (int(action.params["min_instances"]), int(action.params["max_instances"]))
            previous = (current.scaling.min_instance_count, current.scaling.max_instance_count)
            await self._record_intent(
                action, {"previous_scaling": {"min_instances": previous[0], "max_instances": previous[1]}}
            )
            if previous == wanted:
                return {"changed": False, "note": "scaling already in place", "scaling": list(wanted)}
            updated = await self.changer.set_scaling(
                service, min_instances=wanted[0], max_instances=wanted[1]
            )
            return {
                "changed": True,
                "scaling": {
                    "min_instances": updated.scaling.min_instance_count,
                    "max_instances": updated.scaling.max_instance_count,
                },
            }
        raise ActionRefused(f"unknown action type {action.type}", service=service)

    async def _record_intent(self, action: ActionSnapshot, before: dict[str, Any]) -> None:
        """Write what Cloud Run looked like before the change, once: a takeover keeps the original."""
        async with self.store.session() as session:
            row = await self._owned(session, action)
            result = dict(row.result or {})
            for key, value in before.items():
                result.setdefault(key, value)
            row.result = result
            action.result.update(result)

    async def _owned(self, session: Any, action: ActionSnapshot) -> Action:
        row = await ActionRepository(session).get(action.id, for_update=True)
        if row.lease_owner != self.owner or row.status != ActionStatus.RUNNING.value:
            raise LeaseLost(f"action {action.id} is no longer ours", incident_id=action.incident_id)
        return row

    async def _mark_applied(self, action: ActionSnapshot, outcome: dict[str, Any]) -> ActionSnapshot:
        now = self._clock()
        async with self.store.session() as session:
            row = await self._owned(session, action)
            row.result = {**(row.result or {}), **outcome}
            row.phase = ActionPhase.APPLIED.value
            row.applied_at = now
            message = (
                f"{action.describe()}: applied"
                if outcome.get("changed")
                else f"{action.describe()}: {outcome.get('note', 'already in place')}, nothing changed"
            )
            if row.incident_id is not None:
                incidents = IncidentRepository(session)
                incident = await incidents.get(row.incident_id, for_update=True)
                await incidents.events.add(
                    incident.id,
                    "action.applied",
                    message,
                    actor=ACTOR,
                    at=now,
                    data={"action_id": row.id, **outcome},
                )
                if incident.status == IncidentStatus.ACTING:
                    await incidents.transition(
                        incident, IncidentStatus.VERIFYING, actor=ACTOR, message="verifying recovery", now=now
                    )
            snapshot = ActionSnapshot.of(row)
        self.metrics.actions.labels(action.type, "succeeded" if outcome.get("changed") else "unchanged").inc()
        await self._annotate(action, f"Remediator: {message}", [action.service, action.type], now)
        return snapshot

    async def _verify(self, action: ActionSnapshot) -> None:
        service_state = await self.changer.get_service(action.service)
        serving = sorted(name for name, share in traffic_by_revision(service_state).items() if share > 0)
        applied_at = action.applied_at or self._clock()
        deadline = applied_at + self.config.verify.timeout
        async with self.store.session() as session:
            row = await self._owned(session, action)
            row.phase = ActionPhase.VERIFYING.value
        first_healthy: list[Check] = []

        async def on_check(check: Check, streak: int) -> None:
            if check.healthy and not first_healthy:
                first_healthy.append(check)

        outcome = await self.verifier.verify(action.service, serving, deadline=deadline, on_check=on_check)
        now = self._clock()
        note: tuple[str, str] | None = None
        async with self.store.session() as session:
            row = await self._owned(session, action)
            row.phase = ActionPhase.DONE.value
            row.status = ActionStatus.SUCCEEDED.value
            row.finished_at = now
            row.lease_owner = None
            row.result = {
                **(row.result or {}),
                "verified": outcome.recovered,
                "verification": {"checks": outcome.checks, "reason": outcome.reason, "revisions": serving},
            }
            if row.incident_id is None:
                return
            incidents = IncidentRepository(session)
            incident = await incidents.get(row.incident_id, for_update=True)
            if outcome.recovered:
                note = await self._resolve(incidents, incident, serving, outcome.reason, now)
            else:
                note = await self._escalate(incidents, incident, outcome.reason, now)
        self.metrics.verifications.labels("recovered" if outcome.recovered else "not_recovered").inc()
        if note is not None:  # after the commit: Grafana must never hold a transaction open
            await self._annotate(action, note[0], [action.service, note[1]], now)

    async def _resolve(
        self,
        incidents: IncidentRepository,
        incident: Incident,
        serving: list[str],
        reason: str,
        now: datetime,
    ) -> tuple[str, str] | None:
        """Resolve the incident; returns the annotation (text, tag) to post once committed."""
        if incident.status != IncidentStatus.VERIFYING:
            return None
        if incident.origin == "alert":
            times = recovery_times(incident, verified_at=now)
            apply_recovery_times(incident, times)
            self.metrics.mttr.observe(times.mttr_seconds)
            summary = f"recovered: {reason}; MTTR {times.mttr_seconds:.1f}s from {times.basis}"
        else:
            summary = f"recovered: {reason}"
        await incidents.events.add(
            incident.id,
            "verification.passed",
            f"healthy on {', '.join(serving)}: {reason}",
            actor=ACTOR,
            at=now,
        )
        await incidents.transition(
            incident, IncidentStatus.RESOLVED, actor=ACTOR, message=summary, now=now, reason=summary
        )
        self.metrics.remediations.labels("resolved").inc()
        return f"Remediator: {incident.service} {summary}", "resolved"

    async def _escalate(
        self, incidents: IncidentRepository, incident: Incident, reason: str, now: datetime
    ) -> tuple[str, str] | None:
        if incident.status != IncidentStatus.VERIFYING:
            return None
        message = (
            f"not verified within {int(self.config.verify.timeout.total_seconds())}s: {reason}. "
            "No further automatic action; a human must look."
        )
        await incidents.events.add(incident.id, "verification.failed", reason, actor=ACTOR, at=now)
        await incidents.transition(
            incident, IncidentStatus.ESCALATED, actor=ACTOR, message=message, now=now, reason=message
        )
        self.metrics.remediations.labels("escalated").inc()
        return f"Remediator: {incident.service} escalated: {reason}", "escalated"

    async def _fail(self, action: ActionSnapshot, reason: str) -> None:
        now = self._clock()
        async with self.store.session() as session:
            row = await self._owned(session, action)
            row.status = ActionStatus.FAILED.value
            row.error = reason
            row.finished_at = now
            row.lease_owner = None
            if row.incident_id is not None:
                incidents = IncidentRepository(session)
                incident = await incidents.get(row.incident_id, for_update=True)
                await incidents.events.add(incident.id, "action.failed", reason, actor=ACTOR, at=now)
                if incident.status == IncidentStatus.ACTING:
                    await incidents.transition(
                        incident,
                        IncidentStatus.FAILED,
                        actor=ACTOR,
                        message=f"{action.describe()} failed: {reason}",
                        now=now,
                        reason=reason,
                    )
                    self.metrics.remediations.labels("failed").inc()
        self.metrics.actions.labels(action.type, "failed").inc()

    async def _record_crash(self, action: ActionSnapshot) -> None:
        """An unexpected error: fail the action and incident with the reason rather than leave them
        `running`/`acting` until the lease expires and the same error repeats forever."""
        try:
            await self._fail(action, "internal error in the actuator; see its logs")
        except Exception:
            log.exception("could not record the crash", extra={"action_id": action.id})

    async def _annotate(self, action: ActionSnapshot, text: str, tags: list[str], at: datetime) -> None:
        if self.annotations is not None:
            await self.annotations.post(text=text, tags=tags, at=at, incident_id=action.incident_id)
