"""The work queue: an action queued in a transaction wakes the workers when, and only when, it commits."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from incidents import (
    ACTIONS_CHANNEL,
    ActionRepository,
    ActionWaiter,
    IncidentRepository,
    IncidentStatus,
    RollbackAction,
    Store,
    StoreConfig,
    enqueue_action,
    utcnow,
    waiting_for_actions,
)

# Long enough that a wake-up inside it can only have come from the queue, never from the timeout.
NEVER = 30.0


async def queue_rollback(store: Store, *, commit: bool = True) -> int:
    now = utcnow()
    async with store.sessions() as session, session.begin() as transaction:
        incidents = IncidentRepository(session)
        incident, _ = await incidents.open("checkout", now=now, actor="test", message="opened")
        for status in (IncidentStatus.ANALYZING, IncidentStatus.DECIDED):
            await incidents.transition(incident, status, actor="test", message=status.value, now=now)
        action = await enqueue_action(
            store,
            session,
            incident,
            RollbackAction(target_revision="checkout-00001", decision_engine="rules"),
            requested_by="analyzer",
            now=now,
        )
        await incidents.transition(incident, IncidentStatus.QUEUED, actor="test", message="queued", now=now)
        if not commit:
            await transaction.rollback()
        return action.id


async def settle(store: Store, waiter: ActionWaiter) -> None:
    """Let a PostgreSQL waiter's LISTEN connection come up (it wakes once when it does), then clear."""
    if store.dialect == "postgresql":
        async with asyncio.timeout(5):
            assert await waiter.wait(at_most=NEVER)
    waiter.clear()


async def test_a_commit_in_this_process_wakes_the_waiters_without_a_poll(store: Store) -> None:
    async with waiting_for_actions(store) as first, waiting_for_actions(store) as second:
        await settle(store, first)
        await settle(store, second)
        action_id = await queue_rollback(store)
        async with asyncio.timeout(5):
            assert await first.wait(at_most=NEVER)
            assert await second.wait(at_most=NEVER)
    async with store.session() as session:
        action = await ActionRepository(session).get(action_id)
        events = await IncidentRepository(session).events.list_for_incident(action.incident_id or 0)
    assert (action.type, action.params) == (
        "ROLLBACK",
        {"decision_engine": "rules", "target_revision": "checkout-00001"},
    )
    queued = next(event for event in events if event.kind == "action.queued")
    assert queued.message == f"action {action_id} queued: roll back to checkout-00001"
    assert queued.data == {"action_id": action_id, "type": "ROLLBACK", "params": action.params}
    assert store.local_waiters[ACTIONS_CHANNEL] == set()  # the waiters left with their blocks


async def test_a_rolled_back_transaction_wakes_nobody(store: Store) -> None:
    async with waiting_for_actions(store) as waiter:
        await settle(store, waiter)
        await queue_rollback(store, commit=False)
        assert not await waiter.wait(at_most=1.0)
    async with store.session() as session:
        assert (
            await ActionRepository(session).list_recent_for_service(
                "checkout", since=utcnow() - timedelta(hours=1)
            )
            == []
        )


async def test_another_process_is_woken_by_notify(pg_store: Store) -> None:
    """A second Store on the same database stands in for another process: no local signal reaches it."""
    other = Store.from_config(StoreConfig(url=pg_store.url.render_as_string(hide_password=False)))
    try:
        async with waiting_for_actions(other) as waiter:
            await settle(other, waiter)
            await queue_rollback(pg_store)
            async with asyncio.timeout(5):
                assert await waiter.wait(at_most=NEVER)
    finally:
        await other.dispose()


async def test_without_a_wake_up_the_wait_ends_at_the_safety_net(store: Store) -> None:
    async with waiting_for_actions(store) as waiter:
        await settle(store, waiter)
        started = asyncio.get_running_loop().time()
        assert not await waiter.wait(at_most=0.2)
        assert asyncio.get_running_loop().time() - started >= 0.2
