"""The incident state machine.

    open ──> analyzing ──> decided ──> queued ──> acting ──> verifying ──> resolved
      │          │            │  ├──> awaiting_approval ──> queued           └──> escalated
      │          │            │  ├──> suppressed                   acting ──> failed | escalated
      │          │            │  └──> escalated (a human must look: INVESTIGATE)
      └──────────┴────────────┴──> closed (the alert resolved before any action, or nothing to do)

`escalated` stays active for grouping (new alerts for the service join it, so a human gets one
incident, not a storm) until its alerts have resolved for a grace, or for at most a limit of time
(incidents/lifecycle.py); `resolved`, `failed` and `closed` are final.

Re-analysis: an `escalated`, `suppressed` or `awaiting_approval` incident goes back to `open` when the
world changes under it (a new revision takes traffic, traffic moves, a new alert joins, an approval
expires), and is analysed again on fresh evidence: each round is a line of its timeline.

A few transitions are a human's alone (`HUMAN_TRANSITIONS`): a manual command may queue an action on an
incident Remediator escalated or suppressed, or decide a fresh incident without analysis; a human may
escalate or close any active incident. The state machine refuses them to anything but a human, so
Remediator can never take a second automatic action.
"""

from __future__ import annotations

from enum import StrEnum

from incidents.exceptions import IllegalTransition


class IncidentStatus(StrEnum):
    OPEN = "open"
    ANALYZING = "analyzing"
    DECIDED = "decided"
    AWAITING_APPROVAL = "awaiting_approval"
    QUEUED = "queued"
    SUPPRESSED = "suppressed"
    ACTING = "acting"
    VERIFYING = "verifying"
    RESOLVED = "resolved"
    FAILED = "failed"
    ESCALATED = "escalated"
    CLOSED = "closed"


S = IncidentStatus

TRANSITIONS: dict[IncidentStatus, frozenset[IncidentStatus]] = {
    S.OPEN: frozenset({S.ANALYZING, S.CLOSED, S.FAILED}),
    # A restart re-enters `analyzing` for incidents left there (analyzing -> analyzing is a retry).
    S.ANALYZING: frozenset({S.ANALYZING, S.DECIDED, S.CLOSED, S.FAILED}),
    S.DECIDED: frozenset({S.AWAITING_APPROVAL, S.QUEUED, S.SUPPRESSED, S.ESCALATED, S.CLOSED}),
    S.AWAITING_APPROVAL: frozenset({S.QUEUED, S.CLOSED, S.ESCALATED, S.OPEN}),
    S.QUEUED: frozenset({S.ACTING, S.CLOSED, S.FAILED}),
    S.SUPPRESSED: frozenset({S.CLOSED, S.OPEN}),
    S.ACTING: frozenset({S.VERIFYING, S.FAILED, S.ESCALATED}),
    S.VERIFYING: frozenset({S.RESOLVED, S.ESCALATED}),
    S.ESCALATED: frozenset({S.CLOSED, S.OPEN}),
    S.RESOLVED: frozenset(),
    S.FAILED: frozenset(),
    S.CLOSED: frozenset(),
}

HUMAN_TRANSITIONS: frozenset[tuple[IncidentStatus, IncidentStatus]] = frozenset(
    {
        (S.OPEN, S.DECIDED),
        (S.ESCALATED, S.QUEUED),
        (S.SUPPRESSED, S.QUEUED),
        # A human takes any active incident out of Remediator's hands (incidents/handover.py).
        (S.OPEN, S.ESCALATED),
        (S.ANALYZING, S.ESCALATED),
        (S.QUEUED, S.ESCALATED),
        (S.SUPPRESSED, S.ESCALATED),
        (S.ACTING, S.CLOSED),
        (S.VERIFYING, S.CLOSED),
    }
)

FINAL_STATUSES: frozenset[IncidentStatus] = frozenset({S.RESOLVED, S.FAILED, S.CLOSED})
ACTIVE_STATUSES: frozenset[IncidentStatus] = frozenset(set(IncidentStatus) - FINAL_STATUSES)
# Statuses that wait on the world (or a human) and are analysed again when it changes under them.
REANALYSABLE_STATUSES: frozenset[IncidentStatus] = frozenset({S.ESCALATED, S.SUPPRESSED, S.AWAITING_APPROVAL})
# Statuses in which an action has been, or is being, applied to Cloud Run.
ACTED_STATUSES: frozenset[IncidentStatus] = frozenset({S.ACTING, S.VERIFYING, S.RESOLVED})


def check_transition(
    source: IncidentStatus | str,
    target: IncidentStatus | str,
    *,
    incident_id: int | None = None,
    by_human: bool = False,
) -> IncidentStatus:
    """Return `target` as a status when `source -> target` is allowed; raise `IllegalTransition`."""
    try:
        source_status, target_status = IncidentStatus(source), IncidentStatus(target)
    except ValueError:
        raise IllegalTransition(str(source), str(target), incident_id=incident_id) from None
    allowed = target_status in TRANSITIONS[source_status] or (
        by_human and (source_status, target_status) in HUMAN_TRANSITIONS
    )
    if not allowed:
        raise IllegalTransition(source_status, target_status, incident_id=incident_id)
    return target_status


class ActionStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ActionPhase(StrEnum):
    """Where a running action is, so a worker that takes over an expired lease knows what is left."""

    PENDING = "pending"  # nothing changed on Cloud Run yet
    APPLIED = "applied"  # the change is in place; verification has not started
    VERIFYING = "verifying"
    DONE = "done"
