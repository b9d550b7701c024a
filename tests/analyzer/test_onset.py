"""The fault start an incident's MTTR is measured from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from analyzer.processing import deploy_onset
from incidents import ActionType, AlertInfo, Decision
from tests.support.contexts import bad_deploy_context

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ALERT = AlertInfo(
    name="HighErrorRate",
    status="firing",
    starts_at=NOW - timedelta(seconds=20),
    fingerprint="f",
    labels={"alertname": "HighErrorRate", "service": "demo-app-a"},
)
ROLLBACK = Decision(action=ActionType.ROLLBACK, target_revision="demo-app-a-00001-ok", confidence=0.9)


def test_a_rolled_back_regression_began_when_its_revision_was_created() -> None:
    context = bad_deploy_context(ALERT, now=NOW)  # 00002 created three minutes before the alert
    estimated = NOW - timedelta(seconds=30)
    created = ALERT.starts_at - timedelta(minutes=3)
    assert deploy_onset(context, ROLLBACK, estimated) == (created, "revision_created")


def test_the_deploy_is_not_the_onset_when_it_is_far_older_or_newer_than_the_estimate() -> None:
    context = bad_deploy_context(ALERT, now=NOW)
    assert deploy_onset(context, ROLLBACK, NOW - timedelta(minutes=30)) is None  # created after the estimate
    assert deploy_onset(context, ROLLBACK, NOW + timedelta(minutes=20)) is None  # too long before it
    assert deploy_onset(context, ROLLBACK, None) is None


def test_only_a_rollback_blames_the_deploy() -> None:
    context = bad_deploy_context(ALERT, now=NOW)
    investigate = Decision(action=ActionType.INVESTIGATE, confidence=0.9)
    assert deploy_onset(context, investigate, NOW) is None
