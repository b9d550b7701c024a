"""`python -m demo_apps.loadgen` as the local stack runs it, against a shop in this process."""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from demo_apps.shop import ShopConfig, StructuredLogger, create_app

REPO_ROOT = Path(__file__).resolve().parents[2]
SHOP_CONFIG = ShopConfig(
    service="shop",
    revision="shop-00020-cli",
    service_time_ms=2,
    cold_start_ms=0,
    min_instances=1,
    random_seed=2,
)

ServerFactory = Callable[..., Awaitable[TestServer]]


async def read_json_line(stream: asyncio.StreamReader) -> dict[str, Any]:
    line = await asyncio.wait_for(stream.readline(), timeout=15)
    assert line, "the load generator closed its output"
    return json.loads(line)


async def test_cli_drives_a_shop_and_obeys_its_control_api(aiohttp_server: ServerFactory) -> None:
    logger = StructuredLogger(service="shop", revision=SHOP_CONFIG.revision, stream=io.StringIO())
    shop = await aiohttp_server(create_app(SHOP_CONFIG, logger=logger))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "demo_apps.loadgen",
        "--target",
        str(shop.make_url("")),
        "--rate",
        "40",
        "--arrivals",
        "uniform",
        "--control-port",
        "0",
        "--report-interval",
        "0",
        "--paths",
        "/api/catalog",
        "POST:/api/cart",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        started = await read_json_line(process.stdout)
        assert started["message"] == "load generator running"
        control = started["control"]
        assert control.startswith("http://127.0.0.1:")

        async with aiohttp.ClientSession() as session:
            async with session.get(f"{control}/healthz") as response:
                assert (await response.json())["running"] is True
            await asyncio.sleep(0.8)
            async with session.get(f"{control}/stats") as response:
                stats = await response.json()
            revision = stats["revisions"]["shop-00020-cli"]
            assert revision["requests"] >= 15
            assert set(revision["status_classes"]) == {"2xx"}
            # The shop saw only the two routes asked for.
            async with session.get(shop.make_url("/metrics")) as response:
                exposition = await response.text()
            # The routes that served requests (the others' series are there too, at zero).
            served = re.findall(r'_count\{[^}]*http_route="([^"]*)"[^}]*\} ([0-9.e+]+)', exposition)
            assert {route for route, value in served if float(value) > 0} == {"/api/catalog", "/api/cart"}

            async with session.put(f"{control}/rate", json={"rate": 5}) as response:
                assert (await response.json())["rate"] == 5
            async with session.post(f"{control}/stats/reset") as response:
                assert (await response.json())["totals"]["requests"] == 0
            async with session.put(f"{control}/rate", json={"rate": "x"}) as response:
                assert response.status == 400

        process.send_signal(signal.SIGTERM)
        stopped = await read_json_line(process.stdout)
        assert stopped["message"] == "load generator stopped"
        assert stopped["stats"]["rate"] == 5
        assert await asyncio.wait_for(process.wait(), timeout=5) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
