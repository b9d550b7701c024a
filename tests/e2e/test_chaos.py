"""Never stuck, never twice, never lost: Remediator under faults of its own dependencies.

The quick faults of benchmarks/chaos.py, on one local stack (every real process, on a private
PostgreSQL server the harness restarts) with a 6 s actuator lease and a fast verification, so each
fault takes about a minute. Each demo service serves one fault; they run one after the other.
Every test asserts the same invariants (`FaultReport.violations`): no incident left where only
Remediator can move it, exactly one UpdateService per decision (counted by the emulator), every
delivered alert recorded, recovery within a bound generous for a 2-core machine. Each also checks
that its fault really happened, so none can pass by doing nothing.

Where today's code breaks an invariant the test is a strict xfail naming the defect: the fix turns
it into an XPASS, which fails the suite until the mark goes.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from tests.support.chaos import ChaosOptions, ChaosStack, FaultReport, IncidentRow
from tests.support.chaos_faults import FAULTS, FaultSettings, call_timeout_env
from tests.support.databases import run_outside_loop
from tests.support.private_postgres import PrivatePostgres, private_postgres_or_missing
from tests.support.real_parts import binary_or_missing

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SETTINGS = FaultSettings(
    lease_seconds=6,
    baseline_seconds=30,
    settle_seconds=90,
    recovery_bound=150,
    admin_api_outage_seconds=20,
)
STACK_ENV = {
    "ACTUATOR_LEASE_SECONDS": str(SETTINGS.lease_seconds),
    "VERIFY_INTERVAL_SECONDS": "2",
    "VERIFY_WINDOW_SECONDS": "10",
    "VERIFY_TIMEOUT_SECONDS": "60",
    **call_timeout_env(SETTINGS),
}
# Fault -> the demo service it runs on (the stack's own service takes the first).
FLOW_FAULTS = {
    "pg-restart-verifying": None,
    "pg-restart-acting": "chaos-pg-acting",
    "cloudrun-503-verifying": "chaos-503",
    "kill9-mid-action": "chaos-kill9",
}


@pytest.fixture(scope="module")
def reports() -> dict[str, FaultReport | BaseException]:
    """Run every fault once for the module, on a private event loop: the reports are data."""
    binary_or_missing("prometheus")
    binary_or_missing("prometheus-alertmanager")
    private_postgres_or_missing()
    return run_outside_loop(_run_faults())


async def _run_faults() -> dict[str, FaultReport | BaseException]:
    results: dict[str, FaultReport | BaseException] = {}
    async with ChaosStack(ChaosOptions(remediator_env=STACK_ENV), say=print) as chaos:
        started = time.monotonic()
        targets = {name: chaos.default_target() for name, service in FLOW_FAULTS.items() if service is None}
        for name, service in FLOW_FAULTS.items():
            if service is not None:
                targets[name] = await chaos.add_target(service)
        # While the new services build their baseline, the poison needs none.
        results["poison-payloads"] = await _run(chaos, "poison-payloads", chaos.default_target())
        for name, target in targets.items():
            await chaos.wait_for_baseline(target, SETTINGS.baseline_seconds, since=started)
            results[name] = await _run(chaos, name, target)
    return results


async def _run(chaos: ChaosStack, name: str, target: Any) -> FaultReport | BaseException:
    try:
        report = await FAULTS[name].run(chaos, target, SETTINGS)
    except Exception as exc:  # one fault that cannot run fails its own test, not the others
        return exc
    print(f"{name}: {report.as_dict()}")
    return report


def report_of(reports: dict[str, FaultReport | BaseException], name: str) -> FaultReport:
    report = reports[name]
    if isinstance(report, BaseException):
        raise report
    return report


def assert_decided_once_and_invariants_hold(report: FaultReport) -> None:
    # The fault met a real remediation: one decision to change Cloud Run, alerts that Alertmanager
    # sent. Not an assertion: a fault that did not happen must fail its test, never count as its xfail.
    if report.decisions != 1 or report.alerts_delivered < 1:
        pytest.fail(f"the fault did not meet one remediation: {report.as_dict()}")
    assert report.violations() == [], report.as_dict()


def test_postgres_restart_while_acting(reports: dict[str, FaultReport | BaseException]) -> None:
    report = report_of(reports, "pg-restart-acting")
    assert_decided_once_and_invariants_hold(report)
    assert not any("takeover" in note for note in report.notes), report.as_dict()


def test_postgres_restart_while_verifying(reports: dict[str, FaultReport | BaseException]) -> None:
    report = report_of(reports, "pg-restart-verifying")
    assert_decided_once_and_invariants_hold(report)
    assert not any("takeover" in note for note in report.notes), report.as_dict()


def test_cloud_run_503_during_verification(reports: dict[str, FaultReport | BaseException]) -> None:
    assert_decided_once_and_invariants_hold(report_of(reports, "cloudrun-503-verifying"))


def test_kill9_mid_action_then_restart(reports: dict[str, FaultReport | BaseException]) -> None:
    report = report_of(reports, "kill9-mid-action")
    assert_decided_once_and_invariants_hold(report)
    # The restarted process finished what the killed one started (a takeover, not a new action).
    assert any(note.startswith("action taken over") for note in report.notes), report.notes


def test_poison_payloads_do_not_lose_the_valid_alerts_beside_them(
    reports: dict[str, FaultReport | BaseException],
) -> None:
    report = report_of(reports, "poison-payloads")
    if report.alerts_delivered < 1000 or len(report.notes) != 6:
        pytest.fail(f"the poison storm did not happen: {report.as_dict()}")
    assert report.violations() == [], report.as_dict()
    # Bad input is a 4xx naming the problem, never a 5xx (which Alertmanager retries forever).
    assert not [note for note in report.notes if "'5" in note], report.notes


# --- the harness's own parts --------------------------------------------------------------------


async def test_private_postgres_keeps_committed_data_through_restart_and_kill9_and_freezes() -> None:
    private_postgres_or_missing()
    server = await asyncio.to_thread(PrivatePostgres.create)
    try:
        assert server.port != 5432 and server.data_dir.is_dir()
        url = await asyncio.to_thread(server.create_database, "chaos")
        connection = await asyncpg.connect(url)
        await connection.execute("CREATE TABLE kept (value int)")
        await connection.execute("INSERT INTO kept VALUES (1)")
        await asyncio.to_thread(server.restart)
        with pytest.raises((asyncpg.PostgresError, OSError, asyncpg.InterfaceError)):
            await connection.fetchval("SELECT 1")  # the restart ended the session
        connection.terminate()
        await asyncio.to_thread(server.kill)
        assert not server.running
        await asyncio.to_thread(server.start)
        connection = await asyncpg.connect(url)
        assert await connection.fetchval("SELECT count(*) FROM kept") == 1
        server.freeze()
        try:
            with pytest.raises(TimeoutError):
                await connection.fetchval("SELECT 1", timeout=1)
        finally:
            server.thaw()
        connection.terminate()  # its protocol state is undefined after the timeout
        connection = await asyncpg.connect(url)
        assert await connection.fetchval("SELECT count(*) FROM kept") == 1
        await connection.close()
    finally:
        await asyncio.to_thread(server.close)
    assert not server.base.exists() and not server.running


def _row(status: str, actions: list[dict[str, Any]], events: list[dict[str, Any]]) -> IncidentRow:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return IncidentRow(
        id=1,
        service="s",
        status=status,
        status_reason=None,
        detected_at=at,
        resolved_at=None,
        updated_at=at,
        actions=actions,
        events=events,
    )


def test_an_incident_verifying_with_its_only_action_finished_is_orphaned() -> None:
    failed = {"status": "failed", "manual": False, "attempts": 1}
    assert _row("verifying", [failed], []).orphaned
    assert not _row("verifying", [{**failed, "status": "running"}], []).orphaned
    assert not _row("escalated", [failed], []).machine_owned


def test_a_takeover_by_the_worker_that_started_the_action_is_counted() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    started = {
        "kind": "status.acting",
        "at": at,
        "message": "action 7 started by actuator-aaaa",
        "data": {"action_id": 7},
    }

    def takeover(owner: str) -> dict[str, Any]:
        message = f"{owner} took over action 7 (attempt 2) in phase pending"
        return {"kind": "action.takeover", "at": at, "message": message, "data": None}

    assert _row("resolved", [], [started, takeover("actuator-aaaa")]).self_takeovers() == 1
    assert _row("resolved", [], [started, takeover("actuator-bbbb")]).self_takeovers() == 0
