"""Migration 0005 (linked incidents, analysis rounds, the fault of each action) goes both ways and
keeps the alerts that are already recorded, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from incidents import IncidentRepository, Store, StoreConfig, current_revision, upgrade, utcnow
from incidents.migrate import downgrade
from tests.support.databases import create_scratch_postgres_database, drop_scratch_postgres_database


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_the_lifecycle_migration_goes_down_and_up_with_data(backend: str, tmp_path: Path) -> None:
    url = (
        f"sqlite:///{tmp_path / 'migrate.db'}"
        if backend == "sqlite"
        else await create_scratch_postgres_database()
    )
    store = Store.from_config(StoreConfig(url=url))
    try:
        await upgrade(store, "0004")
        now = utcnow()
        async with store.session() as session:
            await session.execute(
                text(
                    "INSERT INTO incidents (service, status, origin, detected_at, created_at, updated_at, "
                    "analysis_attempts) VALUES ('svc', 'resolved', 'alert', :now, :now, :now, 0)"
                ),
                {"now": now.replace(tzinfo=None) if backend == "sqlite" else now},
            )
        await upgrade(store)
        assert await current_revision(store) == "0005"
        async with store.session() as session:
            repo = IncidentRepository(session)
            [incident] = await repo.list_incidents()
            assert (incident.analysis_round, incident.previous_incident_id) == (1, None)
            follower, _ = await repo.open("svc", now=now, actor="test", message="recurred")
            follower.previous_incident_id = incident.id
            for owner in (incident, follower):  # one alert, in both incidents
                assert await repo.add_alert(
                    owner,
                    fingerprint="f00d",
                    starts_at=now,
                    alertname="HighErrorRate",
                    status="firing",
                    severity="critical",
                    labels={},
                    annotations={},
                    generator_url=None,
                    received_at=now,
                )
            assert not await repo.add_alert(
                follower,
                fingerprint="f00d",
                starts_at=now,
                alertname="HighErrorRate",
                status="firing",
                severity="critical",
                labels={},
                annotations={},
                generator_url=None,
                received_at=now,
            )
        async with store.session() as session:
            await session.execute(
                text("DELETE FROM incident_alerts WHERE incident_id <> :id"), {"id": incident.id}
            )
        await downgrade(store, "0004")
        await upgrade(store)
        assert await current_revision(store) == "0005"
    finally:
        await store.dispose()
        if backend == "postgresql":
            await drop_scratch_postgres_database(url)
