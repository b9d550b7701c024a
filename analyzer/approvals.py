"""A human's answer to an incident that waits for approval, and approvals nobody gave in time.

An approval must still be true when it is given:

- it expires: an incident left waiting longer than `ApprovalRules.ttl` (REMEDIATOR_APPROVAL_TTL_SECONDS,
  30 minutes by default) is taken off the wait, announced as `approval_expired`, by the sweep
  (`expire_overdue_approvals`) or by the late approval itself, which is refused (409, with the
  reason). What was true half an hour into an incident is not evidence now, so the first expiry of
  an incident sends it back to analysis on fresh evidence (the fault may be gone, or a deploy may
  have changed it; a decision that still needs a human asks again). One fresh look only: an
  incident whose approval has expired before moves to `escalated` with the reason "approval
  expired", and so does one that cannot be analysed again (its automatic action failed).
- it is checked against Cloud Run as it is now, before anything changes: the service's generation
  must be the one the decision was made on (`IncidentContext.service.generation`: any deploy, traffic
  or scaling change since makes the decision stale), and a rollback's target revision must still
  exist and be ready. A stale approval is refused (409, with the reason) and changes nothing; when
  Cloud Run cannot be read the answer is 503 and nothing changes either (less evidence never means
  more action).

Cloud Run is read with no transaction open; the approval is then recorded in one transaction that
locks the incident and checks again that it still waits, since the same moment (a colleague's click
or the sweep may have answered in between). Between that check and the actuator's update, the
update itself carries the service's etag (actuator/cloudrun.py), so a change made in that gap is not
overwritten either.

The HTTP API and the Slack Approve button both come here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from aiohttp import web

from analyzer.config import DEFAULT_APPROVAL_TTL
from analyzer.exceptions import ApprovalRefused, CloudRunUnavailable, Conflict
from analyzer.metrics import AnalyzerMetrics
from analyzer.processing import queue_action
from collector import ServiceState, SourceResult
from incidents import (
    ActionType,
    Decision,
    Incident,
    IncidentContext,
    IncidentRepository,
    IncidentStatus,
    Store,
    Trigger,
    database_now,
    describe_decision,
    format_rfc3339,
    request_reanalysis,
    utcnow,
)
from incidents.outbox import OutboxRepository

log = logging.getLogger("analyzer.approvals")

ACTOR = "analyzer"
EXPIRED_KIND = "approval.expired"


@runtime_checkable
class ServiceStates(Protocol):
    """Cloud Run as it is now (the collector's `ContextBuilder` is one)."""

    async def service_state(self, service: str) -> SourceResult[ServiceState]: ...


@dataclass(frozen=True, kw_only=True)
class ApprovalRules:
    """What an approval is checked against when it is given."""

    ttl: timedelta = DEFAULT_APPROVAL_TTL
    # None: Cloud Run cannot be read here, so no approval can be checked (each is refused, 503).
    cloud_run: ServiceStates | None = None


def _duration(delta: timedelta) -> str:
    minutes, seconds = divmod(int(delta.total_seconds()), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _not_waiting(incident: Incident) -> Conflict:
    why = f" ({incident.status_reason})" if incident.status_reason else ""
    return Conflict(
        f"incident {incident.id} is {incident.status}{why}, not awaiting approval", incident_id=incident.id
    )


@dataclass(frozen=True, kw_only=True)
class _Waiting:
    """An incident awaiting approval, as read before Cloud Run is."""

    incident_id: int
    service: str
    since: datetime | None  # None only for rows older than the timeline's awaiting_approval line
    decision: Decision
    context: IncidentContext | None


async def _read_waiting(
    incidents: IncidentRepository, incident_id: int, *, for_update: bool
) -> tuple[Incident, _Waiting]:
    incident = await incidents.get(incident_id, for_update=for_update)
    if incident.status != IncidentStatus.AWAITING_APPROVAL or not incident.decision:
        raise _not_waiting(incident)
    since = await incidents.awaiting_approval_since(incident_id) or incident.decided_at
    return incident, _Waiting(
        incident_id=incident_id,
        service=incident.service,
        since=since,
        decision=Decision.model_validate(incident.decision),
        context=IncidentContext.model_validate(incident.context) if incident.context else None,
    )


async def approve(
    store: Store,
    incident_id: int,
    *,
    by: str,
    comment: str | None,
    now: datetime,
    rules: ApprovalRules,
    actor: str | None = None,
) -> None:
    """Queue the waiting decision's action, as approved by `by` (`actor` on the timeline: `user:<by>`
    unless the caller knows better, e.g. `slack:<user id>`), once the approval has been checked.

    Raises `Conflict` when the incident does not wait (any more), `ApprovalRefused` when the approval
    expired (the incident is taken off its wait then, if the sweep had not done it yet) or is stale, and
    `CloudRunUnavailable` when Cloud Run cannot be read to check it.
    """
    async with store.session() as session:
        _, waiting = await _read_waiting(IncidentRepository(session), incident_id, for_update=False)
    if waiting.since is not None and now - waiting.since >= rules.ttl:
        moved = await _expire_if_waiting(store, incident_id, ttl=rules.ttl, now=now)
        if moved is None:
            # Answered, or expired by a sweep, in between: say where it stands now.
            async with store.session() as session:
                raise _not_waiting(await IncidentRepository(session).get(incident_id))
        where = (
            "it is being analysed again on fresh evidence"
            if moved is IncidentStatus.OPEN
            else "it is escalated"
        )
        raise ApprovalRefused(
            f"approval expired: incident {incident_id} waited {_duration(now - waiting.since)} for approval, "
            f"longer than {_duration(rules.ttl)} (REMEDIATOR_APPROVAL_TTL_SECONDS); {where}, and nothing "
            "was changed",
            outcome="expired",
            incident_id=incident_id,
        )
    problem = await stale_problem(rules.cloud_run, waiting)
    if problem is not None:
        log.warning(
            "approval refused: %s",
            problem,
            extra={"incident_id": incident_id, "service": waiting.service, "by": by},
        )
        raise ApprovalRefused(
            f"approval refused, nothing changed: {problem}", outcome="stale", incident_id=incident_id
        )
    actor = actor or f"user:{by}"
    async with store.session() as session:
        incidents = IncidentRepository(session)
        incident, locked = await _read_waiting(incidents, incident_id, for_update=True)
        if locked.since != waiting.since:  # decided again while Cloud Run was read: check that one
            raise Conflict(
                f"incident {incident_id} was decided again while its approval was checked; approve again",
                incident_id=incident_id,
            )
        await incidents.events.add(
            incident_id,
            "approval.approved",
            f"{by} approved: {describe_decision(locked.decision)}" + (f" ({comment})" if comment else ""),
            actor=actor,
            at=now,
            data={"by": by, "comment": comment},
        )
        # An approved action is an automatic one for the cooldown and the hourly cap: stamped on the
        # database's clock like the analyzer's own (processing/pipeline.py).
        await queue_action(
            store,
            session,
            incident,
            locked.context,
            locked.decision,
            requested_by=actor,
            now=await database_now(session),
        )
        await incidents.transition(
            incident, IncidentStatus.QUEUED, actor=actor, message=f"approved by {by}", now=now
        )


async def stale_problem(cloud_run: ServiceStates | None, waiting: _Waiting) -> str | None:
    """Why the waiting decision no longer fits Cloud Run as it is now, or None when it still does."""
    service = waiting.service
    then = waiting.context.service.generation if waiting.context is not None else None
    if then is None:
        return (
            f"the generation of {service} when the decision was made is unknown (Cloud Run was not read "
            "then), so whether it changed since cannot be told"
        )
    if cloud_run is None:
        raise CloudRunUnavailable(
            "Cloud Run cannot be read here to check the approval against the service as it is now; "
            "nothing changed",
            service=service,
            incident_id=waiting.incident_id,
        )
    state = await cloud_run.service_state(service)
    if state.value is None:
        raise CloudRunUnavailable(
            f"Cloud Run could not be read to check the approval ({state.gap}); nothing changed, try again",
            service=service,
            incident_id=waiting.incident_id,
        )
    current = state.value
    if current.generation != then:
        return (
            f"{service} changed since the decision (generation {then} then, {current.generation} now: a "
            "deploy, a traffic or a scaling change); the decision was made on a service that is no longer "
            "there"
        )
    decision = waiting.decision
    if decision.action is ActionType.ROLLBACK:
        target = decision.target_revision
        revision = next((r for r in current.revisions if r.name == target), None)
        if revision is None:
            return f"rollback target {target} no longer exists"
        if not revision.ready:
            return f"rollback target {target} is not ready"
    return None


async def reject(
    store: Store,
    incident_id: int,
    *,
    by: str,
    comment: str | None,
    now: datetime,
    actor: str | None = None,
) -> None:
    """Close the incident without acting, recording who said no and why. Saying no needs no check:
    nothing changes on Cloud Run, whatever it looks like now."""
    async with store.session() as session:
        incidents = IncidentRepository(session)
        incident = await incidents.get(incident_id, for_update=True)
        if incident.status != IncidentStatus.AWAITING_APPROVAL:
            raise _not_waiting(incident)
        reason = f"rejected by {by}" + (f": {comment}" if comment else "")
        actor = actor or f"user:{by}"
        await incidents.events.add(
            incident_id, "approval.rejected", reason, actor=actor, at=now, data={"by": by, "comment": comment}
        )
        await incidents.transition(
            incident, IncidentStatus.CLOSED, actor=actor, message=reason, now=now, reason=reason
        )


async def answer(
    store: Store,
    incident_id: int,
    *,
    approved: bool,
    by: str,
    comment: str | None,
    now: datetime,
    rules: ApprovalRules,
    metrics: AnalyzerMetrics,
    wake: Callable[[list[int]], None],
    actor: str | None = None,
) -> None:
    """Approve or reject, as the HTTP API or a Slack button asks, counting the outcome. `wake` queues
    an incident for analysis: one whose approval this answer found expired is analysed again now,
    not at the pool's next sweep."""
    try:
        if approved:
            await approve(store, incident_id, by=by, comment=comment, now=now, rules=rules, actor=actor)
        else:
            await reject(store, incident_id, by=by, comment=comment, now=now, actor=actor)
    except ApprovalRefused as exc:
        metrics.approvals.labels(exc.outcome).inc()
        if exc.outcome == "expired":
            wake([incident_id])
        raise
    except CloudRunUnavailable:
        metrics.approvals.labels("unchecked").inc()
        raise
    metrics.approvals.labels("approved" if approved else "rejected").inc()


# approvals nobody gave in time


async def _expire_if_waiting(
    store: Store, incident_id: int, *, ttl: timedelta, now: datetime
) -> IncidentStatus | None:
    """Take the incident off its wait if it still waits and has waited `ttl`: back to analysis the
    first time (OPEN), escalated after that. The status it moved to, or None when it did not move
    (another replica's sweep, or an answer, may have come first)."""
    async with store.session() as session:
        incidents = IncidentRepository(session)
        incident = await incidents.get(incident_id, for_update=True)
        if incident.status != IncidentStatus.AWAITING_APPROVAL:
            return None
        since = await incidents.awaiting_approval_since(incident_id) or incident.decided_at or now
        waited = now - since
        if waited < ttl:
            return None
        expired_before = any(
            event.kind == EXPIRED_KIND for event in await incidents.events.list_for_incident(incident_id)
        )
        decision = Decision.model_validate(incident.decision) if incident.decision else None
        proposed = describe_decision(decision) if decision is not None else "the proposed action"
        await incidents.events.add(
            incident_id,
            EXPIRED_KIND,
            f"no answer within {_duration(ttl)}: the approval to {proposed} expired",
            actor=ACTOR,
            at=now,
            data={"waiting_since": format_rfc3339(since), "ttl_seconds": ttl.total_seconds()},
        )
        moved = IncidentStatus.ESCALATED
        if not expired_before and await request_reanalysis(
            session,
            incident_id,
            f"approval expired: nobody answered within {_duration(ttl)} (the decision was to "
            f"{proposed}); analysing again on fresh evidence",
            trigger=Trigger.APPROVAL_EXPIRED,
            actor=ACTOR,
            now=now,
            same_fault=True,
        ):
            moved = IncidentStatus.OPEN
        else:
            reason = (
                f"approval expired: nobody approved within {_duration(ttl)} (waiting since "
                f"{format_rfc3339(since)}), so nothing was done (the decision was to {proposed}); "
                "a human must look"
            )
            await incidents.transition(
                incident, IncidentStatus.ESCALATED, actor=ACTOR, message=reason, now=now, reason=reason
            )
    log.warning(
        "approval expired",
        extra={
            "incident_id": incident_id,
            "waited_seconds": round(waited.total_seconds(), 1),
            "status": moved.value,
        },
    )
    return moved


async def expire_overdue_approvals(store: Store, *, ttl: timedelta, now: datetime) -> list[int]:
    """Take every incident that has waited for approval `ttl` or longer off its wait (see
    `_expire_if_waiting`); the ids that expired."""
    async with store.session() as session:
        waiting = await OutboxRepository(session).list_awaiting_approval()
    expired = []
    for incident_id, since in waiting:
        if now - since >= ttl and await _expire_if_waiting(store, incident_id, ttl=ttl, now=now) is not None:
            expired.append(incident_id)
    return expired


def approval_expiry_context(
    store: Callable[[web.Application], Store],
    *,
    ttl: timedelta,
    interval: float,
    on_expired: Callable[[int], None] | None = None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx running `expire_overdue_approvals` every `interval` seconds while the app runs.
    Every replica may run it: each expiry locks its incident and checks again that it still waits."""

    async def sweep(app: web.Application) -> None:
        while True:
            try:
                for incident_id in await expire_overdue_approvals(store(app), ttl=ttl, now=utcnow()):
                    if on_expired is not None:
                        on_expired(incident_id)
            except Exception:
                log.exception("approval expiry sweep failed; retrying")
            await asyncio.sleep(interval)

    async def run(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(sweep(app), name="approval-expiry")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return run
