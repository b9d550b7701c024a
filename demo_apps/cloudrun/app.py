"""The emulator's aiohttp application."""

from __future__ import annotations

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
    LOGS_KEY,
    PROXY_SESSION_KEY,
)
from demo_apps.cloudrun.logstore import LogStore
from demo_apps.cloudrun.middlewares import error_middleware, failure_middleware
from demo_apps.cloudrun.routes import MAX_ADMIN_BODY, setup_routes

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
    )
    app[CONTROL_PLANE_KEY] = control
    yield
    # Every revision process and router stops before the sessions they use close.
    await control.close()


def create_app(config: EmulatorConfig) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware(), failure_middleware()],
        client_max_size=MAX_ADMIN_BODY,
    )
    app[CONFIG_KEY] = config
    app[LOGS_KEY] = LogStore(per_revision=config.log_entries_per_revision)
    app[FAILURES_KEY] = FailurePlan()
    app.cleanup_ctx.extend([_proxy_session, _control_session, _control_plane])
    setup_routes(app)
    return app
