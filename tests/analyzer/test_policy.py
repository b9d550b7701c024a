"""The policy guard: every check of analyzer/policy.py, and the order they run in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from analyzer.evidence import Evidence, EvidenceConfig
from analyzer.policy import (
    PolicyConfig,
    PolicyGuard,
    PolicyHistory,
    PolicyMode,
    PolicyOutcome,
    Verdict,
)
from incidents import (
    ActionType,
    Decision,
    Figures,
    IncidentContext,
    RecentAction,
    ScaleChange,
    format_rfc3339,
)

SERVICE = "checkout"
NOW = datetime(2026, 4, 2, 9, 30, 12, tzinfo=UTC)
FAILING = f"{SERVICE}-00005-fal"
PREV = f"{SERVICE}-00004-prv"
UNREADY = f"{SERVICE}-00003-unr"
OLD = f"{SERVICE}-00002-old"
ENGINE_EVIDENCE = ["checkout-00005-fal: 100% traffic, failing (errors 10.0% > 2.0%)"]


def at(delta: timedelta) -> str:
    return format_rfc3339(NOW - delta)


# How long before NOW each revision was created: the failing one is a fresh deploy.
CREATED = {FAILING: timedelta(minutes=2), PREV: timedelta(days=2), UNREADY: timedelta(days=3)}


def revision(
    name: str,
    *,
    traffic: int = 0,
    ready: bool = True,
    now: tuple[float, float | None, float | None] = (0.0, None, None),
    history: tuple[float, float] | None = (0.002, 150),
    created: timedelta | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "created_at": at(created or CREATED.get(name, timedelta(days=5))),
        "traffic_percent": traffic,
        "ready": ready,
        "metrics": {"request_rate_rps": now[0], "error_rate": now[1], "latency_p95_ms": now[2]},
    }
    if history is not None:
        data["history"] = {
            "error_rate": history[0],
            "latency_p95_ms": history[1],
            "served_until": at(timedelta(seconds=34)),
        }
    return data


def build(
    revisions: list[dict[str, Any]] | None = None,
    *,
    min_instances: int | None = 1,
    max_instances: int | None = 10,
) -> IncidentContext:
    """A failing deploy at 100% with a healthy previous revision, an unready one and an old one."""
    if revisions is None:
        revisions = [
            revision(FAILING, traffic=100, now=(20.0, 0.1, 250.0), history=None),
            revision(PREV),
            revision(UNREADY, ready=False, history=None),
            revision(OLD),
        ]
    return IncidentContext.model_validate(
        {
            "observed_at": format_rfc3339(NOW),
            "service": {"name": SERVICE},
            "alert": {
                "name": "HighErrorRate",
                "status": "firing",
                "starts_at": at(timedelta(seconds=12)),
                "fingerprint": "fedcba9876543210",
            },
            "thresholds": {"error_rate": 0.02, "latency_p95_ms": 1000, "min_requests": 60},
            "metrics": {
                "window_seconds": 60,
                "requests_in_window": 1200,
                "request_rate_rps": 20.0,
                "error_rate": 0.1,
                "latency_p95_ms": 250,
            },
            "revisions": revisions,
            "scaling": {
                "min_instances": min_instances,
                "max_instances": max_instances,
                "current_instances": 10,
            },
        }
    )


def saturated(*, min_instances: int | None = 1, max_instances: int | None = 10) -> IncidentContext:
    """A long-serving revision that carried all traffic healthily, now at max instances and busy while
    demand doubled: what a scale-up is for."""
    context = build(
        [revision(PREV, traffic=100, now=(40.0, 0.06, 900.0), history=None)],
        min_instances=min_instances,
        max_instances=max_instances,
    )
    return context.model_copy(
        update={
            "metrics": context.metrics.model_copy(
                update={
                    "request_rate_rps": 40.0,
                    "requests_in_window": 2400,
                    "error_rate": 0.06,
                    "latency_p95_ms": 900,
                    "baseline": Figures(request_rate_rps=20.0, error_rate=0.001, latency_p95_ms=150),
                }
            ),
            "scaling": context.scaling.model_copy(
                update={"current_instances": max_instances, "utilization": 0.95}
            ),
            "revisions": [
                context.revisions[0].model_copy(
                    update={"baseline": Figures(request_rate_rps=20.0, error_rate=0.001, latency_p95_ms=150)}
                )
            ],
        }
    )


def rollback(target: str | None = PREV, confidence: float = 0.92) -> Decision:
    return Decision(
        action=ActionType.ROLLBACK,
        target_revision=target,
        confidence=confidence,
        root_cause=f"{FAILING} regressed",
        explanation=f"Roll back to {target}.",
        evidence=list(ENGINE_EVIDENCE),
        engine="rules",
    )


def scale(min_instances: int, max_instances: int, confidence: float = 0.85) -> Decision:
    return Decision(
        action=ActionType.SCALE_UP,
        scale=ScaleChange(min_instances=min_instances, max_instances=max_instances),
        confidence=confidence,
        root_cause="saturated",
        explanation="Raise max instances.",
        evidence=list(ENGINE_EVIDENCE),
        engine="rules",
    )


def judge(
    decision: Decision,
    context: IncidentContext | None = None,
    *,
    history: PolicyHistory | None = None,
    approval_reason: str | None = None,
    **config: Any,
) -> PolicyOutcome:
    return PolicyGuard(PolicyConfig(**config)).evaluate(
        decision,
        context or build(),
        history or PolicyHistory(),
        now=NOW,
        approval_reason=approval_reason,
    )


def rolled_back_from(name: str, ago: timedelta, *, manual: bool = False) -> PolicyHistory:
    action = RecentAction(
        action=ActionType.ROLLBACK,
        at=NOW - ago,
        target_revision=OLD,
        from_revision=name,
        outcome="resolved",
        manual=manual,
    )
    return PolicyHistory(recent_actions=[action])


def assert_overruled(outcome: PolicyOutcome, original: Decision, reason_part: str) -> None:
    assert outcome.verdict is Verdict.OVERRULE
    assert outcome.reason is not None and reason_part in outcome.reason
    final = outcome.decision
    assert final.action is ActionType.INVESTIGATE
    assert final.target_revision is None and final.scale is None
    assert final.evidence == [*original.evidence, f"policy: {outcome.reason}"]
    assert final.confidence == original.confidence
    assert final.root_cause == original.root_cause
    assert final.engine == original.engine
    assert final.explanation.startswith("Policy overruled ")
    assert outcome.reason in final.explanation


# 1. INVESTIGATE and NONE pass through


@pytest.mark.parametrize("action", [ActionType.INVESTIGATE, ActionType.NONE])
@pytest.mark.parametrize(
    "config",
    [
        {},
        {"mode": PolicyMode.DRY_RUN},
        {"mode": PolicyMode.APPROVE},
        {"allowed_services": frozenset({"payments-api"})},
        {"min_confidence": 0.99},
    ],
)
def test_investigate_and_none_pass_through_untouched(action: ActionType, config: dict[str, Any]) -> None:
    decision = Decision(action=action, confidence=0.1, evidence=list(ENGINE_EVIDENCE))
    busy = PolicyHistory(last_automatic_action_at=NOW - timedelta(seconds=5), automatic_actions_last_hour=99)
    outcome = judge(decision, history=busy, approval_reason="engines disagree", **config)
    assert outcome.verdict is Verdict.PASS
    assert outcome.decision is decision
    assert outcome.reason is None


# 2. validity of a rollback


def test_a_valid_rollback_executes_unchanged() -> None:
    decision = rollback()
    outcome = judge(decision)
    assert outcome.verdict is Verdict.EXECUTE
    assert outcome.decision is decision
    assert outcome.reason is None


def test_rollback_without_a_target_is_overruled() -> None:
    decision = rollback().model_copy(update={"target_revision": None})  # bypasses the model's own check
    assert_overruled(judge(decision), decision, "rollback without a target revision")
    assert Evidence(build()).target_problem(None, now=NOW) is not None


def test_rollback_to_an_unknown_revision_is_overruled_naming_the_known_ones() -> None:
    decision = rollback(f"{SERVICE}-00001-gon")
    outcome = judge(decision)
    assert_overruled(outcome, decision, "is not a revision of checkout")
    assert outcome.reason is not None and PREV in outcome.reason and OLD in outcome.reason


def test_rollback_to_an_unready_revision_is_overruled() -> None:
    decision = rollback(UNREADY)
    assert_overruled(judge(decision), decision, f"rollback target {UNREADY} is not ready")


@pytest.mark.parametrize(
    "figures",
    [
        pytest.param((10.0, 0.2, 200.0), id="errors"),
        pytest.param((10.0, 0.001, 1500.0), id="latency"),
        pytest.param((10 / 60, 0.5, 200.0), id="ten-requests"),
    ],
)
def test_rollback_to_a_revision_failing_itself_is_overruled(figures: tuple[float, float, float]) -> None:
    context = build(
        [
            revision(FAILING, traffic=50, now=(10.0, 0.1, 250.0), history=None),
            revision(PREV, traffic=50, now=figures),
        ]
    )
    decision = rollback(PREV)
    assert_overruled(judge(decision, context), decision, f"{PREV} is failing now")


def test_a_handful_of_failed_requests_does_not_disqualify_a_target() -> None:
    # 9 requests: too few to judge, the engine already weighed the history.
    context = build(
        [
            revision(FAILING, traffic=95, now=(10.0, 0.1, 250.0), history=None),
            revision(PREV, traffic=5, now=(9 / 60, 0.5, 200.0)),
        ]
    )
    assert judge(rollback(PREV), context).verdict is Verdict.EXECUTE


def test_rollback_to_the_revision_already_serving_everything_is_overruled() -> None:
    decision = rollback(FAILING)
    context = build([revision(FAILING, traffic=100, now=(0.1, 0.5, 250.0)), revision(PREV)])
    assert_overruled(judge(decision, context), decision, "already serves 100% of traffic")


@pytest.mark.parametrize("manual", [False, True])
def test_rollback_to_a_revision_recently_rolled_back_from_is_overruled(manual: bool) -> None:
    decision = rollback(PREV)
    history = rolled_back_from(PREV, timedelta(minutes=30), manual=manual)
    assert_overruled(judge(decision, history=history), decision, "returning to it would flap")


@pytest.mark.parametrize(
    ("ago", "verdict"),
    [
        (timedelta(minutes=59, seconds=59), Verdict.OVERRULE),
        (timedelta(hours=1), Verdict.EXECUTE),
        (timedelta(hours=1, minutes=1), Verdict.EXECUTE),
    ],
)
def test_flap_window_ends_after_an_hour(ago: timedelta, verdict: Verdict) -> None:
    assert judge(rollback(PREV), history=rolled_back_from(PREV, ago)).verdict is verdict


def test_flap_window_is_configurable() -> None:
    history = rolled_back_from(PREV, timedelta(hours=1, minutes=1))
    evidence = EvidenceConfig(flap_window=timedelta(hours=2))
    assert judge(rollback(PREV), history=history, evidence=evidence).verdict is Verdict.OVERRULE


def test_only_the_revision_rolled_back_from_is_barred() -> None:
    # A recent rollback *to* PREV, or away from another revision, does not bar PREV.
    recent = [
        RecentAction(action=ActionType.ROLLBACK, at=NOW - timedelta(minutes=20), target_revision=PREV,
                     from_revision=FAILING),
        RecentAction(action=ActionType.SCALE_UP, at=NOW - timedelta(minutes=15), from_revision=PREV),
        RecentAction(action="RELEASE", at=NOW - timedelta(minutes=14), from_revision=PREV),
    ]  # fmt: skip
    assert judge(rollback(PREV), history=PolicyHistory(recent_actions=recent)).verdict is Verdict.EXECUTE


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(revision(PREV, history=(0.41, 2300.0)), id="failing-history"),
        pytest.param(revision(PREV, history=None), id="never-served"),
    ],
)
def test_rollback_to_a_revision_without_a_healthy_record_is_overruled(target: dict[str, Any]) -> None:
    context = build([revision(FAILING, traffic=100, now=(20.0, 0.1, 250.0), history=None), target])
    outcome = judge(rollback(PREV), context)
    assert outcome.verdict is Verdict.OVERRULE


# 2. validity of a scale-up


def test_a_valid_scale_up_executes() -> None:
    decision = scale(1, 20)
    outcome = judge(decision, saturated())
    assert outcome.verdict is Verdict.EXECUTE
    assert outcome.decision is decision


@pytest.mark.parametrize(
    ("change", "context", "reason_part"),
    [
        pytest.param((1, 10), saturated(), "does not raise max instances (10 <= 10)", id="same-max"),
        pytest.param((1, 8), saturated(), "does not raise max instances", id="lower-max"),
        pytest.param((1, 101), saturated(max_instances=60), "exceeds the ceiling 100", id="over-ceiling"),
        pytest.param(
            (1, 200), saturated(max_instances=100), "exceeds the ceiling 100", id="at-ceiling-already"
        ),
        pytest.param((1, 21), saturated(), "is more than x2 in one step", id="more-than-double"),
        pytest.param((3, 20), saturated(min_instances=1), "min instances 1 -> 3", id="min-more-than-double"),
        pytest.param((3, 20), saturated(min_instances=0), "min instances 0 -> 3", id="min-from-zero"),
        pytest.param((9, 20), saturated(min_instances=4), "min instances 4 -> 9", id="min-from-four"),
        pytest.param((1, 20), saturated(max_instances=None), "without a known current max", id="max-unknown"),
        pytest.param((1, 20), saturated(min_instances=None), "without a known current min", id="min-unknown"),
        pytest.param(
            (1, 20), saturated(min_instances=2), "would lower min instances (2 -> 1)", id="min-lowered"
        ),
        pytest.param((1, 20), saturated(max_instances=0), "without a known current max", id="max-zero"),
    ],
)
def test_out_of_bounds_scale_up_is_overruled(
    change: tuple[int, int], context: IncidentContext, reason_part: str
) -> None:
    decision = scale(*change)
    assert_overruled(judge(decision, context), decision, reason_part)


@pytest.mark.parametrize(
    ("change", "context"),
    [
        pytest.param((1, 100), saturated(max_instances=60), id="exactly-the-ceiling"),
        pytest.param((1, 20), saturated(), id="exactly-double"),
        pytest.param((2, 20), saturated(min_instances=1), id="min-doubled"),
        pytest.param((2, 20), saturated(min_instances=0), id="min-zero-to-two"),
        pytest.param((8, 20), saturated(min_instances=4), id="min-four-to-eight"),
    ],
)
def test_in_bounds_scale_up_executes(change: tuple[int, int], context: IncidentContext) -> None:
    assert judge(scale(*change), context).verdict is Verdict.EXECUTE


def test_scale_up_without_a_scale_is_overruled() -> None:
    decision = scale(1, 20).model_copy(update={"scale": None})
    assert_overruled(judge(decision, saturated()), decision, "scale-up without a scale")


def test_scale_factor_is_configurable() -> None:
    context = saturated()
    assert judge(scale(1, 16), context, max_scale_factor=1.5).verdict is Verdict.OVERRULE
    assert judge(scale(1, 15), context, max_scale_factor=1.5).verdict is Verdict.EXECUTE
    assert judge(scale(1, 20), context, max_instances_ceiling=15).verdict is Verdict.OVERRULE


# 5b. what the evidence backs


def test_a_rollback_away_from_a_long_serving_revision_waits_for_a_human() -> None:
    # Another engine proposed it; nothing shows the deploy brought the fault.
    context = build(
        [
            revision(FAILING, traffic=100, now=(20.0, 0.1, 250.0), history=None, created=timedelta(days=4)),
            revision(PREV),
        ]
    )
    outcome = judge(rollback(PREV), context)
    assert outcome.verdict is Verdict.AWAIT_APPROVAL
    assert outcome.reason is not None and "cannot tell whether the deploy brought the fault" in outcome.reason


def test_a_rollback_away_from_a_revision_without_a_creation_time_is_never_automatic() -> None:
    # Without the failing revision's creation time, neither its blame nor whether the target served
    # right up to it can be told: the target's record cannot back a rollback.
    failing = revision(FAILING, traffic=100, now=(20.0, 0.1, 250.0), history=None)
    del failing["created_at"]
    outcome = judge(rollback(PREV), build([failing, revision(PREV)]))
    assert outcome.verdict is Verdict.OVERRULE
    assert outcome.reason is not None and f"when {FAILING} replaced it is unknown" in outcome.reason


def test_a_rollback_while_the_other_serving_revision_cannot_be_judged_waits_for_a_human() -> None:
    context = build(
        [
            revision(FAILING, traffic=50, now=(10.0, 0.1, 250.0), history=None),
            revision(OLD, traffic=40, now=(8.0, None, None), history=None),
            revision(PREV, traffic=10, now=(2.0, 0.001, 150.0)),
        ]
    )
    outcome = judge(rollback(PREV), context)
    assert outcome.verdict is Verdict.AWAIT_APPROVAL
    assert outcome.reason is not None and f"{OLD} also serves and is unknown" in outcome.reason


def test_a_rollback_away_from_a_revision_that_is_not_failing_waits_for_a_human() -> None:
    context = build([revision(FAILING, traffic=100, now=(20.0, 0.001, 150.0), history=None), revision(PREV)])
    outcome = judge(rollback(PREV), context)
    assert outcome.verdict is Verdict.AWAIT_APPROVAL
    assert outcome.reason is not None and "is not known to be failing" in outcome.reason


def test_a_scale_up_without_proven_saturation_waits_for_a_human() -> None:
    context = saturated()
    unproven = context.model_copy(
        update={"scaling": context.scaling.model_copy(update={"utilization": None})}
    )
    outcome = judge(scale(1, 20), unproven)
    assert outcome.verdict is Verdict.AWAIT_APPROVAL
    assert outcome.reason is not None and "saturation is not proven" in outcome.reason


def test_a_scale_up_of_a_fresh_deploy_waits_for_a_human() -> None:
    # Saturated, but the serving revision was deployed two minutes ago: more of a bad deploy helps nobody.
    context = saturated()
    fresh = context.model_copy(
        update={
            "revisions": [context.revisions[0].model_copy(update={"created_at": NOW - timedelta(minutes=2)})]
        }
    )
    outcome = judge(scale(1, 20), fresh)
    assert outcome.verdict is Verdict.AWAIT_APPROVAL
    assert outcome.reason is not None and "a deploy may be the cause" in outcome.reason


# 3. allow-list


def test_service_outside_the_allow_list_is_suppressed() -> None:
    decision = rollback()
    outcome = judge(decision, allowed_services=frozenset({"payments-api"}))
    assert outcome.verdict is Verdict.SUPPRESS
    assert outcome.decision is decision
    assert outcome.reason == "checkout is not in the allow-list of services"


def test_service_in_the_allow_list_executes() -> None:
    assert (
        judge(rollback(), allowed_services=frozenset({"checkout", "payments-api"})).verdict is Verdict.EXECUTE
    )


# 4. dry-run


@pytest.mark.parametrize(
    ("decision", "would"),
    [
        (rollback(), f"dry-run mode: would roll back to {PREV}"),
        (scale(1, 20), "dry-run mode: would scale to min 1 / max 20 instances"),  # validity first
    ],
)
def test_dry_run_suppresses_and_says_what_it_would_do(decision: Decision, would: str) -> None:
    context = saturated() if decision.action is ActionType.SCALE_UP else None
    outcome = judge(decision, context, mode=PolicyMode.DRY_RUN)
    assert outcome.verdict is Verdict.SUPPRESS
    assert outcome.decision is decision
    assert outcome.reason == would


# 5. approval


def test_approve_mode_waits_for_a_human() -> None:
    decision = rollback()
    outcome = judge(decision, mode=PolicyMode.APPROVE)
    assert outcome.verdict is Verdict.AWAIT_APPROVAL
    assert outcome.decision is decision
    assert outcome.reason is not None and "approve mode" in outcome.reason


def test_approval_reason_from_the_engine_waits_for_a_human() -> None:
    outcome = judge(
        scale(1, 20), saturated(), approval_reason="rules and gemini disagree: SCALE_UP vs ROLLBACK"
    )
    assert outcome.verdict is Verdict.AWAIT_APPROVAL
    assert outcome.reason == "rules and gemini disagree: SCALE_UP vs ROLLBACK"


@pytest.mark.parametrize(
    ("confidence", "verdict"),
    [(0.79, Verdict.AWAIT_APPROVAL), (0.8, Verdict.EXECUTE), (0.81, Verdict.EXECUTE)],
)
def test_confidence_under_the_threshold_waits_for_a_human(confidence: float, verdict: Verdict) -> None:
    outcome = judge(rollback(confidence=confidence))
    assert outcome.verdict is verdict
    if verdict is Verdict.AWAIT_APPROVAL:
        assert outcome.reason == "confidence 0.79 is below 0.80"


def test_confidence_threshold_is_configurable() -> None:
    assert judge(rollback(confidence=0.92), min_confidence=0.95).verdict is Verdict.AWAIT_APPROVAL


# 6. cooldown and global cap


@pytest.mark.parametrize(
    ("ago", "verdict"),
    [
        (timedelta(minutes=3), Verdict.SUPPRESS),
        (timedelta(minutes=9, seconds=59), Verdict.SUPPRESS),
        (timedelta(minutes=10), Verdict.EXECUTE),
        (timedelta(minutes=10, seconds=1), Verdict.EXECUTE),
    ],
)
def test_cooldown_after_an_automatic_action(ago: timedelta, verdict: Verdict) -> None:
    history = PolicyHistory(last_automatic_action_at=NOW - ago, automatic_actions_last_hour=1)
    outcome = judge(rollback(), history=history)
    assert outcome.verdict is verdict
    if verdict is Verdict.SUPPRESS:
        assert outcome.reason is not None and outcome.reason.startswith("cooldown: ")
        assert f"{int(ago.total_seconds())}s ago" in outcome.reason


def test_cooldown_is_configurable() -> None:
    history = PolicyHistory(last_automatic_action_at=NOW - timedelta(minutes=20))
    outcome = judge(scale(1, 20), saturated(), history=history, cooldown=timedelta(minutes=30))
    assert outcome.verdict is Verdict.SUPPRESS


@pytest.mark.parametrize(
    ("count", "verdict"), [(9, Verdict.EXECUTE), (10, Verdict.SUPPRESS), (25, Verdict.SUPPRESS)]
)
def test_global_cap_on_automatic_actions_per_hour(count: int, verdict: Verdict) -> None:
    history = PolicyHistory(
        last_automatic_action_at=NOW - timedelta(minutes=30), automatic_actions_last_hour=count
    )
    outcome = judge(rollback(), history=history)
    assert outcome.verdict is verdict
    if verdict is Verdict.SUPPRESS:
        assert outcome.reason == f"global cap: {count} automatic actions in the last hour (max 10)"


def test_global_cap_is_configurable() -> None:
    history = PolicyHistory(automatic_actions_last_hour=3)
    assert judge(rollback(), history=history, max_actions_per_hour=3).verdict is Verdict.SUPPRESS


# Order of the checks


def test_an_invalid_target_is_overruled_even_in_dry_run_and_outside_the_allow_list() -> None:
    decision = rollback(UNREADY)
    outcome = judge(decision, mode=PolicyMode.DRY_RUN, allowed_services=frozenset({"payments-api"}))
    assert_overruled(outcome, decision, "is not ready")


def test_an_invalid_scale_up_is_overruled_even_in_approve_mode() -> None:
    decision = scale(1, 50)
    assert_overruled(judge(decision, saturated(), mode=PolicyMode.APPROVE), decision, "more than x2")


def test_allow_list_comes_before_dry_run() -> None:
    outcome = judge(rollback(), mode=PolicyMode.DRY_RUN, allowed_services=frozenset({"payments-api"}))
    assert outcome.verdict is Verdict.SUPPRESS
    assert outcome.reason is not None and "allow-list" in outcome.reason


def test_dry_run_comes_before_approval() -> None:
    outcome = judge(rollback(confidence=0.3), mode=PolicyMode.DRY_RUN, approval_reason="engines disagree")
    assert outcome.verdict is Verdict.SUPPRESS
    assert outcome.reason is not None and outcome.reason.startswith("dry-run mode")


@pytest.mark.parametrize(
    ("kwargs", "reason_part"),
    [
        ({"mode": PolicyMode.APPROVE}, "approve mode"),
        ({"approval_reason": "engines disagree"}, "engines disagree"),
        ({"decision": rollback(confidence=0.5)}, "confidence 0.50"),
    ],
)
def test_cooldown_and_cap_do_not_block_approval(kwargs: dict[str, Any], reason_part: str) -> None:
    # A human who approves after reading the evidence is not held back by the cooldown or the cap.
    history = PolicyHistory(
        last_automatic_action_at=NOW - timedelta(minutes=1), automatic_actions_last_hour=50
    )
    decision = kwargs.pop("decision", rollback())
    outcome = judge(decision, history=history, **kwargs)
    assert outcome.verdict is Verdict.AWAIT_APPROVAL
    assert outcome.reason is not None and reason_part in outcome.reason


def test_approve_mode_comes_before_the_engine_reason_and_low_confidence() -> None:
    outcome = judge(rollback(confidence=0.2), mode=PolicyMode.APPROVE, approval_reason="engines disagree")
    assert outcome.reason is not None and "approve mode" in outcome.reason


def test_cooldown_is_reported_before_the_global_cap() -> None:
    history = PolicyHistory(
        last_automatic_action_at=NOW - timedelta(minutes=2), automatic_actions_last_hour=50
    )
    outcome = judge(rollback(), history=history)
    assert outcome.verdict is Verdict.SUPPRESS
    assert outcome.reason is not None and outcome.reason.startswith("cooldown")


def test_flap_check_comes_before_cooldown() -> None:
    history = PolicyHistory(
        recent_actions=rolled_back_from(PREV, timedelta(minutes=2)).recent_actions,
        last_automatic_action_at=NOW - timedelta(minutes=2),
        automatic_actions_last_hour=1,
    )
    decision = rollback(PREV)
    assert_overruled(judge(decision, history=history), decision, "would flap")
