"""`remediator incident escalate|close ID --reason ...`: the API's take-over, from the command line."""

from __future__ import annotations

import asyncio

import pytest

from incidents import ActionStatus, IncidentRepository, IncidentStatus, Store
from remediator.cli import main
from tests.support.incident_states import incident_in


@pytest.fixture
def store_env(store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("DATABASE_URL", store.url.render_as_string(hide_password=False))
    monkeypatch.setenv("REMEDIATOR_LOG_FORMAT", "text")
    return store


async def cli(*args: str) -> int:
    # main() runs its own event loop: off this one.
    return await asyncio.to_thread(main, list(args))


async def status_of(store: Store, incident_id: int) -> tuple[str, str | None]:
    async with store.session() as session:
        incident = await IncidentRepository(session).get(incident_id)
    return incident.status, incident.status_reason


async def test_escalate_and_close_from_the_command_line(
    store_env: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    incident_id, _ = await incident_in(store_env, IncidentStatus.VERIFYING, action=ActionStatus.RUNNING)
    assert (
        await cli("incident", "escalate", str(incident_id), "--reason", "pager says so", "--by", "carol") == 0
    )
    assert (
        capsys.readouterr().out.strip() == f"incident {incident_id}: escalated (was verifying): pager says so"
    )
    assert await status_of(store_env, incident_id) == ("escalated", "escalated by carol: pager says so")
    assert await cli("incident", "close", str(incident_id), "--reason", "fixed", "--by", "carol") == 0
    assert await status_of(store_env, incident_id) == ("closed", "closed by carol: fixed")


async def test_refusals_exit_1_with_the_reason_and_bad_input_exits_2(
    store_env: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    resolved, _ = await incident_in(store_env, IncidentStatus.RESOLVED)
    assert await cli("incident", "close", str(resolved), "--reason", "x") == 1
    assert f"remediator: error: incident {resolved} is resolved: it has ended" in capsys.readouterr().err
    assert await cli("incident", "escalate", "987654", "--reason", "x") == 1
    assert "remediator: error: incident 987654 not found" in capsys.readouterr().err
    for reason in ("   ", "line\nbreak", "x" * 1001):
        assert await cli("incident", "escalate", str(resolved), "--reason", reason) == 2
        assert "--reason must be 1 to 1000 characters" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        await cli("incident", "escalate", "seven", "--reason", "x")
    assert exited.value.code == 2
    assert "an incident id is a positive integer, got 'seven'" in capsys.readouterr().err
