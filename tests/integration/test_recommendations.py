"""Product lists for message copy on both databases: similar, upgrades, search and new arrivals
from the catalog — never a product the store no longer sells (draft, archived, unpublished or
deleted, by Shopify webhook or CSV import)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from winback.commerce import catalog
from winback.commerce.catalog import ProductInfo
from winback.db.engine import transaction
from winback.db.models import Product
from winback.messaging import recommendations
from winback.runtime import Runtime

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TEAS = [("green", "Green tea", "12.00"), ("black", "Black tea", "14.00"), ("white", "White tea", "30.00"),
        ("oolong", "Oolong tea", "24.00"), ("matcha", "Matcha tea", "40.00")]  # fmt: skip


def _catalog(runtime: Runtime) -> None:
    with transaction(runtime.engine) as session:
        for index, (product_id, name, price) in enumerate(TEAS):
            info = ProductInfo(product_id=product_id, name=name, price=Decimal(price), collections=("Tea",))
            catalog.upsert_products(session, [info], NOW + timedelta(minutes=index))


def _lists(
    runtime: Runtime, *kinds: str, about: tuple[str, ...] = ("green",), search: str | None = None
) -> dict[str, list[str]]:
    with Session(runtime.engine) as session:
        found = recommendations.recommend(
            session, kinds, customer_id=None, about=about, last_search=search, now=NOW
        )
    return {kind: [product["id"] for product in products] for kind, products in found.items()}


def test_products_no_longer_for_sale_are_never_recommended(runtime: Runtime) -> None:
    # given five teas in one collection
    _catalog(runtime)
    before = _lists(runtime, "similar", "upgrades", "search", "new_arrivals", search="white tea")
    assert before == {
        "similar": ["matcha", "oolong", "white", "black"],
        "upgrades": ["black", "oolong", "white", "matcha"],
        "search": ["matcha", "oolong", "white", "black"],
        "new_arrivals": ["matcha", "oolong", "white", "black"],
    }
    # when the store archives the white tea (a products/update saying so) and deletes the matcha
    with transaction(runtime.engine) as session:
        catalog.upsert_products(session, [ProductInfo(product_id="white", available=False)], NOW)
        catalog.withdraw_products(session, ["matcha"], NOW)
    # then neither is offered any more, in any list
    after = _lists(runtime, "similar", "upgrades", "search", "new_arrivals", search="white tea")
    assert after == {
        "similar": ["oolong", "black"],
        "upgrades": ["black", "oolong"],
        "search": ["oolong", "black"],
        "new_arrivals": ["oolong", "black"],
    }
    # and one back on sale is offered again
    with transaction(runtime.engine) as session:
        catalog.upsert_products(session, [ProductInfo(product_id="white", available=True)], NOW)
    assert _lists(runtime, "similar")["similar"] == ["oolong", "white", "black"]


def test_an_update_that_does_not_say_leaves_availability_alone(runtime: Runtime) -> None:
    _catalog(runtime)
    with transaction(runtime.engine) as session:
        catalog.withdraw_products(session, ["white"], NOW)
        # a storefront Product Viewed of it says nothing about whether it is for sale
        catalog.upsert_products(session, [ProductInfo(product_id="white", name="White tea (2026)")], NOW)
    with Session(runtime.engine) as session:
        product = session.scalar(sa.select(Product).where(Product.product_id == "white"))
        assert product is not None and (product.name, product.available) == ("White tea (2026)", False)
