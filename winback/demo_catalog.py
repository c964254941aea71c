"""The demo store's catalog: a small coffee-and-tea shop, 30 products in five collections.

Images are SVG placeholders served by the demo itself (`/demo/images/<product_id>.svg`), so the
demo needs no internet access.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

STORE_NAME = "Northwind Roasters"
BRAND = "Northwind"
CURRENCY = "USD"


@dataclass(frozen=True, slots=True)
class DemoProduct:
    product_id: str
    sku: str
    name: str
    category: str
    collections: tuple[str, ...]
    price: Decimal
    colour: str  # of the placeholder image

    def slug(self) -> str:
        return self.product_id.removeprefix("nw-")

    def properties(self, store_url: str) -> dict[str, Any]:
        """The Segment e-commerce product object for this product."""
        return {
            "product_id": self.product_id,
            "sku": self.sku,
            "name": self.name,
            "brand": BRAND,
            "category": self.category,
            "collections": list(self.collections),
            "price": float(self.price),
            "currency": CURRENCY,
            "url": f"{store_url}/products/{self.slug()}",
            "image_url": f"{store_url}/demo/images/{self.product_id}.svg",
        }


def _product(
    number: int, name: str, category: str, collections: tuple[str, ...], price: str, colour: str
) -> DemoProduct:
    slug = name.lower().replace("&", "and").replace("'", "").replace(" ", "-")
    return DemoProduct(
        product_id=f"nw-{slug}",
        sku=f"NW-{number:03d}",
        name=name,
        category=category,
        collections=collections,
        price=Decimal(price),
        colour=colour,
    )


COFFEE, TEA, GEAR, MUGS, GIFTS, BESTSELLERS = (
    "Coffee",
    "Tea",
    "Brewing Gear",
    "Mugs & Cups",
    "Gifts",
    "Bestsellers",
)

CATALOG: tuple[DemoProduct, ...] = (
    _product(1, "House Blend Beans", COFFEE, (COFFEE, BESTSELLERS), "14.50", "#6f4e37"),
    _product(2, "Ethiopia Yirgacheffe", COFFEE, (COFFEE,), "18.00", "#8b5a2b"),
    _product(3, "Colombia Huila", COFFEE, (COFFEE,), "16.50", "#7b4b2a"),
    _product(4, "Espresso Forte", COFFEE, (COFFEE, BESTSELLERS), "15.00", "#3e2723"),
    _product(5, "Decaf Swiss Water", COFFEE, (COFFEE,), "15.50", "#a1887f"),
    _product(6, "Cold Brew Pack", COFFEE, (COFFEE,), "12.00", "#5d4037"),
    _product(7, "Sumatra Mandheling", COFFEE, (COFFEE,), "17.00", "#4e342e"),
    _product(8, "Guatemala Antigua", COFFEE, (COFFEE,), "16.00", "#795548"),
    _product(9, "Sencha Green Tea", TEA, (TEA,), "11.00", "#7cb342"),
    _product(10, "Earl Grey Supreme", TEA, (TEA, BESTSELLERS), "10.50", "#546e7a"),
    _product(11, "Chamomile Dream", TEA, (TEA,), "9.50", "#fdd835"),
    _product(12, "Masala Chai", TEA, (TEA,), "12.50", "#bf360c"),
    _product(13, "Jasmine Pearls", TEA, (TEA,), "19.00", "#c5e1a5"),
    _product(14, "Rooibos Vanilla", TEA, (TEA,), "10.00", "#d84315"),
    _product(15, "Pour-Over Dripper", GEAR, (GEAR, BESTSELLERS), "28.00", "#eceff1"),
    _product(16, "French Press 1L", GEAR, (GEAR,), "35.00", "#90a4ae"),
    _product(17, "Burr Grinder", GEAR, (GEAR,), "89.00", "#37474f"),
    _product(18, "Gooseneck Kettle", GEAR, (GEAR,), "59.00", "#b0bec5"),
    _product(19, "Paper Filters x100", GEAR, (GEAR,), "6.50", "#fafafa"),
    _product(20, "Digital Scale", GEAR, (GEAR,), "32.00", "#263238"),
    _product(21, "Moka Pot", GEAR, (GEAR,), "38.00", "#9e9e9e"),
    _product(22, "Stoneware Mug", MUGS, (MUGS, BESTSELLERS), "18.00", "#efebe9"),
    _product(23, "Double-Wall Glass", MUGS, (MUGS,), "22.00", "#e1f5fe"),
    _product(24, "Travel Tumbler", MUGS, (MUGS,), "27.00", "#00695c"),
    _product(25, "Espresso Cups Set", MUGS, (MUGS,), "24.00", "#ffffff"),
    _product(26, "Enamel Camp Mug", MUGS, (MUGS,), "15.00", "#1565c0"),
    _product(27, "Coffee Lover's Box", GIFTS, (GIFTS, COFFEE), "49.00", "#ad1457"),
    _product(28, "Tea Sampler", GIFTS, (GIFTS, TEA), "34.00", "#6a1b9a"),
    _product(29, "Brew Starter Kit", GIFTS, (GIFTS, GEAR), "79.00", "#283593"),
    _product(30, "Gift Card", GIFTS, (GIFTS,), "50.00", "#ff8f00"),
)

BY_ID = {product.product_id: product for product in CATALOG}
COLLECTIONS: tuple[str, ...] = (COFFEE, TEA, GEAR, MUGS, GIFTS)

SEARCH_TERMS = (
    "decaf", "espresso", "green tea", "grinder", "gift", "cold brew", "kettle", "chai", "mug", "oat milk",
)  # fmt: skip
FIRST_NAMES = (
    "Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "Edsger",
    "Radia", "Tim", "Hedy", "Guido", "Katherine", "John", "Sophie", "Donald", "Joan", "Niklaus",
)  # fmt: skip
LAST_NAMES = (
    "Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Allen",
    "Dijkstra", "Perlman", "Berners-Lee", "Lamarr", "van Rossum", "Johnson", "Backus", "Wilson", "Knuth",
)  # fmt: skip


def placeholder_svg(product: DemoProduct | None, label: str) -> str:
    """A 400×400 product placeholder: a coloured tile with the product's name."""
    colour = product.colour if product else "#cfd8dc"
    name = (product.name if product else label).replace("&", "&amp;").replace("<", "&lt;")
    light = colour.lower() in (
        "#fafafa",
        "#ffffff",
        "#efebe9",
        "#eceff1",
        "#e1f5fe",
        "#c5e1a5",
        "#fdd835",
        "#b0bec5",
    )
    ink = "#212121" if light else "#ffffff"
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="400" viewBox="0 0 400 400">'
        f'<rect width="400" height="400" fill="{colour}"/>'
        f'<text x="200" y="190" font-family="sans-serif" font-size="26" text-anchor="middle" fill="{ink}">{name}</text>'
        f'<text x="200" y="230" font-family="sans-serif" font-size="16" text-anchor="middle" fill="{ink}">'
        f"{STORE_NAME}</text></svg>"
    )
