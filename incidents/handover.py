"""Handing an incident to a human: incidents nobody works on any more, and a human taking one over.

    await escalate_unattended(store, stale_after=UNATTENDED_AFTER)
        the sweep: an incident `queued`, `acting` or `verifying` whose every action ended (or whose
        running action's lease ended long ago, so no worker is alive to take it over) can never move
        on its own. It escalates (`queued`, where nothing was applied: fails), with the reason on
        the timeline, and a stale running action is cancelled.
    await take_over(store, incident_id, to=IncidentStatus.ESCALATED | CLOSED, by=..., reason=...)
        a human escalates (a human must look; new alerts keep joining it) or closes (it is over) any
        active incident. Queued and running actions are cancelled: a worker in the middle of one
        finds its lease gone at its next renewal or write and stops (a Cloud Run change already
        sent may still land; the timeline says so).

Lock order is the workers' own (incidents/queue.py, actuator/worker.py): the incident's actions,
then the incident, so neither ever waits for the other in a cycle.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from incidents.clock import database_now
from incidents.db import Store
from incidents.exceptions import HandoverRefused
from incidents.models import Action, Incident
from incidents.repository import IncidentRepository
from incidents.states import FINAL_STATUSES, ActionStatus, IncidentStatus

log = logging.getLogger(__name__)

# Statuses only a worker moves an incident out of: with no action left to work on, it is stuck.
UNATTENDED_STATUSES: Final = (IncidentStatus.QUEUED, IncidentStatus.ACTING, IncidentStatus.VERIFYING)
# How long a running action may sit with its lease ended before nobody is taken to be alive to take it
# over. A live actuator takes it over the moment the lease ends (seconds); this is for none at all.
UNATTENDED_AFTER: Final = timedelta(minutes=2)
SWEEP_ACTOR: Final = "sweep"


async def _lock_actions(session: AsyncSession, incident_id: int) -> list[Action]:
    result = await session.scalars(
        select(Action).where(Action.incident_id == incident_id).order_by(Action.id).with_for_update()
    )
    return list(result.all())


def _live(action: Action, *, stale_before: datetime) -> bool:
    if action.status == ActionStatus.QUEUED.value:
        return True
    return (
        action.status == ActionStatus.RUNNING.value
        and action.lease_expires_at is not None
        and action.lease_expires_at >= stale_before
    )


def _cancel(action: Action, *, now: datetime, why: str) -> None:
    action.status = ActionStatus.CANCELLED.value
    action.error = why
    action.finished_at = now
    action.updated_at = now
    action.lease_owner = None


def _describe(actions: Sequence[Action]) -> str:
    if not actions:
        return "it has no action"
    return ", ".join(f"action {a.id} {a.status}" + (f" ({a.error})" if a.error else "") for a in actions)


async def escalate_unattended(
    store: Store, *, stale_after: timedelta = UNATTENDED_AFTER, limit: int = 50
) -> list[int]:
    """Escalate (or fail) the incidents no worker can move any more; returns their ids."""
    async with store.session() as session:
        now = await database_now(session)
        candidates = await IncidentRepository(session).list_unattended(
            statuses=[s.value for s in UNATTENDED_STATUSES], stale_before=now - stale_after, limit=limit
        )
    moved = []
    for incident_id in candidates:
        async with store.session() as session:
            now = await database_now(session)
            stale_before = now - stale_after
            actions = await _lock_actions(session, incident_id)
            incidents = IncidentRepository(session)
            incident = await incidents.get(incident_id, for_update=True)
            status = IncidentStatus(incident.status)
            if status not in UNATTENDED_STATUSES or any(_live(a, stale_before=stale_before) for a in actions):
                continue  # a worker moved it, or took the action over, since the first look
            stale = [a for a in actions if a.status == ActionStatus.RUNNING.value]
            reason = (
                f"nobody is working on it: {_describe(actions)}"
                if not stale
                else f"nobody is working on it: no worker renewed the lease of action "
                f"{', '.join(str(a.id) for a in stale)} for {int(stale_after.total_seconds())}s"
            )
            for action in stale:
                _cancel(
                    action, now=now, why=f"cancelled by the sweep: its lease ended over {stale_after} ago"
                )
            await _move(incidents, incident, reason=reason, now=now)
            moved.append(incident_id)
        log.warning(
            "incident escalated: %s", reason, extra={"incident_id": incident_id, "service": incident.service}
        )
    return moved


async def _move(incidents: IncidentRepository, incident: Incident, *, reason: str, now: datetime) -> None:
    await incidents.events.add(incident.id, "sweep.unattended", reason, actor=SWEEP_ACTOR, at=now)
    if incident.status == IncidentStatus.QUEUED:  # nothing was applied: it failed to start
        target, tail = IncidentStatus.FAILED, "no action ran"
    else:
        target, tail = IncidentStatus.ESCALATED, "no further automatic action; a human must look"
    message = f"{reason}; {tail}"
    await incidents.transition(incident, target, actor=SWEEP_ACTOR, message=message, now=now, reason=message)


async def take_over(
    store: Store, incident_id: int, *, to: IncidentStatus, by: str, reason: str, actor: str | None = None
) -> IncidentStatus:
    """A human escalates or closes the incident, cancelling its queued and running actions.

    Raises IncidentNotFound, or HandoverRefused when it ended already (or is escalated already and
    `to` is escalated). Returns the status it was in.
    """
    if to not in (IncidentStatus.ESCALATED, IncidentStatus.CLOSED):
        raise ValueError(f"a human escalates or closes an incident, not {to.value}")
    actor = actor or f"user:{by}"
    verb = "escalated" if to is IncidentStatus.ESCALATED else "closed"
    async with store.session() as session:
        now = await database_now(session)
        actions = await _lock_actions(session, incident_id)
        incidents = IncidentRepository(session)
        incident = await incidents.get(incident_id, for_update=True)
        source = IncidentStatus(incident.status)
        if source in FINAL_STATUSES:
            raise HandoverRefused(
                f"incident {incident_id} is {source.value}: it has ended, there is nothing to take over",
                source=source.value,
                target=to.value,
                incident_id=incident_id,
            )
        if source is to:
            raise HandoverRefused(
                f"incident {incident_id} is {source.value} already",
                source=source.value,
                target=to.value,
                incident_id=incident_id,
            )
        message = f"{verb} by {by}: {reason}"
        for action in actions:
            if action.status not in (ActionStatus.QUEUED.value, ActionStatus.RUNNING.value):
                continue
            running = action.status == ActionStatus.RUNNING.value
            _cancel(action, now=now, why=f"cancelled: the incident was {message}")
            await incidents.events.add(
                incident_id,
                "action.cancelled",
                f"action {action.id} cancelled: the incident was {verb} by {by}"
                + (
                    f" while the action was {action.phase}; a Cloud Run change already sent may still land"
                    if running
                    else ""
                ),
                actor=actor,
                at=now,
                data={"action_id": action.id, "phase": action.phase},
            )
        await incidents.transition(
            incident, to, actor=actor, message=message, now=now, reason=message, by_human=True
        )
    log.info(
        "incident %s by a human",
        verb,
        extra={"incident_id": incident_id, "service": incident.service, "by": by, "from": source.value},
    )
    return source
