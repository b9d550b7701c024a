"""The rules engine: deterministic, explainable decisions from the evidence in an IncidentContext.

It reads the context through `analyzer.evidence` (revision health, deploy blame, rollback candidates,
saturation), the same reading the policy guard and the Gemini prompt use. Missing evidence is
unknown: a rollback or a scale-up needs positive evidence for every step, and whatever the engine
cannot tell ends in INVESTIGATE with the reason.

In order, first match wins:

1. The alert has resolved                                          -> NONE
2. The alert's `service` label names another service than the context's
                                                                   -> INVESTIGATE
3. Metrics are missing (a Prometheus gap)                          -> INVESTIGATE (missing is not healthy)
4. The request count is unknown                                    -> INVESTIGATE
5. Too little traffic in the window to judge                       -> NONE
6. Revision state is missing (a Cloud Run gap, or no revision serves)
                                                                   -> INVESTIGATE
7. The service is within its thresholds and every serving revision is healthy or quiet (a canary is
   judged on its own figures, not the diluted ones)                -> NONE
8. Several serving revisions fail                                  -> INVESTIGATE (a dependency)
9. The newest serving revision is failing and its deploy brought the fault (created within the change
   window before the alert, or it took over traffic just before the alert):
     - another serving revision cannot be judged                   -> INVESTIGATE
     - a recent rollback moved traffic to it                       -> INVESTIGATE (the fix failed too)
     - the newest older revision that is ready, has a healthy record and no recent rollback left
                                                                   -> ROLLBACK to it
     - otherwise                                                   -> INVESTIGATE (no safe target)
10. The newest serving revision is failing and the engine cannot tell whether its deploy brought the
    fault (created after the alert began, or no proof either way)  -> INVESTIGATE
11. The service is saturated (instances at max, busy, demand above the baseline), max instances is
    not 1 (a singleton on purpose) and no serving revision can be a bad deploy
                                                                   -> SCALE_UP (at most double max)
12. An older serving revision fails while the newest does not      -> INVESTIGATE
13. The newest serving revision fails but provably served healthily before the alert:
     - it is young (under 30 min) and a rollback target exists     -> ROLLBACK proposed at confidence 0.6,
                                                                      so the policy asks a human
     - otherwise                                                   -> INVESTIGATE (not the deploy)
14. Anything else                                                  -> INVESTIGATE

Log lines are never read here: they are untrusted text and the decision stands on metrics and
Cloud Run state alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from analyzer.engines.base import EngineResult
from analyzer.evidence import Blame, Evidence, EvidenceConfig, Health, Judgement, ms, pct
from incidents import ActionType, Decision, IncidentContext, Revision, ScaleChange, format_rfc3339

ENGINE_NAME = "rules"
# A rollback proposed for a young revision that served fine at first stays under the policy's default
# confidence bar: a human decides.
SUSPECTED_DEPLOY_CONFIDENCE = 0.6


@dataclass(frozen=True, kw_only=True)
class RulesConfig:
    # How the evidence is read: shared with the policy guard and the Gemini prompt.
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    # How many times the scale-up multiplies max instances (the policy caps it at doubling).
    scale_factor: float = 2.0


class RulesEngine:
    name = ENGINE_NAME

    def __init__(self, config: RulesConfig | None = None) -> None:
        self.config = config or RulesConfig()

    async def decide(self, context: IncidentContext) -> EngineResult:
        return EngineResult(decision=self.decide_now(context))

    def decide_now(self, context: IncidentContext) -> Decision:
        """The decision for `context`; pure and synchronous."""
        return _Reasoning(context, self.config).decide()


class _Reasoning:
    def __init__(self, context: IncidentContext, config: RulesConfig) -> None:
        self.ctx = context
        self.config = config
        self.ev = Evidence(context, config.evidence)
        self.window = context.metrics.window_seconds
        self.evidence: list[str] = []

    def _decision(
        self, action: ActionType, confidence: float, root_cause: str, explanation: str, **kw: object
    ) -> Decision:
        return Decision.model_validate(
            {
                "action": action,
                "confidence": round(max(0.0, min(1.0, confidence)), 2),
                "root_cause": root_cause,
                "explanation": explanation,
                "evidence": list(self.evidence),
                "engine": ENGINE_NAME,
                **kw,
            }
        )

    def _investigate(self, confidence: float, root_cause: str, explanation: str) -> Decision:
        return self._decision(ActionType.INVESTIGATE, confidence, root_cause, explanation)

    def _service_missing(self) -> str | None:
        """The Cloud Run gap that says the service does not exist, if there is one."""
        return next(
            (gap for gap in self.ctx.gaps if gap.startswith("cloud_run") and gap.endswith("not found")), None
        )

    def _has_gap(self, source: str) -> bool:
        return any(gap.split(":", 1)[0].strip().startswith(source) for gap in self.ctx.gaps)

    # the reasoning, in the order of the module docstring

    def decide(self) -> Decision:
        ctx, metrics = self.ctx, self.ctx.metrics
        if ctx.alert.status == "resolved":
            self.evidence.append(f"alert {ctx.alert.name} resolved")
            return self._decision(
                ActionType.NONE, 0.95, "The alert resolved.", "Nothing to do: the alert has resolved."
            )
        identity = self.ev.identity_problem()
        if identity is not None:
            self.evidence.append(f"identity: {identity}")
            return self._investigate(
                0.9,
                f"The evidence may be about another service than the one alerting: {identity}.",
                "A human must look: Remediator changes only the service the alert is about.",
            )
        if self._has_gap("prometheus"):
            self.evidence.extend(f"missing: {gap}" for gap in ctx.gaps)
            return self._investigate(
                0.9,
                "Metrics are unavailable, so the service's health cannot be judged.",
                "A human must look: Remediator never acts on missing evidence.",
            )
        requests = self.ev.service_requests()
        self.evidence.append(
            f"service: {'unknown' if requests is None else f'{requests:.0f}'} requests in {self.window}s, "
            f"errors {pct(metrics.error_rate)}, p95 {ms(metrics.latency_p95_ms)}"
        )
        if requests is None:
            return self._investigate(
                0.85,
                "The request count is unknown, so the service's health cannot be judged.",
                "A human must look: Remediator never treats missing evidence as healthy.",
            )
        missing = self._service_missing()
        if missing is not None:
            # No traffic is what a service that does not exist looks like: say so, not "quiet".
            self.evidence.append(f"missing: {missing}")
            return self._investigate(
                0.9,
                f"{ctx.service.name} does not exist in Cloud Run ({missing}).",
                "A human must look: the alert names a service Cloud Run does not know. Check the "
                "alert's service label, and the project and region Remediator reads "
                "(CLOUD_RUN_PROJECT, CLOUD_RUN_REGION).",
            )
        min_requests = ctx.thresholds.min_requests
        if requests < min_requests:
            return self._decision(
                ActionType.NONE,
                0.9,
                f"Too little traffic to judge ({requests:.0f} < {min_requests} requests in {self.window}s).",
                "No action: a few failed requests on a quiet service are not an incident.",
            )
        serving = self.ev.serving()
        if self._has_gap("cloud_run") or not serving:
            reason = (
                "could not be read from Cloud Run"
                if self._has_gap("cloud_run") or not ctx.revisions
                else ("show none serving traffic")
            )
            return self._investigate(
                0.85,
                f"The service's revisions {reason}.",
                "A human must look: without revision state there is no safe rollback target.",
            )
        judgements = {r.name: self.ev.now(r) for r in serving}
        for revision in serving:
            self.evidence.append(self._revision_line(revision, judgements[revision.name]))
        service_breaches = self.ev.breaches(metrics)
        settled = all(j.state in (Health.HEALTHY, Health.QUIET) for j in judgements.values())
        if not service_breaches and self.ev.within(metrics) and settled:
            return self._decision(
                ActionType.NONE,
                0.85,
                "The service and every serving revision are within their thresholds again.",
                f"No action: errors {pct(metrics.error_rate)} and p95 {ms(metrics.latency_p95_ms)} are "
                "under the thresholds.",
            )
        if service_breaches:
            self.evidence.append("service: " + ", ".join(service_breaches))
        newest = serving[0]
        failing = [r for r in serving if judgements[r.name].state is Health.FAILING]
        if len(failing) > 1:
            return self._investigate(
                0.9,
                f"Errors on every serving revision ({', '.join(r.name for r in failing)}): the cause is not "
                "one deploy (a dependency or the platform).",
                "A human must look: rolling back would not help when old and new revisions fail alike.",
            )
        if judgements[newest.name].state is Health.FAILING:
            verdict = self.ev.blame(newest)
            self.evidence.append(f"deploy: {verdict.reason}")
            if verdict.blame is Blame.BROUGHT:
                return self._regression(newest, serving, judgements)
            if verdict.blame is Blame.UNKNOWN:
                return self._investigate(
                    0.8,
                    f"{newest.name} is failing, but Remediator cannot tell whether its deploy brought the "
                    "fault.",
                    f"A human must look: {verdict.reason}. If the deploy is to blame, roll back by hand "
                    "with `remediator rollback`.",
                )
        return self._not_a_deploy(newest, serving, judgements)

    def _revision_line(self, revision: Revision, judged: Judgement) -> str:
        created = format_rfc3339(revision.created_at) if revision.created_at else "n/a"
        return f"{revision.name}: {revision.traffic_percent}% traffic, {judged.describe()}, created {created}"

    def _regression(
        self, newest: Revision, serving: list[Revision], judgements: dict[str, Judgement]
    ) -> Decision:
        others = [r for r in serving if r is not newest]
        failing = [r for r in others if judgements[r.name].state is Health.FAILING]
        if failing:
            names = ", ".join(r.name for r in failing)
            return self._investigate(
                0.85,
                f"Older revisions fail too ({names}): the errors are not the new deploy's alone.",
                "A human must look: rolling back to a revision that also fails would not help.",
            )
        unknown = [r for r in others if judgements[r.name].state is Health.UNKNOWN]
        if unknown:
            names = ", ".join(r.name for r in unknown)
            return self._investigate(
                0.8,
                f"{newest.name} regressed, but the other serving revisions ({names}) cannot be judged.",
                "A human must look: without their figures Remediator cannot tell the deploy from a "
                "dependency failing everywhere.",
            )
        returned = self._returned_by_rollback(newest)
        if returned is not None:
            return self._investigate(
                0.85,
                returned,
                "A human must look: another rollback would chase the symptom.",
            )
        search = self.ev.rollback_candidate(newest)
        self.evidence.extend(search.skipped)
        if search.target is None:
            return self._investigate(
                0.85,
                f"{newest.name} regressed, but there is no safe revision to roll back to: {search.reason}.",
                "A human must look: there is nothing known to be safe to roll back to.",
            )
        return self._rollback(newest, search.target, search.reason)

    def _returned_by_rollback(self, revision: Revision) -> str | None:
        for action in self.ev.recent_rollbacks():
            if action.target_revision is None:
                return (
                    f"A rollback at {format_rfc3339(action.at)} does not say where it sent traffic; it may "
                    f"have been to {revision.name}, which fails now."
                )
            if action.target_revision == revision.name:
                return (
                    f"A rollback at {format_rfc3339(action.at)} sent traffic to {revision.name}, and it "
                    "fails too."
                )
        return None

    def _not_a_deploy(
        self, newest: Revision, serving: list[Revision], judgements: dict[str, Judgement]
    ) -> Decision:
        saturated = self.ev.saturation()
        if saturated is not None:
            problem = self.ev.cleared_for_scale_up()
            if problem is None:
                return self._scale_up(saturated)
            self.evidence.append(f"saturated, but no scale-up: {problem}")
        failing = [r for r in serving if judgements[r.name].state is Health.FAILING]
        if failing and failing[0] is not newest:
            return self._investigate(
                0.85,
                f"An older serving revision fails ({failing[0].name}) while the newest does not: the "
                "evidence points at no single safe action.",
                "A human must look: rolling back the newest revision would send more traffic to the failing "
                "one.",
            )
        if failing and self.ev.young(newest):
            search = self.ev.rollback_candidate(newest)
            if search.target is not None:
                # Young, and fine at first: a slow-burning deploy fault and a dependency outage look
                # alike here. Propose the rollback, under the confidence bar, so a human decides.
                minutes = int(self.config.evidence.young_revision.total_seconds() // 60)
                self.evidence.append(
                    f"{newest.name} is young (created within {minutes} min of the alert): "
                    "a slow-burning deploy fault is possible"
                )
                return self._rollback(
                    newest, search.target, search.reason, confidence=SUSPECTED_DEPLOY_CONFIDENCE
                )
        if failing:
            return self._investigate(
                0.85,
                f"{newest.name} served healthily before the errors began; the fault did not come with "
                "a deploy (a dependency, data or load problem).",
                "A human must look. If a slow-burning fault in this revision is suspected, roll back by hand "
                "with `remediator rollback`.",
            )
        return self._investigate(
            0.75,
            "The service is unhealthy but no single revision or capacity limit explains it.",
            "A human must look: the evidence does not point to one safe action.",
        )

    def _rollback(
        self, failing: Revision, target: Revision, record: str, *, confidence: float | None = None
    ) -> Decision:
        self.evidence.append(f"target: {record}")
        threshold = self.ctx.thresholds
        confidence_cap, confidence = confidence, 0.9
        errors = failing.metrics.error_rate or 0.0
        if (
            errors >= 3 * threshold.error_rate
            or (failing.metrics.latency_p95_ms or 0) >= 2 * threshold.latency_p95_ms
        ):
            confidence += 0.05
        if self._has_gap("logs"):
            confidence -= 0.03
        failing_requests = (failing.metrics.request_rate_rps or 0.0) * self.window
        if failing_requests < 2 * self.ev.revision_min_requests():
            confidence -= 0.1
        if confidence_cap is not None:
            confidence = min(confidence, confidence_cap)
        problems = ", ".join(self.ev.breaches(failing.metrics))
        return self._decision(
            ActionType.ROLLBACK,
            confidence,
            f"{failing.name} regressed ({problems}) and its deploy brought the fault.",
            f"Roll back to {target.name}, the newest ready revision with a healthy record: {record}.",
            target_revision=target.name,
        )

    def _scale_up(self, signals: list[str]) -> Decision:
        scaling = self.ctx.scaling
        self.evidence.extend(signals)
        if scaling.max_instances is None or scaling.min_instances is None:
            return self._investigate(
                0.8,
                "The service is saturated, but its current min or max instances are unknown.",
                "A human must look: a scale-up could lower a limit Remediator cannot read.",
            )
        new_max = max(scaling.max_instances + 1, math.ceil(scaling.max_instances * self.config.scale_factor))
        new_min = min(scaling.min_instances, new_max)
        return self._decision(
            ActionType.SCALE_UP,
            0.85,
            "The service is saturated: every instance is busy at max instances while traffic rose.",
            f"Raise max instances from {scaling.max_instances} to {new_max}.",
            scale=ScaleChange(min_instances=new_min, max_instances=new_max),
        )
