"""The PromQL the collector and the verification run, one implementation per metrics profile.

    app        the demo apps' OpenTelemetry histogram `http_server_request_duration_seconds` (labels
               `service`, `revision`, `http_response_status_code`), scraped every few seconds
    cloud-run  the request metrics Cloud Run itself records for every revision, as Cloud Monitoring's
               PromQL names them (through Google Cloud Managed Service for Prometheus); nothing in the
               service needs instrumenting

Every implementation answers in the same shape, so the rest of the collector never asks which one
it has: per-revision queries carry a `revision` label, rates are per second, latencies are
milliseconds, utilization is 0..1.

Cloud Monitoring names (https://cloud.google.com/monitoring/promql/promql-mapping, "Mapping Cloud
Monitoring metric names to PromQL"): the first `/` becomes `:`, every other special character `_`;
distribution-valued metrics are queried like Prometheus histograms with `_count`, `_sum` and
`_bucket` (label `le`); resource and metric labels keep their names, and `monitored_resource` names
the resource type. So, from Google's list of Cloud Run metrics
(https://cloud.google.com/monitoring/api/metrics_gcp_p_z, section "run"):

    run.googleapis.com/request_count              DELTA, INT64, 1        labels response_code,
        -> run_googleapis_com:request_count                                  response_code_class, route
    run.googleapis.com/request_latencies          DELTA, DISTRIBUTION, ms
        -> run_googleapis_com:request_latencies_bucket|_count|_sum
    run.googleapis.com/container/instance_count   GAUGE, INT64, 1        labels state (active|idle),
        -> run_googleapis_com:container_instance_count                       container_name
    run.googleapis.com/container/cpu/utilizations DELTA, DISTRIBUTION, 10^2.% (a 0..1 ratio)
        -> run_googleapis_com:container_cpu_utilizations_bucket|_count|_sum

with the `cloud_run_revision` resource labels `project_id`, `location`, `service_name`,
`revision_name`, `configuration_name`. Cloud Monitoring samples them every 60 seconds, and a sample
can stay invisible for minutes after its time (https://cloud.google.com/monitoring/api/v3/latency-n-retention,
"Latency of metric data"): `MetricsTiming` carries both figures, and the queries size their windows
from them instead of assuming a 5-second scrape.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum


class MetricsProfile(StrEnum):
    APP = "app"
    CLOUD_RUN = "cloud-run"


@dataclass(frozen=True, kw_only=True)
class MetricsTiming:
    """How the metrics arrive: one point per series every `sample_period_seconds`, readable
    `visibility_delay_seconds` after its time (0: as soon as it is scraped)."""

    sample_period_seconds: int = 5
    visibility_delay_seconds: int = 0

    @property
    def min_window_seconds(self) -> int:
        """A rate needs two points of a series inside its window."""
        return 2 * self.sample_period_seconds

    @property
    def lag_seconds(self) -> int:
        """How far behind the clock the newest readable data can be."""
        return self.visibility_delay_seconds


# Google's list gives Cloud Run's request and container metrics a 60 s sampling period, and says
# of each "After sampling, data is not visible for up to N seconds"; 120 s is the figure we use for
# request_count and request_latencies. The equivalent Knative serving metrics state 180 s
# (https://cloud.google.com/monitoring/api/metrics_knative, serving/revision/request_count): the
# delay is a setting (METRICS_VISIBILITY_DELAY_SECONDS), and the alerts' 5m window holds two points
# even at 180 s.
CLOUD_MONITORING_TIMING = MetricsTiming(sample_period_seconds=60, visibility_delay_seconds=120)
# The local stack's 5 s scrapes of the demo apps.
SCRAPE_TIMING = MetricsTiming(sample_period_seconds=5, visibility_delay_seconds=0)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def revision_regex(revisions: list[str]) -> str:
    # Revision names are DNS labels ([a-z0-9-]), so they need no escaping inside the regex.
    names = [r for r in revisions if re.fullmatch(r"[a-z0-9][a-z0-9-]*", r)]
    return "|".join(names) or "$^"


class PrometheusQueries(ABC):
    """What the collector asks of a Prometheus-compatible API. `window` is in seconds; per-revision
    answers carry a `revision` label; latency answers are milliseconds."""

    profile: MetricsProfile
    timing: MetricsTiming

    # requests and errors

    @abstractmethod
    def rate_by_revision(self, service: str, window: int) -> str: ...

    @abstractmethod
    def errors_by_revision(self, service: str, window: int) -> str: ...

    @abstractmethod
    def served_by_revision(self, service: str, window: int, *, errors: bool = False) -> str:
        """Requests each revision answered in the window, counted exactly from the counters: a
        revision younger than the window (a fresh deploy) keeps the requests it served before its
        first point, which rate() cannot see."""

    @abstractmethod
    def revisions_served(
        self, service: str, revisions: list[str], window: int, *, errors: bool = False
    ) -> str:
        """`served_by_revision` for the given revisions only."""

    @abstractmethod
    def rate(
        self, service: str, window: int, revision: str | None = None, *, errors: bool = False
    ) -> str: ...

    @abstractmethod
    def revisions_rate(self, service: str, revisions: list[str], window: int, *, errors: bool = False) -> str:
        """Requests per second over the given revisions together."""

    # latency, in milliseconds

    @abstractmethod
    def quantile_by_revision(self, service: str, window: int, quantile: float) -> str: ...

    @abstractmethod
    def quantile(self, service: str, window: int, quantile: float, revision: str | None = None) -> str: ...

    @abstractmethod
    def revisions_quantile(self, service: str, revisions: list[str], window: int, quantile: float) -> str: ...

    # history and capacity

    @abstractmethod
    def last_served(self, service: str, lookback: int, step: int) -> str:
        """Per revision, the last time it had traffic within `lookback` (unix seconds)."""

    @abstractmethod
    def instances(self, service: str) -> str: ...

    @abstractmethod
    def busy_instances(self, service: str) -> str:
        """Per revision, utilization x instances: summed over the serving revisions and divided by
        their instances, it weighs each revision by its size."""

    # the alerts' conditions, for the onset estimate

    @abstractmethod
    def error_ratio_above(self, service: str, window: int, threshold: float) -> str: ...

    def p95_above(self, service: str, window: int, threshold_ms: float) -> str:
        return f"{self.quantile(service, window, 0.95)} > {threshold_ms:g}"

    def alert_active_since(self, alertname: str, service: str) -> str:
        """ALERTS_FOR_STATE's value is the time the alert's condition first held (its activeAt).
        Every alert Remediator acts on carries `service`, whatever metrics its rule reads."""
        lookback = max(120, 2 * self.timing.sample_period_seconds)
        return (
            f'last_over_time(ALERTS_FOR_STATE{{alertname="{escape(alertname)}",'
            f'service="{escape(service)}"}}[{lookback}s])'
        )

    # windows

    def window(self, window: int) -> int:
        """The window actually queried: never shorter than two sampling periods."""
        return max(window, self.timing.min_window_seconds)

    @property
    def onset_window_seconds(self) -> int:
        """The alert's condition over a short window, for the onset estimate."""
        return max(15, self.timing.min_window_seconds)

    @property
    def onset_step_seconds(self) -> int:
        return self.timing.sample_period_seconds


@dataclass(frozen=True, kw_only=True)
class AppQueries(PrometheusQueries):
    """The demo apps' OpenTelemetry histogram, in seconds. Capacity metric names are settings."""

    instances_metric: str = "run_container_instances"
    utilization_metric: str = "run_container_utilization_ratio"
    timing: MetricsTiming = SCRAPE_TIMING
    profile: MetricsProfile = MetricsProfile.APP

    REQUESTS = "http_server_request_duration_seconds"

    @staticmethod
    def _selector(service: str, revision: str | None = None, *, errors: bool = False) -> str:
        labels = [f'service="{escape(service)}"']
        if revision is not None:
            labels.append(f'revision="{escape(revision)}"')
        if errors:
            labels.append('http_response_status_code=~"5.."')
        return "{" + ",".join(labels) + "}"

    @staticmethod
    def _revisions_selector(service: str, revisions: list[str], *, errors: bool = False) -> str:
        labels = [f'service="{escape(service)}"', f'revision=~"{revision_regex(revisions)}"']
        if errors:
            labels.append('http_response_status_code=~"5.."')
        return "{" + ",".join(labels) + "}"

    def rate_by_revision(self, service: str, window: int) -> str:
        return f"sum by (revision) (rate({self.REQUESTS}_count{self._selector(service)}[{window}s]))"

    def errors_by_revision(self, service: str, window: int) -> str:
        selector = self._selector(service, errors=True)
        return f"sum by (revision) (rate({self.REQUESTS}_count{selector}[{window}s]))"

    def served_by_revision(self, service: str, window: int, *, errors: bool = False) -> str:
        selector = self._selector(service, errors=errors)
        now = f"sum by (revision) ({self.REQUESTS}_count{selector})"
        before = f"sum by (revision) ({self.REQUESTS}_count{selector} offset {window}s)"
        return f"{now} - ({before} or {now} * 0)"

    def revisions_served(
        self, service: str, revisions: list[str], window: int, *, errors: bool = False
    ) -> str:
        selector = self._revisions_selector(service, revisions, errors=errors)
        now = f"sum by (revision) ({self.REQUESTS}_count{selector})"
        before = f"sum by (revision) ({self.REQUESTS}_count{selector} offset {window}s)"
        return f"{now} - ({before} or {now} * 0)"

    def rate(self, service: str, window: int, revision: str | None = None, *, errors: bool = False) -> str:
        return (
            f"sum(rate({self.REQUESTS}_count{self._selector(service, revision, errors=errors)}[{window}s]))"
        )

    def revisions_rate(self, service: str, revisions: list[str], window: int, *, errors: bool = False) -> str:
        selector = self._revisions_selector(service, revisions, errors=errors)
        return f"sum(rate({self.REQUESTS}_count{selector}[{window}s]))"

    def quantile_by_revision(self, service: str, window: int, quantile: float) -> str:
        return (
            f"histogram_quantile({quantile}, sum by (revision, le) "
            f"(rate({self.REQUESTS}_bucket{self._selector(service)}[{window}s]))) * 1000"
        )

    def quantile(self, service: str, window: int, quantile: float, revision: str | None = None) -> str:
        return (
            f"histogram_quantile({quantile}, sum by (le) "
            f"(rate({self.REQUESTS}_bucket{self._selector(service, revision)}[{window}s]))) * 1000"
        )

    def revisions_quantile(self, service: str, revisions: list[str], window: int, quantile: float) -> str:
        selector = self._revisions_selector(service, revisions)
        return (
            f"histogram_quantile({quantile}, sum by (le) "
            f"(rate({self.REQUESTS}_bucket{selector}[{window}s]))) * 1000"
        )

    def last_served(self, service: str, lookback: int, step: int) -> str:
        return (
            f"max by (revision) (max_over_time(timestamp(sum by (revision) "
            f"(rate({self.REQUESTS}_count{self._selector(service)}[1m])) > 0)[{lookback}s:{step}s]))"
        )

    def instances(self, service: str) -> str:
        return f"sum by (revision) ({self.instances_metric}{self._selector(service)})"

    def busy_instances(self, service: str) -> str:
        selector = self._selector(service)
        return f"sum by (revision) ({self.utilization_metric}{selector} * {self.instances_metric}{selector})"

    def error_ratio_above(self, service: str, window: int, threshold: float) -> str:
        return (
            f"sum(rate({self.REQUESTS}_count{self._selector(service, errors=True)}[{window}s])) "
            f"/ sum(rate({self.REQUESTS}_count{self._selector(service)}[{window}s])) > {threshold}"
        )


@dataclass(frozen=True, kw_only=True)
class CloudRunQueries(PrometheusQueries):
    """Cloud Run's own request and container metrics, as Cloud Monitoring's PromQL names them.

    `response_code_class="5xx"` is an error, as the app profile's 5xx status codes are. Latency is
    already in milliseconds. Instances count both states (`active` and `idle`); utilization is the
    mean of the CPU utilization distribution (its `_sum` over its `_count`).
    """

    timing: MetricsTiming = CLOUD_MONITORING_TIMING
    profile: MetricsProfile = MetricsProfile.CLOUD_RUN

    REQUESTS = "run_googleapis_com:request_count"
    LATENCIES = "run_googleapis_com:request_latencies"
    INSTANCES = "run_googleapis_com:container_instance_count"
    CPU = "run_googleapis_com:container_cpu_utilizations"

    @staticmethod
    def _selector(service: str, revision: str | None = None, *, errors: bool = False) -> str:
        labels = ['monitored_resource="cloud_run_revision"', f'service_name="{escape(service)}"']
        if revision is not None:
            labels.append(f'revision_name="{escape(revision)}"')
        if errors:
            labels.append('response_code_class="5xx"')
        return "{" + ",".join(labels) + "}"

    @staticmethod
    def _revisions_selector(service: str, revisions: list[str], *, errors: bool = False) -> str:
        labels = [
            'monitored_resource="cloud_run_revision"',
            f'service_name="{escape(service)}"',
            f'revision_name=~"{revision_regex(revisions)}"',
        ]
        if errors:
            labels.append('response_code_class="5xx"')
        return "{" + ",".join(labels) + "}"

    @staticmethod
    def _as_revision(expr: str) -> str:
        """The shared contract: per-revision answers are labelled `revision`."""
        return f'label_replace({expr}, "revision", "$1", "revision_name", "(.*)")'

    def rate_by_revision(self, service: str, window: int) -> str:
        return self._as_revision(
            f"sum by (revision_name) (rate({self.REQUESTS}{self._selector(service)}[{window}s]))"
        )

    def errors_by_revision(self, service: str, window: int) -> str:
        selector = self._selector(service, errors=True)
        return self._as_revision(f"sum by (revision_name) (rate({self.REQUESTS}{selector}[{window}s]))")

    def served_by_revision(self, service: str, window: int, *, errors: bool = False) -> str:
        selector = self._selector(service, errors=errors)
        now = f"sum by (revision_name) ({self.REQUESTS}{selector})"
        before = f"sum by (revision_name) ({self.REQUESTS}{selector} offset {window}s)"
        return self._as_revision(f"{now} - ({before} or {now} * 0)")

    def revisions_served(
        self, service: str, revisions: list[str], window: int, *, errors: bool = False
    ) -> str:
        selector = self._revisions_selector(service, revisions, errors=errors)
        now = f"sum by (revision_name) ({self.REQUESTS}{selector})"
        before = f"sum by (revision_name) ({self.REQUESTS}{selector} offset {window}s)"
        return self._as_revision(f"{now} - ({before} or {now} * 0)")

    def rate(self, service: str, window: int, revision: str | None = None, *, errors: bool = False) -> str:
        return f"sum(rate({self.REQUESTS}{self._selector(service, revision, errors=errors)}[{window}s]))"

    def revisions_rate(self, service: str, revisions: list[str], window: int, *, errors: bool = False) -> str:
        selector = self._revisions_selector(service, revisions, errors=errors)
        return f"sum(rate({self.REQUESTS}{selector}[{window}s]))"

    def quantile_by_revision(self, service: str, window: int, quantile: float) -> str:
        return self._as_revision(
            f"histogram_quantile({quantile}, sum by (revision_name, le) "
            f"(rate({self.LATENCIES}_bucket{self._selector(service)}[{window}s])))"
        )

    def quantile(self, service: str, window: int, quantile: float, revision: str | None = None) -> str:
        return (
            f"histogram_quantile({quantile}, sum by (le) "
            f"(rate({self.LATENCIES}_bucket{self._selector(service, revision)}[{window}s])))"
        )

    def revisions_quantile(self, service: str, revisions: list[str], window: int, quantile: float) -> str:
        selector = self._revisions_selector(service, revisions)
        buckets = f"rate({self.LATENCIES}_bucket{selector}[{window}s])"
        return f"histogram_quantile({quantile}, sum by (le) ({buckets}))"

    def last_served(self, service: str, lookback: int, step: int) -> str:
        rate_window = self.timing.min_window_seconds
        return self._as_revision(
            f"max by (revision_name) (max_over_time(timestamp(sum by (revision_name) "
            f"(rate({self.REQUESTS}{self._selector(service)}[{rate_window}s])) > 0)[{lookback}s:{step}s]))"
        )

    def instances(self, service: str) -> str:
        return self._as_revision(f"sum by (revision_name) ({self.INSTANCES}{self._selector(service)})")

    def busy_instances(self, service: str) -> str:
        selector = self._selector(service)
        window = self.timing.min_window_seconds
        mean_cpu = (
            f"sum by (revision_name) (rate({self.CPU}_sum{selector}[{window}s])) "
            f"/ sum by (revision_name) (rate({self.CPU}_count{selector}[{window}s]))"
        )
        return self._as_revision(f"{mean_cpu} * sum by (revision_name) ({self.INSTANCES}{selector})")

    def error_ratio_above(self, service: str, window: int, threshold: float) -> str:
        return f"{self.rate(service, window, errors=True)} / {self.rate(service, window)} > {threshold}"


def queries_for(
    profile: MetricsProfile,
    *,
    timing: MetricsTiming | None = None,
    instances_metric: str = "run_container_instances",
    utilization_metric: str = "run_container_utilization_ratio",
) -> PrometheusQueries:
    """The query builder of a metrics profile; `timing` None is the profile's own."""
    if profile is MetricsProfile.CLOUD_RUN:
        return CloudRunQueries(timing=timing or CLOUD_MONITORING_TIMING)
    return AppQueries(
        instances_metric=instances_metric,
        utilization_metric=utilization_metric,
        timing=timing or SCRAPE_TIMING,
    )
