"""The incident store on SQLite and PostgreSQL: the same behaviour on both."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from incidents import (
    ActionRepository,
    ActionStatus,
    IllegalTransition,
    IncidentNotFound,
    IncidentRepository,
    IncidentStatus,
    RollbackAction,
    Store,
    StoreConfig,
    StoreUnavailable,
    current_revision,
    head_revision,
    is_up_to_date,
    resolve_database_url,
)

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


async def open_incident(store: Store, service: str = "demo-app-a") -> int:
    async with store.session() as session:
        incident, opened = await IncidentRepository(session).open(
            service, now=T0, actor="test", message="opened by test"
        )
        assert opened
        return incident.id


async def test_migration_is_at_head(store: Store) -> None:
    assert await current_revision(store) == head_revision()
    assert await is_up_to_date(store)


async def test_open_joins_the_active_incident_and_opens_a_new_one_after_it_ends(store: Store) -> None:
    first = await open_incident(store)
    async with store.session() as session:
        repo = IncidentRepository(session)
        again, opened = await repo.open("demo-app-a", now=T0, actor="test", message="x")
        assert (again.id, opened) == (first, False)
        other, opened = await repo.open("demo-app-b", now=T0, actor="test", message="x")
        assert opened and other.id != first
        incident = await repo.get(first)
        await repo.transition(incident, IncidentStatus.CLOSED, actor="test", message="recovered")
    async with store.session() as session:
        new, opened = await IncidentRepository(session).open("demo-app-a", now=T0, actor="t", message="x")
        assert opened and new.id not in (first, other.id)


async def test_concurrent_opens_for_one_service_yield_one_incident(store: Store) -> None:
    async def open_once() -> int:
        async with store.session() as session:
            incident, _ = await IncidentRepository(session).open(
                "demo-app-a", now=T0, actor="test", message="race"
            )
            return incident.id

    ids = await asyncio.gather(*(open_once() for _ in range(8)))
    assert len(set(ids)) == 1
    async with store.session() as session:
        assert len(await IncidentRepository(session).list_incidents(service="demo-app-a")) == 1


async def test_database_refuses_a_second_active_incident_per_service(store: Store) -> None:
    await open_incident(store)
    with pytest.raises(IntegrityError):
        async with store.session() as session:
            await session.execute(
                text(
                    "INSERT INTO incidents (service, status, origin, detected_at, created_at, updated_at, "
                    "analysis_attempts) VALUES ('demo-app-a', 'queued', 'alert', :t, :t, :t, 0)"
                ),
                {"t": T0.replace(tzinfo=None) if store.dialect == "sqlite" else T0},
            )


async def test_alert_identity_is_idempotent(store: Store) -> None:
    incident_id = await open_incident(store)
    async with store.session() as session:
        repo = IncidentRepository(session)
        incident = await repo.get(incident_id)
        kwargs = {
            "fingerprint": "abc123",
            "starts_at": T0,
            "alertname": "HighErrorRate",
            "status": "firing",
            "severity": "critical",
            "labels": {"service": "demo-app-a"},
            "annotations": {},
            "generator_url": None,
            "received_at": T0,
        }
        assert await repo.add_alert(incident, **kwargs) is True
        assert await repo.add_alert(incident, **kwargs) is False
        # A new firing episode of the same alert (new startsAt) is a new alert.
        assert await repo.add_alert(incident, **{**kwargs, "starts_at": T0 + timedelta(minutes=5)}) is True
        assert len(await repo.list_alerts(incident_id)) == 2
        stored = await repo.get_alert("abc123", T0)
        assert stored is not None and stored.starts_at == T0 and stored.starts_at.tzinfo is not None


async def test_transitions_stamp_times_and_write_the_timeline(store: Store) -> None:
    incident_id = await open_incident(store)
    path = [
        IncidentStatus.ANALYZING,
        IncidentStatus.DECIDED,
        IncidentStatus.QUEUED,
        IncidentStatus.ACTING,
        IncidentStatus.VERIFYING,
        IncidentStatus.RESOLVED,
    ]
    async with store.session() as session:
        repo = IncidentRepository(session)
        incident = await repo.get(incident_id)
        for offset, status in enumerate(path, start=1):
            await repo.transition(
                incident, status, actor="test", message=status.value, now=T0 + timedelta(seconds=offset)
            )
    async with store.session() as session:
        repo = IncidentRepository(session)
        incident = await repo.get(incident_id)
        assert incident.status == "resolved"
        assert incident.decided_at == T0 + timedelta(seconds=2)
        assert incident.action_started_at == T0 + timedelta(seconds=4)
        assert incident.mitigated_at == T0 + timedelta(seconds=5)
        assert incident.verified_at == incident.resolved_at == T0 + timedelta(seconds=6)
        events = await repo.events.list_for_incident(incident_id)
        assert [e.kind for e in events] == ["incident.opened"] + [f"status.{s.value}" for s in path]
        assert events[-1].data == {"from": "verifying", "to": "resolved"}


async def test_illegal_transition_raises_and_changes_nothing(store: Store) -> None:
    incident_id = await open_incident(store)
    with pytest.raises(IllegalTransition):
        async with store.session() as session:
            repo = IncidentRepository(session)
            await repo.transition(await repo.get(incident_id), IncidentStatus.ACTING, actor="t", message="x")
    async with store.session() as session:
        repo = IncidentRepository(session)
        assert (await repo.get(incident_id)).status == "open"
        assert len(await repo.events.list_for_incident(incident_id)) == 1


async def test_missing_incident_raises_not_found(store: Store) -> None:
    async with store.session() as session:
        with pytest.raises(IncidentNotFound):
            await IncidentRepository(session).get(424242)


async def test_timeline_is_append_only_in_the_database(store: Store) -> None:
    incident_id = await open_incident(store)
    for statement in ("UPDATE incident_events SET message = 'rewritten'", "DELETE FROM incident_events"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with store.session() as session:
                await session.execute(text(statement))
    async with store.session() as session:
        events = await IncidentRepository(session).events.list_for_incident(incident_id)
        assert [e.message for e in events] == ["opened by test"]


async def test_analysis_lease_is_exclusive_until_it_expires(store: Store) -> None:
    incident_id = await open_incident(store)
    lease = timedelta(seconds=30)
    async with store.session() as session:
        repo = IncidentRepository(session)
        assert await repo.list_needing_analysis(now=T0) == [incident_id]
        incident = await repo.take_analysis_lease(incident_id, owner="a", now=T0, lease=lease)
        assert incident is not None
        await repo.transition(incident, IncidentStatus.ANALYZING, actor="a", message="x", now=T0)
    async with store.session() as session:
        repo = IncidentRepository(session)
        assert await repo.list_needing_analysis(now=T0 + timedelta(seconds=10)) == []
        assert await repo.take_analysis_lease(incident_id, owner="b", now=T0, lease=lease) is None
        # The holder died: after the lease, another process picks the incident up again.
        later = T0 + timedelta(seconds=31)
        assert await repo.list_needing_analysis(now=later) == [incident_id]
        taken = await repo.take_analysis_lease(incident_id, owner="b", now=later, lease=lease)
        assert taken is not None and taken.lease_owner == "b"


async def enqueue(store: Store, service: str, *, at: datetime = T0, manual: bool = False) -> int:
    async with store.session() as session:
        action = await ActionRepository(session).enqueue(
            service=service,
            request=RollbackAction(target_revision=f"{service}-00001"),
            incident_id=None,
            manual=manual,
            requested_by="test",
            now=at,
        )
        return action.id


async def claim(store: Store, owner: str, now: datetime = T0) -> int | None:
    async with store.session() as session:
        action = await ActionRepository(session).claim_next(owner=owner, now=now, lease=timedelta(seconds=30))
        return action.id if action else None


async def test_claim_runs_one_action_per_service_and_takes_over_expired_leases(store: Store) -> None:
    a1 = await enqueue(store, "svc-a")
    a2 = await enqueue(store, "svc-a", at=T0 + timedelta(seconds=1))
    b1 = await enqueue(store, "svc-b", at=T0 + timedelta(seconds=2))
    assert await claim(store, "w1") == a1
    # svc-a is busy, so the next claim skips a2 and takes svc-b's action.
    assert await claim(store, "w2") == b1
    assert await claim(store, "w2") is None
    # w1 dies: after its lease, the running action is claimed again (not a2).
    later = T0 + timedelta(seconds=31)
    assert await claim(store, "w3", now=later) == a1
    async with store.session() as session:
        repo = ActionRepository(session)
        action = await repo.get(a1)
        assert (action.lease_owner, action.attempts, action.status) == ("w3", 2, "running")
        assert not await repo.renew_lease(action, owner="w1", now=later, lease=timedelta(seconds=30))
        assert await repo.renew_lease(action, owner="w3", now=later, lease=timedelta(seconds=30))
        action.status = ActionStatus.SUCCEEDED.value
    assert await claim(store, "w3", now=later) == a2


async def test_automatic_actions_are_counted_for_the_global_cap(store: Store) -> None:
    await enqueue(store, "svc-a")
    await enqueue(store, "svc-b", manual=True)
    await enqueue(store, "svc-c", at=T0 - timedelta(hours=2))
    async with store.session() as session:
        assert await ActionRepository(session).count_automatic_since(T0 - timedelta(hours=1)) == 1


def test_database_urls_are_normalized_and_bad_ones_named() -> None:
    assert resolve_database_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    assert resolve_database_url("postgres://u@h/db").drivername == "postgresql+asyncpg"
    assert resolve_database_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert resolve_database_url(None).drivername == "sqlite+aiosqlite"
    with pytest.raises(ValueError, match="mysql"):
        resolve_database_url("mysql://u@h/db")
    with pytest.raises(ValueError, match="not a database URL"):
        resolve_database_url("::::")


async def test_unreachable_database_reports_store_unavailable() -> None:
    store = Store.from_config(StoreConfig(url="postgresql://nobody@127.0.0.1:1/none", connect_timeout=1))
    try:
        with pytest.raises(StoreUnavailable, match="unavailable"):
            await store.ping()
    finally:
        await store.dispose()
