"""The product catalog, learned from e-commerce events and webhooks, and importable.

Products are keyed by their external `product_id` (Segment spec) and variants by `variant_id`.
A snapshot only ever adds information: a missing field never erases a known one.

Storefront events repeat the same few hundred product snapshots all day (every `Product Viewed`
carries one). A snapshot this process has already written, in a transaction that committed, is
skipped without a query (`_Written`, per engine, remembered only after the commit); the first
sight of a snapshot, and any snapshot with free-form properties, is always merged with the row.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, Table, event, select, update
from sqlalchemy.orm import Session

from winback.db.expressions import insert_or_ignore, one_of
from winback.db.models import Product, ProductCollection, ProductVariant
from winback.kernel.money import to_amount


@dataclass(frozen=True, slots=True)
class ProductInfo:
    """What one event or webhook says about a product (and possibly one of its variants)."""

    product_id: str
    name: str | None = None
    sku: str | None = None
    brand: str | None = None
    category: str | None = None
    price: Decimal | None = None
    currency: str | None = None
    image_url: str | None = None
    url: str | None = None
    collections: tuple[str, ...] = ()
    variant_id: str | None = None
    variant_name: str | None = None
    variant_sku: str | None = None
    variant_price: Decimal | None = None
    variant_image_url: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    available: bool | None = None  # for sale (None: the source does not say)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text or None


def collections_of(props: Mapping[str, Any]) -> tuple[str, ...]:
    """Collections from `collections` (list or comma string) plus the spec's `category`."""
    found: list[str] = []
    raw = props.get("collections")
    if isinstance(raw, str):
        raw = raw.split(",")
    if isinstance(raw, list):
        found.extend(t for t in (_text(item) for item in raw) if t)
    category = _text(props.get("category"))
    if category:
        found.append(category)
    return tuple(dict.fromkeys(found))


def product_from_properties(props: Mapping[str, Any]) -> ProductInfo | None:
    """Read a Segment e-commerce product object (Product Viewed properties, products[] items)."""
    product_id = _text(props.get("product_id")) or _text(props.get("id")) or _text(props.get("sku"))
    if product_id is None:
        return None
    variant_id = _text(props.get("variant_id"))
    variant_label = _text(props.get("variant"))
    return ProductInfo(
        product_id=product_id,
        name=_text(props.get("name")),
        sku=_text(props.get("sku")) if not variant_id else None,
        brand=_text(props.get("brand")),
        category=_text(props.get("category")),
        price=to_amount(props.get("price")) if not variant_id else None,
        currency=(_text(props.get("currency")) or "").upper()[:3] or None,
        image_url=_text(props.get("image_url")),
        url=_text(props.get("url")),
        collections=collections_of(props),
        variant_id=variant_id,
        variant_name=variant_label,
        variant_sku=_text(props.get("sku")) if variant_id else None,
        variant_price=to_amount(props.get("price")) if variant_id else None,
        variant_image_url=_text(props.get("image_url")) if variant_id else None,
    )


def for_sale(status: str | None, published: bool | None) -> bool | None:
    """Whether shoppers can buy a product, from its store status (Shopify: active, draft,
    archived) and whether it is published to the online store; None when neither says."""
    status = (status or "").strip().lower()
    if status in ("draft", "archived") or published is False:
        return False
    return True if status == "active" or published is True else None


PRODUCT_FIELDS = ("name", "sku", "brand", "category", "price", "currency", "image_url", "url")
# variant column → the snapshot field that sets it
VARIANT_FIELDS = (
    ("name", "variant_name"),
    ("sku", "variant_sku"),
    ("price", "variant_price"),
    ("image_url", "variant_image_url"),
)


def product_changes(row: Product, info: ProductInfo) -> dict[str, Any]:
    """The columns a snapshot would change on a product row, with their new values (empty: it adds
    nothing). Collections and properties are merged, never replaced."""
    changes = {
        attribute: value
        for attribute in PRODUCT_FIELDS
        if (value := getattr(info, attribute)) is not None and getattr(row, attribute) != value
    }
    if info.collections:
        merged = list(dict.fromkeys([*(row.collections or []), *info.collections]))
        if merged != row.collections:
            changes["collections"] = merged
    if info.properties:
        properties = {**(row.properties or {}), **info.properties}
        if properties != row.properties:
            changes["properties"] = properties
    if info.available is not None and row.available != info.available:
        changes["available"] = info.available
    return changes


def variant_changes(variant: ProductVariant, info: ProductInfo) -> dict[str, Any]:
    """The columns a snapshot would change on its variant's row."""
    return {
        column: value
        for column, field_name in VARIANT_FIELDS
        if (value := getattr(info, field_name)) is not None and getattr(variant, column) != value
    }


def _apply(row: Product | ProductVariant, changes: Mapping[str, Any], now: datetime) -> None:
    """Write changes to a row; `updated_at` moves only when something changed."""
    for column, value in changes.items():
        setattr(row, column, value)
    if changes:
        row.updated_at = now


def withdraw_products(session: Session, product_ids: Iterable[str], now: datetime) -> None:
    """Mark products the store deleted as not for sale (kept: orders and events still name them)."""
    session.execute(
        update(Product)
        .where(one_of(Product.product_id, list(product_ids)), Product.available.is_(True))
        .values(available=False, updated_at=now)
    )


WRITTEN_SNAPSHOTS = 20_000  # snapshots remembered per engine (least recently seen forgotten first)
PENDING_KEY = "winback.catalog.written"  # session.info: snapshots written in its open transaction


class _Written:
    """Snapshots written by committed transactions of one engine, least recently seen first."""

    def __init__(self) -> None:
        self._keys: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: tuple[Any, ...]) -> bool:
        with self._lock:
            if key in self._keys:
                self._keys.move_to_end(key)
                return True
            return False

    def add(self, keys: Iterable[tuple[Any, ...]]) -> None:
        with self._lock:
            for key in keys:
                self._keys[key] = None
                self._keys.move_to_end(key)
            while len(self._keys) > WRITTEN_SNAPSHOTS:
                self._keys.popitem(last=False)


_written: weakref.WeakKeyDictionary[Engine, _Written] = weakref.WeakKeyDictionary()
_written_lock = threading.Lock()


def _written_for(session: Session) -> _Written:
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    with _written_lock:
        written = _written.get(engine)
        if written is None:
            written = _written[engine] = _Written()
        return written


@event.listens_for(Session, "after_commit")
def _remember_written(session: Session) -> None:
    pending = session.info.pop(PENDING_KEY, None)
    if pending:
        written, keys = pending
        written.add(keys)


@event.listens_for(Session, "after_soft_rollback")
def _forget_pending(session: Session, _previous_transaction: Any) -> None:
    session.info.pop(PENDING_KEY, None)


def snapshot_key(info: ProductInfo) -> tuple[Any, ...]:
    """Everything a snapshot without free-form properties says (equal keys: nothing new)."""
    return (
        info.product_id, info.name, info.sku, info.brand, info.category, info.price, info.currency,
        info.image_url, info.url, info.collections, info.variant_id, info.variant_name,
        info.variant_sku, info.variant_price, info.variant_image_url, info.available,
    )  # fmt: skip


def upsert_products(session: Session, infos: Iterable[ProductInfo], now: datetime) -> None:
    """Create or enrich products, variants and collection links in the caller's transaction."""
    by_product: dict[str, list[ProductInfo]] = {}
    seen: set[tuple[Any, ...]] = set()
    written = _written_for(session)
    for info in infos:
        if not info.properties:  # the same snapshot seen again (a product viewed twice) adds nothing
            key = snapshot_key(info)
            if key in seen or key in written:
                continue
            seen.add(key)
        by_product.setdefault(info.product_id, []).append(info)
    if not by_product:
        return
    if seen:  # remembered once this transaction commits (a rollback forgets them)
        _, pending = session.info.setdefault(PENDING_KEY, (written, []))
        pending.extend(seen)
    existing = {
        row.product_id: row
        for row in session.scalars(select(Product).where(one_of(Product.product_id, by_product)))
    }
    variant_ids = [i.variant_id for group in by_product.values() for i in group if i.variant_id]
    variants = (
        {
            row.variant_id: row
            for row in session.scalars(
                select(ProductVariant).where(one_of(ProductVariant.variant_id, variant_ids))
            )
        }
        if variant_ids
        else {}
    )
    new_links: list[dict[str, str]] = []
    for product_id, group in by_product.items():
        row = existing.get(product_id)
        if row is None:
            row = Product(
                product_id=product_id, collections=[], properties={}, available=True, created_at=now,
                updated_at=now,
            )  # fmt: skip
            session.add(row)
            existing[product_id] = row
        known_collections = set(row.collections or [])
        for info in group:
            _apply(row, product_changes(row, info), now)
            if info.variant_id:
                variant = variants.get(info.variant_id)
                if variant is None:
                    variant = ProductVariant(
                        variant_id=info.variant_id, product_id=product_id, updated_at=now
                    )
                    session.add(variant)
                    variants[info.variant_id] = variant
                _apply(variant, variant_changes(variant, info), now)
        new_links.extend(
            {"product_id": product_id, "collection": collection}
            for collection in sorted(set(row.collections or []) - known_collections)
        )
    if new_links:
        links: Table = ProductCollection.__table__  # type: ignore[assignment]
        session.execute(insert_or_ignore(session.get_bind().dialect.name, links), new_links)
