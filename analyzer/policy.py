"""The policy guard: every engine's decision passes here before anything can change Cloud Run.

Checks, in order (the first that applies decides):

1. INVESTIGATE and NONE change nothing and pass through.
2. Validity (an invalid decision is overruled and becomes INVESTIGATE, with the reason):
   a rollback target must exist, be ready, not be a failing revision, and not be a revision a recent
   rollback moved traffic away from; a scale-up must raise max instances, stay under the ceiling,
   at most multiply max by `max_scale_factor`, and keep min <= max.
3. Allow-list: a service that is not listed is never acted on (suppressed).
4. Mode `dry-run`: record what would be done, do nothing (suppressed).
5. Approval: mode `approve`, engines that disagree, or confidence under the threshold wait for a human.
6. Cooldown per service and a global cap on automatic actions per hour (suppressed).
7. Otherwise the action is queued.

Cooldown and the cap come after approval on purpose: they stop Remediator from acting again on its
own, not a human who approves after reading the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from incidents import ActionType, Decision, IncidentContext, RecentAction

MIN_REQUESTS_TO_JUDGE_TARGET = 10


class PolicyMode(StrEnum):
    AUTO = "auto"
    APPROVE = "approve"
    DRY_RUN = "dry-run"


class Verdict(StrEnum):
    EXECUTE = "execute"
    AWAIT_APPROVAL = "await_approval"
    SUPPRESS = "suppress"
    OVERRULE = "overrule"
    PASS = "pass"  # INVESTIGATE or NONE: nothing to execute


@dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    mode: PolicyMode = PolicyMode.AUTO
    min_confidence: float = 0.8
    cooldown: timedelta = timedelta(minutes=10)
    max_actions_per_hour: int = 10
    # A revision that a rollback moved traffic away from is not a rollback target for this long.
    flap_window: timedelta = timedelta(hours=1)
    max_instances_ceiling: int = 100
    max_scale_factor: float = 2.0
    allowed_services: frozenset[str] | None = None


@dataclass(frozen=True, kw_only=True)
class PolicyHistory:
    """What the guard needs to know about the past, read from the store in the deciding transaction."""

    recent_actions: list[RecentAction] = field(default_factory=list)
    last_automatic_action_at: datetime | None = None
    automatic_actions_last_hour: int = 0


@dataclass(frozen=True, kw_only=True)
class PolicyOutcome:
    verdict: Verdict
    decision: Decision  # the final decision; INVESTIGATE when overruled
    reason: str | None = None


class PolicyGuard:
    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()

    def evaluate(
        self,
        decision: Decision,
        context: IncidentContext,
        history: PolicyHistory,
        *,
        now: datetime,
        approval_reason: str | None = None,
    ) -> PolicyOutcome:
        config = self.config
        if decision.action in (ActionType.INVESTIGATE, ActionType.NONE):
            return PolicyOutcome(verdict=Verdict.PASS, decision=decision)

        problem = (
            self._rollback_problem(decision, context, history, now=now)
            if decision.action is ActionType.ROLLBACK
            else self._scale_problem(decision, context)
        )
        if problem is not None:
            return PolicyOutcome(
                verdict=Verdict.OVERRULE, decision=overruled(decision, problem), reason=problem
            )

        service = context.service.name
        if config.allowed_services is not None and service not in config.allowed_services:
            return self._suppress(decision, f"{service} is not in the allow-list of services")
        if config.mode is PolicyMode.DRY_RUN:
            return self._suppress(decision, f"dry-run mode: would {describe(decision)}")

        if config.mode is PolicyMode.APPROVE:
            return self._await(decision, "approve mode: every action waits for a human")
        if approval_reason:
            return self._await(decision, approval_reason)
        if decision.confidence < config.min_confidence:
            return self._await(
                decision, f"confidence {decision.confidence:.2f} is below {config.min_confidence:.2f}"
            )

        last = history.last_automatic_action_at
        if last is not None and now - last < config.cooldown:
            remaining = int((config.cooldown - (now - last)).total_seconds())
            return self._suppress(
                decision,
                f"cooldown: an automatic action ran on {service} {int((now - last).total_seconds())}s ago "
                f"({remaining}s left)",
            )
        if history.automatic_actions_last_hour >= config.max_actions_per_hour:
            return self._suppress(
                decision,
                f"global cap: {history.automatic_actions_last_hour} automatic actions in the last hour "
                f"(max {config.max_actions_per_hour})",
            )
        return PolicyOutcome(verdict=Verdict.EXECUTE, decision=decision)

    @staticmethod
    def _suppress(decision: Decision, reason: str) -> PolicyOutcome:
        return PolicyOutcome(verdict=Verdict.SUPPRESS, decision=decision, reason=reason)

    @staticmethod
    def _await(decision: Decision, reason: str) -> PolicyOutcome:
        return PolicyOutcome(verdict=Verdict.AWAIT_APPROVAL, decision=decision, reason=reason)

    def _rollback_problem(
        self, decision: Decision, context: IncidentContext, history: PolicyHistory, *, now: datetime
    ) -> str | None:
        return rollback_target_problem(
            decision.target_revision,
            context,
            history.recent_actions,
            now=now,
            flap_window=self.config.flap_window,
        )

    def _scale_problem(self, decision: Decision, context: IncidentContext) -> str | None:
        return scale_problem(decision, context, self.config)


def rollback_target_problem(
    target: str | None,
    context: IncidentContext,
    recent_actions: list[RecentAction],
    *,
    now: datetime,
    flap_window: timedelta,
    require_healthy_record: bool = True,
) -> str | None:
    """Why `target` is not a safe rollback target, or None when it is.

    `require_healthy_record=False` is for a human's manual rollback: a person may know a revision is
    good from before the metrics' lookback, and vouches for it.
    """
    if not target:
        return "rollback without a target revision"
    revision = context.revision(target)
    if revision is None:
        known = ", ".join(r.name for r in context.revisions) or "none"
        return f"rollback target {target} is not a revision of {context.service.name} (known: {known})"
    if not revision.ready:
        return f"rollback target {target} is not ready"
    thresholds = context.thresholds
    errors, p95 = revision.metrics.error_rate, revision.metrics.latency_p95_ms
    requests = (revision.metrics.request_rate_rps or 0.0) * context.metrics.window_seconds
    # A handful of requests proves nothing either way; the engine already weighed the history.
    if requests >= MIN_REQUESTS_TO_JUDGE_TARGET and (
        (errors is not None and errors > thresholds.error_rate)
        or (p95 is not None and p95 > thresholds.latency_p95_ms)
    ):
        return f"rollback target {target} is failing itself"
    if revision.traffic_percent == 100:
        return f"rollback target {target} already serves 100% of traffic and the service is unhealthy"
    if require_healthy_record and requests < MIN_REQUESTS_TO_JUDGE_TARGET:
        # Not serving enough now to judge: it must have been healthy while it last served.
        history = revision.history
        if history is None or history.served_until is None or history.error_rate is None:
            return f"rollback target {target} has no record of serving healthily"
        if history.error_rate > thresholds.error_rate or (
            history.latency_p95_ms is not None and history.latency_p95_ms > thresholds.latency_p95_ms
        ):
            return f"rollback target {target} was unhealthy when it last served"
    for action in recent_actions:
        if (
            action.action == ActionType.ROLLBACK
            and action.from_revision == target
            and now - action.at < flap_window
        ):
            return (
                f"rollback target {target} was rolled back away from at {action.at:%H:%M:%S}Z; "
                "returning to it would flap"
            )
    return None


def scale_problem(decision: Decision, context: IncidentContext, config: PolicyConfig) -> str | None:
    """Why a scale-up is out of bounds, or None when it is within them."""
    scale = decision.scale
    if scale is None:
        return "scale-up without a scale"
    current_max = context.scaling.max_instances
    if not current_max:
        return "scale-up without a known current max instances"
    if scale.max_instances <= current_max:
        return f"scale-up does not raise max instances ({scale.max_instances} <= {current_max})"
    if scale.max_instances > config.max_instances_ceiling:
        return f"max instances {scale.max_instances} exceeds the ceiling {config.max_instances_ceiling}"
    if scale.max_instances > current_max * config.max_scale_factor:
        return (
            f"max instances {current_max} -> {scale.max_instances} is more than "
            f"x{config.max_scale_factor:g} in one step"
        )
    current_min = context.scaling.min_instances or 0
    if scale.min_instances > max(current_min, 1) * config.max_scale_factor:
        return (
            f"min instances {current_min} -> {scale.min_instances} is more than "
            f"x{config.max_scale_factor:g} in one step"
        )
    return None


def describe(decision: Decision) -> str:
    if decision.action is ActionType.ROLLBACK:
        return f"roll back to {decision.target_revision}"
    if decision.action is ActionType.SCALE_UP and decision.scale is not None:
        return f"scale to min {decision.scale.min_instances} / max {decision.scale.max_instances} instances"
    return decision.action.value.lower()


def overruled(decision: Decision, reason: str) -> Decision:
    """The INVESTIGATE decision that replaces an overruled one, keeping the engine's evidence."""
    return decision.model_copy(
        update={
            "action": ActionType.INVESTIGATE,
            "target_revision": None,
            "scale": None,
            "explanation": f"Policy overruled {describe(decision)}: {reason}. A human must look.",
            "evidence": [*decision.evidence, f"policy: {reason}"],
        }
    )
