"""The event outbox: which incident changes are announced, what an announcement carries, and its store.

A timeline line whose kind is in `OUTBOX_TYPES` also writes an `outbox_events` row, in the same
transaction (`EventRepository.add` does it, so no caller can forget). The notifier (actuator) fans
each event out to its sinks as `notification_deliveries`, claimed with a lease, retried with backoff,
every try recorded in `notification_attempts`.

Event types (the CloudEvents `type` is `dev.remediator.incident.<type>`):

    opened             an alert opened the incident
    decided            an engine decided (the decision and its confidence are in `data`)
    awaiting_approval  the policy asks a human before acting
    approval_overdue   nobody answered within the paging threshold
    approval_expired   the approval window closed without an answer
    approved           a human approved the waiting action
    rejected           a human rejected it (the incident then closes)
    action_queued      an action waits for the actuator
    action_applied     the change is in place on Cloud Run
    resolved           recovery verified (with the MTTR)
    escalated          a human must look (why is in `data`)
    suppressed         the policy held an action back (cooldown, hourly cap)
    failed             an action or the analysis failed; a human must look
    closed             the incident ended without (further) action
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from incidents.contracts import format_rfc3339
from incidents.models import (
    Incident,
    IncidentAlert,
    IncidentEvent,
    NotificationAttempt,
    NotificationDelivery,
    OutboxEvent,
)
from incidents.states import IncidentStatus

CLOUDEVENT_TYPE_PREFIX: Final = "dev.remediator.incident."

# Timeline kind -> outbox event type. Kinds not listed here (analysis steps, takeovers, the
# notifier's own lines) stay on the timeline only.
OUTBOX_TYPES: Final[dict[str, str]] = {
    "incident.opened": "opened",
    "status.decided": "decided",
    "status.awaiting_approval": "awaiting_approval",
    "approval.overdue": "approval_overdue",
    "approval.expired": "approval_expired",
    "approval.approved": "approved",
    "approval.rejected": "rejected",
    "status.queued": "action_queued",
    "action.applied": "action_applied",
    "status.resolved": "resolved",
    "status.escalated": "escalated",
    "status.suppressed": "suppressed",
    "status.failed": "failed",
    "status.closed": "closed",
}
EVENT_TYPES: Final[frozenset[str]] = frozenset(OUTBOX_TYPES.values())

# Buttons on an incident's notification, answered by the analyzer's Slack interactions endpoint.
APPROVE_ACTION_ID: Final = "remediator.approve"
REJECT_ACTION_ID: Final = "remediator.reject"

# Timeline kinds the notifier writes.
NOTIFICATION_FAILED_KIND: Final = "notification.failed"
APPROVAL_OVERDUE_KIND: Final = "approval.overdue"

# A close is quiet when nobody was asked to do anything and nothing was done: the alert resolved
# before a decision needed anyone, or the engine found nothing to do. Closes after an escalation or
# while a human was asked are not quiet: those humans need to hear that it is over.
_LOUD_CLOSE_SOURCES = frozenset({IncidentStatus.ESCALATED.value, IncidentStatus.AWAITING_APPROVAL.value})


class DeliveryStatus:
    PENDING: Final = "pending"
    DELIVERED: Final = "delivered"
    SKIPPED: Final = "skipped"
    FAILED: Final = "failed"


def _time(value: datetime | None) -> str | None:
    return format_rfc3339(value) if value is not None else None


def _figures(metrics: dict[str, Any] | None) -> dict[str, Any]:
    metrics = metrics or {}
    return {
        "request_rate_rps": metrics.get("request_rate_rps"),
        "error_rate": metrics.get("error_rate"),
        "latency_p95_ms": metrics.get("latency_p95_ms"),
    }


def evidence_of(context: dict[str, Any] | None, *, max_revisions: int = 4) -> dict[str, Any] | None:
    """The few figures a human needs first: the service and each serving or recent revision, now
    against before. None values are unknown (never healthy)."""
    if not context:
        return None
    metrics = context.get("metrics") or {}
    revisions = []
    for revision in (context.get("revisions") or [])[:max_revisions]:
        before = revision.get("baseline") or revision.get("history")
        revisions.append(
            {
                "name": revision.get("name"),
                "traffic_percent": revision.get("traffic_percent"),
                "now": _figures(revision.get("metrics")),
                "before": _figures(before) if before else None,
            }
        )
    alert = context.get("alert") or {}
    return {
        "alert": alert.get("name"),
        "alert_summary": (alert.get("annotations") or {}).get("summary"),
        "window_seconds": metrics.get("window_seconds"),
        "service": {"now": _figures(metrics), "before": _figures(metrics.get("baseline"))},
        "thresholds": context.get("thresholds"),
        "revisions": revisions,
        "gaps": list(context.get("gaps") or []),
    }


def incident_snapshot(incident: Incident) -> dict[str, Any]:
    """The incident as an event announces it: its state at the moment of the change."""
    decision = incident.decision or None
    return {
        "id": incident.id,
        "service": incident.service,
        "status": incident.status,
        "status_reason": incident.status_reason,
        "origin": incident.origin,
        "severity": incident.severity,
        "summary": incident.summary,
        "decision": {
            key: decision.get(key)
            for key in (
                "action",
                "target_revision",
                "scale",
                "confidence",
                "engine",
                "root_cause",
                "explanation",
            )
        }
        if decision
        else None,
        "policy": {"verdict": incident.policy_verdict, "reason": incident.policy_reason}
        if incident.policy_verdict
        else None,
        "error_rate": incident.error_rate,
        "evidence": evidence_of(incident.context),
        "mttr_seconds": incident.mttr_seconds,
        "mttr_basis": incident.mttr_basis,
        "timestamps": {
            "fault_started_at": _time(incident.fault_started_at),
            "detected_at": _time(incident.detected_at),
            "decided_at": _time(incident.decided_at),
            "mitigated_at": _time(incident.mitigated_at),
            "verified_at": _time(incident.verified_at),
            "resolved_at": _time(incident.resolved_at),
        },
    }


def is_quiet(event_type: str, detail: dict[str, Any] | None, incident: Incident) -> bool:
    if event_type != "closed":
        return False
    source = (detail or {}).get("from")
    return source not in _LOUD_CLOSE_SOURCES and incident.action_started_at is None


def outbox_event_for(
    incident: Incident,
    kind: str,
    message: str,
    *,
    actor: str,
    at: datetime,
    detail: dict[str, Any] | None,
) -> OutboxEvent | None:
    """The outbox row a timeline line announces, or None when the kind is not announced."""
    event_type = OUTBOX_TYPES.get(kind)
    if event_type is None:
        return None
    return OutboxEvent(
        incident_id=incident.id,
        type=event_type,
        service=incident.service,
        severity=incident.severity,
        quiet=is_quiet(event_type, detail, incident),
        actor=actor,
        message=message,
        occurred_at=at,
        data={"incident": incident_snapshot(incident), "detail": detail or {}},
        dispatched_at=None,
    )


@dataclass(frozen=True, kw_only=True)
class ClaimedDelivery:
    """A delivery this worker holds the lease on, with the event it carries."""

    delivery_id: int
    sink: str
    attempts: int
    event_id: int
    incident_id: int
    event_type: str
    service: str
    severity: str | None
    quiet: bool
    actor: str
    message: str
    occurred_at: datetime
    data: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class SinkVerdict:
    """What fan-out decided for one sink: deliver, or skip with a reason."""

    sink: str
    deliver: bool
    reason: str | None = None


class OutboxRepository:
    """Reads and writes of the outbox. Like every repository, never commits."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _insert(self) -> Any:
        return pg_insert if self.session.get_bind().dialect.name == "postgresql" else sqlite_insert

    def _postgresql(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    # fan-out

    async def list_undispatched(self, *, limit: int = 50) -> Sequence[OutboxEvent]:
        """Events not fanned out yet, oldest first; on PostgreSQL locked so replicas share the work."""
        statement = (
            select(OutboxEvent)
            .where(OutboxEvent.dispatched_at.is_(None))
            .order_by(OutboxEvent.id)
            .limit(limit)
        )
        if self._postgresql():
            statement = statement.with_for_update(skip_locked=True)
        return (await self.session.scalars(statement)).all()

    async def dispatch(self, event: OutboxEvent, verdicts: Sequence[SinkVerdict], *, now: datetime) -> None:
        """One delivery per sink (pending or skipped), once: a second fan-out of the event adds none."""
        if verdicts:
            rows = [
                {
                    "event_id": event.id,
                    "incident_id": event.incident_id,
                    "sink": verdict.sink,
                    "status": DeliveryStatus.PENDING if verdict.deliver else DeliveryStatus.SKIPPED,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "last_error": verdict.reason,
                    "created_at": now,
                    "updated_at": now,
                    "finished_at": None if verdict.deliver else now,
                }
                for verdict in verdicts
            ]
            statement = (
                self._insert()(NotificationDelivery)
                .values(rows)
                .on_conflict_do_nothing(index_elements=["event_id", "sink"])
            )
            await self.session.execute(statement)
        event.dispatched_at = now

    # claiming

    async def claim(
        self, *, owner: str, now: datetime, lease: timedelta, sinks: Sequence[str], limit: int
    ) -> list[ClaimedDelivery]:
        """Up to `limit` of the oldest due deliveries, to one of `sinks`, whose (incident, sink) has no
        earlier delivery pending.

        Per incident and sink, events go out in the order they happened (a Slack card is posted before
        it is updated; a page is triggered before it is resolved). A delivery is pending from fan-out
        until it is delivered, skipped or given up; while a worker holds its lease nobody else takes
        it. One batch never holds two deliveries of one incident and sink: the later one still has the
        earlier pending. On PostgreSQL `FOR UPDATE SKIP LOCKED` lets replicas claim side by side.
        """
        earlier = aliased(NotificationDelivery)
        blocked = exists().where(
            earlier.incident_id == NotificationDelivery.incident_id,
            earlier.sink == NotificationDelivery.sink,
            earlier.status == DeliveryStatus.PENDING,
            earlier.event_id < NotificationDelivery.event_id,
        )
        statement = (
            select(NotificationDelivery, OutboxEvent)
            .join(OutboxEvent, OutboxEvent.id == NotificationDelivery.event_id)
            .where(
                NotificationDelivery.status == DeliveryStatus.PENDING,
                NotificationDelivery.sink.in_(list(sinks)),
                NotificationDelivery.next_attempt_at <= now,
                or_(
                    NotificationDelivery.lease_expires_at.is_(None),
                    NotificationDelivery.lease_expires_at < now,
                ),
                ~blocked,
            )
            .order_by(NotificationDelivery.next_attempt_at, NotificationDelivery.id)
            .limit(limit)
        )
        if self._postgresql():
            statement = statement.with_for_update(skip_locked=True, of=NotificationDelivery)
        claimed = []
        for delivery, event in (await self.session.execute(statement)).all():
            delivery.lease_owner = owner
            delivery.lease_expires_at = now + lease
            delivery.attempts += 1
            delivery.updated_at = now
            claimed.append(
                ClaimedDelivery(
                    delivery_id=delivery.id,
                    sink=delivery.sink,
                    attempts=delivery.attempts,
                    event_id=event.id,
                    incident_id=event.incident_id,
                    event_type=event.type,
                    service=event.service,
                    severity=event.severity,
                    quiet=event.quiet,
                    actor=event.actor,
                    message=event.message,
                    occurred_at=event.occurred_at,
                    data=dict(event.data),
                )
            )
        return claimed

    async def get_owned(self, delivery_id: int, *, owner: str) -> NotificationDelivery | None:
        """The delivery, locked, if this worker still holds its lease; None when another took over."""
        statement = select(NotificationDelivery).where(
            NotificationDelivery.id == delivery_id,
            NotificationDelivery.lease_owner == owner,
            NotificationDelivery.status == DeliveryStatus.PENDING,
        )
        if self._postgresql():
            statement = statement.with_for_update()
        return await self.session.scalar(statement)

    async def record_attempt(
        self,
        delivery: NotificationDelivery,
        *,
        outcome: str,
        at: datetime,
        owner: str,
        error: str | None = None,
        duration_ms: float | None = None,
    ) -> None:
        self.session.add(
            NotificationAttempt(
                delivery_id=delivery.id,
                sink=delivery.sink,
                at=at,
                outcome=outcome,
                error=error,
                duration_ms=duration_ms,
                owner=owner,
            )
        )

    # what earlier deliveries left

    async def results_before(self, incident_id: int, sink: str, *, event_id: int) -> list[dict[str, Any]]:
        """What this sink answered for the incident's earlier events, oldest first (delivered ones)."""
        rows = await self.session.scalars(
            select(NotificationDelivery.result)
            .where(
                NotificationDelivery.incident_id == incident_id,
                NotificationDelivery.sink == sink,
                NotificationDelivery.status == DeliveryStatus.DELIVERED,
                NotificationDelivery.event_id < event_id,
            )
            .order_by(NotificationDelivery.event_id)
        )
        return [dict(result) for result in rows if result]

    async def list_for_incident(self, incident_id: int) -> list[tuple[NotificationDelivery, str]]:
        """The incident's deliveries with the type of event each carries, in event order."""
        result = await self.session.execute(
            select(NotificationDelivery, OutboxEvent.type)
            .join(OutboxEvent, OutboxEvent.id == NotificationDelivery.event_id)
            .where(NotificationDelivery.incident_id == incident_id)
            .order_by(NotificationDelivery.event_id, NotificationDelivery.id)
        )
        return [(row[0], row[1]) for row in result.all()]

    async def list_events_for_incident(self, incident_id: int) -> Sequence[OutboxEvent]:
        result = await self.session.scalars(
            select(OutboxEvent).where(OutboxEvent.incident_id == incident_id).order_by(OutboxEvent.id)
        )
        return result.all()

    async def list_attempts(self, delivery_id: int) -> Sequence[NotificationAttempt]:
        result = await self.session.scalars(
            select(NotificationAttempt)
            .where(NotificationAttempt.delivery_id == delivery_id)
            .order_by(NotificationAttempt.id)
        )
        return result.all()

    async def count_pending(self) -> int:
        count = await self.session.scalar(
            select(func.count())
            .select_from(NotificationDelivery)
            .where(NotificationDelivery.status == DeliveryStatus.PENDING)
        )
        undispatched = await self.session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.dispatched_at.is_(None))
        )
        return int(count or 0) + int(undispatched or 0)

    # approvals nobody answered

    async def list_awaiting_approval(self) -> Sequence[tuple[int, datetime]]:
        """(incident id, when it started waiting) for every incident awaiting approval."""
        waiting = select(Incident.id).where(Incident.status == IncidentStatus.AWAITING_APPROVAL.value)
        started = (
            select(IncidentEvent.incident_id, func.max(IncidentEvent.at).label("since"))
            .where(
                # Only the waiting incidents' lines (by the incident_id index): this runs every few
                # seconds on every replica, and the timeline only grows.
                IncidentEvent.incident_id.in_(waiting),
                IncidentEvent.kind == f"status.{IncidentStatus.AWAITING_APPROVAL.value}",
            )
            .group_by(IncidentEvent.incident_id)
            .subquery()
        )
        result = await self.session.execute(
            select(Incident.id, started.c.since)
            .join(started, started.c.incident_id == Incident.id)
            .where(Incident.status == IncidentStatus.AWAITING_APPROVAL.value)
            .order_by(Incident.id)
        )
        return [(row[0], row[1]) for row in result.all()]

    async def has_event_since(self, incident_id: int, kind: str, *, since: datetime) -> bool:
        found = await self.session.scalar(
            select(IncidentEvent.id).where(
                and_(
                    IncidentEvent.incident_id == incident_id,
                    IncidentEvent.kind == kind,
                    IncidentEvent.at >= since,
                )
            )
        )
        return found is not None

    async def approval_decision(self, incident_id: int, *, until: datetime) -> dict[str, Any] | None:
        """Who approved or rejected the incident's waiting action, up to `until`, if anyone did."""
        event = await self.session.scalar(
            select(IncidentEvent)
            .where(
                IncidentEvent.incident_id == incident_id,
                IncidentEvent.kind.in_(("approval.approved", "approval.rejected")),
                IncidentEvent.at <= until,
            )
            .order_by(IncidentEvent.id.desc())
            .limit(1)
        )
        if event is None:
            return None
        data = event.data or {}
        return {
            "outcome": event.kind.split(".", 1)[1],
            "actor": event.actor,
            "by": data.get("by"),
            "comment": data.get("comment"),
            "at": format_rfc3339(event.at),
        }

    async def alert_names(self, incident_id: int) -> list[str]:
        rows = await self.session.scalars(
            select(IncidentAlert.alertname).where(IncidentAlert.incident_id == incident_id).distinct()
        )
        return sorted(rows.all())
