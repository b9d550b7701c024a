"""A human's answer to an incident that waits for approval."""

from __future__ import annotations

from datetime import datetime

from analyzer.exceptions import Conflict
from analyzer.policy import describe
from analyzer.processing import queue_action
from incidents import Decision, IncidentContext, IncidentStatus
from incidents.db import Store
from incidents.repository import IncidentRepository


async def approve(store: Store, incident_id: int, *, by: str, comment: str | None, now: datetime) -> None:
    """Queue the waiting decision's action, as approved by `by`."""
    async with store.session() as session:
        incidents = IncidentRepository(session)
        incident = await incidents.get(incident_id, for_update=True)
        if incident.status != IncidentStatus.AWAITING_APPROVAL or not incident.decision:
            raise Conflict(
                f"incident {incident_id} is {incident.status}, not awaiting approval", incident_id=incident_id
            )
        decision = Decision.model_validate(incident.decision)
        context = IncidentContext.model_validate(incident.context) if incident.context else None
        actor = f"user:{by}"
        await incidents.events.add(
            incident_id,
            "approval.approved",
            f"{by} approved: {describe(decision)}" + (f" ({comment})" if comment else ""),
            actor=actor,
            at=now,
        )
        await queue_action(session, incident, context, decision, requested_by=actor, now=now)
        await incidents.transition(
            incident, IncidentStatus.QUEUED, actor=actor, message=f"approved by {by}", now=now
        )


async def reject(store: Store, incident_id: int, *, by: str, comment: str | None, now: datetime) -> None:
    """Close the incident without acting, recording who said no and why."""
    async with store.session() as session:
        incidents = IncidentRepository(session)
        incident = await incidents.get(incident_id, for_update=True)
        if incident.status != IncidentStatus.AWAITING_APPROVAL:
            raise Conflict(
                f"incident {incident_id} is {incident.status}, not awaiting approval", incident_id=incident_id
            )
        reason = f"rejected by {by}" + (f": {comment}" if comment else "")
        await incidents.transition(
            incident, IncidentStatus.CLOSED, actor=f"user:{by}", message=reason, now=now, reason=reason
        )
