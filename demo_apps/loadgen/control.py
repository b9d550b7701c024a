"""The load generator's control API, on 127.0.0.1 beside the load it makes.

    GET  /stats         observations since start or the last reset (see stats.py)
    POST /stats/reset   start counting afresh; answers the (empty) new stats
    PUT  /rate          JSON {"rate": N}: change the request rate now (N = 0 pauses)
    GET  /healthz

It is one small module rather than the app/routes/middlewares/keys split of the shop: four routes,
one piece of state, and errors that only PUT /rate can raise.
"""

from __future__ import annotations

import json

from aiohttp import web

from demo_apps.loadgen.generator import InvalidLoadSetting, LoadGenerator

GENERATOR = web.AppKey("generator", LoadGenerator)


def create_control_app(generator: LoadGenerator) -> web.Application:
    app = web.Application()
    app[GENERATOR] = generator
    app.router.add_get("/stats", show_stats, name="stats")
    app.router.add_post("/stats/reset", reset_stats, name="stats_reset")
    app.router.add_put("/rate", change_rate, name="rate")
    app.router.add_get("/healthz", healthz, name="healthz")
    return app


async def show_stats(request: web.Request) -> web.Response:
    return web.json_response(await request.app[GENERATOR].stats())


async def reset_stats(request: web.Request) -> web.Response:
    return web.json_response(await request.app[GENERATOR].reset_stats())


async def change_rate(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _bad_request("body", 'expected a JSON object {"rate": N}')
    if not isinstance(body, dict) or set(body) != {"rate"}:
        return _bad_request("body", 'expected a JSON object {"rate": N}')
    generator = request.app[GENERATOR]
    previous = generator.rate
    try:
        rate = await generator.set_rate(body["rate"])
    except InvalidLoadSetting as error:
        return _bad_request(error.parameter, error.message)
    return web.json_response({"rate": rate, "previous_rate": previous})


async def healthz(request: web.Request) -> web.Response:
    generator = request.app[GENERATOR]
    return web.json_response({"status": "ok", "running": generator.running, "rate": generator.rate})


def _bad_request(parameter: str, message: str) -> web.Response:
    return web.json_response({"error": message, "parameter": parameter}, status=400)
