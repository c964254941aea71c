"""Product lists for message copy: `recommendations.similar`, `.search`, `.upgrades`,
`.complementary`, `.best_sellers`, `.new_arrivals` (docs/flows.md, "Message copy").

Each list holds up to `LIMIT` products as template values (name, url, price, image_url, id), never
the products the message is about, and falls back to best sellers when its own signal is empty
(a shopper with no search still gets something sensible). Only the lists a template names are
computed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from winback.db.expressions import one_of
from winback.db.models import Event, Order, OrderLine, Product, ProductCollection

LIMIT: Final = 8
BEST_SELLER_DAYS: Final = 30
KINDS: Final = ("similar", "search", "upgrades", "complementary", "best_sellers", "new_arrivals")
_NAMED = re.compile(r"recommendations\s*\.\s*([a-z_]+)|recommendations\s*\[\s*['\"]([a-z_]+)['\"]\s*\]")


def kinds_named(sources: Iterable[str]) -> set[str]:
    """The recommendation lists the given template sources refer to."""
    named: set[str] = set()
    for source in sources:
        for match in _NAMED.finditer(source):
            kind = match.group(1) or match.group(2)
            if kind in KINDS:
                named.add(kind)
    return named


def product_value(product: Product) -> dict[str, Any]:
    return {
        "id": product.product_id,
        "name": product.name or product.product_id,
        "url": product.url,
        "price": str(product.price) if product.price is not None else None,
        "image_url": product.image_url,
        "brand": product.brand,
        "category": product.category,
    }


def recommend(
    session: Session,
    kinds: Collection[str],
    *,
    customer_id: int | None,
    about: Sequence[str],
    last_search: str | None,
    now: datetime,
) -> dict[str, list[dict[str, Any]]]:
    """The named lists, for a message about the products `about` (the trigger's product ids)."""
    exclude = set(about)
    cache: dict[str, list[Product]] = {}

    def best_sellers() -> list[Product]:
        if "best_sellers" not in cache:
            cache["best_sellers"] = _best_sellers(session, now, exclude)
        return cache["best_sellers"]

    builders: dict[str, Callable[[], list[Product]]] = {
        "best_sellers": best_sellers,
        "new_arrivals": lambda: _new_arrivals(session, exclude),
        "similar": lambda: _similar(session, about, exclude),
        "upgrades": lambda: _upgrades(session, about, exclude),
        "complementary": lambda: _complementary(session, about, exclude),
        "search": lambda: _search(session, last_search, exclude),
    }
    result: dict[str, list[dict[str, Any]]] = {}
    for kind in kinds:
        products = builders[kind]() if kind in builders else []
        if not products and kind != "best_sellers":
            products = best_sellers()
        result[kind] = [product_value(p) for p in products[:LIMIT]]
    return result


def last_search_query(session: Session, customer_id: int) -> str | None:
    """The customer's most recent search (`Products Searched` or `Search Abandoned`)."""
    row = session.execute(
        select(Event.properties)
        .where(
            Event.customer_id == customer_id,
            Event.event.in_(("Products Searched", "Search Abandoned")),
        )
        .order_by(Event.timestamp.desc(), Event.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    query = (row[0] or {}).get("query")
    return str(query).strip() or None if query else None


def _visible(statement: Any, exclude: Collection[str]) -> Any:
    statement = statement.where(Product.name.is_not(None), Product.available.is_(True))
    if exclude:
        statement = statement.where(Product.product_id.not_in(list(exclude)))
    return statement


def _best_sellers(session: Session, now: datetime, exclude: Collection[str]) -> list[Product]:
    since = now - timedelta(days=BEST_SELLER_DAYS)
    sold = (
        select(OrderLine.product_id, func.sum(OrderLine.quantity).label("sold"))
        .join(Order, Order.id == OrderLine.order_pk)
        .where(Order.placed_at >= since, OrderLine.product_id.is_not(None))
        .group_by(OrderLine.product_id)
        .subquery()
    )
    statement = select(Product).join(sold, sold.c.product_id == Product.product_id)
    products = list(
        session.scalars(_visible(statement, exclude).order_by(sold.c.sold.desc(), Product.id).limit(LIMIT))
    )
    if len(products) < LIMIT:  # a young shop: fill with the newest products
        seen = {p.product_id for p in products} | set(exclude)
        products += [p for p in _new_arrivals(session, seen)][: LIMIT - len(products)]
    return products


def _new_arrivals(session: Session, exclude: Collection[str]) -> list[Product]:
    statement = _visible(select(Product), exclude).order_by(Product.created_at.desc(), Product.id.desc())
    return list(session.scalars(statement.limit(LIMIT)))


def _collections_of(session: Session, product_ids: Sequence[str]) -> tuple[set[str], list[Product]]:
    if not product_ids:
        return set(), []
    products = list(session.scalars(select(Product).where(one_of(Product.product_id, list(product_ids)))))
    collections = {c for p in products for c in (p.collections or [])}
    collections |= {p.category for p in products if p.category}
    return collections, products


def _in_collections(session: Session, collections: set[str], exclude: Collection[str]) -> list[Product]:
    if not collections:
        return []
    members = select(ProductCollection.product_id).where(
        one_of(ProductCollection.collection, sorted(collections))
    )
    statement = _visible(select(Product), exclude).where(
        or_(Product.product_id.in_(members.scalar_subquery()), one_of(Product.category, sorted(collections)))
    )
    return list(session.scalars(statement.order_by(Product.id.desc()).limit(200)))


def _similar(session: Session, about: Sequence[str], exclude: Collection[str]) -> list[Product]:
    collections, _ = _collections_of(session, about)
    return _in_collections(session, collections, exclude)


def _upgrades(session: Session, about: Sequence[str], exclude: Collection[str]) -> list[Product]:
    """Pricier products from the same collections, cheapest upgrade first."""
    collections, products = _collections_of(session, about)
    prices = [p.price for p in products if p.price is not None]
    if not prices:
        return []
    floor = max(prices)
    upgrades = [p for p in _in_collections(session, collections, exclude) if p.price and p.price > floor]
    return sorted(upgrades, key=lambda p: (p.price, p.id))


def _complementary(session: Session, about: Sequence[str], exclude: Collection[str]) -> list[Product]:
    """Products bought in the same orders as these, most often first."""
    if not about:
        return []
    orders_with = select(OrderLine.order_pk).where(one_of(OrderLine.product_id, list(about))).limit(5000)
    together = (
        select(OrderLine.product_id, func.count().label("times"))
        .where(OrderLine.order_pk.in_(orders_with.scalar_subquery()), OrderLine.product_id.is_not(None))
        .group_by(OrderLine.product_id)
        .subquery()
    )
    statement = select(Product).join(together, together.c.product_id == Product.product_id)
    return list(
        session.scalars(
            _visible(statement, exclude).order_by(together.c.times.desc(), Product.id).limit(LIMIT)
        )
    )


def _search(session: Session, query: str | None, exclude: Collection[str]) -> list[Product]:
    if not query:
        return []
    words = [w for w in re.split(r"\W+", query.lower()) if len(w) >= 2][:5]
    if not words:
        return []
    statement = _visible(select(Product), exclude).where(
        or_(*[func.lower(Product.name).contains(word, autoescape=True) for word in words])
    )
    return list(session.scalars(statement.order_by(Product.id.desc()).limit(LIMIT)))
