"""What each event does to a profile and to the store model (docs/events.md is the contract).

`apply_event` is called for every event of a batch, in order, with the profile phase 1 chose.
Rows the batch needs (checkouts, orders, open browse/search sessions) are loaded up front by
`BatchContext.load`, so applying an event issues no query in the common case.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from winback.commerce import catalog
from winback.db.expressions import one_of
from winback.db.models import (
    Checkout,
    ConsentRecord,
    Customer,
    CustomerCollection,
    CustomerProduct,
    IntentSession,
    Order,
    OrderLine,
    Product,
    Refund,
)
from winback.kernel.clock import as_utc
from winback.kernel.money import to_amount
from winback.processing import aggregates
from winback.profiles import contact, traits
from winback.runtime import Runtime
from winback.settings import StoreProfile

log = logging.getLogger(__name__)

ZERO = aggregates.ZERO
DWELL_CAP = timedelta(minutes=30)  # a longer gap means the visitor left the page, not read it

CART_EVENTS = frozenset({"Product Added", "Product Removed", "Cart Viewed"})
CHECKOUT_EVENTS = frozenset({"Checkout Started", "Checkout Updated"})
CHECKOUT_ACTIVITY_EVENTS = frozenset(
    {"Checkout Step Viewed", "Checkout Step Completed", "Payment Info Entered"}
)
ORDER_EVENTS = frozenset({"Order Completed", "Order Updated", "Order Refunded", "Order Cancelled"})
# Events whose `email`/`phone` properties identify the person (a guest checkout, say).
CONTACT_BEARING_EVENTS = CHECKOUT_EVENTS | CHECKOUT_ACTIVITY_EVENTS | {"Order Completed", "Order Updated"}
CONVERTING_EVENTS = frozenset({"Product Added", "Order Completed"})


def _text(value: Any, limit: int = 255) -> str | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    return text[:limit] or None


def _quantity(value: Any) -> int:
    try:
        quantity = int(value)
    except (TypeError, ValueError):
        return 1
    return max(quantity, 0)


def line_item(props: Mapping[str, Any]) -> dict[str, Any] | None:
    """A cart/checkout line from a Segment product object."""
    product_id = _text(props.get("product_id")) or _text(props.get("id")) or _text(props.get("sku"))
    if product_id is None:
        return None
    price = to_amount(props.get("price"))
    return {
        "product_id": product_id,
        "variant_id": _text(props.get("variant_id")),
        "sku": _text(props.get("sku")),
        "name": _text(props.get("name"), 500),
        "variant": _text(props.get("variant")),
        "price": str(price) if price is not None else None,
        "quantity": _quantity(props.get("quantity", 1)),
        "image_url": _text(props.get("image_url"), 2000),
        "url": _text(props.get("url"), 2000),
        "category": _text(props.get("category"), 300),
    }


def products_of(props: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    products = props.get("products")
    return [p for p in products if isinstance(p, dict)] if isinstance(products, list) else []


def lines_value(items: Iterable[Mapping[str, Any]]) -> Decimal:
    total = ZERO
    for item in items:
        price = to_amount(item.get("price"))
        if price is not None:
            total += price * int(item.get("quantity") or 0)
    return total


def _same_line(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a.get("product_id") == b.get("product_id") and a.get("variant_id") == b.get("variant_id")


def checkout_key(props: Mapping[str, Any]) -> str | None:
    return _text(props.get("checkout_id")) or _text(props.get("cart_id")) or _text(props.get("order_id"))


def implicit_cart_id(customer_id: int) -> str:
    """The cart of a client that sends cart events without a cart_id."""
    return f"customer:{customer_id}"


class ConsentEntry(NamedTuple):
    """One consent record, as the replay check reads it."""

    recorded_at: datetime
    status: str
    source: str
    evidence: Mapping[str, Any]


@dataclass
class BatchContext:
    session: Session
    runtime: Runtime
    now: datetime
    checkouts: dict[tuple[str, str], Checkout] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    open_sessions: dict[tuple[int, str], IntentSession] = field(default_factory=dict)
    product_collections: dict[str, list[str]] = field(default_factory=dict)
    bought_products: dict[tuple[int, str], CustomerProduct] = field(default_factory=dict)
    bought_collections: dict[tuple[int, str], CustomerCollection] = field(default_factory=dict)
    pending_lines: list[tuple[Order, dict[str, Any]]] = field(default_factory=list)
    catalog_updates: list[catalog.ProductInfo] = field(default_factory=list)
    profile: StoreProfile = field(default_factory=StoreProfile)
    store_region: str | None = None
    # (customer id, channel) → its consent records (recorded_at, status, source, evidence) in time
    # order: read once per batch, then kept up to date as the batch records more.
    consent_history: dict[tuple[int, str], list[ConsentEntry]] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        session: Session,
        runtime: Runtime,
        now: datetime,
        events: Sequence[tuple[Row[Any], Customer]],
        *,
        profile: StoreProfile,
    ) -> BatchContext:
        """Fetch every row the batch's events (each with its surviving customer) will touch."""
        context = cls(
            session, runtime, now, profile=profile, store_region=contact.region_of_locale(profile.locale)
        )
        customers = list({id(customer): customer for _row, customer in events}.values())
        buyers: set[int] = set()
        checkout_keys: set[tuple[str, str]] = {("cart", implicit_cart_id(c.id)) for c in customers}
        order_ids: set[str] = set()
        bought_product_ids: set[str] = set()
        for row, customer in events:
            if row.type != "track" or not row.event:
                continue
            props = row.properties or {}
            if row.event not in HANDLERS:
                continue
            # Any id an e-commerce event names may be a cart or a checkout key: fetch them all.
            cart_id, checkout_id, order_id = (
                _text(props.get(n)) for n in ("cart_id", "checkout_id", "order_id")
            )
            if cart_id:
                checkout_keys.update({("cart", cart_id), ("checkout", cart_id)})
            if checkout_id:
                checkout_keys.add(("checkout", checkout_id))
            if order_id:
                checkout_keys.add(("checkout", order_id))
            if row.event in ORDER_EVENTS:
                if order_id:
                    order_ids.add(order_id)
                if row.event == "Order Completed":
                    buyers.add(customer.id)
                bought_product_ids.update(
                    item["product_id"] for p in products_of(props) if (item := line_item(p)) is not None
                )
        context._load_checkouts(checkout_keys)
        if order_ids:
            for order in session.scalars(select(Order).where(one_of(Order.order_id, order_ids))):
                context.orders[order.order_id] = order
        customer_ids = [c.id for c in customers]
        for start in range(0, len(customer_ids), 500):
            chunk = customer_ids[start : start + 500]
            query = (
                select(IntentSession)
                .where(one_of(IntentSession.customer_id, chunk), IntentSession.status == "open")
                .order_by(IntentSession.last_activity_at)
            )
            for intent in session.scalars(query):
                context.open_sessions[(intent.customer_id, intent.kind)] = intent  # latest wins
        if buyers:
            context._load_bought(buyers, bought_product_ids)
        if bought_product_ids:
            query = select(Product.product_id, Product.collections).where(
                one_of(Product.product_id, bought_product_ids)
            )
            for product_id, collections in session.execute(query):
                context.product_collections[product_id] = list(collections or [])
        return context

    def _load_checkouts(self, keys: set[tuple[str, str]]) -> None:
        by_kind: dict[str, list[str]] = {}
        for kind, external_id in keys:
            by_kind.setdefault(kind, []).append(external_id)
        for kind, external_ids in by_kind.items():
            query = select(Checkout).where(Checkout.kind == kind, one_of(Checkout.external_id, external_ids))
            for checkout in self.session.scalars(query):
                self.checkouts[(checkout.kind, checkout.external_id)] = checkout

    def _load_bought(self, customer_ids: set[int], product_ids: set[str]) -> None:
        ids = list(customer_ids)
        for row in self.session.scalars(
            select(CustomerProduct).where(
                one_of(CustomerProduct.customer_id, ids), one_of(CustomerProduct.product_id, product_ids)
            )
        ):
            self.bought_products[(row.customer_id, row.product_id)] = row
        for row in self.session.scalars(
            select(CustomerCollection).where(one_of(CustomerCollection.customer_id, ids))
        ):
            self.bought_collections[(row.customer_id, row.collection)] = row

    def flush(self) -> None:
        """Write what was deferred to the end of the batch: order lines, catalog updates."""
        if self.pending_lines:
            self.session.flush()  # orders get their ids
            self.session.execute(
                OrderLine.__table__.insert(),
                [{"order_pk": order.id, **line} for order, line in self.pending_lines],
            )
        catalog.upsert_products(self.session, self.catalog_updates, self.now)

    def consent_history_of(self, customer_id: int, channel: str) -> list[ConsentEntry]:
        """The customer's consent records on `channel`, oldest first, those of this batch included.
        Read without autoflush: flushing the whole batch's changes for every consent trait made
        each one cost a round of UPDATEs (records added since are in the list already)."""
        key = (customer_id, channel)
        history = self.consent_history.get(key)
        if history is None:
            with self.session.no_autoflush:
                rows = self.session.execute(
                    select(ConsentRecord.recorded_at, ConsentRecord.status, ConsentRecord.source,
                           ConsentRecord.evidence)
                    .where(ConsentRecord.customer_id == customer_id, ConsentRecord.channel == channel)
                    .order_by(ConsentRecord.recorded_at, ConsentRecord.id)
                ).all()  # fmt: skip
            history = self.consent_history[key] = [
                ConsentEntry(as_utc(at), status, source, evidence or {})
                for at, status, source, evidence in rows
            ]
        return history

    @property
    def settings(self):  # type: ignore[no-untyped-def]
        return self.runtime.settings


# --- entry point --------------------------------------------------------------------------------


def apply_event(
    context: BatchContext, customer: Customer, row: Row[Any], update: traits.ProfileUpdate | None
) -> None:
    """Apply one event to its (surviving) customer and the store model."""
    at: datetime = row.timestamp
    if row.source != "derived":
        aggregates.see(customer, at)
        _close_dwell(context, customer, at)
    if customer.updated_at != context.now:
        customer.updated_at = context.now
    if update is not None:
        traits.apply_update(customer, update)
        _record_consent(context, customer, row, update.consent)
    if row.type == "group" and row.group_id:
        customer.properties = {**(customer.properties or {}), "group_id": row.group_id}
    if row.type != "track" or not row.event:
        return
    handler = HANDLERS.get(row.event)
    if handler is not None:
        handler(context, customer, row, row.properties or {}, at)


# --- consent ------------------------------------------------------------------------------------


def _record_consent(
    context: BatchContext, customer: Customer, row: Row[Any], changes: list[traits.ConsentChange]
) -> None:
    if not changes:
        return
    ctx = row.context or {}
    page = ctx.get("page") if isinstance(ctx.get("page"), dict) else {}
    base_evidence = {
        "message_id": row.message_id,
        "event": row.event or row.type,
        "ip": ctx.get("ip"),
        "user_agent": ctx.get("userAgent"),
        "page_url": page.get("url"),
        "timestamp": row.timestamp.isoformat(),
    }
    for change in changes:
        column = f"{change.channel}_consent"
        if getattr(customer, column) == change.status:
            continue
        source = change.source or f"{row.source}:{row.type}"
        if _is_replayed_consent(context, customer, change, source):
            continue
        setattr(customer, column, change.status)
        evidence = {k: v for k, v in {**base_evidence, **change.evidence}.items() if v is not None}
        context.session.add(
            ConsentRecord(
                customer_id=customer.id,
                channel=change.channel,
                status=change.status,
                source=source,
                evidence=evidence,
                event_id=row.id,
                recorded_at=row.timestamp,
            )
        )
        # Kept in (recorded_at, id) order, as the table would return it: after equal times.
        bisect.insort_right(
            context.consent_history_of(customer.id, change.channel),
            ConsentEntry(as_utc(row.timestamp), change.status, source, evidence),
            key=lambda entry: entry.recorded_at,
        )


# Evidence keys that differ between deliveries of the same consent (not part of its identity).
VOLATILE_EVIDENCE = frozenset(
    {"message_id", "event", "timestamp", "ip", "user_agent", "page_url", "checkout_updated_at"}
)


def consent_fingerprint(evidence: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in evidence.items() if key not in VOLATILE_EVIDENCE}


def _is_replayed_consent(
    context: BatchContext, customer: Customer, change: traits.ConsentChange, source: str
) -> bool:
    """True when this exact consent (same source and proof) was already recorded and a later
    change overrode it: a re-sent opt-in (a checkout update still carrying its ticked box, an
    identify repeating an old trait) must not undo someone's later opt-out. A genuine new opt-in
    carries new proof."""
    fingerprint = consent_fingerprint(change.evidence)
    seen_same = False
    for _, status, recorded_source, evidence in context.consent_history_of(customer.id, change.channel):
        if (
            status == change.status
            and recorded_source == source
            and consent_fingerprint(evidence) == fingerprint
        ):
            seen_same = True
        elif seen_same and status != change.status:
            return True
    return False


# --- browsing and searching ---------------------------------------------------------------------


def _open_session(context: BatchContext, customer: Customer, kind: str, at: datetime) -> IntentSession:
    window = timedelta(
        seconds=context.settings.browse_abandoned_after_s
        if kind == "browse"
        else context.settings.search_abandoned_after_s
    )
    current = context.open_sessions.get((customer.id, kind))
    if current is not None and at - current.last_activity_at < window:
        return current
    # No session, or the last one has run out (the sweep will close it): start another.
    fresh = IntentSession(
        customer_id=customer.id, kind=kind, status="open", items=[], started_at=at, last_activity_at=at
    )
    context.session.add(fresh)
    context.open_sessions[(customer.id, kind)] = fresh
    return fresh


def _close_dwell(context: BatchContext, customer: Customer, at: datetime) -> None:
    """The time from a product view to the visitor's next event is time spent on that page."""
    browse = context.open_sessions.get((customer.id, "browse"))
    if browse is None:
        return
    items = browse.items or []
    for index, item in enumerate(items):
        if item.get("on_page"):
            viewed_at = datetime.fromisoformat(item["last_viewed_at"])
            gap = at - viewed_at
            item = {**item, "on_page": False}
            if timedelta(0) < gap <= DWELL_CAP:
                item["dwell_seconds"] = round(float(item.get("dwell_seconds", 0)) + gap.total_seconds(), 3)
            browse.items = [*items[:index], item, *items[index + 1 :]]
            return


def _viewed(context: BatchContext, customer: Customer, at: datetime, entry: dict[str, Any]) -> None:
    browse = _open_session(context, customer, "browse", at)
    if browse.items is None:
        browse.items = []
    items = browse.items
    for item in items:
        if item.get("kind") == entry["kind"] and item.get("id") == entry["id"]:
            item.update((k, v) for k, v in entry.items() if v is not None)
            item["views"] = int(item.get("views", 0)) + 1
            item["last_viewed_at"] = at.isoformat()
            item["on_page"] = True
            break
    else:
        items.append(
            {**entry, "views": 1, "dwell_seconds": 0.0, "last_viewed_at": at.isoformat(), "on_page": True}
        )
    flag_modified(browse, "items")  # changed in place: a view is the hottest path of all
    if at > browse.last_activity_at:
        browse.last_activity_at = at


def _convert_sessions(context: BatchContext, customer: Customer, at: datetime) -> None:
    for kind in ("browse", "search"):
        intent = context.open_sessions.pop((customer.id, kind), None)
        if intent is not None:
            intent.status = "converted"
            intent.closed_at = at


def on_product_viewed(
    context: BatchContext, customer: Customer, row: Row[Any], props: Mapping[str, Any], at: datetime
) -> None:
    info = catalog.product_from_properties(props)
    if info is None:
        return
    context.catalog_updates.append(info)
    if customer.last_product_viewed_at is None or at >= customer.last_product_viewed_at:
        customer.last_product_viewed_id = info.product_id
        customer.last_product_viewed_at = at
    _viewed(
        context,
        customer,
        at,
        {
            "kind": "product",
            "id": info.product_id,
            "name": info.name,
            "url": info.url,
            "image_url": info.image_url,
            "price": str(info.price if info.price is not None else info.variant_price)
            if (info.price or info.variant_price)
            else None,
            "category": info.category,
        },
    )


def on_list_viewed(
    context: BatchContext, customer: Customer, row: Row[Any], props: Mapping[str, Any], at: datetime
) -> None:
    for product in products_of(props):
        if (info := catalog.product_from_properties(product)) is not None:
            context.catalog_updates.append(info)
    category = _text(props.get("category"), 300) or _text(props.get("list_id"), 300)
    if category:
        _viewed(context, customer, at, {"kind": "category", "id": category, "name": category})


def on_products_searched(
    context: BatchContext, customer: Customer, row: Row[Any], props: Mapping[str, Any], at: datetime
) -> None:
    query = _text(props.get("query"), 500)
    if not query:
        return
    search = _open_session(context, customer, "search", at)
    search.items = [*(search.items or []), {"query": query, "searched_at": at.isoformat()}]
    search.last_activity_at = max(search.last_activity_at, at)


def on_wishlist(
    context: BatchContext, customer: Customer, row: Row[Any], props: Mapping[str, Any], at: datetime
) -> None:
    if (info := catalog.product_from_properties(props)) is not None:
        context.catalog_updates.append(info)


# --- carts and checkouts ------------------------------------------------------------------------


def _get_checkout(
    context: BatchContext, customer: Customer, kind: str, external_id: str, at: datetime
) -> Checkout:
    checkout = context.checkouts.get((kind, external_id))
    if checkout is None:
        checkout = Checkout(
            kind=kind,
            external_id=external_id,
            customer_id=customer.id,
            status="open",
            value=ZERO,
            items=[],
            created_at=at,
            updated_at=context.now,
            last_activity_at=at,
        )
        context.session.add(checkout)
        context.checkouts[(kind, external_id)] = checkout
    elif checkout.status in ("completed", "recovered") and kind == "cart":
        # A finished cart that sees new activity is a new shopping trip under the same id.
        checkout.status, checkout.items, checkout.value = "open", [], ZERO
        checkout.completed_at = checkout.abandoned_at = None
        checkout.order_id = None
    if checkout.customer_id != customer.id:
        checkout.customer_id = customer.id
    return checkout


def _touch(context: BatchContext, customer: Customer, checkout: Checkout, at: datetime) -> None:
    checkout.last_activity_at = max(checkout.last_activity_at, at)
    checkout.updated_at = context.now
    customer.last_cart_activity_at = max(filter(None, (customer.last_cart_activity_at, at)))


def _cart_for(context: BatchContext, customer: Customer, props: Mapping[str, Any], at: datetime) -> Checkout:
    cart_id = _text(props.get("cart_id")) or implicit_cart_id(customer.id)
    return _get_checkout(context, customer, "cart", cart_id, at)


def on_product_added(
    context: BatchContext, customer: Customer, row: Row[Any], props: Mapping[str, Any], at: datetime
) -> None:
    cart = _cart_for(context, customer, props, at)
    item = line_item(props)
    if item is not None:
        context.catalog_updates.append(catalog.product_from_properties(props))  # type: ignore[arg-type]
        items = list(cart.items or [])
        for index, existing in enumerate(items):
            if _same_line(existing, item):
                items[index] = {**existing, **{k: v for k, v in item.items() if v is not None},
                                "quantity": int(existing.get("quantity", 0)) + item["quantity"]}  # fmt: skip
                break
        else:
            items.append(item)
        cart.items = items
        cart.value = lines_value(items)
    if cart.status == "checked_out":
        cart.status = "open"
    _set_currency(cart, props)
    _touch(context, customer, cart, at)
    _convert_sessions(context, customer, at)


def on_product_removed(
    context: BatchContext, customer: Customer, row: Row[Any], props: Mapping[str, Any], at: datetime
) -> None:
    cart = _cart_for(context, customer, props, at)
    item = line_item(props)
    if item is not None:
        items = []
        for existing in cart.items or []:
            if _same_line(existing, item):
                remaining = int(existing.get("quantity", 0)) - max(item["quantity"], 1)
                if remaining > 0:
                    items.append({**existing, "quantity": remaining})
            else:
                items.append(existing)
        cart.items = items
        cart.value = lines_value(items)
    _touch(context, customer, cart, at)


def on_cart_viewed(
    context: BatchContext, customer: Customer, row: Row[Any], props: Mapping[str, Any], at: datetime
) -> None:
    cart = _cart_for(context, customer, props, at)
    products = products_of(props)
    if products:
        items = [item for p in products if (item := line_item(p)) is not None]
        context.catalog_updates.extend(info for p in products if (info := catalog.product_from_properties(p)))
        cart.items = items
        cart.value = to_amount(props.get("value")) or lines_value(items)
    _set_currency(cart, props)
    _touch(context, customer, cart, at)


def _set_currency(checkout: Checkout, props: Mapping[str, Any]) -> None:
    currency = _text(props.get("currency"), 3)
    if currency and len(currency) == 3:
        checkout.currency = currency.upper()


def on_checkout(
    context: BatchContext, customer: Customer, row: Row[Any], props: Mapping[str, Any], at: datetime
) -> None:
    key = checkout_key(props)
    if key is None:
        log.info(
            "event %s: %s without checkout_id/cart_id/order_id; nothing to track", row.message_id, row.event
        )
        return
    checkout = _get_checkout(context, customer, "checkout", key, at)
    if checkout.status in ("completed", "recovered"):
        return  # updates after the order add nothing
    products = products_of(props)
    if products:
        checkout.items = [item for p in products if (item := line_item(p)) is not None]
        context.catalog_updates.extend(info for p in products if (info := catalog.product_from_properties(p)))
    value = to_amount(props.get("value"))
    if value is None:
        value = to_amount(props.get("total"))
    if value is None:
        value = to_amount(props.get("revenue"))
    checkout.value = value if value is not None else lines_value(checkout.items or [])
    _set_currency(checkout, props)
    coupon = _text(props.get("coupon"), 200)
    if coupon:
        checkout.coupon = coupon
    recovery = _text(props.get("recovery_url"), 2000) or _text(props.get("checkout_url"), 2000)
    if recovery:
        checkout.recovery_url = recovery
    _checkout_contact(context, checkout, props)
    cart_id = _text(props.get("cart_id"))
    if cart_id and cart_id != key:
        checkout.cart_id = cart_id
        cart = context.checkouts.get(("cart", cart_id))
        if cart is not None and cart.status == "open":
            cart.status = "checked_out"
            cart.updated_at = context.now
    step = props.get("step")
    if isinstance(step, int) and not isinstance(step, bool):
        checkout.step = step
    _touch(context, customer, checkout, at)


def _checkout_contact(context: BatchContext, checkout: Checkout, props: Mapping[str, Any]) -> None:
    email = contact.normalise_email(props.get("email"))
    if email:
        checkout.email = email
    phone = contact.normalise_phone(props.get("phone"), context.store_region)
    if phone:
        checkout.phone = phone


def on_checkout_activity(
    context: BatchContext, customer: Customer, row: Row[Any], props: Mapping[str, Any], at: datetime
) -> None:
    key = checkout_key(props)
    if key is None:
        return
    checkout = _get_checkout(context, customer, "checkout", key, at)
    if checkout.status in ("completed", "recovered"):
        return
    step = props.get("step")
    if isinstance(step, int) and not isinstance(step, bool):
        checkout.step = step
    _checkout_contact(context, checkout, props)
    _touch(context, customer, checkout, at)


def on_coupon_applied(
    context: BatchContext, customer: Customer, row: Row[Any], props: Mapping[str, Any], at: datetime
) -> None:
    coupon = (
        _text(props.get("coupon_name"), 200)
        or _text(props.get("coupon_id"), 200)
        or _text(props.get("coupon"), 200)
    )
    if not coupon:
        return
    targets = []
    if (key := _text(props.get("checkout_id")) or _text(props.get("order_id"))) and (
        "checkout",
        key,
    ) in context.checkouts:
        targets.append(context.checkouts[("checkout", key)])
    if (cart_id := _text(props.get("cart_id"))) is not None:
        targets.append(_get_checkout(context, customer, "cart", cart_id, at))
    for checkout in targets:
        checkout.coupon = coupon
        _touch(context, customer, checkout, at)


# --- orders -------------------------------------------------------------------------------------


def _order_total(props: Mapping[str, Any], lines: list[dict[str, Any]]) -> Decimal:
    for name in ("total", "revenue", "value"):
        amount = to_amount(props.get(name))
        if amount is not None:
            return amount
    return lines_value(lines)


def _shipping(props: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    address = props.get("shipping_address") if isinstance(props.get("shipping_address"), dict) else {}
    country = contact.normalise_country(address.get("country") or props.get("shipping_country"))
    region = _text(address.get("state") or address.get("region") or props.get("shipping_region"), 200)
    city = _text(address.get("city") or props.get("shipping_city"), 200)
    return country, region, city


def _order_customer(context: BatchContext, customer: Customer, order: Order) -> Customer | None:
    if order.customer_id == customer.id:
        return customer
    if order.customer_id is None:
        return None
    owner = context.session.get(Customer, order.customer_id)
    while owner is not None and owner.merged_into_id is not None:
        owner = context.session.get(Customer, owner.merged_into_id)
    return owner


def on_order_completed(
    context: BatchContext, customer: Customer, row: Row[Any], props: Mapping[str, Any], at: datetime
) -> None:
    order_id = _text(props.get("order_id"))
    if order_id is None:
        log.warning(
            "event %s: Order Completed without order_id; the order cannot be recorded", row.message_id
        )
        return
    products = products_of(props)
    lines = [item for p in products if (item := line_item(p)) is not None]
    context.catalog_updates.extend(info for p in products if (info := catalog.product_from_properties(p)))
    country, region, city = _shipping(props)
    coupons = [c for c in (_text(props.get("coupon"), 200),) if c]
    existing = context.orders.get(order_id)
    if existing is not None:
        # The same order reported again (e.g. by the storefront and by Shopify): enrich, never count twice.
        for name, value in (
            ("shipping_country", country),
            ("shipping_region", region),
            ("shipping_city", city),
        ):
            if value and getattr(existing, name) is None:
                setattr(existing, name, value)
        return
    total = _order_total(props, lines)
    currency = (_text(props.get("currency"), 3) or context.profile.currency).upper()
    order = Order(
        order_id=order_id,
        customer_id=customer.id,
        checkout_id=_text(props.get("checkout_id")),
        cart_id=_text(props.get("cart_id")),
        status="paid" if _text(props.get("financial_status")) == "paid" else "placed",
        total=total,
        subtotal=to_amount(props.get("subtotal")),
        revenue=to_amount(props.get("revenue")),
        shipping=to_amount(props.get("shipping")),
        tax=to_amount(props.get("tax")),
        discount=to_amount(props.get("discount")),
        refunded_total=ZERO,
        currency=currency,
        coupons=coupons,
        shipping_country=country,
        shipping_region=region,
        shipping_city=city,
        properties={k: v for k, v in props.items() if k not in ("products",)},
        placed_at=at,
        updated_at=context.now,
    )
    context.session.add(order)
    context.orders[order_id] = order
    for item in lines:
        context.pending_lines.append(
            (
                order,
                {
                    "customer_id": customer.id,
                    "product_id": item["product_id"],
                    "variant_id": item["variant_id"],
                    "sku": item["sku"],
                    "name": item["name"],
                    "category": item["category"],
                    "price": to_amount(item["price"]),
                    "quantity": item["quantity"],
                },
            )
        )
    aggregates.add_order(customer, total, at)
    _record_bought(context, customer, lines, products, at)
    _complete_checkouts(context, customer, props, order_id, at)
    _convert_sessions(context, customer, at)


def _record_bought(
    context: BatchContext,
    customer: Customer,
    lines: list[dict[str, Any]],
    products: list[Mapping[str, Any]],
    at: datetime,
) -> None:
    quantities: dict[str, int] = {}
    collections: set[str] = set()
    for item, props in zip(lines, [p for p in products if line_item(p) is not None], strict=True):
        quantities[item["product_id"]] = quantities.get(item["product_id"], 0) + item["quantity"]
        collections.update(catalog.collections_of(props))
        collections.update(context.product_collections.get(item["product_id"], []))
    for product_id, quantity in quantities.items():
        bought = context.bought_products.get((customer.id, product_id))
        if bought is None:
            bought = CustomerProduct(
                customer_id=customer.id,
                product_id=product_id,
                quantity=0,
                first_bought_at=at,
                last_bought_at=at,
            )
            context.session.add(bought)
            context.bought_products[(customer.id, product_id)] = bought
        bought.quantity += quantity
        bought.first_bought_at = min(bought.first_bought_at, at)
        bought.last_bought_at = max(bought.last_bought_at, at)
    for collection in collections:
        from_collection = context.bought_collections.get((customer.id, collection))
        if from_collection is None:
            from_collection = CustomerCollection(
                customer_id=customer.id, collection=collection, first_bought_at=at, last_bought_at=at
            )
            context.session.add(from_collection)
            context.bought_collections[(customer.id, collection)] = from_collection
        from_collection.first_bought_at = min(from_collection.first_bought_at, at)
        from_collection.last_bought_at = max(from_collection.last_bought_at, at)


def _complete_checkouts(
    context: BatchContext, customer: Customer, props: Mapping[str, Any], order_id: str, at: datetime
) -> None:
    candidates: list[tuple[str, str]] = []
    for name in ("checkout_id", "cart_id"):
        if value := _text(props.get(name)):
            candidates.append(("checkout", value))
    candidates.append(("checkout", order_id))
    if cart_id := _text(props.get("cart_id")):
        candidates.append(("cart", cart_id))
    candidates.append(("cart", implicit_cart_id(customer.id)))
    for key in dict.fromkeys(candidates):
        checkout = context.checkouts.get(key)
        if checkout is None or checkout.status in ("completed", "recovered"):
            continue
        if key[1] == implicit_cart_id(customer.id) and checkout.status != "open":
            continue
        checkout.status = "recovered" if checkout.status == "abandoned" else "completed"
        checkout.completed_at = at
        checkout.order_id = order_id
        checkout.updated_at = context.now


def _order_for(context: BatchContext, row: Row[Any], props: Mapping[str, Any]) -> Order | None:
    order_id = _text(props.get("order_id"))
    order = context.orders.get(order_id) if order_id else None
    if order is None:
        log.warning(
            "event %s: %s for unknown order %r; kept as an event only", row.message_id, row.event, order_id
        )
    return order


def on_order_updated(
    context: BatchContext, customer: Customer, row: Row[Any], props: Mapping[str, Any], at: datetime
) -> None:
    order = _order_for(context, row, props)
    if order is None:
        return
    status = _text(props.get("financial_status"), 24) or _text(props.get("status"), 24)
    if status == "paid" and order.status == "placed":
        order.status = "paid"
    new_total = None
    for name in ("total", "revenue"):
        if (new_total := to_amount(props.get(name))) is not None:
            break
    if new_total is not None and new_total != order.total and order.status != "cancelled":
        owner = _order_customer(context, customer, order)
        if owner is not None:
            aggregates.change_order_total(owner, order.total, new_total)
        order.total = new_total
    country, region, city = _shipping(props)
    for name, value in (("shipping_country", country), ("shipping_region", region), ("shipping_city", city)):
        if value:
            setattr(order, name, value)
    order.updated_at = context.now


def on_order_refunded(
    context: BatchContext, customer: Customer, row: Row[Any], props: Mapping[str, Any], at: datetime
) -> None:
    order = _order_for(context, row, props)
    if order is None:
        return
    refund_id = _text(props.get("refund_id")) or f"{order.order_id}:{row.message_id}"
    if context.session.scalar(select(Refund.id).where(Refund.refund_id == refund_id)) is not None:
        return
    remaining = order.total - order.refunded_total
    amount = None
    for name in ("total", "amount", "revenue", "value"):
        if (amount := to_amount(props.get(name))) is not None:
            break
    amount = remaining if amount is None else min(amount, remaining)
    if amount <= 0:
        return
    context.session.add(
        Refund(
            refund_id=refund_id,
            order_pk=order.id,
            customer_id=order.customer_id,
            amount=amount,
            currency=order.currency,
            refunded_at=at,
        )  # fmt: skip
    )
    order.refunded_total += amount
    if order.status != "cancelled":
        order.status = "refunded" if order.refunded_total >= order.total else "partially_refunded"
        owner = _order_customer(context, customer, order)
        if owner is not None:
            aggregates.add_refund(owner, amount)
    order.updated_at = context.now


def on_order_cancelled(
    context: BatchContext, customer: Customer, row: Row[Any], props: Mapping[str, Any], at: datetime
) -> None:
    order = _order_for(context, row, props)
    if order is None or order.status == "cancelled":
        return
    owner = _order_customer(context, customer, order)
    order.status = "cancelled"
    order.cancelled_at = at
    order.updated_at = context.now
    if owner is not None:
        aggregates.remove_order(owner, order.total - order.refunded_total)
        # First/last order dates must not point at a cancelled order ("not ordered for 90 days"
        # reads them): look up the customer's remaining orders — cancellations are rare.
        context.session.flush()
        first, last = context.session.execute(
            select(func.min(Order.placed_at), func.max(Order.placed_at)).where(
                Order.customer_id == owner.id, Order.status != "cancelled"
            )
        ).one()
        owner.first_order_at, owner.last_order_at = first, last


HANDLERS = {
    "Product Viewed": on_product_viewed,
    "Product List Viewed": on_list_viewed,
    "Product Category Viewed": on_list_viewed,
    "Products Searched": on_products_searched,
    "Product Added to Wishlist": on_wishlist,
    "Product Added": on_product_added,
    "Product Removed": on_product_removed,
    "Cart Viewed": on_cart_viewed,
    "Checkout Started": on_checkout,
    "Checkout Updated": on_checkout,
    "Checkout Step Viewed": on_checkout_activity,
    "Checkout Step Completed": on_checkout_activity,
    "Payment Info Entered": on_checkout_activity,
    "Coupon Applied": on_coupon_applied,
    "Order Completed": on_order_completed,
    "Order Updated": on_order_updated,
    "Order Refunded": on_order_refunded,
    "Order Cancelled": on_order_cancelled,
}
