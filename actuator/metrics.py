"""The actuator's own Prometheus metrics (`remediator_*`), on an explicitly passed registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class ActuatorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.actions = Counter(
            "remediator_actions_total",
            "Actions executed, by type and result (succeeded, failed, unchanged).",
            ["type", "result"],
            registry=registry,
        )
        self.action_duration = Histogram(
            "remediator_action_duration_seconds",
            "Time spent per action phase: apply (claimed to change in place) and verify.",
            ["type", "phase"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
            registry=registry,
        )
        self.cloud_run_calls = Counter(
            "remediator_cloud_run_calls_total",
            "Cloud Run Admin API calls, by method and outcome (ok, retried, failed).",
            ["method", "outcome"],
            registry=registry,
        )
        self.verifications = Counter(
            "remediator_verifications_total",
            "Verification outcomes (recovered, not_recovered).",
            ["outcome"],
            registry=registry,
        )
        self.mttr = Histogram(
            "remediator_mttr_seconds",
            "Mean time to recovery of verified incidents: verified recovery minus fault start.",
            buckets=(10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 3600),
            registry=registry,
        )
        self.remediations = Counter(
            "remediator_remediations_total",
            "Remediations that ended, by outcome (resolved, escalated, failed).",
            ["outcome"],
            registry=registry,
        )
        self.lease_events = Counter(
            "remediator_action_lease_events_total",
            "Action lease events: renewal_failed (retried), lost (the work stopped), handed_back "
            "(on shutdown), taken_over (claimed after another worker's lease ended).",
            ["event"],
            registry=registry,
        )
        self.annotations = Counter(
            "remediator_annotations_total",
            "Grafana annotations posted, by result (ok, error).",
            ["result"],
            registry=registry,
        )
