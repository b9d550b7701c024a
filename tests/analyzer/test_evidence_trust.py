"""What the evidence must show before it is trusted to back a change: a revision cannot have brought a
fault that began before it existed, traffic that moved during the incident did not bring it, a rollback
target belongs to the service and served up to the release after it, the revisions' order is known, and
the context is about the service that alerted.

`contract_edges/` holds hand-written contexts at and beyond the contract's edges (a revision of another
service in the list, an alert for another service, NaN figures, traffic that does not add up, an
action stamped after the observation): none may lead to a harmful decision.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from analyzer import PolicyGuard, RulesEngine
from analyzer.evaluation import evaluate, load_scenarios, render_table
from analyzer.evidence import Blame, Evidence
from analyzer.policy import PolicyHistory, Verdict
from incidents import ActionType, Decision, IncidentContext, ScaleChange, format_rfc3339

SERVICE = "payout-api"
ALERTED = datetime(2026, 7, 15, 12, 0, 10, tzinfo=UTC)
NEW, PREV, OLD = (f"{SERVICE}-{n:05d}-{s}" for n, s in ((82, "new"), (81, "prv"), (80, "old")))
EDGES = Path(__file__).parent / "contract_edges"


def t(delta: timedelta) -> str:
    return format_rfc3339(ALERTED + delta)


def failing(name: str = NEW, *, created: timedelta | None = timedelta(minutes=-2)) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "traffic_percent": 100,
        "ready": True,
        "latest": True,
        "metrics": {"request_rate_rps": 20.0, "error_rate": 0.3, "latency_p95_ms": 400},
    }
    if created is not None:
        data["created_at"] = t(created)
    return data


def previous(
    name: str = PREV,
    *,
    created: timedelta = timedelta(days=-6),
    served_until: timedelta = timedelta(minutes=-1, seconds=-30),
    rate: float | None = None,
) -> dict[str, Any]:
    history: dict[str, Any] = {"error_rate": 0.004, "latency_p95_ms": 150, "served_until": t(served_until)}
    if rate is not None:
        history["request_rate_rps"] = rate
    return {
        "name": name,
        "created_at": t(created),
        "traffic_percent": 0,
        "ready": True,
        "metrics": {"request_rate_rps": 0.0, "error_rate": None, "latency_p95_ms": None},
        "history": history,
    }


def context(
    revisions: list[dict[str, Any]] | None = None,
    *,
    alert_service: str = SERVICE,
    recent_actions: list[dict[str, Any]] | None = None,
) -> IncidentContext:
    """A fresh deploy failing at 100% two minutes after it was created, and the healthy revision it
    replaced: a rollback to PREV is right, unless a test changes that."""
    return IncidentContext.model_validate(
        {
            "observed_at": t(timedelta(minutes=8)),
            "service": {"name": SERVICE},
            "alert": {
                "name": "HighErrorRate",
                "status": "firing",
                "starts_at": format_rfc3339(ALERTED),
                "fingerprint": "09121ddd95a63cfe",
                "labels": {"alertname": "HighErrorRate", "service": alert_service},
            },
            "thresholds": {"error_rate": 0.02, "latency_p95_ms": 1000, "min_requests": 60},
            "metrics": {
                "window_seconds": 60,
                "requests_in_window": 1200,
                "request_rate_rps": 20.0,
                "error_rate": 0.3,
                "latency_p95_ms": 400,
                "baseline": {"request_rate_rps": 20.0, "error_rate": 0.004, "latency_p95_ms": 150},
            },
            "revisions": revisions if revisions is not None else [failing(), previous()],
            "scaling": {"min_instances": 1, "max_instances": 10, "current_instances": 2},
            "recent_actions": recent_actions or [],
        }
    )


async def decide(ctx: IncidentContext) -> Decision:
    return (await RulesEngine().decide(ctx)).decision


def judge(decision: Decision, ctx: IncidentContext) -> Verdict:
    return PolicyGuard().evaluate(decision, ctx, PolicyHistory(), now=ctx.observed_at).verdict


ROLLBACK_PREV = Decision(action=ActionType.ROLLBACK, target_revision=PREV, confidence=0.95)


async def test_the_plain_bad_deploy_is_rolled_back() -> None:
    # The control for every test below: each changes one thing and the rollback must go.
    ctx = context()
    decision = await decide(ctx)
    assert (decision.action, decision.target_revision) == (ActionType.ROLLBACK, PREV)
    assert judge(ROLLBACK_PREV, ctx) is Verdict.EXECUTE


# a fault older than the revision


async def test_a_revision_created_after_the_alert_began_did_not_bring_its_fault() -> None:
    # The alert fired at 12:00:10; a hotfix created at 12:06 fails like its predecessor did.
    ctx = context([failing(created=timedelta(minutes=6)), previous(served_until=timedelta(minutes=6))])
    verdict = Evidence(ctx).blame(ctx.revisions[0])
    assert verdict.blame is Blame.UNKNOWN
    assert "after the alert began" in verdict.reason
    assert (await decide(ctx)).action is ActionType.INVESTIGATE
    assert judge(ROLLBACK_PREV, ctx) is not Verdict.EXECUTE


@pytest.mark.parametrize(
    ("served_until", "brought"),
    [(timedelta(minutes=-1), True), (timedelta(seconds=50), True), (timedelta(minutes=5), False)],
    ids=["before-the-alert", "within-the-sampling-slack", "during-the-incident"],
)
def test_traffic_that_moved_during_the_incident_did_not_bring_the_fault(
    served_until: timedelta, brought: bool
) -> None:
    # NEW has existed for days and carried nothing before; PREV served all traffic until `served_until`.
    new = {**failing(created=timedelta(days=-3)), "baseline": {"request_rate_rps": 0.0}}
    ctx = context([new, previous(served_until=served_until, rate=20.0)])
    assert (Evidence(ctx).blame(ctx.revisions[0]).blame is Blame.BROUGHT) is brought


@pytest.mark.parametrize(
    ("new_baseline", "prev_baseline", "brought"),
    [
        ({"request_rate_rps": 14.0, "error_rate": 0.002}, None, False),
        (None, {"request_rate_rps": 6.0, "error_rate": 0.002}, False),
        (None, {"request_rate_rps": 20.0, "error_rate": 0.004}, True),
        (None, None, False),
    ],
    ids=["carried-most-itself", "the-other-carried-little", "the-other-carried-all", "neither-known"],
)
def test_a_canary_pulled_beside_a_revision_is_no_takeover_by_it(
    new_baseline: dict[str, Any] | None, prev_baseline: dict[str, Any] | None, brought: bool
) -> None:
    # A human set the canary PREV (30%) to 0% a minute before the alert; NEW has served for days.
    # NEW took the traffic over only if it carried less than PREV before: its own baseline says
    # so, or what PREV's leaves of the service's. Neither known: no proof of a takeover.
    new = failing(created=timedelta(days=-3))
    prev = previous(served_until=timedelta(minutes=-1), rate=6.0)
    if new_baseline is not None:
        new["baseline"] = new_baseline
    if prev_baseline is not None:
        prev["baseline"] = prev_baseline
        prev["history"]["request_rate_rps"] = prev_baseline["request_rate_rps"]
    ctx = context([new, prev])
    assert (Evidence(ctx).blame(ctx.revisions[0]).blame is Blame.BROUGHT) is brought


@pytest.mark.parametrize(
    ("moved", "brought"),
    [(timedelta(minutes=-1), True), (timedelta(minutes=2), False)],
    ids=["before-the-alert", "during-the-incident"],
)
def test_a_rollback_during_the_incident_is_not_a_takeover_that_brought_the_fault(
    moved: timedelta, brought: bool
) -> None:
    # A human rolled back to NEW (days old) while the alert fired: NEW failing now is no deploy fault.
    action = {"action": "ROLLBACK", "at": t(moved), "target_revision": NEW, "manual": True}
    ctx = context(
        [failing(created=timedelta(days=-3)), previous(served_until=timedelta(days=-2))],
        recent_actions=[action],
    )
    assert (Evidence(ctx).blame(ctx.revisions[0]).blame is Blame.BROUGHT) is brought


# what a rollback target must be


async def test_a_revision_of_another_service_is_never_a_rollback_target() -> None:
    stranger = previous(name="payments-api-00021-pay")
    ctx = context([failing(), stranger])
    problem = Evidence(ctx).target_problem("payments-api-00021-pay")
    assert problem is not None and "not named like a revision of payout-api" in problem
    decision = await decide(ctx)
    assert decision.action is ActionType.INVESTIGATE
    assert "cannot be trusted" in decision.root_cause


async def test_the_search_stops_at_another_services_revision_instead_of_jumping_past_it() -> None:
    ctx = context([failing(), previous(name="payments-api-00021-pay"), previous(name=OLD)])
    assert Evidence(ctx).rollback_candidate(ctx.revisions[0]).target is None
    assert (await decide(ctx)).action is ActionType.INVESTIGATE


@pytest.mark.parametrize(
    ("gap", "action"),
    [(timedelta(days=2), ActionType.ROLLBACK), (timedelta(days=30), ActionType.INVESTIGATE)],
    ids=["two-days", "a-month"],
)
async def test_a_target_whose_record_ends_long_before_the_next_release_is_no_target(
    gap: timedelta, action: ActionType
) -> None:
    # PREV stopped serving `gap` before NEW was created: whatever served in between is not listed.
    ctx = context([failing(), previous(created=-gap - timedelta(days=5), served_until=-gap)])
    assert (await decide(ctx)).action is action
    if action is ActionType.INVESTIGATE:
        problem = Evidence(ctx).target_problem(PREV)
        assert problem is not None and "what served in between is not listed" in problem
        assert judge(ROLLBACK_PREV, ctx) is Verdict.OVERRULE


# the order of the revisions


async def test_revisions_listed_out_of_order_are_read_newest_first() -> None:
    ctx = context(
        [
            previous(name=OLD, created=timedelta(days=-20), served_until=timedelta(days=-6)),
            failing(),
            previous(),
        ]
    )
    assert [r.name for r in ctx.revisions] == [NEW, PREV, OLD]
    decision = await decide(ctx)
    assert (decision.action, decision.target_revision) == (ActionType.ROLLBACK, PREV)


async def test_an_order_the_creation_times_contradict_backs_no_rollback() -> None:
    # OLD has no creation time, so the list cannot be put in order; NEW listed after PREV is
    # newer than it, which contradicts newest first.
    old = previous(name=OLD)
    del old["created_at"]
    ctx = context([previous(), old, failing()])
    problem = Evidence(ctx).order_problem()
    assert problem is not None and "not listed newest first" in problem
    assert (await decide(ctx)).action is ActionType.INVESTIGATE
    assert judge(ROLLBACK_PREV, ctx) is not Verdict.EXECUTE


# the service the context is about


async def test_an_alert_for_another_service_backs_no_change() -> None:
    ctx = context(alert_service="billing-api")
    assert Evidence(ctx).identity_problem() == (
        "the alert is for billing-api, but the evidence was collected for payout-api"
    )
    assert (await decide(ctx)).action is ActionType.INVESTIGATE
    assert judge(ROLLBACK_PREV, ctx) is Verdict.AWAIT_APPROVAL
    scale_up = Decision(
        action=ActionType.SCALE_UP,
        scale=ScaleChange(min_instances=1, max_instances=15),
        confidence=0.95,
    )
    assert judge(scale_up, ctx) is not Verdict.EXECUTE


# a ceiling of one instance


def saturated(max_instances: int) -> IncidentContext:
    """Demand at three times the baseline on a revision that has served for days, every instance
    busy at the ceiling: a scale-up, unless the ceiling says otherwise."""
    data = context([failing(created=timedelta(days=-5)), previous(served_until=timedelta(days=-5))])
    data = data.model_copy(
        update={
            "scaling": data.scaling.model_copy(
                update={
                    "max_instances": max_instances,
                    "current_instances": max_instances,
                    "utilization": 0.96,
                }
            ),
            "metrics": data.metrics.model_copy(update={"request_rate_rps": 60.0, "error_rate": 0.05}),
        }
    )
    return IncidentContext.model_validate(data.to_json_dict())


@pytest.mark.parametrize(("max_instances", "scaled"), [(2, True), (1, False)], ids=["two", "one"])
async def test_a_ceiling_of_one_instance_is_never_raised_on_its_own(max_instances: int, scaled: bool) -> None:
    ctx = saturated(max_instances)
    decision = await decide(ctx)
    scale_up = Decision(
        action=ActionType.SCALE_UP,
        scale=ScaleChange(min_instances=1, max_instances=2 * max_instances),
        confidence=0.95,
    )
    if scaled:
        assert decision.action is ActionType.SCALE_UP
        assert judge(scale_up, ctx) is Verdict.EXECUTE
        return
    assert Evidence(ctx).cleared_for_scale_up() == (
        "max instances is 1: the service may run as a single instance on purpose, and a second one "
        "could break it"
    )
    assert decision.action is ActionType.INVESTIGATE
    assert judge(scale_up, ctx) is not Verdict.EXECUTE


# whose limits they are, and where everyone goes


async def test_a_humans_recent_scaling_change_is_not_raised_on_its_own() -> None:
    ctx = saturated(10)
    data = ctx.to_json_dict()
    data["recent_actions"] = [{"action": "SCALE", "at": t(timedelta(minutes=-20)), "manual": True}]
    capped = IncidentContext.model_validate(data)
    problem = Evidence(capped).cleared_for_scale_up()
    assert problem is not None and problem.startswith("a human changed the scaling at")
    assert (await decide(capped)).action is ActionType.INVESTIGATE
    scale_up = Decision(
        action=ActionType.SCALE_UP, scale=ScaleChange(min_instances=1, max_instances=20), confidence=0.95
    )
    assert judge(scale_up, capped) is not Verdict.EXECUTE
    # Past the flap window the limits are the service's again.
    data["recent_actions"][0]["at"] = t(timedelta(hours=-2))
    assert Evidence(IncidentContext.model_validate(data)).cleared_for_scale_up() is None


async def test_a_rollback_target_at_no_traffic_needs_a_record_not_a_few_tag_requests() -> None:
    # PREV serves 0% but answered a few requests through a tag, cleanly, and has no history.
    prev = previous()
    del prev["history"]
    prev["metrics"] = {"request_rate_rps": 0.5, "error_rate": 0.0, "latency_p95_ms": 90}
    ctx = context([failing(), prev])
    assert Evidence(ctx).target_problem(PREV) == f"rollback target: {PREV} has no record of serving healthily"
    assert (await decide(ctx)).action is ActionType.INVESTIGATE


async def test_a_canary_is_rolled_back_to_the_revision_that_carries_the_service() -> None:
    # NEW is a 10% canary; PREV a 10% experiment, healthy; OLD carries 80%.
    new = {
        **failing(),
        "traffic_percent": 10,
        "metrics": {"request_rate_rps": 2.0, "error_rate": 0.4, "latency_p95_ms": 160},
    }
    prev = {
        **previous(),
        "traffic_percent": 10,
        "metrics": {"request_rate_rps": 2.0, "error_rate": 0.0, "latency_p95_ms": 150},
    }
    old = {
        **previous(name=OLD, created=timedelta(days=-9)),
        "traffic_percent": 80,
        "metrics": {"request_rate_rps": 16.0, "error_rate": 0.002, "latency_p95_ms": 150},
    }
    ctx = context([new, prev, old])
    search = Evidence(ctx).rollback_candidate(ctx.revisions[0])
    assert search.target is not None and search.target.name == OLD
    assert search.skipped == (f"{PREV} skipped: it serves 10% beside {OLD} (80%)",)
    decision = await decide(ctx)
    assert (decision.action, decision.target_revision) == (ActionType.ROLLBACK, OLD)


async def test_contexts_at_the_contracts_edges_lead_to_no_harmful_decision() -> None:
    scenarios = load_scenarios(EDGES)
    assert len(scenarios) >= 6
    report = await evaluate(scenarios, RulesEngine(), PolicyGuard())
    assert report.harmful == 0, render_table(report)
    assert report.correct == report.total, render_table(report)
