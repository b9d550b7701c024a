from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from demo_apps.shop import ShopConfig, StructuredLogger, create_app
from demo_apps.shop.logs import StructuredLogHandler

REVISION = "shop-00006-pqr"
TEST_CONFIG = ShopConfig(
    service="shop",
    revision=REVISION,
    service_time_ms=0,
    cold_start_ms=0,
    min_instances=1,
    max_instances=1,
    concurrency=1,
    random_seed=9,
)
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
LATENCY = re.compile(r"^\d+\.\d{3}s$")

ClientFactory = Callable[..., Awaitable[TestClient]]


def entries(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = stream.getvalue().splitlines()
    return [json.loads(line) for line in lines]


async def logged_client(aiohttp_client: ClientFactory, **overrides: Any) -> tuple[TestClient, io.StringIO]:
    config = dataclasses.replace(TEST_CONFIG, **overrides)
    stream = io.StringIO()
    logger = StructuredLogger(
        service=config.service, revision=config.revision, project=config.gcp_project, stream=stream
    )
    return await aiohttp_client(create_app(config, logger=logger)), stream


def test_one_json_object_per_line_with_the_cloud_run_fields() -> None:
    stream = io.StringIO()
    logger = StructuredLogger(
        service="shop", revision=REVISION, stream=stream, wall_clock=lambda: 1_700_000_000.5
    )
    logger.info("first", detail="multi\nline")
    logger.error("second")
    first, second = entries(stream)
    assert first == {
        "severity": "INFO",
        "message": "first",
        "time": "2023-11-14T22:13:20.500Z",
        "service": "shop",
        "revision": REVISION,
        "detail": "multi\nline",
    }
    assert second["severity"] == "ERROR"
    assert len(stream.getvalue().splitlines()) == 2


async def test_request_lines_carry_http_request_and_severity(aiohttp_client: ClientFactory) -> None:
    client, stream = await logged_client(aiohttp_client)
    trace = "0af7651916cd43dd8448eb211c80319c"
    await client.get(
        "/api/catalog", headers={"X-Cloud-Trace-Context": f"{trace}/1;o=1", "User-Agent": "probe"}
    )
    await client.post("/api/cart", json={"item_id": "sku-nothing"})
    await client.post("/fault/enable?type=5xx")
    await client.get("/api/catalog/sku-travel-mug")
    await client.post("/fault/disable")

    requests = [entry for entry in entries(stream) if "httpRequest" in entry]
    ok, bad_request, failed = requests
    assert ok["severity"] == "INFO"
    assert ok["message"] == "GET /api/catalog 200"
    assert ok["requestId"] == trace
    assert RFC3339_UTC.match(ok["time"])
    assert (ok["service"], ok["revision"]) == ("shop", REVISION)
    http = ok["httpRequest"]
    assert (http["requestMethod"], http["requestUrl"], http["status"]) == ("GET", "/api/catalog", 200)
    assert LATENCY.match(http["latency"])
    assert http["userAgent"] == "probe"

    assert bad_request["severity"] == "INFO"
    assert bad_request["message"].startswith("POST /api/cart 400 - ")

    assert failed["severity"] == "ERROR"
    assert failed["message"].startswith("500 Internal Server Error - ")
    assert failed["httpRequest"]["status"] == 500
    assert failed["httpRequest"]["requestUrl"] == "/api/catalog/sku-travel-mug"
    assert re.fullmatch(r"[0-9a-f]{32}", failed["requestId"])

    events = [entry["message"] for entry in entries(stream) if "httpRequest" not in entry]
    assert any(message.startswith("runtime fault enabled: type=5xx") for message in events)
    assert any(message.startswith("runtime fault disabled") for message in events)


async def test_429_is_a_warning_and_timeouts_are_errors(aiohttp_client: ClientFactory) -> None:
    client, stream = await logged_client(aiohttp_client, service_time_ms=80, max_queue_wait_ms=20)
    await asyncio.gather(client.get("/api/catalog"), client.get("/api/catalog"))
    await client.post("/fault/enable?type=timeout&latency_ms=10")
    await client.get("/api/catalog")
    by_status = {entry["httpRequest"]["status"]: entry for entry in entries(stream) if "httpRequest" in entry}
    assert by_status[429]["severity"] == "WARNING"
    assert "no available instance" in by_status[429]["message"]
    assert by_status[504]["severity"] == "ERROR"
    assert by_status[504]["message"].startswith("504 Gateway Timeout")


async def test_control_traffic_is_not_logged_per_request(aiohttp_client: ClientFactory) -> None:
    client, stream = await logged_client(aiohttp_client)
    for path in ("/healthz", "/metrics", "/fault/status", "/_emulator/scaling"):
        await client.get(path)
    assert [entry for entry in entries(stream) if "httpRequest" in entry] == []


async def test_trace_link_when_the_project_is_known(aiohttp_client: ClientFactory) -> None:
    client, stream = await logged_client(aiohttp_client, gcp_project="demo-project")
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    await client.get("/", headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
    (entry,) = [entry for entry in entries(stream) if "httpRequest" in entry]
    assert entry["logging.googleapis.com/trace"] == f"projects/demo-project/traces/{trace}"


async def test_baked_in_faults_are_announced_at_start(aiohttp_client: ClientFactory) -> None:
    _, stream = await logged_client(aiohttp_client, error_rate=20.0, latency_ms=700.0, latency_rate=50.0)
    (announcement,) = entries(stream)
    assert announcement["severity"] == "WARNING"
    assert "error_rate=20%" in announcement["message"]
    assert "latency_ms=700" in announcement["message"]


def test_standard_library_records_become_json_lines() -> None:
    stream = io.StringIO()
    handler = StructuredLogHandler(StructuredLogger(service="shop", revision=REVISION, stream=stream))
    record_logger = logging.getLogger("tests.shop.structured")
    record_logger.addHandler(handler)
    record_logger.propagate = False
    try:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            record_logger.exception("handler failed")
    finally:
        record_logger.removeHandler(handler)
        record_logger.propagate = True
    (entry,) = entries(stream)
    assert entry["severity"] == "ERROR"
    assert entry["logger"] == "tests.shop.structured"
    assert entry["message"].startswith("handler failed\nTraceback")
    assert "RuntimeError: boom" in entry["message"]
