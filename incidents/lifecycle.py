"""How incidents follow one another: recurrence, re-analysis, and the end of escalations.

    recurrence      an alert still firing (or firing again with the same identity) after Remediator
                    resolved its incident, once the verification grace has passed or the world has
                    changed since: a new incident, linked to the previous one, analysed afresh
    re-analysis     an escalated, suppressed or waiting incident goes back to `open` when the world
                    changes under it (a new revision takes traffic, traffic moves, a new alert joins,
                    an approval expires): one more analysis round on fresh evidence
    supersession    an incident escalated for longer than the hold limit no longer takes in new
                    alerts: it closes, and a new incident linked to it takes the new alert
    quiet end       an escalated incident whose alerts have all resolved closes after a grace

Every function takes the caller's session (or repository) and never commits: the caller owns the
transaction, as everywhere in the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from incidents.models import Incident, IncidentAlert, utcnow
from incidents.repository import ActionRepository, EventRepository, IncidentRepository
from incidents.states import (
    FINAL_STATUSES,
    REANALYSABLE_STATUSES,
    ActionStatus,
    IncidentStatus,
)

ACTOR = "lifecycle"


class Relation(StrEnum):
    """Why an incident follows another (`Incident.previous_relation`)."""

    RECURRED = "recurred_after_resolution"
    SUPERSEDED = "superseded_escalated"

    def describe(self) -> str:
        return {
            Relation.RECURRED: "recurred after resolution",
            Relation.SUPERSEDED: "took over from an incident escalated for too long",
        }[self]


class Trigger(StrEnum):
    """What started an analysis round after the first."""

    NEW_REVISION = "new_revision"  # a revision that did not serve took traffic
    TRAFFIC_MOVED = "traffic_moved"  # the split between serving revisions changed
    ALERT_JOINED = "alert_joined"  # an alert with a name the incident did not have
    ALERT_REFIRED = "alert_refired"  # an alert fired again after every alert had resolved
    APPROVAL_EXPIRED = "approval_expired"
    REQUESTED = "requested"  # anything else a caller names


# Triggers that bring a new fault, rather than more about the same one: the only ones that may lead
# to a second automatic action on an incident whose first did not recover it.
NEW_FAULT_TRIGGERS = frozenset({Trigger.NEW_REVISION})


@dataclass(frozen=True, kw_only=True)
class LifecycleConfig:
    # An alert still firing this long after Remediator verified recovery is a recurrence, not the
    # tail of the fault it fixed (the alert's window and keep_firing_for keep it firing for a while
    # after the errors stop: prometheus/README.md#after-a-fix).
    recurrence_grace: timedelta = timedelta(seconds=90)
    # An escalated incident whose alerts have all resolved closes after this.
    escalated_close_grace: timedelta = timedelta(minutes=2)
    # An escalated incident takes in new alerts for at most this long; after it, a new alert opens a
    # new incident (linked to it) and the escalated one closes.
    escalated_hold_limit: timedelta = timedelta(minutes=30)
    # The watcher: how often it reads the traffic of watched services, and how long a change must
    # hold before it is analysed (so the new revision has figures of its own to judge it by).
    watch_interval: float = 5.0
    change_settle: timedelta = timedelta(seconds=20)
    # Resolved incidents whose alert still fires are watched for a new deploy this long.
    watch_resolved_for: timedelta = timedelta(minutes=15)


# reading a round back


def evidence_summary(context: dict[str, Any] | None) -> dict[str, Any] | None:
    """The part of a stored context a round's timeline line keeps: what the decision saw."""
    if not context:
        return None
    metrics = context.get("metrics") or {}
    return {
        "observed_at": context.get("observed_at"),
        "service": {key: metrics.get(key) for key in ("request_rate_rps", "error_rate", "latency_p95_ms")},
        "revisions": [
            {
                "name": revision.get("name"),
                "created_at": revision.get("created_at"),
                "traffic_percent": revision.get("traffic_percent"),
                "ready": revision.get("ready"),
                "metrics": revision.get("metrics"),
            }
            for revision in context.get("revisions") or []
        ],
        "gaps": context.get("gaps") or [],
    }


def round_record(incident: Incident) -> dict[str, Any]:
    """One analysis round as the timeline keeps it: why it ran, what it saw, what it decided."""
    decision = incident.decision or {}
    return {
        "round": incident.analysis_round,
        "started_at": incident.round_started_at.isoformat() if incident.round_started_at else None,
        "reason": incident.round_reason,
        "evidence": evidence_summary(incident.context),
        "decision": {
            key: decision.get(key)
            for key in ("action", "target_revision", "scale", "confidence", "engine", "explanation")
        }
        if decision
        else None,
        "verdict": incident.policy_verdict,
        "policy_reason": incident.policy_reason,
        "status": incident.status,
    }


async def record_round(incidents: IncidentRepository, incident: Incident, *, now: datetime) -> None:
    """Write the incident's current round (evidence and decision) to its timeline."""
    record = round_record(incident)
    decision = record["decision"] or {}
    await incidents.events.add(
        incident.id,
        "analysis.round",
        f"analysis round {incident.analysis_round}: {decision.get('action') or 'no decision'}"
        + (f" ({incident.policy_verdict})" if incident.policy_verdict else "")
        + (f" after {incident.round_reason}" if incident.round_reason else ""),
        actor="analyzer",
        data=record,
        at=now,
    )


# the fault an action answers


async def fault_record(session: AsyncSession, incident: Incident) -> dict[str, Any]:
    """The fault the incident's current round is about, as an action decided in it records it: its
    onset, when Remediator learned of it (the alert, or the change that started the round) and when
    the round decided. MTTR is measured for this fault alone (actuator/mttr.py)."""
    decided = await EventRepository(session).last_at(incident.id, "status.decided") or incident.decided_at
    detected = incident.round_started_at or incident.detected_at

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "round": incident.analysis_round,
        "fault_started_at": iso(incident.fault_started_at),
        "fault_started_source": incident.fault_started_source,
        "detected_at": iso(detected),
        "decided_at": iso(decided),
    }


# re-analysis


async def request_reanalysis(
    session: AsyncSession,
    incident_id: int,
    reason: str,
    *,
    trigger: Trigger = Trigger.REQUESTED,
    actor: str = ACTOR,
    now: datetime | None = None,
    data: dict[str, Any] | None = None,
    same_fault: bool = False,
) -> bool:
    """Send an escalated, suppressed or waiting incident back to analysis, with `reason` on its
    timeline. False (and nothing changed) when its status is not one that waits on the world.

    A round is about a new fault by default: it starts now, and the deploy blame and the baseline are
    read from its start (analyzer/processing/rounds.py). With `same_fault` (an approval that expired:
    nothing changed but the time) the round reads the fault the previous round decided on, with fresh
    figures, from the same start.

    The caller commits, then wakes the analysis pool (`IncidentProcessor.notify`), or lets the pool's
    sweep find the incident within its interval. An incident whose automatic action did not recover
    the service is analysed again only for a new fault (`NEW_FAULT_TRIGGERS`): for anything else a
    human already owns it, and the change is only written to its timeline.
    """
    now = now or utcnow()
    incidents = IncidentRepository(session)
    incident = await incidents.get(incident_id, for_update=True)
    if IncidentStatus(incident.status) not in REANALYSABLE_STATUSES:
        return False
    if trigger not in NEW_FAULT_TRIGGERS and await _automatic_action_failed(session, incident):
        await incidents.events.add(
            incident.id,
            "world.changed",
            f"{reason}; not analysed again: an automatic action already failed to recover this "
            "incident and a human owns it",
            actor=actor,
            data={"trigger": trigger.value, **(data or {})},
            at=now,
        )
        return False
    if incident.analysis_round == 1:
        # The first round's evidence is about to be replaced: keep it on the timeline.
        await record_round(incidents, incident, now=now)
    if not same_fault:
        # The previous round decided when the incident entered the status it waits in; a fault that
        # began before then was that round's to see.
        incident.fault_not_before = incident.updated_at
        incident.round_started_at = now
    incident.analysis_round += 1
    incident.round_reason = reason
    incident.analysis_attempts = 0
    await incidents.events.add(
        incident.id,
        "analysis.requested",
        f"analysis round {incident.analysis_round}: {reason}",
        actor=actor,
        data={"round": incident.analysis_round, "trigger": trigger.value, **(data or {})},
        at=now,
    )
    await incidents.transition(
        incident,
        IncidentStatus.OPEN,
        actor=actor,
        message=f"analysing again: {reason}",
        now=now,
        data={"round": incident.analysis_round},
    )
    return True


async def _automatic_action_failed(session: AsyncSession, incident: Incident) -> bool:
    """An automatic action of this incident was applied and did not verify."""
    for action in await ActionRepository(session).list_for_incident(incident.id):
        if action.manual or action.status == ActionStatus.CANCELLED.value:
            continue
        verified = (action.result or {}).get("verified")
        if action.status == ActionStatus.FAILED.value or verified is False:
            return True
    return False


# recurrence and supersession


def recurrence_due(previous: Incident, *, now: datetime, grace: timedelta) -> bool:
    """An alert of `previous` still firing now is a recurrence: Remediator resolved it, and the
    grace after the verified recovery has passed."""
    if previous.status != IncidentStatus.RESOLVED:
        return False
    recovered = previous.verified_at or previous.resolved_at
    return recovered is not None and now - recovered >= grace


async def open_following(
    incidents: IncidentRepository,
    previous: Incident,
    alerts: Sequence[IncidentAlert],
    *,
    relation: Relation,
    reason: str,
    now: datetime,
    actor: str = ACTOR,
) -> tuple[Incident, bool]:
    """Open a new incident for `previous`'s service that follows it, with copies of `alerts` (still
    firing), and note the link on both timelines. Returns (incident, opened): when the service
    already has an active incident the alerts join that one instead (opened False)."""
    first = alerts[0] if alerts else None
    name = first.alertname if first is not None else "an alert"
    incident, opened = await incidents.open(
        previous.service,
        now=now,
        severity=first.severity if first is not None else previous.severity,
        summary=(first.annotations or {}).get("summary") if first is not None else previous.summary,
        alert_fired_at=now,
        actor=actor,
        message=f"{name} for {previous.service}: {relation.describe()} (incident {previous.id}): {reason}",
    )
    for alert in alerts:
        await incidents.add_alert(
            incident,
            fingerprint=alert.fingerprint,
            starts_at=alert.starts_at,
            alertname=alert.alertname,
            status="firing",
            severity=alert.severity,
            labels=alert.labels,
            annotations=alert.annotations,
            generator_url=alert.generator_url,
            received_at=now,
        )
    if not opened:
        return incident, False
    incident.previous_incident_id = previous.id
    incident.previous_relation = relation.value
    incident.round_started_at = now
    incident.round_reason = reason
    incident.fault_not_before = previous.verified_at or previous.resolved_at
    await incidents.events.add(
        previous.id,
        "incident.followed",
        f"incident {incident.id} {relation.describe()}: {reason}",
        actor=actor,
        data={"incident_id": incident.id, "relation": relation.value},
        at=now,
    )
    return incident, True


async def supersede_escalated(
    incidents: IncidentRepository, escalated: Incident, *, now: datetime, reason: str, actor: str = ACTOR
) -> None:
    """Close an incident escalated for longer than the hold limit, so that a new one can open."""
    await incidents.transition(
        escalated,
        IncidentStatus.CLOSED,
        actor=actor,
        message=f"closed: {reason}",
        now=now,
        reason=reason,
        data={"superseded": True},
    )


def held_too_long(incident: Incident, *, now: datetime, limit: timedelta) -> bool:
    """An escalated incident that has waited on a human for longer than `limit` (since it last
    changed status) no longer takes in new alerts."""
    return incident.status == IncidentStatus.ESCALATED and now - incident.updated_at >= limit


async def close_quiet_escalations(
    incidents: IncidentRepository, *, now: datetime, grace: timedelta, limit: int = 50
) -> list[int]:
    """Close escalated incidents whose alerts have all resolved at least `grace` ago."""
    closed = []
    for incident in await incidents.list_quiet_escalations(resolved_before=now - grace, limit=limit):
        incident = await incidents.get(incident.id, for_update=True)
        if incident.status != IncidentStatus.ESCALATED or await incidents.count_firing_alerts(incident.id):
            continue
        reason = f"every alert resolved, and stayed resolved for {int(grace.total_seconds())}s"
        await incidents.transition(
            incident, IncidentStatus.CLOSED, actor=ACTOR, message=reason, now=now, reason=reason
        )
        closed.append(incident.id)
    return closed


def is_final(incident: Incident) -> bool:
    return IncidentStatus(incident.status) in FINAL_STATUSES
