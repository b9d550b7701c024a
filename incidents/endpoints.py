"""The endpoints every Remediator service exposes: `/healthz`, `/readyz` (the store answers) and
`/metrics` (its own registry), shared by the analyzer and the standalone actuator."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from incidents.db import Store
from incidents.exceptions import StoreUnavailable


def liveness() -> web.Response:
    return web.json_response({"status": "ok"})


async def readiness(store: Store) -> web.Response:
    try:
        await store.ping()
    except StoreUnavailable as exc:
        return web.json_response({"status": "unavailable", "store": exc.message}, status=503)
    return web.json_response({"status": "ready", "store": "ok"})


def metrics_exposition(registry: CollectorRegistry) -> web.Response:
    response = web.Response(body=generate_latest(registry))
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response
