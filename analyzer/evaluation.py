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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from analyzer.engines.base import DecisionEngine, EngineResult
from analyzer.exceptions import PayloadInvalid
from analyzer.policy import PolicyGuard, PolicyHistory, Verdict
from incidents import CHANGING_ACTIONS, ActionType, Decision, IncidentContext, ScaleChange, Scenario


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
class Tally:
    """How many results a group holds, and how many of them were correct or harmful."""

    total: int = 0
    correct: int = 0
    harmful: int = 0

    def to_json_dict(self) -> dict[str, int]:
        return {"total": self.total, "correct": self.correct, "harmful": self.harmful}


def tally_by(results: Iterable[ScenarioResult], key: Callable[[ScenarioResult], str]) -> dict[str, Tally]:
    """Results grouped by `key`, sorted by the group's name."""
    groups: dict[str, list[ScenarioResult]] = {}
    for result in results:
        groups.setdefault(key(result), []).append(result)
    return {
        name: Tally(
            total=len(group),
            correct=sum(r.correct for r in group),
            harmful=sum(r.harmful for r in group),
        )
        for name, group in sorted(groups.items())
    }


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

    def by_category(self) -> dict[str, Tally]:
        return tally_by(self.results, lambda r: r.category)

    def by_engine(self) -> dict[str, Tally]:
        """Grouped by the engine that made the decision (the rules engine, when a model engine fell back)."""
        return tally_by(self.results, lambda r: r.engine)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "correct": self.correct,
            "harmful": self.harmful,
            "accuracy": self.accuracy,
            "by_category": {name: t.to_json_dict() for name, t in self.by_category().items()},
            "by_engine": {name: t.to_json_dict() for name, t in self.by_engine().items()},
            "results": [
                {
                    "id": r.id,
                    "category": r.category,
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


def history_from_context(context: IncidentContext) -> PolicyHistory:
    """The store's history as the policy would read it, from the context's `recent_actions`."""
    automatic = [a for a in context.recent_actions if not a.manual and a.action in CHANGING_ACTIONS]
    last_hour = [a for a in automatic if context.observed_at - a.at <= timedelta(hours=1)]
    return PolicyHistory(
        recent_actions=list(context.recent_actions),
        last_automatic_action_at=max((a.at for a in automatic), default=None),
        automatic_actions_last_hour=len(last_hour),
    )


def history_from_scenario(scenario: Scenario) -> PolicyHistory:
    return history_from_context(scenario.context)


@dataclass(frozen=True, kw_only=True)
class FinalAction:
    """What Remediator finally does about a context: the engine's decision after the policy.

    An action that is held for approval, suppressed or overruled is INVESTIGATE: nothing changes
    until a human acts.
    """

    action: ActionType
    target_revision: str | None = None
    scale: ScaleChange | None = None
    verdict: Verdict
    reason: str | None = None

    @property
    def changes(self) -> bool:
        return self.action in CHANGING_ACTIONS

    def same_change(self, other: FinalAction) -> bool:
        return (self.action, self.target_revision, self.scale) == (
            other.action,
            other.target_revision,
            other.scale,
        )

    def describe(self) -> str:
        if self.action is ActionType.ROLLBACK:
            return f"ROLLBACK {self.target_revision}"
        if self.action is ActionType.SCALE_UP and self.scale is not None:
            return f"SCALE_UP {self.scale.min_instances}-{self.scale.max_instances}"
        return self.action.value


def final_action(
    decision: Decision, context: IncidentContext, policy: PolicyGuard, *, approval_reason: str | None = None
) -> FinalAction:
    """The policy's verdict on `decision` at the context's `observed_at`, with its recent actions."""
    outcome = policy.evaluate(
        decision,
        context,
        history_from_context(context),
        now=context.observed_at,
        approval_reason=approval_reason,
    )
    acts = outcome.verdict in (Verdict.EXECUTE, Verdict.PASS)
    action = outcome.decision.action if acts else ActionType.INVESTIGATE
    return FinalAction(
        action=action,
        target_revision=outcome.decision.target_revision if action is ActionType.ROLLBACK else None,
        scale=outcome.decision.scale if action is ActionType.SCALE_UP else None,
        verdict=outcome.verdict,
        reason=outcome.reason,
    )


async def decide_finally(
    context: IncidentContext, engine: DecisionEngine, policy: PolicyGuard
) -> tuple[EngineResult, FinalAction]:
    """The engine's answer on `context`, and what Remediator finally does with it."""
    result = await engine.decide(context)
    return result, final_action(result.decision, context, policy, approval_reason=result.approval_reason)


async def evaluate_scenario(
    scenario: Scenario, engine: DecisionEngine, policy: PolicyGuard
) -> ScenarioResult:
    result, final = await decide_finally(scenario.context, engine, policy)
    proposed = result.decision
    expect = scenario.expect
    target_ok = (
        final.action is not ActionType.ROLLBACK
        or expect.target_revision is None
        or final.target_revision == expect.target_revision
    )
    harmful = (
        final.action in expect.forbidden
        or (final.changes and expect.action in (ActionType.INVESTIGATE, ActionType.NONE))
        or (final.action is ActionType.ROLLBACK and not target_ok)
    )
    correct = not harmful and (
        (final.action is expect.action and target_ok) or final.action in expect.acceptable
    )
    return ScenarioResult(
        id=scenario.id,
        category=scenario.category,
        expected=expect.action.value,
        expected_target=expect.target_revision,
        action=final.action.value,
        target_revision=final.target_revision,
        proposed_action=proposed.action.value,
        proposed_target=proposed.target_revision,
        verdict=final.verdict.value,
        reason=final.reason,
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


def fixed_width_lines(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """Left-aligned columns under a header and a dashed rule."""
    widths = [max(len(str(row[i])) for row in (headers, *rows)) for i in range(len(headers))]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def _tally_table(title: str, tallies: dict[str, Tally]) -> list[str]:
    rows = [(name, t.total, t.correct, t.harmful) for name, t in tallies.items()]
    return fixed_width_lines((title, "total", "correct", "harmful"), rows)


def render_table(report: EvaluationReport) -> str:
    """Every scenario, the one-line summary, then the totals per category and per engine."""
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
    lines = fixed_width_lines(headers, rows)
    lines.append("")
    lines.append(f"{report.correct}/{report.total} correct ({report.accuracy:.1%}), {report.harmful} harmful")
    lines.append("")
    lines.extend(_tally_table("category", report.by_category()))
    lines.append("")
    lines.extend(_tally_table("engine", report.by_engine()))
    return "\n".join(lines)
