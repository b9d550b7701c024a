"""The request and container metrics Cloud Run records for every revision, as Managed Prometheus'
PromQL names them, sampled and delayed the way Cloud Monitoring makes them readable.

Cloud Run's front end sees every request, so the routers report each one here (revision, status,
duration); instance counts and utilization are read from the revision processes' capacity model
every `probe_interval_s`. Names and labels follow Google's list of Cloud Run metrics
(https://cloud.google.com/monitoring/api/metrics_gcp_p_z, section "run") mapped to PromQL as
https://cloud.google.com/monitoring/promql/promql-mapping describes (first `/` -> `:`, other special
characters -> `_`, distributions as `_bucket{le}`/`_count`/`_sum`, `monitored_resource` label):

    run_googleapis_com:request_count{response_code, response_code_class}          counter
    run_googleapis_com:request_latencies_bucket|_count|_sum{response_code, ...}   histogram, ms
    run_googleapis_com:container_instance_count{state="active"|"idle", container_name}   gauge
    run_googleapis_com:container_cpu_utilizations_bucket|_count|_sum{container_name}    histogram, 0..1

each with `project_id`, `location`, `service_name`, `revision_name`, `configuration_name` and
`monitored_resource="cloud_run_revision"`.

Timing. Cloud Monitoring samples these every 60 s, and a sample is "not visible for up to N seconds"
after its time (https://cloud.google.com/monitoring/api/v3/latency-n-retention). Here every series
gets one point per `sample_period_s`, at the period's end T, and the exposition (`GET /metrics`)
shows a point only from T + `visibility_delay_s` on, stamped with T (an explicit timestamp in the
text format), so the Prometheus that scrapes it stores exactly what a PromQL query on Cloud
Monitoring could read at any moment. The DELTA metrics become cumulative counters; a series' first
point is preceded by a zero at the start of its first period, because a DELTA point covers
[start, end] and a counter can only show that as an increase from 0.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

REQUEST_COUNT = "run_googleapis_com:request_count"
REQUEST_LATENCIES = "run_googleapis_com:request_latencies"
INSTANCE_COUNT = "run_googleapis_com:container_instance_count"
CPU_UTILIZATIONS = "run_googleapis_com:container_cpu_utilizations"
MONITORED_RESOURCE = "cloud_run_revision"
CONTAINER_NAME = "app"
# Explicit bucket bounds in milliseconds, with 1000 as an exact bound (the latency alert's threshold).
# Cloud Run's own distribution uses its own bounds; histogram_quantile() interpolates either alike.
LATENCY_BOUNDS_MS = (
    5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 2500.0, 5000.0,
    7500.0, 10000.0, 30000.0, 60000.0,
)  # fmt: skip
CPU_BOUNDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, kw_only=True)
class PlatformMetricsConfig:
    """Cloud Monitoring's timing by default: a point a minute, readable two minutes after its time."""

    sample_period_s: float = 60.0
    visibility_delay_s: float = 120.0
    # How often instance counts and utilization are read from the revision processes.
    probe_interval_s: float = 5.0

    def __post_init__(self) -> None:
        if self.sample_period_s <= 0 or self.probe_interval_s <= 0 or self.visibility_delay_s < 0:
            raise ValueError("sampling and probe periods must be positive, the delay not negative")


# The same shape, 12 times faster: tests and quick demos.
FAST_TIMING = PlatformMetricsConfig(sample_period_s=5.0, visibility_delay_s=10.0, probe_interval_s=1.0)

LabelSet = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Point:
    time: float  # the end of the sampling period it covers (unix seconds)
    visible_at: float
    values: tuple[tuple[str, LabelSet, float], ...]  # (metric name, extra labels, value)


@dataclass
class _Histogram:
    bounds: tuple[float, ...]
    buckets: list[int] = field(default_factory=list)
    count: int = 0
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.buckets:
            self.buckets = [0] * len(self.bounds)

    def observe(self, value: float, times: int = 1) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.buckets[i] += times
                break
        self.count += times
        self.total += value * times

    def samples(self, name: str) -> list[tuple[str, LabelSet, float]]:
        out: list[tuple[str, LabelSet, float]] = []
        cumulative = 0
        for bound, count in zip(self.bounds, self.buckets, strict=True):
            cumulative += count
            out.append((f"{name}_bucket", (("le", _number(bound)),), float(cumulative)))
        out.append((f"{name}_bucket", (("le", "+Inf"),), float(self.count)))
        out.append((f"{name}_sum", (), self.total))
        out.append((f"{name}_count", (), float(self.count)))
        return out


@dataclass
class _Capacity:
    """Probe readings of one revision within the current sampling period."""

    probes: int = 0
    active: float = 0.0
    idle: float = 0.0
    cpu: _Histogram = field(default_factory=lambda: _Histogram(CPU_BOUNDS))


@dataclass
class _Series:
    """One revision's (or one request series') cumulative values and its points not yet shown."""

    resource: LabelSet
    extra: LabelSet
    points: deque[Point] = field(default_factory=deque)
    shown: Point | None = None


class PlatformMetrics:
    def __init__(
        self, *, project: str, location: str, config: PlatformMetricsConfig = PlatformMetricsConfig()
    ) -> None:
        self.project = project
        self.location = location
        self.config = config
        self._requests: dict[tuple[str, str, int], int] = {}
        self._latencies: dict[tuple[str, str, int], _Histogram] = {}
        # Cumulative CPU distributions per revision (DELTA points added up, like the requests).
        self._cpu: dict[tuple[str, str], _Histogram] = {}
        self._capacity: dict[tuple[str, str], _Capacity] = {}
        self._series: dict[tuple[str, str, str, LabelSet], _Series] = {}

    # recording

    def record_request(self, service: str, revision: str, status: int, duration_ms: float) -> None:
        key = (service, revision, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        histogram = self._latencies.get(key)
        if histogram is None:
            histogram = self._latencies[key] = _Histogram(LATENCY_BOUNDS_MS)
        histogram.observe(duration_ms)

    def record_capacity(
        self, service: str, revision: str, *, instances: int, busy: int, concurrency: int, utilization: float
    ) -> None:
        """One probe of a revision's instances: `busy` requests in flight over `instances` of
        `concurrency` slots each. Active instances are those the requests in flight need."""
        reading = self._capacity.setdefault((service, revision), _Capacity())
        instances = max(0, instances)
        active = min(instances, math.ceil(busy / concurrency)) if busy > 0 and concurrency > 0 else 0
        reading.probes += 1
        reading.active += active
        reading.idle += instances - active
        if instances > 0:
            reading.cpu.observe(min(max(utilization, 0.0), 1.0), times=instances)

    # sampling

    def next_sample_time(self, now: float) -> float:
        period = self.config.sample_period_s
        return (math.floor(now / period) + 1) * period

    def sample(self, at: float) -> None:
        """Close the sampling period ending at `at`: one point per series, readable after the delay."""
        for (service, revision, status), count in self._requests.items():
            klass = f"{status // 100}xx" if 100 <= status < 600 else "5xx"
            extra = (("response_code", str(status)), ("response_code_class", klass))
            values: list[tuple[str, LabelSet, float]] = [(REQUEST_COUNT, (), float(count))]
            values += self._latencies[(service, revision, status)].samples(REQUEST_LATENCIES)
            self._add(service, revision, "request", extra, at, values, counter=True)
        for (service, revision), reading in self._capacity.items():
            if reading.probes:
                cpu = self._cpu.setdefault((service, revision), _Histogram(CPU_BOUNDS))
                for i, count in enumerate(reading.cpu.buckets):
                    cpu.buckets[i] += count
                cpu.count += reading.cpu.count
                cpu.total += reading.cpu.total
                container = (("container_name", CONTAINER_NAME),)
                self._add(
                    service, revision, "cpu", container, at, cpu.samples(CPU_UTILIZATIONS), counter=True
                )
                for state, total in (("active", reading.active), ("idle", reading.idle)):
                    labels = (("container_name", CONTAINER_NAME), ("state", state))
                    self._add(
                        service,
                        revision,
                        f"instances-{state}",
                        labels,
                        at,
                        [(INSTANCE_COUNT, (), float(round(total / reading.probes)))],
                        counter=False,
                    )
        self._capacity.clear()

    def _add(
        self,
        service: str,
        revision: str,
        kind: str,
        extra: LabelSet,
        at: float,
        values: list[tuple[str, LabelSet, float]],
        *,
        counter: bool,
    ) -> None:
        key = (service, revision, kind, extra)
        series = self._series.get(key)
        period, delay = self.config.sample_period_s, self.config.visibility_delay_s
        if series is None:
            series = self._series[key] = _Series(resource=self._resource(service, revision), extra=extra)
            if counter:
                start = at - period
                zero = tuple((name, labels, 0.0) for name, labels, _ in values)
                # Known only now, at the end of the period: never readable before this moment.
                series.points.append(Point(time=start, visible_at=max(start + delay, at), values=zero))
        last = series.points[-1] if series.points else series.shown
        previous = last.visible_at if last is not None else 0.0
        # Each point stays readable for half a period at least, so a scrape sees it even when the
        # delay is shorter than the period (a zero point and the first value would coincide).
        visible_at = max(at + delay, previous + period / 2)
        series.points.append(Point(time=at, visible_at=visible_at, values=tuple(values)))

    def _resource(self, service: str, revision: str) -> LabelSet:
        return (
            ("configuration_name", service),
            ("location", self.location),
            ("monitored_resource", MONITORED_RESOURCE),
            ("project_id", self.project),
            ("revision_name", revision),
            ("service_name", service),
        )

    # exposition

    def visible(self, now: float) -> Iterable[tuple[_Series, Point]]:
        for series in self._series.values():
            while series.points and series.points[0].visible_at <= now:
                series.shown = series.points.popleft()
            if series.shown is not None:
                yield series, series.shown

    def exposition(self, now: float | None = None) -> str:
        """The Prometheus text format (0.0.4) of every readable point, each with its own time."""
        now = time.time() if now is None else now
        by_name: dict[str, list[str]] = {}
        for series, point in self.visible(now):
            stamp = int(point.time * 1000)
            for name, labels, value in point.values:
                text = _labels(series.resource + series.extra + labels)
                by_name.setdefault(_family(name), []).append(f"{name}{text} {_number(value)} {stamp}")
        lines: list[str] = []
        for family in sorted(by_name):
            lines.append(f"# TYPE {family} {_TYPES[family]}")
            lines.extend(by_name[family])
        return "\n".join(lines) + "\n" if lines else ""


_TYPES = {
    REQUEST_COUNT: "counter",
    REQUEST_LATENCIES: "histogram",
    INSTANCE_COUNT: "gauge",
    CPU_UTILIZATIONS: "histogram",
}


def _family(name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and name[: -len(suffix)] in _TYPES:
            return name[: -len(suffix)]
    return name


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _labels(labels: LabelSet) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{name}="{escape(value)}"' for name, value in labels) + "}"
