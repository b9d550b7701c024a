"""Collector settings: where the evidence comes from, the windows, and the health thresholds."""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.sources.queries import MetricsProfile, MetricsTiming, PrometheusQueries, queries_for
from incidents import Thresholds


@dataclass(frozen=True, kw_only=True)
class HealthThresholds:
    """The same thresholds as the alerting rules (prometheus/rules/alerts.yml); keep them in step."""

    error_rate: float = 0.02
    latency_p95_ms: float = 1000.0
    min_request_rate: float = 1.0  # requests/s in the window before a service can be judged

    def for_window(self, window_seconds: int) -> Thresholds:
        return Thresholds(
            error_rate=self.error_rate,
            latency_p95_ms=self.latency_p95_ms,
            min_requests=round(self.min_request_rate * window_seconds),
        )


@dataclass(frozen=True, kw_only=True)
class CollectorConfig:
    prometheus_url: str = "http://127.0.0.1:9090"
    # None: the real Cloud Run Admin API with application default credentials.
    cloud_run_endpoint: str | None = None
    # None: the real Cloud Logging API; the emulator serves entries:list on its own endpoint.
    logging_endpoint: str | None = None
    project: str = "local"
    region: str = "local"
    # Current figures cover the last `window_seconds`; the baseline covers `baseline_seconds` ending
    # `baseline_gap_seconds` before the alert fired, so the onset does not leak into it.
    window_seconds: int = 60
    baseline_seconds: int = 300
    baseline_gap_seconds: int = 60
    # How far back to look for a revision's last healthy period of serving.
    history_lookback_seconds: int = 6 * 3600
    query_timeout: float = 3.0
    max_log_lines: int = 20
    max_log_chars: int = 500
    log_lookback_seconds: int = 600
    thresholds: HealthThresholds = field(default_factory=HealthThresholds)
    # Which request metrics to read: the demo apps' own (`app`) or the ones Cloud Run records for
    # every revision (`cloud-run`, through Managed Prometheus' PromQL on Cloud Monitoring).
    metrics_profile: MetricsProfile = MetricsProfile.APP
    # How those metrics arrive (sampling period, visibility delay); None: the profile's own
    # (5 s scrapes for `app`; 60 s samples readable up to 120 s later for `cloud-run`).
    metrics_timing: MetricsTiming | None = None
    # Capacity metrics of the `app` profile (the demo apps' names).
    instances_metric: str = "run_container_instances"
    utilization_metric: str = "run_container_utilization_ratio"
    # `google`: OAuth2 tokens from application default credentials on every query; `none`: no
    # credentials; None: google for Managed Prometheus (monitoring.googleapis.com), none otherwise.
    prometheus_auth: str | None = None

    def queries(self) -> PrometheusQueries:
        return queries_for(
            self.metrics_profile,
            timing=self.metrics_timing,
            instances_metric=self.instances_metric,
            utilization_metric=self.utilization_metric,
        )
