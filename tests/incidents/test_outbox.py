"""The event outbox in the store: written with the change it announces, claimed in order, once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from incidents import IncidentStatus
from incidents.db import Store
from incidents.models import NotificationDelivery, OutboxEvent
from incidents.outbox import (
    EVENT_TYPES,
    OUTBOX_TYPES,
    ClaimedDelivery,
    DeliveryStatus,
    OutboxRepository,
    SinkVerdict,
)
from incidents.repository import IncidentRepository

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
S = IncidentStatus


async def claim_one(
    outbox: OutboxRepository, *, owner: str, now: datetime, lease: timedelta, sinks: list[str]
) -> ClaimedDelivery | None:
    claimed = await outbox.claim(owner=owner, now=now, lease=lease, sinks=sinks, limit=1)
    return claimed[0] if claimed else None


async def outbox_types(store: Store, incident_id: int) -> list[str]:
    async with store.session() as session:
        return [event.type for event in await OutboxRepository(session).list_events_for_incident(incident_id)]


async def open_incident(store: Store, service: str = "checkout", *, severity: str | None = "critical") -> int:
    async with store.session() as session:
        incident, _ = await IncidentRepository(session).open(
            service,
            now=T0,
            severity=severity,
            actor="alertmanager",
            message=f"HighErrorRate firing for {service}",
        )
        return incident.id


async def move(store: Store, incident_id: int, *statuses: IncidentStatus, actor: str = "test") -> None:
    async with store.session() as session:
        incidents = IncidentRepository(session)
        incident = await incidents.get(incident_id, for_update=True)
        for status in statuses:
            await incidents.transition(incident, status, actor=actor, message=f"to {status.value}", now=T0)


async def test_announced_changes_write_an_outbox_row_with_the_incident_as_it_was(store: Store) -> None:
    incident_id = await open_incident(store)
    await move(store, incident_id, S.ANALYZING, S.DECIDED, S.AWAITING_APPROVAL)
    assert await outbox_types(store, incident_id) == ["opened", "decided", "awaiting_approval"]
    async with store.session() as session:
        events = await OutboxRepository(session).list_events_for_incident(incident_id)
    opened, decided, waiting = events
    assert opened.data["incident"]["status"] == "open"
    assert waiting.data["incident"]["status"] == "awaiting_approval"
    assert decided.data["detail"] == {"from": "analyzing", "to": "decided"}
    assert (opened.service, opened.severity, opened.actor) == ("checkout", "critical", "alertmanager")
    assert opened.message == "HighErrorRate firing for checkout"
    assert all(event.dispatched_at is None for event in events)


async def test_a_rolled_back_change_announces_nothing(store: Store) -> None:
    incident_id = await open_incident(store)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store.session() as session:
            incidents = IncidentRepository(session)
            incident = await incidents.get(incident_id, for_update=True)
            await incidents.transition(incident, S.ANALYZING, actor="test", message="x", now=T0)
            await incidents.transition(incident, S.DECIDED, actor="test", message="x", now=T0)
            raise Boom
    assert await outbox_types(store, incident_id) == ["opened"]


def test_every_announced_kind_has_a_type_and_the_analysis_steps_do_not() -> None:
    assert set(OUTBOX_TYPES.values()) == EVENT_TYPES
    for kind in (
        "status.analyzing",
        "status.acting",
        "status.verifying",
        "alert.joined",
        "notification.failed",
    ):
        assert kind not in OUTBOX_TYPES


@pytest.mark.parametrize(
    ("path", "quiet"),
    [
        ((S.CLOSED,), True),  # the alert resolved before analysis: recovered on its own
        ((S.ANALYZING, S.DECIDED, S.CLOSED), True),  # nothing to do
        ((S.ANALYZING, S.DECIDED, S.AWAITING_APPROVAL, S.CLOSED), False),  # humans were asked
        ((S.ANALYZING, S.DECIDED, S.ESCALATED, S.CLOSED), False),  # humans were paged
    ],
)
async def test_closes_nobody_needs_to_hear_about_are_quiet(
    store: Store, path: tuple[IncidentStatus, ...], quiet: bool
) -> None:
    incident_id = await open_incident(store)
    await move(store, incident_id, *path)
    async with store.session() as session:
        closed = (await OutboxRepository(session).list_events_for_incident(incident_id))[-1]
    assert (closed.type, closed.quiet) == ("closed", quiet)


async def dispatch_all(store: Store, sinks: list[str]) -> None:
    async with store.session() as session:
        outbox = OutboxRepository(session)
        for event in await outbox.list_undispatched():
            await outbox.dispatch(event, [SinkVerdict(sink=sink, deliver=True) for sink in sinks], now=T0)


async def test_fan_out_is_once_per_event_and_sink(store: Store) -> None:
    incident_id = await open_incident(store)
    await dispatch_all(store, ["slack", "webhook:ops"])
    async with store.session() as session:
        outbox = OutboxRepository(session)
        (event,) = await outbox.list_events_for_incident(incident_id)
        assert event.dispatched_at == T0
        assert await outbox.list_undispatched() == []
        # A second fan-out of the same event (two replicas racing) adds nothing.
        await outbox.dispatch(event, [SinkVerdict(sink="slack", deliver=True)], now=T0)
        count = await session.scalar(select(func.count()).select_from(NotificationDelivery))
    assert count == 2


async def test_claims_keep_each_incidents_order_per_sink(store: Store) -> None:
    first = await open_incident(store, "checkout")
    await move(store, first, S.ANALYZING, S.DECIDED)
    second = await open_incident(store, "payments")
    await dispatch_all(store, ["slack"])
    claimed = []
    async with store.session() as session:
        outbox = OutboxRepository(session)
        while (
            delivery := await claim_one(outbox, owner="a", now=T0, lease=LEASE, sinks=["slack"])
        ) is not None:
            claimed.append((delivery.incident_id, delivery.event_type))
    # The checkout incident's `decided` waits while its `opened` is still pending (held, not done).
    assert claimed == [(first, "opened"), (second, "opened")]
    async with store.session() as session:
        outbox = OutboxRepository(session)
        row = await outbox.get_owned(1, owner="a")
        assert row is not None
        row.status = DeliveryStatus.DELIVERED
        row.result = {"ts": "1.1"}
    async with store.session() as session:
        outbox = OutboxRepository(session)
        later = await claim_one(outbox, owner="a", now=T0, lease=LEASE, sinks=["slack"])
        assert later is not None and (later.incident_id, later.event_type) == (first, "decided")
        assert await outbox.results_before(first, "slack", event_id=later.event_id) == [{"ts": "1.1"}]
        assert await claim_one(outbox, owner="a", now=T0, lease=LEASE, sinks=["slack"]) is None
        # Held by a live lease: nobody else gets it; once it expires, another worker does.
        assert await claim_one(outbox, owner="b", now=T0 + LEASE / 2, lease=LEASE, sinks=["slack"]) is None
        taken = await claim_one(outbox, owner="b", now=T0 + LEASE * 2, lease=LEASE, sinks=["slack"])
        assert taken is not None and taken.attempts == 2


async def test_one_batch_never_holds_two_events_of_one_incident_and_sink(store: Store) -> None:
    first = await open_incident(store, "checkout")
    await move(store, first, S.ANALYZING, S.DECIDED, S.ESCALATED)
    second = await open_incident(store, "payments")
    await dispatch_all(store, ["slack", "pagerduty"])
    async with store.session() as session:
        batch = await OutboxRepository(session).claim(
            owner="a", now=T0, lease=LEASE, sinks=["slack", "pagerduty"], limit=50
        )
    assert sorted((d.incident_id, d.sink, d.event_type) for d in batch) == [
        (first, "pagerduty", "opened"),
        (first, "slack", "opened"),
        (second, "pagerduty", "opened"),
        (second, "slack", "opened"),
    ]


async def test_a_sink_this_worker_does_not_have_is_left_to_one_that_does(store: Store) -> None:
    await open_incident(store)
    await dispatch_all(store, ["pagerduty"])
    async with store.session() as session:
        outbox = OutboxRepository(session)
        assert await claim_one(outbox, owner="a", now=T0, lease=LEASE, sinks=["slack"]) is None
        assert await claim_one(outbox, owner="a", now=T0, lease=LEASE, sinks=["pagerduty"]) is not None


async def test_concurrent_claimers_never_take_the_same_delivery(pg_store: Store) -> None:
    for index in range(12):
        await open_incident(pg_store, f"service-{index}")
    await dispatch_all(pg_store, ["slack"])

    async def claim_all(owner: str) -> list[int]:
        taken = []
        while True:
            async with pg_store.session() as session:
                delivery = await claim_one(
                    OutboxRepository(session), owner=owner, now=T0, lease=LEASE, sinks=["slack"]
                )
            if delivery is None:
                return taken
            taken.append(delivery.delivery_id)
            await asyncio.sleep(0)

    results = await asyncio.gather(*(claim_all(f"worker-{n}") for n in range(4)))
    everything = [delivery for result in results for delivery in result]
    assert sorted(everything) == sorted(set(everything))
    assert len(everything) == 12
    async with pg_store.session() as session:
        assert await session.scalar(select(func.count()).select_from(OutboxEvent)) == 12
