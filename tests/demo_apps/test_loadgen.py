from __future__ import annotations

import asyncio
import dataclasses
import io
import itertools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from demo_apps.loadgen import (
    InvalidLoadSetting,
    LoadGenerator,
    RequestPlan,
    ResponseTally,
    create_control_app,
    parse_plan,
    percentile,
    shop_plans,
)
from demo_apps.loadgen.__main__ import main as loadgen_main
from demo_apps.loadgen.stats import LATENCY_SAMPLE_LIMIT
from demo_apps.shop import ShopConfig, StructuredLogger, create_app
from tests.support.real_parts import free_port

SHOP_CONFIG = ShopConfig(
    service="shop",
    revision="shop-00010-aaa",
    service_time_ms=5,
    cold_start_ms=0,
    min_instances=1,
    random_seed=1,
)

ServerFactory = Callable[..., Awaitable[TestServer]]
ClientFactory = Callable[..., Awaitable[TestClient]]


async def shop_server(aiohttp_server: ServerFactory, **overrides: Any) -> TestServer:
    config = dataclasses.replace(SHOP_CONFIG, **overrides)
    logger = StructuredLogger(service=config.service, revision=config.revision, stream=io.StringIO())
    return await aiohttp_server(create_app(config, logger=logger))


def base_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


def round_robin_router(upstreams: list[str]) -> web.Application:
    """A stand-in for a Cloud Run service URL whose traffic is split evenly between revisions."""
    session_key = web.AppKey("session", aiohttp.ClientSession)
    turns = itertools.count()

    async def session_context(app: web.Application) -> AsyncIterator[None]:
        app[session_key] = aiohttp.ClientSession()
        yield
        await app[session_key].close()

    async def forward(request: web.Request) -> web.Response:
        upstream = upstreams[next(turns) % len(upstreams)]
        async with request.app[session_key].request(
            request.method,
            upstream + request.path_qs,
            data=await request.read(),
            headers={"Content-Type": request.headers.get("Content-Type", "application/octet-stream")},
        ) as answer:
            return web.Response(
                status=answer.status,
                body=await answer.read(),
                headers={"X-Revision": answer.headers["X-Revision"], "Content-Type": answer.content_type},
            )

    app = web.Application()
    app.cleanup_ctx.append(session_context)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


async def run_for(generator: LoadGenerator, seconds: float) -> dict[str, Any]:
    await generator.start()
    try:
        await asyncio.sleep(seconds)
        return await generator.stats()
    finally:
        await generator.stop()


# --- pure parts ----------------------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(value) for value in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7
    assert percentile([], 50) is None


def test_tally_counts_classes_and_keeps_a_bounded_sample() -> None:
    tally = ResponseTally()
    rng = random.Random(0)
    for status in (200, 201, 404, 429, 500, 503):
        tally.add(status, 0.01, rng)
    summary = tally.as_json(elapsed_s=2.0)
    assert (summary["requests"], summary["errors"], summary["status_429"]) == (6, 2, 1)
    assert summary["status_classes"] == {"2xx": 2, "4xx": 2, "5xx": 2}
    assert summary["rate"] == 3.0
    assert summary["p50_ms"] == 10.0

    for _ in range(LATENCY_SAMPLE_LIMIT + 10):
        tally.add(200, 0.02, rng)
    assert len(tally.latencies_s) == LATENCY_SAMPLE_LIMIT


def test_request_plans() -> None:
    assert parse_plan("/api/catalog") == RequestPlan(method="GET", path="/api/catalog")
    cart = parse_plan("post:/api/cart")
    assert (cart.method, cart.path) == ("POST", "/api/cart")
    assert cart.body is not None and "item_id" in cart.body
    assert parse_plan("DELETE:/things").body is None
    with pytest.raises(InvalidLoadSetting):
        parse_plan("api/catalog")
    paths = {plan.path for plan in shop_plans()}
    assert {"/api/catalog", "/api/cart", "/api/checkout"} <= paths


@pytest.mark.parametrize(
    ("settings", "parameter"),
    [
        ({"target": "ftp://127.0.0.1", "rate": 1}, "target"),
        ({"target": "not a url", "rate": 1}, "target"),
        ({"target": "http://127.0.0.1:1/?x=1", "rate": 1}, "target"),
        ({"target": "http://127.0.0.1:1", "rate": -1}, "rate"),
        ({"target": "http://127.0.0.1:1", "rate": float("nan")}, "rate"),
        ({"target": "http://127.0.0.1:1", "rate": 1, "arrivals": "bursty"}, "arrivals"),
        ({"target": "http://127.0.0.1:1", "rate": 1, "max_in_flight": 0}, "max_in_flight"),
        ({"target": "http://127.0.0.1:1", "rate": 1, "timeout_s": 0}, "timeout_s"),
    ],
)
def test_bad_settings(settings: dict[str, Any], parameter: str) -> None:
    with pytest.raises(InvalidLoadSetting) as raised:
        LoadGenerator(**settings)
    assert raised.value.parameter == parameter


def test_cli_refuses_a_bad_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert loadgen_main(["--target", "ftp://127.0.0.1", "--rate", "5"]) == 2
    assert "target must be an http(s) base URL" in capsys.readouterr().out


# --- against real shops --------------------------------------------------------------------------------


async def test_rate_and_per_revision_counts(aiohttp_server: ServerFactory) -> None:
    healthy = await shop_server(aiohttp_server, revision="shop-00011-ok")
    broken = await shop_server(aiohttp_server, revision="shop-00012-bad", error_rate=100.0)
    router = await aiohttp_server(round_robin_router([base_url(healthy), base_url(broken)]))

    generator = LoadGenerator(target=base_url(router), rate=40, arrivals="uniform", seed=1)
    stats = await run_for(generator, 1.5)

    totals = stats["totals"]
    assert 51 <= totals["requests"] <= 69
    assert 34 <= totals["rate"] <= 46
    assert stats["failures"] == {}
    assert stats["dropped"] == 0
    ok, bad = stats["revisions"]["shop-00011-ok"], stats["revisions"]["shop-00012-bad"]
    assert abs(ok["requests"] - bad["requests"]) <= 1
    assert ok["errors"] == 0
    assert bad["errors"] == bad["requests"]
    assert bad["status_classes"] == {"5xx": bad["requests"]}
    assert totals["errors"] == bad["errors"]
    assert 0 < ok["p50_ms"] <= ok["p95_ms"] <= ok["p99_ms"]
    assert generator.running is False


async def test_poisson_arrivals_keep_the_mean_rate(aiohttp_server: ServerFactory) -> None:
    shop = await shop_server(aiohttp_server)
    stats = await run_for(LoadGenerator(target=base_url(shop), rate=60, seed=7), 1.5)
    # 90 expected; a Poisson count's standard deviation is about 9.5.
    assert 60 <= stats["totals"]["requests"] <= 120
    assert set(stats["revisions"]) == {"shop-00010-aaa"}


async def test_rate_change_and_reset(aiohttp_server: ServerFactory) -> None:
    shop = await shop_server(aiohttp_server)
    generator = LoadGenerator(target=base_url(shop), rate=5, arrivals="uniform")
    await generator.start()
    try:
        await asyncio.sleep(0.3)
        assert await generator.set_rate(80) == 80
        reset = await generator.reset_stats()
        assert reset["totals"]["requests"] == 0
        assert reset["revisions"] == {}
        await asyncio.sleep(0.8)
        stats = await generator.stats()
        assert stats["rate"] == 80
        assert 48 <= stats["totals"]["requests"] <= 76

        await generator.set_rate(0)
        await asyncio.sleep(0.05)
        paused = (await generator.reset_stats())["sent"]
        await asyncio.sleep(0.3)
        assert (await generator.stats())["sent"] == paused == 0
    finally:
        await generator.stop()


async def test_429s_are_counted_apart_from_errors(aiohttp_server: ServerFactory) -> None:
    shop = await shop_server(
        aiohttp_server, max_instances=1, concurrency=1, service_time_ms=100, max_queue_wait_ms=10
    )
    stats = await run_for(LoadGenerator(target=base_url(shop), rate=40, arrivals="uniform"), 0.8)
    totals = stats["totals"]
    assert totals["status_429"] > 0
    assert totals["errors"] == 0
    assert totals["status_classes"]["4xx"] >= totals["status_429"]


async def test_stop_is_clean_with_slow_requests_in_flight(aiohttp_server: ServerFactory) -> None:
    shop = await shop_server(aiohttp_server, latency_ms=5000.0)
    generator = LoadGenerator(target=base_url(shop), rate=30, arrivals="uniform", stop_grace_s=0.2)
    await generator.start()
    await asyncio.sleep(0.3)
    assert (await generator.stats())["in_flight"] > 0
    started = time.perf_counter()
    await generator.stop()
    assert time.perf_counter() - started < 1.0
    stats = await generator.stats()
    assert stats["running"] is False
    assert stats["in_flight"] == 0
    assert stats["totals"]["requests"] == 0
    await generator.stop()


async def test_arrivals_beyond_max_in_flight_are_dropped(aiohttp_server: ServerFactory) -> None:
    shop = await shop_server(aiohttp_server, latency_ms=2000.0)
    generator = LoadGenerator(
        target=base_url(shop), rate=50, arrivals="uniform", max_in_flight=2, stop_grace_s=0.1
    )
    stats = await run_for(generator, 0.4)
    assert stats["in_flight"] == 2
    assert stats["dropped"] >= 10


async def test_unreachable_target_counts_failures() -> None:
    generator = LoadGenerator(target=f"http://127.0.0.1:{free_port()}", rate=40, arrivals="uniform")
    stats = await run_for(generator, 0.3)
    assert stats["failures"]["connection"] >= 5
    assert stats["totals"]["requests"] == 0


# --- control API ---------------------------------------------------------------------------------------


async def test_control_api(aiohttp_server: ServerFactory, aiohttp_client: ClientFactory) -> None:
    shop = await shop_server(aiohttp_server)
    generator = LoadGenerator(target=base_url(shop), rate=50, arrivals="uniform")
    control = await aiohttp_client(create_control_app(generator))
    await generator.start()
    try:
        health = await (await control.get("/healthz")).json()
        assert health == {"status": "ok", "running": True, "rate": 50.0}

        await asyncio.sleep(0.3)
        stats = await (await control.get("/stats")).json()
        assert stats["totals"]["requests"] > 0
        assert "shop-00010-aaa" in stats["revisions"]
        assert {"requests", "errors", "status_429", "p50_ms", "p95_ms", "p99_ms", "rate"} <= set(
            stats["revisions"]["shop-00010-aaa"]
        )

        changed = await control.put("/rate", json={"rate": 120})
        assert changed.status == 200
        assert await changed.json() == {"rate": 120.0, "previous_rate": 50.0}
        assert generator.rate == 120

        reset = await (await control.post("/stats/reset")).json()
        assert reset["totals"]["requests"] == 0
        assert reset["rate"] == 120
    finally:
        await generator.stop()


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({"rate": -3}, "rate"),
        ({"rate": "fast"}, "rate"),
        ({"rate": True}, "rate"),
        ({"rate": 1e9}, "rate"),
        ({}, "body"),
        ({"rate": 5, "burst": 2}, "body"),
        ([5], "body"),
    ],
)
async def test_control_api_rejects_bad_rates(
    aiohttp_client: ClientFactory, body: object, parameter: str
) -> None:
    generator = LoadGenerator(target="http://127.0.0.1:9", rate=7)
    control = await aiohttp_client(create_control_app(generator))
    response = await control.put("/rate", json=body)
    assert response.status == 400
    assert (await response.json())["parameter"] == parameter
    assert generator.rate == 7
