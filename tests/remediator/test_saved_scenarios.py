"""`remediator demo --save-scenario DIR`: a demo run saved as a scenario `remediator eval` scores."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from analyzer import PolicyGuard, RulesEngine, evaluate_scenario, load_scenarios
from remediator.cli import main
from remediator.demo import SCENARIOS, Injection, Outcome
from remediator.saved_scenarios import ScenarioNotSaved, recorded_scenario, save_scenario

LIBRARY = Path(__file__).parents[2] / "analyzer" / "scenarios"
ONSET = datetime(2026, 1, 10, 14, 31, 50, tzinfo=UTC)


def library_context(scenario_id: str) -> dict[str, Any]:
    document = json.loads((LIBRARY / f"{scenario_id}.json").read_text())
    return dict(document["context"])


def outcome(name: str, context: dict[str, Any] | None, *, decided: str = "ROLLBACK") -> Outcome:
    incident = None
    if context is not None:
        incident = {"id": 7, "status": "resolved", "context": context, "decision": {"action": decided}}
    return Outcome(
        scenario=name,
        expected_action=SCENARIOS[name].expected_action,
        incident=incident,
        injection=Injection(onset=ONSET, detail="deployed 00003", new_revision="demo-app-a-00003-jyy"),
        traffic_before={"demo-app-a-00002-etz": 100},
        traffic_after={"demo-app-a-00002-etz": 100},
        alert_firing_at=None,
        previous_revision="demo-app-a-00002-etz",
    )


def test_a_saved_bad_deploy_is_a_scenario_eval_scores(tmp_path: Path) -> None:
    context = library_context("bad-deploy-full-traffic-5xx")
    scenario = recorded_scenario(outcome("bad-deploy", context), SCENARIOS["bad-deploy"], metrics="app")
    path = save_scenario(scenario, tmp_path)
    assert path.name == "recorded-bad-deploy-app-20260110T143150Z.json"
    (loaded,) = load_scenarios(tmp_path)
    assert loaded.category == "bad_deploy"
    assert loaded.expect.action.value == "ROLLBACK"
    assert loaded.expect.target_revision == "demo-app-a-00002-etz"
    assert {a.value for a in loaded.expect.forbidden} == {"SCALE_UP"}
    assert "Remediator decided ROLLBACK" in loaded.description
    assert loaded.context.model_dump() == scenario.context.model_dump()


async def test_the_expectation_is_the_truth_not_what_remediator_did(tmp_path: Path) -> None:
    # A dependency outage that Remediator (wrongly) rolled back is saved as INVESTIGATE, so that
    # eval keeps showing a rollback there as harmful.
    context = library_context("dependency-outage-long-serving")
    run = outcome("dependency-outage", context, decided="ROLLBACK")
    scenario = recorded_scenario(run, SCENARIOS["dependency-outage"], metrics="app")
    assert scenario.expect.action.value == "INVESTIGATE"
    assert scenario.expect.target_revision is None
    assert {a.value for a in scenario.expect.forbidden} == {"ROLLBACK", "SCALE_UP"}
    result = await evaluate_scenario(scenario, RulesEngine(), PolicyGuard())
    assert result.correct and not result.harmful


def test_a_start_up_blip_cannot_be_saved() -> None:
    context = library_context("bad-deploy-full-traffic-5xx")
    with pytest.raises(ScenarioNotSaved, match="startup-blip demo cannot be saved"):
        recorded_scenario(outcome("startup-blip", context), SCENARIOS["startup-blip"], metrics="app")


def test_a_run_without_an_incident_is_not_saved() -> None:
    with pytest.raises(ScenarioNotSaved, match="no incident with a recorded context"):
        recorded_scenario(outcome("bad-deploy", None), SCENARIOS["bad-deploy"], metrics="app")


def test_a_context_that_is_not_valid_is_not_saved() -> None:
    context = library_context("bad-deploy-full-traffic-5xx")
    del context["service"]
    with pytest.raises(ScenarioNotSaved, match="not a valid scenario"):
        recorded_scenario(outcome("bad-deploy", context), SCENARIOS["bad-deploy"], metrics="app")


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    context = library_context("bad-deploy-full-traffic-5xx")
    scenario = recorded_scenario(outcome("bad-deploy", context), SCENARIOS["bad-deploy"], metrics="app")
    save_scenario(scenario, tmp_path)
    with pytest.raises(ScenarioNotSaved, match="already exists"):
        save_scenario(scenario, tmp_path)


def test_the_demo_refuses_to_save_a_blip_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["demo", "--scenario", "startup-blip", "--save-scenario", str(tmp_path)])
    assert code == 2
    assert "cannot be saved as a scenario" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
