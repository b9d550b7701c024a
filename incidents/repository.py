"""Repositories over the incident store.

Each takes an `AsyncSession` and never commits: the caller owns the transaction, so a decision and
its queued action land together or not at all. Reads are named `get_*`/`list_*`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from incidents.contracts import ActionRequest
from incidents.exceptions import ActionNotFound, IncidentNotFound, IncidentsError
from incidents.models import ACTIVE_SQL, Action, Incident, IncidentAlert, IncidentEvent, utcnow
from incidents.outbox import OUTBOX_TYPES, outbox_event_for
from incidents.states import (
    ACTIVE_STATUSES,
    ActionPhase,
    ActionStatus,
    IncidentStatus,
    check_transition,
)

_ACTIVE = [s.value for s in ACTIVE_STATUSES]

# Which timestamp a status change stamps, the first time it happens.
_STAMPS: dict[IncidentStatus, tuple[str, ...]] = {
    IncidentStatus.DECIDED: ("decided_at",),
    IncidentStatus.ACTING: ("action_started_at",),
    IncidentStatus.VERIFYING: ("mitigated_at",),
    IncidentStatus.RESOLVED: ("verified_at", "resolved_at"),
    IncidentStatus.CLOSED: ("resolved_at",),
    IncidentStatus.FAILED: ("resolved_at",),
}


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _insert_for(session: AsyncSession) -> Any:
    return pg_insert if _dialect(session) == "postgresql" else sqlite_insert


class EventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        incident_id: int,
        kind: str,
        message: str,
        *,
        actor: str,
        data: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> IncidentEvent:
        at = at or utcnow()
        event = IncidentEvent(
            incident_id=incident_id, at=at, kind=kind, actor=actor, message=message, data=data
        )
        # No flush: the timeline is written with the transaction, in one batch, in the order added.
        self.session.add(event)
        if kind in OUTBOX_TYPES:
            # The announcement goes into the same transaction as the change: committed together or
            # not at all. The incident is normally in the session already (no query).
            incident = await self.session.get(Incident, incident_id)
            if incident is not None:
                announced = outbox_event_for(incident, kind, message, actor=actor, at=at, detail=data)
                if announced is not None:
                    self.session.add(announced)
        return event

    async def list_for_incident(self, incident_id: int) -> Sequence[IncidentEvent]:
        result = await self.session.scalars(
            select(IncidentEvent).where(IncidentEvent.incident_id == incident_id).order_by(IncidentEvent.id)
        )
        return result.all()

    async def last_at(self, incident_id: int, kind: str) -> datetime | None:
        """When the incident's latest line of `kind` was written (lines of this transaction included)."""
        return await self.session.scalar(
            select(func.max(IncidentEvent.at)).where(
                IncidentEvent.incident_id == incident_id, IncidentEvent.kind == kind
            )
        )


class IncidentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.events = EventRepository(session)

    # reads

    async def get(self, incident_id: int, *, for_update: bool = False) -> Incident:
        statement = select(Incident).where(Incident.id == incident_id)
        if for_update:
            statement = statement.with_for_update()
        incident = await self.session.scalar(statement)
        if incident is None:
            raise IncidentNotFound(incident_id)
        return incident

    async def get_active_by_service(self, service: str, *, for_update: bool = False) -> Incident | None:
        statement = select(Incident).where(Incident.service == service, Incident.status.in_(_ACTIVE))
        if for_update:
            statement = statement.with_for_update()
        return await self.session.scalar(statement)

    async def list_incidents(
        self,
        *,
        limit: int = 50,
        status: Sequence[str] | None = None,
        service: str | None = None,
        before_id: int | None = None,
    ) -> Sequence[Incident]:
        statement = select(Incident).order_by(Incident.id.desc()).limit(limit)
        if status:
            statement = statement.where(Incident.status.in_(list(status)))
        if service:
            statement = statement.where(Incident.service == service)
        if before_id is not None:
            statement = statement.where(Incident.id < before_id)
        return (await self.session.scalars(statement)).all()

    async def list_alerts(self, incident_id: int) -> Sequence[IncidentAlert]:
        result = await self.session.scalars(
            select(IncidentAlert).where(IncidentAlert.incident_id == incident_id).order_by(IncidentAlert.id)
        )
        return result.all()

    async def list_alerts_for(self, incident_ids: Sequence[int]) -> dict[int, list[IncidentAlert]]:
        grouped: dict[int, list[IncidentAlert]] = {incident_id: [] for incident_id in incident_ids}
        if incident_ids:
            result = await self.session.scalars(
                select(IncidentAlert)
                .where(IncidentAlert.incident_id.in_(list(incident_ids)))
                .order_by(IncidentAlert.id)
            )
            for alert in result:
                grouped[alert.incident_id].append(alert)
        return grouped

    async def get_alert(self, fingerprint: str, starts_at: datetime) -> IncidentAlert | None:
        """The newest record of an alert: the one in the latest incident it belongs to (an alert that
        recurred after its incident resolved belongs to the incident it recurred into as well)."""
        return await self.session.scalar(
            select(IncidentAlert)
            .where(IncidentAlert.fingerprint == fingerprint, IncidentAlert.starts_at == starts_at)
            .order_by(IncidentAlert.id.desc())
            .limit(1)
        )

    async def awaiting_approval_since(self, incident_id: int) -> datetime | None:
        """When the incident last began waiting for approval (its latest `status.awaiting_approval`
        line), or None if it never did."""
        return await self.session.scalar(
            select(func.max(IncidentEvent.at)).where(
                IncidentEvent.incident_id == incident_id,
                IncidentEvent.kind == f"status.{IncidentStatus.AWAITING_APPROVAL.value}",
            )
        )

    async def list_alert_records(self, fingerprint: str, starts_at: datetime) -> Sequence[IncidentAlert]:
        """Every record of an alert, oldest first (one per incident it belongs to)."""
        result = await self.session.scalars(
            select(IncidentAlert)
            .where(IncidentAlert.fingerprint == fingerprint, IncidentAlert.starts_at == starts_at)
            .order_by(IncidentAlert.id)
        )
        return result.all()

    async def list_firing_alerts(self, incident_id: int) -> Sequence[IncidentAlert]:
        result = await self.session.scalars(
            select(IncidentAlert)
            .where(IncidentAlert.incident_id == incident_id, IncidentAlert.status == "firing")
            .order_by(IncidentAlert.id)
        )
        return result.all()

    async def list_following(self, incident_id: int) -> Sequence[Incident]:
        """Incidents that follow this one (recurred after it, or took over from it)."""
        result = await self.session.scalars(
            select(Incident).where(Incident.previous_incident_id == incident_id).order_by(Incident.id)
        )
        return result.all()

    async def list_watched(
        self, *, statuses: Sequence[str], resolved_since: datetime, limit: int = 100
    ) -> Sequence[Incident]:
        """Incidents whose service the lifecycle watcher reads: those in `statuses`, and those
        resolved since `resolved_since` whose alert still fires and that nothing follows yet."""
        follower = aliased(Incident)
        firing = (
            select(IncidentAlert.id)
            .where(IncidentAlert.incident_id == Incident.id, IncidentAlert.status == "firing")
            .exists()
        )
        followed = select(follower.id).where(follower.previous_incident_id == Incident.id).exists()
        result = await self.session.scalars(
            select(Incident)
            .where(
                or_(
                    Incident.status.in_(list(statuses)),
                    and_(
                        Incident.status == IncidentStatus.RESOLVED.value,
                        Incident.resolved_at >= resolved_since,
                        firing,
                        ~followed,
                    ),
                )
            )
            .order_by(Incident.id)
            .limit(limit)
        )
        return result.all()

    async def list_quiet_escalations(
        self, *, resolved_before: datetime, limit: int = 50
    ) -> Sequence[Incident]:
        """Escalated incidents with no firing alert, whose last alert resolved before `resolved_before`."""
        firing = (
            select(IncidentAlert.id)
            .where(IncidentAlert.incident_id == Incident.id, IncidentAlert.status == "firing")
            .exists()
        )
        last_end = (
            select(func.max(IncidentAlert.ends_at))
            .where(IncidentAlert.incident_id == Incident.id)
            .scalar_subquery()
        )
        result = await self.session.scalars(
            select(Incident)
            .where(
                Incident.status == IncidentStatus.ESCALATED.value,
                ~firing,
                or_(last_end.is_(None), last_end < resolved_before),
                Incident.updated_at < resolved_before,
            )
            .order_by(Incident.id)
            .limit(limit)
        )
        return result.all()

    async def count_firing_alerts(self, incident_id: int) -> int:
        count = await self.session.scalar(
            select(func.count())
            .select_from(IncidentAlert)
            .where(IncidentAlert.incident_id == incident_id, IncidentAlert.status == "firing")
        )
        return int(count or 0)

    async def list_needing_analysis(self, *, now: datetime, limit: int = 20) -> Sequence[int]:
        """Incidents that are open, or were left `analyzing` by a process whose lease ran out."""
        result = await self.session.scalars(
            select(Incident.id)
            .where(
                or_(
                    Incident.status == IncidentStatus.OPEN.value,
                    and_(
                        Incident.status == IncidentStatus.ANALYZING.value,
                        or_(Incident.lease_expires_at.is_(None), Incident.lease_expires_at < now),
                    ),
                )
            )
            .order_by(Incident.id)
            .limit(limit)
        )
        return result.all()

    async def list_unattended(
        self, *, statuses: Sequence[str], stale_before: datetime, limit: int = 50
    ) -> Sequence[int]:
        """Incidents in `statuses` with no live action: none queued, and none running whose lease
        ended after `stale_before` (a worker would still take that one over)."""
        live = (
            select(Action.id)
            .where(
                Action.incident_id == Incident.id,
                or_(
                    Action.status == ActionStatus.QUEUED.value,
                    and_(
                        Action.status == ActionStatus.RUNNING.value,
                        Action.lease_expires_at >= stale_before,
                    ),
                ),
            )
            .exists()
        )
        result = await self.session.scalars(
            select(Incident.id)
            .where(Incident.status.in_(list(statuses)), ~live)
            .order_by(Incident.id)
            .limit(limit)
        )
        return result.all()

    # writes

    async def open(
        self,
        service: str,
        *,
        now: datetime,
        origin: str = "alert",
        severity: str | None = None,
        summary: str | None = None,
        alert_fired_at: datetime | None = None,
        actor: str,
        message: str,
    ) -> tuple[Incident, bool]:
        """The service's active incident, opening one when there is none. Returns (incident, opened).

        Two writers racing to open an incident for one service both reach the partial unique index;
        the loser's insert does nothing and it joins the winner's incident.
        """
        existing = await self.get_active_by_service(service, for_update=True)
        if existing is not None:
            return existing, False
        insert = _insert_for(self.session)
        statement = (
            insert(Incident)
            .values(
                service=service,
                status=IncidentStatus.OPEN.value,
                origin=origin,
                severity=severity,
                summary=summary,
                alert_fired_at=alert_fired_at,
                detected_at=now,
                created_at=now,
                updated_at=now,
                analysis_attempts=0,
            )
            # The partial unique index (one active incident per service) is the arbiter: a writer
            # that loses the race inserts nothing and joins the winner's incident below.
            .on_conflict_do_nothing(index_elements=["service"], index_where=text(ACTIVE_SQL))
            .returning(Incident.id)
        )
        incident_id = await self.session.scalar(statement)
        if incident_id is None:
            existing = await self.get_active_by_service(service, for_update=True)
            if existing is None:  # the winner's incident ended in between; the caller retries
                raise IncidentsError(
                    f"could not open or join an incident for {service}; retry", service=service
                )
            return existing, False
        incident = await self.get(incident_id)
        await self.events.add(incident.id, "incident.opened", message, actor=actor, at=now)
        return incident, True

    async def add_alert(
        self,
        incident: Incident,
        *,
        fingerprint: str,
        starts_at: datetime,
        alertname: str,
        status: str,
        severity: str | None,
        labels: dict[str, Any],
        annotations: dict[str, Any],
        generator_url: str | None,
        received_at: datetime,
        ends_at: datetime | None = None,
    ) -> bool:
        """Record an alert on the incident; False when this fingerprint + startsAt was already recorded
        on it."""
        insert = _insert_for(self.session)
        statement = (
            insert(IncidentAlert)
            .values(
                incident_id=incident.id,
                fingerprint=fingerprint,
                starts_at=starts_at,
                alertname=alertname,
                status=status,
                severity=severity,
                labels=labels,
                annotations=annotations,
                generator_url=generator_url,
                received_at=received_at,
                ends_at=ends_at,
            )
            .on_conflict_do_nothing(index_elements=["fingerprint", "starts_at", "incident_id"])
            .returning(IncidentAlert.id)
        )
        inserted = await self.session.scalar(statement)
        return inserted is not None

    async def transition(
        self,
        incident: Incident,
        target: IncidentStatus,
        *,
        actor: str,
        message: str,
        now: datetime | None = None,
        data: dict[str, Any] | None = None,
        reason: str | None = None,
        by_human: bool = False,
    ) -> None:
        """Move the incident through the state machine, stamping times and writing the timeline."""
        status = check_transition(incident.status, target, incident_id=incident.id, by_human=by_human)
        now = now or utcnow()
        source = incident.status
        incident.status = status.value
        incident.updated_at = now
        if reason is not None:
            incident.status_reason = reason
        for column in _STAMPS.get(status, ()):
            if getattr(incident, column) is None:
                setattr(incident, column, now)
        if status is IncidentStatus.ANALYZING:
            incident.analysis_attempts += 1
        if status not in (IncidentStatus.ANALYZING,):
            incident.lease_owner = None
            incident.lease_expires_at = None
        event_data = {"from": source, "to": status.value, **(data or {})}
        await self.events.add(
            incident.id, f"status.{status.value}", message, actor=actor, data=event_data, at=now
        )

    async def take_analysis_lease(
        self, incident_id: int, *, owner: str, now: datetime, lease: timedelta
    ) -> Incident | None:
        """Claim an incident for analysis; None when someone else holds a live lease or it moved on."""
        result = await self.session.execute(
            update(Incident)
            .where(
                Incident.id == incident_id,
                or_(
                    Incident.status == IncidentStatus.OPEN.value,
                    and_(
                        Incident.status == IncidentStatus.ANALYZING.value,
                        or_(Incident.lease_expires_at.is_(None), Incident.lease_expires_at < now),
                    ),
                ),
            )
            .values(lease_owner=owner, lease_expires_at=now + lease)
            .returning(Incident),
            execution_options={"synchronize_session": False},
        )
        # The whole row in one round trip: this is on the path from webhook to queued action.
        return result.scalar_one_or_none()

    async def hand_back_analysis(
        self, incident_ids: Sequence[int], *, owner: str, now: datetime
    ) -> list[int]:
        """End `owner`'s analysis leases on these incidents now (it is stopping): the next sweep,
        any process's, analyses them again. Returns the ids whose lease was handed back."""
        result = await self.session.execute(
            update(Incident)
            .where(
                Incident.id.in_(list(incident_ids)),
                Incident.lease_owner == owner,
                Incident.status == IncidentStatus.ANALYZING.value,
            )
            .values(lease_expires_at=now)
            .returning(Incident.id),
            execution_options={"synchronize_session": False},
        )
        return list(result.scalars().all())


class ActionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, action_id: int, *, for_update: bool = False) -> Action:
        statement = select(Action).where(Action.id == action_id)
        if for_update:
            statement = statement.with_for_update()
        action = await self.session.scalar(statement)
        if action is None:
            raise ActionNotFound(action_id)
        return action

    async def list_for_incident(self, incident_id: int) -> Sequence[Action]:
        result = await self.session.scalars(
            select(Action).where(Action.incident_id == incident_id).order_by(Action.id)
        )
        return result.all()

    async def list_recent_for_service(self, service: str, *, since: datetime) -> Sequence[Action]:
        result = await self.session.scalars(
            select(Action)
            .where(Action.service == service, Action.created_at >= since)
            .order_by(Action.created_at.desc())
        )
        return result.all()

    async def count_automatic_since(self, since: datetime) -> int:
        """Automatic actions that were queued or ran since `since` (cancelled ones do not count)."""
        count = await self.session.scalar(
            select(func.count())
            .select_from(Action)
            .where(
                Action.manual.is_(False),
                Action.created_at >= since,
                Action.status != ActionStatus.CANCELLED.value,
            )
        )
        return int(count or 0)

    async def enqueue(
        self,
        *,
        service: str,
        request: ActionRequest,
        incident_id: int | None,
        manual: bool,
        requested_by: str,
        now: datetime | None = None,
    ) -> Action:
        now = now or utcnow()
        action = Action(
            incident_id=incident_id,
            service=service,
            type=request.type.value,
            params=request.to_params(),
            status=ActionStatus.QUEUED.value,
            phase=ActionPhase.PENDING.value,
            manual=manual,
            requested_by=requested_by,
            created_at=now,
            updated_at=now,
        )
        self.session.add(action)
        await self.session.flush()
        return action

    async def claim_next(self, *, owner: str, now: datetime, lease: timedelta) -> Action | None:
        """Claim the oldest runnable action: queued, or running with an expired lease (a crashed worker).

        At most one action runs per service: a queued action whose service has a live running action
        is skipped, and the partial unique index on running actions backs this up. On PostgreSQL
        `FOR UPDATE SKIP LOCKED` lets many workers claim concurrently without blocking each other.
        """
        running_services = select(Action.service).where(Action.status == ActionStatus.RUNNING.value)
        candidates = (
            select(Action)
            .where(
                or_(
                    and_(Action.status == ActionStatus.QUEUED.value, Action.service.not_in(running_services)),
                    and_(Action.status == ActionStatus.RUNNING.value, Action.lease_expires_at < now),
                )
            )
            .order_by(Action.created_at, Action.id)
            .limit(1)
        )
        if _dialect(self.session) == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        action = await self.session.scalar(candidates)
        if action is None:
            return None
        return await self._take(action, owner=owner, now=now, lease=lease)

    async def claim_by_id(
        self, action_id: int, *, owner: str, now: datetime, lease: timedelta
    ) -> Action | None:
        """Claim one given action if it is runnable (queued, or running with an expired lease)."""
        running_services = select(Action.service).where(Action.status == ActionStatus.RUNNING.value)
        statement = select(Action).where(
            Action.id == action_id,
            or_(
                and_(Action.status == ActionStatus.QUEUED.value, Action.service.not_in(running_services)),
                and_(Action.status == ActionStatus.RUNNING.value, Action.lease_expires_at < now),
            ),
        )
        if _dialect(self.session) == "postgresql":
            statement = statement.with_for_update(skip_locked=True)
        action = await self.session.scalar(statement)
        if action is None:
            return None
        return await self._take(action, owner=owner, now=now, lease=lease)

    async def _take(self, action: Action, *, owner: str, now: datetime, lease: timedelta) -> Action | None:
        try:
            async with self.session.begin_nested():
                action.status = ActionStatus.RUNNING.value
                action.lease_owner = owner
                action.lease_expires_at = now + lease
                action.attempts += 1
                if action.started_at is None:
                    action.started_at = now
                action.updated_at = now
                await self.session.flush()
        except IntegrityError:
            # Another worker started an action for this service in the meantime.
            await self.session.refresh(action)
            return None
        return action

    async def renew_lease(self, action: Action, *, owner: str, now: datetime, lease: timedelta) -> bool:
        """Extend the lease if this worker still holds it; False means another worker took over."""
        result = await self.session.execute(
            update(Action)
            .where(
                Action.id == action.id,
                Action.lease_owner == owner,
                Action.status == ActionStatus.RUNNING.value,
            )
            .values(lease_expires_at=now + lease, updated_at=now)
            .returning(Action.id)
        )
        renewed = result.scalar() is not None
        if renewed:
            action.lease_expires_at = now + lease
        return renewed

    async def hand_back(self, action_id: int, *, owner: str, now: datetime) -> Action | None:
        """End this worker's lease now, keeping the action running in its recorded phase, so the next
        claim (any worker's) continues it at once. None when the lease is not `owner`'s any more."""
        result = await self.session.execute(
            update(Action)
            .where(
                Action.id == action_id,
                Action.lease_owner == owner,
                Action.status == ActionStatus.RUNNING.value,
            )
            .values(lease_expires_at=now, updated_at=now)
            .returning(Action),
            execution_options={"synchronize_session": False},
        )
        return result.scalar_one_or_none()

    async def next_lease_expiry(self) -> datetime | None:
        """When the soonest lease of a running action ends (its action can be taken over then)."""
        return await self.session.scalar(
            select(func.min(Action.lease_expires_at)).where(Action.status == ActionStatus.RUNNING.value)
        )

    async def cancel_queued_for_incident(self, incident_id: int, *, now: datetime) -> int:
        """Cancel the incident's queued actions, skipping one a worker is claiming right now.

        Skipping locked rows keeps lock order one-way (a claiming worker locks action, then incident;
        this runs with the incident locked), so the two never deadlock. The worker then finds the
        incident closed and cancels the action itself.
        """
        queued = select(Action.id).where(
            Action.incident_id == incident_id, Action.status == ActionStatus.QUEUED.value
        )
        if _dialect(self.session) == "postgresql":
            queued = queued.with_for_update(skip_locked=True)
        result = await self.session.execute(
            update(Action)
            .where(Action.id.in_(queued))
            .values(status=ActionStatus.CANCELLED.value, finished_at=now, updated_at=now)
            .returning(Action.id)
        )
        return len(result.all())
