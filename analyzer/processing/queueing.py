"""A decision's action, handed to the actuator through the work queue (incidents/queue.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from incidents import Action, Decision, Incident, IncidentContext, Store, enqueue_action


async def queue_action(
    store: Store,
    session: AsyncSession,
    incident: Incident,
    context: IncidentContext | None,
    decision: Decision,
    *,
    requested_by: str,
    now: datetime,
) -> Action:
    """Queue the action a decision calls for, in the caller's transaction, and wake the actuator."""
    failing = context.newest_serving_revision() if context is not None else None
    request = decision.action_request(from_revision=failing.name if failing is not None else None)
    return await enqueue_action(store, session, incident, request, requested_by=requested_by, now=now)
