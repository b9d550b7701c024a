"""The query API of Google Cloud Managed Service for Prometheus, in front of the local Prometheus.

Managed Prometheus serves the Prometheus HTTP API under
`https://monitoring.googleapis.com/v1/projects/PROJECT/location/global/prometheus/api/v1/...`
(query, query_range, series, labels, ...) and wants an OAuth2 bearer token on every request. The
emulator serves the same paths for its own project, refuses a request without a token it issued
(401, Google's error shape) or for another project (403), and answers the rest by forwarding them to
the local Prometheus that scrapes the emulator's platform metrics.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from demo_apps.cloudrun.exceptions import PermissionDenied, Unauthenticated, Unavailable
from demo_apps.cloudrun.keys import CONFIG_KEY, FORWARD_SESSION_KEY, TOKENS_KEY

PREFIX = "/v1/projects/{project}/location/global/prometheus/api/v1"
ENDPOINTS = ("query", "query_range", "series", "labels")
FORWARD_TIMEOUT_S = 60.0


async def forward(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG_KEY]
    if not request.app[TOKENS_KEY].accepts(request.headers.get("Authorization")):
        raise Unauthenticated(
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
            "cookie or other valid authentication credential."
        )
    project = request.match_info["project"]
    if project != config.project:
        raise PermissionDenied(f"Permission monitoring.timeSeries.list denied on project {project!r}")
    if config.prometheus_url is None:
        raise Unavailable("the emulator was started without --prometheus-url: nothing to query")
    endpoint = request.match_info["endpoint"]
    url = f"{config.prometheus_url.rstrip('/')}/api/v1/{endpoint}"
    session = request.app[FORWARD_SESSION_KEY]
    body = await request.read() if request.method == "POST" else None
    headers = {"Content-Type": request.headers["Content-Type"]} if "Content-Type" in request.headers else {}
    try:
        async with session.request(
            request.method,
            url,
            params=request.query,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
        ) as response:
            payload = await response.read()
            return web.Response(
                status=response.status,
                body=payload,
                content_type=response.content_type or "application/json",
            )
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Unavailable(f"the local Prometheus did not answer: {type(exc).__name__}") from exc


def setup_managed_prometheus(app: web.Application) -> None:
    path = PREFIX + "/{endpoint:" + "|".join(ENDPOINTS) + "}"
    app.router.add_get(path, forward, allow_head=False)
    app.router.add_post(path, forward)
