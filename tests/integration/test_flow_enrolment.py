"""Who is in a flow, through the real processor on both databases: a guest's run goes on as the
logged-in customer's after a merge, so it sees their order and stops; a run the survivor is already
in wins; messages, codes and push subscriptions follow the person; and imported history or a
checkout abandoned long ago starts no run."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from winback.commerce import abandonment
from winback.db.engine import transaction
from winback.db.models import Customer, Event, FlowRun, Message, OutboxEntry, PushSubscription
from winback.flows import engine as flow_engine
from winback.flows import service
from winback.ingest.segment import parse_message
from winback.ingest.store import store_events
from winback.kernel.clock import VirtualClock
from winback.processing.merge import MERGED_RUN_EXIT
from winback.processing.processor import process_pending
from winback.runtime import Runtime
from winback.segments import service as segments

REMINDER = {
    "trigger": {"type": "event", "event": "Checkout Started"},
    "entry": {"reentry": {"mode": "every_time"}},
    "exit_when": [{"type": "event_since_entry", "event": "Order Completed"}],
    "start": "wait",
    "nodes": [
        {"id": "wait", "type": "delay", "duration": {"amount": 1, "unit": "hours"}, "next": "sms"},
        {"id": "sms", "type": "action", "action": {"type": "send_sms", "body": "Still thinking it over?"}},
    ],
}
PRODUCTS = [{"product_id": "p1", "price": 40, "quantity": 1}]


def _send(runtime: Runtime, kind: str, at: datetime | None = None, **message: Any) -> None:
    """One Segment call received now (about `at`, when given: imported history), then applied."""
    now = runtime.clock.now()
    row = parse_message({"timestamp": (at or now).isoformat(), **message}, received_at=now, message_type=kind)
    store_events(runtime.engine, [row])
    process_pending(runtime)


def _live(runtime: Runtime) -> int:
    with transaction(runtime.engine) as session:
        flow = service.create_flow(session, name="reminder", definition=REMINDER, now=runtime.clock.now())
        service.set_status(session, flow.id, "live", runtime.clock.now())
        return flow.id


def _runs(runtime: Runtime) -> list[tuple[str | None, str, str | None]]:
    """(customer user id, status, exit reason) of every run, oldest first."""
    with Session(runtime.engine) as session:
        query = (
            sa.select(Customer.user_id, FlowRun.status, FlowRun.exit_reason)
            .join(Customer, Customer.id == FlowRun.customer_id)
            .order_by(FlowRun.id)
        )
        return [tuple(row) for row in session.execute(query)]  # type: ignore[misc]


def _outbox_count(runtime: Runtime) -> int:
    with Session(runtime.engine) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(OutboxEntry)) or 0


def test_a_guests_run_stops_when_they_log_in_and_order(runtime: Runtime, clock: VirtualClock) -> None:
    # given ann, known by her user id, and the reminder flow live
    _live(runtime)
    _send(runtime, "identify", userId="u1", anonymousId="phone", traits={"email": "ann@example.com"})
    # when a guest on a laptop starts a checkout (their run begins, on the guest profile)
    _send(runtime, "track", anonymousId="laptop", event="Checkout Started",
          properties={"checkout_id": "k1", "value": 40, "products": PRODUCTS})  # fmt: skip
    assert flow_engine.step_due_runs(runtime) == 1
    assert _runs(runtime) == [(None, "waiting", None)]
    # and then logs in as ann (the guest merges into her) and orders
    clock.advance(timedelta(minutes=20))
    _send(runtime, "identify", userId="u1", anonymousId="laptop")
    _send(runtime, "track", userId="u1", event="Order Completed",
          properties={"order_id": "o1", "total": 40, "products": PRODUCTS})  # fmt: skip
    # then the run is ann's now, sees her order and stops: no reminder
    clock.advance(timedelta(hours=1))
    flow_engine.step_due_runs(runtime)
    assert _runs(runtime) == [("u1", "exited", "Order Completed since entry")]
    assert _outbox_count(runtime) == 0


def test_a_run_the_survivor_is_already_in_wins(runtime: Runtime, clock: VirtualClock) -> None:
    # given ann in the flow from her own checkout, and a guest in it from another
    _live(runtime)
    _send(runtime, "identify", userId="u1", anonymousId="phone", traits={"email": "ann@example.com"})
    _send(runtime, "track", userId="u1", event="Checkout Started",
          properties={"checkout_id": "k0", "value": 40, "products": PRODUCTS})  # fmt: skip
    _send(runtime, "track", anonymousId="laptop", event="Checkout Started",
          properties={"checkout_id": "k1", "value": 40, "products": PRODUCTS})  # fmt: skip
    flow_engine.step_due_runs(runtime)
    # when the guest turns out to be ann
    _send(runtime, "identify", userId="u1", anonymousId="laptop")
    # then ann keeps her run, the guest's ends, and one reminder goes out
    assert _runs(runtime) == [("u1", "waiting", None), ("u1", "exited", MERGED_RUN_EXIT)]
    clock.advance(timedelta(hours=1))
    assert flow_engine.step_due_runs(runtime) == 1
    assert _outbox_count(runtime) == 1


def test_messages_and_push_subscriptions_follow_the_person(runtime: Runtime, clock: VirtualClock) -> None:
    _send(runtime, "identify", userId="u1", anonymousId="phone", traits={"email": "ann@example.com"})
    _send(runtime, "page", anonymousId="laptop", name="Home")
    with Session(runtime.engine) as session:
        guest = session.scalar(sa.select(Customer.id).where(Customer.user_id.is_(None)))
        ann = session.scalar(sa.select(Customer.id).where(Customer.user_id == "u1"))
    now = clock.now()
    with transaction(runtime.engine) as session:
        session.add(Message(customer_id=guest, channel="push", status="sent", priority=50, transactional=False,
                            attempts=1, media_urls=[], created_at=now, updated_at=now, sent_at=now))  # fmt: skip
        session.add(PushSubscription(customer_id=guest, endpoint="https://push.example/laptop", p256dh="k",
                                     auth="a", created_at=now))  # fmt: skip
    _send(runtime, "identify", userId="u1", anonymousId="laptop")
    with Session(runtime.engine) as session:
        assert session.scalars(sa.select(Message.customer_id)).all() == [ann]
        assert session.scalars(sa.select(PushSubscription.customer_id)).all() == [ann]


# --- history does not trigger flows ---------------------------------------------------------------


def test_imported_history_and_stale_abandonments_start_no_runs(runtime: Runtime, clock: VirtualClock) -> None:
    # given the reminder flow live, and a year-old checkout arriving now (an import of history)
    _live(runtime)
    old = clock.now() - timedelta(days=365)
    _send(runtime, "track", at=old, anonymousId="a-old", event="Checkout Started",
          properties={"checkout_id": "k-old", "value": 40, "products": PRODUCTS})  # fmt: skip
    # then it starts no run, and neither does its abandonment when the sweep finds it
    assert _runs(runtime) == []
    assert abandonment.sweep(runtime).checkouts_abandoned == 1
    process_pending(runtime)
    assert _runs(runtime) == []
    # while a checkout started now does, and its abandonment an hour later is fresh enough too
    _send(runtime, "track", anonymousId="a-new", event="Checkout Started",
          properties={"checkout_id": "k-new", "value": 40, "products": PRODUCTS})  # fmt: skip
    assert [status for _, status, _ in _runs(runtime)] == ["active"]


def test_history_that_moves_someone_into_a_segment_starts_no_segment_flow(
    runtime: Runtime, clock: VirtualClock
) -> None:
    # given a "has ordered" segment and a welcome-to-buyers flow on entering it
    with transaction(runtime.engine) as session:
        segment_id = segments.create_segment(
            session, name="buyers", definition={"type": "order_count", "compare": {"op": "gte", "value": 1}},
            now=clock.now(), timezone="UTC",
        ).id  # fmt: skip
        flow = {"trigger": {"type": "segment_entered", "segment_id": segment_id},
                "start": "tag", "nodes": [{"id": "tag", "type": "action", "action": {"type": "add_tag", "tag": "hi"}}]}  # fmt: skip
        created = service.create_flow(session, name="buyers", definition=flow, now=clock.now())
        service.set_status(session, created.id, "live", clock.now())
    # when last year's order of bob is imported, and ann orders now
    old = clock.now() - timedelta(days=365)
    _send(runtime, "track", at=old, userId="bob", event="Order Completed",
          properties={"order_id": "o-old", "total": 40, "products": PRODUCTS})  # fmt: skip
    _send(runtime, "track", userId="ann", event="Order Completed",
          properties={"order_id": "o-new", "total": 40, "products": PRODUCTS})  # fmt: skip
    process_pending(runtime)  # (the Segment Entered events themselves)
    # then both entered the segment, but only ann's entry starts the flow
    with Session(runtime.engine) as session:
        entered = session.execute(
            sa.select(Customer.user_id, Event.properties).join(Customer, Customer.id == Event.customer_id)
            .where(Event.event == "Segment Entered").order_by(Customer.user_id)
        ).all()  # fmt: skip
    assert [user for user, _ in entered] == ["ann", "bob"]
    assert entered[1][1]["caused_at"] == old.isoformat()
    assert [user for user, _, _ in _runs(runtime)] == ["ann"]
