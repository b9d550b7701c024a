"""Error responses and request logging for the analyzer's HTTP API."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from analyzer import keys
from analyzer.exceptions import (
    AnalyzerError,
    Conflict,
    FeatureDisabled,
    PayloadInvalid,
    PayloadTooLarge,
    ResourceNotFound,
    Unauthorized,
)
from incidents import IllegalTransition, IncidentNotFound, RemediatorError, StoreUnavailable

log = logging.getLogger("analyzer.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Our exceptions and the HTTP status each becomes; the most specific class in an error's MRO wins.
ERROR_STATUS: dict[type[Exception], int] = {
    PayloadInvalid: 400,
    Unauthorized: 401,
    FeatureDisabled: 403,
    ResourceNotFound: 404,
    IncidentNotFound: 404,
    Conflict: 409,
    IllegalTransition: 409,
    PayloadTooLarge: 413,
    StoreUnavailable: 503,
    AnalyzerError: 500,
}


def status_for(error: Exception) -> int:
    for cls in type(error).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


def error_body(error: RemediatorError, status: int) -> dict[str, object]:
    body: dict[str, object] = {"error": error.message, "status": status, **error.context()}
    field = getattr(error, "field", None)
    if field:
        body["field"] = field
    return body


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[keys.CONFIG].max_body_bytes
        return web.json_response(
            {"error": f"request body larger than the {limit}-byte limit", "status": 413}, status=413
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason, "status": exc.status}, status=exc.status)
    except RemediatorError as exc:
        status = status_for(exc)
        if status >= 500:
            log.error("request failed: %s", exc.message, extra={"path": request.path, **exc.context()})
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return web.json_response(error_body(exc, status), status=status, headers=headers)
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return web.json_response({"error": "internal server error", "status": 500}, status=500)


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex[:16]
    started = time.perf_counter()
    response = await handler(request)
    response.headers["X-Request-Id"] = request_id
    if request.path not in ("/healthz", "/readyz", "/metrics"):
        log.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status,
            extra={
                "request_id": request_id,
                "status": response.status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
    return response
