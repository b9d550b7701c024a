"""The work queue between whoever decides (analysis, an approval, a manual command) and the actuator.

    enqueue_action(store, session, incident, request, ...)
        in the caller's transaction: the queued `actions` row, its `action.queued` timeline line,
        and a wake-up for the workers that fires when (and only if) the transaction commits
    hand_back_action(store, session, action_id, owner=..., now=...)
        a worker that stops ends its lease now; the workers are woken as for a queued action
    async with waiting_for_actions(store) as waiter:
        await waiter.wait(at_most=seconds)
        returns at a wake-up, or after `seconds` at the latest

Wake-ups: in this process, the commit that queued an action wakes the waiters directly, on SQLite
and PostgreSQL alike (no poll, no round trip). Other processes hear PostgreSQL's NOTIFY on
`ACTIONS_CHANNEL`, sent in the same transaction, over a LISTEN connection the store opens. SQLite
has no signal between processes: there, and for a NOTIFY lost while a LISTEN connection was down,
the waiter's `at_most` is the safety net, so it should be a slow poll, not the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Final

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from incidents.contracts import ActionRequest
from incidents.db import Store
from incidents.lifecycle import fault_record
from incidents.models import Action, Incident
from incidents.repository import ActionRepository, EventRepository

log = logging.getLogger(__name__)

ACTIONS_CHANNEL: Final = "remediator_actions"
# Pause before a lost LISTEN connection is opened again (`at_most` covers the gap).
RELISTEN_DELAY_SECONDS: Final = 2.0


async def enqueue_action(
    store: Store,
    session: AsyncSession,
    incident: Incident,
    request: ActionRequest,
    *,
    requested_by: str,
    now: datetime,
    manual: bool = False,
) -> Action:
    """Queue `request` for the incident's service in the caller's transaction, and wake the workers
    once it commits."""
    action = await ActionRepository(session).enqueue(
        service=incident.service,
        request=request,
        incident_id=incident.id,
        manual=manual,
        requested_by=requested_by,
        now=now,
    )
    action.fault = await fault_record(session, incident)
    await EventRepository(session).add(
        incident.id,
        "action.queued",
        f"{'manual ' if manual else ''}action {action.id} queued: {request.describe()}",
        actor=requested_by,
        data={"action_id": action.id, "type": action.type, "params": action.params},
        at=now,
    )
    await _wake_on_commit(store, session, ACTIONS_CHANNEL, str(action.id))
    return action


async def hand_back_action(
    store: Store, session: AsyncSession, action_id: int, *, owner: str, now: datetime
) -> Action | None:
    """End `owner`'s lease on a running action now, in the caller's transaction, and wake the workers
    once it commits: another one continues the action at once, not when it next looks. None when
    the lease is not `owner`'s any more."""
    action = await ActionRepository(session).hand_back(action_id, owner=owner, now=now)
    if action is not None:
        await _wake_on_commit(store, session, ACTIONS_CHANNEL, str(action_id))
    return action


async def _wake_on_commit(store: Store, session: AsyncSession, channel: str, payload: str) -> None:
    if store.dialect == "postgresql":
        # Delivered by PostgreSQL at commit, to every LISTEN connection of every process.
        await session.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload}
        )
    store.wake_after_commit(session, channel)


class ActionWaiter:
    """A worker's wake-up: set by a local commit, a NOTIFY, or `wake()`."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    def clear(self) -> None:
        """Forget earlier wake-ups: call before looking for work, so none that comes later is lost."""
        self._event.clear()

    async def wait(self, *, at_most: float) -> bool:
        """True at a wake-up (or one that came since `clear()`); False after `at_most` seconds without."""
        try:
            async with asyncio.timeout(at_most):
                await self._event.wait()
        except TimeoutError:
            return False
        return True


@asynccontextmanager
async def waiting_for_actions(store: Store) -> AsyncIterator[ActionWaiter]:
    """Wake-ups for queued actions for as long as the block runs."""
    waiter = ActionWaiter()
    local = store.local_waiters.setdefault(ACTIONS_CHANNEL, set())
    local.add(waiter.wake)
    listening = (
        asyncio.create_task(_listen(store, waiter), name="actions-listen")
        if store.dialect == "postgresql"
        else None
    )
    try:
        yield waiter
    finally:
        local.discard(waiter.wake)
        if listening is not None:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening


async def _listen(store: Store, waiter: ActionWaiter) -> None:
    """LISTEN on PostgreSQL; open the connection again whenever it is lost."""
    while True:
        try:
            connection = await store.listen(ACTIONS_CHANNEL, waiter.wake)
        except Exception as exc:  # refused, timed out, or a protocol error: this task must not die
            log.warning(
                "LISTEN connection failed; relying on the poll until it is back",
                exc_info=not isinstance(exc, OSError | asyncpg.PostgresError),
                extra={"error": str(exc)},
            )
            await asyncio.sleep(RELISTEN_DELAY_SECONDS)
            continue
        lost = asyncio.Event()
        try:
            connection.add_termination_listener(lambda _connection, lost=lost: lost.set())
            waiter.wake()  # anything queued while nobody was listening
            await lost.wait()
            log.warning("LISTEN connection lost; opening it again")
        finally:
            await connection.close()
