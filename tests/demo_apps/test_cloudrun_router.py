"""The per-service router, in front of two small in-process upstreams standing in for revisions."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from demo_apps.cloudrun.router import Route, ServiceRouter
from tests.support.real_parts import free_port

BIG = bytes(range(256)) * 8192  # 2 MiB


def upstream_app(name: str) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen = {
            "revision": name,
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,
            "headers": {key.lower(): value for key, value in request.headers.items()},
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_length": len(body),
        }
        return web.json_response(
            seen, headers={"X-Revision": name, "X-Upstream": "yes", "Keep-Alive": "timeout=5"}
        )

    async def status(request: web.Request) -> web.Response:
        return web.Response(
            status=int(request.match_info["code"]), text="teapot", headers={"X-Revision": name}
        )

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"X-Revision": name})
        await response.prepare(request)
        for start in range(0, len(BIG), 100_000):
            await response.write(BIG[start : start + 100_000])
        await response.write_eof()
        return response

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.5)
        return web.Response(text=name, headers={"X-Revision": name})

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/big", big)
    app.router.add_get("/slow", slow)
    return app


@dataclass
class Rig:
    router: ServiceRouter
    ports: dict[str, int]
    http: aiohttp.ClientSession


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    runners = []
    ports = {}
    for name in ("a", "b"):
        runner = web.AppRunner(upstream_app(name), access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        ports[name] = port
    async with aiohttp.ClientSession(
        auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
    ) as proxy_session:
        router = ServiceRouter(service="svc", host="127.0.0.1", session=proxy_session)
        await router.start()
        try:
            async with aiohttp.ClientSession() as http:
                yield Rig(router=router, ports=ports, http=http)
        finally:
            await router.close()
            for runner in runners:
                await runner.cleanup()


def only(rig: Rig, name: str) -> None:
    rig.router.set_routes([Route(revision=name, port=rig.ports[name], percent=100)])


async def test_request_is_forwarded_whole(rig: Rig) -> None:
    only(rig, "a")
    payload = BIG[: 1024 * 1024]
    async with rig.http.post(
        rig.router.uri + "/echo/some/path?y=1&z=%20two&y=3",
        data=payload,
        headers={"X-Custom": "kept", "TE": "trailers", "Connection": "keep-alive, X-Drop", "X-Drop": "gone"},
    ) as response:
        seen = await response.json()
        assert response.status == 200
        assert response.headers["X-Upstream"] == "yes"
        assert "Keep-Alive" not in response.headers
    assert seen["method"] == "POST"
    assert seen["path"] == "/echo/some/path"
    assert seen["raw_path"] == "/echo/some/path?y=1&z=%20two&y=3"
    assert seen["headers"]["x-custom"] == "kept"
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    for hop_by_hop in ("te", "x-drop"):
        assert hop_by_hop not in seen["headers"]
    assert seen["body_length"] == len(payload)
    assert seen["body_sha256"] == hashlib.sha256(payload).hexdigest()

    for method in ("PUT", "PATCH", "DELETE", "GET"):
        async with rig.http.request(method, rig.router.uri + "/echo/x", data=b"small") as response:
            seen = await response.json()
        assert seen["method"] == method
        assert seen["body_length"] == 5


async def test_status_and_large_streamed_responses_pass_through(rig: Rig) -> None:
    only(rig, "b")
    async with rig.http.get(rig.router.uri + "/status/418") as response:
        assert response.status == 418
        assert await response.text() == "teapot"
    async with rig.http.get(rig.router.uri + "/big") as response:
        assert response.status == 200
        assert await response.read() == BIG


async def test_no_route_or_a_dead_upstream_is_a_503(rig: Rig) -> None:
    async with rig.http.get(rig.router.uri + "/echo/") as response:
        assert response.status == 503
        assert (await response.json())["error"]["status"] == "UNAVAILABLE"
    rig.router.set_routes([Route(revision="gone", port=free_port(), percent=100)])
    async with rig.http.get(rig.router.uri + "/echo/") as response:
        assert response.status == 503
        assert "gone" in (await response.json())["error"]["message"]


async def test_a_routed_request_finishes_on_its_revision_when_the_split_changes(rig: Rig) -> None:
    only(rig, "a")
    slow = asyncio.create_task(rig.http.get(rig.router.uri + "/slow"))
    await asyncio.sleep(0.15)
    only(rig, "b")
    async with rig.http.get(rig.router.uri + "/echo/") as response:
        assert response.headers["X-Revision"] == "b"
    async with await slow as response:
        assert response.status == 200
        assert await response.text() == "a"


async def test_split_follows_the_percents(rig: Rig) -> None:
    rig.router.set_routes(
        [
            Route(revision="a", port=rig.ports["a"], percent=20),
            Route(revision="b", port=rig.ports["b"], percent=80),
        ]
    )
    assert rig.router.split() == {"a": 20, "b": 80}
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(500):
        async with rig.http.get(rig.router.uri + "/echo/") as response:
            counts[response.headers["X-Revision"]] += 1
    # Binomial(500, 0.2): standard deviation ~9; 55..145 is five of them.
    assert 55 <= counts["a"] <= 145
    assert counts["a"] + counts["b"] == 500

    rig.router.set_routes(
        [
            Route(revision="a", port=rig.ports["a"], percent=1),
            Route(revision="b", port=rig.ports["b"], percent=2),
        ]
    )
    assert rig.router.split() == {"a": 33, "b": 67}
    rig.router.set_routes([Route(revision="a", port=rig.ports["a"], percent=0)])
    assert rig.router.split() == {}


async def test_many_concurrent_requests_are_all_answered(rig: Rig) -> None:
    rig.router.set_routes(
        [
            Route(revision="a", port=rig.ports["a"], percent=50),
            Route(revision="b", port=rig.ports["b"], percent=50),
        ]
    )

    async def one(index: int) -> int:
        async with rig.http.post(
            rig.router.uri + f"/echo/{index}", data=json.dumps({"i": index})
        ) as response:
            seen = await response.json()
            assert seen["path"] == f"/echo/{index}"
            return response.status

    statuses = await asyncio.gather(*(one(index) for index in range(300)))
    assert statuses == [200] * 300
