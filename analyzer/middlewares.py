"""Error responses and request logging for the analyzer's HTTP API."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from analyzer import keys
from analyzer.exceptions import (
    AnalyzerError,
    Conflict,
    DependencyUnavailable,
    FeatureDisabled,
    Forbidden,
    PayloadInvalid,
    PayloadTooLarge,
    RateLimited,
    ResourceNotFound,
    Unauthorized,
    UnsupportedMediaType,
)
from incidents import IllegalTransition, IncidentNotFound, RemediatorError, StoreUnavailable
from incidents.runtime import Secret

log = logging.getLogger("analyzer.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Our exceptions and the HTTP status each becomes; the most specific class in an error's MRO wins.
ERROR_STATUS: dict[type[Exception], int] = {
    PayloadInvalid: 400,
    Unauthorized: 401,
    FeatureDisabled: 403,
    Forbidden: 403,
    ResourceNotFound: 404,
    IncidentNotFound: 404,
    Conflict: 409,
    IllegalTransition: 409,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    RateLimited: 429,
    StoreUnavailable: 503,
    DependencyUnavailable: 503,
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
    rejected = getattr(error, "rejected", None)
    if rejected is not None:
        body["rejected"] = rejected
    return body


def error_headers(error: RemediatorError, status: int) -> dict[str, str] | None:
    if status == 401:
        return {"WWW-Authenticate": getattr(error, "challenge", "Bearer")}
    if isinstance(error, RateLimited):
        return {"Retry-After": str(error.retry_after)}
    return None


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
        # A 405 must say which methods the resource has (RFC 9110, 15.5.6); aiohttp put them in Allow.
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.json_response(
            {"error": exc.reason, "status": exc.status}, status=exc.status, headers=headers
        )
    except RemediatorError as exc:
        status = status_for(exc)
        if status >= 500:
            log.error("request failed: %s", exc.message, extra={"path": request.path, **exc.context()})
        return web.json_response(error_body(exc, status), status=status, headers=error_headers(exc, status))
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
        # Reads are routine (dashboards and scripts poll the incidents API): DEBUG, so that INFO
        # holds what changed something. A read the server failed stays at INFO.
        read = request.method in ("GET", "HEAD", "OPTIONS") and response.status < 500
        log.log(
            logging.DEBUG if read else logging.INFO,
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


def bearer_credentials(request: web.Request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return (credentials.strip() or None) if scheme.lower() == "bearer" else None


def holds_token(request: web.Request, *tokens: Secret | None) -> bool:
    """Whether the request's bearer credentials match one of the configured `tokens`."""
    credentials = bearer_credentials(request)
    return credentials is not None and any(t is not None and t.matches(credentials) for t in tokens)


def read_access_middleware(
    *, read_token: Secret | None, api_token: Secret | None, prefixes: tuple[str, ...]
) -> Middleware:
    """With REMEDIATOR_READ_TOKEN set, reads (GET, HEAD) under `prefixes` need it or the API token.

    Answers the 401 itself, so it also guards an application without `error_middleware`.
    """

    @web.middleware
    async def read_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            read_token is not None
            and request.method in ("GET", "HEAD")
            and request.path.startswith(prefixes)
            and not holds_token(request, read_token, api_token)
        ):
            return web.json_response(
                {
                    "error": "reading this needs a bearer token: REMEDIATOR_READ_TOKEN or the API token",
                    "status": 401,
                },
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await handler(request)

    return read_access
