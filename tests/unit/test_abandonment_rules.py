"""The pure abandonment rules: when carts, checkouts and intent sessions are abandoned, and what the
derived events carry."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from winback.commerce import abandonment
from winback.commerce.abandonment import Rules, Verdict

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RULES = Rules(
    checkout_abandoned_after_s=3600,
    browse_abandoned_after_s=1800,
    browse_min_views=2,
    browse_min_dwell_s=30,
    search_abandoned_after_s=900,
)
SHIRT = {
    "product_id": "p-1",
    "variant_id": "v-1",
    "sku": "SHIRT-M",
    "name": "Linen shirt",
    "price": "49.90",
    "quantity": 2,
    "image_url": "https://shop.test/shirt.jpg",
    "url": "https://shop.test/shirt",
    "category": "Shirts",
}


@dataclass(frozen=True)
class FakeCheckout:
    kind: str = "checkout"
    external_id: str = "co-1"
    cart_id: str | None = "cart-1"
    customer_id: int | None = 7
    status: str = "open"
    value: Decimal = Decimal("99.80")
    currency: str | None = "EUR"
    items: list[dict[str, Any]] = field(default_factory=lambda: [dict(SHIRT)])
    coupon: str | None = "SPRING10"
    recovery_url: str | None = "https://shop.test/recover/co-1"
    created_at: datetime = T0
    last_activity_at: datetime = T0 + timedelta(minutes=5)


@dataclass(frozen=True)
class FakeSession:
    kind: str = "browse"
    status: str = "open"
    items: list[dict[str, Any]] = field(default_factory=list)
    started_at: datetime = T0
    last_activity_at: datetime = T0


def _viewed(kind: str, item_id: str, views: int, dwell: float, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "id": item_id, "views": views, "dwell_seconds": dwell, **extra}


# --- carts and checkouts ------------------------------------------------------------------------


def test_checkout_is_abandoned_exactly_when_its_window_has_passed() -> None:
    # given a checkout last active at 09:05 and a one-hour window
    checkout = FakeCheckout()
    # then it waits until 10:05 and is abandoned from 10:05 on
    assert (
        abandonment.checkout_verdict(checkout, RULES, T0 + timedelta(minutes=64, seconds=59))
        is Verdict.NOT_YET
    )
    assert abandonment.checkout_verdict(checkout, RULES, T0 + timedelta(minutes=65)) is Verdict.ABANDON
    assert abandonment.checkout_verdict(checkout, RULES, T0 + timedelta(days=3)) is Verdict.ABANDON


def test_cart_follows_the_same_window() -> None:
    cart = FakeCheckout(kind="cart", external_id="cart-9", cart_id=None)
    assert abandonment.checkout_verdict(cart, RULES, T0 + timedelta(minutes=65)) is Verdict.ABANDON


@pytest.mark.parametrize(
    "change",
    [
        {"status": "checked_out"},  # the cart moved on to a checkout, which carries the abandonment
        {"status": "completed"},
        {"status": "abandoned"},  # already emitted
        {"status": "recovered"},
        {"customer_id": None},  # nobody to bring back
        {"items": []},  # nothing to bring them back to
        {"kind": "order"},
    ],
)
def test_checkout_that_is_not_an_open_one_with_items_and_customer_is_left_alone(
    change: dict[str, Any],
) -> None:
    checkout = dataclasses.replace(FakeCheckout(), **change)
    assert abandonment.checkout_verdict(checkout, RULES, T0 + timedelta(days=1)) is Verdict.NOT_YET


def test_checkout_properties_carry_money_as_numbers_and_the_lines() -> None:
    # given a checkout started from a cart, with one line whose price is a decimal string
    checkout = FakeCheckout(
        items=[dict(SHIRT), {"product_id": "p-2", "name": "Sock", "price": None, "quantity": 1}]
    )
    # when its properties are built
    properties = abandonment.checkout_properties(checkout)
    # then money is a number beside the currency, and absent fields are left out
    assert properties == {
        "checkout_id": "co-1",
        "cart_id": "cart-1",
        "value": 99.8,
        "currency": "EUR",
        "products": [
            {
                "product_id": "p-1",
                "variant_id": "v-1",
                "sku": "SHIRT-M",
                "name": "Linen shirt",
                "category": "Shirts",
                "price": 49.9,
                "quantity": 2,
                "url": "https://shop.test/shirt",
                "image_url": "https://shop.test/shirt.jpg",
            },
            {"product_id": "p-2", "name": "Sock", "quantity": 1},
        ],
        "recovery_url": "https://shop.test/recover/co-1",
        "coupon": "SPRING10",
        "started_at": "2026-03-02T09:00:00+00:00",
        "last_activity_at": "2026-03-02T09:05:00+00:00",
    }


def test_cart_properties_name_the_cart_and_no_checkout() -> None:
    cart = FakeCheckout(kind="cart", external_id="cart-9", cart_id=None, coupon=None, recovery_url=None)
    properties = abandonment.checkout_properties(cart)
    assert "checkout_id" not in properties
    assert (properties["cart_id"], properties["coupon"], properties["recovery_url"]) == ("cart-9", None, None)
    assert abandonment.checkout_event_name("cart") == "Cart Abandoned"
    assert abandonment.checkout_event_name("checkout") == "Checkout Abandoned"


def test_unparseable_price_is_left_out_rather_than_failing_the_sweep() -> None:
    checkout = FakeCheckout(items=[{"product_id": "p-1", "price": "ask us", "quantity": 1}])
    assert abandonment.checkout_properties(checkout)["products"] == [{"product_id": "p-1", "quantity": 1}]


# --- browse sessions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("views", "dwell", "expected"),
    [
        (2, 0.0, Verdict.ABANDON),  # viewed often enough
        (1, 30.0, Verdict.ABANDON),  # looked long enough
        (1, 29.9, Verdict.EXPIRE),  # a glance: no event
    ],
)
def test_browse_session_is_abandoned_only_with_enough_interest(
    views: int, dwell: float, expected: Verdict
) -> None:
    session = FakeSession(items=[_viewed("product", "p-1", views, dwell)])
    assert abandonment.browse_verdict(session, RULES, T0 + timedelta(minutes=30)) is expected


def test_browse_session_waits_for_its_window_and_ignores_closed_ones() -> None:
    interested = [_viewed("category", "shirts", 5, 0.0)]
    assert (
        abandonment.browse_verdict(FakeSession(items=interested), RULES, T0 + timedelta(minutes=29))
        is Verdict.NOT_YET
    )
    converted = FakeSession(items=interested, status="converted")
    assert abandonment.browse_verdict(converted, RULES, T0 + timedelta(days=1)) is Verdict.NOT_YET
    search = FakeSession(kind="search", items=[{"query": "shirt"}])
    assert abandonment.browse_verdict(search, RULES, T0 + timedelta(days=1)) is Verdict.NOT_YET


def test_browse_properties_rank_by_views_then_dwell_and_split_categories() -> None:
    # given a session with two products and a category, the most viewed last in the list
    session = FakeSession(
        items=[
            _viewed("product", "p-1", 1, 45.5, name="Shirt", price="49.90", url="https://shop.test/p-1"),
            _viewed("category", "shirts", 2, 10.0, name="Shirts", url="https://shop.test/c/shirts"),
            _viewed("product", "p-2", 3, 5.0, name="Hat", last_viewed_at="2026-03-02T09:10:00+00:00"),
        ],
        last_activity_at=T0 + timedelta(minutes=10),
    )
    # then products and categories are listed most interesting first, with views and dwell
    assert abandonment.browse_properties(session) == {
        "products": [
            {
                "product_id": "p-2",
                "name": "Hat",
                "last_viewed_at": "2026-03-02T09:10:00+00:00",
                "views": 3,
                "dwell_seconds": 5.0,
            },
            {
                "product_id": "p-1",
                "name": "Shirt",
                "url": "https://shop.test/p-1",
                "price": 49.9,
                "views": 1,
                "dwell_seconds": 45.5,
            },
        ],
        "categories": [
            {
                "id": "shirts",
                "name": "Shirts",
                "url": "https://shop.test/c/shirts",
                "views": 2,
                "dwell_seconds": 10.0,
            }
        ],
        "started_at": "2026-03-02T09:00:00+00:00",
        "last_activity_at": "2026-03-02T09:10:00+00:00",
    }


def test_malformed_view_counts_count_as_no_interest() -> None:
    item = {"kind": "product", "id": "p-1", "views": "many", "dwell_seconds": True}
    assert abandonment.shows_interest(item, RULES) is False


# --- search sessions ----------------------------------------------------------------------------


def test_search_session_is_abandoned_after_its_window_and_lists_distinct_queries() -> None:
    # given three searches, one repeated
    session = FakeSession(
        kind="search",
        items=[
            {"query": "linen shirt", "searched_at": "2026-03-02T09:00:00+00:00"},
            {"query": "hat", "searched_at": "2026-03-02T09:01:00+00:00"},
            {"query": "linen shirt", "searched_at": "2026-03-02T09:02:00+00:00"},
        ],
        last_activity_at=T0 + timedelta(minutes=2),
    )
    # then it is abandoned 15 minutes after the last search, not before
    assert abandonment.search_verdict(session, RULES, T0 + timedelta(minutes=16)) is Verdict.NOT_YET
    assert abandonment.search_verdict(session, RULES, T0 + timedelta(minutes=17)) is Verdict.ABANDON
    # and the event lists each query once, in the order first searched, and the last one
    assert abandonment.search_properties(session) == {
        "queries": ["linen shirt", "hat"],
        "query": "linen shirt",
        "started_at": "2026-03-02T09:00:00+00:00",
        "last_activity_at": "2026-03-02T09:02:00+00:00",
    }


def test_search_session_without_a_query_expires() -> None:
    session = FakeSession(kind="search", items=[{"query": "  "}])
    assert abandonment.search_verdict(session, RULES, T0 + timedelta(hours=1)) is Verdict.EXPIRE


# --- the derived event --------------------------------------------------------------------------


def test_derived_event_uses_the_user_id_when_known_else_a_customer_anonymous_id() -> None:
    known = abandonment.derived_event(
        rule="checkout_abandoned",
        row_id=12,
        event="Checkout Abandoned",
        customer_id=7,
        user_id="u-7",
        properties={"value": 1.0},
        now=T0,
    )
    assert (known.message_id, known.source, known.type, known.event) == (
        "derived:checkout_abandoned:12",
        "derived",
        "track",
        "Checkout Abandoned",
    )
    assert (known.user_id, known.anonymous_id, known.customer_id) == ("u-7", None, 7)
    assert (known.timestamp, known.received_at, known.properties) == (T0, T0, {"value": 1.0})

    anonymous = abandonment.derived_event(
        rule="browse_abandoned",
        row_id=3,
        event="Browse Abandoned",
        customer_id=8,
        user_id=None,
        properties={},
        now=T0,
    )
    assert (anonymous.message_id, anonymous.user_id, anonymous.anonymous_id) == (
        "derived:browse_abandoned:3",
        None,
        "winback-customer:8",
    )
