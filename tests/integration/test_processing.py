"""Applying events to profiles and the store model, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from winback.db.engine import index_order_only
from winback.db.models import (
    Checkout,
    ConsentRecord,
    Customer,
    CustomerCollection,
    CustomerIdentity,
    CustomerProduct,
    Event,
    IntentSession,
    Order,
    Refund,
)
from winback.ingest import segment, store
from winback.kernel.clock import VirtualClock
from winback.processing.processor import process_pending
from winback.runtime import Runtime


@pytest.fixture
def send(runtime: Runtime, clock: VirtualClock):  # type: ignore[no-untyped-def]
    """send(*messages): store Segment messages (timestamped now) and apply them."""
    counter = iter(range(1_000_000))

    def _send(*messages: dict[str, Any], process: bool = True) -> None:
        rows = [
            segment.parse_message({"messageId": f"m{next(counter)}", **m}, received_at=clock.now())
            for m in messages
        ]
        store.store_events(runtime.engine, rows)
        if process:
            process_pending(runtime)

    return _send


def _live_customers(session: Session) -> list[Customer]:
    return list(
        session.scalars(sa.select(Customer).where(Customer.merged_into_id.is_(None)).order_by(Customer.id))
    )


def test_guest_journey_merges_into_the_known_customer(send, engine, clock) -> None:  # type: ignore[no-untyped-def]
    # given a known customer who signed up on their phone
    send({"type": "identify", "userId": "u1", "anonymousId": "phone", "traits": {"email": "ann@example.com"}})
    # and an anonymous laptop session with a guest order
    clock.advance(timedelta(days=1))
    send(
        {"type": "track", "anonymousId": "laptop", "event": "Product Viewed", "properties": {"product_id": "p1", "price": 40}},
        {"type": "track", "anonymousId": "laptop", "event": "Order Completed",
         "properties": {"order_id": "o1", "total": 40, "products": [{"product_id": "p1", "price": 40, "quantity": 1}]}},
    )  # fmt: skip
    with Session(engine) as session:
        assert len(_live_customers(session)) == 2
    # when the laptop visitor logs in
    clock.advance(timedelta(hours=1))
    send({"type": "identify", "userId": "u1", "anonymousId": "laptop"})
    # then one profile holds everything
    with Session(engine) as session:
        [ann] = _live_customers(session)
        assert (ann.user_id, ann.email, ann.orders_count, ann.total_spent) == (
            "u1",
            "ann@example.com",
            1,
            Decimal("40.00"),
        )
        assert ann.last_product_viewed_id == "p1"
        customer_ids = set(session.scalars(sa.select(Event.customer_id)))
        assert customer_ids == {ann.id}
        assert session.scalar(sa.select(Order.customer_id)) == ann.id
        assert session.scalar(sa.select(CustomerProduct.customer_id)) == ann.id
        identities = set(
            session.execute(
                sa.select(CustomerIdentity.kind, CustomerIdentity.value, CustomerIdentity.customer_id)
            )
        )
        assert identities == {
            ("user_id", "u1", ann.id), ("anonymous_id", "phone", ann.id), ("email", "ann@example.com", ann.id),
            ("anonymous_id", "laptop", ann.id),
        }  # fmt: skip
        [tombstone] = session.scalars(sa.select(Customer).where(Customer.merged_into_id.is_not(None)))
        assert (tombstone.merged_into_id, tombstone.orders_count) == (ann.id, 0)


def test_shared_device_does_not_merge_two_known_customers(send, engine) -> None:  # type: ignore[no-untyped-def]
    send(
        {"type": "identify", "userId": "alice", "anonymousId": "family-ipad"},
        {"type": "identify", "userId": "bob", "anonymousId": "family-ipad"},
        {
            "type": "track",
            "userId": "bob",
            "anonymousId": "family-ipad",
            "event": "Product Viewed",
            "properties": {"product_id": "p9"},
        },
    )
    with Session(engine) as session:
        alice, bob = _live_customers(session)
        assert (alice.user_id, bob.user_id) == ("alice", "bob")
        assert (alice.last_product_viewed_id, bob.last_product_viewed_id) == (None, "p9")


def test_alias_merges_previous_identity(send, engine) -> None:  # type: ignore[no-untyped-def]
    send(
        {
            "type": "track",
            "anonymousId": "old-id",
            "event": "Products Searched",
            "properties": {"query": "boots"},
        }
    )
    send({"type": "alias", "previousId": "old-id", "userId": "u7"})
    with Session(engine) as session:
        [customer] = _live_customers(session)
        assert customer.user_id == "u7"
        assert session.scalar(sa.select(IntentSession.customer_id)) == customer.id


def test_checkout_to_order_refund_and_cancel(send, engine, clock) -> None:  # type: ignore[no-untyped-def]
    products = [
        {
            "product_id": "p1",
            "name": "Boots",
            "price": "100",
            "quantity": 1,
            "category": "Shoes",
            "collections": ["Winter"],
        }
    ]
    send(
        {"type": "track", "userId": "u1", "event": "Product Added", "properties": {"cart_id": "c1", **products[0]}},
        {"type": "track", "userId": "u1", "event": "Checkout Started",
         "properties": {"checkout_id": "k1", "cart_id": "c1", "value": 100, "currency": "eur", "products": products,
                        "recovery_url": "https://shop.example/recover/k1"}},
    )  # fmt: skip
    with Session(engine) as session:
        cart, checkout = session.scalars(sa.select(Checkout).order_by(Checkout.id)).all()
        assert (cart.kind, cart.status, cart.value) == ("cart", "checked_out", Decimal("100.00"))
        assert (checkout.status, checkout.currency, checkout.cart_id) == ("open", "EUR", "c1")
        assert checkout.items[0]["name"] == "Boots"
    clock.advance(60)
    order = {"order_id": "o1", "checkout_id": "k1", "total": 110, "tax": 10, "currency": "EUR", "products": products,
             "shipping_address": {"country": "Germany", "city": "Berlin"}}  # fmt: skip
    send({"type": "track", "userId": "u1", "event": "Order Completed", "properties": order})
    send({"type": "track", "userId": "u1", "event": "Order Completed", "properties": order})  # reported twice
    send(
        {
            "type": "track",
            "userId": "u1",
            "event": "Order Refunded",
            "properties": {"order_id": "o1", "refund_id": "r1", "total": 30},
        },
        {
            "type": "track",
            "userId": "u1",
            "event": "Order Refunded",
            "properties": {"order_id": "o1", "refund_id": "r1", "total": 30},
        },
    )
    with Session(engine) as session:
        [customer] = _live_customers(session)
        assert (customer.orders_count, customer.total_spent, customer.total_refunded) == (
            1,
            Decimal("80.00"),
            Decimal("30.00"),
        )
        [order_row] = session.scalars(sa.select(Order))
        assert (order_row.status, order_row.refunded_total, order_row.shipping_country) == (
            "partially_refunded", Decimal("30.00"), "DE",
        )  # fmt: skip
        assert session.scalar(sa.select(Checkout.status).where(Checkout.kind == "checkout")) == "completed"
        assert set(session.scalars(sa.select(CustomerCollection.collection))) == {"Shoes", "Winter"}
        assert session.scalar(sa.select(sa.func.count()).select_from(Refund)) == 1
    send({"type": "track", "userId": "u1", "event": "Order Cancelled", "properties": {"order_id": "o1"}})
    with Session(engine) as session:
        [customer] = _live_customers(session)
        assert (customer.orders_count, customer.total_spent, customer.average_order_value) == (
            0,
            Decimal("0.00"),
            None,
        )
        assert (customer.first_order_at, customer.last_order_at) == (None, None)  # no order left


def test_consent_is_recorded_with_proof_and_never_inferred(send, engine) -> None:  # type: ignore[no-untyped-def]
    send(
        {
            "type": "identify",
            "userId": "u1",
            "traits": {"phone": "+14155550123"},
            "context": {"ip": "198.51.100.4"},
        }
    )
    with Session(engine) as session:
        assert _live_customers(session)[0].sms_consent is None
    send({"type": "identify", "userId": "u1", "traits": {"sms_consent": "subscribed", "consent_source": "checkout-box"},
          "context": {"ip": "198.51.100.4", "userAgent": "Mozilla/5.0", "page": {"url": "https://shop.example/checkout"}}})  # fmt: skip
    with Session(engine) as session:
        [customer] = _live_customers(session)
        [record] = session.scalars(sa.select(ConsentRecord))
        assert (customer.sms_consent, record.channel, record.status, record.source) == (
            "subscribed",
            "sms",
            "subscribed",
            "checkout-box",
        )
        assert record.evidence["ip"] == "198.51.100.4"
        assert record.evidence["page_url"] == "https://shop.example/checkout"


def test_time_on_a_product_page_counts_as_dwell(send, engine, clock) -> None:  # type: ignore[no-untyped-def]
    send(
        {
            "type": "track",
            "anonymousId": "a",
            "event": "Product Viewed",
            "properties": {"product_id": "p1", "name": "Tent"},
        }
    )
    clock.advance(45)
    send({"type": "page", "anonymousId": "a", "name": "Reviews"})
    with Session(engine) as session:
        [browse] = session.scalars(sa.select(IntentSession))
        assert (browse.kind, browse.status) == ("browse", "open")
        assert (browse.items[0]["views"], browse.items[0]["dwell_seconds"]) == (1, 45.0)


def test_refund_for_an_unknown_order_is_kept_as_an_event_only(send, engine) -> None:  # type: ignore[no-untyped-def]
    send(
        {
            "type": "track",
            "userId": "u1",
            "event": "Order Refunded",
            "properties": {"order_id": "nope", "total": 5},
        }
    )
    with Session(engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Refund)) == 0
        assert session.scalar(sa.select(Event.processed_at)) is not None


def test_consent_replays_are_recognised_within_one_batch(send, engine, clock) -> None:  # type: ignore[no-untyped-def]
    checkout_box = {"sms_consent": "subscribed", "consent_source": "shopify:checkout",
                    "consent_evidence": {"buyer_accepts_sms_marketing": True, "checkout_token": "t1"}}  # fmt: skip
    at = [(clock.now() + timedelta(minutes=minute)).isoformat() for minute in range(4)]
    # given an opt-in, an opt-out, the opt-in delivered again and then one with new proof, all
    # applied in one batch (the records of the batch itself are what the replay check must see)
    send(
        {"type": "identify", "userId": "u1", "timestamp": at[0], "traits": checkout_box},
        {"type": "identify", "userId": "u1", "timestamp": at[1],
         "traits": {"sms_consent": "unsubscribed", "consent_source": "sms:STOP"}},
        {"type": "identify", "userId": "u1", "timestamp": at[2], "traits": checkout_box},
        {"type": "identify", "userId": "u1", "timestamp": at[3],
         "traits": {**checkout_box, "consent_evidence": {"checkout_token": "t2"}}},
    )  # fmt: skip
    # then the replay changed nothing and the new proof counted
    with Session(engine) as session:
        assert _live_customers(session)[0].sms_consent == "subscribed"
        records = session.execute(
            sa.select(ConsentRecord.status, ConsentRecord.evidence).order_by(ConsentRecord.id)
        ).all()
        assert [(status, evidence.get("checkout_token")) for status, evidence in records] == [
            ("subscribed", "t1"), ("unsubscribed", None), ("subscribed", "t2"),
        ]  # fmt: skip


def test_a_resent_opt_in_does_not_undo_a_later_opt_out(send, engine, clock) -> None:  # type: ignore[no-untyped-def]
    checkout_box = {"sms_consent": "subscribed", "consent_source": "shopify:checkout",
                    "consent_evidence": {"buyer_accepts_sms_marketing": True, "checkout_token": "t1"}}  # fmt: skip
    # given an opt-in from a ticked checkout box, then an opt-out
    send({"type": "identify", "userId": "u1", "traits": checkout_box})
    clock.advance(60)
    send(
        {
            "type": "identify",
            "userId": "u1",
            "traits": {"sms_consent": "unsubscribed", "consent_source": "sms:STOP"},
        }
    )
    # when the same checkout is delivered again, still carrying its ticked box
    clock.advance(60)
    send({"type": "identify", "userId": "u1", "traits": checkout_box})
    with Session(engine) as session:
        assert _live_customers(session)[0].sms_consent == "unsubscribed"
    # but a new opt-in with new proof counts
    clock.advance(60)
    send(
        {
            "type": "identify",
            "userId": "u1",
            "traits": {**checkout_box, "consent_evidence": {"checkout_token": "t2"}},
        }
    )
    with Session(engine) as session:
        assert _live_customers(session)[0].sms_consent == "subscribed"
        statuses = list(session.scalars(sa.select(ConsentRecord.status).order_by(ConsentRecord.id)))
        assert statuses == ["subscribed", "unsubscribed", "subscribed"]


def test_queue_claims_are_planned_in_index_order_and_the_settings_restored(engine) -> None:  # type: ignore[no-untyped-def]
    if engine.dialect.name != "postgresql":
        pytest.skip("planner settings are PostgreSQL's (on SQLite the block does nothing)")
    with Session(engine) as session, session.begin():
        with index_order_only(session):
            assert session.execute(sa.text("SHOW enable_bitmapscan")).scalar() == "off"
            assert session.execute(sa.text("SHOW enable_sort")).scalar() == "off"
        assert session.execute(sa.text("SHOW enable_bitmapscan")).scalar() == "on"
        assert session.execute(sa.text("SHOW enable_sort")).scalar() == "on"
