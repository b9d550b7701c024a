"""The rules engine: deterministic, explainable decisions from the evidence in an IncidentContext.

In order, first match wins:

1. The alert has resolved                                          -> NONE
2. Metrics are missing (a Prometheus gap)                          -> INVESTIGATE (missing is not healthy)
3. The request rate is unknown                                     -> INVESTIGATE
4. Too little traffic in the window to judge                       -> NONE
5. The service and its newest serving revision are within thresholds
   again (a canary is judged on its own figures, not the diluted ones) -> NONE
6. Revision state is missing (a Cloud Run gap)                     -> INVESTIGATE
7. The newest serving revision (by traffic share) regressed and did not serve healthily before the
   onset (the deploy brought the fault):
     - an older revision is also failing now                       -> INVESTIGATE (errors everywhere)
     - an older revision is ready, was healthy, and no recent rollback left it
                                                                   -> ROLLBACK to the newest such one
     - otherwise                                                   -> INVESTIGATE (nothing to roll back to)
8. The service is saturated (instances at max, utilization high, request rate above baseline)
                                                                   -> SCALE_UP (at most double max)
9. Errors on several serving revisions                            -> INVESTIGATE (a dependency)
10. The newest serving revision fails but served healthily before the onset:
     - it is young (under 30 min) and a rollback target exists     -> ROLLBACK proposed at confidence 0.6,
                                                                      so the policy asks a human
     - otherwise                                                   -> INVESTIGATE (not the deploy)
11. Anything else                                                  -> INVESTIGATE

Log lines are never read here: they are untrusted text and the decision stands on metrics and
Cloud Run state alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from analyzer.engines.base import EngineResult
from incidents import (
    ActionType,
    Decision,
    Figures,
    IncidentContext,
    Revision,
    ScaleChange,
    format_rfc3339,
)

ENGINE_NAME = "rules"
# The collector's baseline window, for contexts that do not say (metrics.baseline_window_seconds).
DEFAULT_BASELINE_SECONDS = 300
# A failing revision this young that served fine at first may still carry a slow deploy fault.
YOUNG_REVISION = timedelta(minutes=30)
# ...so its rollback is proposed under the policy's default confidence bar: a human decides.
SUSPECTED_DEPLOY_CONFIDENCE = 0.6


@dataclass(frozen=True, kw_only=True)
class RulesConfig:
    # A revision needs this share of the service's minimum request count to be judged on its own.
    revision_min_requests_share: float = 0.1
    # ...and never fewer than this many requests in the window.
    revision_min_requests_floor: int = 10
    saturation_utilization: float = 0.8
    # Request rate at least this multiple of the baseline to call it a traffic increase.
    saturation_rate_factor: float = 1.3
    # How many times the scale-up multiplies max instances (the policy caps it at doubling).
    scale_factor: float = 2.0


@dataclass(frozen=True)
class _Judgement:
    """A revision's current health: 'failing', 'healthy', or 'unknown' (too little traffic)."""

    state: str
    reasons: tuple[str, ...] = ()


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


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
        self.th = context.thresholds
        self.window = context.metrics.window_seconds
        self.min_rate = self.th.min_requests / self.window if self.window else 0.0
        self.evidence: list[str] = []

    # verdict helpers

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

    def _has_gap(self, source: str) -> bool:
        return any(gap.split(":", 1)[0].strip().startswith(source) for gap in self.ctx.gaps)

    def _unhealthy(self, figures: Figures) -> list[str]:
        reasons = []
        if figures.error_rate is not None and figures.error_rate > self.th.error_rate:
            reasons.append(f"errors {_pct(figures.error_rate)} > {_pct(self.th.error_rate)}")
        if figures.latency_p95_ms is not None and figures.latency_p95_ms > self.th.latency_p95_ms:
            reasons.append(f"p95 {_ms(figures.latency_p95_ms)} > {_ms(self.th.latency_p95_ms)}")
        return reasons

    def _revision_min_requests(self) -> float:
        return max(
            self.config.revision_min_requests_floor,
            self.th.min_requests * self.config.revision_min_requests_share,
        )

    def _judge(self, figures: Figures | None, seconds: float) -> _Judgement:
        if figures is None or figures.request_rate_rps is None:
            return _Judgement("unknown", ("no traffic",))
        requests = figures.request_rate_rps * seconds
        if requests < self._revision_min_requests():
            return _Judgement("unknown", (f"{requests:.0f} requests is too few to judge",))
        reasons = self._unhealthy(figures)
        return _Judgement("failing", tuple(reasons)) if reasons else _Judgement("healthy")

    def _was_healthy(self, revision: Revision) -> bool:
        """Healthy while it last served (history), or serving healthily now."""
        if self._judge(revision.metrics, self.window).state == "healthy":
            return True
        history = revision.history
        if history is None or history.served_until is None:
            return False
        if history.error_rate is None and history.latency_p95_ms is None:
            return False
        figures = Figures(error_rate=history.error_rate, latency_p95_ms=history.latency_p95_ms)
        return not self._unhealthy(figures)

    def _served_healthily_before_onset(self, revision: Revision) -> bool:
        """Enough requests in the baseline window (the per-revision minimum, not the service rate: a
        quiet service is still judged) and within the thresholds."""
        baseline = revision.baseline
        if baseline is None or baseline.request_rate_rps is None:
            return False
        seconds = self.ctx.metrics.baseline_window_seconds or DEFAULT_BASELINE_SECONDS
        if baseline.request_rate_rps * seconds < self._revision_min_requests():
            return False
        return not self._unhealthy(baseline)

    def _newest_serving_fails(self) -> bool:
        """A canary can fail while the service-wide figures stay diluted under the thresholds."""
        serving = self._serving()
        return bool(serving) and self._judge(serving[0].metrics, self.window).state == "failing"

    def _serving(self) -> list[Revision]:
        # By traffic share: a revision reached only through its tag URL (smoke tests) is not serving.
        return [r for r in self.ctx.revisions if r.traffic_percent > 0]

    # the reasoning, in the order of the module docstring

    def decide(self) -> Decision:
        ctx, metrics = self.ctx, self.ctx.metrics
        if ctx.alert.status == "resolved":
            self.evidence.append(f"alert {ctx.alert.name} resolved")
            return self._decision(
                ActionType.NONE, 0.95, "The alert resolved.", "Nothing to do: the alert has resolved."
            )
        if self._has_gap("prometheus"):
            self.evidence.extend(f"missing: {gap}" for gap in ctx.gaps)
            return self._decision(
                ActionType.INVESTIGATE,
                0.9,
                "Metrics are unavailable, so the service's health cannot be judged.",
                "A human must look: Remediator never acts on missing evidence.",
            )
        requests = metrics.requests_in_window
        if requests is None and metrics.request_rate_rps is not None:
            requests = metrics.request_rate_rps * self.window
        self.evidence.append(
            f"service: {requests or 0:.0f} requests in {self.window}s, errors {_pct(metrics.error_rate)}, "
            f"p95 {_ms(metrics.latency_p95_ms)}"
        )
        if requests is None:
            return self._decision(
                ActionType.INVESTIGATE,
                0.85,
                "The request rate is unknown, so the service's health cannot be judged.",
                "A human must look: Remediator never treats missing evidence as healthy.",
            )
        if requests < self.th.min_requests:
            return self._decision(
                ActionType.NONE,
                0.9,
                f"Too little traffic to judge ({requests or 0:.0f} < {self.th.min_requests} requests in "
                f"{self.window}s).",
                "No action: a few failed requests on a quiet service are not an incident.",
            )
        service_problems = self._unhealthy(metrics)
        if not service_problems and not self._newest_serving_fails():
            return self._decision(
                ActionType.NONE,
                0.85,
                "The service is within its thresholds again.",
                f"No action: errors {_pct(metrics.error_rate)} and p95 {_ms(metrics.latency_p95_ms)} are "
                "under the thresholds.",
            )
        if service_problems:
            self.evidence.append("service: " + ", ".join(service_problems))
        else:
            self.evidence.append(
                "service within thresholds, but its newest serving revision fails on its own"
            )
        if self._has_gap("cloud_run") or not ctx.revisions:
            return self._decision(
                ActionType.INVESTIGATE,
                0.85,
                "The service is unhealthy but its revisions could not be read from Cloud Run.",
                "A human must look: without revision state there is no safe rollback target.",
            )
        return self._decide_from_revisions()

    def _decide_from_revisions(self) -> Decision:
        serving = self._serving()
        judgements = {r.name: self._judge(r.metrics, self.window) for r in serving}
        for revision in serving:
            judged = judgements[revision.name]
            detail = ", ".join(judged.reasons) if judged.reasons else "within thresholds"
            self.evidence.append(
                f"{revision.name}: {revision.traffic_percent}% traffic, {judged.state} ({detail}), "
                f"created {format_rfc3339(revision.created_at) if revision.created_at else 'n/a'}"
            )
        failing = [r for r in serving if judgements[r.name].state == "failing"]
        newest = serving[0] if serving else None  # revisions are newest first
        saturated = self._saturation()

        if newest is not None and newest in failing:
            if self._served_healthily_before_onset(newest):
                self.evidence.append(f"{newest.name} served healthily before the onset")
            else:
                return self._regression(newest, failing, serving)
        if saturated:
            return self._scale_up(saturated)
        if len(failing) > 1:
            return self._decision(
                ActionType.INVESTIGATE,
                0.9,
                "Errors on every serving revision: the cause is not one deploy "
                "(a dependency or the platform).",
                "A human must look: rolling back would not help when old and new revisions fail alike.",
            )
        if newest is not None and newest in failing:
            candidate = self._rollback_candidate(newest) if self._young(newest) else None
            if candidate is not None:
                # Young, and fine at first: a slow-burning deploy fault and a dependency outage look
                # alike here. Propose the rollback, under the confidence bar, so a human decides.
                minutes = int(YOUNG_REVISION.total_seconds() // 60)
                self.evidence.append(
                    f"{newest.name} is young (created within {minutes} min of the alert): "
                    "a slow-burning deploy fault is possible"
                )
                return self._rollback(newest, candidate, confidence=SUSPECTED_DEPLOY_CONFIDENCE)
            return self._decision(
                ActionType.INVESTIGATE,
                0.85,
                f"{newest.name} served healthily before the errors began; the fault did not come with "
                "a deploy (a dependency, data or load problem).",
                "A human must look. If a slow-burning fault in this revision is suspected, roll back by hand "
                "with `remediator rollback`.",
            )
        return self._decision(
            ActionType.INVESTIGATE,
            0.75,
            "The service is unhealthy but no single revision or capacity limit explains it.",
            "A human must look: the evidence does not point to one safe action.",
        )

    def _regression(self, newest: Revision, failing: list[Revision], serving: list[Revision]) -> Decision:
        self.evidence.append(f"{newest.name} did not serve healthily before the onset: the deploy is suspect")
        older_failing = [r for r in failing if r is not newest]
        if older_failing:
            names = ", ".join(r.name for r in older_failing)
            return self._decision(
                ActionType.INVESTIGATE,
                0.85,
                f"Older revisions fail too ({names}): the errors are not the new deploy's alone.",
                "A human must look: rolling back to a revision that also fails would not help.",
            )
        candidate = self._rollback_candidate(newest)
        if candidate is not None:
            return self._rollback(newest, candidate)
        return self._decision(
            ActionType.INVESTIGATE,
            0.85,
            f"{newest.name} regressed, but no older revision is ready and known to be healthy.",
            "A human must look: there is nothing safe to roll back to.",
        )

    def _young(self, revision: Revision) -> bool:
        created = revision.created_at
        return created is not None and self.ctx.alert.starts_at - created <= YOUNG_REVISION

    def _rollback_candidate(self, newest: Revision) -> Revision | None:
        """The newest older revision that is ready, was healthy, and no recent rollback left."""
        left_behind = {
            a.from_revision
            for a in self.ctx.recent_actions
            if a.action == ActionType.ROLLBACK and a.from_revision
        }
        older = [
            r
            for r in self.ctx.revisions
            if r is not newest
            and (newest.created_at is None or r.created_at is None or r.created_at < newest.created_at)
        ]
        for candidate in older:  # newest first
            if not candidate.ready:
                self.evidence.append(f"{candidate.name} skipped: not ready")
            elif candidate.name in left_behind:
                self.evidence.append(
                    f"{candidate.name} skipped: a recent rollback moved traffic away from it"
                )
            elif not self._was_healthy(candidate):
                self.evidence.append(f"{candidate.name} skipped: no healthy record")
            else:
                return candidate
        return None

    def _rollback(self, failing: Revision, target: Revision, *, confidence: float | None = None) -> Decision:
        reference = (
            target.metrics if self._judge(target.metrics, self.window).state == "healthy" else target.history
        )
        reference_errors = reference.error_rate if reference is not None else None
        reference_p95 = reference.latency_p95_ms if reference is not None else None
        self.evidence.append(
            f"{target.name} is ready and was healthy "
            f"(errors {_pct(reference_errors)}, p95 {_ms(reference_p95)})"
        )
        confidence_cap, confidence = confidence, 0.9
        errors = failing.metrics.error_rate or 0.0
        if (
            errors >= 3 * self.th.error_rate
            or (failing.metrics.latency_p95_ms or 0) >= 2 * self.th.latency_p95_ms
        ):
            confidence += 0.05
        if self._has_gap("logs"):
            confidence -= 0.03
        failing_requests = (failing.metrics.request_rate_rps or 0.0) * self.window
        if failing_requests < 2 * self._revision_min_requests():
            confidence -= 0.1
        if confidence_cap is not None:
            confidence = min(confidence, confidence_cap)
        problems = ", ".join(self._unhealthy(failing.metrics))
        return self._decision(
            ActionType.ROLLBACK,
            confidence,
            f"{failing.name} regressed ({problems}) and did not serve healthily before the onset.",
            f"Roll back to {target.name}, the newest ready revision with a healthy record "
            f"(errors {_pct(reference_errors)}, p95 {_ms(reference_p95)}).",
            target_revision=target.name,
        )

    def _saturation(self) -> list[str] | None:
        scaling, metrics = self.ctx.scaling, self.ctx.metrics
        if not scaling.max_instances or scaling.current_instances is None or scaling.utilization is None:
            return None
        at_max = scaling.current_instances >= scaling.max_instances
        busy = scaling.utilization >= self.config.saturation_utilization
        baseline_rate = metrics.baseline.request_rate_rps
        more_traffic = (
            baseline_rate is not None
            and metrics.request_rate_rps is not None
            and metrics.request_rate_rps >= self.config.saturation_rate_factor * max(baseline_rate, 1e-9)
        )
        if not (at_max and busy and more_traffic):
            return None
        return [
            f"instances {scaling.current_instances:g} at max {scaling.max_instances}",
            f"utilization {scaling.utilization * 100:.0f}%",
            f"request rate {metrics.request_rate_rps:.1f}/s vs baseline {baseline_rate:.1f}/s",
        ]

    def _scale_up(self, signals: list[str]) -> Decision:
        scaling = self.ctx.scaling
        assert scaling.max_instances is not None  # checked by _saturation
        self.evidence.extend(signals)
        new_max = max(scaling.max_instances + 1, math.ceil(scaling.max_instances * self.config.scale_factor))
        new_min = min(scaling.min_instances or 0, new_max)
        return self._decision(
            ActionType.SCALE_UP,
            0.85,
            "The service is saturated: every instance is busy at max instances while traffic rose.",
            f"Raise max instances from {scaling.max_instances} to {new_max}.",
            scale=ScaleChange(min_instances=new_min, max_instances=new_max),
        )
