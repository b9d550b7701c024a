"""OpenTelemetry metrics of one shop app, exposed for Prometheus and, when asked, Cloud Monitoring.

Each app gets its own MeterProvider and its own prometheus_client `CollectorRegistry` (nothing global:
tests run several apps in one process). The Prometheus names, every series labelled with `service`
and `revision`:

    http_server_request_duration_seconds_bucket|_sum|_count
        {http_request_method, http_route, http_response_status_code}
    http_server_active_requests{http_request_method}
    run_container_instances                  ready + starting simulated instances
    run_container_min_instances
    run_container_max_instances
    run_container_max_request_concurrency
    run_container_utilization_ratio          busy slots / ready slots, 0..1
    run_container_queued_requests            requests waiting for a slot

`http_route` is the route template (`/api/catalog/{item_id}`), never the raw path, so the number of
series stays bounded. The histogram's buckets are tight around 1 s, the latency SLO's threshold.

Every route's request series for status 200 and 500 is exposed from the start, at zero, before any
request ("initialize your metrics", https://prometheus.io/docs/practices/instrumentation/#avoid-missing-metrics):
OpenTelemetry creates a series at its first measurement, and Prometheus' rate() cannot count what a
series already held at its first sample. A revision that fails from its first request would hide its
first errors from every rate over it; with zero-valued series scraped before it takes traffic, every
error is an increase Prometheus sees.

With DEMO_GCP_MONITORING=1 a PeriodicExportingMetricReader also sends the same instruments to
Cloud Monitoring through opentelemetry-exporter-gcp-monitoring (the optional `gcp` extra), imported
only then.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily, Metric, Sample
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from demo_apps.shop.capacity import CapacitySnapshot
from demo_apps.shop.config import ShopConfig
from demo_apps.shop.exceptions import TelemetryError

METER_NAME = "demo_apps.shop"
PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# Dense around the 1 s SLO threshold so `le="1"` is an exact bucket boundary.
REQUEST_DURATION_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 5.0, 7.5, 10.0, 30.0,
)  # fmt: skip
SHUTDOWN_TIMEOUT_MS = 3000

# OpenTelemetry instrument name -> (unit, description, how to read it from a capacity snapshot).
CAPACITY_GAUGES: dict[str, tuple[str, str, Callable[[CapacitySnapshot], float]]] = {
    "run.container.instances": (
        "{instance}",
        "Simulated container instances, ready or starting.",
        lambda snapshot: snapshot.instances,
    ),
    "run.container.min_instances": (
        "{instance}",
        "Minimum instances the revision keeps.",
        lambda snapshot: snapshot.min_instances,
    ),
    "run.container.max_instances": (
        "{instance}",
        "Maximum instances the autoscaler may start.",
        lambda snapshot: snapshot.max_instances,
    ),
    "run.container.max_request_concurrency": (
        "{request}",
        "Requests one instance serves at once.",
        lambda snapshot: snapshot.concurrency,
    ),
    "run.container.utilization_ratio": (
        "1",
        "Busy request slots over ready request slots.",
        lambda snapshot: snapshot.utilization,
    ),
    "run.container.queued_requests": (
        "{request}",
        "Requests waiting for a free slot.",
        lambda snapshot: snapshot.queued,
    ),
}


REQUEST_FAMILY = "http_server_request_duration_seconds"
REQUEST_DOCUMENTATION = "Duration of HTTP server requests, queueing included."
# The statuses whose series exist from the start: success, and the 500 a failing request answers.
ZERO_FILLED_STATUSES = ("200", "500")


class ZeroFilledRequests(Collector):
    """The OpenTelemetry exporter's families, with every expected request series present from the
    start: at zero until its first request (see the module docstring)."""

    def __init__(self, exporter: CollectorRegistry, expected: list[dict[str, str]]) -> None:
        self.exporter = exporter
        self.expected = expected

    def collect(self) -> Iterable[Metric]:
        found = False
        for family in self.exporter.collect():
            if family.name == REQUEST_FAMILY and family.type == "histogram":
                found = True
                self._fill(family)
            yield family
        if not found:
            family = HistogramMetricFamily(REQUEST_FAMILY, REQUEST_DOCUMENTATION, unit="seconds")
            self._fill(family)
            yield family

    def _fill(self, family: Metric) -> None:
        present = {
            tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le")) for sample in family.samples
        }
        for labels in self.expected:
            if tuple(sorted(labels.items())) in present:
                continue
            for bound in (*REQUEST_DURATION_BUCKETS_S, float("inf")):
                le = "+Inf" if bound == float("inf") else str(float(bound))
                family.samples.append(Sample(f"{REQUEST_FAMILY}_bucket", {**labels, "le": le}, 0.0))
            family.samples.append(Sample(f"{REQUEST_FAMILY}_count", dict(labels), 0.0))
            family.samples.append(Sample(f"{REQUEST_FAMILY}_sum", dict(labels), 0.0))


class ShopTelemetry:
    """The instruments one app records into, and the Prometheus exposition of them."""

    def __init__(
        self,
        *,
        config: ShopConfig,
        capacity_snapshot: Callable[[], CapacitySnapshot],
        extra_readers: Iterable[MetricReader] = (),
        routes: Iterable[str] = (),
    ) -> None:
        self.registry = CollectorRegistry()
        self._identity = {"service": config.service, "revision": config.revision}
        # Reads of /metrics so far: the emulator holds a new revision's traffic until the first.
        self.scrapes = 0
        exporter = CollectorRegistry()
        prometheus_reader = PrometheusMetricReader(
            disable_target_info=True, scope_info_enabled=False, registry=exporter
        )
        self.registry.register(ZeroFilledRequests(exporter, self._expected_request_series(routes)))
        self.readers: tuple[MetricReader, ...] = (prometheus_reader, *extra_readers)
        self.meter_provider = MeterProvider(
            metric_readers=self.readers,
            resource=Resource.create(
                {
                    "service.name": config.service,
                    "service.version": config.revision,
                    "faas.name": config.service,
                    "faas.version": config.revision,
                }
            ),
            # Cleanup belongs to the app's cleanup_ctx; an atexit hook per app would pile up in tests.
            shutdown_on_exit=False,
        )
        meter = self.meter_provider.get_meter(METER_NAME)
        self._request_duration = meter.create_histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests, queueing included.",
            explicit_bucket_boundaries_advisory=REQUEST_DURATION_BUCKETS_S,
        )
        self._active_requests = meter.create_up_down_counter(
            "http.server.active_requests",
            unit="{request}",
            description="HTTP server requests in progress.",
        )
        for name, (unit, description, read) in CAPACITY_GAUGES.items():
            meter.create_observable_gauge(
                name,
                callbacks=[self._gauge_callback(capacity_snapshot, read)],
                unit=unit,
                description=description,
            )

    def _expected_request_series(self, routes: Iterable[str]) -> list[dict[str, str]]:
        """The label sets of the request series that exist from the start: each "METHOD /route"."""
        series = []
        for route in routes:
            method, _, template = route.partition(" ")
            for status in ZERO_FILLED_STATUSES:
                series.append(
                    {
                        **self._identity,
                        "http_request_method": method,
                        "http_route": template,
                        "http_response_status_code": status,
                    }
                )
        return series

    def _gauge_callback(
        self,
        capacity_snapshot: Callable[[], CapacitySnapshot],
        read: Callable[[CapacitySnapshot], float],
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        identity = self._identity

        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(read(capacity_snapshot()), identity)]

        return observe

    def request_started(self, method: str) -> None:
        self._active_requests.add(1, {**self._identity, "http.request.method": method})

    def request_finished(self, method: str) -> None:
        self._active_requests.add(-1, {**self._identity, "http.request.method": method})

    def record_request(self, *, method: str, route: str, status: int, duration_s: float) -> None:
        self._request_duration.record(
            duration_s,
            {
                **self._identity,
                "http.request.method": method,
                "http.route": route,
                "http.response.status_code": status,
            },
        )

    def exposition(self) -> bytes:
        """The Prometheus text format (0.0.4) of every instrument; counts the scrape."""
        self.scrapes += 1
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        """Flush the exporters and detach from the registry; blocks, so run it off the event loop."""
        self.meter_provider.shutdown(timeout_millis=SHUTDOWN_TIMEOUT_MS)


def cloud_monitoring_reader(config: ShopConfig, *, client: Any = None) -> PeriodicExportingMetricReader:
    """A reader that pushes to Cloud Monitoring; `client` replaces the MetricServiceClient (tests)."""
    try:
        from google.auth.exceptions import GoogleAuthError
        from opentelemetry.exporter.cloud_monitoring import CloudMonitoringMetricsExporter
    except ImportError as error:
        raise TelemetryError(
            "DEMO_GCP_MONITORING=1 needs opentelemetry-exporter-gcp-monitoring; "
            "install the gcp extra: pip install 'remediator[gcp]'"
        ) from error
    try:
        # Upstream marks this exporter deprecated in favour of OTLP to telemetry.googleapis.com, but it
        # is the one the `gcp` extra ships and it needs no collector; the warning is not ours to act on.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            exporter = CloudMonitoringMetricsExporter(project_id=config.gcp_project, client=client)
    except GoogleAuthError as error:
        raise TelemetryError(
            f"DEMO_GCP_MONITORING=1 needs Application Default Credentials for Cloud Monitoring: {error}"
        ) from error
    return PeriodicExportingMetricReader(
        exporter, export_interval_millis=config.gcp_export_interval_s * 1000.0
    )


def build_telemetry(
    config: ShopConfig,
    capacity_snapshot: Callable[[], CapacitySnapshot],
    *,
    cloud_monitoring_client: Any = None,
    routes: Iterable[str] = (),
) -> ShopTelemetry:
    """Prometheus always; Cloud Monitoring beside it when `config.gcp_monitoring` is on. The request
    series of `routes` ("METHOD /template") are exposed at zero from the start."""
    extra_readers: list[MetricReader] = []
    if config.gcp_monitoring:
        extra_readers.append(cloud_monitoring_reader(config, client=cloud_monitoring_client))
    return ShopTelemetry(
        config=config, capacity_snapshot=capacity_snapshot, extra_readers=extra_readers, routes=routes
    )
