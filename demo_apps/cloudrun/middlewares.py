"""Middlewares: Google-style JSON errors for everything, and injected Admin API failures."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from demo_apps.cloudrun.exceptions import (
    ApiError,
    Internal,
    InvalidArgument,
    NotFound,
    Unimplemented,
    error_body,
    google_status,
)
from demo_apps.cloudrun.failures import FailureKind
from demo_apps.cloudrun.keys import FAILURES_KEY

logger = logging.getLogger(__name__)

ADMIN_API_PREFIX = "/v2/projects/"

# aiohttp's own HTTP errors (no route, wrong method, body too large) as Google errors.
_HTTP_ERRORS: dict[int, type[ApiError]] = {
    404: NotFound,
    405: Unimplemented,
    413: InvalidArgument,
}


def _json_error(error: ApiError) -> web.Response:
    return web.json_response(error_body(error), status=google_status(error).http_status)


def error_middleware() -> Middleware:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return _json_error(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            cls = _HTTP_ERRORS.get(exc.status, InvalidArgument)
            message = f"{request.method} {request.path}: {exc.reason}"
            return _json_error(cls(message))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("unhandled error", extra={"method": request.method, "path": request.path})
            return _json_error(Internal(f"internal error while serving {request.method} {request.path}"))

    return errors


def failure_middleware() -> Middleware:
    @web.middleware
    async def failures(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(ADMIN_API_PREFIX):
            rule = request.app[FAILURES_KEY].take(request.method, request.path)
            if rule is not None:
                logger.info(
                    "injected failure",
                    extra={"kind": str(rule.kind), "method": request.method, "path": request.path},
                )
                if rule.kind is FailureKind.HANG:
                    await asyncio.sleep(rule.hang_seconds)
                else:
                    raise rule.error()
        return await handler(request)

    return failures
