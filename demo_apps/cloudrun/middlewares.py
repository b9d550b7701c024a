"""Middlewares: Google-style JSON errors for everything, no cross-site form posts, and injected Admin
API failures."""

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


# Sent by the Google client libraries on every call.
GOOGLE_CLIENT_HEADER = "X-Goog-Api-Client"
# The OAuth2 token endpoint (routes.py): service-account keys of the local stack point here.
TOKEN_PATH = "/token"


def _credentialed_form_endpoint(path: str) -> bool:
    return path == TOKEN_PATH or (path.startswith("/v1/projects/") and "/prometheus/api/v1/" in path)


def cross_site_middleware() -> Middleware:
    """POSTs must declare a JSON body (or come from a Google client library).

    Everything here changes state without credentials, like the real API behind its own auth. A web
    page can make a browser POST a form, multipart or text/plain body (or none) to any address with
    no CORS preflight, but never an application/json one nor one with a custom header; so requiring
    either keeps any page the developer visits from creating services or injecting failures.
    PATCH, PUT and DELETE always need a preflight, which the emulator never grants.

    Two endpoints take form bodies by their protocols and stand on their own credentials, which a
    page cannot forge: the OAuth2 token endpoint (a signed JWT assertion) and the Managed-Prometheus
    query API (a bearer token the token endpoint issued).
    """

    @web.middleware
    async def refuse_cross_site_posts(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            request.method == "POST"
            and request.content_type != "application/json"
            and GOOGLE_CLIENT_HEADER not in request.headers
            and not _credentialed_form_endpoint(request.path)
        ):
            declared = request.headers.get("Content-Type") or "none"
            raise InvalidArgument(
                f"POST {request.path}: the body must be application/json (Content-Type: {declared[:80]}); "
                "the emulator refuses what a web page could post across sites"
            )
        return await handler(request)

    return refuse_cross_site_posts
