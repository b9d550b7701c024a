"""The emulator's aiohttp application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from demo_apps.cloudrun.config import EmulatorConfig
from demo_apps.cloudrun.control import ControlPlane
from demo_apps.cloudrun.failures import FailurePlan
from demo_apps.cloudrun.keys import (
    CONFIG_KEY,
    CONTROL_PLANE_KEY,
    CONTROL_SESSION_KEY,
    FAILURES_KEY,
    FORWARD_SESSION_KEY,
    LOGS_KEY,
    PLATFORM_METRICS_KEY,
    PROXY_SESSION_KEY,
    TOKENS_KEY,
)
from demo_apps.cloudrun.logstore import LogStore
from demo_apps.cloudrun.managed_prometheus import setup_managed_prometheus
from demo_apps.cloudrun.middlewares import cross_site_middleware, error_middleware, failure_middleware
from demo_apps.cloudrun.oauth import TokenIssuer
from demo_apps.cloudrun.platform_metrics import PlatformMetrics
from demo_apps.cloudrun.routes import MAX_ADMIN_BODY, setup_routes

logger = logging.getLogger(__name__)

# Requests to revisions may take as long as Cloud Run's request timeout; the router sets it per call.
PROXY_KEEPALIVE_S = 30.0


async def _proxy_session(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=PROXY_KEEPALIVE_S)
    session = aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        # Forward only what the caller sent: no default Accept, Accept-Encoding or User-Agent.
        skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0),
    )
    app[PROXY_SESSION_KEY] = session
    yield
    await session.close()


async def _control_session(app: web.Application) -> AsyncIterator[None]:
    session = aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=10.0),
    )
    app[CONTROL_SESSION_KEY] = session
    yield
    await session.close()


async def _control_plane(app: web.Application) -> AsyncIterator[None]:
    control = ControlPlane(
        config=app[CONFIG_KEY],
        logs=app[LOGS_KEY],
        proxy_session=app[PROXY_SESSION_KEY],
        control_session=app[CONTROL_SESSION_KEY],
        platform=app[PLATFORM_METRICS_KEY],
    )
    app[CONTROL_PLANE_KEY] = control
    yield
    # Every revision process and router stops before the sessions they use close.
    await control.close()


async def _forward_session(app: web.Application) -> AsyncIterator[None]:
    session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    app[FORWARD_SESSION_KEY] = session
    yield
    await session.close()


async def _platform_metrics_loops(app: web.Application) -> AsyncIterator[None]:
    """Close a sampling period at every period boundary, and read the revisions' instances and
    utilization every probe interval."""
    platform = app[PLATFORM_METRICS_KEY]
    control = app[CONTROL_PLANE_KEY]

    async def sample() -> None:
        while True:
            boundary = platform.next_sample_time(time.time())
            await asyncio.sleep(max(0.0, boundary - time.time()))
            platform.sample(boundary)

    async def probe() -> None:
        while True:
            try:
                await control.probe_capacity()
            except Exception:  # a probe must never stop the metrics
                logger.exception("capacity probe failed")
            await asyncio.sleep(platform.config.probe_interval_s)

    tasks = [
        asyncio.create_task(sample(), name="platform sample"),
        asyncio.create_task(probe(), name="probe"),
    ]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app(config: EmulatorConfig) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware(), cross_site_middleware(), failure_middleware()],
        client_max_size=MAX_ADMIN_BODY,
    )
    app[CONFIG_KEY] = config
    app[LOGS_KEY] = LogStore(per_revision=config.log_entries_per_revision)
    app[FAILURES_KEY] = FailurePlan()
    app[PLATFORM_METRICS_KEY] = PlatformMetrics(
        project=config.project, location=config.region, config=config.platform_metrics
    )
    app[TOKENS_KEY] = TokenIssuer(lifetime_s=config.token_lifetime_s)
    app.cleanup_ctx.extend(
        [_proxy_session, _control_session, _forward_session, _control_plane, _platform_metrics_loops]
    )
    setup_routes(app)
    setup_managed_prometheus(app)
    return app
