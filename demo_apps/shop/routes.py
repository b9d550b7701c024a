"""The shop's HTTP routes: the shop itself, health and metrics, fault injection, emulator scaling."""

from __future__ import annotations

import json
import uuid

from aiohttp import web

from demo_apps.shop.capacity import parse_scaling_body
from demo_apps.shop.catalog import CATALOG, find_item, parse_line, parse_lines, total_cents
from demo_apps.shop.exceptions import BadRequest
from demo_apps.shop.faults import parse_fault_query
from demo_apps.shop.keys import CAPACITY, CARTS, CONFIG, FAULTS, LOGGER, TELEMETRY
from demo_apps.shop.telemetry import PROMETHEUS_CONTENT_TYPE

SHOP_ROUTES = (
    "GET /",
    "GET /api/catalog",
    "GET /api/catalog/{item_id}",
    "POST /api/cart",
    "POST /api/checkout",
)


def setup_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/", index, name="index")
    router.add_get("/api/catalog", list_catalog, name="catalog")
    router.add_get("/api/catalog/{item_id}", show_item, name="catalog_item")
    router.add_post("/api/cart", add_to_cart, name="cart")
    router.add_post("/api/checkout", checkout, name="checkout")

    router.add_get("/healthz", healthz, name="healthz")
    router.add_get("/metrics", metrics, name="metrics")

    router.add_post("/fault/enable", enable_fault, name="fault_enable")
    router.add_post("/fault/disable", disable_fault, name="fault_disable")
    router.add_get("/fault/status", fault_status, name="fault_status")

    router.add_get("/_emulator/scaling", show_scaling, name="scaling")
    router.add_get("/_emulator/scrapes", show_scrapes, name="scrapes")
    router.add_put("/_emulator/scaling", change_scaling, name="scaling_change")


async def _json_body(request: web.Request) -> object:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("body", "request body is not valid JSON") from None


async def _json_object(request: web.Request, expected: str) -> dict[str, object]:
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("body", f"expected a JSON object with {expected}")
    return body


async def index(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    return web.json_response(
        {
            "service": config.service,
            "revision": config.revision,
            "configuration": config.configuration,
            "shop": "demo coffee gear",
            "routes": SHOP_ROUTES,
        }
    )


async def list_catalog(request: web.Request) -> web.Response:
    return web.json_response({"items": [item.as_json() for item in CATALOG], "count": len(CATALOG)})


async def show_item(request: web.Request) -> web.Response:
    return web.json_response(find_item(request.match_info["item_id"]).as_json())


async def add_to_cart(request: web.Request) -> web.Response:
    """Body `{"item_id", "quantity", "cart_id"?}`: 201 with a new cart, 200 with an existing one."""
    body = await _json_object(request, "item_id and quantity")
    line = parse_line(body)
    existing_cart = body.get("cart_id")
    if existing_cart is not None and not isinstance(existing_cart, str):
        raise BadRequest("cart_id", "cart_id must be a string")
    cart_id, lines = request.app[CARTS].add(line, cart_id=existing_cart)
    return web.json_response(
        {
            "cart_id": cart_id,
            "items": [entry.as_json() for entry in lines],
            "total_cents": total_cents(lines),
        },
        status=201 if existing_cart is None else 200,
    )


async def checkout(request: web.Request) -> web.Response:
    """Body `{"cart_id": ...}` or `{"items": [{"item_id", "quantity"}, ...]}`: 201 with the order."""
    body = await _json_object(request, "cart_id or items")
    if ("cart_id" in body) == ("items" in body):
        raise BadRequest("body", "give exactly one of cart_id or items")
    if "cart_id" in body:
        cart_id = body["cart_id"]
        if not isinstance(cart_id, str):
            raise BadRequest("cart_id", "cart_id must be a string")
        lines = request.app[CARTS].pop(cart_id)
    else:
        lines = parse_lines(body["items"])
    return web.json_response(
        {
            "order_id": uuid.uuid4().hex,
            "status": "confirmed",
            "items": [line.as_json() for line in lines],
            "total_cents": total_cents(lines),
        },
        status=201,
    )


async def healthz(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    return web.json_response({"status": "ok", "service": config.service, "revision": config.revision})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[TELEMETRY].exposition()
    return web.Response(body=body, headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})


def _fault_status(request: web.Request) -> dict[str, object]:
    return {"revision": request.app[CONFIG].revision, **request.app[FAULTS].status()}


async def enable_fault(request: web.Request) -> web.Response:
    spec = parse_fault_query(request.query.items())
    request.app[FAULTS].enable(spec)
    duration = "until disabled" if spec.duration_s is None else f"for {spec.duration_s:g} s"
    request.app[LOGGER].warning(
        f"runtime fault enabled: type={spec.type.value} error_rate={spec.error_rate:g}% "
        f"latency_ms={spec.latency_ms:g} {duration}"
    )
    return web.json_response(_fault_status(request))


async def disable_fault(request: web.Request) -> web.Response:
    previous = request.app[FAULTS].disable()
    if previous is not None:
        request.app[LOGGER].info(f"runtime fault disabled: type={previous.spec.type.value}")
    return web.json_response({"disabled": previous is not None, **_fault_status(request)})


async def fault_status(request: web.Request) -> web.Response:
    return web.json_response(_fault_status(request))


async def show_scrapes(request: web.Request) -> web.Response:
    """How many times /metrics was read: the emulator routes a new revision once it was scraped."""
    return web.json_response({"scrapes": request.app[TELEMETRY].scrapes})


async def show_scaling(request: web.Request) -> web.Response:
    return web.json_response(request.app[CAPACITY].snapshot().as_json())


async def change_scaling(request: web.Request) -> web.Response:
    capacity = request.app[CAPACITY]
    bounds = parse_scaling_body(await _json_body(request), capacity.bounds)
    snapshot = capacity.set_bounds(bounds)
    request.app[LOGGER].info(
        f"scaling changed: min_instances={bounds.min_instances} max_instances={bounds.max_instances} "
        f"concurrency={bounds.concurrency}"
    )
    return web.json_response(snapshot.as_json())
