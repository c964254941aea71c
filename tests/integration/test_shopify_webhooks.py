"""POST /webhooks/shopify over HTTP on both databases: signatures, dedupe, stale updates, one
transaction per delivery, events and catalog rows, privacy topics."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.conftest import START
from winback.db.models import (
    Checkout,
    ConsentRecord,
    Customer,
    CustomerIdentity,
    Event,
    Order,
    Product,
    ProductCollection,
    ProductVariant,
    ShopifyWebhookReceipt,
)
from winback.ingest import shopify as mapping
from winback.ingest.segment import EventRow
from winback.processing.processor import process_pending
from winback.runtime import Runtime
from winback.web import shopify as web_shopify
from winback.web.app import create_app
from winback.web.shopify import record_delivery

SECRET = "shpss_test_secret"  # what the settings fixture configures

CHECKOUT = {
    "id": 901414060,
    "token": "ck-token-1",
    "cart_token": "cart-token-1",
    "email": "bob@example.com",
    "phone": None,
    "buyer_accepts_marketing": True,
    "buyer_accepts_sms_marketing": False,
    "created_at": "2026-03-02T08:55:00Z",
    "updated_at": "2026-03-02T08:58:00Z",
    "completed_at": None,
    "currency": "USD",
    "subtotal_price": "60.00",
    "total_tax": "0.00",
    "total_discounts": "0.00",
    "total_price": "60.00",
    "discount_codes": [],
    "abandoned_checkout_url": "https://shop.example.com/checkouts/ck-token-1/recover",
    "line_items": [
        {
            "product_id": 11,
            "variant_id": 111,
            "sku": "TEE-M",
            "title": "Tee",
            "variant_title": "M",
            "quantity": 2,
            "price": "30.00",
        }
    ],
    "billing_address": {"city": "Berlin", "country_code": "DE", "zip": "10115", "address1": "Torstr. 1"},
    "customer": {"id": 555, "email": "bob@example.com", "first_name": "Bob", "last_name": "Builder"},
}

ORDER = {
    "id": 4001,
    "name": "#1001",
    "email": "bob@example.com",
    "checkout_token": "ck-token-1",
    "cart_token": "cart-token-1",
    "created_at": "2026-03-02T09:05:00Z",
    "processed_at": "2026-03-02T09:05:00Z",
    "updated_at": "2026-03-02T09:05:00Z",
    "currency": "USD",
    "financial_status": "paid",
    "subtotal_price": "60.00",
    "total_tax": "0.00",
    "total_discounts": "0.00",
    "total_price": "65.00",
    "shipping_lines": [{"price": "5.00"}],
    "discount_codes": [],
    "line_items": CHECKOUT["line_items"],
    "customer": {"id": 555, "email": "bob@example.com", "first_name": "Bob", "last_name": "Builder"},
    "shipping_address": {"city": "Berlin", "country_code": "DE", "province_code": None},
}

PRODUCT = {
    "id": 11,
    "title": "Tee",
    "vendor": "Acme",
    "product_type": "Shirts",
    "handle": "tee",
    "status": "active",
    "tags": "summer, cotton",
    "updated_at": "2026-03-01T10:00:00Z",
    "variants": [
        {"id": 111, "title": "M", "price": "30.00", "sku": "TEE-M", "image_id": 2},
        {"id": 112, "title": "L", "price": "32.00", "sku": "TEE-L", "image_id": None},
    ],
    "image": {"id": 1, "src": "https://cdn.example.com/tee.png"},
    "images": [
        {"id": 1, "src": "https://cdn.example.com/tee.png"},
        {"id": 2, "src": "https://cdn.example.com/tee-m.png"},
    ],
}


def _post(
    client: TestClient,
    topic: str,
    payload: Any,
    *,
    webhook_id: str,
    triggered_at: str | None = "2026-03-02T09:00:00Z",
    secret: str = SECRET,
    signature: str | None = None,
):  # type: ignore[no-untyped-def]
    body = orjson.dumps(payload)
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-Shop-Domain": "shop.myshopify.com",
        "X-Shopify-Hmac-Sha256": signature
        or base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode(),
    }
    if triggered_at:
        headers["X-Shopify-Triggered-At"] = triggered_at
    return client.post("/webhooks/shopify", content=body, headers=headers)


def _all(engine: sa.Engine, model: Any, order_by: Any) -> list[Any]:
    with sa.orm.Session(engine) as session:
        return list(session.scalars(sa.select(model).order_by(order_by)))


def _events(engine: sa.Engine) -> list[Event]:
    return _all(engine, Event, Event.id)


def _receipts(engine: sa.Engine) -> list[ShopifyWebhookReceipt]:
    return _all(engine, ShopifyWebhookReceipt, ShopifyWebhookReceipt.id)


# --- authentication ------------------------------------------------------------------------------


def test_bad_signature_is_401_and_writes_nothing(client: TestClient, engine: sa.Engine) -> None:
    # given a checkout signed with another secret
    response = _post(client, "checkouts/create", CHECKOUT, webhook_id="w-1", secret="shpss_other")

    # then it is refused, naming the header, and nothing is recorded
    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("unauthorized", "X-Shopify-Hmac-Sha256")
    assert _events(engine) == [] and _receipts(engine) == []


def test_missing_signature_is_401(client: TestClient, engine: sa.Engine) -> None:
    response = client.post(
        "/webhooks/shopify",
        content=b"{}",
        headers={"X-Shopify-Topic": "orders/create", "X-Shopify-Webhook-Id": "w-2"},
    )
    assert response.status_code == 401
    assert _receipts(engine) == []


def test_without_a_secret_configured_every_delivery_is_503_telling_the_operator(runtime: Runtime) -> None:
    # given a server whose operator has not set the shared secret
    runtime.settings = runtime.settings.model_copy(update={"shopify_webhook_secret": None})
    with TestClient(create_app(runtime)) as client:
        response = _post(client, "orders/create", ORDER, webhook_id="w-3")

    # then Shopify is told to come back later, and the message names the setting
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "shopify_webhooks_not_configured"
    assert "WINBACK_SHOPIFY_WEBHOOK_SECRET" in error["message"]
    assert _receipts(runtime.engine) == []


def test_missing_webhook_id_is_400_naming_the_header(client: TestClient, engine: sa.Engine) -> None:
    body = orjson.dumps(ORDER)
    signature = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    response = client.post(
        "/webhooks/shopify",
        content=body,
        headers={"X-Shopify-Topic": "orders/create", "X-Shopify-Hmac-Sha256": signature},
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "X-Shopify-Webhook-Id"
    assert _receipts(engine) == []


def test_signed_but_malformed_payload_is_400_and_writes_nothing(
    client: TestClient, engine: sa.Engine
) -> None:
    response = _post(client, "orders/create", {**ORDER, "id": None}, webhook_id="w-4")
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_input",
        "message": "the orders/create payload has no 'id'",
        "field": "id",
    }
    assert _events(engine) == [] and _receipts(engine) == []


# --- checkouts, dedupe, stale updates ------------------------------------------------------------


def test_checkout_becomes_identify_and_checkout_started_rows(client: TestClient, engine: sa.Engine) -> None:
    # when a checkout is created
    response = _post(client, "checkouts/create", CHECKOUT, webhook_id="w-10")

    # then it is accepted and stored as two unprocessed Shopify events
    assert response.status_code == 200
    assert response.json() == {"ok": True, "outcome": "accepted"}
    identify, track = _events(engine)
    assert (identify.message_id, identify.type, identify.user_id, identify.anonymous_id) == (
        "shopify:w-10:0",
        "identify",
        "555",
        "shopify-cart:cart-token-1",
    )
    assert identify.traits == {
        "email": "bob@example.com",
        "first_name": "Bob",
        "last_name": "Builder",
        "address": {"street": "Torstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE"},
        "email_consent": "subscribed",
        "consent_source": "shopify:checkout",
        "consent_evidence": {
            "buyer_accepts_marketing": True,
            "checkout_token": "ck-token-1",
            "checkout_updated_at": "2026-03-02T08:58:00Z",
        },
    }
    assert (track.message_id, track.source, track.event, track.processed_at) == (
        "shopify:w-10:1",
        "shopify",
        "Checkout Started",
        None,
    )
    assert track.properties == {
        "checkout_id": "ck-token-1",
        "cart_id": "cart-token-1",
        "value": "60.00",
        "subtotal": "60.00",
        "tax": "0.00",
        "discount": "0.00",
        "currency": "USD",
        "recovery_url": "https://shop.example.com/checkouts/ck-token-1/recover",
        "email": "bob@example.com",
        "products": [
            {
                "product_id": "11",
                "variant_id": "111",
                "sku": "TEE-M",
                "name": "Tee",
                "variant": "M",
                "price": "30.00",
                "quantity": 2,
            }
        ],
    }
    assert track.timestamp == datetime(2026, 3, 2, 8, 58, tzinfo=UTC)
    assert track.received_at == START
    [receipt] = _receipts(engine)
    assert (receipt.webhook_id, receipt.topic, receipt.resource_key, receipt.outcome) == (
        "w-10",
        "checkouts/create",
        "checkout:ck-token-1",
        "accepted",
    )
    assert (receipt.triggered_at, receipt.received_at) == (datetime(2026, 3, 2, 9, 0, tzinfo=UTC), START)


def test_redelivery_of_one_webhook_id_writes_once(client: TestClient, engine: sa.Engine) -> None:
    # given a delivery already taken, when Shopify delivers it again
    first = _post(client, "checkouts/create", CHECKOUT, webhook_id="w-20")
    again = _post(client, "checkouts/create", CHECKOUT, webhook_id="w-20")

    # then the second is acknowledged as a duplicate and nothing more is written
    assert first.json()["outcome"] == "accepted"
    assert (again.status_code, again.json()) == (200, {"ok": True, "outcome": "duplicate"})
    assert len(_events(engine)) == 2
    assert len(_receipts(engine)) == 1


def test_update_triggered_before_the_newest_one_is_dropped_as_stale(
    client: TestClient, engine: sa.Engine
) -> None:
    # given a checkout update triggered at 09:10 already taken
    newer = {**CHECKOUT, "total_price": "90.00", "updated_at": "2026-03-02T09:10:00Z"}
    older = {**CHECKOUT, "total_price": "60.00", "updated_at": "2026-03-02T09:05:00Z"}
    assert (
        _post(
            client, "checkouts/update", newer, webhook_id="w-31", triggered_at="2026-03-02T09:10:00Z"
        ).json()["outcome"]
        == "accepted"
    )

    # when an update triggered at 09:05 arrives late
    response = _post(
        client, "checkouts/update", older, webhook_id="w-30", triggered_at="2026-03-02T09:05:00.5Z"
    )

    # then it is acknowledged as stale, recorded, and maps to no events
    assert (response.status_code, response.json()) == (200, {"ok": True, "outcome": "stale"})
    assert [(e.event, e.properties.get("value")) for e in _events(engine) if e.type == "track"] == [
        ("Checkout Updated", "90.00")
    ]
    assert [(r.webhook_id, r.outcome) for r in _receipts(engine)] == [("w-31", "accepted"), ("w-30", "stale")]

    # and a later update, or one triggered at the same instant, is still taken
    same_time = _post(
        client, "checkouts/update", newer, webhook_id="w-32", triggered_at="2026-03-02T09:10:00Z"
    )
    assert same_time.json()["outcome"] == "accepted"


def test_creation_is_never_stale_and_order_topics_share_one_resource(
    client: TestClient, engine: sa.Engine
) -> None:
    # given orders/paid overtook orders/create
    paid = _post(client, "orders/paid", ORDER, webhook_id="w-41", triggered_at="2026-03-02T09:06:00Z")
    created = _post(client, "orders/create", ORDER, webhook_id="w-40", triggered_at="2026-03-02T09:05:00Z")
    # then the creation is still recorded (an order must never be lost) …
    assert (paid.json()["outcome"], created.json()["outcome"]) == ("accepted", "accepted")
    # … but a cancellation triggered before the payment is stale for the same order
    cancelled = _post(
        client, "orders/cancelled", ORDER, webhook_id="w-42", triggered_at="2026-03-02T09:05:30Z"
    )
    assert cancelled.json()["outcome"] == "stale"
    assert {r.resource_key for r in _receipts(engine)} == {"order:4001"}
    assert [e.event for e in _events(engine) if e.type == "track"] == ["Order Updated", "Order Completed"]


def test_unsupported_topic_is_acknowledged_and_ignored(client: TestClient, engine: sa.Engine) -> None:
    response = _post(client, "inventory_levels/update", {"inventory_item_id": 1}, webhook_id="w-50")
    assert (response.status_code, response.json()) == (200, {"ok": True, "outcome": "ignored"})
    assert _events(engine) == []
    [receipt] = _receipts(engine)
    assert (receipt.topic, receipt.outcome, receipt.resource_key) == (
        "inventory_levels/update",
        "ignored",
        None,
    )


def test_a_failure_while_recording_writes_nothing(engine: sa.Engine) -> None:
    # given a plan whose catalog rows are fine but whose event cannot be stored
    delivery = mapping.Delivery(
        webhook_id="w-60", topic="products/update", triggered_at=None, received_at=START
    )
    plan = mapping.plan_delivery(
        delivery, PRODUCT, store_url="https://shop.example.com", store_currency="USD"
    )
    unstorable = EventRow(
        message_id="shopify:w-60:0",
        source="shopify",
        type="track",
        event="Broken",
        anonymous_id="x",
        timestamp=datetime(2026, 3, 2, 9, 0),  # naive: refused when bound
        received_at=START,
    )
    broken = dataclasses.replace(plan, events=[unstorable])

    # when it is recorded, the write fails after the receipt and the products were flushed
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        record_delivery(engine, delivery, broken)

    # then the whole transaction is gone: no receipt, no product, no event
    assert _receipts(engine) == []
    assert _all(engine, Product, Product.id) == []
    assert _events(engine) == []


# --- products ------------------------------------------------------------------------------------


def test_product_webhook_upserts_products_and_variants(client: TestClient, engine: sa.Engine) -> None:
    # when a product with two variants arrives
    response = _post(client, "products/update", PRODUCT, webhook_id="w-70")

    # then the catalog has the product, its variants and its category as a collection; no events
    assert response.json() == {"ok": True, "outcome": "accepted"}
    assert _events(engine) == []
    [product] = _all(engine, Product, Product.id)
    assert (
        product.product_id,
        product.name,
        product.brand,
        product.category,
        product.price,
        product.currency,
        product.image_url,
        product.url,
        product.collections,
    ) == (
        "11",
        "Tee",
        "Acme",
        "Shirts",
        Decimal("30.00"),
        "USD",
        "https://cdn.example.com/tee.png",
        "http://localhost:8000/products/tee",
        ["Shirts"],
    )
    assert product.properties == {"handle": "tee", "status": "active", "tags": ["summer", "cotton"]}
    variants = _all(engine, ProductVariant, ProductVariant.variant_id)
    assert [(v.variant_id, v.product_id, v.name, v.sku, v.price, v.image_url) for v in variants] == [
        ("111", "11", "M", "TEE-M", Decimal("30.00"), "https://cdn.example.com/tee-m.png"),
        ("112", "11", "L", "TEE-L", Decimal("32.00"), None),
    ]
    assert [
        (c.product_id, c.collection) for c in _all(engine, ProductCollection, ProductCollection.collection)
    ] == [("11", "Shirts")]

    # and a later update changes the price without duplicating anything
    renamed = {**PRODUCT, "title": "Organic Tee", "variants": [{**PRODUCT["variants"][0], "price": "28.00"}]}
    _post(client, "products/update", renamed, webhook_id="w-71", triggered_at="2026-03-02T09:30:00Z")
    [product] = _all(engine, Product, Product.id)
    assert (product.name, product.price) == ("Organic Tee", Decimal("28.00"))
    assert [(v.variant_id, v.price) for v in _all(engine, ProductVariant, ProductVariant.variant_id)] == [
        ("111", Decimal("28.00")),
        ("112", Decimal("32.00")),
    ]


def test_a_deleted_product_is_withdrawn_and_a_late_update_does_not_bring_it_back(
    client: TestClient, engine: sa.Engine
) -> None:
    # given a product on sale
    _post(client, "products/update", PRODUCT, webhook_id="w-80", triggered_at="2026-03-02T09:00:00Z")
    # when the store deletes it
    response = _post(
        client, "products/delete", {"id": 11}, webhook_id="w-81", triggered_at="2026-03-02T10:00:00Z"
    )
    # then it stays in the catalog (orders name it) but is no longer for sale
    assert response.json() == {"ok": True, "outcome": "accepted"}
    [product] = _all(engine, Product, Product.id)
    assert (product.product_id, product.name, product.available) == ("11", "Tee", False)
    # and an update triggered before the deletion, delivered after it, is dropped as stale
    late = _post(client, "products/update", PRODUCT, webhook_id="w-82", triggered_at="2026-03-02T09:30:00Z")
    assert late.json() == {"ok": True, "outcome": "stale"}
    assert _all(engine, Product, Product.id)[0].available is False
    # a deletion of a product never seen changes nothing
    assert _post(client, "products/delete", {"id": 99}, webhook_id="w-83").json()["outcome"] == "accepted"
    assert len(_all(engine, Product, Product.id)) == 1


# --- privacy -------------------------------------------------------------------------------------


def _customer(engine: sa.Engine, *, user_id: str | None, email: str, anonymous_id: str | None = None) -> int:
    with sa.orm.Session(engine) as session, session.begin():
        customer = Customer(
            user_id=user_id,
            email=email,
            first_name="Jane",
            tags=[],
            properties={},
            first_seen_at=START,
            last_seen_at=START,
            created_at=START,
            updated_at=START,
        )
        session.add(customer)
        session.flush()
        identities = [("email", email)] + ([("user_id", user_id)] if user_id else [])
        identities += [("anonymous_id", anonymous_id)] if anonymous_id else []
        session.add_all(
            CustomerIdentity(customer_id=customer.id, kind=kind, value=value, created_at=START)
            for kind, value in identities
        )
        return customer.id


def _customer_row(engine: sa.Engine, customer_id: int) -> Customer:
    with sa.orm.Session(engine) as session:
        customer = session.get(Customer, customer_id)
        assert customer is not None
        return customer


def test_customers_redact_erases_the_person_by_id_and_by_email(client: TestClient, engine: sa.Engine) -> None:
    # given the Shopify customer 191167 and a separate guest profile known only by their email,
    # and somebody else
    known = _customer(engine, user_id="191167", email="john@example.com")
    guest = _customer(engine, user_id=None, email="john.guest@example.com", anonymous_id="a-1")
    other = _customer(engine, user_id="999", email="other@example.com")

    # when Shopify asks for 191167 to be redacted (naming the guest email too)
    payload = {
        "shop_id": 1,
        "customer": {"id": 191167, "email": "John.Guest@Example.com"},
        "orders_to_redact": [],
    }
    response = _post(client, "customers/redact", payload, webhook_id="w-80")

    # then both profiles are erased, the other is untouched, and the receipt says so
    assert response.json() == {"ok": True, "outcome": "accepted"}
    for customer_id in (known, guest):
        row = _customer_row(engine, customer_id)
        assert (row.email, row.first_name, row.erased_at) == (None, None, START)
    untouched = _customer_row(engine, other)
    assert (untouched.email, untouched.erased_at) == ("other@example.com", None)
    [receipt] = _receipts(engine)
    assert (receipt.topic, receipt.outcome, receipt.resource_key) == (
        "customers/redact",
        "redacted",
        "customer:191167",
    )


def test_redaction_is_never_stale_and_outdates_earlier_customer_updates(
    client: TestClient, engine: sa.Engine
) -> None:
    # given customer 191167 whose update triggered at 09:00 was taken
    known = _customer(engine, user_id="191167", email="john@example.com")
    update = {"id": 191167, "email": "john@example.com", "first_name": "John"}
    first = _post(client, "customers/update", update, webhook_id="w-84", triggered_at="2026-03-02T09:00:00Z")
    assert first.json()["outcome"] == "accepted"

    # when a redaction triggered at 09:20 arrives, the customer is erased
    redact = {"customer": {"id": 191167}}
    response = _post(
        client, "customers/redact", redact, webhook_id="w-85", triggered_at="2026-03-02T09:20:00Z"
    )
    assert response.json()["outcome"] == "accepted"
    assert _customer_row(engine, known).erased_at == START

    # then an update triggered at 09:10 and delivered late cannot bring the details back
    late = _post(client, "customers/update", update, webhook_id="w-86", triggered_at="2026-03-02T09:10:00Z")
    assert late.json()["outcome"] == "stale"

    # and a redaction is carried out even when triggered before everything recorded so far
    again = _post(client, "customers/redact", redact, webhook_id="w-87", triggered_at="2026-03-02T08:00:00Z")
    assert again.json()["outcome"] == "accepted"
    assert [(r.webhook_id, r.outcome) for r in _receipts(engine)] == [
        ("w-84", "accepted"),
        ("w-85", "redacted"),
        ("w-86", "stale"),
        ("w-87", "redacted"),
    ]
    assert [e.message_id for e in _events(engine)] == ["shopify:w-84:0"]


def test_an_order_triggered_before_its_customers_redaction_and_delivered_after_is_dropped(
    client: TestClient, engine: sa.Engine
) -> None:
    # given Shopify customer 555 was redacted by a request triggered at 10:00
    redact = {"customer": {"id": 555}, "orders_to_redact": [4001]}
    _post(client, "customers/redact", redact, webhook_id="w-90", triggered_at="2026-03-02T10:00:00Z")
    # when their order, triggered at 09:05, is delivered only now (a retry after an outage)
    late = _post(client, "orders/create", ORDER, webhook_id="w-91", triggered_at="2026-03-02T09:05:00Z")
    # then it is dropped: nothing about them is written again
    assert late.json() == {"ok": True, "outcome": "stale"}
    assert _events(engine) == []
    with sa.orm.Session(engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Customer)) == 0
    # but an order placed after the redaction (a new purchase) is taken
    later = {**ORDER, "id": 4002, "name": "#1002"}
    taken = _post(client, "orders/create", later, webhook_id="w-92", triggered_at="2026-03-02T11:00:00Z")
    assert taken.json() == {"ok": True, "outcome": "accepted"}
    assert len(_events(engine)) > 0


def test_customers_redact_of_someone_unknown_is_recorded(client: TestClient, engine: sa.Engine) -> None:
    response = _post(
        client, "customers/redact", {"customer": {"id": 1, "email": "nobody@example.com"}}, webhook_id="w-81"
    )
    assert response.json()["outcome"] == "accepted"
    assert [r.outcome for r in _receipts(engine)] == ["redacted"]


def test_shop_redact_erases_everyone(client: TestClient, engine: sa.Engine) -> None:
    ids = [
        _customer(engine, user_id="1", email="a@example.com"),
        _customer(engine, user_id="2", email="b@example.com"),
    ]
    response = _post(
        client, "shop/redact", {"shop_id": 1, "shop_domain": "shop.myshopify.com"}, webhook_id="w-82"
    )
    assert response.json()["outcome"] == "accepted"
    assert [_customer_row(engine, i).email for i in ids] == [None, None]
    assert [(r.topic, r.outcome) for r in _receipts(engine)] == [("shop/redact", "redacted")]


def test_data_request_is_recorded_and_changes_nothing(client: TestClient, engine: sa.Engine) -> None:
    customer_id = _customer(engine, user_id="191167", email="john@example.com")
    payload = {
        "shop_id": 1,
        "customer": {"id": 191167, "email": "john@example.com"},
        "data_request": {"id": 9999},
    }
    response = _post(client, "customers/data_request", payload, webhook_id="w-83")
    assert response.json()["outcome"] == "accepted"
    assert [(r.topic, r.outcome) for r in _receipts(engine)] == [("customers/data_request", "data_request")]
    assert _customer_row(engine, customer_id).email == "john@example.com"


# --- concurrency -----------------------------------------------------------------------------------


def test_concurrent_deliveries_of_one_webhook_record_it_once(engine: sa.Engine) -> None:
    # given four workers taking the same checkout delivery at the same moment
    delivery = mapping.Delivery(
        webhook_id="w-90", topic="checkouts/create", triggered_at=START, received_at=START
    )
    plan = mapping.plan_delivery(
        delivery, CHECKOUT, store_url="https://shop.example.com", store_currency="USD"
    )
    barrier = threading.Barrier(4)

    def take() -> str:
        barrier.wait()
        return record_delivery(engine, delivery, plan)

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = sorted(pool.map(lambda _: take(), range(4)))

    # then one records it and the others answer duplicate, without an error
    assert outcomes == ["accepted", "duplicate", "duplicate", "duplicate"]
    assert len(_receipts(engine)) == 1
    assert len(_events(engine)) == 2


def test_a_duplicate_found_only_at_the_unique_index_is_a_duplicate(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a delivery already recorded, and a second transaction whose look-up misses it (as when
    # both run at once and neither sees the other's uncommitted receipt)
    delivery = mapping.Delivery(
        webhook_id="w-91", topic="orders/create", triggered_at=START, received_at=START
    )
    plan = mapping.plan_delivery(delivery, ORDER, store_url="https://shop.example.com", store_currency="USD")
    assert record_delivery(engine, delivery, plan) == "accepted"
    looked_up: list[str] = []

    def misses_inside_the_transaction(session: sa.orm.Session, webhook_id: str) -> bool:
        looked_up.append(webhook_id)
        return False

    monkeypatch.setattr(web_shopify, "_is_received_in", misses_inside_the_transaction)
    monkeypatch.setattr(web_shopify, "_is_received", lambda _engine, webhook_id: webhook_id == "w-91")

    # when it records the delivery again, the receipt's unique index refuses it
    outcome = record_delivery(engine, delivery, plan)

    # then it is a duplicate and the first recording is all there is
    assert (outcome, looked_up) == ("duplicate", ["w-91"])
    assert len(_receipts(engine)) == 1
    assert [e.message_id for e in _events(engine)] == ["shopify:w-91:0", "shopify:w-91:1"]


# --- through the processor --------------------------------------------------------------------------


def test_an_order_edited_in_shopify_changes_the_customers_total(
    client: TestClient, runtime: Runtime, engine: sa.Engine
) -> None:
    # given an order of 65.00
    _post(client, "orders/create", ORDER, webhook_id="w-110", triggered_at="2026-03-02T09:05:00Z")
    process_pending(runtime)
    # when the merchant edits it down to 45.00 (Shopify sends orders/updated)
    edited = {**ORDER, "total_price": "45.00", "updated_at": "2026-03-02T11:00:00Z"}
    response = _post(
        client, "orders/updated", edited, webhook_id="w-111", triggered_at="2026-03-02T11:00:00Z"
    )
    assert response.json() == {"ok": True, "outcome": "accepted"}
    process_pending(runtime)
    # then the order and the customer's money spent follow
    with sa.orm.Session(engine) as session:
        order = session.scalar(sa.select(Order))
        customer = session.scalar(sa.select(Customer).where(Customer.merged_into_id.is_(None)))
        assert order is not None and customer is not None
        assert (order.total, customer.total_spent, customer.orders_count) == (
            Decimal("45.00"),
            Decimal("45.00"),
            1,
        )
    # and an older update delivered late is dropped
    late = _post(client, "orders/updated", ORDER, webhook_id="w-112", triggered_at="2026-03-02T10:00:00Z")
    assert late.json()["outcome"] == "stale"


def test_checkout_order_and_refund_webhooks_processed_into_one_customer(
    client: TestClient, runtime: Runtime, engine: sa.Engine
) -> None:
    # given a cart, its checkout by customer 555 who ticked the marketing box, the order and a refund
    cart = {
        "token": "cart-token-1",
        "line_items": CHECKOUT["line_items"],
        "updated_at": "2026-03-02T08:50:00Z",
    }
    refund = {
        "id": 77,
        "order_id": 4001,
        "processed_at": "2026-03-03T10:00:00Z",
        "transactions": [{"kind": "refund", "status": "success", "amount": "15.00", "currency": "USD"}],
    }
    deliveries = [
        ("carts/update", cart, "w-100"),
        ("checkouts/create", CHECKOUT, "w-101"),
        ("orders/create", ORDER, "w-102"),
        ("refunds/create", refund, "w-103"),
    ]
    for topic, payload, webhook_id in deliveries:
        assert _post(client, topic, payload, webhook_id=webhook_id).json()["outcome"] == "accepted"

    # when the processor applies the events
    assert process_pending(runtime) == 6  # cart 1, checkout 2, order 2, refund 1

    # then one person has the order net of the refund, and the email opt-in from the checkout
    with sa.orm.Session(engine) as session:
        [customer] = session.scalars(sa.select(Customer).where(Customer.merged_into_id.is_(None)))
        assert (
            customer.user_id,
            customer.email,
            customer.first_name,
            customer.email_consent,
            customer.sms_consent,
        ) == (
            "555",
            "bob@example.com",
            "Bob",
            "subscribed",
            None,
        )
        assert (customer.orders_count, customer.total_spent, customer.total_refunded) == (
            1,
            Decimal("50.00"),
            Decimal("15.00"),
        )
        [consent] = session.scalars(sa.select(ConsentRecord))
        assert (consent.customer_id, consent.channel, consent.status, consent.source) == (
            customer.id,
            "email",
            "subscribed",
            "shopify:checkout",
        )
        # and the Shopify cart, checkout and order are all known to belong to this person
        identities = {
            (i.kind, i.value)
            for i in session.scalars(
                sa.select(CustomerIdentity).where(CustomerIdentity.customer_id == customer.id)
            )
        }
        assert {
            ("user_id", "555"),
            ("anonymous_id", "shopify-cart:cart-token-1"),
            ("anonymous_id", "shopify-order:4001"),
        } <= identities
        checkout = session.scalar(sa.select(Checkout).where(Checkout.kind == "checkout"))
        assert checkout is not None
        assert (checkout.external_id, checkout.status, checkout.order_id, checkout.customer_id) == (
            "ck-token-1",
            "completed",
            "4001",
            customer.id,
        )
        order = session.scalar(sa.select(Order))
        assert order is not None
        assert (order.order_id, order.total, order.shipping, order.refunded_total, order.customer_id) == (
            "4001",
            Decimal("65.00"),
            Decimal("5.00"),
            Decimal("15.00"),
            customer.id,
        )
