"""Manual commands: the same checks and audit trail as automatic actions, marked manual."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from incidents import (
    Action,
    ActionRepository,
    Incident,
    IncidentRepository,
    IncidentStatus,
    RollbackAction,
    Store,
    utcnow,
)
from remediator.manual import ManualActionRefused, run_manual_command
from remediator.settings import Settings
from tests.actuator.support import (
    SERVICE,
    ScriptedVerifier,
    deploy_stable_then_bad,
    emulator_clients,
    make_worker,
)
from tests.demo_apps.cloudrun_harness import Emulator, revision_id, running_emulator
from tests.support.real_parts import free_port


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with running_emulator() as running:
        yield running


def settings_for(store: Store, emulator: Emulator, **extra: str) -> Settings:
    return Settings.from_env(
        {
            "DATABASE_URL": store.url.render_as_string(hide_password=False),
            "CLOUD_RUN_ENDPOINT": emulator.base_url,
            "PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
            # Nothing listens on that Prometheus port, so its gap is immediate; the emulator's answer
            # gets the time a loaded CI machine needs (1 s was missed there once).
            "COLLECTOR_TIMEOUT_SECONDS": "5",
            "VERIFY_TIMEOUT_SECONDS": "5",
            "VERIFY_INTERVAL_SECONDS": "0.5",
            **extra,
        }
    )


def command(kind: str, **fields: Any) -> argparse.Namespace:
    defaults = {
        "manual": kind,
        "service": SERVICE,
        "by": "alice",
        "reason": "known bad build",
        "no_wait": True,
    }
    return argparse.Namespace(**{**defaults, **fields})


async def counts(store: Store) -> tuple[int, int]:
    async with store.session() as session:
        incidents = await session.scalar(select(func.count()).select_from(Incident))
        actions = await session.scalar(select(func.count()).select_from(Action))
    return int(incidents or 0), int(actions or 0)


async def test_manual_rollback_is_queued_audited_and_executed(store: Store, emulator: Emulator) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    settings = settings_for(store, emulator)
    assert await run_manual_command(settings, command("rollback", revision=deployed.stable)) == 0
    async with store.session() as session:
        (incident,) = await IncidentRepository(session).list_incidents()
        (action,) = await ActionRepository(session).list_for_incident(incident.id)
        events = await IncidentRepository(session).events.list_for_incident(incident.id)
    assert (incident.origin, incident.status, incident.engine) == ("manual", "queued", "manual")
    assert (action.type, action.manual, action.requested_by) == ("ROLLBACK", True, "user:alice")
    assert action.params == {"target_revision": deployed.stable, "from_revision": deployed.bad}
    assert {event.actor for event in events} == {"user:alice"}
    assert "known bad build" in incident.decision["root_cause"]

    clients = emulator_clients(emulator)
    try:
        await make_worker(store, clients, verifier=ScriptedVerifier()).run_once()
    finally:
        clients.close()
    service = await emulator.get(SERVICE)
    assert [(t.revision, t.percent) for t in service.traffic] == [(deployed.stable, 100)]
    async with store.session() as session:
        done = await IncidentRepository(session).get(incident.id)
    assert done.status == "resolved"
    assert done.mttr_seconds is None  # a manual change has no fault start to measure from


@pytest.mark.parametrize(
    ("kind", "fields", "env", "message"),
    [
        ("rollback", {"revision": f"{SERVICE}-99999-zzz"}, {}, "is not a revision of"),
        ("rollback", {"revision": "STABLE"}, {"REMEDIATOR_MODE": "dry-run"}, "dry-run"),
        (
            "rollback",
            {"revision": "STABLE"},
            {"REMEDIATOR_ALLOWED_SERVICES": "payments"},
            "not in REMEDIATOR_ALLOWED_SERVICES",
        ),
        ("scale", {"min_instances": 5, "max_instances": 2}, {}, "min <= max"),
        ("scale", {"min_instances": 1, "max_instances": 500}, {}, "exceeds REMEDIATOR_MAX_INSTANCES=100"),
    ],
)
async def test_refused_requests_change_nothing(
    store: Store, emulator: Emulator, kind: str, fields: dict[str, Any], env: dict[str, str], message: str
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    fields = {k: deployed.stable if v == "STABLE" else v for k, v in fields.items()}
    before = await emulator.get(SERVICE)
    with pytest.raises(ManualActionRefused, match=message):
        await run_manual_command(settings_for(store, emulator, **env), command(kind, **fields))
    assert await counts(store) == (0, 0)
    after = await emulator.get(SERVICE)
    assert list(after.traffic) == list(before.traffic)
    assert after.scaling == before.scaling


async def test_release_to_the_revision_a_rollback_left_needs_force(
    store: Store, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    await emulator.set_traffic(SERVICE, {deployed.stable: 100})
    async with store.session() as session:
        await ActionRepository(session).enqueue(
            service=SERVICE,
            request=RollbackAction(target_revision=deployed.stable, from_revision=deployed.bad),
            incident_id=None,
            manual=False,
            requested_by="analyzer",
            now=utcnow() - timedelta(minutes=5),
        )
    settings = settings_for(store, emulator)
    with pytest.raises(ManualActionRefused, match="deploy a fix first, or pass --force"):
        await run_manual_command(settings, command("release", force=False))
    assert await run_manual_command(settings, command("release", force=True)) == 0
    # It says where the traffic goes.
    output = capsys.readouterr().out
    assert f"(release {SERVICE} to {deployed.bad}, its latest ready revision)" in output
    async with store.session() as session:
        queued = await session.scalar(select(Action).where(Action.type == "RELEASE"))
    assert queued is not None
    assert queued.manual


async def test_a_human_can_act_on_an_incident_remediator_escalated(store: Store, emulator: Emulator) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    now = utcnow()
    async with store.session() as session:
        incidents = IncidentRepository(session)
        incident, _ = await incidents.open(SERVICE, now=now, actor="alertmanager", message="firing")
        for status in (IncidentStatus.ANALYZING, IncidentStatus.DECIDED, IncidentStatus.ESCALATED):
            await incidents.transition(incident, status, actor="analyzer", message=status.value, now=now)
        incident_id = incident.id
    assert (
        await run_manual_command(settings_for(store, emulator), command("rollback", revision=deployed.stable))
        == 0
    )
    async with store.session() as session:
        repository = IncidentRepository(session)
        incident = await repository.get(incident_id)
        kinds = [e.kind for e in await repository.events.list_for_incident(incident_id)]
        assert [a.manual for a in await ActionRepository(session).list_for_incident(incident_id)] == [True]
    assert incident.status == "queued"
    assert kinds[-3:] == ["manual.requested", "action.queued", "status.queued"]


async def test_waiting_reports_an_unverified_change_with_exit_1(
    store: Store, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    deployed = await deploy_stable_then_bad(emulator)
    code = await run_manual_command(
        settings_for(store, emulator), command("rollback", revision=deployed.stable, no_wait=False)
    )
    output = capsys.readouterr().out
    assert code == 1  # Prometheus is unreachable here, so recovery cannot be verified
    assert f"succeeded; recovery not verified; traffic on {deployed.stable}" in output
    service = await emulator.get(SERVICE)
    assert [revision_id(t.revision) for t in service.traffic] == [deployed.stable]
