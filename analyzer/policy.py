"""The policy guard: every engine's decision passes here before anything can change Cloud Run.

Checks, in order (the first that applies decides):

1. INVESTIGATE and NONE change nothing and pass through.
2. Validity (an invalid decision is overruled and becomes INVESTIGATE, with the reason):
   a rollback target must exist, be ready, not serve everything already, have a healthy record (healthy
   now, or quiet now with a complete healthy history) and not be a revision a recent rollback moved
   traffic away from; a scale-up must raise max instances, keep the current min, stay under the
   ceiling, and at most multiply max by `max_scale_factor`.
3. Allow-list: a service that is not listed is never acted on (suppressed).
4. Mode `dry-run`: record what would be done, do nothing (suppressed).
5. Approval: mode `approve`, engines that disagree, evidence that does not back the change (a rollback
   away from a revision not proven failing and to blame for the fault, or from among serving revisions
   that cannot all be judged; a scale-up without proven saturation, or while a serving revision may be
   a bad deploy), or confidence under the threshold: a human decides.
6. Cooldown per service and a global cap on automatic actions per hour (suppressed).
7. Otherwise the action is queued.

Every check that lets a change through needs positive evidence, read by `analyzer.evidence` exactly as
the rules engine reads it: a context with a piece of evidence removed never gets a change the full
context would not.

Cooldown and the cap come after approval on purpose: they stop Remediator from acting again on its
own, not a human who approves after reading the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from analyzer.evidence import Evidence, EvidenceConfig, Health
from incidents import ActionType, Decision, IncidentContext, RecentAction
from incidents import describe_decision as describe


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
    max_instances_ceiling: int = 100
    max_scale_factor: float = 2.0
    allowed_services: frozenset[str] | None = None
    # How the evidence is read (revision health, deploy blame, the flap window): shared with the rules
    # engine and the Gemini prompt.
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)

    @property
    def flap_window(self) -> timedelta:
        """A revision a rollback moved traffic away from is not a rollback target for this long."""
        return self.evidence.flap_window


@dataclass(frozen=True, kw_only=True)
class PolicyHistory:
    """What the guard needs to know about the past, read from the store in the deciding transaction."""

    recent_actions: list[RecentAction] = field(default_factory=list)
    last_automatic_action_at: datetime | None = None
    automatic_actions_last_hour: int = 0
    # The database's clock when the history was read: the times above are on that clock, so the
    # cooldown and the flap window are measured from it, not from the deciding process's clock.
    as_of: datetime | None = None


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
        if history.as_of is not None:
            now = history.as_of

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
        unsupported = self._support_problem(decision, context)
        if unsupported is not None:
            return self._await(decision, f"the evidence does not back {describe(decision)}: {unsupported}")
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
        # The store's history, read in the deciding transaction, is fresher than the context's.
        current = context.model_copy(update={"recent_actions": history.recent_actions})
        return Evidence(current, self.config.evidence).target_problem(decision.target_revision, now=now)

    def _scale_problem(self, decision: Decision, context: IncidentContext) -> str | None:
        return scale_problem(decision, context, self.config)

    def _support_problem(self, decision: Decision, context: IncidentContext) -> str | None:
        evidence = Evidence(context, self.config.evidence)
        if decision.action is ActionType.ROLLBACK:
            return evidence.rollback_support_problem(decision.target_revision)
        if evidence.saturation() is None:
            return "saturation is not proven (instances at max, busy, and demand above the baseline)"
        return evidence.cleared_for_scale_up()


def manual_rollback_problem(
    target: str | None,
    context: IncidentContext,
    recent_actions: list[RecentAction],
    *,
    now: datetime,
    config: EvidenceConfig,
) -> str | None:
    """Why a human's rollback to `target` is refused, or None.

    A person may know a revision is good from before the metrics' lookback and vouches for it, so no
    healthy record is required; a target that is known to fail now, or that a recent rollback moved
    traffic away from, is still refused.
    """
    if not target:
        return "rollback without a target revision"
    revision = context.revision(target)
    if revision is None:
        known = ", ".join(r.name for r in context.revisions) or "none"
        return f"rollback target {target} is not a revision of {context.service.name} (known: {known})"
    if not revision.ready:
        return f"rollback target {target} is not ready"
    evidence = Evidence(context, config)
    judged = evidence.now(revision)
    if judged.state is Health.FAILING:
        return f"rollback target {target} is failing itself ({', '.join(judged.reasons)})"
    if revision.traffic_percent == 100:
        return f"rollback target {target} already serves 100% of traffic and the service is unhealthy"
    for action in recent_actions:
        if (
            action.action == ActionType.ROLLBACK
            and action.from_revision == target
            and now - action.at < config.flap_window
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
    current_min = context.scaling.min_instances
    if current_min is None:
        return "scale-up without a known current min instances (it could lower it)"
    if scale.min_instances < current_min:
        return f"scale-up would lower min instances ({current_min} -> {scale.min_instances})"
    if scale.min_instances > max(current_min, 1) * config.max_scale_factor:
        return (
            f"min instances {current_min} -> {scale.min_instances} is more than "
            f"x{config.max_scale_factor:g} in one step"
        )
    return None


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
