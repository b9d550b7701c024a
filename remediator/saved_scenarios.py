"""A demo run saved as a scenario for `remediator eval`: the context the engine saw, recorded from
the live incident, with the outcome the injected fault calls for.

The expectation comes from what the demo injected (the ground truth), never from what Remediator
did: a run where Remediator decided wrong is saved with the right answer, so that `remediator eval`
shows the miss until it is fixed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from analyzer.evaluation import expectation_problem
from incidents import CHANGING_ACTIONS, ActionType, Expectation, RemediatorError, Scenario

if TYPE_CHECKING:
    from remediator.demo import DemoScenario, Outcome


@dataclass(frozen=True)
class Recordable:
    """How a demo scenario turns into a library scenario."""

    category: str
    truth: str


# The startup-blip demo is absent on purpose: the engine rightly reads its context as a bad deploy
# (the revision is failing when the context is collected); what spares it is the fresh check made
# after the engine decides, which a replayed context cannot show.
RECORDABLE: dict[str, Recordable] = {
    "bad-deploy": Recordable("bad_deploy", "the new revision brought the errors: roll back"),
    "canary": Recordable("bad_deploy", "the canary revision brought the errors: roll back"),
    "latency-deploy": Recordable("bad_deploy", "the new revision is slower: roll back"),
    "traffic-spike": Recordable("capacity", "the load tripled on a service at its ceiling: scale up"),
    "dependency-outage": Recordable(
        "dependency_outage", "the long-serving revision's dependency fails: a human investigates"
    ),
}


class ScenarioNotSaved(RemediatorError):
    """The run cannot be saved as a scenario (nothing to record, or a scenario that cannot be scored)."""


def recorded_scenario(outcome: Outcome, demo: DemoScenario, *, metrics: str) -> Scenario:
    """The scenario for `outcome`: its incident's context and the demo's expected action."""
    recordable = RECORDABLE.get(demo.name)
    if recordable is None:
        known = ", ".join(RECORDABLE)
        raise ScenarioNotSaved(
            f"the {demo.name} demo cannot be saved as a scenario: its outcome is decided after the "
            f"context (by the fresh check before acting), so a replayed context cannot score it; "
            f"these can: {known}"
        )
    incident = outcome.incident
    if incident is None or not incident.get("context"):
        raise ScenarioNotSaved(
            f"nothing to save: no incident with a recorded context for the {demo.name} run "
            "(did the alert fire?)"
        )
    expected = ActionType(demo.expected_action)
    expect = Expectation(
        action=expected,
        target_revision=outcome.previous_revision if expected is ActionType.ROLLBACK else None,
        forbidden=sorted((a for a in CHANGING_ACTIONS if a is not expected), key=lambda a: a.value),
    )
    onset = outcome.injection.onset
    stamp = onset.strftime("%Y%m%dT%H%M%SZ")
    decided = (incident.get("decision") or {}).get("action") or "nothing"
    try:
        scenario = Scenario.model_validate(
            {
                "id": f"recorded-{demo.name}-{metrics}-{stamp}",
                "category": recordable.category,
                "description": (
                    f"Recorded from the local stack ({metrics} metrics) at {_iso(onset)}: "
                    f"{outcome.injection.detail}. Truth: {recordable.truth}. "
                    f"Remediator decided {decided} in that run."
                ),
                "context": incident["context"],
                "expect": expect.model_dump(mode="json"),
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ScenarioNotSaved(
            f"the incident's context is not a valid scenario: {first['loc']}: {first['msg']}"
        ) from None
    problem = expectation_problem(scenario)
    if problem:
        raise ScenarioNotSaved(f"scenario {scenario.id}: {problem}")
    return scenario


def save_scenario(scenario: Scenario, directory: Path) -> Path:
    """Write `scenario` as `<id>.json` in `directory` (created if needed); never overwrites."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{scenario.id}.json"
    if path.exists():
        raise ScenarioNotSaved(f"{path} already exists")
    document = scenario.model_dump(mode="json")
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    return path


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="seconds").replace("+00:00", "Z")
