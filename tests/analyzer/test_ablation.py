"""The ablation harness: which pieces of evidence it removes, how it compares, what it reports."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from analyzer.ablation import (
    PIECES,
    AblationReport,
    ablate,
    ablations,
    more_aggressive,
    render_ablation_table,
)
from analyzer.engines.base import EngineResult
from analyzer.evaluation import FinalAction
from analyzer.policy import PolicyGuard, Verdict
from incidents import ActionType, Decision, IncidentContext, ScaleChange, Scenario

SERVICE = "orders-api"
NEW, PREV, OLDER = (f"{SERVICE}-{n:05d}-abc" for n in (3, 2, 1))


def rich_context() -> dict[str, Any]:
    """A context holding every piece the harness can remove, each exactly once (two revisions)."""
    return {
        "observed_at": "2026-05-12T14:08:40Z",
        "service": {"name": SERVICE},
        "alert": {
            "name": "HighErrorRate",
            "status": "firing",
            "starts_at": "2026-05-12T14:08:10Z",
            "fingerprint": "f",
            "labels": {"service": SERVICE},
        },
        "thresholds": {"error_rate": 0.02, "latency_p95_ms": 1000, "min_requests": 60},
        "metrics": {
            "window_seconds": 60,
            "requests_in_window": 1200,
            "request_rate_rps": 20.0,
            "error_rate": 0.1,
            "latency_p95_ms": 250,
            "latency_p50_ms": 80,
            "latency_p99_ms": 600,
            "baseline": {"request_rate_rps": 19.0, "error_rate": 0.002, "latency_p95_ms": 180},
            "baseline_window_seconds": 300,
            "series": {"error_rate": [[1778594880, 0.002], [1778594910, 0.1]]},
        },
        "revisions": [
            {
                "name": NEW,
                "created_at": "2026-05-12T14:07:40Z",
                "traffic_percent": 100,
                "ready": True,
                "latest": True,
                "metrics": {"request_rate_rps": 20.0, "error_rate": 0.1, "latency_p95_ms": 250},
            },
            {
                "name": PREV,
                "created_at": "2026-05-09T10:00:00Z",
                "ready": True,
                "metrics": {"request_rate_rps": 0.0},
                "history": {
                    "error_rate": 0.002,
                    "latency_p95_ms": 180,
                    "served_until": "2026-05-12T14:08:00Z",
                },
                "baseline": {"request_rate_rps": 19.0, "error_rate": 0.002, "latency_p95_ms": 180},
            },
        ],
        "scaling": {
            "min_instances": 1,
            "max_instances": 10,
            "current_instances": 3,
            "concurrency": 80,
            "cpu": "1",
            "memory": "512Mi",
            "utilization": 0.3,
        },
        "logs": [{"severity": "ERROR", "revision": NEW, "message": "500"}],
        "recent_actions": [
            {
                "action": "ROLLBACK",
                "at": "2026-05-12T12:00:00Z",
                "target_revision": PREV,
                "from_revision": OLDER,
                "outcome": "resolved",
            }
        ],
    }


def rich() -> IncidentContext:
    return IncidentContext.model_validate(rich_context())


def differences(before: Any, after: Any, path: str = "") -> set[str]:
    """The paths (with `[]` for list elements) where two JSON documents differ."""
    if isinstance(before, dict) and isinstance(after, dict):
        return set().union(
            *(
                differences(before.get(k), after.get(k), f"{path}.{k}" if path else k)
                for k in set(before) | set(after)
            )
        )
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return set().union(*(differences(b, a, f"{path}[]") for b, a in zip(before, after, strict=True)))
    return set() if before == after else {path}


def test_a_context_with_every_piece_yields_every_piece() -> None:
    pieces = [a.piece for a in ablations(rich())]
    # Per revision: created_at twice, history and baseline once, and the non-null figures.
    assert set(pieces) == set(PIECES)
    assert pieces.count("revisions[].created_at") == 2
    assert pieces.count("revisions[].metrics.request_rate_rps") == 2
    assert pieces.count("revisions[].metrics.error_rate") == 1  # null on the revision without traffic
    assert len(pieces) == len(set(pieces)) + 2


@pytest.mark.parametrize("ablation", list(ablations(rich())), ids=lambda a: f"{a.piece}@{a.where}")
def test_each_ablation_removes_exactly_its_piece_and_nothing_else(ablation: Any) -> None:
    full = rich().to_json_dict()
    changed = differences(full, ablation.context.to_json_dict())
    piece = ablation.piece
    if piece in ("scaling", "metrics.baseline"):
        assert changed and all(path.startswith(piece + ".") for path in changed), changed
    elif piece == "logs":
        assert changed == {"logs"}
    else:
        assert changed == {piece}
    # The removed value is gone (absent or null), and the context is still a valid context.
    assert IncidentContext.model_validate(ablation.context.to_json_dict()) == ablation.context
    if ablation.where is not None and piece.startswith("revisions[]"):
        index = [r.name for r in ablation.context.revisions].index(ablation.where)
        assert ablation.context.revisions[index] != rich().revisions[index]


def test_ablations_leave_the_full_context_alone() -> None:
    context = rich()
    before = context.to_json_dict()
    assert list(ablations(context))
    assert context.to_json_dict() == before


def test_only_pieces_that_are_there_are_removed() -> None:
    data = rich_context()
    for key in ("logs", "recent_actions"):
        del data[key]
    del data["scaling"]
    data["metrics"] = {
        k: v for k, v in data["metrics"].items() if k in ("window_seconds", "request_rate_rps")
    }
    data["revisions"][1] = {"name": PREV, "ready": True}
    pieces = {a.piece for a in ablations(IncidentContext.model_validate(data))}
    assert pieces == {
        "revisions[].created_at",
        "revisions[].metrics.request_rate_rps",
        "revisions[].metrics.error_rate",
        "revisions[].metrics.latency_p95_ms",
        "metrics.request_rate_rps",
    }


def final(action: ActionType, target: str | None = None, scale: tuple[int, int] | None = None) -> FinalAction:
    return FinalAction(
        action=action,
        target_revision=target,
        scale=ScaleChange(min_instances=scale[0], max_instances=scale[1]) if scale else None,
        verdict=Verdict.EXECUTE if action in (ActionType.ROLLBACK, ActionType.SCALE_UP) else Verdict.PASS,
    )


@pytest.mark.parametrize(
    ("full", "ablated", "aggressive"),
    [
        pytest.param(
            final(ActionType.INVESTIGATE), final(ActionType.ROLLBACK, PREV), True, id="investigate-to-rb"
        ),
        pytest.param(
            final(ActionType.NONE), final(ActionType.SCALE_UP, scale=(1, 20)), True, id="none-to-scale"
        ),
        pytest.param(
            final(ActionType.ROLLBACK, PREV), final(ActionType.ROLLBACK, OLDER), True, id="other-target"
        ),
        pytest.param(
            final(ActionType.SCALE_UP, scale=(2, 20)),
            final(ActionType.SCALE_UP, scale=(0, 20)),
            True,
            id="other-scale",
        ),
        pytest.param(
            final(ActionType.ROLLBACK, PREV), final(ActionType.SCALE_UP, scale=(1, 20)), True, id="rb-to-su"
        ),
        pytest.param(
            final(ActionType.ROLLBACK, PREV), final(ActionType.ROLLBACK, PREV), False, id="same-rollback"
        ),
        pytest.param(
            final(ActionType.SCALE_UP, scale=(1, 20)),
            final(ActionType.SCALE_UP, scale=(1, 20)),
            False,
            id="same-scale",
        ),
        pytest.param(
            final(ActionType.ROLLBACK, PREV), final(ActionType.INVESTIGATE), False, id="rb-to-investigate"
        ),
        pytest.param(final(ActionType.INVESTIGATE), final(ActionType.NONE), False, id="investigate-to-none"),
    ],
)
def test_more_aggressive_means_a_change_the_full_context_does_not_make(
    full: FinalAction, ablated: FinalAction, aggressive: bool
) -> None:
    assert more_aggressive(full, ablated) is aggressive


@dataclass
class BlamesWhenLogsAreMissing:
    """Rolls back when the context has no log lines, investigates otherwise: a careless engine."""

    name: str = "careless"

    async def decide(self, context: IncidentContext) -> EngineResult:
        if context.logs:
            decision = Decision(action=ActionType.INVESTIGATE, confidence=0.9)
        else:
            decision = Decision(action=ActionType.ROLLBACK, target_revision=PREV, confidence=0.95)
        return EngineResult(decision=decision)


def scenario(scenario_id: str, context: dict[str, Any]) -> Scenario:
    return Scenario.model_validate(
        {"id": scenario_id, "category": "unit", "context": context, "expect": {"action": "INVESTIGATE"}}
    )


async def test_ablate_finds_the_piece_whose_absence_makes_the_engine_act() -> None:
    without_logs = rich_context()
    del without_logs["logs"]
    scenarios = [scenario("with-logs", rich_context()), scenario("without-logs", without_logs)]
    report = await ablate(scenarios, BlamesWhenLogsAreMissing(), PolicyGuard())
    assert report.scenarios == 2
    assert [(r.scenario_id, r.piece) for r in report.offending] == [("with-logs", "logs")]
    (run,) = report.offending
    assert (run.full.action, run.ablated.action, run.ablated.target_revision) == (
        ActionType.INVESTIGATE,
        ActionType.ROLLBACK,
        PREV,
    )
    # The scenario that never had logs rolls back on the full context: no removal is more aggressive.
    assert all(not r.more_aggressive for r in report.runs if r.scenario_id == "without-logs")

    by_piece = {s.piece: s for s in report.by_piece()}
    assert [s.piece for s in report.by_piece()] == list(PIECES)
    assert (by_piece["logs"].runs, by_piece["logs"].more_aggressive, by_piece["logs"].scenario_ids) == (
        1,
        1,
        ["with-logs"],
    )
    assert by_piece["revisions[].created_at"].runs == 4
    assert by_piece["revisions[].created_at"].more_aggressive == 0

    data = report.to_json_dict()
    assert (data["scenarios"], data["runs"], data["more_aggressive"]) == (2, len(report.runs), 1)
    assert data["offending"] == [
        {
            "id": "with-logs",
            "piece": "logs",
            "where": None,
            "full": "INVESTIGATE",
            "ablated": f"ROLLBACK {PREV}",
        }
    ]
    assert json.loads(json.dumps(data)) == data


async def test_the_policy_runs_on_the_ablated_context_too() -> None:
    # The careless engine's rollback is held for approval (confidence under the threshold): nothing
    # changes, so the removal is not more aggressive.
    @dataclass
    class Unsure(BlamesWhenLogsAreMissing):
        async def decide(self, context: IncidentContext) -> EngineResult:
            result = await super().decide(context)
            return EngineResult(decision=result.decision.model_copy(update={"confidence": 0.5}))

    report = await ablate([scenario("with-logs", rich_context())], Unsure(), PolicyGuard())
    (logs,) = [r for r in report.runs if r.piece == "logs"]
    assert (logs.ablated.action, logs.ablated.verdict) == (ActionType.INVESTIGATE, Verdict.AWAIT_APPROVAL)
    assert not report.offending


def test_render_ablation_table_lists_every_piece_and_the_first_offending_scenarios() -> None:
    runs_report = AblationReport(scenarios=0, runs=[])
    lines = render_ablation_table(runs_report).splitlines()
    assert lines[0].split("  ")[0] == "removed (or null)"
    assert [line.split()[0] for line in lines[2:-2]] == list(PIECES)
    assert lines[-1] == "0 runs over 0 scenarios: 0 more aggressive than the full context (in 0 scenarios)"


async def test_render_ablation_table_shows_at_most_three_scenarios_per_piece() -> None:
    scenarios = [scenario(f"s{n}", rich_context()) for n in range(5)]
    report = await ablate(scenarios, BlamesWhenLogsAreMissing(), PolicyGuard())
    lines = render_ablation_table(report).splitlines()
    (logs,) = [line for line in lines if line.startswith("logs ")]
    assert logs.split()[1:3] == ["5", "5"]
    assert logs.endswith("s0, s1, s2, ... (+2)")
    assert lines[-1].endswith("5 more aggressive than the full context (in 5 scenarios)")
