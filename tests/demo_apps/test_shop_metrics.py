from __future__ import annotations

import asyncio
import dataclasses
import io
import math
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import google.auth
import google.auth.exceptions
import pytest
from aiohttp.test_utils import TestClient
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from demo_apps.shop import (
    REQUEST_DURATION_BUCKETS_S,
    CapacitySnapshot,
    ShopConfig,
    StructuredLogger,
    TelemetryError,
    build_telemetry,
    create_app,
)
from demo_apps.shop.keys import TELEMETRY

REVISION = "shop-00004-jkl"
TEST_CONFIG = ShopConfig(
    service="shop",
    revision=REVISION,
    service_time_ms=0,
    cold_start_ms=0,
    min_instances=1,
    max_instances=3,
    concurrency=2,
    random_seed=3,
)
CAPACITY_GAUGES = (
    "run_container_instances",
    "run_container_min_instances",
    "run_container_max_instances",
    "run_container_max_request_concurrency",
    "run_container_utilization_ratio",
    "run_container_queued_requests",
)

ClientFactory = Callable[..., Awaitable[TestClient]]


async def shop_client(aiohttp_client: ClientFactory, **overrides: Any) -> TestClient:
    config = dataclasses.replace(TEST_CONFIG, **overrides)
    logger = StructuredLogger(service=config.service, revision=config.revision, stream=io.StringIO())
    return await aiohttp_client(create_app(config, logger=logger))


async def scrape(client: TestClient) -> tuple[str, list[Sample]]:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = await response.text()
    samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    return text, samples


def value_of(samples: list[Sample], name: str, **labels: str) -> float:
    found = [
        sample.value
        for sample in samples
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


async def test_request_series_exist_at_zero_before_the_first_request(aiohttp_client: ClientFactory) -> None:
    """So that Prometheus, scraping a new revision before its traffic, counts its first errors."""
    client = await shop_client(aiohttp_client)
    _, samples = await scrape(client)
    counts = {
        (
            s.labels["http_request_method"],
            s.labels["http_route"],
            s.labels["http_response_status_code"],
        ): s.value
        for s in samples
        if s.name == "http_server_request_duration_seconds_count"
    }
    assert counts[("GET", "/api/catalog", "500")] == 0
    assert counts[("POST", "/api/checkout", "200")] == 0
    assert set(counts.values()) == {0}
    assert (
        value_of(
            samples,
            "http_server_request_duration_seconds_bucket",
            http_route="/api/cart",
            http_response_status_code="500",
            le="+Inf",
        )
        == 0
    )
    assert (await client.get("/api/catalog")).status == 200
    _, samples = await scrape(client)
    # The first request adds to the series that was there, at zero, before it.
    assert (
        value_of(
            samples,
            "http_server_request_duration_seconds_count",
            http_route="/api/catalog",
            http_response_status_code="200",
        )
        == 1
    )


async def test_exposition_names_labels_and_status_codes(aiohttp_client: ClientFactory) -> None:
    client = await shop_client(aiohttp_client)
    for _ in range(3):
        assert (await client.get("/api/catalog")).status == 200
    assert (await client.get("/api/catalog/sku-travel-mug")).status == 200
    assert (await client.get("/api/catalog/sku-missing")).status == 404
    assert (await client.post("/api/cart", json={"item_id": "sku-travel-mug"})).status == 201
    assert (await client.get("/nowhere")).status == 404
    await client.post("/fault/enable?type=5xx")
    assert (await client.get("/api/catalog")).status == 500
    await client.post("/fault/disable")
    # Control traffic, none of which may be counted.
    for path in ("/healthz", "/fault/status", "/_emulator/scaling", "/metrics"):
        assert (await client.get(path)).status == 200
    await client.put("/_emulator/scaling", json={"concurrency": 2})

    text, samples = await scrape(client)

    # The exact text Prometheus reads: service and revision on the series themselves.
    assert re.search(
        r'^http_server_request_duration_seconds_bucket\{http_request_method="GET",'
        r'http_response_status_code="200",http_route="/api/catalog",le="1\.0",'
        r'revision="shop-00004-jkl",service="shop"\} 3\.0$',
        text,
        re.MULTILINE,
    )
    for name in (
        "http_server_request_duration_seconds_bucket",
        "http_server_request_duration_seconds_sum",
        "http_server_request_duration_seconds_count",
        "http_server_active_requests",
        *CAPACITY_GAUGES,
    ):
        assert re.search(rf'^{name}\{{.*revision="{REVISION}",service="shop".*\}} ', text, re.MULTILINE), name
    for sample in samples:
        assert sample.labels["service"] == "shop"
        assert sample.labels["revision"] == REVISION

    counts = {
        tuple(
            sample.labels[key] for key in ("http_route", "http_response_status_code", "http_request_method")
        ): (sample.value)
        for sample in samples
        if sample.name == "http_server_request_duration_seconds_count" and sample.value
    }
    assert counts == {
        ("/api/catalog", "200", "GET"): 3,
        ("/api/catalog/{item_id}", "200", "GET"): 1,
        ("/api/catalog/{item_id}", "404", "GET"): 1,
        ("/api/cart", "201", "POST"): 1,
        ("", "404", "GET"): 1,
        ("/api/catalog", "500", "GET"): 1,
    }
    routes = {sample.labels.get("http_route") for sample in samples}
    for control in ("/metrics", "/healthz", "/fault/status", "/fault/enable", "/_emulator/scaling"):
        assert control not in routes

    bounds = [
        float(sample.labels["le"])
        for sample in samples
        if sample.name == "http_server_request_duration_seconds_bucket"
        and sample.labels["http_route"] == "/api/catalog"
        and sample.labels["http_response_status_code"] == "200"
    ]
    assert bounds == [*REQUEST_DURATION_BUCKETS_S, math.inf]

    assert value_of(samples, "run_container_instances") == 1
    assert value_of(samples, "run_container_min_instances") == 1
    assert value_of(samples, "run_container_max_instances") == 3
    assert value_of(samples, "run_container_max_request_concurrency") == 2
    assert value_of(samples, "run_container_utilization_ratio") == 0
    assert value_of(samples, "run_container_queued_requests") == 0
    assert value_of(samples, "http_server_active_requests", http_request_method="GET") == 0


async def test_slow_requests_show_in_buckets_and_live_gauges(aiohttp_client: ClientFactory) -> None:
    client = await shop_client(aiohttp_client, max_instances=1, max_queue_wait_ms=5000)
    await client.post("/fault/enable?type=latency&latency_ms=260")
    slow = [asyncio.ensure_future(client.get("/api/catalog")) for _ in range(5)]
    await asyncio.sleep(0.1)

    _, during = await scrape(client)
    assert value_of(during, "http_server_active_requests", http_request_method="GET") == 5
    assert value_of(during, "run_container_utilization_ratio") == 1
    assert value_of(during, "run_container_queued_requests") == 3

    assert {response.status for response in await asyncio.gather(*slow)} == {200}
    _, after = await scrape(client)
    labels = {"http_route": "/api/catalog", "http_response_status_code": "200"}
    count = value_of(after, "http_server_request_duration_seconds_count", **labels)
    assert count == 5
    # Two slots: the requests end after one, two and three latencies (0.26, 0.52, 0.78 s).
    assert value_of(after, "http_server_request_duration_seconds_bucket", le="0.25", **labels) == 0
    assert value_of(after, "http_server_request_duration_seconds_bucket", le="1.0", **labels) == 5
    assert value_of(after, "run_container_queued_requests") == 0


async def test_429s_are_recorded_with_their_status(aiohttp_client: ClientFactory) -> None:
    client = await shop_client(
        aiohttp_client, max_instances=1, concurrency=1, service_time_ms=100, max_queue_wait_ms=50
    )
    statuses = [response.status for response in await asyncio.gather(*(client.get("/") for _ in range(4)))]
    assert sorted(statuses) == [200, 429, 429, 429]
    _, samples = await scrape(client)
    assert (
        value_of(
            samples,
            "http_server_request_duration_seconds_count",
            http_route="/",
            http_response_status_code="429",
        )
        == 3
    )


async def test_each_app_has_its_own_registry(aiohttp_client: ClientFactory) -> None:
    first = await shop_client(aiohttp_client)
    second = await shop_client(aiohttp_client, revision="shop-00005-mno")
    await first.get("/api/catalog")
    _, first_samples = await scrape(first)
    _, second_samples = await scrape(second)
    assert {sample.labels["revision"] for sample in first_samples} == {REVISION}
    assert {sample.labels["revision"] for sample in second_samples} == {"shop-00005-mno"}
    # The second app served nothing: its request series are there, all at zero.
    assert not [
        sample
        for sample in second_samples
        if sample.name.startswith("http_server_request_duration") and sample.value
    ]


# --- Cloud Monitoring ----------------------------------------------------------------------------------


class FakeMetricServiceClient:
    """Stands in for google.cloud.monitoring_v3.MetricServiceClient: records calls, sends nothing."""

    def __init__(self) -> None:
        self.descriptor_requests: list[Any] = []
        self.time_series_requests: list[Any] = []

    @staticmethod
    def common_project_path(project: str) -> str:
        return f"projects/{project}"

    def create_metric_descriptor(self, request: Any) -> Any:
        self.descriptor_requests.append(request)
        return request.metric_descriptor

    def create_time_series(self, request: Any) -> None:
        self.time_series_requests.append(request)


def idle_snapshot() -> CapacitySnapshot:
    return CapacitySnapshot(
        instances=1,
        ready_instances=1,
        starting_instances=0,
        min_instances=1,
        max_instances=3,
        concurrency=2,
        busy=0,
        queued=0,
        utilization=0.0,
    )


def test_cloud_monitoring_reader_sits_beside_prometheus() -> None:
    fake_client = FakeMetricServiceClient()
    config = dataclasses.replace(TEST_CONFIG, gcp_monitoring=True, gcp_project="demo-project")
    telemetry = build_telemetry(config, idle_snapshot, cloud_monitoring_client=fake_client)
    try:
        assert len(telemetry.readers) == 2
        reader = telemetry.readers[1]
        assert isinstance(reader, PeriodicExportingMetricReader)
        exporter: Any = reader._exporter
        assert type(exporter).__name__ == "CloudMonitoringMetricsExporter"
        assert exporter.project_id == "demo-project"
        assert exporter.client is fake_client

        telemetry.record_request(method="GET", route="/api/catalog", status=200, duration_s=0.05)
        # The reader only sees this measurement if it is attached to the app's MeterProvider.
        assert reader.force_flush()
    finally:
        telemetry.shutdown()

    sent = fake_client.time_series_requests
    assert sent
    assert {request.name for request in sent} == {"projects/demo-project"}
    series = [series for request in sent for series in request.time_series]
    durations = [s for s in series if s.metric.type == "workload.googleapis.com/http.server.request.duration"]
    assert durations
    assert durations[0].metric.labels["service"] == "shop"
    assert durations[0].metric.labels["revision"] == REVISION
    assert durations[0].metric.labels["http_route"] == "/api/catalog"
    assert "workload.googleapis.com/run.container.instances" in {s.metric.type for s in series}


async def test_app_wires_cloud_monitoring_when_switched_on(aiohttp_client: ClientFactory) -> None:
    fake_client = FakeMetricServiceClient()
    config = dataclasses.replace(TEST_CONFIG, gcp_monitoring=True, gcp_project="demo-project")
    logger = StructuredLogger(service="shop", revision=REVISION, stream=io.StringIO())
    client = await aiohttp_client(create_app(config, logger=logger, cloud_monitoring_client=fake_client))
    assert (await client.get("/api/catalog")).status == 200
    telemetry = client.app[TELEMETRY]
    assert isinstance(telemetry.readers[1], PeriodicExportingMetricReader)
    assert telemetry.readers[1].force_flush()
    assert {request.name for request in fake_client.time_series_requests} == {"projects/demo-project"}
    _, samples = await scrape(client)
    assert (
        value_of(
            samples,
            "http_server_request_duration_seconds_count",
            http_route="/api/catalog",
            http_response_status_code="200",
        )
        == 1
    )


def test_missing_gcp_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.cloud_monitoring", None)
    config = dataclasses.replace(TEST_CONFIG, gcp_monitoring=True, gcp_project="demo-project")
    with pytest.raises(TelemetryError, match=r"remediator\[gcp\]"):
        build_telemetry(config, idle_snapshot)


def test_missing_credentials_are_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_credentials(*_args: object, **_kwargs: object) -> NoReturn:
        raise google.auth.exceptions.DefaultCredentialsError("no credentials here")

    monkeypatch.setattr(google.auth, "default", no_credentials)
    config = dataclasses.replace(TEST_CONFIG, gcp_monitoring=True, gcp_project="demo-project")
    with pytest.raises(TelemetryError, match=r"Application Default Credentials.*no credentials here"):
        build_telemetry(config, idle_snapshot)


def test_cloud_monitoring_is_not_imported_when_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.cloud_monitoring", None)
    telemetry = build_telemetry(TEST_CONFIG, idle_snapshot)
    try:
        assert len(telemetry.readers) == 1
    finally:
        telemetry.shutdown()
