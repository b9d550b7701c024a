"""The shop's middlewares, outermost first.

    request_context_middleware   X-Revision on every answer; request metrics and one log line per
                                 counted request
    error_middleware             every exception becomes a JSON answer through ERROR_STATUS
    simulation_middleware        counted requests take a capacity slot, spend the service time and
                                 any injected latency there, then get the injected error if any

Counted requests are the shop's own routes (and unknown paths, which real traffic also sends);
`/metrics`, `/healthz`, `/fault/*` and `/_emulator/*` are control traffic: never counted, never slowed,
never failed by a fault.
"""

from __future__ import annotations

import asyncio
import re
import time
import traceback
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from demo_apps.shop.config import ShopConfig
from demo_apps.shop.exceptions import (
    BadRequest,
    CapacityRejected,
    InjectedFault,
    InjectedServerError,
    InjectedTimeout,
    InstanceStartTimeout,
    NoAvailableInstance,
    NotFound,
    ShopError,
    WarmingUp,
)
from demo_apps.shop.keys import CAPACITY, FAULTS, LOG_MESSAGE, LOGGER, TELEMETRY

REVISION_HEADER = "X-Revision"
UNCOUNTED_PATHS = frozenset({"/metrics", "/healthz"})
UNCOUNTED_PREFIXES = ("/fault/", "/_emulator/")

# Looked up along the exception's MRO, so a subclass answers like its nearest listed parent.
ERROR_STATUS: dict[type[ShopError], int] = {
    BadRequest: 400,
    NotFound: 404,
    NoAvailableInstance: 429,
    InjectedServerError: 500,
    InstanceStartTimeout: 503,
    WarmingUp: 503,
    InjectedTimeout: 504,
}

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def is_counted(path: str) -> bool:
    """Whether a request to `path` is shop traffic (metrics, logs, capacity, faults) or control traffic."""
    return path not in UNCOUNTED_PATHS and not path.startswith(UNCOUNTED_PREFIXES)


def status_for(error: ShopError) -> int:
    for cls in type(error).__mro__:
        status = ERROR_STATUS.get(cls)
        if status is not None:
            return status
    return 500


def route_template(request: web.Request) -> str:
    """The matched route's template (`/api/catalog/{item_id}`); empty for unknown paths."""
    resource = request.match_info.route.resource
    return "" if resource is None else resource.canonical


def trace_id_of(request: web.Request) -> str:
    """The caller's trace id (Cloud Run's X-Cloud-Trace-Context or W3C traceparent), else a new one."""
    cloud_trace = request.headers.get("X-Cloud-Trace-Context", "").split("/", 1)[0].lower()
    if _TRACE_ID.match(cloud_trace):
        return cloud_trace
    parts = request.headers.get("traceparent", "").split("-")
    if len(parts) == 4 and _TRACE_ID.match(parts[1].lower()):
        return parts[1].lower()
    return uuid.uuid4().hex


def request_context_middleware(config: ShopConfig) -> Middleware:
    revision = config.revision

    @web.middleware
    async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_counted(request.path):
            response = await handler(request)
            response.headers[REVISION_HEADER] = revision
            return response

        telemetry = request.app[TELEMETRY]
        method = request.method
        started = time.perf_counter()
        telemetry.request_started(method)
        try:
            response = await handler(request)
        finally:
            telemetry.request_finished(method)
        duration_s = time.perf_counter() - started
        response.headers[REVISION_HEADER] = revision
        telemetry.record_request(
            method=method, route=route_template(request), status=response.status, duration_s=duration_s
        )
        request.app[LOGGER].request(
            message=response.get(LOG_MESSAGE) or f"{method} {request.path} {response.status}",
            method=method,
            path=request.path,
            status=response.status,
            latency_s=duration_s,
            trace_id=trace_id_of(request),
            user_agent=request.headers.get("User-Agent"),
            remote_ip=request.remote,
            response_size=response.content_length,
        )
        return response

    return request_context


def error_middleware() -> Middleware:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ShopError as error:
            status = status_for(error)
            if isinstance(error, InjectedFault | CapacityRejected):
                # These messages already read like a status line ("500 Internal Server Error - ...").
                log_message = error.message
            else:
                log_message = f"{request.method} {request.path} {status} - {error.message}"
            return _json_error(status, error.payload(), log_message)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            payload: dict[str, object] = {"error": error.reason}
            if error.status == 404:
                payload["path"] = request.path
            return _json_error(
                error.status, payload, f"{request.method} {request.path} {error.status} - {error.reason}"
            )
        except Exception as error:
            message = f"{request.method} {request.path} 500 - unhandled {type(error).__name__}: {error}"
            request.app[LOGGER].error(message, stack_trace=traceback.format_exc())
            return _json_error(500, {"error": "internal error"}, message)

    return errors


def _json_error(status: int, payload: dict[str, object], log_message: str) -> web.Response:
    response = web.json_response(payload, status=status)
    response[LOG_MESSAGE] = log_message
    return response


def simulation_middleware() -> Middleware:
    @web.middleware
    async def simulation(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_counted(request.path):
            return await handler(request)
        capacity = request.app[CAPACITY]
        async with capacity.slot():
            outcome = request.app[FAULTS].decide()
            await asyncio.sleep(capacity.settings.service_time_s + outcome.delay_s)
            if outcome.error is not None:
                raise outcome.error
            return await handler(request)

    return simulation
