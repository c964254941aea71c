"""Flow runs as rows: enrolment, stepping on the virtual clock, the outbox, errors and versions."""

from __future__ import annotations

import copy
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tests.unit.test_flow_definition import ABANDONED_CART
from winback.db.engine import transaction
from winback.db.models import Customer, CustomerList, Event, FlowRun, ListMembership, OutboxEntry
from winback.flows import engine as flow_engine
from winback.flows import service
from winback.kernel.clock import VirtualClock
from winback.runtime import Runtime
from winback.settings import Settings

MAX_AGE = timedelta(hours=Settings().flow_trigger_max_age_h)  # as the processor passes it


def _customer(runtime: Runtime, **fields: Any) -> int:
    now = runtime.clock.now()
    with transaction(runtime.engine) as session:
        customer = Customer(
            tags=[], properties={}, orders_count=fields.pop("orders_count", 1),
            total_spent=fields.pop("total_spent", Decimal("40.00")), total_refunded=Decimal("0"),
            first_seen_at=now, last_seen_at=now, created_at=now, updated_at=now, **fields,
        )  # fmt: skip
        session.add(customer)
        session.flush()
        return customer.id


def _live_flow(runtime: Runtime, flow: dict[str, Any], name: str = "abandoned cart") -> int:
    with transaction(runtime.engine) as session:
        created = service.create_flow(session, name=name, definition=flow, now=runtime.clock.now())
        service.set_status(session, created.id, "live", runtime.clock.now())
        return created.id


def _abandon(runtime: Runtime, customer_id: int, checkout_id: str = "k1") -> int:
    event = flow_engine.AppliedEvent(
        customer_id=customer_id, event="Checkout Abandoned", type="track",
        properties={"checkout_id": checkout_id, "value": 120}, traits={},
        timestamp=runtime.clock.now(), message_id=f"derived:checkout_abandoned:{checkout_id}",
    )  # fmt: skip
    with transaction(runtime.engine) as session:
        return flow_engine.enrol_for_events(session, [event], runtime.clock.now(), "UTC", MAX_AGE)


def _order(runtime: Runtime, customer_id: int) -> None:
    now = runtime.clock.now()
    with transaction(runtime.engine) as session:
        session.add(Event(message_id=f"order-{now.isoformat()}", source="segment", type="track", event="Order Completed",
                          customer_id=customer_id, properties={"order_id": "o1"}, traits={}, context={},
                          timestamp=now, received_at=now, processed_at=now))  # fmt: skip
        flow_engine.wake_for_events(session, [customer_id], now)


def _outbox(engine: sa.Engine) -> list[tuple[str, str, str]]:
    with Session(engine) as session:
        rows = session.execute(
            sa.select(OutboxEntry.idempotency_key, OutboxEntry.kind, OutboxEntry.status).order_by(
                OutboxEntry.id
            )
        )
        return [tuple(row) for row in rows]


def _run(engine: sa.Engine) -> FlowRun:
    with Session(engine) as session:
        return session.scalars(sa.select(FlowRun).order_by(FlowRun.id)).first()


def test_casual_shopper_journey_with_an_order_between_reminders(
    runtime: Runtime, clock: VirtualClock
) -> None:
    customer_id = _customer(runtime)
    _live_flow(runtime, ABANDONED_CART)
    # when the checkout is abandoned, one run starts; a second trigger for the same checkout starts none
    assert _abandon(runtime, customer_id) == 1
    assert _abandon(runtime, customer_id) == 0
    assert flow_engine.step_due_runs(runtime) == 1
    run = _run(runtime.engine)
    assert (run.status, run.node_id, run.wake_at) == (
        "waiting",
        "wait-casual",
        clock.now() + timedelta(hours=1),
    )
    # nothing is due before the hour is up
    clock.advance(timedelta(minutes=59))
    assert flow_engine.step_due_runs(runtime) == 0
    clock.advance(timedelta(minutes=1))
    assert flow_engine.step_due_runs(runtime) == 1
    assert _outbox(runtime.engine) == [(f"{run.id}:sms", "send_sms", "pending")]
    # an order two hours later resumes the run waiting for it: a thank-you, no reminder
    clock.advance(timedelta(hours=2))
    _order(runtime, customer_id)
    assert flow_engine.step_due_runs(runtime) == 1
    assert _outbox(runtime.engine)[-1] == (f"{run.id}:thanks", "send_sms", "pending")
    finished = _run(runtime.engine)
    assert (finished.status, finished.exit_reason, finished.active_key) == ("completed", "completed", None)
    assert [(h["node_id"], h["outcome"]) for h in finished.history] == [
        ("high-value", "entered"), ("high-value", "no"), ("wait-casual", "entered"), ("wait-casual", "passed"),
        ("sms", "entered"), ("sms", "passed"), ("ordered", "entered"), ("ordered", "event"),
        ("thanks", "entered"), ("thanks", "passed"),
    ]  # fmt: skip


def test_high_value_customer_who_orders_before_the_first_message_gets_nothing(
    runtime: Runtime, clock: VirtualClock
) -> None:
    customer_id = _customer(runtime, orders_count=6, total_spent=Decimal("800.00"))
    _live_flow(runtime, ABANDONED_CART)
    _abandon(runtime, customer_id)
    flow_engine.step_due_runs(runtime)
    assert _run(runtime.engine).node_id == "wait-vip"
    clock.advance(timedelta(minutes=10))
    _order(runtime, customer_id)
    assert flow_engine.step_due_runs(runtime) == 1
    run = _run(runtime.engine)
    assert (run.status, run.exit_reason) == ("exited", "Order Completed since entry")
    assert _outbox(runtime.engine) == []


def test_a_failing_run_records_its_error_and_is_retried_later(runtime: Runtime, clock: VirtualClock) -> None:
    # given a live flow whose list was deleted after the flow was saved
    with transaction(runtime.engine) as session:
        vip = CustomerList(name="vip", created_at=clock.now(), updated_at=clock.now())
        session.add(vip)
        session.flush()
        list_id = vip.id
    flow = {"trigger": {"type": "event", "event": "Checkout Abandoned"}, "start": "join",
            "nodes": [{"id": "join", "type": "action", "action": {"type": "add_to_list", "list_id": list_id}}]}  # fmt: skip
    customer_id = _customer(runtime)
    _live_flow(runtime, flow, name="broken")
    with transaction(runtime.engine) as session:
        session.execute(sa.delete(CustomerList).where(CustomerList.id == list_id))
    _live_flow(runtime, ABANDONED_CART)
    _abandon(runtime, customer_id)
    assert flow_engine.step_due_runs(runtime) == 2
    with Session(runtime.engine) as session:
        broken, healthy = session.scalars(sa.select(FlowRun).order_by(FlowRun.flow_id)).all()
        assert (broken.attempts, broken.last_error, broken.due_at) == (
            1, f"LookupError: list {list_id} does not exist", clock.now() + timedelta(seconds=60),
        )  # fmt: skip
        assert healthy.status == "waiting"


def test_runs_stay_on_the_version_they_entered(runtime: Runtime, clock: VirtualClock) -> None:
    customer_id = _customer(runtime)
    flow_id = _live_flow(runtime, ABANDONED_CART)
    _abandon(runtime, customer_id, "k1")
    flow_engine.step_due_runs(runtime)
    edited = copy.deepcopy(ABANDONED_CART)
    edited["nodes"][3]["duration"] = {"amount": 3, "unit": "hours"}  # casual wait: 1 h → 3 h
    with transaction(runtime.engine) as session:
        assert service.update_definition(session, flow_id, edited, clock.now()).version == 2
    _abandon(runtime, customer_id, "k2")
    flow_engine.step_due_runs(runtime)
    with Session(runtime.engine) as session:
        first, second = session.scalars(sa.select(FlowRun).order_by(FlowRun.id)).all()
        assert first.wake_at == clock.now() + timedelta(hours=1)
        assert second.wake_at == clock.now() + timedelta(hours=3)
        assert first.flow_version_id != second.flow_version_id


def test_an_invalid_flow_is_refused_with_every_problem() -> None:
    from winback.flows import definition
    from winback.kernel.errors import InvalidInput

    broken = copy.deepcopy(ABANDONED_CART)
    broken["nodes"][1]["next"] = "nowhere"
    with pytest.raises(InvalidInput) as caught:
        definition.parse_flow(broken)
    assert {
        "node_id": "wait-vip",
        "message": "leads to 'nowhere', which is not a node",
    } in caught.value.details["problems"]


def test_erasing_a_customer_ends_their_runs_and_skips_their_queued_messages(
    runtime: Runtime, clock: VirtualClock
) -> None:
    from winback.profiles import erasure

    customer_id = _customer(runtime)
    _live_flow(runtime, ABANDONED_CART)
    _abandon(runtime, customer_id)
    flow_engine.step_due_runs(runtime)
    clock.advance(timedelta(hours=1))
    flow_engine.step_due_runs(runtime)  # the casual SMS is queued
    with transaction(runtime.engine) as session:
        summary = erasure.erase_customer(session, customer_id, clock.now())
    assert (summary.flow_runs_scrubbed, summary.outbox_entries_scrubbed) == (1, 1)
    run = _run(runtime.engine)
    assert (run.status, run.exit_reason, run.active_key, run.trigger) == (
        "exited", "customer erased", None, {"event": "Checkout Abandoned", "erased": True},
    )  # fmt: skip
    with Session(runtime.engine) as session:
        [entry] = session.scalars(sa.select(OutboxEntry))
        assert (entry.status, entry.payload) == ("skipped", {"erased": True})
    clock.advance(timedelta(days=2))
    assert flow_engine.step_due_runs(runtime) == 0


def test_a_flow_naming_a_missing_segment_or_list_is_refused(runtime: Runtime) -> None:
    from winback.kernel.errors import InvalidInput

    flow = {"trigger": {"type": "segment_entered", "segment_id": 41}, "start": "join",
            "nodes": [{"id": "join", "type": "action", "action": {"type": "add_to_list", "list_id": 42}}]}  # fmt: skip
    with pytest.raises(InvalidInput) as caught, transaction(runtime.engine) as session:
        service.create_flow(session, name="dangling", definition=flow, now=runtime.clock.now())
    assert caught.value.details["problems"] == [
        {"node_id": None, "path": "trigger", "message": "segment 41 does not exist"},
        {"node_id": "join", "path": "join", "message": "list 42 does not exist"},
    ]


def test_a_flow_adding_to_a_list_starts_the_list_joined_flow(runtime: Runtime, clock: VirtualClock) -> None:
    from winback.processing.processor import process_pending

    with transaction(runtime.engine) as session:
        vip = CustomerList(name="vip", created_at=clock.now(), updated_at=clock.now())
        session.add(vip)
        session.flush()
        list_id = vip.id
    customer_id = _customer(runtime)
    _live_flow(runtime, {"trigger": {"type": "event", "event": "Checkout Abandoned"}, "start": "join",
                         "nodes": [{"id": "join", "type": "action", "action": {"type": "add_to_list", "list_id": list_id}}]},
               name="tag vips")  # fmt: skip
    _live_flow(runtime, {"trigger": {"type": "list_joined", "list_id": list_id}, "start": "hello",
                         "nodes": [{"id": "hello", "type": "action", "action": {"type": "send_sms", "body": "Welcome, VIP"}}]},
               name="vip welcome")  # fmt: skip
    _abandon(runtime, customer_id)
    flow_engine.step_due_runs(runtime)  # joins the list: a List Joined event is written
    process_pending(runtime)  # … which starts the second flow
    flow_engine.step_due_runs(runtime)
    assert [kind for _, kind, _ in _outbox(runtime.engine)] == ["add_to_list", "send_sms"]
    with Session(runtime.engine) as session:
        assert session.scalar(sa.select(Event.event).where(Event.source == "derived")) == "List Joined"


def test_every_outbox_column_is_written_by_the_batch_insert_or_defaulted_by_the_database() -> None:
    # the engine's batch INSERT names its columns on the raw driver: a new column needs a place there
    # (or a server default / NULL), never a Python-side default the raw statement would skip
    for column in OutboxEntry.__table__.columns:
        if column.name in flow_engine.OUTBOX_COLUMNS or column.primary_key:
            continue
        assert column.default is None, f"outbox.{column.name}: a Python default the batch INSERT skips"
        assert column.nullable or column.server_default is not None, f"outbox.{column.name} must be written"


def test_a_failing_batch_write_is_rolled_back_and_the_runs_stepped_one_by_one(
    runtime: Runtime, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given two runs about to write their first messages, and a batch write that fails once half-way
    flow = {"trigger": {"type": "event", "event": "Checkout Abandoned"}, "start": "sms",
            "nodes": [{"id": "sms", "type": "action", "action": {"type": "send_sms", "body": "hi"}}]}  # fmt: skip
    _live_flow(runtime, flow)
    first, second = _customer(runtime), _customer(runtime)
    _abandon(runtime, first, "k1")
    _abandon(runtime, second, "k2")
    real = flow_engine._write_batch
    calls = []

    def failing(session: Session, *args: Any) -> None:
        calls.append(True)
        real(session, *args)  # everything is written, then the batch fails: the rollback must undo it
        if len(calls) == 1:
            raise RuntimeError("disk full")

    monkeypatch.setattr(flow_engine, "_write_batch", failing)
    # when the worker steps them
    assert flow_engine.step_due_runs(runtime) == 2
    # then each run completed once, with one message each, and its history written once
    with Session(runtime.engine) as session:
        runs = session.scalars(sa.select(FlowRun).order_by(FlowRun.id)).all()
        assert [(run.status, run.attempts, run.last_error) for run in runs] == [("completed", 0, None)] * 2
        assert [[(h["node_id"], h["outcome"]) for h in run.history] for run in runs] == [
            [("sms", "entered"), ("sms", "passed")]
        ] * 2
    assert _outbox(runtime.engine) == [(f"{run.id}:sms", "send_sms", "pending") for run in runs]


@pytest.mark.parametrize(
    "stored", ["[]", "null", "[ ]", '[{"node_id": "old", "at": "x", "outcome": "passed"} ]\n']
)
def test_visits_are_appended_to_whatever_history_the_run_has(
    runtime: Runtime, clock: VirtualClock, stored: str
) -> None:
    # given a run whose stored history is empty, null, or written with blanks by someone else
    _live_flow(runtime, ABANDONED_CART)
    _abandon(runtime, _customer(runtime))
    with runtime.engine.begin() as connection:
        column = "CAST(:stored AS jsonb)" if connection.dialect.name == "postgresql" else ":stored"
        connection.execute(sa.text(f"UPDATE flow_runs SET history = {column}"), {"stored": stored})
    # when it is stepped
    assert flow_engine.step_due_runs(runtime) == 1
    # then the history is a JSON list: what was there, then the step's visits
    run = _run(runtime.engine)
    before = [] if stored.strip() in ("[]", "[ ]", "null") else [("old", "passed")]
    assert [(h["node_id"], h["outcome"]) for h in run.history] == [
        *before,
        ("high-value", "entered"),
        ("high-value", "no"),
        ("wait-casual", "entered"),
    ]


def test_actions_inside_winback_tag_set_a_property_leave_a_list_and_mark_a_goal(
    runtime: Runtime, clock: VirtualClock
) -> None:
    # given a customer on a list, and a flow of the actions winback carries out itself
    with transaction(runtime.engine) as session:
        vip = CustomerList(name="vip", created_at=clock.now(), updated_at=clock.now())
        session.add(vip)
        session.flush()
        list_id = vip.id
    customer_id = _customer(runtime, user_id="u-actions")
    with transaction(runtime.engine) as session:
        session.add(
            ListMembership(list_id=list_id, customer_id=customer_id, added_at=clock.now(), source="test")
        )
    steps = [
        {"type": "add_tag", "tag": "cart-abandoner"},
        {"type": "set_property", "property": "plan", "value": "gold"},
        {"type": "remove_from_list", "list_id": list_id},
        {"type": "conversion_goal", "name": "re-engaged"},
        {"type": "remove_tag", "tag": "cart-abandoner"},
        {"type": "add_tag", "tag": "won-back"},
    ]
    nodes = [
        {
            "id": f"a{i}",
            "type": "action",
            "action": step,
            **({"next": f"a{i + 1}"} if i < len(steps) - 1 else {}),
        }
        for i, step in enumerate(steps)
    ]
    _live_flow(
        runtime, {"trigger": {"type": "event", "event": "Checkout Abandoned"}, "start": "a0", "nodes": nodes}
    )
    # when the run steps
    _abandon(runtime, customer_id)
    flow_engine.step_due_runs(runtime)
    # then each action was applied once, recorded as `applied` under its key
    with Session(runtime.engine) as session:
        customer = session.get(Customer, customer_id)
        assert customer is not None
        assert (customer.tags, customer.properties) == (["won-back"], {"plan": "gold"})
        assert session.get(ListMembership, (list_id, customer_id)) is None
        goal = session.scalars(sa.select(Event).where(Event.event == "Conversion Goal Reached")).one()
        assert goal.properties["goal"] == "re-engaged" and goal.user_id == "u-actions"
        assert session.scalars(sa.select(Event.event).where(Event.event == "List Left")).one() == "List Left"
    assert {status for _, _, status in _outbox(runtime.engine)} == {"applied"}


def test_one_run_per_order_gives_a_second_order_its_own_run(runtime: Runtime, clock: VirtualClock) -> None:
    # given an order follow-up that waits a week after each order, one run per order
    flow = {
        "trigger": {"type": "event", "event": "Order Completed"},
        "entry": {"reentry": {"mode": "every_time"}, "one_run_per": "order"},
        "start": "confirm",
        "nodes": [
            {"id": "confirm", "type": "action", "next": "week",
             "action": {"type": "send_email", "subject": "Thanks", "text": "Order {{ event.order_id }}",
                        "transactional": True}},
            {"id": "week", "type": "delay", "duration": {"amount": 7, "unit": "days"}, "next": "survey"},
            {"id": "survey", "type": "action", "action": {"type": "send_email", "subject": "How was it?",
                                                          "text": "Tell us"}},
        ],
    }  # fmt: skip
    _live_flow(runtime, flow, name="order follow-up")
    ann = _customer(runtime, email="ann@example.com")

    def order(order_id: str) -> int:
        event = flow_engine.AppliedEvent(
            customer_id=ann, event="Order Completed", type="track", properties={"order_id": order_id},
            traits={}, timestamp=clock.now(), message_id=f"order:{order_id}",
        )  # fmt: skip
        with transaction(runtime.engine) as session:
            return flow_engine.enrol_for_events(session, [event], clock.now(), "UTC", MAX_AGE)

    # when she orders twice in two days, and the first order is delivered again
    assert order("o1") == 1
    flow_engine.step_due_runs(runtime)
    clock.advance(timedelta(days=2))
    assert order("o2") == 1
    assert order("o1") == 0  # the same order again: its run is still going
    flow_engine.step_due_runs(runtime)
    # then each order got its confirmation, and each its own run waiting for its survey
    confirmations = [key for key, kind, _ in _outbox(runtime.engine) if key.endswith(":confirm")]
    assert len(confirmations) == 2
    with Session(runtime.engine) as session:
        runs = session.execute(sa.select(FlowRun.active_key, FlowRun.checkout_id, FlowRun.node_id)
                               .order_by(FlowRun.id)).all()  # fmt: skip
    flow_id = runs[0].active_key.split(":")[0]
    assert [tuple(run) for run in runs] == [
        (f"{flow_id}:{ann}:order:o1", None, "week"),
        (f"{flow_id}:{ann}:order:o2", None, "week"),
    ]
