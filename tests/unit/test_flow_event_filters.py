"""Event filters in flows: tests on the items of a list property (`products[].category`) and
comparisons with the event that started the run (`trigger: order_id`) — pure, and in the step
function's waits, conditions and exit rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from winback.flows import definition as d
from winback.flows import engine as flow_engine
from winback.flows import stepping as s
from winback.kernel.errors import InvalidInput
from winback.segments.evaluator import CustomerFacts, EventFact

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CART = {"products": [{"product_id": "p1", "category": "Tea", "price": 12},
                     {"product_id": "p2", "category": "Teaware", "price": 40}]}  # fmt: skip


def _filter(**fields: Any) -> d.EventFilter:
    return d.EventFilter.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"property": "products[].category", "op": "eq", "value": "Tea"}, True),  # some item is
        ({"property": "products[].category", "op": "eq", "value": "Coffee"}, False),
        ({"property": "products[].category", "op": "neq", "value": "Coffee"}, True),  # no item is
        ({"property": "products[].category", "op": "neq", "value": "Tea"}, False),
        ({"property": "products[].category", "op": "in", "value": ["Coffee", "Teaware"]}, True),
        ({"property": "products[].price", "op": "gt", "value": 30}, True),
        ({"property": "products[].price", "op": "gt", "value": 50}, False),
        ({"property": "products[].sku", "op": "exists"}, False),
        ({"property": "products[].sku", "op": "not_exists"}, True),
        ({"property": "items[].category", "op": "eq", "value": "Tea"}, False),  # no such list
        ({"property": "items[].category", "op": "neq", "value": "Tea"}, True),
    ],
)
def test_a_list_path_tests_the_items(fields: dict[str, Any], expected: bool) -> None:
    assert s.filter_passes(_filter(**fields), CART) is expected


def test_a_list_path_skips_items_that_are_not_objects_and_a_property_that_is_not_a_list() -> None:
    found = _filter(property="products[].category", op="eq", value="Tea")
    assert s.filter_passes(found, {"products": ["Tea", {"category": "Tea"}]}) is True
    assert s.filter_passes(found, {"products": "Tea"}) is False


def test_a_filter_can_compare_with_the_trigger() -> None:
    same_order = _filter(property="order_id", op="eq", trigger="order_id")
    assert s.filter_passes(same_order, {"order_id": "o1"}, {"order_id": "o1"}) is True
    assert s.filter_passes(same_order, {"order_id": "o2"}, {"order_id": "o1"}) is False
    # a trigger without the property (or with a list there) compares with nothing: the test fails
    assert s.filter_passes(same_order, {"order_id": "o1"}, {}) is False
    assert (
        s.filter_passes(_filter(property="order_id", op="neq", trigger="order_id"), {"order_id": "o1"}, {})
        is False
    )
    assert s.filter_passes(same_order, {"order_id": "o1"}, {"order_id": ["o1"]}) is False
    bigger = _filter(property="value", op="gt", trigger="value")
    assert s.filter_passes(bigger, {"value": 250}, {"value": 200}) is True


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"property": "order_id", "op": "eq", "value": "o1", "trigger": "order_id"}, "not both"),
        ({"property": "order_id", "op": "in", "trigger": "order_id"}, "cannot compare with the trigger"),
        ({"property": "order_id", "op": "eq"}, "needs one value"),
        ({"property": "products[]", "op": "exists"}, "should match pattern"),
        ({"property": "products[].a[].b", "op": "exists"}, "should match pattern"),
    ],
)
def test_malformed_filters_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _filter(**fields)


def test_a_trigger_filter_cannot_compare_with_the_trigger() -> None:
    flow = {"trigger": {"type": "event", "event": "Order Completed",
                        "where": [{"property": "order_id", "op": "eq", "trigger": "order_id"}]},
            "start": "tag", "nodes": [{"id": "tag", "type": "action", "action": {"type": "add_tag", "tag": "x"}}]}  # fmt: skip
    with pytest.raises(InvalidInput) as refused:
        d.parse_flow(flow)
    assert refused.value.details["problems"][0]["path"] == "trigger.event.where.0.trigger"


def test_a_trigger_on_a_cart_holding_a_category() -> None:
    trigger = d.EventTrigger(type="event", event="Product Added",
                             where=[{"property": "products[].category", "op": "eq", "value": "Tea"}])  # fmt: skip

    def added(properties: dict[str, Any]) -> flow_engine.AppliedEvent:
        return flow_engine.AppliedEvent(customer_id=1, event="Product Added", type="track", properties=properties,
                                        traits={}, timestamp=T0, message_id="m")  # fmt: skip

    assert flow_engine.trigger_matches(trigger, added(CART)) is True
    assert flow_engine.trigger_matches(trigger, added({"products": [{"category": "Mugs"}]})) is False


# --- in the step function -----------------------------------------------------------------------

REVIEW_FLOW = d.parse_flow({
    "trigger": {"type": "event", "event": "Order Fulfilled"},
    "entry": {"reentry": {"mode": "every_time"}, "one_run_per": "order"},
    "exit_when": [{"type": "event_since_entry", "event": "Order Refunded",
                   "where": [{"property": "order_id", "op": "eq", "trigger": "order_id"}]}],
    "start": "has-tea",
    "nodes": [
        {"id": "has-tea", "type": "condition", "yes": "wait", "no": "other",
         "trigger": [{"property": "products[].category", "op": "eq", "value": "Tea"}]},
        {"id": "wait", "type": "wait_for_event", "event": "Review Submitted",
         "where": [{"property": "order_id", "op": "eq", "trigger": "order_id"}],
         "timeout": {"amount": 14, "unit": "days"}, "on_event": "thanks", "on_timeout": "remind"},
        {"id": "thanks", "type": "action", "action": {"type": "add_tag", "tag": "reviewed"}},
        {"id": "remind", "type": "action", "action": {"type": "add_tag", "tag": "asked"}},
        {"id": "other", "type": "action", "action": {"type": "add_tag", "tag": "no-tea"}},
    ],
})  # fmt: skip
PLAN = s.Plan(REVIEW_FLOW)
TRIGGER = {"order_id": "o1", **CART}


def _context(events: tuple[EventFact, ...] = (), trigger: dict[str, Any] | None = None) -> s.StepContext:
    return s.StepContext(facts=CustomerFacts(profile={}), trigger=TRIGGER if trigger is None else trigger,
                         events_since_entry=events)  # fmt: skip


def _start() -> s.RunState:
    return s.RunState(run_id=1, node_id=None, status="active", entered_at=T0)


def test_a_condition_tests_the_items_of_the_trigger() -> None:
    assert s.step(PLAN, _start(), s.Tick(), _context(), T0).state.node_id == "wait"
    no_tea = s.step(
        PLAN, _start(), s.Tick(), _context(trigger={"order_id": "o2", "products": [{"category": "Mugs"}]}), T0
    )
    assert [c.node_id for c in no_tea.commands] == ["other"]


def test_a_wait_answers_only_to_the_event_about_the_runs_order() -> None:
    waiting = s.step(PLAN, _start(), s.Tick(), _context(), T0).state
    other = EventFact("Review Submitted", T0 + timedelta(days=1), {"order_id": "o9", "rating": 5})
    still = s.step(PLAN, waiting, s.EventArrived(other.event, other.timestamp, other.properties), _context((other,)),
                   other.timestamp)  # fmt: skip
    assert (still.state.node_id, still.state.status, still.commands) == ("wait", "waiting", ())
    mine = EventFact("Review Submitted", T0 + timedelta(days=2), {"order_id": "o1", "rating": 5})
    answered = s.step(PLAN, waiting, s.EventArrived(mine.event, mine.timestamp, mine.properties),
                      _context((other, mine)), mine.timestamp)  # fmt: skip
    assert [c.node_id for c in answered.commands] == ["thanks"]


def test_an_exit_rule_follows_only_the_runs_order() -> None:
    waiting = s.step(PLAN, _start(), s.Tick(), _context(), T0).state
    refund_of_another = EventFact("Order Refunded", T0 + timedelta(days=1), {"order_id": "o9"})
    assert s.exit_reason(REVIEW_FLOW.exit_when, _context((refund_of_another,))) is None
    refund = EventFact("Order Refunded", T0 + timedelta(days=1), {"order_id": "o1"})
    result = s.step(PLAN, waiting, s.EventArrived(refund.event, refund.timestamp, refund.properties),
                    _context((refund,)), refund.timestamp)  # fmt: skip
    assert (result.state.status, result.state.exit_reason) == ("exited", "Order Refunded since entry")


# --- which events may start runs -----------------------------------------------------------------


def _applied(name: str, at: datetime, **properties: Any) -> flow_engine.AppliedEvent:
    return flow_engine.AppliedEvent(customer_id=1, event=name, type="track", properties=properties, traits={},
                                    timestamp=at, message_id="m")  # fmt: skip


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (_applied("Order Completed", T0), True),
        (_applied("Order Completed", T0 - timedelta(hours=47)), True),  # a client offline for a while
        (_applied("Order Completed", T0 - timedelta(days=3)), False),  # imported history
        (_applied("Order Completed", T0 - timedelta(days=30) - timedelta(minutes=1)), False),  # before live
        # an abandonment is as old as the shopper's last activity, not its (sweep-time) stamp
        (_applied("Checkout Abandoned", T0, last_activity_at=(T0 - timedelta(hours=1)).isoformat()), True),
        (_applied("Checkout Abandoned", T0, last_activity_at=(T0 - timedelta(days=200)).isoformat()), False),
        (_applied("Checkout Abandoned", T0, last_activity_at="not a date"), True),
    ],
)
def test_only_recent_events_after_the_flow_went_live_start_runs(
    event: flow_engine.AppliedEvent, expected: bool
) -> None:
    live_since = T0 - timedelta(days=30)
    assert flow_engine.may_trigger(event, live_since, T0, timedelta(hours=48)) is expected


def test_an_event_from_before_the_flow_went_live_starts_nothing() -> None:
    assert (
        flow_engine.may_trigger(
            _applied("Order Completed", T0 - timedelta(seconds=1)), T0, T0, timedelta(hours=48)
        )
        is False
    )
