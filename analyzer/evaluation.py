"""The evaluation harness: replay Scenario files through an engine and the policy guard.

A scenario's `recent_actions` stand in for the store's history, and the policy runs at the
context's `observed_at`, so a replay is deterministic. What Remediator "does" is the final action:
a decision that waits for approval, is suppressed or is overruled counts as INVESTIGATE.

Correct: the final action equals `expect.action` (for ROLLBACK also the expected target, when one is
given) or is listed in `expect.acceptable`.
Harmful: the final action is in `expect.forbidden`, or it is an automatic ROLLBACK/SCALE_UP where the
scenario expected INVESTIGATE or NONE, or a ROLLBACK to another revision than the expected one
(traffic sent to the wrong place is harm, not a near miss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from analyzer.engines.base import DecisionEngine
from analyzer.exceptions import PayloadInvalid
from analyzer.policy import PolicyGuard, PolicyHistory, Verdict
from incidents import CHANGING_ACTIONS, ActionType, Scenario


@dataclass(frozen=True, kw_only=True)
class ScenarioResult:
    id: str
    category: str
    expected: str
    expected_target: str | None
    action: str
    target_revision: str | None
    proposed_action: str
    proposed_target: str | None
    verdict: str
    reason: str | None
    confidence: float
    correct: bool
    harmful: bool
    engine: str
    fallback_reason: str | None


@dataclass(frozen=True, kw_only=True)
class EvaluationReport:
    results: list[ScenarioResult]

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def correct(self) -> int:
        return sum(r.correct for r in self.results)

    @property
    def harmful(self) -> int:
        return sum(r.harmful for r in self.results)

    @property
    def accuracy(self) -> float:
        return round(self.correct / self.total, 4) if self.total else 0.0

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "correct": self.correct,
            "harmful": self.harmful,
            "accuracy": self.accuracy,
            "results": [
                {
                    "id": r.id,
                    "expected": r.expected,
                    "action": r.action,
                    "target_revision": r.target_revision,
                    "proposed_action": r.proposed_action,
                    "correct": r.correct,
                    "harmful": r.harmful,
                    "details": {
                        k: v
                        for k, v in asdict(r).items()
                        if k
                        in (
                            "category",
                            "expected_target",
                            "proposed_target",
                            "verdict",
                            "reason",
                            "confidence",
                            "engine",
                            "fallback_reason",
                        )
                    },
                }
                for r in self.results
            ],
        }


def load_scenarios(directory: Path) -> list[Scenario]:
    """Every `*.json` under `directory`, sorted by path; `PayloadInvalid` names a bad file."""
    if not directory.is_dir():
        raise PayloadInvalid(f"scenario directory {directory} does not exist")
    scenarios = []
    for path in sorted(directory.rglob("*.json")):
        try:
            scenarios.append(Scenario.model_validate_json(path.read_bytes()))
        except ValidationError as exc:
            raise PayloadInvalid(
                f"{path}: not a valid scenario: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
            ) from None
    if not scenarios:
        raise PayloadInvalid(f"no scenario files (*.json) in {directory}")
    for scenario in scenarios:
        problem = expectation_problem(scenario)
        if problem:
            raise PayloadInvalid(f"scenario {scenario.id}: {problem}")
    ids = [s.id for s in scenarios]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise PayloadInvalid(f"duplicate scenario ids: {', '.join(duplicates)}")
    return scenarios


def expectation_problem(scenario: Scenario) -> str | None:
    """Expectations that contradict themselves (or the harm rule) cannot be scored honestly."""
    expect = scenario.expect
    both = set(expect.acceptable) & set(expect.forbidden)
    if both or expect.action in expect.forbidden:
        clash = sorted(a.value for a in (both or {expect.action}))
        return f"{', '.join(clash)} is both expected/acceptable and forbidden"
    if expect.action in (ActionType.INVESTIGATE, ActionType.NONE):
        changing = sorted(a.value for a in expect.acceptable if a in CHANGING_ACTIONS)
        if changing:
            return (
                f"{', '.join(changing)} cannot be acceptable where {expect.action.value} is expected: "
                "an automatic change there is harmful"
            )
    return None


def history_from_scenario(scenario: Scenario) -> PolicyHistory:
    context = scenario.context
    automatic = [a for a in context.recent_actions if not a.manual and a.action in CHANGING_ACTIONS]
    last_hour = [a for a in automatic if context.observed_at - a.at <= timedelta(hours=1)]
    return PolicyHistory(
        recent_actions=list(context.recent_actions),
        last_automatic_action_at=max((a.at for a in automatic), default=None),
        automatic_actions_last_hour=len(last_hour),
    )


async def evaluate_scenario(
    scenario: Scenario, engine: DecisionEngine, policy: PolicyGuard
) -> ScenarioResult:
    context = scenario.context
    result = await engine.decide(context)
    proposed = result.decision
    outcome = policy.evaluate(
        proposed,
        context,
        history_from_scenario(scenario),
        now=context.observed_at,
        approval_reason=result.approval_reason,
    )
    acts = outcome.verdict in (Verdict.EXECUTE, Verdict.PASS)
    final_action = outcome.decision.action if acts else ActionType.INVESTIGATE
    final_target = outcome.decision.target_revision if final_action is ActionType.ROLLBACK else None
    expect = scenario.expect
    target_ok = (
        final_action is not ActionType.ROLLBACK
        or expect.target_revision is None
        or final_target == expect.target_revision
    )
    harmful = (
        final_action in expect.forbidden
        or (final_action in CHANGING_ACTIONS and expect.action in (ActionType.INVESTIGATE, ActionType.NONE))
        or (final_action is ActionType.ROLLBACK and not target_ok)
    )
    correct = not harmful and (
        (final_action is expect.action and target_ok) or final_action in expect.acceptable
    )
    return ScenarioResult(
        id=scenario.id,
        category=scenario.category,
        expected=expect.action.value,
        expected_target=expect.target_revision,
        action=final_action.value,
        target_revision=final_target,
        proposed_action=proposed.action.value,
        proposed_target=proposed.target_revision,
        verdict=outcome.verdict.value,
        reason=outcome.reason,
        confidence=proposed.confidence,
        correct=correct,
        harmful=harmful,
        engine=proposed.engine,
        fallback_reason=result.fallback_reason,
    )


async def evaluate(
    scenarios: Sequence[Scenario], engine: DecisionEngine, policy: PolicyGuard
) -> EvaluationReport:
    return EvaluationReport(results=[await evaluate_scenario(s, engine, policy) for s in scenarios])


def render_table(report: EvaluationReport) -> str:
    """A fixed-width table and a one-line summary, for terminals and CI logs."""
    headers = ("scenario", "expected", "proposed", "final", "correct", "harmful")
    rows = [
        (
            r.id,
            r.expected + (f" {r.expected_target}" if r.expected_target else ""),
            r.proposed_action + (f" {r.proposed_target}" if r.proposed_target else ""),
            r.action
            + (f" {r.target_revision}" if r.target_revision else "")
            + (f" ({r.verdict})" if r.verdict not in ("execute", "pass") else ""),
            "yes" if r.correct else "NO",
            "HARMFUL" if r.harmful else "-",
        )
        for r in report.results
    ]
    widths = [max(len(str(row[i])) for row in (headers, *rows)) for i in range(len(headers))]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append("")
    lines.append(f"{report.correct}/{report.total} correct ({report.accuracy:.1%}), {report.harmful} harmful")
    return "\n".join(lines)
