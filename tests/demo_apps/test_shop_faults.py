from __future__ import annotations

import asyncio
import dataclasses
import io
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from demo_apps.shop import (
    DeployFaults,
    FaultInjector,
    FaultParameterError,
    FaultSpec,
    FaultType,
    InjectedServerError,
    InjectedTimeout,
    ShopConfig,
    StructuredLogger,
    WarmingUp,
    create_app,
    parse_fault_query,
)
from demo_apps.shop.faults import SERVER_ERROR_CAUSES

REVISION = "shop-00002-def"
TEST_CONFIG = ShopConfig(
    service="shop",
    revision=REVISION,
    service_time_ms=0,
    cold_start_ms=0,
    min_instances=1,
    max_instances=1,
    concurrency=1000,
    random_seed=11,
)

ClientFactory = Callable[..., Awaitable[TestClient]]


async def shop_client(aiohttp_client: ClientFactory, **overrides: Any) -> TestClient:
    config = dataclasses.replace(TEST_CONFIG, **overrides)
    logger = StructuredLogger(service=config.service, revision=config.revision, stream=io.StringIO())
    return await aiohttp_client(create_app(config, logger=logger))


@pytest.fixture
async def client(aiohttp_client: ClientFactory) -> TestClient:
    return await shop_client(aiohttp_client)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- parsing -------------------------------------------------------------------------------------------


def test_each_type_has_its_defaults() -> None:
    assert parse_fault_query([("type", "5xx")]) == FaultSpec(
        type=FaultType.SERVER_ERROR, error_rate=100.0, latency_ms=0.0, duration_s=None
    )
    assert parse_fault_query([("type", "timeout")]) == FaultSpec(
        type=FaultType.TIMEOUT, error_rate=100.0, latency_ms=10_000.0, duration_s=None
    )
    assert parse_fault_query([("type", "latency"), ("latency_ms", "250")]) == FaultSpec(
        type=FaultType.LATENCY, error_rate=100.0, latency_ms=250.0, duration_s=None
    )


def test_every_parameter_is_read() -> None:
    spec = parse_fault_query(
        [("type", "5xx"), ("error_rate", "37.5"), ("latency_ms", "120"), ("duration", "90")]
    )
    assert spec == FaultSpec(type=FaultType.SERVER_ERROR, error_rate=37.5, latency_ms=120.0, duration_s=90.0)
    assert (
        parse_fault_query([("type", "latency"), ("latency_ms", "60000"), ("error_rate", "0")]).error_rate == 0
    )


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ([], "type"),
        ([("type", "oops")], "type"),
        ([("type", "5XX")], "type"),
        ([("type", "5xx"), ("colour", "red")], "colour"),
        ([("type", "5xx"), ("type", "latency")], "type"),
        ([("type", "5xx"), ("error_rate", "abc")], "error_rate"),
        ([("type", "5xx"), ("error_rate", "-1")], "error_rate"),
        ([("type", "5xx"), ("error_rate", "100.5")], "error_rate"),
        ([("type", "5xx"), ("error_rate", "nan")], "error_rate"),
        ([("type", "5xx"), ("error_rate", "")], "error_rate"),
        ([("type", "5xx"), ("latency_ms", "-1")], "latency_ms"),
        ([("type", "latency")], "latency_ms"),
        ([("type", "latency"), ("latency_ms", "0")], "latency_ms"),
        ([("type", "latency"), ("latency_ms", "60001")], "latency_ms"),
        ([("type", "latency"), ("latency_ms", "inf")], "latency_ms"),
        ([("type", "timeout"), ("latency_ms", "0")], "latency_ms"),
        ([("type", "5xx"), ("duration", "0")], "duration"),
        ([("type", "5xx"), ("duration", "-3")], "duration"),
        ([("type", "5xx"), ("duration", "86401")], "duration"),
        ([("type", "5xx"), ("duration", "soon")], "duration"),
    ],
)
def test_bad_queries_name_the_parameter(query: list[tuple[str, str]], parameter: str) -> None:
    with pytest.raises(FaultParameterError) as raised:
        parse_fault_query(query)
    assert raised.value.parameter == parameter
    assert raised.value.payload() == {"error": raised.value.message, "parameter": parameter}


# --- the injector, on a fake clock -----------------------------------------------------------------------


def test_runtime_fault_expires_by_itself() -> None:
    clock = FakeClock()
    injector = FaultInjector(deploy=DeployFaults(), rng=random.Random(1), clock=clock, wall_clock=clock)
    injector.enable(FaultSpec(type=FaultType.SERVER_ERROR, error_rate=100, latency_ms=0, duration_s=30))
    clock.now += 10
    runtime = injector.status()["runtime"]
    assert isinstance(runtime, dict)
    assert runtime["remaining_s"] == 20
    assert isinstance(injector.decide().error, InjectedServerError)
    clock.now += 20
    assert injector.status()["runtime"] is None
    assert injector.decide().error is None


def test_outcomes_per_type() -> None:
    injector = FaultInjector(deploy=DeployFaults(), rng=random.Random(2))
    injector.enable(FaultSpec(type=FaultType.LATENCY, error_rate=100, latency_ms=1500, duration_s=None))
    outcome = injector.decide()
    assert (outcome.delay_s, outcome.error) == (1.5, None)

    injector.enable(FaultSpec(type=FaultType.TIMEOUT, error_rate=100, latency_ms=800, duration_s=None))
    outcome = injector.decide()
    assert outcome.delay_s == 0.8
    assert isinstance(outcome.error, InjectedTimeout)
    assert outcome.error.message.startswith("504 Gateway Timeout - no answer from ")

    injector.enable(FaultSpec(type=FaultType.SERVER_ERROR, error_rate=100, latency_ms=300, duration_s=None))
    outcome = injector.decide()
    assert outcome.delay_s == 0.3
    assert isinstance(outcome.error, InjectedServerError)
    assert outcome.error.message.startswith("500 Internal Server Error - ")
    assert outcome.error.message.split(" - ", 1)[1] in SERVER_ERROR_CAUSES

    assert injector.disable() is not None
    assert injector.disable() is None
    assert injector.decide().error is None


def test_error_rate_statistics_of_the_dice() -> None:
    injector = FaultInjector(deploy=DeployFaults(), rng=random.Random(3))
    injector.enable(FaultSpec(type=FaultType.SERVER_ERROR, error_rate=25, latency_ms=0, duration_s=None))
    failed = sum(injector.decide().error is not None for _ in range(20_000))
    assert 4600 <= failed <= 5400


def test_deploy_and_runtime_faults_add_up() -> None:
    deploy = DeployFaults(error_rate=100, latency_ms=200, latency_rate=100)
    injector = FaultInjector(deploy=deploy, rng=random.Random(4))
    outcome = injector.decide()
    assert outcome.delay_s == 0.2
    assert isinstance(outcome.error, InjectedServerError)
    assert outcome.error.source == "deploy"

    injector.enable(FaultSpec(type=FaultType.TIMEOUT, error_rate=100, latency_ms=100, duration_s=None))
    outcome = injector.decide()
    assert outcome.delay_s == pytest.approx(0.3)
    assert isinstance(outcome.error, InjectedTimeout)
    assert outcome.error.source == "runtime"


# --- the HTTP API --------------------------------------------------------------------------------------


async def test_status_without_faults(client: TestClient) -> None:
    response = await client.get("/fault/status")
    assert await response.json() == {
        "revision": REVISION,
        "runtime": None,
        "deploy": {"error_rate": 0.0, "latency_ms": 0.0, "latency_rate": 100.0, "warmup_errors_s": 0.0},
    }


async def test_enable_5xx_fails_shop_requests_but_not_control_ones(client: TestClient) -> None:
    enabled = await client.post("/fault/enable?type=5xx&error_rate=100")
    assert enabled.status == 200
    runtime = (await enabled.json())["runtime"]
    assert runtime["type"] == "5xx"
    assert runtime["error_rate"] == 100
    assert runtime["expires_at"] is None
    assert runtime["remaining_s"] is None

    response = await client.get("/api/catalog")
    assert response.status == 500
    assert (await response.json())["error"].startswith("500 Internal Server Error - ")

    for path in ("/healthz", "/fault/status", "/metrics", "/_emulator/scaling"):
        assert (await client.get(path)).status == 200

    disabled = await client.post("/fault/disable")
    assert (await disabled.json())["disabled"] is True
    assert (await client.get("/api/catalog")).status == 200
    assert (await (await client.post("/fault/disable")).json())["disabled"] is False


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("type=oops", "type"),
        ("", "type"),
        ("type=5xx&error_rate=abc", "error_rate"),
        ("type=5xx&error_rate=101", "error_rate"),
        ("type=5xx&error_rate=-0.5", "error_rate"),
        ("type=latency", "latency_ms"),
        ("type=latency&latency_ms=0", "latency_ms"),
        ("type=latency&latency_ms=999999", "latency_ms"),
        ("type=latency&latency_ms=slow", "latency_ms"),
        ("type=timeout&latency_ms=-10", "latency_ms"),
        ("type=5xx&duration=0", "duration"),
        ("type=5xx&duration=100000", "duration"),
        ("type=5xx&duration=later", "duration"),
        ("type=5xx&rate=5", "rate"),
        ("type=5xx&type=timeout", "type"),
    ],
)
async def test_a_bad_enable_is_400_and_leaves_the_fault_as_it_was(
    client: TestClient, query: str, parameter: str
) -> None:
    await client.post("/fault/enable?type=latency&latency_ms=5&error_rate=40")
    before = await (await client.get("/fault/status")).json()

    response = await client.post(f"/fault/enable?{query}")
    assert response.status == 400
    body = await response.json()
    assert body["parameter"] == parameter
    assert body["error"]
    assert await (await client.get("/fault/status")).json() == before


async def test_duration_ends_the_fault(client: TestClient) -> None:
    enabled = await (await client.post("/fault/enable?type=5xx&duration=0.3")).json()
    assert 0 < enabled["runtime"]["remaining_s"] <= 0.3
    assert enabled["runtime"]["expires_at"].endswith("Z")
    assert (await client.get("/api/catalog")).status == 500
    await asyncio.sleep(0.35)
    assert (await (await client.get("/fault/status")).json())["runtime"] is None
    assert (await client.get("/api/catalog")).status == 200


async def test_enable_replaces_the_previous_fault(client: TestClient) -> None:
    await client.post("/fault/enable?type=5xx")
    status = await (await client.post("/fault/enable?type=latency&latency_ms=1")).json()
    assert status["runtime"]["type"] == "latency"
    assert (await client.get("/api/catalog")).status == 200


async def test_timeout_hangs_then_answers_504(client: TestClient) -> None:
    await client.post("/fault/enable?type=timeout&latency_ms=200")
    started = time.perf_counter()
    response = await client.get("/api/catalog")
    elapsed = time.perf_counter() - started
    assert response.status == 504
    assert (await response.json())["error"].startswith("504 Gateway Timeout")
    assert elapsed >= 0.19


async def test_5xx_can_wait_before_failing(client: TestClient) -> None:
    await client.post("/fault/enable?type=5xx&latency_ms=150")
    started = time.perf_counter()
    assert (await client.get("/api/catalog")).status == 500
    assert time.perf_counter() - started >= 0.14


async def test_latency_fault_never_blocks_the_loop(client: TestClient) -> None:
    await client.post("/fault/enable?type=latency&latency_ms=400")
    started = time.perf_counter()
    slow = [asyncio.ensure_future(client.get("/api/catalog")) for _ in range(30)]
    await asyncio.sleep(0.05)
    # Control traffic answers at once while 30 slow requests are in progress.
    health_started = time.perf_counter()
    assert (await client.get("/healthz")).status == 200
    assert time.perf_counter() - health_started < 0.2
    responses = await asyncio.gather(*slow)
    elapsed = time.perf_counter() - started
    assert all(response.status == 200 for response in responses)
    assert elapsed >= 0.39
    # Served one after another they would need 12 s; together they take one latency.
    assert elapsed < 1.5


async def test_error_rate_over_a_thousand_requests(client: TestClient) -> None:
    await client.post("/fault/enable?type=5xx&error_rate=30")
    statuses: list[int] = []
    for _ in range(20):
        batch = await asyncio.gather(*(client.get("/api/catalog") for _ in range(50)))
        statuses.extend(response.status for response in batch)
    failed = statuses.count(500)
    assert statuses.count(200) + failed == 1000
    assert 240 <= failed <= 360


# --- baked-in faults -----------------------------------------------------------------------------------


async def test_baked_in_error_rate_from_env(aiohttp_client: ClientFactory) -> None:
    config = dataclasses.replace(
        ShopConfig.from_env({"K_SERVICE": "shop", "K_REVISION": "shop-bad", "DEMO_ERROR_RATE": "100"}),
        service_time_ms=0,
        cold_start_ms=0,
    )
    client = await aiohttp_client(
        create_app(config, logger=StructuredLogger(service="shop", revision="shop-bad", stream=io.StringIO()))
    )
    responses = [await client.get("/api/catalog") for _ in range(5)]
    assert {response.status for response in responses} == {500}
    assert {response.headers["X-Revision"] for response in responses} == {"shop-bad"}

    status = await (await client.get("/fault/status")).json()
    assert status["deploy"] == {
        "error_rate": 100.0,
        "latency_ms": 0.0,
        "latency_rate": 100.0,
        "warmup_errors_s": 0.0,
    }
    # Disabling runtime faults does not cure a bad deploy.
    await client.post("/fault/disable")
    assert (await client.get("/api/catalog")).status == 500


async def test_baked_in_error_rate_statistics(aiohttp_client: ClientFactory) -> None:
    client = await shop_client(aiohttp_client, error_rate=50.0)
    statuses: list[int] = []
    for _ in range(8):
        batch = await asyncio.gather(*(client.get("/api/catalog") for _ in range(50)))
        statuses.extend(response.status for response in batch)
    assert 150 <= statuses.count(500) <= 250


async def test_baked_in_latency_and_its_rate(aiohttp_client: ClientFactory) -> None:
    slow_client = await shop_client(aiohttp_client, latency_ms=200.0, latency_rate=100.0)
    started = time.perf_counter()
    assert (await slow_client.get("/api/catalog")).status == 200
    assert time.perf_counter() - started >= 0.19

    never_client = await shop_client(aiohttp_client, latency_ms=5000.0, latency_rate=0.0)
    started = time.perf_counter()
    assert (await never_client.get("/api/catalog")).status == 200
    assert time.perf_counter() - started < 1.0


def test_a_warm_up_fault_fails_every_request_for_its_first_seconds_only() -> None:
    clock = FakeClock()
    injector = FaultInjector(
        deploy=DeployFaults(warmup_errors_s=10), rng=random.Random(5), clock=clock, wall_clock=clock
    )
    outcomes = [injector.decide() for _ in range(50)]
    assert all(isinstance(outcome.error, WarmingUp) for outcome in outcomes)
    assert outcomes[0].error is not None and outcomes[0].error.message.startswith("503 Service Unavailable")
    clock.now += 9.9
    assert isinstance(injector.decide().error, WarmingUp)
    clock.now += 0.1
    assert all(injector.decide().error is None for _ in range(50))
    assert injector.status()["deploy"] == {
        "error_rate": 0.0,
        "latency_ms": 0.0,
        "latency_rate": 100.0,
        "warmup_errors_s": 10,
    }


def test_the_warm_up_counts_from_the_first_request_not_from_the_start() -> None:
    clock = FakeClock()
    injector = FaultInjector(
        deploy=DeployFaults(warmup_errors_s=10), rng=random.Random(5), clock=clock, wall_clock=clock
    )
    clock.now += 120  # started, became ready, and waited for traffic
    assert isinstance(injector.decide().error, WarmingUp)
    clock.now += 9.9
    assert isinstance(injector.decide().error, WarmingUp)
    clock.now += 0.1
    assert injector.decide().error is None
