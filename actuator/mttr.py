"""MTTR and its parts, from the incident's timestamps.

MTTR is verified recovery minus fault start. Fault start is not Alertmanager's startsAt (Prometheus
sets that when the alert starts *firing*, a rule window plus `for:` after the onset); it is the
onset estimated from the metrics (`fault_started_source` says how), falling back to the alert's
startsAt when no estimate exists, and `mttr_basis` records which was used.

Every part is measured from the same fault start, as incident reviews count them:
time to detect (webhook received), to decide, to mitigate (change applied), to verify (= MTTR).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from incidents.models import Incident


@dataclass(frozen=True, kw_only=True)
class RecoveryTimes:
    mttr_seconds: float
    basis: str
    time_to_detect_seconds: float | None
    time_to_decide_seconds: float | None
    time_to_mitigate_seconds: float | None
    time_to_verify_seconds: float


def _since(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else round((end - start).total_seconds(), 3)


def recovery_times(incident: Incident, *, verified_at: datetime) -> RecoveryTimes:
    if incident.fault_started_at is not None:
        start, basis = (
            incident.fault_started_at,
            f"fault_started_at ({incident.fault_started_source or 'estimated'})",
        )
    elif incident.alert_fired_at is not None:
        start, basis = incident.alert_fired_at, "alert_fired_at (no onset estimate)"
    else:
        start, basis = incident.detected_at, "detected_at (no alert time)"
    mttr = round((verified_at - start).total_seconds(), 3)
    return RecoveryTimes(
        mttr_seconds=mttr,
        basis=basis,
        time_to_detect_seconds=_since(start, incident.detected_at),
        time_to_decide_seconds=_since(start, incident.decided_at),
        time_to_mitigate_seconds=_since(start, incident.mitigated_at),
        time_to_verify_seconds=mttr,
    )


def apply_recovery_times(incident: Incident, times: RecoveryTimes) -> None:
    incident.mttr_seconds = times.mttr_seconds
    incident.mttr_basis = times.basis
    incident.time_to_detect_seconds = times.time_to_detect_seconds
    incident.time_to_decide_seconds = times.time_to_decide_seconds
    incident.time_to_mitigate_seconds = times.time_to_mitigate_seconds
    incident.time_to_verify_seconds = times.time_to_verify_seconds
