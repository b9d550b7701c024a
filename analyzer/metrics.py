"""The analyzer's own Prometheus metrics (`remediator_*`), on an explicitly passed registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from analyzer.admission import REASONS

# Why a pushed Cloud Monitoring message was acknowledged without being recorded.
DISCARD_REASONS = ("no_data", "not_json", "invalid")

DECISION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


# approved, rejected; expired: nobody approved within REMEDIATOR_APPROVAL_TTL_SECONDS (the incident
# escalated); stale: refused, Cloud Run changed since the decision; unchecked: refused, Cloud Run
# could not be read to check it.
APPROVAL_OUTCOMES = ("approved", "rejected", "expired", "stale", "unchecked")


class AnalyzerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.webhook_requests = Counter(
            "remediator_webhook_requests_total",
            "Alertmanager webhook requests, by HTTP status code.",
            ["code"],
            registry=registry,
        )
        self.webhook_duration = Histogram(
            "remediator_webhook_duration_seconds",
            "Time to validate and durably record one webhook payload.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            registry=registry,
        )
        self.alerts_received = Counter(
            "remediator_alerts_received_total",
            "Alerts received from Alertmanager, by what became of them: new (recorded), duplicate "
            "(already recorded), resolved, ignored (no service label, or resolved but never seen firing).",
            ["outcome"],
            registry=registry,
        )
        self.alerts_rejected = Counter(
            "remediator_alerts_rejected_total",
            "Alerts the webhook could not record, by reason: " + ", ".join(REASONS) + ".",
            ["reason"],
            registry=registry,
        )
        for reason in REASONS:  # every reason shows, at 0, before the first rejection
            self.alerts_rejected.labels(reason)
        self.fault_confirmations = Counter(
            "remediator_fault_confirmations_total",
            "Checks that a fault still holds right before an automatic change, by result: holds (the "
            "change goes ahead), stopped (nothing changed, the incident closed as recovered), unknown "
            "(a human decides).",
            ["state"],
            registry=registry,
        )
        for state in ("holds", "stopped", "unknown"):
            self.fault_confirmations.labels(state)
        self.cloud_monitoring_requests = Counter(
            "remediator_cloud_monitoring_requests_total",
            "Cloud Monitoring notifications received, by endpoint (webhook, pubsub) and HTTP status code.",
            ["endpoint", "code"],
            registry=registry,
        )
        self.cloud_monitoring_notifications = Counter(
            "remediator_cloud_monitoring_notifications_total",
            "Cloud Monitoring notifications, by what became of them: new (recorded), duplicate, resolved, "
            "ignored (no service_name, a test notification, or closed but never seen open).",
            ["outcome"],
            registry=registry,
        )
        self.cloud_monitoring_discarded = Counter(
            "remediator_cloud_monitoring_discarded_total",
            "Pub/Sub messages acknowledged without being recorded because no redelivery could ever be, "
            "by reason: no_data, not_json, invalid.",
            ["reason"],
            registry=registry,
        )
        for reason in DISCARD_REASONS:
            self.cloud_monitoring_discarded.labels(reason)
        self.incidents_opened = Counter(
            "remediator_incidents_opened_total", "Incidents opened.", registry=registry
        )
        self.incidents_ended = Counter(
            "remediator_incidents_total",
            "Incidents that reached an outcome (resolved, escalated, failed, closed, suppressed, "
            "awaiting_approval).",
            ["outcome"],
            registry=registry,
        )
        self.decision_duration = Histogram(
            "remediator_decision_duration_seconds",
            "From analysis start to the decision and its action committed, by engine.",
            ["engine"],
            buckets=DECISION_BUCKETS,
            registry=registry,
        )
        self.engine_duration = Histogram(
            "remediator_engine_duration_seconds",
            "Time the decision engine itself took, by engine.",
            ["engine"],
            buckets=DECISION_BUCKETS,
            registry=registry,
        )
        self.decisions = Counter(
            "remediator_decisions_total",
            "Decisions, by engine, proposed action and policy verdict.",
            ["engine", "action", "verdict"],
            registry=registry,
        )
        self.engine_fallbacks = Counter(
            "remediator_engine_fallbacks_total",
            "Times the configured engine failed and the rules engine decided, by reason.",
            ["reason"],
            registry=registry,
        )
        self.policy_overrules = Counter(
            "remediator_policy_overrules_total",
            "Decisions the policy guard overruled or held back, by verdict.",
            ["verdict"],
            registry=registry,
        )
        self.analysis_errors = Counter(
            "remediator_analysis_errors_total",
            "Analyses that raised an unexpected error (retried, then the incident fails).",
            registry=registry,
        )
        self.approvals = Counter(
            "remediator_approvals_total",
            "Answers to incidents awaiting approval, by outcome: " + ", ".join(APPROVAL_OUTCOMES) + ".",
            ["outcome"],
            registry=registry,
        )
        for outcome in APPROVAL_OUTCOMES:
            self.approvals.labels(outcome)
        self.reanalyses = Counter(
            "remediator_reanalyses_total",
            "Escalated, suppressed or waiting incidents sent back to analysis, by what changed "
            "(new_revision, traffic_moved, alert_joined, alert_refired, approval_expired, requested).",
            ["trigger"],
            registry=registry,
        )
        self.recurrences = Counter(
            "remediator_incidents_recurred_total",
            "Incidents opened because an alert still fired after Remediator resolved its incident.",
            registry=registry,
        )


LLM_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30)


class LlmMetrics:
    """Model calls (Gemini): latency per request, tokens and estimated cost.

    Registered by whoever composes a model-backed engine, on the same registry as the analyzer's.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.request_duration = Histogram(
            "remediator_llm_request_duration_seconds",
            "One model request, by model and outcome (ok, or why the answer was not used: timeout, "
            "api_error, invalid_output, blocked, empty).",
            ["model", "outcome"],
            buckets=LLM_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "remediator_llm_tokens_total",
            "Tokens billed by the model, by kind: input, output (output includes thinking tokens).",
            ["model", "kind"],
            registry=registry,
        )
        self.cost = Counter(
            "remediator_llm_cost_usd_total",
            "Estimated cost of model calls in US dollars, from the token counts and list prices.",
            ["model"],
            registry=registry,
        )
