"""Both metrics profiles, on a real Prometheus, give the decision engine the same figures in the same
units for the same traffic: requests per second, an error ratio 0..1, latency in milliseconds,
instances and a 0..1 utilization.

One stream of requests is recorded twice: into the demo apps' OpenTelemetry-shaped histogram (the
`app` profile, seconds) and into the emulator's Cloud Run platform metrics (the `cloud-run` profile,
milliseconds, sampled every 2 s and readable 2 s late). Prometheus scrapes both; the collector reads
each through its own profile's queries.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

from collector import AppQueries, CloudRunQueries, MetricsTiming, PrometheusSource, WindowFigures
from collector.sources.prometheus import Capacity
from demo_apps.cloudrun.platform_metrics import PlatformMetrics, PlatformMetricsConfig
from tests.prometheus.background import BackgroundProcess, LocalHTTPServer, wait_for
from tests.prometheus.local_stack import EXPOSITION_CONTENT_TYPE
from tests.support.real_parts import binary_or_missing, free_port

pytestmark = pytest.mark.integration

SERVICE, REVISION = "shop", "shop-00001-abc"
TICK_S = 0.1
OK_PER_TICK, ERRORS_PER_TICK = 9, 1  # 100 requests/s, 10% errors
LATENCY_S = 0.04  # every request; p95 interpolates to 48.75 ms in the (25, 50] ms bucket
INSTANCES, BUSY, CONCURRENCY = 3, 6, 10
# Long enough that one late scrape on a busy machine moves an exact count by little.
WINDOW_S = 20
PLATFORM_TIMING = PlatformMetricsConfig(sample_period_s=2.0, visibility_delay_s=2.0, probe_interval_s=0.5)


class Traffic:
    """Records the same requests in both shapes, from a thread, until stopped."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.histogram = Histogram(
            "http_server_request_duration_seconds",
            "request duration",
            ["service", "revision", "http_response_status_code"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        labels = ["service", "revision"]
        self.instances = Gauge("run_container_instances", "instances", labels, registry=self.registry)
        self.utilization = Gauge(
            "run_container_utilization_ratio", "busy/ready", labels, registry=self.registry
        )
        self.platform = PlatformMetrics(project="proj", location="europe-west1", config=PLATFORM_TIMING)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.instances.labels(SERVICE, REVISION).set(INSTANCES)
        self.utilization.labels(SERVICE, REVISION).set(BUSY / (INSTANCES * CONCURRENCY))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        next_sample = self.platform.next_sample_time(time.time())
        next_probe = time.time()
        while not self._stop.wait(TICK_S):
            with self.lock:
                for status, count in ((200, OK_PER_TICK), (500, ERRORS_PER_TICK)):
                    for _ in range(count):
                        self.histogram.labels(SERVICE, REVISION, str(status)).observe(LATENCY_S)
                        self.platform.record_request(SERVICE, REVISION, status, LATENCY_S * 1000)
                now = time.time()
                if now >= next_probe:
                    self.platform.record_capacity(
                        SERVICE,
                        REVISION,
                        instances=INSTANCES,
                        busy=BUSY,
                        concurrency=CONCURRENCY,
                        utilization=BUSY / (INSTANCES * CONCURRENCY),
                    )
                    next_probe = now + PLATFORM_TIMING.probe_interval_s
                if now >= next_sample:
                    self.platform.sample(next_sample)
                    next_sample = self.platform.next_sample_time(now)

    def app_exposition(self) -> tuple[str, bytes]:
        with self.lock:
            return EXPOSITION_CONTENT_TYPE, generate_latest(self.registry)

    def platform_exposition(self) -> tuple[str, bytes]:
        with self.lock:
            return EXPOSITION_CONTENT_TYPE, self.platform.exposition().encode()


@dataclass
class Running:
    url: str


@pytest.fixture(scope="module")
def prometheus_with_both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    binary = binary_or_missing("prometheus")
    with ExitStack() as running:
        traffic = Traffic()
        app = LocalHTTPServer({"/metrics": traffic.app_exposition})
        running.callback(app.close)
        platform = LocalHTTPServer({"/metrics": traffic.platform_exposition})
        running.callback(platform.close)
        traffic.start()
        running.callback(traffic.stop)
        config_dir = tmp_path_factory.mktemp("profiles")
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "app", "static_configs": [{"targets": [f"127.0.0.1:{app.port}"]}]},
                {
                    "job_name": "cloudrun-platform",
                    "honor_timestamps": True,
                    "honor_labels": True,
                    "static_configs": [{"targets": [f"127.0.0.1:{platform.port}"]}],
                },
            ],
        }
        path = Path(config_dir) / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        process = BackgroundProcess(
            [
                str(binary),
                f"--config.file={path}",
                f"--storage.tsdb.path={config_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            log_path=config_dir / "prometheus.log",
            cwd=config_dir,
        )
        running.callback(process.stop)
        url = f"http://127.0.0.1:{port}"
        if not process.wait_until_ready(f"{url}/-/ready", timeout_s=30):
            pytest.fail(f"prometheus exited with {process.exit_code}:\n{process.log()}")
        yield Running(url=url)


Observed = tuple[WindowFigures, Capacity]


async def figures_of(source: PrometheusSource) -> Observed:
    try:
        at = datetime.now(UTC)
        window = await source.window(SERVICE, at=at, window=WINDOW_S)
        capacity = await source.capacity(SERVICE, at=at)
        return window, capacity
    finally:
        source.close()


def test_both_profiles_give_the_same_figures_in_the_same_units(prometheus_with_both: Running) -> None:
    url = prometheus_with_both.url
    platform_timing = MetricsTiming(sample_period_seconds=2, visibility_delay_seconds=2)

    def both() -> tuple[Observed, Observed] | None:
        app = asyncio.run(
            figures_of(
                PrometheusSource(
                    url, timeout=3, queries=AppQueries(timing=MetricsTiming(sample_period_seconds=1))
                ),
            )
        )
        cloud = asyncio.run(
            figures_of(PrometheusSource(url, timeout=3, queries=CloudRunQueries(timing=platform_timing)))
        )
        # Every figure read, the utilization included (a late platform sample leaves it unknown
        # for a moment, as it should); the values themselves are checked below.
        ready = all(
            window.service.request_rate_rps and capacity.instances and capacity.of({REVISION})[1] is not None
            for window, capacity in (app, cloud)
        )
        return (app, cloud) if ready else None

    # Wait for a full window of readable platform points (period + delay + window), then a little.
    wait_for("both profiles to see the traffic", both, timeout_s=40)
    time.sleep(WINDOW_S + 4)
    result = wait_for("a complete reading of both profiles", both, timeout_s=20)
    assert result is not None
    (app_window, app_capacity), (cloud_window, cloud_capacity) = result
    report = json.dumps({"app": repr(app_window), "cloud": repr(cloud_window)})
    for window in (app_window, cloud_window):
        service = window.service
        assert service.request_rate_rps == pytest.approx(100, rel=0.25), report
        assert service.error_rate == pytest.approx(0.10, abs=0.02), report
        assert service.latency_p95_ms == pytest.approx(48.75, abs=0.5), report  # milliseconds, both
        revision = window.by_revision[REVISION]
        assert revision.error_rate == pytest.approx(0.10, abs=0.02), report
        assert revision.latency_p95_ms == pytest.approx(48.75, abs=0.5), report
    for capacity in (app_capacity, cloud_capacity):
        instances, utilization = capacity.of({REVISION})
        assert instances == INSTANCES
        assert utilization == pytest.approx(BUSY / (INSTANCES * CONCURRENCY), abs=0.05)
