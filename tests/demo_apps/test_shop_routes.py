from __future__ import annotations

import io
from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from demo_apps.shop import ITEM_IDS, NotFound, ShopConfig, StructuredLogger, create_app
from demo_apps.shop.catalog import CartStore, parse_line

REVISION = "shop-00001-abc"
TEST_CONFIG = ShopConfig(
    service="shop",
    revision=REVISION,
    configuration="shop-config",
    service_time_ms=0,
    cold_start_ms=0,
    min_instances=1,
    random_seed=7,
)

ClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def client(aiohttp_client: ClientFactory) -> TestClient:
    logger = StructuredLogger(service="shop", revision=REVISION, stream=io.StringIO())
    return await aiohttp_client(create_app(TEST_CONFIG, logger=logger))


async def test_index_lists_the_shop_routes(client: TestClient) -> None:
    response = await client.get("/")
    assert response.status == 200
    body = await response.json()
    assert body["service"] == "shop"
    assert body["revision"] == REVISION
    assert body["configuration"] == "shop-config"
    assert "GET /api/catalog/{item_id}" in body["routes"]


async def test_healthz(client: TestClient) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "service": "shop", "revision": REVISION}


async def test_catalog_and_item(client: TestClient) -> None:
    listing = await (await client.get("/api/catalog")).json()
    assert listing["count"] == len(ITEM_IDS)
    assert [item["id"] for item in listing["items"]] == list(ITEM_IDS)

    response = await client.get(f"/api/catalog/{ITEM_IDS[2]}")
    assert response.status == 200
    item = await response.json()
    assert item["id"] == ITEM_IDS[2]
    assert item["price_cents"] > 0


async def test_unknown_item_is_a_json_404(client: TestClient) -> None:
    response = await client.get("/api/catalog/sku-nothing")
    assert response.status == 404
    assert response.headers["X-Revision"] == REVISION
    assert "sku-nothing" in (await response.json())["error"]


async def test_cart_grows_and_checks_out_once(client: TestClient) -> None:
    created = await client.post("/api/cart", json={"item_id": ITEM_IDS[0], "quantity": 2})
    assert created.status == 201
    cart = await created.json()
    cart_id = cart["cart_id"]

    added = await client.post("/api/cart", json={"item_id": ITEM_IDS[0], "quantity": 1, "cart_id": cart_id})
    assert added.status == 200
    again = await added.json()
    assert again["items"][0]["quantity"] == 3
    assert again["total_cents"] == 3 * cart["items"][0]["line_total_cents"] // 2

    order = await client.post("/api/checkout", json={"cart_id": cart_id})
    assert order.status == 201
    placed = await order.json()
    assert placed["status"] == "confirmed"
    assert placed["total_cents"] == again["total_cents"]

    repeat = await client.post("/api/checkout", json={"cart_id": cart_id})
    assert repeat.status == 404


async def test_checkout_with_items(client: TestClient) -> None:
    response = await client.post(
        "/api/checkout", json={"items": [{"item_id": ITEM_IDS[1], "quantity": 2}, {"item_id": ITEM_IDS[3]}]}
    )
    assert response.status == 201
    order = await response.json()
    assert [line["quantity"] for line in order["items"]] == [2, 1]
    assert order["total_cents"] == sum(line["line_total_cents"] for line in order["items"])


@pytest.mark.parametrize(
    ("path", "body", "parameter"),
    [
        ("/api/cart", {"quantity": 1}, "item_id"),
        ("/api/cart", {"item_id": "sku-nothing"}, "item_id"),
        ("/api/cart", {"item_id": ITEM_IDS[0], "quantity": 0}, "quantity"),
        ("/api/cart", {"item_id": ITEM_IDS[0], "quantity": True}, "quantity"),
        ("/api/cart", {"item_id": ITEM_IDS[0], "cart_id": 5}, "cart_id"),
        ("/api/cart", ["not", "an", "object"], "body"),
        ("/api/checkout", {}, "body"),
        ("/api/checkout", {"cart_id": "x", "items": []}, "body"),
        ("/api/checkout", {"items": []}, "items"),
        ("/api/checkout", {"items": [{"item_id": ITEM_IDS[0], "quantity": 101}]}, "items[0].quantity"),
    ],
)
async def test_bad_bodies_are_400_naming_the_parameter(
    client: TestClient, path: str, body: object, parameter: str
) -> None:
    response = await client.post(path, json=body)
    assert response.status == 400
    assert response.headers["X-Revision"] == REVISION
    error = await response.json()
    assert error["parameter"] == parameter
    assert error["error"]


async def test_invalid_json_is_400(client: TestClient) -> None:
    response = await client.post("/api/cart", data=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert (await response.json())["parameter"] == "body"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 200),
        ("GET", "/healthz", 200),
        ("GET", "/metrics", 200),
        ("GET", "/api/catalog", 200),
        ("GET", "/api/catalog/sku-nothing", 404),
        ("GET", "/no/such/page", 404),
        ("GET", "/api/cart", 405),
        ("GET", "/fault/status", 200),
        ("POST", "/fault/enable?type=nonsense", 400),
        ("POST", "/fault/disable", 200),
        ("GET", "/_emulator/scaling", 200),
        ("PUT", "/_emulator/scaling", 400),
    ],
)
async def test_every_answer_carries_the_revision(
    client: TestClient, method: str, path: str, status: int
) -> None:
    response = await client.request(method, path)
    assert response.status == status
    assert response.headers["X-Revision"] == REVISION


async def test_unknown_path_and_method_answer_json(client: TestClient) -> None:
    missing = await client.get("/no/such/page")
    assert (await missing.json()) == {"error": "Not Found", "path": "/no/such/page"}
    wrong_method = await client.get("/api/checkout")
    assert wrong_method.status == 405
    assert (await wrong_method.json())["error"] == "Method Not Allowed"


def test_cart_store_forgets_the_oldest_carts() -> None:
    store = CartStore(max_carts=2)
    line = parse_line({"item_id": ITEM_IDS[0], "quantity": 1})
    first, _ = store.add(line)
    second, _ = store.add(line)
    store.add(line, cart_id=first)
    third, _ = store.add(line)
    assert len(store) == 2
    # `first` was used after `second`, so `second` is the oldest and goes.
    assert store.get(first)[0].quantity == 2
    assert store.get(third)
    with pytest.raises(NotFound):
        store.get(second)
