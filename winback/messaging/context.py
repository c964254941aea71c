"""What message copy can name: the Liquid context of one message (docs/messaging.md,
"Template context"), read from the database at send time.

Built per message from the customer's profile, the trigger snapshot the flow run kept, the cart or
checkout and order it concerns, the run's discount codes, product recommendations (only the lists
the copy names) and the shop. Values are plain dicts, lists, strings and numbers: Liquid sees no
ORM objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from winback.db.expressions import one_of
from winback.db.models import Checkout, Customer, Order, OrderLine, Product, ProductVariant
from winback.messaging import discounts, recommendations
from winback.settings import StoreProfile


@dataclass(frozen=True, slots=True)
class RenderContext:
    """The Liquid variables and the locale/currency/timezone filters format with."""

    values: dict[str, Any]
    currency: str
    locale: str
    timezone: str


def build(
    session: Session,
    *,
    customer: Customer | None,
    trigger: Mapping[str, Any] | None,
    run_id: int | None,
    shop: StoreProfile,
    sources: Sequence[str],
    unsubscribe_url: str,
    message_id: int,
    now: datetime,
) -> RenderContext:
    """The context for copy `sources` (subject, body, HTML…) of one message."""
    trigger = trigger or {}
    event = dict(trigger.get("properties") or {})
    values: dict[str, Any] = {
        "shop": shop_value(shop),
        "event": event,
        "unsubscribe_url": unsubscribe_url,
        "message": {"id": message_id},
        "customer": customer_value(customer) if customer is not None else {},
    }
    checkout = _checkout_for(session, customer, event)
    if checkout is not None:
        value = checkout_value(session, checkout, shop)
        values["checkout"] = value
        values["cart"] = {**value, "url": value["recovery_url"]}
    order = _order_for(session, event)
    if order is not None:
        values["order"] = order
    if isinstance(event.get("product_id") or event.get("name"), str) and "products" not in event:
        values["product"] = event  # a single-product trigger (Product Viewed / Added)
    if run_id is not None:
        codes = discounts.template_values(session, run_id)
        values["discounts"] = codes["discounts"]
        if codes["discount"] is not None:
            values["discount"] = codes["discount"]

    kinds = recommendations.kinds_named(sources)
    needs_search = "search" in kinds or any("last_search" in source for source in sources)
    last_search = (
        recommendations.last_search_query(session, customer.id) if needs_search and customer else None
    )
    if customer is not None and last_search:
        values["customer"]["last_search"] = {"query": last_search}
    if kinds:
        values["recommendations"] = recommendations.recommend(
            session,
            kinds,
            customer_id=customer.id if customer else None,
            about=_product_ids(event),
            last_search=last_search,
            now=now,
        )
    currency = (checkout.currency if checkout is not None and checkout.currency else None) or shop.currency
    locale = (customer.locale if customer is not None and customer.locale else None) or shop.locale
    timezone = (customer.timezone if customer is not None and customer.timezone else None) or shop.timezone
    return RenderContext(values=values, currency=currency, locale=locale.replace("_", "-"), timezone=timezone)


def cart_image_urls(
    session: Session, customer: Customer | None, trigger: Mapping[str, Any] | None
) -> list[str]:
    """The product images of the cart or checkout a message is about (else the trigger's products)."""
    event = dict((trigger or {}).get("properties") or {})
    checkout = _checkout_for(session, customer, event)
    items: list[Any] = list(checkout.items or []) if checkout is not None else []
    if not items and isinstance(event.get("products"), list):
        items = event["products"]
    items = with_catalog_images(session, [item for item in items if isinstance(item, dict)])
    return [str(item["image_url"]) for item in items if item.get("image_url")]


def with_catalog_images(session: Session, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Lines with an image: their own, else their variant's, else their product's from the catalog
    (Shopify's checkout webhooks carry no images; its product webhooks do)."""
    missing = [item for item in items if not item.get("image_url")]
    variants: dict[str, str] = {}
    products: dict[str, str] = {}
    variant_ids = sorted({str(i["variant_id"]) for i in missing if i.get("variant_id")})
    product_ids = sorted({str(i["product_id"]) for i in missing if i.get("product_id")})
    if variant_ids:
        variants = {
            variant_id: image
            for variant_id, image in session.execute(
                select(ProductVariant.variant_id, ProductVariant.image_url).where(
                    one_of(ProductVariant.variant_id, variant_ids), ProductVariant.image_url.is_not(None)
                )
            )
        }
    if product_ids:
        products = {
            product_id: image
            for product_id, image in session.execute(
                select(Product.product_id, Product.image_url).where(
                    one_of(Product.product_id, product_ids), Product.image_url.is_not(None)
                )
            )
        }
    result = []
    for item in items:
        image = (
            item.get("image_url")
            or variants.get(str(item.get("variant_id")))
            or products.get(str(item.get("product_id")))
        )
        result.append({**item, "image_url": image})
    return result


def shop_value(shop: StoreProfile) -> dict[str, Any]:
    return {
        "name": shop.name,
        "url": shop.url.rstrip("/"),
        "support_email": shop.support_email,
        "support_phone": shop.support_phone,
        "currency": shop.currency,
    }


def customer_value(customer: Customer) -> dict[str, Any]:
    """The profile: custom properties first, so the standard fields always win."""
    value: dict[str, Any] = dict(customer.properties or {})
    value.update(
        {
            "id": customer.id,
            "user_id": customer.user_id,
            "email": customer.email,
            "phone": customer.phone,
            "first_name": customer.first_name,
            "last_name": customer.last_name,
            "name": " ".join(p for p in (customer.first_name, customer.last_name) if p) or None,
            "city": customer.city,
            "region": customer.region,
            "country": customer.country,
            "timezone": customer.timezone,
            "locale": customer.locale,
            "tags": list(customer.tags or []),
            "orders_count": customer.orders_count,
            "total_spent": str(customer.total_spent),
            "last_order_at": customer.last_order_at.isoformat() if customer.last_order_at else None,
        }
    )
    return value


def checkout_value(session: Session, checkout: Checkout, shop: StoreProfile) -> dict[str, Any]:
    items = [_item_value(item) for item in with_catalog_images(session, checkout.items or [])]
    return {
        "id": checkout.external_id,
        "kind": checkout.kind,
        "items": items,
        "item_count": sum(item["quantity"] for item in items),
        "total": str(checkout.value),
        "currency": checkout.currency or shop.currency,
        "coupon": checkout.coupon,
        "recovery_url": checkout.recovery_url or recovery_url(shop, checkout.items or []),
    }


def recovery_url(shop: StoreProfile, items: Sequence[Mapping[str, Any]]) -> str:
    """A link that rebuilds the saved cart: Shopify's cart permalink `/cart/{variant}:{qty},…` when
    every line has a variant id, else the shop's cart page."""
    base = shop.url.rstrip("/")
    lines = [(item.get("variant_id"), item.get("quantity") or 1) for item in items]
    if lines and all(variant for variant, _ in lines):
        return f"{base}/cart/" + ",".join(
            f"{quote(str(variant), safe='')}:{int(qty)}" for variant, qty in lines
        )
    return f"{base}/cart"


def _item_value(item: Mapping[str, Any]) -> dict[str, Any]:
    quantity = int(item.get("quantity") or 1)
    return {
        "product_id": item.get("product_id"),
        "variant_id": item.get("variant_id"),
        "title": item.get("name") or item.get("product_id"),
        "name": item.get("name") or item.get("product_id"),
        "variant": item.get("variant"),
        "image": item.get("image_url"),
        "image_url": item.get("image_url"),
        "price": item.get("price"),
        "quantity": quantity,
        "line_total": str(_amount(item.get("price")) * quantity),
        "url": item.get("url"),
    }


def _amount(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value is not None else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def _checkout_for(session: Session, customer: Customer | None, event: Mapping[str, Any]) -> Checkout | None:
    key = event.get("checkout_id") or event.get("cart_id")
    if not key or customer is None:
        return None
    rows = session.scalars(
        select(Checkout).where(Checkout.external_id == str(key)).order_by(Checkout.id.desc()).limit(2)
    ).all()
    # A cart and a checkout may share an external id: prefer the customer's own, then a checkout.
    rows = sorted(rows, key=lambda c: (c.customer_id != customer.id, c.kind != "checkout"))
    return rows[0] if rows else None


def _order_for(session: Session, event: Mapping[str, Any]) -> dict[str, Any] | None:
    order_id = event.get("order_id")
    if not order_id:
        return None
    order = session.scalars(select(Order).where(Order.order_id == str(order_id))).first()
    if order is None:
        return None
    lines = session.scalars(select(OrderLine).where(OrderLine.order_pk == order.id).order_by(OrderLine.id))
    return {
        "id": order.order_id,
        "total": str(order.total),
        "subtotal": str(order.subtotal) if order.subtotal is not None else None,
        "shipping": str(order.shipping) if order.shipping is not None else None,
        "tax": str(order.tax) if order.tax is not None else None,
        "discount": str(order.discount) if order.discount is not None else None,
        "currency": order.currency,
        "coupons": list(order.coupons or []),
        "status": order.status,
        "placed_at": order.placed_at.isoformat(),
        "items": [
            {
                "product_id": line.product_id,
                "variant_id": line.variant_id,
                "name": line.name,
                "title": line.name,
                "price": str(line.price) if line.price is not None else None,
                "quantity": line.quantity,
            }
            for line in lines
        ],
    }


def _product_ids(event: Mapping[str, Any]) -> list[str]:
    ids: list[str] = []
    products = event.get("products")
    if isinstance(products, list):
        ids += [str(p.get("product_id") or p.get("id")) for p in products if isinstance(p, dict)]
    if event.get("product_id"):
        ids.append(str(event["product_id"]))
    return [i for i in ids if i and i != "None"]
