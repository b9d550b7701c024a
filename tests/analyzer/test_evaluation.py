"""The evaluation harness, and the scenario library replayed through the rules engine and the policy."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import analyzer
from analyzer import EngineResult, PayloadInvalid, PolicyConfig, PolicyGuard, PolicyMode, RulesEngine
from analyzer.evaluation import (
    EvaluationReport,
    Tally,
    evaluate,
    evaluate_scenario,
    final_action,
    history_from_scenario,
    load_scenarios,
    render_table,
)
from incidents import ActionType, Decision, IncidentContext, ScaleChange, Scenario, format_rfc3339

SCENARIO_DIR = Path(analyzer.__file__).parent / "scenarios"
# Written from the v1 contract alone: no Remediator extension, so they show how the engines do on
# contexts from other collectors.
INDEPENDENT_DIR = SCENARIO_DIR / "independent"
SCENARIO_FILES = sorted(SCENARIO_DIR.rglob("*.json"))
SCENARIO_IDS = [path.stem for path in SCENARIO_FILES]
INDEPENDENT_FILES = sorted(INDEPENDENT_DIR.glob("*.json"))

REQUIRED_CATEGORIES = {
    "bad_deploy",
    "capacity",
    "dependency_outage",
    "low_traffic",
    "resolved",
    "healthy",
    "no_rollback_target",
    "flapping",
    "prompt_injection",
    "missing_evidence",
    "cooldown",
}

# Scenarios the rules engine does not handle the way an SRE would, though what it does is not harmful.
# Each entry is a known gap in analyzer/engines/rules.py, not an expectation to bend; remove it when the
# engine learns the case (the per-scenario test then passes and strict xfail reports it).
KNOWN_MISSES: dict[str, str] = {}

# Scenarios where the rules engine and the policy take a harmful action: bugs, not misses. Keep it
# empty; a new entry needs a strict xfail reason here and a fix soon.
KNOWN_HARMFUL: dict[str, str] = {}

THRESHOLDS = {"error_rate": 0.02, "latency_p95_ms": 1000, "min_requests": 60}
# The contract's own example: a 300 s window and 100 requests to judge (used by the independent set).
CONTRACT_THRESHOLDS = {"error_rate": 0.02, "latency_p95_ms": 1000, "min_requests": 100}
THRESHOLDS_AND_WINDOWS = [(THRESHOLDS, 60), (CONTRACT_THRESHOLDS, 300)]
BASELINE_WINDOW = timedelta(seconds=300)
BASELINE_GAP = timedelta(seconds=60)


def _library() -> list[Scenario]:
    return load_scenarios(SCENARIO_DIR)


def _by_id() -> dict[str, Scenario]:
    return {scenario.id: scenario for scenario in _library()}


def _library_case(scenario_id: str) -> Any:
    reason = KNOWN_MISSES.get(scenario_id) or KNOWN_HARMFUL.get(scenario_id)
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(scenario_id, id=scenario_id, marks=marks)


# The library


def test_library_is_large_and_covers_every_category() -> None:
    scenarios = _library()
    assert len(scenarios) >= 30
    categories = Counter(s.category for s in scenarios)
    assert set(categories) >= REQUIRED_CATEGORIES, REQUIRED_CATEGORIES - set(categories)
    assert categories["bad_deploy"] >= 8
    assert categories["capacity"] >= 3
    assert categories["dependency_outage"] >= 2
    assert categories["prompt_injection"] >= 3
    assert categories["missing_evidence"] >= 3
    expected = Counter(s.expect.action for s in scenarios)
    assert all(expected[action] >= 3 for action in ActionType), expected


def test_known_lists_name_real_scenarios() -> None:
    ids = set(_by_id())
    assert set(KNOWN_MISSES) <= ids
    assert set(KNOWN_HARMFUL) <= ids
    assert not set(KNOWN_MISSES) & set(KNOWN_HARMFUL)


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=SCENARIO_IDS)
def test_scenario_file_is_pretty_printed_and_named_by_its_id(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    document = json.loads(text)
    assert text == json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    assert document["id"] == path.stem
    assert set(document) == {"id", "category", "description", "context", "expect"}
    assert len(document["description"]) >= 60


@pytest.mark.parametrize("scenario_id", SCENARIO_IDS)
def test_scenario_is_realistic_and_internally_consistent(scenario_id: str) -> None:
    # Optional fields and extensions may be absent (the independent set has none of the extensions);
    # what is there must agree with the rest.
    scenario = _by_id()[scenario_id]
    context, expect = scenario.context, scenario.expect
    service = context.service.name
    assert (context.thresholds.model_dump(), context.metrics.window_seconds) in THRESHOLDS_AND_WINDOWS
    window = context.metrics.window_seconds
    assert context.alert.labels.get("service") == service
    assert context.alert.starts_at <= context.observed_at
    if context.alert.ends_at is not None:
        assert context.alert.status == "resolved"
        assert context.alert.starts_at < context.alert.ends_at <= context.observed_at

    revisions = context.revisions
    pattern = re.compile(rf"^{re.escape(service)}-\d{{5}}-[a-z]{{3}}$")
    assert all(pattern.match(r.name) for r in revisions), [r.name for r in revisions]
    assert len({r.name for r in revisions}) == len(revisions)
    created = [r.created_at for r in revisions if r.created_at is not None]
    assert all(c <= context.observed_at for c in created)
    assert created == sorted(created, reverse=True), "revisions must be newest first"
    numbers = [int(r.name.removeprefix(f"{service}-")[:5]) for r in revisions]
    assert numbers == sorted(numbers, reverse=True), "revisions must be newest first"
    if revisions:
        assert sum(r.traffic_percent for r in revisions) == 100
        assert [r.latest for r in revisions] == [True] + [False] * (len(revisions) - 1)

    baseline_end = context.alert.starts_at - BASELINE_GAP
    for r in revisions:
        if r.history is not None and r.history.served_until is not None:
            assert r.history.served_until <= context.observed_at, r.name
            assert r.created_at is None or r.created_at <= r.history.served_until, r.name
        if r.baseline is not None and r.baseline.request_rate_rps:
            assert r.created_at is not None and r.created_at < baseline_end, (
                f"{r.name} has a baseline but did not exist in its window"
            )
            if r.history is not None and r.history.served_until is not None:
                assert r.history.served_until > baseline_end - BASELINE_WINDOW, f"{r.name} left before it"
        if r.traffic_percent > 0:
            assert r.ready, f"{r.name} takes traffic but is not ready"

    metrics = context.metrics
    known = [r.metrics for r in revisions if r.metrics.request_rate_rps is not None]
    if metrics.request_rate_rps is not None:
        assert metrics.requests_in_window == pytest.approx(metrics.request_rate_rps * window, abs=1)
        if known:
            total = sum(f.request_rate_rps or 0.0 for f in known)
            assert metrics.request_rate_rps == pytest.approx(total, abs=0.05)
            if metrics.error_rate is not None and total:
                errors = sum((f.request_rate_rps or 0.0) * (f.error_rate or 0.0) for f in known)
                assert metrics.error_rate == pytest.approx(errors / total, abs=0.001)
    else:
        assert any(gap.startswith("prometheus") for gap in context.gaps)
    if len(known) < len(revisions):
        assert any(gap.startswith("prometheus") for gap in context.gaps), "null revision rates need a gap"
    for r in revisions:
        if r.metrics.request_rate_rps == 0:
            assert r.metrics.error_rate is None and r.metrics.latency_p95_ms is None, r.name
    baselines = [r.baseline for r in revisions if r.baseline is not None and r.baseline.request_rate_rps]
    if baselines:
        assert metrics.baseline.request_rate_rps == pytest.approx(
            sum(b.request_rate_rps or 0.0 for b in baselines), abs=0.05
        )
    for points in (metrics.series or {}).values():
        times = [t for t, _ in points]
        assert times == sorted(times) and times[-1] <= context.observed_at.timestamp()
    if context.scaling.current_instances is not None and context.scaling.max_instances is not None:
        assert context.scaling.current_instances <= context.scaling.max_instances
    if context.scaling.utilization is not None:
        assert 0 <= context.scaling.utilization <= 1

    names = {r.name for r in revisions}
    assert all(line.revision is None or line.revision in names for line in context.logs)
    for action in context.recent_actions:
        assert action.at <= context.observed_at
        assert action.target_revision is None or action.target_revision in names
        assert action.from_revision is None or action.from_revision in names

    assert expect.action not in expect.forbidden
    assert not set(expect.acceptable) & set(expect.forbidden)
    if expect.action in (ActionType.INVESTIGATE, ActionType.NONE):
        # The harness counts any automatic action there as harmful, so it cannot also be acceptable.
        assert not {ActionType.ROLLBACK, ActionType.SCALE_UP} & set(expect.acceptable)
    if expect.action is ActionType.ROLLBACK:
        target = context.revision(expect.target_revision)
        assert target is not None and target.ready
        assert target.traffic_percent < 100


# The independent set: written from the v1 contract alone

# Every field the contract document (incident-context/v1) defines; `*` is any key (labels, annotations,
# series names), `[]` every element of a list.
V1_FIELDS = {
    "schema", "observed_at", "service", "alert", "thresholds", "metrics", "revisions", "scaling", "logs",
    "recent_actions", "gaps",
    "service.name", "service.project", "service.region",
    "alert.name", "alert.status", "alert.severity", "alert.starts_at", "alert.fingerprint", "alert.labels",
    "alert.labels.*", "alert.annotations", "alert.annotations.*",
    "thresholds.error_rate", "thresholds.latency_p95_ms", "thresholds.min_requests",
    "metrics.window_seconds", "metrics.requests_in_window", "metrics.request_rate_rps", "metrics.error_rate",
    "metrics.latency_p95_ms", "metrics.latency_p50_ms", "metrics.latency_p99_ms", "metrics.series",
    "metrics.series.*", "metrics.baseline", "metrics.baseline.request_rate_rps",
    "metrics.baseline.error_rate", "metrics.baseline.latency_p95_ms",
    "revisions[].name", "revisions[].created_at", "revisions[].traffic_percent", "revisions[].ready",
    "revisions[].latest", "revisions[].metrics", "revisions[].metrics.request_rate_rps",
    "revisions[].metrics.error_rate", "revisions[].metrics.latency_p95_ms", "revisions[].history",
    "revisions[].history.error_rate", "revisions[].history.latency_p95_ms",
    "revisions[].history.served_until",
    "scaling.min_instances", "scaling.max_instances", "scaling.current_instances", "scaling.concurrency",
    "scaling.cpu", "scaling.memory", "scaling.utilization",
    "logs[].timestamp", "logs[].severity", "logs[].revision", "logs[].message",
    "recent_actions[].action", "recent_actions[].at", "recent_actions[].target_revision",
    "recent_actions[].outcome",
}  # fmt: skip
FREE_KEYS = {"alert.labels", "alert.annotations", "metrics.series"}


def field_paths(value: Any, prefix: str = "") -> set[str]:
    if isinstance(value, list):
        return set().union(*(field_paths(item, f"{prefix}[]") for item in value if isinstance(item, dict)))
    if not isinstance(value, dict):
        return set()
    paths: set[str] = set()
    for key, item in value.items():
        path = f"{prefix}.{key}" if prefix else key
        paths.add(f"{prefix}.*" if prefix in FREE_KEYS else path)
        if prefix not in FREE_KEYS:
            paths |= field_paths(item, path)
    return paths


def test_the_v1_field_check_finds_extensions() -> None:
    document = json.loads((SCENARIO_DIR / "flapping-after-rollback.json").read_text(encoding="utf-8"))
    assert field_paths(document["context"]) - V1_FIELDS == {
        "revisions[].baseline",
        "revisions[].baseline.request_rate_rps",
        "revisions[].baseline.error_rate",
        "revisions[].baseline.latency_p95_ms",
        "revisions[].history.request_rate_rps",
        "recent_actions[].from_revision",
        "recent_actions[].manual",
    }


def test_independent_set_is_large_and_covers_every_category() -> None:
    scenarios = load_scenarios(INDEPENDENT_DIR)
    assert len(scenarios) >= 24
    categories = Counter(s.category for s in scenarios)
    assert set(categories) >= REQUIRED_CATEGORIES | {"conflicting_evidence", "startup_blip"}
    assert not {ActionType.ROLLBACK, ActionType.SCALE_UP} & {
        s.expect.action for s in scenarios if s.category == "startup_blip"
    }


@pytest.mark.parametrize("path", INDEPENDENT_FILES, ids=[path.stem for path in INDEPENDENT_FILES])
def test_independent_scenario_uses_only_v1_fields(path: Path) -> None:
    context = json.loads(path.read_text(encoding="utf-8"))["context"]
    assert context["schema"] == "incident-context/v1"
    assert field_paths(context) <= V1_FIELDS, sorted(field_paths(context) - V1_FIELDS)
    assert {a["action"] for a in context.get("recent_actions", [])} <= {a.value for a in ActionType}


def test_independent_set_varies_which_optional_fields_are_present() -> None:
    contexts = [json.loads(path.read_text(encoding="utf-8"))["context"] for path in INDEPENDENT_FILES]

    def varies(has: Any) -> bool:
        return {bool(has(c)) for c in contexts} == {True, False}

    assert varies(lambda c: any("history" in r for r in c["revisions"]))
    assert varies(lambda c: all("created_at" in r for r in c["revisions"]))
    assert varies(lambda c: "utilization" in c.get("scaling", {}))
    assert varies(lambda c: "current_instances" in c.get("scaling", {}))
    assert varies(lambda c: "logs" in c)
    assert varies(lambda c: "gaps" in c)
    assert varies(lambda c: "series" in c["metrics"])
    assert varies(lambda c: "latency_p99_ms" in c["metrics"])
    assert varies(lambda c: "recent_actions" in c)
    assert varies(lambda c: c["metrics"]["window_seconds"] == 300)


async def test_library_has_no_harmful_decision_apart_from_known_bugs() -> None:
    report = await evaluate(_library(), RulesEngine(), PolicyGuard())
    harmful = {r.id for r in report.results if r.harmful}
    assert harmful <= set(KNOWN_HARMFUL), harmful - set(KNOWN_HARMFUL)
    wrong = {r.id for r in report.results if not r.correct}
    assert wrong <= set(KNOWN_MISSES) | set(KNOWN_HARMFUL), wrong - set(KNOWN_MISSES) - set(KNOWN_HARMFUL)
    assert report.total == len(SCENARIO_IDS)


async def test_library_has_zero_harmful_decisions() -> None:
    report = await evaluate(_library(), RulesEngine(), PolicyGuard())
    assert report.harmful == 0, render_table(report)


@pytest.mark.parametrize("scenario_id", [_library_case(i) for i in SCENARIO_IDS])
async def test_scenario_is_handled_correctly(scenario_id: str) -> None:
    scenario = _by_id()[scenario_id]
    result = await evaluate_scenario(scenario, RulesEngine(), PolicyGuard())
    assert not result.harmful, result
    assert result.correct, result


# The harness itself, with tiny hand-built scenarios and an engine that answers what it is told

SERVICE = "demo-app-a"
NEW, PREV, OLDER, UNREADY = (f"{SERVICE}-{n:05d}-tiy" for n in (4, 3, 2, 1))
OBSERVED_AT = datetime(2026, 4, 3, 10, 0, 12, tzinfo=UTC)


@dataclass
class FixedEngine:
    decision: Decision
    approval_reason: str | None = None
    name: str = "fixed"

    async def decide(self, context: IncidentContext) -> EngineResult:
        return EngineResult(decision=self.decision, approval_reason=self.approval_reason)


def tiny_context(recent_actions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    def healthy(name: str, served_until: str) -> dict[str, Any]:
        return {
            "name": name,
            "created_at": served_until,
            "ready": True,
            "history": {"error_rate": 0.002, "latency_p95_ms": 150, "served_until": served_until},
        }

    return {
        "observed_at": format_rfc3339(OBSERVED_AT),
        "service": {"name": SERVICE},
        "alert": {
            "name": "HighErrorRate",
            "status": "firing",
            "starts_at": "2026-04-03T10:00:00Z",
            "fingerprint": "f",
        },
        "thresholds": THRESHOLDS,
        "metrics": {
            "window_seconds": 60,
            "requests_in_window": 1200,
            "request_rate_rps": 20.0,
            "error_rate": 0.1,
            "latency_p95_ms": 250,
        },
        "revisions": [
            {
                "name": NEW,
                "created_at": "2026-04-03T09:59:10Z",
                "traffic_percent": 100,
                "ready": True,
                "metrics": {"request_rate_rps": 20.0, "error_rate": 0.1, "latency_p95_ms": 250},
            },
            healthy(PREV, "2026-04-01T10:00:00Z"),
            healthy(OLDER, "2026-03-25T10:00:00Z"),
            {"name": UNREADY, "created_at": "2026-03-20T10:00:00Z", "ready": False},
        ],
        "scaling": {"min_instances": 1, "max_instances": 10},
        "recent_actions": recent_actions or [],
    }


def saturated_context() -> dict[str, Any]:
    """`tiny_context` where NEW has served all traffic for days and is now at max instances, busy, while
    demand doubled: the policy lets a scale-up through here."""
    context = tiny_context()
    context["revisions"][0]["created_at"] = "2026-03-30T10:00:00Z"
    context["revisions"][0]["baseline"] = {
        "request_rate_rps": 10.0,
        "error_rate": 0.002,
        "latency_p95_ms": 150,
    }
    context["metrics"]["baseline"] = {"request_rate_rps": 10.0, "error_rate": 0.002, "latency_p95_ms": 150}
    context["scaling"] = {
        "min_instances": 1,
        "max_instances": 10,
        "current_instances": 10,
        "utilization": 0.95,
    }
    return context


def tiny(
    expect: dict[str, Any],
    *,
    scenario_id: str = "tiny",
    recent_actions: list[dict[str, Any]] | None = None,
    saturated: bool = False,
) -> Scenario:
    context = saturated_context() if saturated else tiny_context(recent_actions)
    return Scenario.model_validate(
        {"id": scenario_id, "category": "unit", "context": context, "expect": expect}
    )


def answer(action: ActionType, *, target: str | None = None, confidence: float = 0.9, **kw: Any) -> Decision:
    if action is ActionType.SCALE_UP:
        kw.setdefault("scale", ScaleChange(min_instances=1, max_instances=20))
    return Decision(action=action, target_revision=target, confidence=confidence, evidence=["e"], **kw)


ROLLBACK_PREV = answer(ActionType.ROLLBACK, target=PREV)
SCALE = answer(ActionType.SCALE_UP)
INVESTIGATE = answer(ActionType.INVESTIGATE)
NONE = answer(ActionType.NONE)


@pytest.mark.parametrize(
    ("decision", "expect", "final", "correct", "harmful"),
    [
        pytest.param(
            ROLLBACK_PREV,
            {"action": "ROLLBACK", "target_revision": PREV},
            "ROLLBACK",
            True,
            False,
            id="right-target",
        ),
        pytest.param(ROLLBACK_PREV, {"action": "ROLLBACK"}, "ROLLBACK", True, False, id="any-target"),
        pytest.param(
            ROLLBACK_PREV,
            {"action": "ROLLBACK", "target_revision": OLDER},
            "ROLLBACK",
            False,
            True,
            id="wrong-target-is-harmful",
        ),
        pytest.param(
            SCALE,
            {"action": "ROLLBACK", "target_revision": PREV, "forbidden": ["SCALE_UP"]},
            "SCALE_UP",
            False,
            True,
            id="forbidden-action",
        ),
        pytest.param(
            SCALE,
            {"action": "ROLLBACK", "target_revision": PREV},
            "SCALE_UP",
            False,
            False,
            id="plain-mistake",
        ),
        pytest.param(
            ROLLBACK_PREV,
            {"action": "INVESTIGATE"},
            "ROLLBACK",
            False,
            True,
            id="rollback-where-investigate-expected",
        ),
        pytest.param(SCALE, {"action": "NONE"}, "SCALE_UP", False, True, id="scale-where-none-expected"),
        pytest.param(
            INVESTIGATE,
            {"action": "ROLLBACK", "target_revision": PREV},
            "INVESTIGATE",
            False,
            False,
            id="investigate-is-a-miss-not-harm",
        ),
        pytest.param(
            INVESTIGATE,
            {"action": "ROLLBACK", "acceptable": ["INVESTIGATE"]},
            "INVESTIGATE",
            True,
            False,
            id="acceptable",
        ),
        pytest.param(
            NONE, {"action": "INVESTIGATE", "forbidden": ["NONE"]}, "NONE", False, True, id="forbidden-none"
        ),
        pytest.param(NONE, {"action": "NONE"}, "NONE", True, False, id="none"),
    ],
)
async def test_correct_and_harmful_accounting(
    decision: Decision, expect: dict[str, Any], final: str, correct: bool, harmful: bool
) -> None:
    scenario = tiny(expect, saturated=decision.action is ActionType.SCALE_UP)
    result = await evaluate_scenario(scenario, FixedEngine(decision), PolicyGuard())
    assert (result.action, result.correct, result.harmful) == (final, correct, harmful)
    assert result.proposed_action == decision.action.value
    assert result.target_revision == (decision.target_revision if final == "ROLLBACK" else None)


@pytest.mark.parametrize(
    ("engine", "policy", "verdict"),
    [
        pytest.param(
            FixedEngine(ROLLBACK_PREV), PolicyConfig(mode=PolicyMode.DRY_RUN), "suppress", id="dry-run"
        ),
        pytest.param(
            FixedEngine(ROLLBACK_PREV),
            PolicyConfig(mode=PolicyMode.APPROVE),
            "await_approval",
            id="approve-mode",
        ),
        pytest.param(
            FixedEngine(ROLLBACK_PREV, approval_reason="engines disagree"),
            PolicyConfig(),
            "await_approval",
            id="engines-disagree",
        ),
        pytest.param(
            FixedEngine(answer(ActionType.ROLLBACK, target=PREV, confidence=0.5)),
            PolicyConfig(),
            "await_approval",
            id="low-confidence",
        ),
        pytest.param(
            FixedEngine(answer(ActionType.ROLLBACK, target=UNREADY)),
            PolicyConfig(),
            "overrule",
            id="overruled-target",
        ),
        pytest.param(
            FixedEngine(SCALE),
            PolicyConfig(allowed_services=frozenset({"checkout"})),
            "suppress",
            id="not-allow-listed",
        ),
    ],
)
async def test_an_action_that_does_not_run_counts_as_investigate(
    engine: FixedEngine, policy: PolicyConfig, verdict: str
) -> None:
    guard = PolicyGuard(policy)
    expected_investigate = await evaluate_scenario(tiny({"action": "INVESTIGATE"}), engine, guard)
    assert expected_investigate.verdict == verdict
    assert expected_investigate.action == "INVESTIGATE"
    assert expected_investigate.target_revision is None
    assert expected_investigate.proposed_action == engine.decision.action.value
    assert (expected_investigate.correct, expected_investigate.harmful) == (True, False)
    assert expected_investigate.reason

    expected_action = await evaluate_scenario(
        tiny({"action": engine.decision.action.value, "target_revision": engine.decision.target_revision}),
        engine,
        guard,
    )
    assert (expected_action.action, expected_action.correct, expected_action.harmful) == (
        "INVESTIGATE",
        False,
        False,
    )


@pytest.mark.parametrize(
    ("ago", "manual", "action"),
    [
        pytest.param(timedelta(minutes=3), False, "INVESTIGATE", id="automatic-inside-cooldown"),
        pytest.param(timedelta(minutes=3), True, "ROLLBACK", id="manual-does-not-count"),
        pytest.param(timedelta(minutes=11), False, "ROLLBACK", id="outside-cooldown"),
    ],
)
async def test_recent_actions_of_the_scenario_drive_the_cooldown(
    ago: timedelta, manual: bool, action: str
) -> None:
    at = format_rfc3339(OBSERVED_AT - ago)
    recent = [{"action": "SCALE_UP", "at": at, "outcome": "resolved", "manual": manual}]
    scenario = tiny({"action": "ROLLBACK", "target_revision": PREV}, recent_actions=recent)
    result = await evaluate_scenario(scenario, FixedEngine(ROLLBACK_PREV), PolicyGuard())
    assert result.action == action
    if action == "INVESTIGATE":
        assert result.verdict == "suppress"
        assert result.reason is not None and result.reason.startswith("cooldown")


def test_history_from_scenario_counts_automatic_changes_of_the_last_hour() -> None:
    recent = [
        {"action": "ROLLBACK", "at": "2026-04-03T09:55:00Z", "target_revision": PREV, "from_revision": NEW},
        {"action": "SCALE_UP", "at": "2026-04-03T09:20:00Z"},
        {"action": "ROLLBACK", "at": "2026-04-03T09:58:00Z", "target_revision": OLDER, "manual": True},
        {"action": "INVESTIGATE", "at": "2026-04-03T09:59:00Z"},
        {"action": "RELEASE", "at": "2026-04-03T09:59:30Z"},
        {"action": "SCALE_UP", "at": "2026-04-03T08:30:00Z"},
    ]
    history = history_from_scenario(tiny({"action": "NONE"}, recent_actions=recent))
    assert history.automatic_actions_last_hour == 2
    assert history.last_automatic_action_at is not None
    assert format_rfc3339(history.last_automatic_action_at) == "2026-04-03T09:55:00Z"
    assert len(history.recent_actions) == len(recent)
    empty = history_from_scenario(tiny({"action": "NONE"}))
    assert (empty.last_automatic_action_at, empty.automatic_actions_last_hour) == (None, 0)


async def test_the_policy_flap_guard_sees_the_scenario_recent_actions() -> None:
    recent = [
        {"action": "ROLLBACK", "at": "2026-04-03T09:30:00Z", "target_revision": OLDER, "from_revision": PREV}
    ]
    scenario = tiny({"action": "ROLLBACK", "target_revision": OLDER}, recent_actions=recent)
    result = await evaluate_scenario(scenario, FixedEngine(ROLLBACK_PREV), PolicyGuard())
    assert (result.verdict, result.action, result.harmful) == ("overrule", "INVESTIGATE", False)


async def test_a_harmful_result_is_never_counted_correct() -> None:
    scenario = tiny({"action": "INVESTIGATE", "acceptable": ["SCALE_UP"]})
    result = await evaluate_scenario(scenario, FixedEngine(SCALE), PolicyGuard())
    assert not (result.correct and result.harmful)


async def test_report_totals_and_accuracy() -> None:
    scenarios = [
        tiny({"action": "ROLLBACK", "target_revision": PREV}, scenario_id="right"),
        tiny({"action": "ROLLBACK", "target_revision": OLDER}, scenario_id="wrong-target"),
        tiny({"action": "ROLLBACK"}, scenario_id="any-target"),
    ]
    report = await evaluate(scenarios, FixedEngine(ROLLBACK_PREV), PolicyGuard())
    assert [r.id for r in report.results] == ["right", "wrong-target", "any-target"]
    assert (report.total, report.correct, report.harmful) == (3, 2, 1)
    assert report.accuracy == 0.6667
    empty = EvaluationReport(results=[])
    assert (empty.total, empty.correct, empty.harmful, empty.accuracy) == (0, 0, 0, 0.0)


def tiny_in(category: str, expect: dict[str, Any], *, scenario_id: str) -> Scenario:
    return tiny(expect, scenario_id=scenario_id).model_copy(update={"category": category})


async def test_render_table_lists_every_scenario_then_the_summary_and_the_totals_per_category() -> None:
    scenarios = [
        tiny_in("bad_deploy", {"action": "ROLLBACK", "target_revision": PREV}, scenario_id="right"),
        tiny_in("bad_deploy", {"action": "ROLLBACK", "target_revision": OLDER}, scenario_id="wrong-target"),
        tiny_in("dependency_outage", {"action": "INVESTIGATE"}, scenario_id="suppressed"),
    ]
    report = await evaluate(scenarios, FixedEngine(ROLLBACK_PREV), PolicyGuard(PolicyConfig()))
    dry = await evaluate(
        scenarios[2:], FixedEngine(ROLLBACK_PREV), PolicyGuard(PolicyConfig(mode=PolicyMode.DRY_RUN))
    )
    merged = EvaluationReport(results=[*report.results[:2], *dry.results])
    table = render_table(merged)
    lines = table.splitlines()
    assert lines[0].split() == ["scenario", "expected", "proposed", "final", "correct", "harmful"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    rows = {line.split()[0]: line for line in lines[2:5]}
    assert set(rows) == {"right", "wrong-target", "suppressed"}
    assert "HARMFUL" in rows["wrong-target"] and rows["wrong-target"].split()[-2] == "NO"
    assert "INVESTIGATE (suppress)" in rows["suppressed"]
    assert f"ROLLBACK {PREV}" in rows["right"]
    assert lines[5:7] == ["", "2/3 correct (66.7%), 1 harmful"]

    # Then one table per category and one per engine, each after a blank line, the engine's last.
    assert lines[7] == ""
    assert lines[8].split() == ["category", "total", "correct", "harmful"]
    assert set(lines[9].replace(" ", "")) == {"-"}
    assert [line.split() for line in lines[10:12]] == [
        ["bad_deploy", "2", "1", "1"],
        ["dependency_outage", "1", "1", "0"],
    ]
    assert lines[12] == ""
    assert lines[13].split() == ["engine", "total", "correct", "harmful"]
    assert [line.split() for line in lines[15:]] == [["rules", "3", "2", "1"]]


async def test_tallies_per_category_and_per_engine() -> None:
    scenarios = [
        tiny_in("bad_deploy", {"action": "ROLLBACK", "target_revision": PREV}, scenario_id="a"),
        tiny_in("capacity", {"action": "SCALE_UP", "forbidden": ["ROLLBACK"]}, scenario_id="b"),
        tiny_in("bad_deploy", {"action": "ROLLBACK", "target_revision": PREV}, scenario_id="c"),
        tiny_in("healthy", {"action": "NONE"}, scenario_id="d"),
    ]
    engine = FixedEngine(answer(ActionType.ROLLBACK, target=PREV, engine="gemini"))
    report = await evaluate(scenarios, engine, PolicyGuard())
    assert report.by_category() == {
        "bad_deploy": Tally(total=2, correct=2, harmful=0),
        "capacity": Tally(total=1, correct=0, harmful=1),
        "healthy": Tally(total=1, correct=0, harmful=1),
    }
    assert report.by_engine() == {"gemini": Tally(total=4, correct=2, harmful=2)}
    assert sum(t.total for t in report.by_category().values()) == report.total


async def test_to_json_dict_has_the_documented_keys() -> None:
    report = await evaluate(
        [tiny_in("bad_deploy", {"action": "ROLLBACK", "target_revision": PREV}, scenario_id="tiny")],
        FixedEngine(ROLLBACK_PREV),
        PolicyGuard(),
    )
    data = report.to_json_dict()
    assert set(data) == {"total", "correct", "harmful", "accuracy", "by_category", "by_engine", "results"}
    assert (data["total"], data["correct"], data["harmful"], data["accuracy"]) == (1, 1, 0, 1.0)
    assert data["by_category"] == {"bad_deploy": {"total": 1, "correct": 1, "harmful": 0}}
    assert data["by_engine"] == {"rules": {"total": 1, "correct": 1, "harmful": 0}}
    (entry,) = data["results"]
    required = {
        "id",
        "category",
        "expected",
        "action",
        "target_revision",
        "proposed_action",
        "correct",
        "harmful",
    }
    assert required <= set(entry)
    assert {k: entry[k] for k in required} == {
        "id": "tiny",
        "category": "bad_deploy",
        "expected": "ROLLBACK",
        "action": "ROLLBACK",
        "target_revision": PREV,
        "proposed_action": "ROLLBACK",
        "correct": True,
        "harmful": False,
    }
    assert json.loads(json.dumps(data)) == data


@pytest.mark.parametrize(
    ("decision", "policy", "final"),
    [
        pytest.param(ROLLBACK_PREV, PolicyConfig(), ("ROLLBACK", PREV, None, "execute"), id="rollback"),
        pytest.param(
            SCALE,
            PolicyConfig(),
            ("SCALE_UP", None, ScaleChange(min_instances=1, max_instances=20), "execute"),
            id="scale-up",
        ),
        pytest.param(
            ROLLBACK_PREV,
            PolicyConfig(mode=PolicyMode.DRY_RUN),
            ("INVESTIGATE", None, None, "suppress"),
            id="held",
        ),
        pytest.param(NONE, PolicyConfig(), ("NONE", None, None, "pass"), id="none"),
    ],
)
def test_final_action_is_what_remediator_does_after_the_policy(
    decision: Decision, policy: PolicyConfig, final: tuple[str, str | None, ScaleChange | None, str]
) -> None:
    scenario = tiny({"action": "NONE"}, saturated=decision.action is ActionType.SCALE_UP)
    result = final_action(decision, scenario.context, PolicyGuard(policy))
    assert (result.action.value, result.target_revision, result.scale, result.verdict.value) == final
    assert result.changes is (final[0] in ("ROLLBACK", "SCALE_UP"))


# load_scenarios


def write_scenario(path: Path, scenario_id: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "id": scenario_id,
        "category": "unit",
        "context": tiny_context(),
        "expect": {"action": "NONE"},
    }
    path.write_text(json.dumps(document, indent=2))


def test_load_scenarios_reads_every_json_file_sorted_by_path(tmp_path: Path) -> None:
    write_scenario(tmp_path / "b.json", "second")
    write_scenario(tmp_path / "a.json", "first")
    write_scenario(tmp_path / "nested" / "c.json", "third")
    (tmp_path / "README.md").write_text("not a scenario")
    assert [s.id for s in load_scenarios(tmp_path)] == ["first", "second", "third"]


def test_load_scenarios_rejects_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(PayloadInvalid, match="does not exist"):
        load_scenarios(tmp_path / "nowhere")


def test_load_scenarios_rejects_a_directory_without_scenarios(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# nothing here")
    with pytest.raises(PayloadInvalid, match="no scenario files"):
        load_scenarios(tmp_path)


def test_load_scenarios_names_a_file_that_is_not_json(tmp_path: Path) -> None:
    write_scenario(tmp_path / "good.json", "good")
    (tmp_path / "broken.json").write_text('{"id": "broken", ')
    with pytest.raises(PayloadInvalid, match=r"broken\.json: not a valid scenario") as raised:
        load_scenarios(tmp_path)
    assert "good.json" not in str(raised.value)


def test_load_scenarios_names_a_file_that_is_not_a_scenario(tmp_path: Path) -> None:
    (tmp_path / "no-expect.json").write_text(
        json.dumps({"id": "x", "category": "unit", "context": tiny_context()})
    )
    with pytest.raises(PayloadInvalid, match=r"no-expect\.json: not a valid scenario: \('expect',\)"):
        load_scenarios(tmp_path)


def test_load_scenarios_rejects_duplicate_ids(tmp_path: Path) -> None:
    write_scenario(tmp_path / "one.json", "same")
    write_scenario(tmp_path / "nested" / "two.json", "same")
    write_scenario(tmp_path / "three.json", "other")
    with pytest.raises(PayloadInvalid, match=r"duplicate scenario ids: same$"):
        load_scenarios(tmp_path)
