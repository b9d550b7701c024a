"""HTTP endpoints: the Admin API v2 subset, Cloud Logging `entries:list`, service discovery, failures.

Paths are those the google-cloud-run REST transport calls. Query parameters come camelCase from the
client (`serviceId`, `updateMask`, `validateOnly`, `allowMissing`, `pageSize`, `pageToken`); snake_case
is accepted too. `$alt=json;enum-encoding=int` is accepted, and answers always use integer enums.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web

from demo_apps.cloudrun.codec import parse_service
from demo_apps.cloudrun.control import ControlPlane
from demo_apps.cloudrun.exceptions import InvalidArgument
from demo_apps.cloudrun.keys import (
    CONFIG_KEY,
    CONTROL_PLANE_KEY,
    FAILURES_KEY,
    LOGS_KEY,
    PLATFORM_METRICS_KEY,
    TOKENS_KEY,
)
from demo_apps.cloudrun.logging_api import list_entries
from demo_apps.cloudrun.middlewares import TOKEN_PATH
from demo_apps.cloudrun.oauth import GrantRefused
from demo_apps.cloudrun.platform_metrics import EXPOSITION_CONTENT_TYPE

LOCATION = "/v2/projects/{project}/locations/{location}"
SERVICE = LOCATION + "/services/{service:[^/:]+}"
REVISION = SERVICE + "/revisions/{revision:[^/:]+}"
OPERATION = LOCATION + "/operations/{operation:[^/:]+}"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_WAIT_S = 120.0
MAX_ADMIN_BODY = 4 * 1024 * 1024


def _control(request: web.Request) -> ControlPlane:
    control = request.app[CONTROL_PLANE_KEY]
    info = request.match_info
    if "project" in info:
        control.registry.check_location(info["project"], info["location"])
    return control


def _query(request: web.Request, camel: str, snake: str) -> str | None:
    value = request.query.get(camel)
    return request.query.get(snake) if value is None else value


def _flag(request: web.Request, camel: str, snake: str) -> bool:
    value = (_query(request, camel, snake) or "").lower()
    if value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise InvalidArgument(f"{camel}: expected true or false, got {value!r}")


async def _json_body(request: web.Request) -> Any:
    if not request.body_exists:
        return {}
    raw = await request.read()
    if len(raw) > MAX_ADMIN_BODY:
        raise InvalidArgument("request body too large")
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidArgument(f"Invalid JSON payload received: {exc}") from None


def _page(request: web.Request, items: list[dict[str, Any]], field: str) -> dict[str, Any]:
    try:
        size = int(_query(request, "pageSize", "page_size") or 0) or DEFAULT_PAGE_SIZE
    except ValueError:
        raise InvalidArgument("pageSize: must be a number") from None
    if size < 0:
        raise InvalidArgument("pageSize: must not be negative")
    size = min(size, MAX_PAGE_SIZE)
    token = _query(request, "pageToken", "page_token") or ""
    start = 0
    if token:
        try:
            start = int(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)).decode())
        except ValueError:
            raise InvalidArgument("pageToken: not a token this emulator issued") from None
    answer: dict[str, Any] = {field: items[start : start + size]}
    if start + size < len(items):
        answer["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode().rstrip("=")
    return answer


# -- services ------------------------------------------------------------------------------------


async def create_service(request: web.Request) -> web.Response:
    control = _control(request)
    service_id = _query(request, "serviceId", "service_id") or ""
    body = parse_service(await _json_body(request))
    operation = await control.create_service(
        service_id, body, validate_only=_flag(request, "validateOnly", "validate_only")
    )
    return web.json_response(operation)


async def list_services(request: web.Request) -> web.Response:
    return web.json_response(_page(request, _control(request).list_services(), "services"))


async def get_service(request: web.Request) -> web.Response:
    return web.json_response(_control(request).get_service(request.match_info["service"]))


async def update_service(request: web.Request) -> web.Response:
    control = _control(request)
    body = parse_service(await _json_body(request))
    mask_text = _query(request, "updateMask", "update_mask")
    mask = [path.strip() for path in mask_text.split(",") if path.strip()] if mask_text else None
    operation = await control.update_service(
        request.match_info["service"],
        body,
        mask=mask,
        validate_only=_flag(request, "validateOnly", "validate_only"),
        allow_missing=_flag(request, "allowMissing", "allow_missing"),
    )
    return web.json_response(operation)


async def delete_service(request: web.Request) -> web.Response:
    operation = await _control(request).delete_service(
        request.match_info["service"],
        etag=request.query.get("etag", ""),
        validate_only=_flag(request, "validateOnly", "validate_only"),
    )
    return web.json_response(operation)


# -- revisions -----------------------------------------------------------------------------------


async def list_revisions(request: web.Request) -> web.Response:
    revisions = _control(request).list_revisions(request.match_info["service"])
    return web.json_response(_page(request, revisions, "revisions"))


async def get_revision(request: web.Request) -> web.Response:
    info = request.match_info
    return web.json_response(_control(request).get_revision(info["service"], info["revision"]))


async def delete_revision(request: web.Request) -> web.Response:
    info = request.match_info
    operation = await _control(request).delete_revision(
        info["service"], info["revision"], validate_only=_flag(request, "validateOnly", "validate_only")
    )
    return web.json_response(operation)


# -- operations ----------------------------------------------------------------------------------


def _operation_name(request: web.Request) -> str:
    info = request.match_info
    return f"projects/{info['project']}/locations/{info['location']}/operations/{info['operation']}"


async def get_operation(request: web.Request) -> web.Response:
    control = _control(request)
    return web.json_response(control.operations.get(_operation_name(request)).as_json())


async def list_operations(request: web.Request) -> web.Response:
    operations = [operation.as_json() for operation in _control(request).operations.list()]
    return web.json_response(_page(request, operations, "operations"))


async def delete_operation(request: web.Request) -> web.Response:
    _control(request).operations.delete(_operation_name(request))
    return web.json_response({})


async def wait_operation(request: web.Request) -> web.Response:
    control = _control(request)
    body = await _json_body(request)
    timeout_text = str(body.get("timeout", "") if isinstance(body, dict) else "")
    timeout = MAX_WAIT_S
    if timeout_text:
        try:
            timeout = min(float(timeout_text.removesuffix("s")), MAX_WAIT_S)
        except ValueError:
            raise InvalidArgument(f"timeout: {timeout_text!r} is not a duration like '10s'") from None
    operation = await control.operations.wait(_operation_name(request), timeout)
    return web.json_response(operation.as_json())


# -- logging, discovery, failures, health --------------------------------------------------------


async def entries_list(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise InvalidArgument("entries:list: the body must be a JSON object")
    answer = list_entries(request.app[LOGS_KEY], body, project=request.app[CONFIG_KEY].project)
    return web.json_response(answer)


async def sd_targets(request: web.Request) -> web.Response:
    return web.json_response(request.app[CONTROL_PLANE_KEY].sd_targets())


async def add_failure(request: web.Request) -> web.Response:
    rule = request.app[FAILURES_KEY].add(await _json_body(request))
    return web.json_response(rule.as_json(), status=201)


async def list_failures(request: web.Request) -> web.Response:
    return web.json_response({"pending": [rule.as_json() for rule in request.app[FAILURES_KEY].pending()]})


async def clear_failures(request: web.Request) -> web.Response:
    return web.json_response({"cleared": request.app[FAILURES_KEY].clear()})


async def platform_metrics(request: web.Request) -> web.Response:
    text = request.app[PLATFORM_METRICS_KEY].exposition()
    return web.Response(body=text.encode(), headers={"Content-Type": EXPOSITION_CONTENT_TYPE})


async def token(request: web.Request) -> web.Response:
    """OAuth2 token endpoint (JWT-bearer grant) for service-account JSON files whose token_uri is here."""
    form = {key: str(value) for key, value in (await request.post()).items()}
    token_uri = str(request.url.with_query(None))
    try:
        answer = request.app[TOKENS_KEY].grant(form, token_uri=token_uri)
    except GrantRefused as exc:
        return web.json_response(exc.as_json(), status=400)
    return web.json_response(answer)


async def revoke_tokens(request: web.Request) -> web.Response:
    return web.json_response({"revoked": request.app[TOKENS_KEY].revoke_all()})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def setup_routes(app: web.Application) -> None:
    app.router.add_post(LOCATION + "/services", create_service)
    app.router.add_get(LOCATION + "/services", list_services, allow_head=False)
    app.router.add_get(SERVICE, get_service, allow_head=False)
    app.router.add_patch(SERVICE, update_service)
    app.router.add_delete(SERVICE, delete_service)
    app.router.add_get(SERVICE + "/revisions", list_revisions, allow_head=False)
    app.router.add_get(REVISION, get_revision, allow_head=False)
    app.router.add_delete(REVISION, delete_revision)
    app.router.add_get(LOCATION + "/operations", list_operations, allow_head=False)
    app.router.add_get(OPERATION, get_operation, allow_head=False)
    app.router.add_delete(OPERATION, delete_operation)
    app.router.add_post(OPERATION + ":wait", wait_operation)
    app.router.add_post("/v2/entries:list", entries_list)
    app.router.add_get("/sd/targets", sd_targets, allow_head=False)
    app.router.add_post("/_emulator/failures", add_failure)
    app.router.add_get("/_emulator/failures", list_failures, allow_head=False)
    app.router.add_delete("/_emulator/failures", clear_failures)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", platform_metrics, allow_head=False)
    app.router.add_post(TOKEN_PATH, token)
    app.router.add_delete("/_emulator/tokens", revoke_tokens)
