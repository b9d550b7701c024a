"""MTTR and its parts, from the incident's timestamps.

MTTR is verified recovery minus fault start. Fault start is not Alertmanager's startsAt (Prometheus
sets that when the alert starts *firing*, a rule window plus `for:` after the onset); it is the
onset estimated from the metrics (`fault_started_source` says how), falling back to the alert's
startsAt when no estimate exists, and `mttr_basis` records which was used.

Every part is measured from the same fault start, as incident reviews count them:
time to detect (webhook received), to decide, to mitigate (change applied), to verify (= MTTR).

An incident can span two faults (a bad deploy taking traffic under an escalated incident, analysed
again): each action records the fault it was decided for (`Action.fault`: its onset, when that fault
was detected and decided, incidents/lifecycle.py), and MTTR is measured for that fault: the one the
action fixed, never the incident's first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from incidents import Incident


@dataclass(frozen=True, kw_only=True)
class RecoveryTimes:
    mttr_seconds: float
    basis: str
    time_to_detect_seconds: float | None
    time_to_decide_seconds: float | None
    time_to_mitigate_seconds: float | None
    time_to_verify_seconds: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _since(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else round((end - start).total_seconds(), 3)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def recovery_times(
    incident: Incident,
    *,
    verified_at: datetime,
    fault: dict[str, Any] | None = None,
    mitigated_at: datetime | None = None,
) -> RecoveryTimes:
    """MTTR and its parts for the fault an action fixed (`fault`, the action's record of it), or
    for the incident's own timestamps when the action has no record (queued before it was kept)."""
    fault = fault or {}
    started = _time(fault.get("fault_started_at"))
    if started is not None:
        start, basis = started, f"fault_started_at ({fault.get('fault_started_source') or 'estimated'})"
    elif incident.fault_started_at is not None:
        start, basis = (
            incident.fault_started_at,
            f"fault_started_at ({incident.fault_started_source or 'estimated'})",
        )
    elif incident.alert_fired_at is not None:
        start, basis = incident.alert_fired_at, "alert_fired_at (no onset estimate)"
    else:
        start, basis = incident.detected_at, "detected_at (no alert time)"
    detected = _time(fault.get("detected_at")) or incident.detected_at
    decided = _time(fault.get("decided_at")) or incident.decided_at
    mttr = round((verified_at - start).total_seconds(), 3)
    return RecoveryTimes(
        mttr_seconds=mttr,
        basis=basis,
        time_to_detect_seconds=_since(start, detected),
        time_to_decide_seconds=_since(start, decided),
        time_to_mitigate_seconds=_since(start, mitigated_at or incident.mitigated_at),
        time_to_verify_seconds=mttr,
    )


def apply_recovery_times(incident: Incident, times: RecoveryTimes) -> None:
    incident.mttr_seconds = times.mttr_seconds
    incident.mttr_basis = times.basis
    incident.time_to_detect_seconds = times.time_to_detect_seconds
    incident.time_to_decide_seconds = times.time_to_decide_seconds
    incident.time_to_mitigate_seconds = times.time_to_mitigate_seconds
    incident.time_to_verify_seconds = times.time_to_verify_seconds
