"""The notifier's own metrics (`remediator_notifications_*`), on an explicitly passed registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class NotificationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "remediator_notifications_total",
            "Notification attempts by sink and outcome (delivered, skipped, retried, failed: gave up).",
            ["sink", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "remediator_notifications_delivery_duration_seconds",
            "Time one delivery attempt took, by sink.",
            ["sink"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.pending = Gauge(
            "remediator_notifications_pending",
            "Events not delivered yet: pending deliveries plus events not fanned out to the sinks.",
            registry=registry,
        )
        self.events = Counter(
            "remediator_notifications_events_total",
            "Outbox events fanned out to the sinks, by event type.",
            ["type"],
            registry=registry,
        )
