"""Incidents in any status of the state machine, with an action in any status, for tests."""

from __future__ import annotations

from datetime import timedelta

from incidents import (
    ActionRepository,
    ActionStatus,
    IncidentRepository,
    IncidentStatus,
    RollbackAction,
    Store,
    database_now,
)

S = IncidentStatus
# The way there through the state machine.
PATHS: dict[IncidentStatus, list[IncidentStatus]] = {
    S.OPEN: [],
    S.ANALYZING: [S.ANALYZING],
    S.DECIDED: [S.ANALYZING, S.DECIDED],
    S.AWAITING_APPROVAL: [S.ANALYZING, S.DECIDED, S.AWAITING_APPROVAL],
    S.SUPPRESSED: [S.ANALYZING, S.DECIDED, S.SUPPRESSED],
    S.QUEUED: [S.ANALYZING, S.DECIDED, S.QUEUED],
    S.ACTING: [S.ANALYZING, S.DECIDED, S.QUEUED, S.ACTING],
    S.VERIFYING: [S.ANALYZING, S.DECIDED, S.QUEUED, S.ACTING, S.VERIFYING],
    S.ESCALATED: [S.ANALYZING, S.DECIDED, S.ESCALATED],
    S.RESOLVED: [S.ANALYZING, S.DECIDED, S.QUEUED, S.ACTING, S.VERIFYING, S.RESOLVED],
    S.FAILED: [S.ANALYZING, S.FAILED],
    S.CLOSED: [S.CLOSED],
}


async def incident_in(
    store: Store,
    status: IncidentStatus,
    *,
    action: ActionStatus | None = None,
    lease_ended_ago: timedelta | None = None,
    service: str = "checkout",
) -> tuple[int, int | None]:
    """An incident in `status`, with one action in `action` (running: its lease ended
    `lease_ended_ago` ago, or lasts 30 s more when None)."""
    async with store.session() as session:
        now = await database_now(session)
        incidents = IncidentRepository(session)
        incident, _ = await incidents.open(service, now=now, actor="test", message="opened")
        for step in PATHS[status]:
            await incidents.transition(incident, step, actor="test", message=step.value, now=now)
        action_id = None
        if action is not None:
            row = await ActionRepository(session).enqueue(
                service=service,
                request=RollbackAction(target_revision=f"{service}-00001-ok"),
                incident_id=incident.id,
                manual=False,
                requested_by="test",
                now=now,
            )
            row.status = action.value
            if action is ActionStatus.RUNNING:
                row.lease_owner = "actuator-x/abc"
                row.lease_expires_at = (
                    now - lease_ended_ago if lease_ended_ago else now + timedelta(seconds=30)
                )
            action_id = row.id
        return incident.id, action_id
