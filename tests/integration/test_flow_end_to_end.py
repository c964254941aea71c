"""The abandoned-cart flow end to end: tracking calls over HTTP → profile and checkout →
Checkout Abandoned → a run → the first message after an hour → the order ends it."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tests.unit.test_flow_definition import ABANDONED_CART
from winback.commerce import abandonment
from winback.db.engine import transaction
from winback.db.models import FlowRun, OutboxEntry
from winback.flows import engine as flow_engine
from winback.flows import service
from winback.kernel.clock import VirtualClock
from winback.processing.processor import process_pending
from winback.runtime import Runtime


def _outbox(engine: sa.Engine) -> list[tuple[str, str]]:
    with Session(engine) as session:
        return [
            (row.node_id, row.kind)
            for row in session.scalars(sa.select(OutboxEntry).order_by(OutboxEntry.id))
        ]


def test_abandoned_cart_flow_through_http(runtime: Runtime, clock: VirtualClock, track) -> None:  # type: ignore[no-untyped-def]
    with transaction(runtime.engine) as session:
        flow = service.create_flow(session, name="abandoned cart", definition=ABANDONED_CART, now=clock.now())
        service.set_status(session, flow.id, "live", clock.now())
    products = [{"product_id": "p1", "name": "Boots", "price": 120, "quantity": 1}]
    # given a shopper who starts a checkout and leaves
    assert track("identify", userId="u1", traits={"email": "ann@example.com", "phone": "+14155550123",
                                                  "sms_consent": "subscribed"}).status_code == 200  # fmt: skip
    assert track("track", userId="u1", event="Checkout Started",
                 properties={"checkout_id": "k1", "value": 120, "products": products}).status_code == 200  # fmt: skip
    process_pending(runtime)
    # when an hour passes the sweep abandons the checkout, and the derived event starts the flow
    clock.advance(timedelta(minutes=61))
    assert abandonment.sweep(runtime).total == 1
    process_pending(runtime)
    assert flow_engine.step_due_runs(runtime) == 1
    with Session(runtime.engine) as session:
        [run] = session.scalars(sa.select(FlowRun))
        assert (run.status, run.node_id, run.checkout_id, run.trigger["event"]) == (
            "waiting",
            "wait-casual",
            "k1",
            "Checkout Abandoned",
        )
    # then an hour later the casual shopper's SMS is in the outbox
    clock.advance(timedelta(hours=1))
    assert flow_engine.step_due_runs(runtime) == 1
    assert _outbox(runtime.engine) == [("sms", "send_sms")]
    # and an order the next morning ends the wait with a thank-you, and no reminder follows
    clock.advance(timedelta(hours=10))
    track(
        "track",
        userId="u1",
        event="Order Completed",
        properties={"order_id": "o1", "checkout_id": "k1", "total": 120, "products": products},
    )
    process_pending(runtime)
    assert flow_engine.step_due_runs(runtime) == 1
    clock.advance(timedelta(days=2))
    assert flow_engine.step_due_runs(runtime) == 0
    assert _outbox(runtime.engine) == [("sms", "send_sms"), ("thanks", "send_sms")]
    with Session(runtime.engine) as session:
        assert session.scalar(sa.select(FlowRun.status)) == "completed"


def test_high_value_customer_gets_the_mms_and_an_order_before_the_reminder_ends_it(
    runtime: Runtime, clock: VirtualClock, track
) -> None:  # type: ignore[no-untyped-def]
    with transaction(runtime.engine) as session:
        flow = service.create_flow(session, name="abandoned cart", definition=ABANDONED_CART, now=clock.now())
        service.set_status(session, flow.id, "live", clock.now())
    # given a customer with five earlier orders worth $600
    track("identify", userId="vip", traits={"phone": "+14155550199", "sms_consent": "subscribed"})
    for n in range(5):
        track(
            "track", userId="vip", event="Order Completed", properties={"order_id": f"old-{n}", "total": 120}
        )
    track("track", userId="vip", event="Checkout Started", properties={"checkout_id": "k9", "value": 300,
          "products": [{"product_id": "p2", "price": 300, "quantity": 1}]})  # fmt: skip
    process_pending(runtime)
    clock.advance(timedelta(minutes=61))
    abandonment.sweep(runtime)
    process_pending(runtime)
    flow_engine.step_due_runs(runtime)
    # when the hour is up the high-value branch sends the MMS
    clock.advance(timedelta(hours=1))
    flow_engine.step_due_runs(runtime)
    assert _outbox(runtime.engine) == [("mms", "send_mms")]
    # and an order before the reminder is due gets the thank-you, and nothing else follows
    clock.advance(timedelta(hours=5))
    track(
        "track",
        userId="vip",
        event="Order Completed",
        properties={"order_id": "o9", "checkout_id": "k9", "total": 300},
    )
    process_pending(runtime)
    flow_engine.step_due_runs(runtime)
    clock.advance(timedelta(days=3))
    flow_engine.step_due_runs(runtime)
    assert _outbox(runtime.engine) == [("mms", "send_mms"), ("thanks", "send_sms")]


def test_an_order_before_the_first_message_ends_the_run_with_nothing_sent(
    runtime: Runtime, clock: VirtualClock, track
) -> None:  # type: ignore[no-untyped-def]
    with transaction(runtime.engine) as session:
        flow = service.create_flow(session, name="abandoned cart", definition=ABANDONED_CART, now=clock.now())
        service.set_status(session, flow.id, "live", clock.now())
    track("identify", userId="u2", traits={"phone": "+14155550198", "sms_consent": "subscribed"})
    track("track", userId="u2", event="Checkout Started", properties={"checkout_id": "k2", "value": 50,
          "products": [{"product_id": "p1", "price": 50, "quantity": 1}]})  # fmt: skip
    process_pending(runtime)
    clock.advance(timedelta(minutes=61))
    abandonment.sweep(runtime)
    process_pending(runtime)
    flow_engine.step_due_runs(runtime)
    clock.advance(timedelta(minutes=30))  # before the first message is due
    track(
        "track",
        userId="u2",
        event="Order Completed",
        properties={"order_id": "o2", "checkout_id": "k2", "total": 50},
    )
    process_pending(runtime)
    flow_engine.step_due_runs(runtime)
    clock.advance(timedelta(days=2))
    flow_engine.step_due_runs(runtime)
    assert _outbox(runtime.engine) == []
    with Session(runtime.engine) as session:
        run = session.scalars(sa.select(FlowRun)).one()
        assert (run.status, run.exit_reason) == ("exited", "Order Completed since entry")
