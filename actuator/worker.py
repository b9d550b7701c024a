"""The actuator worker: claims queued actions, applies them to Cloud Run once, verifies recovery.

One action, in phases recorded on its row so that a worker taking over an expired lease knows
what is left:

    pending    read Cloud Run, record what is there now (to undo), change it, wait for the operation
    applied    the change is in place; the incident is `verifying`
    verifying  polling fresh metrics on the revisions now serving
    done       resolved (MTTR recorded) or escalated (no recovery in time; no second action)

Leases, with fencing. Each claim writes a fresh token (the worker's name and a random part) and an
expiry on the database's clock, so processes with skewed clocks agree on when a lease ends. Every
write of the action checks the token under the row's lock: a worker that lost its lease can never
record anything over its successor. While working, a heartbeat renews the lease every `heartbeat`
seconds; a renewal that fails (the database restarting, a timeout) is retried at once, and the work
is cancelled only when the lease would end before a renewal got through. The worker counts its lease
from before the last successful renewal was sent, on its monotonic clock, so it stops no later than
the database would let another worker in.

Crash safety: a worker that dies (or whose database stayed down longer than its lease) leaves a
`running` action whose lease expires; the next worker (any, this one included) claims it with a new
token, re-reads Cloud Run before touching anything (a change already in place is not applied again)
and carries on from the recorded phase: an action already applied is verified, never applied twice.
A worker with nothing to claim sleeps until the soonest lease ends, so a takeover starts as soon as
it may. A write that fails on a store error is retried while the lease lasts.

Stopping (SIGTERM): no new claims; verification stops at once (it only reads), an UpdateService
already sent gets `shutdown_grace` to finish; then each lease is handed back (its expiry set to
now, and the workers woken as for a queued action) so another replica continues the action at once
instead of waiting for it to lapse.

Wake-ups come from the work queue (incidents/queue.py): the commit that queued an action in this
process, or PostgreSQL's NOTIFY from another; a slow poll (`poll_interval`) is only the safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from actuator.annotations import GrafanaAnnotations
from actuator.cloudrun import (
    CloudRunChanger,
    all_to_latest,
    pinned_to,
    serves_only,
    traffic_spec,
)
from actuator.config import ActuatorConfig
from actuator.exceptions import ActionRefused, CloudRunCallFailed, LeaseLost, PermanentCloudRunError
from actuator.metrics import ActuatorMetrics
from actuator.mttr import apply_recovery_times, recovery_times
from actuator.verification import Check, RecoveryVerifier
from collector import is_ready, traffic_by_revision
from incidents import (
    Action,
    ActionPhase,
    ActionRepository,
    ActionRequest,
    ActionStatus,
    ActionWaiter,
    Incident,
    IncidentRepository,
    IncidentStatus,
    InvalidAction,
    ReleaseAction,
    RollbackAction,
    ScaleAction,
    Store,
    StoreUnavailable,
    database_now,
    hand_back_action,
    read_action,
    utcnow,
    waiting_for_actions,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

ACTOR = "actuator"
# After a failed renewal or write, the pause before the next try (doubling up to the cap).
RETRY_DELAY_SECONDS = 0.25
RETRY_DELAY_CAP_SECONDS = 1.0
# Woken for the soonest lease's end, look a moment after it (the databases compare with `<`).
LEASE_END_SLACK_SECONDS = 0.05
# Handing leases back on shutdown is one short write; past this, they lapse on their own.
HAND_BACK_TIMEOUT_SECONDS = 1.5
# How often stop() looks whether the Cloud Run writes in flight have finished.
STOP_POLL_SECONDS = 0.05


@dataclass(kw_only=True)
class Lease:
    """This worker's hold on one action: the fencing token on the row, and until when (on this
    process's monotonic clock) the hold surely lasts."""

    token: str
    seconds: float
    valid_until: float

    @classmethod
    def taken(cls, token: str, seconds: float, *, sent_at: float) -> Lease:
        return cls(token=token, seconds=seconds, valid_until=sent_at + seconds)

    def remaining(self) -> float:
        return self.valid_until - time.monotonic()

    def renewed(self, *, sent_at: float) -> None:
        # From when the renewal was sent: the database's expiry is at least this late.
        self.valid_until = sent_at + self.seconds


@dataclass(frozen=True, kw_only=True)
class ActionSnapshot:
    """What the worker needs of an action between transactions."""

    id: int
    incident_id: int | None
    service: str
    type: str
    # The stored action read back through the contract; None when it does not validate (`invalid`).
    request: ActionRequest | None
    invalid: str | None
    phase: str
    result: dict[str, Any]
    applied_at: datetime | None
    manual: bool
    lease: Lease

    @classmethod
    def of(cls, action: Action, lease: Lease) -> ActionSnapshot:
        request: ActionRequest | None = None
        invalid: str | None = None
        try:
            request = read_action(action.type, action.params)
        except InvalidAction as exc:
            invalid = exc.message
        return cls(
            id=action.id,
            incident_id=action.incident_id,
            service=action.service,
            type=action.type,
            request=request,
            invalid=invalid,
            phase=action.phase,
            result=dict(action.result or {}),
            applied_at=action.applied_at,
            manual=action.manual,
            lease=lease,
        )

    def describe(self) -> str:
        if self.request is None:
            return f"{self.type} on {self.service}"
        return self.request.describe(self.service)

    def log_extra(self) -> dict[str, Any]:
        return {"action_id": self.id, "incident_id": self.incident_id, "service": self.service}


@dataclass(frozen=True)
class ClaimResult:
    action: ActionSnapshot | None
    # With nothing claimed: seconds until the next look (the soonest lease's end, at most the poll).
    look_again_in: float


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
        # The worker's name, on the timeline; each claim's fencing token adds a random part to it.
        self.owner = owner or f"actuator-{uuid.uuid4().hex[:8]}"
        self._clock = clock
        self._slots = asyncio.Semaphore(max_concurrent)
        self._stopping = asyncio.Event()
        self._waiter: ActionWaiter | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._running: dict[asyncio.Task[None], ActionSnapshot] = {}
        # Actions with an UpdateService in flight, and those whose UpdateService was still in flight
        # when their work was cancelled (the call runs on in its thread: the change may yet land).
        self._writes_in_flight: set[int] = set()
        self._abandoned_writes: set[int] = set()

    # lifecycle

    async def start(self) -> None:
        self._stopping.clear()
        self._loop_task = asyncio.create_task(self._claim_loop(), name="actuator-claim")
        self._loop_task.add_done_callback(_log_unexpected_end)

    async def stop(self, grace_seconds: float | None = None) -> None:
        """Stop claiming; stop verifications at once and give Cloud Run writes in flight
        `grace_seconds` (default `shutdown_grace`); then hand every lease back so another worker
        continues at once. Safe to call more than once."""
        grace = self.config.shutdown_grace if grace_seconds is None else grace_seconds
        self._stopping.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        running = dict(self._running)
        if not running:
            return
        # Verification only reads: it stops now. An UpdateService in flight may finish first, so
        # that whoever continues reads the change instead of making it a second time.
        deadline = asyncio.get_running_loop().time() + grace
        for task, action in running.items():
            if action.id not in self._writes_in_flight:
                task.cancel()
        while any(
            not task.done() and action.id in self._writes_in_flight for task, action in running.items()
        ):
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(STOP_POLL_SECONDS)
        for task in running:
            task.cancel()
        # Every task's end is read here (execute() logs its own failures).
        await asyncio.gather(*running, return_exceptions=True)
        await asyncio.gather(
            *(
                self._hand_back(action)
                for action in running.values()
                if action.id not in self._abandoned_writes
            )
        )

    def wake(self) -> None:
        """Look for work now (a wake-up from outside the queue's own)."""
        if self._waiter is not None:
            self._waiter.wake()

    async def _claim_loop(self) -> None:
        async with waiting_for_actions(self.store) as waiter:
            self._waiter = waiter
            while not self._stopping.is_set():
                await self._slots.acquire()
                waiter.clear()  # a wake-up from now on means: look again
                try:
                    claimed = await self._claim()
                except Exception as exc:
                    self._slots.release()
                    if isinstance(exc, StoreUnavailable):
                        log.warning("claiming an action failed; retrying", extra={"error": exc.message})
                    else:
                        log.exception("claiming an action failed; retrying")
                    await waiter.wait(at_most=min(self.config.poll_interval, 1.0))
                    continue
                if claimed.action is None:
                    self._slots.release()
                    await waiter.wait(at_most=claimed.look_again_in)
                    continue
                action = claimed.action
                task = asyncio.create_task(self._execute_and_release(action), name=f"action-{action.id}")
                self._running[task] = action
                task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        _log_unexpected_end(task)

    async def _execute_and_release(self, action: ActionSnapshot) -> None:
        try:
            await self.execute(action)
        finally:
            self._slots.release()
            # An action for the same service may have waited for this one to finish.
            self.wake()

    # claiming

    async def _claim(self, action_id: int | None = None) -> ClaimResult:
        token = f"{self.owner}/{uuid.uuid4().hex[:12]}"
        lease_seconds = self.config.lease.total_seconds()
        sent_at = time.monotonic()
        async with self.store.session() as session:
            now = await database_now(session)
            actions = ActionRepository(session)
            if action_id is None:
                action = await actions.claim_next(owner=token, now=now, lease=self.config.lease)
            else:
                action = await actions.claim_by_id(action_id, owner=token, now=now, lease=self.config.lease)
            if action is None:
                return ClaimResult(None, await self._until_a_lease_ends(actions, now))
            at = self._clock()
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
                        now=at,
                        data={"action_id": action.id},
                    )
                elif status in (IncidentStatus.ACTING, IncidentStatus.VERIFYING):
                    self.metrics.lease_events.labels("taken_over").inc()
                    await incidents.events.add(
                        incident.id,
                        "action.takeover",
                        f"{self.owner} took over action {action.id} (attempt {action.attempts}) "
                        f"in phase {action.phase}",
                        actor=ACTOR,
                        at=at,
                        data={"action_id": action.id, "phase": action.phase},
                    )
                else:
                    action.status = ActionStatus.CANCELLED.value
                    action.finished_at = at
                    action.lease_owner = None
                    await incidents.events.add(
                        incident.id,
                        "action.cancelled",
                        f"action {action.id} cancelled: the incident is {status.value}",
                        actor=ACTOR,
                        at=at,
                    )
                    return ClaimResult(None, 0.0)
            self._abandoned_writes.discard(action.id)
            lease = Lease.taken(token, lease_seconds, sent_at=sent_at)
            return ClaimResult(ActionSnapshot.of(action, lease), 0.0)

    async def _until_a_lease_ends(self, actions: ActionRepository, now: datetime) -> float:
        """Seconds until the soonest lease of a running action ends (a dead worker's action is taken
        over then, not at the next poll), at most the poll interval."""
        poll = self.config.poll_interval
        ends = await actions.next_lease_expiry()
        if ends is None:
            return poll
        return min(poll, max((ends - now).total_seconds() + LEASE_END_SLACK_SECONDS, LEASE_END_SLACK_SECONDS))

    async def run_once(self, action_id: int | None = None) -> int | None:
        """Claim one action (the given one, or the oldest runnable) and take it to its end."""
        claimed = await self._claim(action_id)
        if claimed.action is None:
            return None
        await self.execute(claimed.action)
        return claimed.action.id

    # executing

    async def execute(self, action: ActionSnapshot) -> None:
        extra = action.log_extra()
        work = asyncio.create_task(self._run(action), name=f"action-{action.id}-work")
        heartbeat = asyncio.create_task(self._heartbeat(action, work), name=f"action-{action.id}-lease")
        try:
            await work
        except LeaseLost as exc:
            log.warning("stopped: %s; whoever claims the action next continues it", exc.message, extra=extra)
        except asyncio.CancelledError:
            # The heartbeat cancels the work when it cannot renew the lease in time; any other
            # cancellation (stop(), a caller's) is not ours to swallow.
            lost = heartbeat.exception() if heartbeat.done() and not heartbeat.cancelled() else None
            current = asyncio.current_task()
            if not isinstance(lost, LeaseLost) or (current is not None and current.cancelling()):
                raise
            log.warning("stopped: %s; whoever claims the action next continues it", lost.message, extra=extra)
        except Exception:
            log.exception("action crashed", extra=extra)
            await self._record_crash(action)
        finally:
            heartbeat.cancel()
            # Read the heartbeat's end, so no task ends with an exception nobody reads.
            with contextlib.suppress(asyncio.CancelledError, LeaseLost):
                await heartbeat

    async def _heartbeat(self, action: ActionSnapshot, work: asyncio.Task[None]) -> None:
        """Renew the lease every `heartbeat` seconds; retry failures at once; cancel the work only
        once the lease would end before a renewal could get through."""
        lease = action.lease
        pause = self.config.heartbeat
        failure = ""
        while True:
            await asyncio.sleep(max(0.0, min(pause, lease.remaining())))
            remaining = lease.remaining()
            if remaining <= 0:
                self.metrics.lease_events.labels("lost").inc()
                work.cancel()
                raise LeaseLost(
                    f"could not renew the lease on action {action.id} before it ended ({failure})",
                    incident_id=action.incident_id,
                )
            sent_at = time.monotonic()
            try:
                async with asyncio.timeout(remaining):
                    renewed = await self._renew(action)
            except Exception as exc:  # the store's outage, a timeout: retry while the lease lasts
                failure = exc.message if isinstance(exc, StoreUnavailable) else f"{type(exc).__name__}: {exc}"
                self.metrics.lease_events.labels("renewal_failed").inc()
                log.warning(
                    "lease renewal failed; retrying",
                    exc_info=not isinstance(exc, StoreUnavailable | TimeoutError),
                    extra={
                        **action.log_extra(),
                        "error": failure,
                        "lease_left_s": round(lease.remaining(), 2),
                    },
                )
                pause = min(RETRY_DELAY_SECONDS, self.config.heartbeat)
                continue
            if not renewed:
                self.metrics.lease_events.labels("lost").inc()
                work.cancel()
                raise LeaseLost(
                    f"action {action.id} is no longer ours (taken over, or ended elsewhere)",
                    incident_id=action.incident_id,
                )
            lease.renewed(sent_at=sent_at)
            pause = self.config.heartbeat

    async def _renew(self, action: ActionSnapshot) -> bool:
        async with self.store.session() as session:
            now = await database_now(session)
            actions = ActionRepository(session)
            return await actions.renew_lease(
                await actions.get(action.id), owner=action.lease.token, now=now, lease=self.config.lease
            )

    async def _write(
        self, action: ActionSnapshot, change: Callable[[AsyncSession, Action], Awaitable[T]]
    ) -> T:
        """`change` on the action's row, in one transaction, once the row is proven ours (the token,
        under the row's lock). A store failure is retried while the lease lasts; past that the work
        stops (LeaseLost) and whoever claims the action next continues from its recorded phase."""
        delay = RETRY_DELAY_SECONDS
        while True:
            try:
                async with self.store.session() as session:
                    row = await self._owned(session, action)
                    return await change(session, row)
            except StoreUnavailable as exc:
                if action.lease.remaining() <= delay:
                    raise LeaseLost(
                        f"the store stayed unavailable until the lease on action {action.id} ended: "
                        f"{exc.message}",
                        incident_id=action.incident_id,
                    ) from exc
                log.warning(
                    "writing the action failed; retrying", extra={**action.log_extra(), "error": exc.message}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_DELAY_CAP_SECONDS)

    async def _owned(self, session: AsyncSession, action: ActionSnapshot) -> Action:
        row = await ActionRepository(session).get(action.id, for_update=True)
        if row.lease_owner != action.lease.token or row.status != ActionStatus.RUNNING.value:
            raise LeaseLost(f"action {action.id} is no longer ours", incident_id=action.incident_id)
        return row

    async def _hand_back(self, action: ActionSnapshot) -> None:
        """End our lease now (shutting down), in the action's recorded phase: the next claim, by any
        worker, continues it at once instead of after the lease."""
        try:
            async with asyncio.timeout(HAND_BACK_TIMEOUT_SECONDS), self.store.session() as session:
                now = await database_now(session)
                row = await hand_back_action(
                    self.store, session, action.id, owner=action.lease.token, now=now
                )
                if row is None:
                    return  # finished, or no longer ours
                if row.incident_id is not None:
                    await IncidentRepository(session).events.add(
                        row.incident_id,
                        "action.handed_back",
                        f"{self.owner} handed action {row.id} back in phase {row.phase} (shutting down); "
                        "the next worker continues it",
                        actor=ACTOR,
                        at=self._clock(),
                        data={"action_id": row.id, "phase": row.phase},
                    )
        except Exception as exc:
            log.warning(
                "could not hand the lease back; it lapses instead",
                extra={**action.log_extra(), "error": str(exc)[:300]},
            )
            return
        self.metrics.lease_events.labels("handed_back").inc()
        log.info("lease handed back", extra={**action.log_extra(), "phase": row.phase})

    @contextlib.asynccontextmanager
    async def _cloud_run_write(self, action: ActionSnapshot) -> AsyncIterator[None]:
        """Marks an UpdateService in flight: stop() lets it finish, and does not hand back the lease
        of one it had to abandon (the change may still land; the lease lapsing gives it time)."""
        self._writes_in_flight.add(action.id)
        try:
            yield
        except asyncio.CancelledError:
            self._abandoned_writes.add(action.id)
            raise
        finally:
            self._writes_in_flight.discard(action.id)

    async def _run(self, action: ActionSnapshot) -> None:
        extra = action.log_extra()
        if action.request is None:
            log.error("action invalid: %s", action.invalid, extra=extra)
            await self._fail(action, action.invalid or "invalid action")
            return
        if action.phase == ActionPhase.PENDING:
            started = time.perf_counter()
            try:
                result = await self._apply(action, action.request)
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

    def _refusal(self, action: ActionSnapshot, request: ActionRequest) -> str | None:
        """The policy's bounds, again at execution: a queued action may predate the settings."""
        allowed = self.config.allowed_services
        if allowed is not None and action.service not in allowed:
            return f"{action.service} is not in REMEDIATOR_ALLOWED_SERVICES"
        ceiling = self.config.max_instances_ceiling
        if isinstance(request, ScaleAction) and request.max_instances > ceiling:
            return f"max {request.max_instances} instances exceeds REMEDIATOR_MAX_INSTANCES={ceiling}"
        return None

    async def _apply(self, action: ActionSnapshot, request: ActionRequest) -> dict[str, Any]:
        service = action.service
        refused = self._refusal(action, request)
        if refused is not None:
            raise ActionRefused(f"refused at execution: {refused}", service=service)
        current = await self.changer.get_service(service)
        if isinstance(request, RollbackAction):
            target = request.target_revision
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
            serving = {name: share for name, share in traffic_by_revision(current).items() if share > 0}
            if serving == {target: 100}:
                return {"changed": False, "note": f"traffic already 100% on {target}", "traffic": before}
            # With the etag read above: a service changed since (a deploy, a human) refuses it.
            async with self._cloud_run_write(action):
                updated = await self.changer.set_traffic(
                    service, pinned_to(target, current=current), etag=current.etag
                )
            return {"changed": True, "traffic": traffic_spec(updated)}
        if isinstance(request, ReleaseAction):
            before = traffic_spec(current)
            await self._record_intent(action, {"previous_traffic": before})
            latest = all_to_latest(current=current)
            if serves_only(latest[0], current):
                return {"changed": False, "note": "traffic already 100% on LATEST", "traffic": before}
            async with self._cloud_run_write(action):
                updated = await self.changer.set_traffic(service, latest, etag=current.etag)
            return {"changed": True, "traffic": traffic_spec(updated)}
        wanted = (request.min_instances, request.max_instances)
        previous = (current.scaling.min_instance_count, current.scaling.max_instance_count)
        await self._record_intent(
            action, {"previous_scaling": {"min_instances": previous[0], "max_instances": previous[1]}}
        )
        if previous == wanted:
            return {"changed": False, "note": "scaling already in place", "scaling": list(wanted)}
        async with self._cloud_run_write(action):
            updated = await self.changer.set_scaling(
                service, min_instances=wanted[0], max_instances=wanted[1], etag=current.etag
            )
        return {
            "changed": True,
            "scaling": {
                "min_instances": updated.scaling.min_instance_count,
                "max_instances": updated.scaling.max_instance_count,
            },
        }

    async def _record_intent(self, action: ActionSnapshot, before: dict[str, Any]) -> None:
        """Write what Cloud Run looked like before the change, once: a takeover keeps the original."""

        async def record(session: AsyncSession, row: Action) -> None:
            result = dict(row.result or {})
            for key, value in before.items():
                result.setdefault(key, value)
            row.result = result
            action.result.update(result)

        await self._write(action, record)

    async def _mark_applied(self, action: ActionSnapshot, outcome: dict[str, Any]) -> ActionSnapshot:
        now = self._clock()
        message = (
            f"{action.describe()}: applied"
            if outcome.get("changed")
            else f"{action.describe()}: {outcome.get('note', 'already in place')}, nothing changed"
        )

        async def mark(session: AsyncSession, row: Action) -> ActionSnapshot:
            if row.phase == ActionPhase.PENDING:  # not when a retry follows a commit that got through
                row.result = {**(row.result or {}), **outcome}
                row.phase = ActionPhase.APPLIED.value
                row.applied_at = now
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
                            incident,
                            IncidentStatus.VERIFYING,
                            actor=ACTOR,
                            message="verifying recovery",
                            now=now,
                        )
            return ActionSnapshot.of(row, action.lease)

        snapshot = await self._write(action, mark)
        self.metrics.actions.labels(action.type, "succeeded" if outcome.get("changed") else "unchanged").inc()
        await self._annotate(action, f"Remediator: {message}", [action.service, action.type], now)
        return snapshot

    async def _verify(self, action: ActionSnapshot) -> None:
        applied_at = action.applied_at or self._clock()
        deadline = applied_at + self.config.verify.timeout

        async def enter(session: AsyncSession, row: Action) -> None:
            row.phase = ActionPhase.VERIFYING.value

        await self._write(action, enter)
        serving: list[str] = []
        known: list[bool] = []

        async def serving_revisions() -> list[str]:
            # Read once, when the first check needs it; a failure (after the changer's own retries)
            # is that check's reason, and the next check reads again.
            if not known:
                service_state = await self.changer.get_service(action.service)
                serving.extend(
                    sorted(name for name, share in traffic_by_revision(service_state).items() if share > 0)
                )
                known.append(True)
            return serving

        first_healthy: list[Check] = []

        async def on_check(check: Check, streak: int) -> None:
            if check.healthy and not first_healthy:
                first_healthy.append(check)

        outcome = await self.verifier.verify(
            action.service, serving_revisions, deadline=deadline, on_check=on_check
        )
        now = self._clock()

        async def finish(session: AsyncSession, row: Action) -> tuple[str, str] | None:
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
                return None
            incidents = IncidentRepository(session)
            incident = await incidents.get(row.incident_id, for_update=True)
            if outcome.recovered:
                return await self._resolve(incidents, incident, serving, outcome.reason, now, action=row)
            return await self._escalate(incidents, incident, outcome.reason, now)

        note = await self._write(action, finish)
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
        *,
        action: Action | None = None,
    ) -> tuple[str, str] | None:
        """Resolve the incident; returns the annotation (text, tag) to post once committed."""
        if incident.status != IncidentStatus.VERIFYING:
            return None
        if incident.origin == "alert":
            # MTTR of the fault this action fixed (incidents can span two; actuator/mttr.py).
            times = recovery_times(
                incident,
                verified_at=now,
                fault=action.fault if action is not None else None,
                mitigated_at=action.applied_at if action is not None else None,
            )
            if action is not None:
                action.recovery = times.as_json()
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
        """End the action as failed. Its incident fails when nothing was applied yet (`acting`), and
        escalates when the change is in place but its effect cannot be known (`verifying`)."""
        now = self._clock()

        async def fail(session: AsyncSession, row: Action) -> None:
            row.status = ActionStatus.FAILED.value
            row.error = reason
            row.finished_at = now
            row.lease_owner = None
            if row.incident_id is None:
                return
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
            elif incident.status == IncidentStatus.VERIFYING:
                message = (
                    f"{action.describe()} is in place but its verification failed: {reason}. "
                    "No further automatic action; a human must look."
                )
                await incidents.transition(
                    incident, IncidentStatus.ESCALATED, actor=ACTOR, message=message, now=now, reason=message
                )
                self.metrics.remediations.labels("escalated").inc()

        await self._write(action, fail)
        self.metrics.actions.labels(action.type, "failed").inc()

    async def _record_crash(self, action: ActionSnapshot) -> None:
        """An unexpected error: fail the action (and move its incident) with the reason rather than
        leave them `running`/`acting` until the lease expires and the same error repeats forever."""
        try:
            await self._fail(action, "internal error in the actuator; see its logs")
        except Exception:
            log.exception("could not record the crash", extra=action.log_extra())

    async def _annotate(self, action: ActionSnapshot, text: str, tags: list[str], at: datetime) -> None:
        if self.annotations is not None:
            await self.annotations.post(text=text, tags=tags, at=at, incident_id=action.incident_id)


def _log_unexpected_end(task: asyncio.Task[None]) -> None:
    """Done-callback: a background task that ends with an exception has it logged, never dropped."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error("background task %s ended with an error", task.get_name(), exc_info=error)
