"""Rows read as the contracts see them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from incidents import (
    Action,
    ActionKind,
    ActionType,
    IncidentAlert,
    alert_info,
    primary_alert,
    recent_action_from_row,
)

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def alert(name: str, status: str, severity: str | None, minutes: int) -> IncidentAlert:
    return IncidentAlert(
        alertname=name,
        status=status,
        severity=severity,
        fingerprint=name.lower(),
        starts_at=T0 + timedelta(minutes=minutes),
        labels={"alertname": name, "service": "svc"},
        annotations={"summary": name},
        generator_url=None,
    )


def test_the_primary_alert_is_firing_then_critical_then_oldest() -> None:
    resolved = alert("Resolved", "resolved", "critical", 0)
    warning = alert("Warning", "firing", "warning", 1)
    late_critical = alert("LateCritical", "firing", "critical", 5)
    early_critical = alert("EarlyCritical", "firing", "critical", 2)
    assert primary_alert([resolved, warning, late_critical, early_critical]) is early_critical
    assert primary_alert([resolved, warning]) is warning


def test_an_alert_row_reads_as_alert_info() -> None:
    info = alert_info(alert("HighErrorRate", "firing", "critical", 0))
    assert (info.name, info.status, info.severity, info.starts_at) == (
        "HighErrorRate",
        "firing",
        "critical",
        T0,
    )
    assert info.labels == {"alertname": "HighErrorRate", "service": "svc"}


def test_action_rows_read_as_recent_actions_automatic_and_manual() -> None:
    rollback = Action(
        type="ROLLBACK",
        params={"decision_engine": "rules", "target_revision": "svc-1", "from_revision": "svc-2"},
        status="succeeded",
        manual=False,
        created_at=T0,
    )
    scale = Action(
        type="SCALE",
        params={"min_instances": 1, "max_instances": 3},
        status="queued",
        manual=True,
        created_at=T0,
    )
    automatic, manual = recent_action_from_row(rollback), recent_action_from_row(scale)
    assert automatic.action is ActionType.ROLLBACK
    assert (automatic.target_revision, automatic.from_revision, automatic.outcome) == (
        "svc-1",
        "svc-2",
        "succeeded",
    )
    assert (manual.action, manual.manual, manual.target_revision) == (ActionKind.SCALE, True, None)
