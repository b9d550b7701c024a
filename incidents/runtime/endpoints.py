"""The endpoints every Remediator service exposes: `/healthz`, `/readyz` (the store answers) and
`/metrics` (its own registry), shared by the analyzer and the standalone actuator."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from incidents.db import Store
from incidents.exceptions import StoreUnavailable


def liveness() -> web.Response:
    return web.json_response({"status": "ok"})


log = logging.getLogger("incidents.endpoints")


async def readiness(store: Store, *, warnings: Sequence[str] = ()) -> web.Response:
    """200 when the store answers. The answer names no host, user or path (probes and whoever can
    reach the port read it); why the store is unreachable goes to the log."""
    extra: dict[str, object] = {"warnings": list(warnings)} if warnings else {}
    try:
        await store.ping()
    except StoreUnavailable as exc:
        log.warning("not ready: %s", exc.message)
        return web.json_response({"status": "unavailable", "store": "unreachable", **extra}, status=503)
    return web.json_response({"status": "ready", "store": "ok", **extra})


def metrics_exposition(registry: CollectorRegistry) -> web.Response:
    response = web.Response(body=generate_latest(registry))
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response
