"""Less evidence never means more action: replay every scenario with one piece of evidence removed.

The contract (`incident-context/v1`) lets every optional field, and every producer's extension, be
absent: absent means unknown, never healthy and never guilty. So a decision on a context with a piece
removed must never be more aggressive than the decision on the full context. `ablate` checks that on
a scenario library: for every scenario, each removable piece that its context holds is removed alone
(an optional field deleted, a figure turned into null), the ablated context goes through the same
engine and policy, and its final action is compared with the full context's.

More aggressive: the ablated context's final action (after the policy, as the evaluation harness
scores it) is ROLLBACK or SCALE_UP, and the full context's final action is not that same change (the
same target, or the same scale).

Pieces, each named by its path (`[]` stands for every element of a list, removed one at a time):

    revisions[].baseline  revisions[].history  revisions[].created_at
    revisions[].metrics.{request_rate_rps,error_rate,latency_p95_ms}          (turned into null)
    scaling  scaling.{min_instances,max_instances,current_instances,concurrency,cpu,memory,utilization}
    metrics.baseline  metrics.baseline.{request_rate_rps,error_rate,latency_p95_ms}
    metrics.baseline_window_seconds  metrics.series  metrics.latency_p50_ms  metrics.latency_p99_ms
    metrics.{request_rate_rps,error_rate,latency_p95_ms,requests_in_window}   (turned into null)
    logs
    recent_actions[].{target_revision,from_revision,outcome}
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from analyzer.engines.base import DecisionEngine
from analyzer.evaluation import FinalAction, decide_finally, fixed_width_lines
from analyzer.policy import PolicyGuard
from incidents import Figures, IncidentContext, Scaling, Scenario

FIGURES: Final = ("request_rate_rps", "error_rate", "latency_p95_ms")
REVISION_FIELDS: Final = ("baseline", "history", "created_at")
SCALING_FIELDS: Final = tuple(Scaling.model_fields)
SERVICE_OPTIONAL: Final = ("baseline_window_seconds", "series", "latency_p50_ms", "latency_p99_ms")
SERVICE_FIGURES: Final = (*FIGURES, "requests_in_window")
ACTION_FIELDS: Final = ("target_revision", "from_revision", "outcome")

# Every piece `ablations` can remove, in the order reports list them.
PIECES: Final[tuple[str, ...]] = (
    *(f"revisions[].{name}" for name in REVISION_FIELDS),
    *(f"revisions[].metrics.{name}" for name in FIGURES),
    "scaling",
    *(f"scaling.{name}" for name in SCALING_FIELDS),
    "metrics.baseline",
    *(f"metrics.baseline.{name}" for name in FIGURES),
    *(f"metrics.{name}" for name in SERVICE_OPTIONAL),
    *(f"metrics.{name}" for name in SERVICE_FIGURES),
    "logs",
    *(f"recent_actions[].{name}" for name in ACTION_FIELDS),
)


@dataclass(frozen=True, kw_only=True)
class Ablation:
    """A context with one piece of evidence removed."""

    piece: str  # one of PIECES
    where: str | None  # which element of a list: a revision's name, a recent action's position
    context: IncidentContext


def _figures_present(figures: Figures) -> list[str]:
    return [name for name in FIGURES if getattr(figures, name) is not None]


def _with_revision(context: IncidentContext, index: int, **update: Any) -> IncidentContext:
    revisions = list(context.revisions)
    revisions[index] = revisions[index].model_copy(update=update)
    return context.model_copy(update={"revisions": revisions})


def _with_action(context: IncidentContext, index: int, **update: Any) -> IncidentContext:
    actions = list(context.recent_actions)
    actions[index] = actions[index].model_copy(update=update)
    return context.model_copy(update={"recent_actions": actions})


def _with_metrics(context: IncidentContext, **update: Any) -> IncidentContext:
    return context.model_copy(update={"metrics": context.metrics.model_copy(update=update)})


def ablations(context: IncidentContext) -> Iterator[Ablation]:
    """Every context with exactly one piece that `context` holds removed (see the module docstring)."""
    for index, revision in enumerate(context.revisions):
        for name in REVISION_FIELDS:
            if getattr(revision, name) is not None:
                yield Ablation(
                    piece=f"revisions[].{name}",
                    where=revision.name,
                    context=_with_revision(context, index, **{name: None}),
                )
        for name in _figures_present(revision.metrics):
            yield Ablation(
                piece=f"revisions[].metrics.{name}",
                where=revision.name,
                context=_with_revision(
                    context, index, metrics=revision.metrics.model_copy(update={name: None})
                ),
            )

    scaling = context.scaling
    present = [name for name in SCALING_FIELDS if getattr(scaling, name) is not None]
    if present:
        yield Ablation(piece="scaling", where=None, context=context.model_copy(update={"scaling": Scaling()}))
    for name in present:
        without = scaling.model_copy(update={name: None})
        yield Ablation(
            piece=f"scaling.{name}", where=None, context=context.model_copy(update={"scaling": without})
        )

    baseline = context.metrics.baseline
    baseline_figures = _figures_present(baseline)
    if baseline_figures:
        yield Ablation(
            piece="metrics.baseline", where=None, context=_with_metrics(context, baseline=Figures())
        )
    for name in baseline_figures:
        yield Ablation(
            piece=f"metrics.baseline.{name}",
            where=None,
            context=_with_metrics(context, baseline=baseline.model_copy(update={name: None})),
        )
    for name in (*SERVICE_OPTIONAL, *SERVICE_FIGURES):
        if getattr(context.metrics, name) is not None:
            yield Ablation(
                piece=f"metrics.{name}", where=None, context=_with_metrics(context, **{name: None})
            )

    if context.logs:
        yield Ablation(piece="logs", where=None, context=context.model_copy(update={"logs": []}))

    for index, action in enumerate(context.recent_actions):
        for name in ACTION_FIELDS:
            if getattr(action, name) is not None:
                yield Ablation(
                    piece=f"recent_actions[].{name}",
                    where=f"#{index} {action.action} at {action.at:%H:%M:%S}Z",
                    context=_with_action(context, index, **{name: None}),
                )


def more_aggressive(full: FinalAction, ablated: FinalAction) -> bool:
    """The ablated context changes Cloud Run in a way the full context does not."""
    return ablated.changes and not ablated.same_change(full)


@dataclass(frozen=True, kw_only=True)
class AblationRun:
    scenario_id: str
    piece: str
    where: str | None
    full: FinalAction
    ablated: FinalAction

    @property
    def more_aggressive(self) -> bool:
        return more_aggressive(self.full, self.ablated)


@dataclass(frozen=True, kw_only=True)
class PieceSummary:
    piece: str
    runs: int
    more_aggressive: int
    scenario_ids: list[str]  # the scenarios where removing it was more aggressive, in library order


@dataclass(frozen=True, kw_only=True)
class AblationReport:
    scenarios: int
    runs: list[AblationRun]

    @property
    def offending(self) -> list[AblationRun]:
        return [run for run in self.runs if run.more_aggressive]

    def by_piece(self) -> list[PieceSummary]:
        """One summary per piece in PIECES, those no scenario holds included (0 runs)."""
        summaries = []
        for piece in PIECES:
            runs = [run for run in self.runs if run.piece == piece]
            offending = [run.scenario_id for run in runs if run.more_aggressive]
            summaries.append(
                PieceSummary(
                    piece=piece,
                    runs=len(runs),
                    more_aggressive=len(offending),
                    scenario_ids=list(dict.fromkeys(offending)),
                )
            )
        return summaries

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "scenarios": self.scenarios,
            "runs": len(self.runs),
            "more_aggressive": len(self.offending),
            "pieces": [
                {
                    "piece": s.piece,
                    "runs": s.runs,
                    "more_aggressive": s.more_aggressive,
                    "scenario_ids": s.scenario_ids,
                }
                for s in self.by_piece()
            ],
            "offending": [
                {
                    "id": run.scenario_id,
                    "piece": run.piece,
                    "where": run.where,
                    "full": run.full.describe(),
                    "ablated": run.ablated.describe(),
                }
                for run in self.offending
            ],
        }


async def ablate_scenario(
    scenario: Scenario, engine: DecisionEngine, policy: PolicyGuard
) -> list[AblationRun]:
    _, full = await decide_finally(scenario.context, engine, policy)
    runs = []
    for ablation in ablations(scenario.context):
        _, ablated = await decide_finally(ablation.context, engine, policy)
        runs.append(
            AblationRun(
                scenario_id=scenario.id,
                piece=ablation.piece,
                where=ablation.where,
                full=full,
                ablated=ablated,
            )
        )
    return runs


async def ablate(
    scenarios: Sequence[Scenario], engine: DecisionEngine, policy: PolicyGuard
) -> AblationReport:
    runs = [run for scenario in scenarios for run in await ablate_scenario(scenario, engine, policy)]
    return AblationReport(scenarios=len(scenarios), runs=runs)


def render_ablation_table(report: AblationReport, *, examples: int = 3) -> str:
    """Per piece: runs, how many were more aggressive, the first offending scenarios; then a summary."""
    rows = []
    for summary in report.by_piece():
        shown = ", ".join(summary.scenario_ids[:examples])
        if len(summary.scenario_ids) > examples:
            shown += f", ... (+{len(summary.scenario_ids) - examples})"
        rows.append((summary.piece, summary.runs, summary.more_aggressive, shown or "-"))
    lines = fixed_width_lines(("removed (or null)", "runs", "more aggressive", "first scenarios"), rows)
    offending = report.offending
    scenario_count = len({run.scenario_id for run in offending})
    lines.append("")
    lines.append(
        f"{len(report.runs)} runs over {report.scenarios} scenarios: {len(offending)} more aggressive "
        f"than the full context (in {scenario_count} scenarios)"
    )
    return "\n".join(lines)
