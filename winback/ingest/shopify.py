"""Shopify webhooks mapped onto winback's event contract (docs/events.md) and catalog snapshots.

Pure: no I/O. `plan_delivery` turns one verified delivery (topic + decoded payload) into what must
be written: Segment-spec `EventRow`s, catalog `ProductInfo`s, the resource the delivery is about
(for stale-update checks) and any privacy action. The web route records the plan in one
transaction.

Identity: `userId` is the Shopify customer id when the payload has one. Orders also carry the
anonymous id `shopify-order:<id>`, so a refund (whose payload names only the order) reaches the same
person; checkouts carry `shopify-cart:<cart_token>` (else `shopify-checkout:<token>`), so the
anonymous profile of a Shopify cart is merged into the buyer once the checkout names them. Email
and phone ride along in `context.traits` for the processor to resolve people by.

Consent is only ever taken from an explicit signal: the checkout's marketing boxes (ticked means
subscribed; unticked is not an opt-out) and the customer's `*_marketing_consent.state`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from winback.commerce.catalog import ProductInfo, for_sale
from winback.ingest.segment import EventRow
from winback.kernel.errors import InvalidInput
from winback.kernel.money import to_amount

SOURCE = "shopify"

CHECKOUT_TOPICS = ("checkouts/create", "checkouts/update")
CART_TOPICS = ("carts/create", "carts/update")
ORDER_TOPICS = ("orders/create", "orders/updated", "orders/paid", "orders/fulfilled", "orders/cancelled")
CUSTOMER_TOPICS = ("customers/create", "customers/update")
PRODUCT_TOPICS = ("products/create", "products/update")
PRODUCT_DELETE = "products/delete"
REFUND_TOPICS = ("refunds/create",)
PRIVACY_TOPICS = ("customers/data_request", "customers/redact", "shop/redact")
SUPPORTED_TOPICS = (
    CHECKOUT_TOPICS
    + CART_TOPICS
    + ORDER_TOPICS
    + CUSTOMER_TOPICS
    + PRODUCT_TOPICS
    + (PRODUCT_DELETE,)
    + REFUND_TOPICS
    + PRIVACY_TOPICS
)

# Deliveries that carry a later snapshot or state change of a resource: one triggered before the
# newest delivery already recorded for that resource is stale and dropped. Creations never are
# (an order must be recorded even if its orders/paid overtook it); refunds are one-off facts.
STALE_CHECKED_TOPICS = frozenset(
    {
        "checkouts/update",
        "carts/update",
        "customers/update",
        "products/update",
        PRODUCT_DELETE,
        "orders/updated",
        "orders/paid",
        "orders/fulfilled",
        "orders/cancelled",
    }
)
# customers/redact is never stale (an erasure is always carried out) but is recorded under the
# customer's resource, so a customers/update triggered before it and delivered late is dropped
# instead of bringing the erased details back.

# Shopify's consent states that are an explicit decision; others (not_subscribed, pending,
# redacted, invalid) say nothing and change nothing.
CONSENT_STATES = {"subscribed": "subscribed", "unsubscribed": "unsubscribed"}

# Shopify ids are at most 20 digits and tokens a few dozen characters; this leaves room for the
# prefixes ("shopify-checkout:", "checkout:") inside winback's 255-character id columns.
SHOPIFY_ID_MAX_LENGTH = 200

DEFAULT_VARIANT_TITLE = "Default Title"  # what Shopify calls the only variant of a simple product


# --- signatures ----------------------------------------------------------------------------------


def signature_of(secret: str, body: bytes) -> str:
    """Shopify's `X-Shopify-Hmac-Sha256`: base64 of HMAC-SHA256 over the raw body."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def is_signature_valid(secret: str, body: bytes, signature: str | None) -> bool:
    """Compare in constant time; a missing or non-ASCII header is simply invalid."""
    if not signature:
        return False
    return hmac.compare_digest(
        signature_of(secret, body).encode(), signature.strip().encode("utf-8", "replace")
    )


# --- the plan for one delivery -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """The headers of one webhook delivery that say what it is."""

    webhook_id: str
    topic: str
    triggered_at: datetime | None
    received_at: datetime


@dataclass(frozen=True, slots=True)
class PrivacyAction:
    """A GDPR/CCPA request: `erase_customer` (with what identifies them), `erase_shop` or `export`."""

    kind: str
    shopify_customer_id: str | None = None
    email: str | None = None
    phone: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one delivery asks winback to record."""

    outcome: str  # accepted | ignored | data_request | redacted
    resource_key: str | None = None
    is_stale_checked: bool = False
    events: list[EventRow] = field(default_factory=list)
    products: list[ProductInfo] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)  # product ids the store deleted
    privacy: PrivacyAction | None = None
    # The Shopify customer an order or checkout delivery is about (`customer:{id}`): if they were
    # redacted after this delivery was triggered, it is dropped (it would bring their data back).
    customer_key: str | None = None


def plan_delivery(delivery: Delivery, payload: Any, *, store_url: str, store_currency: str) -> Plan:
    """Map one verified delivery; `InvalidInput` when the payload lacks what its topic needs."""
    topic = delivery.topic
    if topic not in SUPPORTED_TOPICS:
        return Plan(outcome="ignored")
    if not isinstance(payload, dict):
        raise InvalidInput(f"the {topic} payload must be a JSON object", field="body")
    key = resource_key(topic, payload)
    stale_checked = topic in STALE_CHECKED_TOPICS
    if topic in PRODUCT_TOPICS:
        infos = products_from_product(payload, store_url=store_url, currency=store_currency)
        return Plan(outcome="accepted", resource_key=key, is_stale_checked=stale_checked, products=infos)
    if topic == PRODUCT_DELETE:
        withdrawn = [_required_id(payload, "id", topic)]
        return Plan(outcome="accepted", resource_key=key, is_stale_checked=stale_checked, withdrawn=withdrawn)
    if topic in PRIVACY_TOPICS:
        action = privacy_action(topic, payload)
        outcome = "data_request" if action.kind == "export" else "redacted"
        return Plan(outcome=outcome, resource_key=key, is_stale_checked=stale_checked, privacy=action)
    events = map_events(delivery, payload)
    customer_id = (
        _id(_mapping(payload.get("customer")).get("id")) if topic in ORDER_TOPICS + CHECKOUT_TOPICS else None
    )
    return Plan(
        outcome="accepted", resource_key=key, is_stale_checked=stale_checked, events=events,
        customer_key=f"customer:{customer_id}" if customer_id else None,
    )  # fmt: skip


def resource_key(topic: str, payload: Mapping[str, Any]) -> str | None:
    """What a delivery is about, shared by every topic of one resource (orders/create + paid …)."""
    if topic in CHECKOUT_TOPICS:
        return f"checkout:{checkout_id_of(payload)}"
    if topic in CART_TOPICS:
        return f"cart:{cart_id_of(payload)}"
    if topic in ORDER_TOPICS:
        return f"order:{_required_id(payload, 'id', topic)}"
    if topic in REFUND_TOPICS:
        return f"refund:{_required_id(payload, 'id', topic)}"
    if topic in CUSTOMER_TOPICS:
        return f"customer:{_required_id(payload, 'id', topic)}"
    if topic in PRODUCT_TOPICS or topic == PRODUCT_DELETE:
        return f"product:{_required_id(payload, 'id', topic)}"
    if topic == "customers/redact":
        customer_id = _id(_mapping(payload.get("customer")).get("id"))
        return f"customer:{customer_id}" if customer_id else None
    return None


def map_events(delivery: Delivery, payload: Mapping[str, Any]) -> list[EventRow]:
    """The events one checkout, cart, order, refund or customer delivery stands for."""
    topic = delivery.topic
    if topic in CHECKOUT_TOPICS:
        messages = checkout_messages(payload, is_created=topic == "checkouts/create")
    elif topic in CART_TOPICS:
        messages = cart_messages(payload)
    elif topic == "orders/create":
        messages = order_created_messages(payload)
    elif topic == "orders/paid":
        messages = order_updated_messages(payload, topic, financial_status="paid")
    elif topic == "orders/updated":
        messages = order_updated_messages(payload, topic)
    elif topic == "orders/fulfilled":
        messages = order_fulfilled_messages(payload)
    elif topic == "orders/cancelled":
        messages = order_cancelled_messages(payload)
    elif topic in REFUND_TOPICS:
        messages = refund_messages(payload)
    elif topic in CUSTOMER_TOPICS:
        messages = customer_messages(payload)
    else:  # pragma: no cover - plan_delivery only routes the topics above here
        raise ValueError(f"no event mapping for {topic}")
    return [message.row(delivery, index) for index, message in enumerate(messages)]


@dataclass(frozen=True, slots=True)
class Message:
    """One Segment-spec call before it gets its message id and receive time."""

    type: str
    timestamp: datetime | None
    event: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    traits: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)

    def row(self, delivery: Delivery, index: int) -> EventRow:
        context = {**self.context, "shopify": {"topic": delivery.topic, "webhook_id": delivery.webhook_id}}
        return EventRow(
            message_id=f"shopify:{delivery.webhook_id}:{index}",
            source=SOURCE,
            type=self.type,
            event=self.event,
            user_id=self.user_id,
            anonymous_id=self.anonymous_id,
            properties=self.properties,
            traits=self.traits,
            context=context,
            timestamp=self.timestamp or delivery.received_at,
            original_timestamp=self.timestamp,
            received_at=delivery.received_at,
        )


# --- checkouts and carts -------------------------------------------------------------------------


def checkout_id_of(payload: Mapping[str, Any]) -> str:
    """A checkout is known by its token (what orders name as `checkout_token`), else its id."""
    token = _id(payload.get("token")) or _id(payload.get("id"))
    if token is None:
        raise InvalidInput("the checkout payload has neither 'token' nor 'id'", field="token")
    return token


def cart_id_of(payload: Mapping[str, Any]) -> str:
    token = _id(payload.get("token")) or _id(payload.get("id"))
    if token is None:
        raise InvalidInput("the cart payload has neither 'token' nor 'id'", field="token")
    return token


def checkout_messages(payload: Mapping[str, Any], *, is_created: bool) -> list[Message]:
    """identify (when the checkout names someone) + Checkout Started/Updated.

    A completed checkout says nothing new: its order follows as orders/create.
    """
    token = checkout_id_of(payload)
    if _text(payload.get("completed_at")) and not is_created:
        return []
    customer = _mapping(payload.get("customer"))
    user_id = _id(customer.get("id"))
    cart_id = _id(payload.get("cart_token"))
    anonymous_id = f"shopify-cart:{cart_id}" if cart_id else f"shopify-checkout:{token}"
    email = _text(payload.get("email")) or _text(customer.get("email"))
    phone = _text(payload.get("phone")) or _text(customer.get("phone"))
    sms_phone = _text(payload.get("sms_marketing_phone"))
    timestamp = _time(payload.get("updated_at")) or _time(payload.get("created_at"))

    traits = _person_traits(
        email=email,
        phone=phone or sms_phone,
        first_name=_text(customer.get("first_name")),
        last_name=_text(customer.get("last_name")),
        addresses=(_mapping(payload.get("billing_address")), _mapping(payload.get("shipping_address"))),
    )
    traits.update(checkout_consent(payload, token=token, email=email, sms_phone=sms_phone or phone))

    properties = _drop_none(
        {
            "checkout_id": token,
            "cart_id": cart_id,
            "value": _money(payload.get("total_price")),
            "subtotal": _money(payload.get("subtotal_price")),
            "tax": _money(payload.get("total_tax")),
            "discount": _money(payload.get("total_discounts")),
            "currency": _currency(payload.get("currency") or payload.get("presentment_currency")),
            "coupon": first_discount_code(payload),
            "recovery_url": _text(payload.get("abandoned_checkout_url")),
            "email": email,
            "phone": phone or sms_phone,
            "products": products_of_line_items(payload.get("line_items")),
        }
    )
    event = "Checkout Started" if is_created else "Checkout Updated"
    return _identify_and_track(traits, event, properties, user_id, anonymous_id, timestamp)


def checkout_consent(
    payload: Mapping[str, Any], *, token: str, email: str | None, sms_phone: str | None
) -> dict[str, Any]:
    """Ticked marketing boxes are an opt-in; an unticked box is no opt-out and says nothing."""
    traits: dict[str, Any] = {}
    evidence: dict[str, Any] = {}
    if payload.get("buyer_accepts_marketing") is True and email:
        traits["email_consent"] = "subscribed"
        evidence["buyer_accepts_marketing"] = True
    if payload.get("buyer_accepts_sms_marketing") is True and sms_phone:
        traits["sms_consent"] = "subscribed"
        evidence["buyer_accepts_sms_marketing"] = True
        evidence["sms_marketing_phone"] = sms_phone
    if traits:
        evidence["checkout_token"] = token
        updated_at = _text(payload.get("updated_at"))
        if updated_at:
            evidence["checkout_updated_at"] = updated_at
        traits["consent_source"] = "shopify:checkout"
        traits["consent_evidence"] = evidence
    return traits


def cart_messages(payload: Mapping[str, Any]) -> list[Message]:
    """Cart Viewed: a Shopify cart delivery is the whole cart, which replaces the known lines."""
    token = cart_id_of(payload)
    timestamp = _time(payload.get("updated_at")) or _time(payload.get("created_at"))
    properties = _drop_none(
        {
            "cart_id": token,
            "currency": _currency(payload.get("currency")),
            "products": products_of_line_items(payload.get("line_items")),
        }
    )
    value = _line_total(payload.get("line_items"))
    if value is not None:
        properties["value"] = value
    return [
        Message(
            type="track",
            event="Cart Viewed",
            anonymous_id=f"shopify-cart:{token}",
            properties=properties,
            timestamp=timestamp,
        )
    ]


def _line_total(line_items: Any) -> str | None:
    """A cart's value: the sum of its lines (`line_price`, else price × quantity)."""
    if not isinstance(line_items, list) or not line_items:
        return None
    total = Decimal("0.00")
    for line in line_items:
        line = _mapping(line)
        amount = to_amount(line.get("line_price"))
        if amount is None:
            price = to_amount(line.get("price"))
            if price is None:
                continue
            amount = price * _quantity(line.get("quantity"))
        total += amount
    return str(total)


# --- orders and refunds --------------------------------------------------------------------------


def order_created_messages(payload: Mapping[str, Any]) -> list[Message]:
    """identify (the buyer) + Order Completed."""
    order_id = _required_id(payload, "id", "orders/create")
    user_id, anonymous_id, email, phone = _order_identity(payload, order_id)
    customer = _mapping(payload.get("customer"))
    billing = _mapping(payload.get("billing_address"))
    shipping_address = _mapping(payload.get("shipping_address"))
    timestamp = _time(payload.get("processed_at")) or _time(payload.get("created_at"))
    traits = _person_traits(
        email=email,
        phone=phone,
        first_name=_text(customer.get("first_name")) or _text(billing.get("first_name")),
        last_name=_text(customer.get("last_name")) or _text(billing.get("last_name")),
        addresses=(billing, shipping_address),
    )
    coupons = discount_codes(payload)
    properties = _drop_none(
        {
            "order_id": order_id,
            "checkout_id": _id(payload.get("checkout_token")),
            "cart_id": _id(payload.get("cart_token")),
            "total": _money(payload.get("total_price")),
            "subtotal": _money(payload.get("subtotal_price")),
            "tax": _money(payload.get("total_tax")),
            "shipping": order_shipping(payload),
            "discount": _money(payload.get("total_discounts")),
            "coupon": coupons[0] if coupons else None,
            "coupons": coupons or None,
            "currency": _currency(payload.get("currency")),
            "financial_status": _text(payload.get("financial_status")),
            "order_number": _text(payload.get("name")),
            "email": email,
            "phone": phone,
            "products": products_of_line_items(payload.get("line_items")),
            "shipping_address": _shipping_address(shipping_address),
        }
    )
    return _identify_and_track(traits, "Order Completed", properties, user_id, anonymous_id, timestamp)


def _shipping_address(address: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Segment-spec shipping address (country, state, city) of a Shopify address."""
    return (
        _drop_none(
            {
                "country": _country(address.get("country_code")),
                "state": _text(address.get("province_code")) or _text(address.get("province")),
                "city": _text(address.get("city")),
            }
        )
        or None
    )


def order_updated_messages(
    payload: Mapping[str, Any], topic: str = "orders/updated", *, financial_status: str | None = None
) -> list[Message]:
    """Order Updated from a change of an order: orders/updated (edits, payment and address changes
    alike) and orders/paid (`financial_status="paid"` whatever the payload says). It carries the
    total after edits, the financial status and the shipping address."""
    order_id = _required_id(payload, "id", topic)
    user_id, anonymous_id, email, phone = _order_identity(payload, order_id)
    properties = _drop_none(
        {
            "order_id": order_id,
            "financial_status": financial_status or _text(payload.get("financial_status")),
            "total": _money(payload.get("total_price")),
            "currency": _currency(payload.get("currency")),
            "shipping_address": _shipping_address(_mapping(payload.get("shipping_address"))),
        }
    )
    timestamp = _time(payload.get("updated_at")) or _time(payload.get("processed_at"))
    return [_track("Order Updated", properties, user_id, anonymous_id, timestamp, email, phone)]


def order_fulfilled_messages(payload: Mapping[str, Any]) -> list[Message]:
    """Order Fulfilled (not a Segment spec event; review-request and replenishment flows start
    from it), with the products shipped so flows can tell soft goods from hard goods."""
    order_id = _required_id(payload, "id", "orders/fulfilled")
    user_id, anonymous_id, email, phone = _order_identity(payload, order_id)
    fulfillments = [_mapping(f) for f in payload.get("fulfillments") or [] if isinstance(f, dict)]
    shipped_at = max(
        (t for t in (_time(f.get("updated_at")) or _time(f.get("created_at")) for f in fulfillments) if t),
        default=None,
    )
    properties = _drop_none(
        {
            "order_id": order_id,
            "fulfillment_status": _text(payload.get("fulfillment_status")) or "fulfilled",
            "products": products_of_line_items(payload.get("line_items")),
            "tracking_numbers": [n for f in fulfillments for n in f.get("tracking_numbers") or []] or None,
        }
    )
    timestamp = shipped_at or _time(payload.get("updated_at"))
    return [_track("Order Fulfilled", properties, user_id, anonymous_id, timestamp, email, phone)]


def order_cancelled_messages(payload: Mapping[str, Any]) -> list[Message]:
    order_id = _required_id(payload, "id", "orders/cancelled")
    user_id, anonymous_id, email, phone = _order_identity(payload, order_id)
    properties = _drop_none(
        {
            "order_id": order_id,
            "reason": _text(payload.get("cancel_reason")),
            "total": _money(payload.get("total_price")),
            "currency": _currency(payload.get("currency")),
        }
    )
    timestamp = _time(payload.get("cancelled_at")) or _time(payload.get("updated_at"))
    return [_track("Order Cancelled", properties, user_id, anonymous_id, timestamp, email, phone)]


def refund_messages(payload: Mapping[str, Any]) -> list[Message]:
    """Order Refunded, always with an amount: a refund that moved no money must not read as a
    refund of the whole order (which is what the contract makes of a missing amount)."""
    refund_id = _required_id(payload, "id", "refunds/create")
    order_id = _required_id(payload, "order_id", "refunds/create")
    total, currency = refund_total(payload)
    properties = _drop_none(
        {"order_id": order_id, "refund_id": refund_id, "total": str(total), "currency": currency}
    )
    timestamp = _time(payload.get("processed_at")) or _time(payload.get("created_at"))
    # The refund names no buyer (its `user_id` is the staff member): the order's anonymous id
    # leads to them.
    return [_track("Order Refunded", properties, None, f"shopify-order:{order_id}", timestamp, None, None)]


def refund_total(payload: Mapping[str, Any]) -> tuple[Decimal, str | None]:
    """Money returned: successful `refund` transactions, else the refunded lines' subtotals."""
    currency: str | None = None
    transactions = [_mapping(t) for t in payload.get("transactions") or [] if isinstance(t, dict)]
    refunds = [t for t in transactions if t.get("kind") == "refund" and t.get("status") in (None, "success")]
    if refunds:
        total = sum((to_amount(t.get("amount")) or Decimal("0.00") for t in refunds), Decimal("0.00"))
        currency = next((c for c in (_currency(t.get("currency")) for t in refunds) if c), None)
        return total, currency
    if transactions:  # refund transactions that failed or are pending returned nothing yet
        return Decimal("0.00"), None
    total = Decimal("0.00")
    for line in payload.get("refund_line_items") or []:
        line = _mapping(line)
        total += to_amount(line.get("subtotal")) or Decimal("0.00")
        if currency is None:
            currency = _currency(
                _mapping(_mapping(line.get("subtotal_set")).get("shop_money")).get("currency_code")
            )
    return total, currency


def order_shipping(payload: Mapping[str, Any]) -> str | None:
    """`total_shipping_price_set.shop_money.amount`, else the sum of the shipping lines."""
    amount = to_amount(
        _mapping(_mapping(payload.get("total_shipping_price_set")).get("shop_money")).get("amount")
    )
    if amount is not None:
        return str(amount)
    lines = payload.get("shipping_lines")
    if not isinstance(lines, list) or not lines:
        return None
    return str(
        sum((to_amount(_mapping(line).get("price")) or Decimal("0.00") for line in lines), Decimal("0.00"))
    )


def _order_identity(
    payload: Mapping[str, Any], order_id: str
) -> tuple[str | None, str, str | None, str | None]:
    customer = _mapping(payload.get("customer"))
    email = _text(payload.get("email")) or _text(payload.get("contact_email")) or _text(customer.get("email"))
    phone = _text(payload.get("phone")) or _text(customer.get("phone"))
    return _id(customer.get("id")), f"shopify-order:{order_id}", email, phone


# --- customers -----------------------------------------------------------------------------------


def customer_messages(payload: Mapping[str, Any]) -> list[Message]:
    """identify with the customer's profile, tags, default address and explicit consent."""
    customer_id = _required_id(payload, "id", "customers/update")
    traits = _person_traits(
        email=_text(payload.get("email")),
        phone=_text(payload.get("phone")),
        first_name=_text(payload.get("first_name")),
        last_name=_text(payload.get("last_name")),
        addresses=(_mapping(payload.get("default_address")),),
    )
    tags = split_tags(payload.get("tags"))
    if tags:
        traits["tags"] = tags
    traits.update(customer_consent(payload))
    timestamp = _time(payload.get("updated_at")) or _time(payload.get("created_at"))
    return [Message(type="identify", user_id=customer_id, traits=traits, timestamp=timestamp)]


def customer_consent(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Consent from `email_marketing_consent` / `sms_marketing_consent`, with the objects as proof."""
    traits: dict[str, Any] = {}
    evidence: dict[str, Any] = {}
    for trait, key in (
        ("email_consent", "email_marketing_consent"),
        ("sms_consent", "sms_marketing_consent"),
    ):
        consent = payload.get(key)
        if not isinstance(consent, dict):
            continue
        status = CONSENT_STATES.get(str(consent.get("state") or "").lower())
        if status is None:
            continue
        traits[trait] = status
        evidence[key] = dict(consent)
    if traits:
        traits["consent_source"] = "shopify:customer"
        traits["consent_evidence"] = evidence
    return traits


def split_tags(value: Any) -> list[str]:
    """Shopify sends tags as one comma-separated string."""
    if isinstance(value, list):
        parts = [str(item) for item in value]
    elif isinstance(value, str):
        parts = value.split(",")
    else:
        return []
    return list(dict.fromkeys(tag.strip() for tag in parts if tag.strip()))


# --- products ------------------------------------------------------------------------------------


def products_from_product(payload: Mapping[str, Any], *, store_url: str, currency: str) -> list[ProductInfo]:
    """One ProductInfo per variant (or one for a product without variants) for the catalog."""
    product_id = _required_id(payload, "id", "products/update")
    images = [_mapping(image) for image in payload.get("images") or [] if isinstance(image, dict)]
    image_url = _text(_mapping(payload.get("image")).get("src")) or (
        _text(images[0].get("src")) if images else None
    )
    image_by_id = {_id(image.get("id")): _text(image.get("src")) for image in images if _id(image.get("id"))}
    handle = _text(payload.get("handle"))
    category = _text(payload.get("product_type"))
    variants = [_mapping(v) for v in payload.get("variants") or [] if isinstance(v, dict)]
    prices = [p for p in (to_amount(v.get("price")) for v in variants) if p is not None]
    base = ProductInfo(
        product_id=product_id,
        name=_text(payload.get("title")),
        brand=_text(payload.get("vendor")),
        category=category,
        price=min(prices) if prices else None,
        currency=_currency(currency),
        image_url=image_url,
        url=f"{store_url.rstrip('/')}/products/{handle}" if handle else None,
        collections=(category,) if category else (),
        available=_for_sale(payload),
        properties=_drop_none(
            {
                "handle": handle,
                "status": _text(payload.get("status")),
                "tags": split_tags(payload.get("tags")) or None,
            }
        ),
    )
    if not variants:
        return [base]
    infos = []
    for variant in variants:
        title = _text(variant.get("title"))
        infos.append(
            replace(
                base,
                variant_id=_id(variant.get("id")),
                variant_name=None if title == DEFAULT_VARIANT_TITLE else title,
                variant_sku=_text(variant.get("sku")),
                variant_price=to_amount(variant.get("price")),
                variant_image_url=image_by_id.get(_id(variant.get("image_id"))),
            )
        )
    return infos


def _for_sale(payload: Mapping[str, Any]) -> bool | None:
    """`status` and `published_at` (null: hidden from the online store), when the payload has them."""
    published = (payload.get("published_at") is not None) if "published_at" in payload else None
    return for_sale(_text(payload.get("status")), published)


# --- privacy -------------------------------------------------------------------------------------


def privacy_action(topic: str, payload: Mapping[str, Any]) -> PrivacyAction:
    if topic == "shop/redact":
        return PrivacyAction(kind="erase_shop")
    customer = _mapping(payload.get("customer"))
    kind = "export" if topic == "customers/data_request" else "erase_customer"
    action = PrivacyAction(
        kind=kind,
        shopify_customer_id=_id(customer.get("id")),
        email=_text(customer.get("email")),
        phone=_text(customer.get("phone")),
    )
    if kind == "erase_customer" and not (action.shopify_customer_id or action.email or action.phone):
        raise InvalidInput("customers/redact names no customer id, email or phone", field="customer")
    return action


# --- shared pieces -------------------------------------------------------------------------------


def products_of_line_items(line_items: Any) -> list[dict[str, Any]]:
    """Line items as the spec's product objects (ids as strings, money as decimal strings)."""
    if not isinstance(line_items, list):
        return []
    products = []
    for line in line_items:
        if not isinstance(line, dict):
            continue
        image = line.get("image")
        image_url = _text(line.get("image_url")) or (
            _text(image.get("src")) if isinstance(image, dict) else _text(image)
        )
        variant = _text(line.get("variant_title"))
        products.append(
            _drop_none(
                {
                    "product_id": _id(line.get("product_id")),
                    "variant_id": _id(line.get("variant_id")),
                    "sku": _text(line.get("sku")),
                    "name": _text(line.get("title")) or _text(line.get("name")),
                    "variant": None if variant == DEFAULT_VARIANT_TITLE else variant,
                    "brand": _text(line.get("vendor")),
                    "price": _money(line.get("price")),
                    "quantity": _quantity(line.get("quantity")),
                    "image_url": image_url,
                }
            )
        )
    return products


def discount_codes(payload: Mapping[str, Any]) -> list[str]:
    codes = payload.get("discount_codes")
    if not isinstance(codes, list):
        return []
    found = [_text(code.get("code")) if isinstance(code, dict) else _text(code) for code in codes]
    return list(dict.fromkeys(code for code in found if code))


def first_discount_code(payload: Mapping[str, Any]) -> str | None:
    codes = discount_codes(payload)
    return codes[0] if codes else None


def _person_traits(
    *,
    email: str | None,
    phone: str | None,
    first_name: str | None,
    last_name: str | None,
    addresses: tuple[Mapping[str, Any], ...],
) -> dict[str, Any]:
    """Traits of the person, the address from the first (billing before shipping) that has one."""
    traits = _drop_none({"email": email, "phone": phone, "first_name": first_name, "last_name": last_name})
    for source in addresses:
        address = address_trait(source)
        if address:
            traits["address"] = address
            if "first_name" not in traits and _text(source.get("first_name")):
                traits["first_name"] = _text(source.get("first_name"))
            if "last_name" not in traits and _text(source.get("last_name")):
                traits["last_name"] = _text(source.get("last_name"))
            break
    return traits


def address_trait(address: Mapping[str, Any]) -> dict[str, str]:
    """A Shopify address as the spec's `{street, city, state, postal_code, country}`."""
    street = ", ".join(
        part for part in (_text(address.get("address1")), _text(address.get("address2"))) if part
    )
    return _drop_none(
        {
            "street": street or None,
            "city": _text(address.get("city")),
            "state": _text(address.get("province_code")) or _text(address.get("province")),
            "postal_code": _text(address.get("zip")),
            "country": _country(address.get("country_code")),
        }
    )


def _identify_and_track(
    traits: dict[str, Any],
    event: str,
    properties: dict[str, Any],
    user_id: str | None,
    anonymous_id: str,
    timestamp: datetime | None,
) -> list[Message]:
    messages = []
    if user_id or traits.get("email") or traits.get("phone"):
        messages.append(
            Message(
                type="identify",
                user_id=user_id,
                anonymous_id=anonymous_id,
                traits=traits,
                timestamp=timestamp,
            )
        )
    messages.append(
        _track(event, properties, user_id, anonymous_id, timestamp, traits.get("email"), traits.get("phone"))
    )
    return messages


def _track(
    event: str,
    properties: dict[str, Any],
    user_id: str | None,
    anonymous_id: str,
    timestamp: datetime | None,
    email: str | None,
    phone: str | None,
) -> Message:
    person = _drop_none({"email": email, "phone": phone})
    return Message(
        type="track",
        event=event,
        user_id=user_id,
        anonymous_id=anonymous_id,
        properties=properties,
        context={"traits": person} if person else {},
        timestamp=timestamp,
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    return text or None


def _id(value: Any) -> str | None:
    """Shopify ids are numbers or tokens; winback keeps every external id as a string."""
    text = _text(value)
    if text is not None and len(text) > SHOPIFY_ID_MAX_LENGTH:
        raise InvalidInput(
            f"a Shopify id or token is longer than {SHOPIFY_ID_MAX_LENGTH} characters: {text[:40]}…",
            field="id",
        )
    return text


def _required_id(payload: Mapping[str, Any], key: str, topic: str) -> str:
    value = _id(payload.get(key))
    if value is None:
        raise InvalidInput(f"the {topic} payload has no '{key}'", field=key)
    return value


def _money(value: Any) -> str | None:
    amount = to_amount(value)
    return None if amount is None else str(amount)


def _quantity(value: Any) -> int:
    if isinstance(value, bool):
        return 1
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


def _currency(value: Any) -> str | None:
    text = _text(value)
    return text.upper() if text and len(text) == 3 and text.isalpha() else None


def _country(value: Any) -> str | None:
    text = _text(value)
    return text.upper() if text and len(text) == 2 and text.isalpha() else None


def _time(value: Any) -> datetime | None:
    """A Shopify timestamp (ISO-8601 with offset); None when absent or unreadable, so a bad date
    never costs an order (the receive time stands in)."""
    text = _text(value)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_triggered_at(value: str | None) -> datetime | None:
    """`X-Shopify-Triggered-At` (ISO-8601, nanoseconds allowed)."""
    return _time(value)


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
