"""The check that a fault still holds right before an automatic change: a blip that has stopped is
not acted on, a fault that cannot be confirmed goes to a human, one that holds goes ahead."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from analyzer import ConfirmationConfig, ProcessingConfig
from analyzer.evidence import EvidenceConfig
from analyzer.processing.confirmation import FaultState, confirm_fault
from incidents import (
    ActionRepository,
    ActionType,
    AlertInfo,
    Decision,
    Figures,
    IncidentContext,
    IncidentRepository,
    Store,
    utcnow,
)
from tests.analyzer.processing_support import open_incident, processor, status_and_events
from tests.support.contexts import StaticContextSource, bad_deploy_context

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=utcnow().tzinfo)
HEALTHY = Figures(request_rate_rps=20.0, error_rate=0.0, latency_p95_ms=90.0)
FAILING = Figures(request_rate_rps=20.0, error_rate=0.25, latency_p95_ms=90.0)
QUIET = Figures(request_rate_rps=0.1, error_rate=0.0, latency_p95_ms=None)
CONFIG = ConfirmationConfig()


def context(*, age: timedelta = timedelta(minutes=3)) -> IncidentContext:
    alert = AlertInfo(
        name="HighErrorRate",
        status="firing",
        starts_at=NOW - timedelta(seconds=15),
        fingerprint="f00d",
        labels={"service": "shop"},
    )
    ctx = bad_deploy_context(alert, now=NOW)
    bad = ctx.revisions[0].model_copy(update={"created_at": NOW - age})
    return ctx.model_copy(update={"revisions": [bad, *ctx.revisions[1:]]})


def rollback() -> Decision:
    return Decision(
        action=ActionType.ROLLBACK,
        target_revision="shop-00001-ok",
        confidence=0.9,
        root_cause="bad deploy",
        explanation="roll back",
        engine="rules",
    )


def scale_up() -> Decision:
    return Decision(
        action=ActionType.SCALE_UP,
        scale={"min_instances": 2, "max_instances": 20},
        confidence=0.9,
        root_cause="saturated",
        explanation="scale",
        engine="rules",
    )


class Clock:
    """A fake clock that the fake sleep moves on."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


async def confirm(
    source: StaticContextSource,
    decision: Decision,
    ctx: IncidentContext,
    clock: Clock | None = None,
    *,
    onset: datetime | None = None,
) -> tuple[FaultState, str, Clock]:
    clock = clock or Clock(NOW)
    result = await confirm_fault(
        ctx,
        decision,
        source,
        config=CONFIG,
        evidence=EvidenceConfig(),
        onset=onset,
        clock=clock,
        sleep=clock.sleep,
    )
    return result.state, result.reason, clock


@pytest.mark.parametrize(
    ("fresh", "state"),
    [
        (FAILING, FaultState.HOLDS),
        (HEALTHY, FaultState.STOPPED),
        (QUIET, FaultState.UNKNOWN),
        (None, FaultState.UNKNOWN),
    ],
    ids=["still-failing", "stopped", "too-few-requests", "unreadable"],
)
async def test_a_rollback_is_confirmed_on_the_failing_revision_alone(
    fresh: Figures | None, state: FaultState
) -> None:
    source = StaticContextSource()
    source.fresh = fresh
    found, reason, clock = await confirm(source, rollback(), context())
    assert found is state
    assert source.fresh_calls == [("shop", ["shop-00002-bad"], 15)]
    assert clock.slept == []  # three minutes old: past its start-up grace
    assert "shop-00002-bad" in reason


async def test_a_young_revision_is_checked_once_its_start_up_grace_is_over() -> None:
    source = StaticContextSource()
    source.fresh = HEALTHY
    found, _, clock = await confirm(source, rollback(), context(age=timedelta(seconds=12)))
    assert clock.slept == [pytest.approx(23.0)]
    assert found is FaultState.STOPPED


async def test_a_revision_that_alerted_during_its_start_up_is_checked_two_windows_after_the_alert() -> None:
    # Created 30 s ago, but it took traffic (and alerted) only 5 s ago: its blip began no later than
    # the alert, so the window starts 15 s after the alert, not at 35 s of age.
    ctx = context(age=timedelta(seconds=30))
    ctx = ctx.model_copy(
        update={"alert": ctx.alert.model_copy(update={"starts_at": NOW - timedelta(seconds=5)})}
    )
    source = StaticContextSource()
    source.fresh = HEALTHY
    found, _, clock = await confirm(source, rollback(), ctx)
    assert clock.slept == [pytest.approx(25.0)]
    assert found is FaultState.STOPPED


@pytest.mark.parametrize(
    ("onset", "slept"),
    [
        (None, 25.0),  # two windows after the alert began
        (NOW - timedelta(seconds=20), 15.0),  # the grace after the onset: its blip began by then
        (NOW - timedelta(seconds=40), 5.0),  # never before the revision's own grace is over
        (NOW + timedelta(seconds=1), 25.0),  # an onset after the alert began is no bound at all
    ],
    ids=["onset-unknown", "onset-known", "onset-before-the-revision", "onset-after-the-alert"],
)
async def test_the_estimated_onset_bounds_when_a_start_up_blip_began(
    onset: datetime | None, slept: float
) -> None:
    # Created 30 s ago, alerted 5 s ago; the condition the alert fired on first held at `onset`.
    ctx = context(age=timedelta(seconds=30))
    ctx = ctx.model_copy(
        update={"alert": ctx.alert.model_copy(update={"starts_at": NOW - timedelta(seconds=5)})}
    )
    source = StaticContextSource()
    source.fresh = FAILING
    found, _, clock = await confirm(source, rollback(), ctx, onset=onset)
    assert clock.slept == [pytest.approx(slept)]
    assert found is FaultState.HOLDS


async def test_a_scale_up_is_confirmed_on_every_serving_revision_without_waiting() -> None:
    source = StaticContextSource()
    source.fresh = FAILING
    found, _, clock = await confirm(source, scale_up(), context(age=timedelta(seconds=5)))
    assert found is FaultState.HOLDS
    assert source.fresh_calls[0][1] == ["shop-00002-bad"]
    assert clock.slept == []


async def test_a_context_with_no_serving_revision_cannot_be_confirmed() -> None:
    ctx = context()
    ctx = ctx.model_copy(
        update={"revisions": [r.model_copy(update={"traffic_percent": 0}) for r in ctx.revisions]}
    )
    found, _, _ = await confirm(StaticContextSource(), rollback(), ctx)
    assert found is FaultState.UNKNOWN


# The pipeline, on both stores.


async def test_a_fault_that_stopped_closes_the_incident_without_an_action(store: Store) -> None:
    source = StaticContextSource()
    source.fresh = HEALTHY
    incident_id = await open_incident(store)
    await processor(store, source).process(incident_id)
    status, events = await status_and_events(store, incident_id)
    assert status == "closed"
    assert "fault.stopped" in events and "action.queued" not in events
    async with store.session() as session:
        assert await ActionRepository(session).list_for_incident(incident_id) == []
        incident = await IncidentRepository(session).get(incident_id)
    assert incident.decision is not None and incident.decision["action"] == "NONE"
    assert "Recovered before any action" in (incident.decision["root_cause"] or "")


async def test_a_fault_that_cannot_be_confirmed_waits_for_a_human(store: Store) -> None:
    source = StaticContextSource()
    source.fresh = None
    incident_id = await open_incident(store)
    await processor(store, source).process(incident_id)
    status, events = await status_and_events(store, incident_id)
    assert status == "awaiting_approval"
    assert "fault.unconfirmed" in events and "action.queued" not in events


async def test_a_fault_that_holds_is_acted_on_with_the_check_on_its_timeline(store: Store) -> None:
    incident_id = await open_incident(store)
    await processor(store, StaticContextSource()).process(incident_id)
    status, events = await status_and_events(store, incident_id)
    assert status == "queued"
    assert events.index("fault.confirmed") < events.index("action.queued")


async def test_a_zero_window_turns_the_check_off(store: Store) -> None:
    source = StaticContextSource()
    source.fresh = HEALTHY
    config = ProcessingConfig(confirmation=ConfirmationConfig(confirm_window=timedelta(0)))
    incident_id = await open_incident(store)
    await processor(store, source, config).process(incident_id)
    assert (await status_and_events(store, incident_id))[0] == "queued"
    assert source.fresh_calls == []
