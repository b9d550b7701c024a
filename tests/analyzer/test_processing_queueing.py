"""A decision's action as the actuator will read it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from analyzer.processing import queue_action
from incidents import (
    ActionRepository,
    ActionType,
    AlertInfo,
    Decision,
    IncidentRepository,
    ScaleChange,
    Store,
    read_action,
    utcnow,
)
from tests.analyzer.processing_support import open_incident
from tests.support.contexts import bad_deploy_context

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ALERT = AlertInfo(
    name="HighErrorRate",
    status="firing",
    starts_at=NOW,
    fingerprint="f",
    labels={"alertname": "HighErrorRate", "service": "demo-app-a"},
)


async def queued(store: Store, decision: Decision, *, with_context: bool) -> tuple[str, dict]:
    incident_id = await open_incident(store)
    context = bad_deploy_context(ALERT, now=NOW) if with_context else None
    async with store.session() as session:
        incident = await IncidentRepository(session).get(incident_id)
        action = await queue_action(
            store, session, incident, context, decision, requested_by="test", now=utcnow()
        )
    async with store.session() as session:
        row = await ActionRepository(session).get(action.id)
    return row.type, row.params


async def test_a_rollback_names_its_target_the_revision_it_leaves_and_the_engine(store: Store) -> None:
    decision = Decision(
        action=ActionType.ROLLBACK, target_revision="demo-app-a-00001-ok", confidence=0.9, engine="hybrid"
    )
    stored = await queued(store, decision, with_context=True)
    assert stored == (
        "ROLLBACK",
        {
            "decision_engine": "hybrid",
            "target_revision": "demo-app-a-00001-ok",
            "from_revision": "demo-app-a-00002-bad",
        },
    )
    assert read_action(*stored) == decision.action_request(from_revision="demo-app-a-00002-bad")


async def test_without_a_context_the_revision_it_leaves_is_not_guessed(store: Store) -> None:
    decision = Decision(action=ActionType.ROLLBACK, target_revision="demo-app-a-00001-ok", confidence=0.9)
    assert await queued(store, decision, with_context=False) == (
        "ROLLBACK",
        {"decision_engine": "rules", "target_revision": "demo-app-a-00001-ok"},
    )


async def test_a_scale_up_carries_its_bounds(store: Store) -> None:
    decision = Decision(
        action=ActionType.SCALE_UP, scale=ScaleChange(min_instances=1, max_instances=6), confidence=0.9
    )
    assert await queued(store, decision, with_context=True) == (
        "SCALE_UP",
        {"decision_engine": "rules", "min_instances": 1, "max_instances": 6},
    )


async def test_a_decision_that_changes_nothing_queues_nothing(store: Store) -> None:
    with pytest.raises(ValueError, match="asks for no action"):
        await queued(store, Decision(action=ActionType.INVESTIGATE, confidence=0.5), with_context=True)
