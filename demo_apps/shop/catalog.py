"""The shop's goods and carts: a fixed catalog and a bounded in-memory cart store."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from demo_apps.shop.exceptions import BadRequest, NotFound

MAX_QUANTITY = 100
MAX_LINES = 50
# Load generators create carts all day; the oldest are forgotten so memory stays flat.
DEFAULT_MAX_CARTS = 10_000


@dataclass(frozen=True, kw_only=True)
class CatalogItem:
    id: str
    name: str
    price_cents: int
    currency: str = "USD"

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "price_cents": self.price_cents, "currency": self.currency}


CATALOG: tuple[CatalogItem, ...] = (
    CatalogItem(id="sku-espresso-beans", name="Espresso beans, 1 kg", price_cents=2450),
    CatalogItem(id="sku-pour-over-kettle", name="Pour-over kettle", price_cents=5900),
    CatalogItem(id="sku-ceramic-dripper", name="Ceramic dripper", price_cents=2800),
    CatalogItem(id="sku-paper-filters", name="Paper filters, 100", price_cents=650),
    CatalogItem(id="sku-burr-grinder", name="Burr grinder", price_cents=14900),
    CatalogItem(id="sku-travel-mug", name="Travel mug", price_cents=1999),
    CatalogItem(id="sku-milk-frother", name="Milk frother", price_cents=3499),
    CatalogItem(id="sku-tasting-notes", name="Tasting notebook", price_cents=899),
)
CATALOG_BY_ID: Mapping[str, CatalogItem] = {item.id: item for item in CATALOG}
ITEM_IDS: tuple[str, ...] = tuple(CATALOG_BY_ID)


@dataclass(frozen=True, kw_only=True)
class CartLine:
    item: CatalogItem
    quantity: int

    def as_json(self) -> dict[str, object]:
        return {
            "item_id": self.item.id,
            "name": self.item.name,
            "quantity": self.quantity,
            "line_total_cents": self.item.price_cents * self.quantity,
        }


def find_item(item_id: str) -> CatalogItem:
    try:
        return CATALOG_BY_ID[item_id]
    except KeyError:
        raise NotFound(f"no catalog item {item_id!r}") from None


def parse_line(body: object, *, where: str = "") -> CartLine:
    """One `{"item_id": ..., "quantity": n}` object; `where` prefixes parameter names in errors."""
    if not isinstance(body, Mapping):
        raise BadRequest(where or "body", "expected a JSON object with item_id and quantity")
    item_id = body.get("item_id")
    if not isinstance(item_id, str) or not item_id:
        raise BadRequest(f"{where}item_id", "item_id must be a non-empty string")
    if item_id not in CATALOG_BY_ID:
        raise BadRequest(f"{where}item_id", f"no catalog item {item_id!r}")
    quantity = body.get("quantity", 1)
    if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= MAX_QUANTITY:
        raise BadRequest(f"{where}quantity", f"quantity must be an integer within 1..{MAX_QUANTITY}")
    return CartLine(item=CATALOG_BY_ID[item_id], quantity=quantity)


def parse_lines(value: object) -> list[CartLine]:
    """A non-empty `items` list of cart lines."""
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise BadRequest("items", "items must be a non-empty list of {item_id, quantity}")
    if len(value) > MAX_LINES:
        raise BadRequest("items", f"at most {MAX_LINES} lines")
    return [parse_line(entry, where=f"items[{index}].") for index, entry in enumerate(value)]


def total_cents(lines: Sequence[CartLine]) -> int:
    return sum(line.item.price_cents * line.quantity for line in lines)


class CartStore:
    """Carts by id, oldest dropped first beyond `max_carts`."""

    def __init__(self, *, max_carts: int = DEFAULT_MAX_CARTS) -> None:
        self._carts: OrderedDict[str, list[CartLine]] = OrderedDict()
        self._max_carts = max_carts

    def __len__(self) -> int:
        return len(self._carts)

    def add(self, line: CartLine, *, cart_id: str | None = None) -> tuple[str, list[CartLine]]:
        """Add `line` to cart `cart_id`, or to a new cart when it is None."""
        if cart_id is None:
            cart_id = uuid.uuid4().hex
            self._carts[cart_id] = []
            while len(self._carts) > self._max_carts:
                self._carts.popitem(last=False)
        lines = self.get(cart_id)
        for index, existing in enumerate(lines):
            if existing.item.id == line.item.id:
                quantity = min(MAX_QUANTITY, existing.quantity + line.quantity)
                lines[index] = CartLine(item=line.item, quantity=quantity)
                break
        else:
            if len(lines) >= MAX_LINES:
                raise BadRequest("item_id", f"a cart holds at most {MAX_LINES} lines")
            lines.append(line)
        self._carts.move_to_end(cart_id)
        return cart_id, lines

    def get(self, cart_id: str) -> list[CartLine]:
        try:
            return self._carts[cart_id]
        except KeyError:
            raise NotFound(f"no cart {cart_id!r}") from None

    def pop(self, cart_id: str) -> list[CartLine]:
        lines = self.get(cart_id)
        del self._carts[cart_id]
        return lines
