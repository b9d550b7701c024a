"""The lifecycle settings: recurrence grace, escalation grace and hold limit, the watcher."""

from __future__ import annotations

from datetime import timedelta

import pytest

from remediator.settings import Settings, SettingsError


def test_lifecycle_settings_are_read_with_defaults_per_metrics_profile() -> None:
    default = Settings.from_env({}).analyzer.lifecycle
    assert default.recurrence_grace == timedelta(seconds=90)
    assert default.escalated_hold_limit == timedelta(minutes=30)
    assert default.change_settle == timedelta(seconds=20)
    # Cloud Monitoring's late, coarse points keep an alert firing for minutes after a fix.
    cloud = Settings.from_env({"REMEDIATOR_METRICS": "cloud-run"}).analyzer.lifecycle
    assert cloud.recurrence_grace == timedelta(minutes=15)
    assert cloud.change_settle == timedelta(minutes=3)
    chosen = Settings.from_env(
        {
            "REMEDIATOR_RECURRENCE_GRACE_SECONDS": "45",
            "REMEDIATOR_ESCALATED_CLOSE_SECONDS": "0",
            "REMEDIATOR_ESCALATED_HOLD_SECONDS": "600",
            "REMEDIATOR_WATCH_SECONDS": "2.5",
            "REMEDIATOR_CHANGE_SETTLE_SECONDS": "10",
        }
    ).analyzer.lifecycle
    assert (chosen.recurrence_grace, chosen.escalated_close_grace) == (timedelta(seconds=45), timedelta(0))
    assert (chosen.escalated_hold_limit, chosen.change_settle) == (
        timedelta(minutes=10),
        timedelta(seconds=10),
    )
    assert chosen.watch_interval == 2.5


@pytest.mark.parametrize(
    ("name", "value"),
    [("REMEDIATOR_RECURRENCE_GRACE_SECONDS", "5"), ("REMEDIATOR_ESCALATED_HOLD_SECONDS", "soon")],
)
def test_bad_lifecycle_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})
