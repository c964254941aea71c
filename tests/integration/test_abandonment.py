"""The abandonment sweep on both databases: rows closed, derived events appended, exactly once."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from winback.commerce import abandonment
from winback.db.engine import transaction
from winback.db.models import Checkout, Customer, Event, IntentSession
from winback.kernel.clock import VirtualClock
from winback.runtime import Runtime

HOUR = 3600  # seconds; every window in these tests is the default hour

LINE = {
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


def _customer(runtime: Runtime, user_id: str | None = None, **fields: Any) -> int:
    now = runtime.clock.now()
    with transaction(runtime.engine) as session:
        customer = Customer(
            user_id=user_id, first_seen_at=now, last_seen_at=now, created_at=now, updated_at=now, **fields
        )
        session.add(customer)
        session.flush()
        return customer.id


def _checkout(runtime: Runtime, customer_id: int | None, **fields: Any) -> int:
    now = runtime.clock.now()
    values: dict[str, Any] = {
        "kind": "checkout",
        "external_id": "co-1",
        "cart_id": "cart-1",
        "status": "open",
        "value": Decimal("99.80"),
        "currency": "EUR",
        "items": [dict(LINE)],
        "coupon": "SPRING10",
        "recovery_url": "https://shop.test/recover/co-1",
        "created_at": now,
        "updated_at": now,
        "last_activity_at": now,
    }
    values.update(fields)
    with transaction(runtime.engine) as session:
        checkout = Checkout(customer_id=customer_id, **values)
        session.add(checkout)
        session.flush()
        return checkout.id


def _session(runtime: Runtime, customer_id: int, kind: str, items: list[dict[str, Any]]) -> int:
    now = runtime.clock.now()
    with transaction(runtime.engine) as session:
        intent = IntentSession(
            customer_id=customer_id,
            kind=kind,
            status="open",
            items=items,
            started_at=now,
            last_activity_at=now,
        )
        session.add(intent)
        session.flush()
        return intent.id


def _events(runtime: Runtime) -> list[Event]:
    with sa.orm.Session(runtime.engine) as session:
        return list(session.scalars(sa.select(Event).order_by(Event.id)))


def _checkout_state(runtime: Runtime, checkout_id: int) -> tuple[str, datetime | None]:
    with sa.orm.Session(runtime.engine) as session:
        checkout = session.get(Checkout, checkout_id)
        assert checkout is not None
        return checkout.status, checkout.abandoned_at


def _session_state(runtime: Runtime, session_id: int) -> tuple[str, datetime | None]:
    with sa.orm.Session(runtime.engine) as session:
        intent = session.get(IntentSession, session_id)
        assert intent is not None
        return intent.status, intent.closed_at


def test_checkout_is_abandoned_once_after_the_window(runtime: Runtime, clock: VirtualClock) -> None:
    # given a known customer whose checkout was last touched at 09:00
    started = clock.now()
    customer_id = _customer(runtime, user_id="u-1")
    checkout_id = _checkout(runtime, customer_id)

    # when the sweep runs one second before the hour is up
    clock.advance(HOUR - 1)
    early = abandonment.sweep(runtime)
    # then nothing happens
    assert (early.total, early.as_of) == (0, clock.now())
    assert _checkout_state(runtime, checkout_id) == ("open", None)
    assert _events(runtime) == []

    # when it runs at 10:00
    fired_at = clock.advance(1)
    result = abandonment.sweep(runtime)
    # then the checkout is abandoned and one Checkout Abandoned event is appended, stamped now
    assert result == abandonment.SweepResult(as_of=fired_at, checkouts_abandoned=1)
    assert _checkout_state(runtime, checkout_id) == ("abandoned", fired_at)
    [event] = _events(runtime)
    assert (event.message_id, event.source, event.type, event.event) == (
        f"derived:checkout_abandoned:{checkout_id}",
        "derived",
        "track",
        "Checkout Abandoned",
    )
    assert (event.customer_id, event.user_id, event.anonymous_id) == (customer_id, "u-1", None)
    assert (event.timestamp, event.received_at, event.processed_at) == (fired_at, fired_at, None)
    assert event.properties == {
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
            }
        ],
        "recovery_url": "https://shop.test/recover/co-1",
        "coupon": "SPRING10",
        "started_at": started.isoformat(),
        "last_activity_at": started.isoformat(),
    }

    # when the sweep runs again a day later
    clock.advance(timedelta(days=1))
    again = abandonment.sweep(runtime)
    # then nothing more is emitted
    assert again.total == 0
    assert len(_events(runtime)) == 1


def test_cart_is_abandoned_but_a_cart_that_moved_to_checkout_is_not(
    runtime: Runtime, clock: VirtualClock
) -> None:
    # given an anonymous shopper's open cart, and a second cart that went on to a checkout
    customer_id = _customer(runtime)
    open_cart = _checkout(runtime, customer_id, kind="cart", external_id="cart-1", cart_id=None, coupon=None)
    moved_cart = _checkout(
        runtime, customer_id, kind="cart", external_id="cart-2", cart_id=None, status="checked_out"
    )
    # when the window has passed
    fired_at = clock.advance(HOUR)
    result = abandonment.sweep(runtime)
    # then only the open cart is abandoned, with a Cart Abandoned event under a customer anonymous id
    assert result == abandonment.SweepResult(as_of=fired_at, carts_abandoned=1)
    assert _checkout_state(runtime, open_cart) == ("abandoned", fired_at)
    assert _checkout_state(runtime, moved_cart) == ("checked_out", None)
    [event] = _events(runtime)
    assert (event.message_id, event.event, event.customer_id, event.user_id, event.anonymous_id) == (
        f"derived:cart_abandoned:{open_cart}",
        "Cart Abandoned",
        customer_id,
        None,
        f"winback-customer:{customer_id}",
    )
    assert (event.properties["cart_id"], event.properties["value"], "checkout_id" in event.properties) == (
        "cart-1",
        99.8,
        False,
    )


def test_checkouts_without_items_or_customer_or_recent_activity_stay_open(
    runtime: Runtime, clock: VirtualClock
) -> None:
    # given an empty checkout, one without a customer, one active 30 minutes ago and a completed one
    customer_id = _customer(runtime, user_id="u-1")
    empty = _checkout(runtime, customer_id, external_id="co-empty", items=[])
    nobody = _checkout(runtime, None, external_id="co-nobody")
    completed = _checkout(runtime, customer_id, external_id="co-done", status="completed")
    clock.advance(HOUR)
    recent = _checkout(
        runtime, customer_id, external_id="co-recent", last_activity_at=clock.now() - timedelta(minutes=30)
    )
    # when the sweep runs
    result = abandonment.sweep(runtime)
    # then none of them is touched
    assert result.total == 0
    assert [_checkout_state(runtime, row)[0] for row in (empty, nobody, completed, recent)] == [
        "open",
        "open",
        "completed",
        "open",
    ]
    assert _events(runtime) == []


def test_browse_session_with_interest_is_abandoned_and_one_without_expires(
    runtime: Runtime, clock: VirtualClock
) -> None:
    # given two customers' browse sessions: one viewed a product twice, the other glanced once
    interested = _customer(runtime, user_id="u-1")
    glancer = _customer(runtime, user_id="u-2")
    viewed = {
        "kind": "product",
        "id": "p-1",
        "name": "Linen shirt",
        "url": "https://shop.test/shirt",
        "image_url": None,
        "price": "49.90",
        "views": 2,
        "dwell_seconds": 12.5,
        "last_viewed_at": clock.now().isoformat(),
    }
    abandoned_id = _session(runtime, interested, "browse", [viewed])
    expired_id = _session(runtime, glancer, "browse", [{**viewed, "views": 1, "dwell_seconds": 3.0}])

    # when the sweep runs a minute before the window ends, then at its end
    clock.advance(HOUR - 60)
    assert abandonment.sweep(runtime).total == 0
    fired_at = clock.advance(60)
    result = abandonment.sweep(runtime)

    # then the interested session is abandoned with an event; the glance expires silently
    assert result == abandonment.SweepResult(as_of=fired_at, browse_abandoned=1, browse_expired=1)
    assert _session_state(runtime, abandoned_id) == ("abandoned", fired_at)
    assert _session_state(runtime, expired_id) == ("expired", fired_at)
    [event] = _events(runtime)
    assert (event.message_id, event.event, event.customer_id, event.user_id) == (
        f"derived:browse_abandoned:{abandoned_id}",
        "Browse Abandoned",
        interested,
        "u-1",
    )
    assert event.properties == {
        "products": [
            {
                "product_id": "p-1",
                "name": "Linen shirt",
                "url": "https://shop.test/shirt",
                "price": 49.9,
                "last_viewed_at": "2026-03-02T09:00:00+00:00",
                "views": 2,
                "dwell_seconds": 12.5,
            }
        ],
        "categories": [],
        "started_at": "2026-03-02T09:00:00+00:00",
        "last_activity_at": "2026-03-02T09:00:00+00:00",
    }
    # and a second sweep emits nothing more
    assert abandonment.sweep(runtime).total == 0
    assert len(_events(runtime)) == 1


def test_search_session_is_abandoned_and_converted_one_is_not(runtime: Runtime, clock: VirtualClock) -> None:
    # given an open search session and one that ended in a cart add
    customer_id = _customer(runtime, user_id="u-1")
    searches = [
        {"query": "linen shirt", "searched_at": "2026-03-02T09:00:00+00:00"},
        {"query": "linen trousers", "searched_at": "2026-03-02T09:00:00+00:00"},
    ]
    open_id = _session(runtime, customer_id, "search", searches)
    converted_id = _session(runtime, customer_id, "search", searches)
    with transaction(runtime.engine) as session:
        session.get(IntentSession, converted_id).status = "converted"  # type: ignore[union-attr]
    # when the window has passed
    fired_at = clock.advance(HOUR)
    result = abandonment.sweep(runtime)
    # then only the open one is abandoned, with its queries
    assert result == abandonment.SweepResult(as_of=fired_at, search_abandoned=1)
    assert _session_state(runtime, open_id) == ("abandoned", fired_at)
    assert _session_state(runtime, converted_id) == ("converted", None)
    [event] = _events(runtime)
    assert (event.message_id, event.event, event.customer_id) == (
        f"derived:search_abandoned:{open_id}",
        "Search Abandoned",
        customer_id,
    )
    assert event.properties == {
        "queries": ["linen shirt", "linen trousers"],
        "query": "linen trousers",
        "started_at": "2026-03-02T09:00:00+00:00",
        "last_activity_at": "2026-03-02T09:00:00+00:00",
    }


def test_unprocessed_events_hold_the_sweep_back(runtime: Runtime, clock: VirtualClock) -> None:
    # given a checkout last active at 09:00, and an event received at 09:30 still waiting in the queue
    customer_id = _customer(runtime, user_id="u-1")
    checkout_id = _checkout(runtime, customer_id)
    received = clock.advance(30 * 60)
    with transaction(runtime.engine) as session:
        session.add(
            Event(
                message_id="m-pending",
                source="segment",
                type="track",
                event="Order Completed",
                user_id="u-1",
                timestamp=received,
                received_at=received,
            )
        )
    # when the sweep runs at 11:00
    clock.advance(90 * 60)
    held = abandonment.sweep(runtime)
    # then windows are measured up to 09:30 only, so the checkout is not yet abandoned
    assert (held.as_of, held.total) == (received, 0)
    assert _checkout_state(runtime, checkout_id) == ("open", None)

    # when the processor has applied that event (and found no reason to close the checkout)
    with transaction(runtime.engine) as session:
        session.execute(sa.update(Event).values(processed_at=clock.now(), customer_id=customer_id))
    # then the next sweep abandons it
    assert abandonment.sweep(runtime).checkouts_abandoned == 1


def test_sweep_closes_at_most_limit_rows_of_a_kind_per_call(runtime: Runtime, clock: VirtualClock) -> None:
    # given three due checkouts, the oldest first
    customer_id = _customer(runtime, user_id="u-1")
    ids = [
        _checkout(
            runtime, customer_id, external_id=f"co-{n}", last_activity_at=clock.now() + timedelta(minutes=n)
        )
        for n in range(3)
    ]
    clock.advance(2 * HOUR)
    # when the sweep may close two per call
    first = abandonment.sweep(runtime, limit=2)
    second = abandonment.sweep(runtime, limit=2)
    # then the two oldest go first and the third on the next call
    assert (first.checkouts_abandoned, second.checkouts_abandoned) == (2, 1)
    assert [event.message_id for event in _events(runtime)] == [
        f"derived:checkout_abandoned:{row}" for row in ids
    ]


def test_erased_customer_gets_no_derived_event(runtime: Runtime, clock: VirtualClock) -> None:
    # given an erased customer with an open checkout and a browse session showing interest
    customer_id = _customer(runtime, erased_at=clock.now())
    checkout_id = _checkout(runtime, customer_id)
    session_id = _session(runtime, customer_id, "browse", [{"kind": "product", "id": "p-1", "views": 4}])
    # when the windows have passed
    clock.advance(HOUR)
    result = abandonment.sweep(runtime)
    # then no event is emitted: the checkout is left to the privacy code, the session expires
    assert (result.events, result.browse_expired) == (0, 1)
    assert _checkout_state(runtime, checkout_id) == ("open", None)
    assert _session_state(runtime, session_id)[0] == "expired"
    assert _events(runtime) == []
