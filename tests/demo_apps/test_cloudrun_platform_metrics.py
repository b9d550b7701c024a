"""Cloud Run's platform metrics as the emulator records them (names, labels, units, sampling and
visibility delay), the routers that feed them, the token endpoint, and the Managed-Prometheus-shaped
query API that wants a token."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from demo_apps.cloudrun.app import create_app
from demo_apps.cloudrun.config import EmulatorConfig
from demo_apps.cloudrun.oauth import GOOGLE_TOKEN_AUDIENCE, JWT_BEARER_GRANT
from demo_apps.cloudrun.platform_metrics import (
    CPU_UTILIZATIONS,
    INSTANCE_COUNT,
    REQUEST_COUNT,
    REQUEST_LATENCIES,
    PlatformMetrics,
    PlatformMetricsConfig,
)
from demo_apps.cloudrun.router import Route, ServiceRouter
from tests.support.real_parts import free_port

T = 6000.0  # a sampling boundary (a multiple of 60 s)
RESOURCE = {
    "monitored_resource": "cloud_run_revision",
    "project_id": "proj",
    "location": "europe-west1",
    "service_name": "shop",
    "revision_name": "shop-00002-abc",
    "configuration_name": "shop",
}


def metrics(config: PlatformMetricsConfig | None = None) -> PlatformMetrics:
    return PlatformMetrics(project="proj", location="europe-west1", config=config or PlatformMetricsConfig())


def parsed(text: str) -> dict[str, list[tuple[dict[str, str], float, float | None]]]:
    """Every sample by name: (labels, value, timestamp in seconds), through prometheus_client's parser."""
    samples: dict[str, list[tuple[dict[str, str], float, float | None]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            stamp = float(sample.timestamp) if sample.timestamp is not None else None
            # The parser names counter samples `<name>_total`; Prometheus keeps the exposed name.
            name = family.name if sample.name == f"{family.name}_total" else sample.name
            samples.setdefault(name, []).append((dict(sample.labels), sample.value, stamp))
    return samples


def test_requests_become_readable_only_after_the_delay_stamped_with_their_minute() -> None:
    platform = metrics()
    for _ in range(17):
        platform.record_request("shop", "shop-00002-abc", 200, 40.0)
    for _ in range(3):
        platform.record_request("shop", "shop-00002-abc", 500, 1200.0)
    platform.sample(T)

    # The first minute's zero (the start of the DELTA interval) shows from T - 60 + 120 on.
    assert platform.exposition(now=T + 59) == ""
    zero = parsed(platform.exposition(now=T + 60))
    assert {(labels["response_code"], value, stamp) for labels, value, stamp in zero[REQUEST_COUNT]} == {
        ("200", 0.0, T - 60),
        ("500", 0.0, T - 60),
    }
    # The minute's counts: readable 120 s after its end, stamped with its end.
    counts = parsed(platform.exposition(now=T + 120))[REQUEST_COUNT]
    by_code = {labels["response_code"]: (labels, value, stamp) for labels, value, stamp in counts}
    labels, value, stamp = by_code["500"]
    assert (value, stamp) == (3.0, T)
    assert labels == {**RESOURCE, "response_code": "500", "response_code_class": "5xx"}
    assert by_code["200"][1:] == (17.0, T)
    assert by_code["200"][0]["response_code_class"] == "2xx"


def test_latency_is_a_distribution_in_milliseconds() -> None:
    platform = metrics()
    platform.record_request("shop", "shop-00002-abc", 200, 40.0)
    platform.record_request("shop", "shop-00002-abc", 200, 1200.0)
    platform.sample(T)
    samples = parsed(platform.exposition(now=T + 120))
    buckets = {labels["le"]: value for labels, value, _ in samples[f"{REQUEST_LATENCIES}_bucket"]}
    assert buckets["50"] == 1 and buckets["1000"] == 1 and buckets["1500"] == 2 and buckets["+Inf"] == 2
    assert [value for _, value, _ in samples[f"{REQUEST_LATENCIES}_sum"]] == [1240.0]
    assert [value for _, value, _ in samples[f"{REQUEST_LATENCIES}_count"]] == [2.0]


def test_counts_accumulate_across_minutes_and_stay_in_time_order() -> None:
    platform = metrics()
    platform.record_request("shop", "shop-00002-abc", 200, 10.0)
    platform.sample(T)
    platform.record_request("shop", "shop-00002-abc", 200, 10.0)
    platform.record_request("shop", "shop-00002-abc", 200, 10.0)
    platform.sample(T + 60)
    assert parsed(platform.exposition(now=T + 150))[REQUEST_COUNT][0][1:] == (1.0, T)
    assert parsed(platform.exposition(now=T + 180))[REQUEST_COUNT][0][1:] == (3.0, T + 60)
    # Readable later still: the newest point, never an older one again.
    assert parsed(platform.exposition(now=T + 500))[REQUEST_COUNT][0][1:] == (3.0, T + 60)


def test_instances_by_state_and_cpu_utilization_from_the_probes() -> None:
    platform = metrics()
    # Two probes in the minute: 4 instances of 10 slots, 15 then 5 requests in flight.
    platform.record_capacity(
        "shop", "shop-00002-abc", instances=4, busy=15, concurrency=10, utilization=0.375
    )
    platform.record_capacity("shop", "shop-00002-abc", instances=4, busy=5, concurrency=10, utilization=0.125)
    platform.sample(T)
    samples = parsed(platform.exposition(now=T + 120))
    states = {labels["state"]: (value, stamp) for labels, value, stamp in samples[INSTANCE_COUNT]}
    assert states == {"active": (2.0, T), "idle": (2.0, T)}  # active: 2 then 1, averaged and rounded
    cpu_count = [value for _, value, _ in samples[f"{CPU_UTILIZATIONS}_count"]]
    cpu_sum = [value for _, value, _ in samples[f"{CPU_UTILIZATIONS}_sum"]]
    assert cpu_count == [8.0]  # one observation per instance per probe
    assert cpu_sum == [pytest.approx(4 * 0.375 + 4 * 0.125)]
    assert all(labels["container_name"] for labels, _, _ in samples[INSTANCE_COUNT])


def test_a_delay_shorter_than_the_period_still_shows_the_zero_before_the_first_count() -> None:
    platform = metrics(PlatformMetricsConfig(sample_period_s=10, visibility_delay_s=0))
    platform.record_request("shop", "shop-00002-abc", 200, 10.0)
    platform.sample(T)
    assert parsed(platform.exposition(now=T))[REQUEST_COUNT][0][1:] == (0.0, T - 10)
    assert parsed(platform.exposition(now=T + 5))[REQUEST_COUNT][0][1:] == (1.0, T)


def test_timing_must_make_sense() -> None:
    with pytest.raises(ValueError):
        PlatformMetricsConfig(sample_period_s=0)
    with pytest.raises(ValueError):
        PlatformMetricsConfig(visibility_delay_s=-1)


async def test_the_router_reports_each_request_with_its_revision_status_and_duration() -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))

    upstream = web.Application()
    upstream.router.add_get("/{code}", answer)
    runner = web.AppRunner(upstream, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    seen: list[tuple[str, int, float]] = []
    try:
        async with aiohttp.ClientSession() as session:
            router = ServiceRouter(
                service="shop", host="127.0.0.1", session=session, on_request=lambda *args: seen.append(args)
            )
            await router.start()
            try:
                async with session.get(router.uri + "/200"):
                    pass  # no route yet: never reaches a revision, not counted
                router.set_routes([Route(revision="shop-00002-abc", port=port, percent=100)])
                for code in (200, 503, 404):
                    async with session.get(f"{router.uri}/{code}") as response:
                        assert response.status == code
            finally:
                await router.close()
    finally:
        await runner.cleanup()
    assert [(revision, status) for revision, status, _ in seen] == [
        ("shop-00002-abc", 200),
        ("shop-00002-abc", 503),
        ("shop-00002-abc", 404),
    ]
    assert all(0 <= seconds < 5 for _, _, seconds in seen)


# -- token endpoint and the Managed-Prometheus-shaped API -------------------------------------------


def assertion(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": "remediator@local.iam.gserviceaccount.com",
        "scope": "https://www.googleapis.com/auth/monitoring.read",
        "aud": GOOGLE_TOKEN_AUDIENCE,
        "iat": now,
        "exp": now + 3600,
    } | changes


@pytest.fixture
async def api(
    aiohttp_client: Callable[..., Awaitable[TestClient]], aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> tuple[TestClient, list[tuple[str, str, dict[str, str]]]]:
    forwarded: list[tuple[str, str, dict[str, str]]] = []

    async def prometheus_api(request: web.Request) -> web.Response:
        form = dict(await request.post()) if request.method == "POST" else {}
        forwarded.append(
            (request.method, request.path, {**request.query, **{k: str(v) for k, v in form.items()}})
        )
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": []}})

    prometheus = web.Application()
    prometheus.router.add_route("*", "/api/v1/{endpoint}", prometheus_api)
    server = await aiohttp_server(prometheus)
    client = await aiohttp_client(
        create_app(EmulatorConfig(project="proj", prometheus_url=str(server.make_url("")).rstrip("/")))
    )
    return client, forwarded


async def grant(client: TestClient, **form: str) -> aiohttp.ClientResponse:
    return await client.post("/token", data=form)


async def test_the_token_endpoint_grants_a_service_account_assertion(api: Any) -> None:
    client, _ = api
    response = await grant(client, grant_type=JWT_BEARER_GRANT, assertion=assertion(claims()))
    assert response.status == 200
    body = await response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["access_token"]


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "client_credentials", "assertion": assertion(claims())}, "unsupported_grant_type"),
        ({"grant_type": JWT_BEARER_GRANT, "assertion": "not-a-jwt"}, "invalid_grant"),
        (
            {"grant_type": JWT_BEARER_GRANT, "assertion": assertion(claims(aud="https://elsewhere/token"))},
            "invalid_grant",
        ),
        (
            {"grant_type": JWT_BEARER_GRANT, "assertion": assertion(claims(exp=int(time.time()) - 10))},
            "invalid_grant",
        ),
        (
            {"grant_type": JWT_BEARER_GRANT, "assertion": assertion(claims(scope="openid email"))},
            "invalid_scope",
        ),
        ({"grant_type": JWT_BEARER_GRANT, "assertion": assertion(claims(iss=""))}, "invalid_grant"),
    ],
)
async def test_the_token_endpoint_refuses_bad_grants(api: Any, form: dict[str, str], error: str) -> None:
    client, _ = api
    response = await grant(client, **form)
    assert response.status == 400
    assert (await response.json())["error"] == error


QUERY = "/v1/projects/proj/location/global/prometheus/api/v1/query"


async def test_the_query_api_refuses_requests_without_a_valid_token(api: Any) -> None:
    client, forwarded = api
    for headers in ({}, {"Authorization": "Bearer made-up"}, {"Authorization": "Basic dTpw"}):
        response = await client.get(QUERY, params={"query": "up"}, headers=headers)
        assert response.status == 401
        assert (await response.json())["error"]["status"] == "UNAUTHENTICATED"
    # A revoked token is refused too.
    token = (await (await grant(client, grant_type=JWT_BEARER_GRANT, assertion=assertion(claims()))).json())[
        "access_token"
    ]
    assert (await client.delete("/_emulator/tokens")).status == 200
    response = await client.get(QUERY, params={"query": "up"}, headers={"Authorization": f"Bearer {token}"})
    assert response.status == 401
    assert forwarded == []


async def test_the_query_api_forwards_each_endpoint_with_a_token(api: Any) -> None:
    client, forwarded = api
    token = (await (await grant(client, grant_type=JWT_BEARER_GRANT, assertion=assertion(claims()))).json())[
        "access_token"
    ]
    headers = {"Authorization": f"Bearer {token}"}
    base = "/v1/projects/proj/location/global/prometheus/api/v1"
    assert (
        await client.get(f"{base}/query", params={"query": "up", "time": "1"}, headers=headers)
    ).status == 200
    assert (
        await client.post(
            f"{base}/query_range",
            data={"query": "up", "start": "1", "end": "2", "step": "1"},
            headers=headers,
        )
    ).status == 200
    assert (await client.get(f"{base}/series", params={"match[]": "up"}, headers=headers)).status == 200
    assert (await client.get(f"{base}/labels", headers=headers)).status == 200
    assert [(method, path) for method, path, _ in forwarded] == [
        ("GET", "/api/v1/query"),
        ("POST", "/api/v1/query_range"),
        ("GET", "/api/v1/series"),
        ("GET", "/api/v1/labels"),
    ]
    assert forwarded[0][2] == {"query": "up", "time": "1"}
    assert forwarded[1][2]["step"] == "1"
    # Another project is not this emulator's: 403, nothing forwarded.
    response = await client.get(
        "/v1/projects/other/location/global/prometheus/api/v1/query", params={"query": "up"}, headers=headers
    )
    assert response.status == 403
    assert len(forwarded) == 4


async def test_the_query_api_without_a_prometheus_is_unavailable(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
) -> None:
    client = await aiohttp_client(create_app(EmulatorConfig(project="proj")))
    token = (await (await grant(client, grant_type=JWT_BEARER_GRANT, assertion=assertion(claims()))).json())[
        "access_token"
    ]
    response = await client.get(QUERY, params={"query": "up"}, headers={"Authorization": f"Bearer {token}"})
    assert response.status == 503


async def test_the_emulator_serves_its_platform_metrics(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
) -> None:
    app = create_app(EmulatorConfig(project="proj"))
    client = await aiohttp_client(app)
    from demo_apps.cloudrun.keys import PLATFORM_METRICS_KEY

    platform = app[PLATFORM_METRICS_KEY]
    platform.record_request("shop", "shop-00002-abc", 200, 10.0)
    platform.sample(time.time() - 1000)  # long readable
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = parsed(await response.text())
    assert samples[REQUEST_COUNT][0][1] == 1.0
