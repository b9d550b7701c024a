"""JSON views of incidents for the HTTP API (and the CLI, which prints the same documents)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from incidents import Action, Incident, IncidentAlert, IncidentEvent, format_rfc3339
from incidents.lifecycle import Relation, round_record
from incidents.models import NotificationDelivery
from incidents.outbox import DeliveryStatus


def _time(value: datetime | None) -> str | None:
    return format_rfc3339(value) if value is not None else None


def incident_summary(incident: Incident, alerts: Sequence[IncidentAlert]) -> dict[str, Any]:
    decision = incident.decision or {}
    return {
        "id": incident.id,
        "service": incident.service,
        "status": incident.status,
        "status_reason": incident.status_reason,
        "origin": incident.origin,
        "severity": incident.severity,
        "summary": incident.summary,
        "alert_names": sorted({alert.alertname for alert in alerts}),
        "detected_at": _time(incident.detected_at),
        "resolved_at": _time(incident.resolved_at),
        "mttr_seconds": incident.mttr_seconds,
        "error_rate": incident.error_rate,
        "engine": incident.engine,
        "confidence": incident.confidence,
        "recommendation": {
            "action": decision.get("action"),
            "target_revision": decision.get("target_revision"),
            "scale": decision.get("scale"),
            "confidence": decision.get("confidence"),
            "explanation": decision.get("explanation"),
        }
        if decision
        else None,
        "policy": {"verdict": incident.policy_verdict, "reason": incident.policy_reason}
        if incident.policy_verdict
        else None,
        "previous_incident": _link(incident.previous_incident_id, incident.previous_relation),
        "analysis_round": incident.analysis_round,
    }


def _link(incident_id: int | None, relation: str | None) -> dict[str, Any] | None:
    """A link to another incident, with the relation as a code and in words."""
    if incident_id is None:
        return None
    try:
        described = Relation(relation).describe() if relation else None
    except ValueError:
        described = relation
    return {"id": incident_id, "relation": relation, "description": described}


def faults_view(
    incident: Incident, actions: Sequence[Action], events: Sequence[IncidentEvent]
) -> list[dict[str, Any]]:
    """The faults the incident spans, one per analysis round: why the round ran, what it decided,
    and, for the action decided in it, that fault's onset and MTTR (actuator/mttr.py)."""
    rounds = [dict(event.data or {}) for event in events if event.kind == "analysis.round"]
    recorded = {entry.get("round") for entry in rounds}
    if incident.analysis_round not in recorded:  # the current round, not yet (or never) written out
        rounds.append(round_record(incident))
    by_round: dict[int, Action] = {}
    for row in actions:
        if row.fault and isinstance(row.fault.get("round"), int):
            by_round[row.fault["round"]] = row
    faults = []
    for entry in sorted(rounds, key=lambda item: item.get("round") or 0):
        action = by_round.get(entry.get("round") or 0)
        decision = entry.get("decision") or {}
        faults.append(
            {
                "round": entry.get("round"),
                "started_at": entry.get("started_at"),
                "reason": entry.get("reason"),
                "action": decision.get("action"),
                "target_revision": decision.get("target_revision"),
                "verdict": entry.get("verdict"),
                "outcome": entry.get("status"),
                "action_id": action.id if action is not None else None,
                "fault_started_at": (action.fault or {}).get("fault_started_at") if action else None,
                "fault_started_source": (action.fault or {}).get("fault_started_source") if action else None,
                "mttr": action.recovery if action is not None else None,
            }
        )
    return faults


def action_view(action: Action) -> dict[str, Any]:
    return {
        "id": action.id,
        "type": action.type,
        "params": action.params,
        "status": action.status,
        "phase": action.phase,
        "manual": action.manual,
        "requested_by": action.requested_by,
        "attempts": action.attempts,
        "result": action.result,
        "error": action.error,
        "fault": action.fault,
        "recovery": action.recovery,
        "created_at": _time(action.created_at),
        "started_at": _time(action.started_at),
        "applied_at": _time(action.applied_at),
        "finished_at": _time(action.finished_at),
    }


def alert_view(alert: IncidentAlert) -> dict[str, Any]:
    return {
        "alertname": alert.alertname,
        "status": alert.status,
        "severity": alert.severity,
        "fingerprint": alert.fingerprint,
        "starts_at": _time(alert.starts_at),
        "ends_at": _time(alert.ends_at),
        "labels": alert.labels,
        "annotations": alert.annotations,
        "generator_url": alert.generator_url,
        "received_at": _time(alert.received_at),
    }


def event_view(event: IncidentEvent) -> dict[str, Any]:
    return {
        "at": _time(event.at),
        "kind": event.kind,
        "actor": event.actor,
        "message": event.message,
        "data": event.data,
    }


def notifications_view(deliveries: Sequence[tuple[NotificationDelivery, str]]) -> dict[str, Any]:
    """How the incident's announcements fared: counts per outcome, and each one given up on."""
    counts = dict.fromkeys((DeliveryStatus.PENDING, DeliveryStatus.DELIVERED, DeliveryStatus.SKIPPED), 0)
    failed = []
    for delivery, event_type in deliveries:
        if delivery.status == DeliveryStatus.FAILED:
            failed.append(
                {
                    "sink": delivery.sink,
                    "event_id": delivery.event_id,
                    "event_type": event_type,
                    "attempts": delivery.attempts,
                    "error": delivery.last_error,
                    "at": _time(delivery.finished_at),
                }
            )
        elif delivery.status in counts:
            counts[delivery.status] += 1
    return {**counts, "failed": failed}


def incident_detail(
    incident: Incident,
    alerts: Sequence[IncidentAlert],
    actions: Sequence[Action],
    events: Sequence[IncidentEvent],
    deliveries: Sequence[tuple[NotificationDelivery, str]] = (),
    following: Sequence[Incident] = (),
) -> dict[str, Any]:
    return {
        **incident_summary(incident, alerts),
        "following_incidents": [_link(other.id, other.previous_relation) for other in following],
        "faults": faults_view(incident, actions, events),
        "timestamps": {
            "fault_started_at": _time(incident.fault_started_at),
            "fault_started_source": incident.fault_started_source,
            "alert_fired_at": _time(incident.alert_fired_at),
            "detected_at": _time(incident.detected_at),
            "decided_at": _time(incident.decided_at),
            "action_started_at": _time(incident.action_started_at),
            "mitigated_at": _time(incident.mitigated_at),
            "verified_at": _time(incident.verified_at),
            "resolved_at": _time(incident.resolved_at),
        },
        "mttr": {
            "seconds": incident.mttr_seconds,
            "basis": incident.mttr_basis,
            "time_to_detect_seconds": incident.time_to_detect_seconds,
            "time_to_decide_seconds": incident.time_to_decide_seconds,
            "time_to_mitigate_seconds": incident.time_to_mitigate_seconds,
            "time_to_verify_seconds": incident.time_to_verify_seconds,
        },
        "decision": incident.decision,
        "proposed_decision": incident.proposed_decision,
        "engine_fallback_reason": incident.engine_fallback_reason,
        "llm_usage": incident.llm_usage,
        "context": incident.context,
        "alerts": [alert_view(alert) for alert in alerts],
        "actions": [action_view(action) for action in actions],
        "timeline": [event_view(event) for event in events],
        "notifications": notifications_view(deliveries),
    }
