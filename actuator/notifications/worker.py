"""The notifier: delivers the event outbox to every configured sink, at least once, in order.

    outbox_events ──fan-out──> notification_deliveries (one per event and sink: pending or skipped)
                                   │ claimed with a lease (FOR UPDATE SKIP LOCKED on PostgreSQL)
                                   ▼
                               sink.deliver ── ok ──> delivered (its answer kept for later events)
                                   │ fails
                                   ├─ retryable and attempts left ──> pending again after a backoff
                                   └─ otherwise ──> failed: a `notification.failed` line on the
                                                    incident's timeline, counted in /metrics

Per incident and sink, events go out in the order they happened: a delivery waits while an earlier
one of the same incident and sink is pending (so a card is posted before it is updated, and a page
triggered before it is resolved). A sink that is down delays only its own deliveries; remediation
never waits for any of this (the worker runs beside the action worker and only reads incidents).

Crash safety: rows are durable, so a restart picks up where the last process stopped; a delivery
whose worker died is taken over when its lease expires. The send itself cannot be undone, so a
crash between a sink's answer and the commit that records it means one more send: delivery is at
least once (webhook consumers drop duplicates by the CloudEvents `id`).

Also here: an approval nobody answered within `approval_page_after` gets an `approval.overdue`
timeline line (announced as `approval_overdue`, which pages through PagerDuty).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from actuator.notifications.base import Delivered, Notification, Sink
from actuator.notifications.config import NotificationConfig
from actuator.notifications.exceptions import DeliveryFailed
from actuator.notifications.metrics import NotificationMetrics
from incidents import IncidentStatus, format_rfc3339
from incidents.db import Store
from incidents.models import utcnow
from incidents.outbox import (
    APPROVAL_OVERDUE_KIND,
    NOTIFICATION_FAILED_KIND,
    ClaimedDelivery,
    DeliveryStatus,
    OutboxRepository,
    SinkVerdict,
)
from incidents.repository import IncidentRepository

log = logging.getLogger(__name__)

ACTOR = "notifier"
DISPATCH_BATCH = 100


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


class NotificationWorker:
    def __init__(
        self,
        *,
        store: Store,
        sinks: Sequence[Sink],
        config: NotificationConfig,
        metrics: NotificationMetrics,
        owner: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.sinks = {sink.name: sink for sink in sinks}
        self.config = config
        self.metrics = metrics
        self.owner = owner or f"notifier-{uuid.uuid4().hex[:8]}"
        self._clock = clock
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._next_approval_check = 0.0

    # lifecycle

    async def start(self) -> None:
        self._stopping.clear()
        if not self.sinks:
            log.info("notifications: no sink configured; outbox events are recorded and sent nowhere")
        self._loop_task = asyncio.create_task(self._loop(), name="notifier")

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop claiming; give deliveries in flight `grace_seconds`, then cancel them (their leases
        expire and they are tried again, by this process after a restart or by another)."""
        self._stopping.set()
        self._wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._running:
            _, pending = await asyncio.wait(self._running, timeout=grace_seconds)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            # Cleared before looking, so a delivery finishing meanwhile (whose successor for the same
            # incident and sink may now go) wakes the next look at once.
            self._wake.clear()
            try:
                await self.dispatch()
                while not self._stopping.is_set():
                    free = self.config.delivery.concurrency - len(self._running)
                    if free <= 0:
                        break  # a delivery finishing wakes the loop
                    batch = await self._claim(limit=free)
                    for claimed in batch:
                        task = asyncio.create_task(self._work(claimed), name="notification")
                        self._running.add(task)
                        task.add_done_callback(self._running.discard)
                    if len(batch) < free:
                        break
                if time.monotonic() >= self._next_approval_check:
                    self._next_approval_check = time.monotonic() + self.config.approval_check_interval
                    await self.check_approvals()
                await self._refresh_pending()
            except Exception:
                log.exception("notifier loop failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.delivery.poll_interval)

    async def _work(self, claimed: ClaimedDelivery) -> None:
        try:
            await self._deliver(claimed, await self._notification(claimed))
        except Exception:
            # The lease runs out and the delivery is tried again; nothing was sent.
            log.exception(
                "could not prepare a notification",
                extra={"incident_id": claimed.incident_id, "sink": claimed.sink},
            )
        finally:
            self._wake.set()

    async def run_once(self) -> int:
        """Fan out what is new and deliver everything due now, one at a time; the number delivered
        or given up. Tests drive the worker with this and a clock of their own."""
        await self.dispatch()
        handled = 0
        while batch := await self._claim(limit=1):
            await self._deliver(batch[0], await self._notification(batch[0]))
            handled += 1
        return handled

    # fan-out

    async def dispatch(self) -> int:
        """One delivery per event and sink (or a skip with the sink's reason); returns events handled."""
        handled = 0
        while True:
            now = self._clock()
            skipped: list[str] = []
            async with self.store.session() as session:
                outbox = OutboxRepository(session)
                events = await outbox.list_undispatched(limit=DISPATCH_BATCH)
                for event in events:
                    verdicts = []
                    for sink in self.sinks.values():
                        reason = sink.screen(
                            event_type=event.type, severity=event.severity, quiet=event.quiet
                        )
                        verdicts.append(SinkVerdict(sink=sink.name, deliver=reason is None, reason=reason))
                        if reason is not None:
                            skipped.append(sink.name)
                    await outbox.dispatch(event, verdicts, now=now)
            for event in events:
                self.metrics.events.labels(event.type).inc()
            for sink_name in skipped:
                self.metrics.deliveries.labels(sink_name, DeliveryStatus.SKIPPED).inc()
            handled += len(events)
            if len(events) < DISPATCH_BATCH:
                return handled

    # delivering

    async def _claim(self, *, limit: int) -> list[ClaimedDelivery]:
        """Lease up to `limit` due deliveries in one short transaction."""
        if not self.sinks:
            return []
        async with self.store.session() as session:
            return await OutboxRepository(session).claim(
                owner=self.owner,
                now=self._clock(),
                lease=self.config.delivery.lease,
                sinks=list(self.sinks),
                limit=limit,
            )

    async def _notification(self, claimed: ClaimedDelivery) -> Notification:
        """What the sink is given: the event, and what it needs to know about the incident so far."""
        links = self.config.links
        async with self.store.session() as session:
            outbox = OutboxRepository(session)
            return Notification(
                event_id=claimed.event_id,
                event_type=claimed.event_type,
                incident_id=claimed.incident_id,
                service=claimed.service,
                severity=claimed.severity,
                quiet=claimed.quiet,
                actor=claimed.actor,
                message=claimed.message,
                occurred_at=claimed.occurred_at,
                incident=dict(claimed.data.get("incident") or {}),
                detail=dict(claimed.data.get("detail") or {}),
                alert_names=await outbox.alert_names(claimed.incident_id),
                approval=await outbox.approval_decision(claimed.incident_id, until=claimed.occurred_at),
                earlier=await outbox.results_before(
                    claimed.incident_id, claimed.sink, event_id=claimed.event_id
                ),
                incident_url=links.incident(claimed.incident_id),
                dashboard_url=links.dashboard(claimed.service),
            )

    async def _deliver(self, claimed: ClaimedDelivery, notification: Notification) -> None:
        sink = self.sinks[claimed.sink]
        extra = {
            "incident_id": claimed.incident_id,
            "sink": claimed.sink,
            "event_id": claimed.event_id,
            "event_type": claimed.event_type,
            "attempt": claimed.attempts,
        }
        started = time.perf_counter()
        delivered: Delivered | None = None
        failure: DeliveryFailed | None = None
        try:
            # Never outlive the lease: past it another worker may take the delivery over.
            async with asyncio.timeout(self.config.delivery.lease.total_seconds() * 0.8):
                delivered = await sink.deliver(notification)
        except DeliveryFailed as exc:
            failure = exc
        except TimeoutError:
            failure = DeliveryFailed(
                f"{claimed.sink}: no answer within the delivery's lease", sink=claimed.sink, retryable=True
            )
        except Exception as exc:
            log.exception("notification sink crashed", extra=extra)
            failure = DeliveryFailed(
                f"{claimed.sink}: internal error: {type(exc).__name__}: {exc}"[:300],
                sink=claimed.sink,
                retryable=True,
            )
        elapsed = time.perf_counter() - started
        self.metrics.duration.labels(claimed.sink).observe(elapsed)
        await self._record(claimed, delivered, failure, elapsed_ms=round(elapsed * 1000, 2), extra=extra)

    async def _record(
        self,
        claimed: ClaimedDelivery,
        delivered: Delivered | None,
        failure: DeliveryFailed | None,
        *,
        elapsed_ms: float,
        extra: dict[str, object],
    ) -> None:
        now = self._clock()
        delivery_config = self.config.delivery
        async with self.store.session() as session:
            outbox = OutboxRepository(session)
            row = await outbox.get_owned(claimed.delivery_id, owner=self.owner)
            if row is None:
                log.warning("lost the lease on a notification; another worker has it", extra=extra)
                return
            row.lease_owner = None
            row.lease_expires_at = None
            row.updated_at = now
            if failure is None and delivered is not None:
                outcome = DeliveryStatus.DELIVERED if delivered.sent else DeliveryStatus.SKIPPED
                row.status = outcome
                row.result = delivered.result
                row.last_error = delivered.note
                row.finished_at = now
                await outbox.record_attempt(
                    row, outcome=outcome, at=now, owner=self.owner, duration_ms=elapsed_ms
                )
                self.metrics.deliveries.labels(claimed.sink, outcome).inc()
                log.info("notification %s", outcome, extra=extra)
                return
            assert failure is not None
            row.last_error = failure.message
            if failure.retryable and row.attempts < delivery_config.max_attempts:
                row.next_attempt_at = now + delivery_config.backoff(row.attempts)
                await outbox.record_attempt(
                    row,
                    outcome="retry",
                    at=now,
                    owner=self.owner,
                    error=failure.message,
                    duration_ms=elapsed_ms,
                )
                self.metrics.deliveries.labels(claimed.sink, "retried").inc()
                log.warning(
                    "notification failed; retrying at %s: %s",
                    format_rfc3339(row.next_attempt_at),
                    failure.message,
                    extra=extra,
                )
                return
            row.status = DeliveryStatus.FAILED
            row.finished_at = now
            await outbox.record_attempt(
                row, outcome="failed", at=now, owner=self.owner, error=failure.message, duration_ms=elapsed_ms
            )
            why = "refused" if not failure.retryable else f"gave up after {row.attempts} attempts"
            await IncidentRepository(session).events.add(
                claimed.incident_id,
                NOTIFICATION_FAILED_KIND,
                f"{claimed.sink}: {why} delivering {claimed.event_type}: {failure.message}",
                actor=ACTOR,
                at=now,
                data={
                    "sink": claimed.sink,
                    "event_id": claimed.event_id,
                    "event_type": claimed.event_type,
                    "attempts": row.attempts,
                    "error": failure.message,
                },
            )
        self.metrics.deliveries.labels(claimed.sink, "failed").inc()
        log.error("notification failed for good: %s", failure.message, extra=extra)

    # housekeeping

    async def _refresh_pending(self) -> None:
        async with self.store.session() as session:
            self.metrics.pending.set(await OutboxRepository(session).count_pending())

    async def check_approvals(self) -> int:
        """Write `approval.overdue` once for each approval waiting longer than the threshold."""
        threshold = self.config.approval_page_after
        if threshold is None:
            return 0
        now = self._clock()
        async with self.store.session() as session:
            waiting = await OutboxRepository(session).list_awaiting_approval()
        written = 0
        for incident_id, since in waiting:
            if now - since < threshold:
                continue
            async with self.store.session() as session:
                incidents = IncidentRepository(session)
                incident = await incidents.get(incident_id, for_update=True)
                outbox = OutboxRepository(session)
                if incident.status != IncidentStatus.AWAITING_APPROVAL:
                    continue
                if await outbox.has_event_since(incident_id, APPROVAL_OVERDUE_KIND, since=since):
                    continue
                waited = (now - since).total_seconds()
                await incidents.events.add(
                    incident_id,
                    APPROVAL_OVERDUE_KIND,
                    f"no answer after {_duration(waited)} waiting for approval",
                    actor=ACTOR,
                    at=now,
                    data={
                        "waiting_since": format_rfc3339(since),
                        "threshold_seconds": threshold.total_seconds(),
                    },
                )
                written += 1
                log.warning("approval overdue", extra={"incident_id": incident_id, "waited_seconds": waited})
        return written
