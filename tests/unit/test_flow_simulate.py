"""The pure parts of back-testing: facts as of a moment, consent, attribution, and the in-memory
engine fed events by hand (no database)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tests.unit.test_flow_definition import ABANDONED_CART
from winback.flows import definition
from winback.flows import engine as flow_engine
from winback.flows.simulate import (
    OrderPlaced,
    Revenue,
    Simulation,
    attribute_orders,
    fact_needs,
    facts_as_of,
)
from winback.segments.evaluator import CustomerFacts, EventFact, OrderFact

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _order(order_id: str, total: str, at: datetime, status: str = "paid", refunded: str = "0") -> OrderFact:
    return OrderFact(order_id=order_id, status=status, total=Decimal(total), refunded_total=Decimal(refunded),
                     placed_at=at)  # fmt: skip


@dataclass
class Known:
    """An in-memory `Lookup`."""

    profiles: dict[int, CustomerFacts] = field(default_factory=dict)
    completed: dict[str, datetime] = field(default_factory=dict)

    def facts(self, customer_id: int) -> CustomerFacts | None:
        return self.profiles.get(customer_id)

    def checkout_completed_at(self, checkout_id: str) -> datetime | None:
        return self.completed.get(checkout_id)


def _event(customer_id: int, name: str, at: datetime, **properties: Any) -> flow_engine.AppliedEvent:
    return flow_engine.AppliedEvent(customer_id=customer_id, event=name, type="track", properties=properties,
                                    traits={}, timestamp=at, message_id=f"{customer_id}:{name}:{at.isoformat()}")  # fmt: skip


def _nodes(
    simulation: Simulation, end: datetime
) -> dict[str, tuple[int, int, dict[str, int], dict[str, int]]]:
    simulation.finish(end)
    report = simulation.report(start=T0, end=end, window=timedelta(days=5), events_replayed=0, orders=())
    return {n.node_id: (n.entered, n.waiting, dict(n.outcomes), dict(n.exited)) for n in report.nodes}


# --- facts as of a moment -----------------------------------------------------------------------


def test_order_aggregates_are_recomputed_from_the_orders_placed_by_then() -> None:
    # given a profile whose stored aggregates count three orders, one cancelled and one refunded
    known = CustomerFacts(
        profile={"orders_count": 2, "total_spent": Decimal("170.00"), "sms_consent": "subscribed"},
        orders=(_order("a", "100.00", T0, refunded="30.00"), _order("b", "50.00", T0 + HOUR, status="cancelled"),
                _order("c", "100.00", T0 + 2 * HOUR)),
    )  # fmt: skip
    # when seen between the second and the third order
    seen = facts_as_of(known, T0 + HOUR)
    # then only the first counts (net of its refund); other attributes are the stored ones
    assert {key: seen.profile[key] for key in ("orders_count", "total_spent", "total_refunded",
                                                "average_order_value", "first_order_at", "last_order_at")} == {
        "orders_count": 1, "total_spent": Decimal("70.00"), "total_refunded": Decimal("30.00"),
        "average_order_value": Decimal("70.00"), "first_order_at": T0, "last_order_at": T0,
    }  # fmt: skip
    assert seen.profile["sms_consent"] == "subscribed"
    assert [order.order_id for order in seen.orders] == ["a", "b"]
    # and before any order the customer has none
    before = facts_as_of(known, T0 - HOUR).profile
    assert (before["orders_count"], before["total_spent"], before["average_order_value"]) == (
        0,
        Decimal("0.00"),
        None,
    )


def test_segment_membership_is_rebuilt_from_entered_and_exited_events() -> None:
    # given a customer now in segment 7 (entered at +2h) and segment 9 (no events), out of 8 (left at +1h)
    known = CustomerFacts(
        profile={},
        events=(EventFact("Segment Exited", T0 + HOUR, {"segment_id": 8}),
                EventFact("Segment Entered", T0 + 2 * HOUR, {"segment_id": 7})),
        segment_ids=frozenset({7, 9}),
    )  # fmt: skip
    # then at the start it was in 8 (it left later) and 9, not yet in 7; at +2h in 7 and 9
    assert facts_as_of(known, T0).segment_ids == frozenset({8, 9})
    assert facts_as_of(known, T0 + 2 * HOUR).segment_ids == frozenset({7, 9})
    # events after the moment are not seen
    assert [e.event for e in facts_as_of(known, T0 + HOUR).events] == ["Segment Exited"]


def test_fact_needs_load_every_order_only_when_a_rule_reads_anything() -> None:
    needs = fact_needs(definition.parse_flow(ABANDONED_CART), T0, "UTC")
    assert (needs.orders, needs.orders_since, dict(needs.events)) == (True, None, {})
    flow = copy.deepcopy(ABANDONED_CART)
    flow["nodes"][0] = {"id": "high-value", "type": "condition", "yes": "wait-vip", "no": "wait-casual",
                        "trigger": [{"property": "value", "op": "gt", "value": 200}]}  # fmt: skip
    assert fact_needs(definition.parse_flow(flow), T0, "UTC").orders is False


# --- attribution --------------------------------------------------------------------------------


def _placed(customer_id: int, order_id: str, at: datetime, total: str) -> OrderPlaced:
    return OrderPlaced(customer_id, order_id, at, Decimal(total), "USD")


def test_orders_are_attributed_once_within_the_window_and_to_the_last_message_before_them() -> None:
    window = timedelta(days=5)
    entries = [(1, T0, False), (1, T0 + timedelta(days=1), False), (2, T0, True), (3, T0, False)]
    touches = [(1, T0 + HOUR, "sms"), (1, T0 + 25 * HOUR, "reminder"), (3, T0 + HOUR, "sms")]
    orders = [
        _placed(1, "o1", T0 + 2 * HOUR, "10.00"),  # after the SMS
        _placed(1, "o2", T0 + 26 * HOUR, "20.00"),  # after the reminder; two entries cover it, counted once
        _placed(2, "o3", T0 + HOUR, "30.00"),  # a held-out customer
        _placed(3, "o4", T0 + HOUR, "40.00"),  # at the very moment of the SMS: not after it
        _placed(3, "o5", T0 + timedelta(days=5), "50.00"),  # the window has closed
        _placed(4, "o6", T0 + HOUR, "60.00"),  # never entered
        _placed(1, "o0", T0, "70.00"),  # the order at the moment of entry (e.g. its trigger)
    ]
    attribution = attribute_orders(entries, touches, orders, window)
    assert attribution.flow == Revenue(3, {"USD": Decimal("70.00")})
    assert attribution.held_out == Revenue(1, {"USD": Decimal("30.00")})
    assert attribution.by_node == {"reminder": Revenue(1, {"USD": Decimal("20.00")}),
                                   "sms": Revenue(1, {"USD": Decimal("10.00")})}  # fmt: skip


# --- the in-memory engine -----------------------------------------------------------------------


def _casual(consent: str | None = "subscribed") -> CustomerFacts:
    return CustomerFacts(
        profile={"sms_consent": consent, "phone": "+14155550123", "timezone": "UTC", "orders_count": 0,
                 "total_spent": Decimal(0)}
    )  # fmt: skip


def test_one_run_per_checkout_and_the_checkout_completed_exit() -> None:
    # given the abandoned-cart flow that ends when its checkout completes
    flow = copy.deepcopy(ABANDONED_CART)
    flow["exit_when"] = [{"type": "checkout_completed"}]
    known = Known({1: _casual()}, completed={"k1": T0 + timedelta(minutes=30)})
    simulation = Simulation(definition.parse_flow(flow), timezone="UTC", lookup=known)
    # when checkout k1 is abandoned twice and k2 once, and k1 is completed half an hour later
    simulation.feed(_event(1, "Checkout Abandoned", T0, checkout_id="k1"))
    simulation.feed(_event(1, "Checkout Abandoned", T0 + timedelta(minutes=5), checkout_id="k1"))
    simulation.feed(_event(1, "Checkout Abandoned", T0 + timedelta(minutes=10), checkout_id="k2"))
    simulation.feed(_event(1, "Order Completed", T0 + timedelta(minutes=30), checkout_id="k1"))
    # then k1 and k2 each have one run; k1's ends with its checkout, k2's goes on
    assert (simulation.triggered, dict(simulation.not_entered)) == (3, {"already in the flow": 1})
    assert _nodes(simulation, T0 + 2 * HOUR)["wait-casual"] == (2, 0, {"exited": 1, "passed": 1},
                                                                 {"checkout completed": 1})  # fmt: skip


def test_one_run_per_order_runs_each_order_once() -> None:
    # given a week-long follow-up with one run per order
    flow = definition.parse_flow({
        "trigger": {"type": "event", "event": "Order Completed"},
        "entry": {"reentry": {"mode": "every_time"}, "one_run_per": "order"},
        "start": "week",
        "nodes": [{"id": "week", "type": "delay", "duration": {"amount": 7, "unit": "days"}, "next": "tag"},
                  {"id": "tag", "type": "action", "action": {"type": "add_tag", "tag": "followed-up"}}],
    })  # fmt: skip
    simulation = Simulation(flow, timezone="UTC", lookup=Known({1: _casual()}))
    # when a customer orders twice in two days and the first order is delivered again
    simulation.feed(_event(1, "Order Completed", T0, order_id="o1"))
    simulation.feed(_event(1, "Order Completed", T0 + timedelta(days=2), order_id="o2"))
    simulation.feed(_event(1, "Order Completed", T0 + timedelta(days=2, hours=1), order_id="o1"))
    # then each order has its own run, and the repeat starts none
    assert (simulation.triggered, dict(simulation.not_entered)) == (3, {"already in the flow": 1})
    assert len(simulation.entries) == 0 and _nodes(simulation, T0 + timedelta(days=3))["week"][:2] == (2, 2)


def test_reentry_once_per_days_and_the_entry_filter_as_of_entry() -> None:
    # given a flow entered at most once a week, by customers with at least one order
    flow = copy.deepcopy(ABANDONED_CART)
    flow["entry"] = {"reentry": {"mode": "once_per_days", "days": 7},
                     "filter": {"type": "order_count", "compare": {"op": "gte", "value": 1}}}  # fmt: skip
    buyer = CustomerFacts(profile={"sms_consent": "subscribed"}, orders=(_order("a", "10", T0 + HOUR),))
    simulation = Simulation(definition.parse_flow(flow), timezone="UTC", lookup=Known({1: buyer}))
    # when the customer abandons before the first order, after it, a day later, and eight days later
    for at in (T0, T0 + 2 * HOUR, T0 + timedelta(days=1, hours=2), T0 + timedelta(days=8, hours=2)):
        simulation.feed(_event(1, "Checkout Abandoned", at))
    # then the first fails the filter (no order yet), the third is too soon after the second
    assert (simulation.triggered, dict(simulation.not_entered)) == (
        4,
        {"entry filter": 1, "re-entry policy": 1},
    )
    simulation.finish(T0 + timedelta(days=20))
    assert [at for _, at, _ in simulation.entries] == [T0 + 2 * HOUR, T0 + timedelta(days=8, hours=2)]


def test_a_waiting_run_resumes_on_the_awaited_event_and_times_out_otherwise() -> None:
    # given two casual customers with consent, both abandoning at T0
    simulation = Simulation(definition.parse_flow(ABANDONED_CART), timezone="UTC",
                            lookup=Known({1: _casual(), 2: _casual(consent=None)}))  # fmt: skip
    simulation.feed(_event(1, "Checkout Abandoned", T0, checkout_id="k1"))
    simulation.feed(_event(2, "Checkout Abandoned", T0, checkout_id="k2"))
    # when customer 1 orders three hours later (after the SMS) and customer 2 never does
    simulation.feed(_event(1, "Order Completed", T0 + 3 * HOUR))
    simulation.finish(T0 + timedelta(days=3))
    report = simulation.report(start=T0, end=T0 + timedelta(days=3), window=timedelta(days=5),
                               events_replayed=3, orders=[_placed(1, "o1", T0 + 3 * HOUR, "99.50")])  # fmt: skip
    # then 1 is thanked; 2 times out into the reminder, which is skipped for lack of consent
    nodes = {n.node_id: (n.entered, dict(n.outcomes)) for n in report.nodes}
    assert nodes["ordered"] == (2, {"event": 1, "timeout": 1})
    assert [(m.node_id, m.would_send, dict(m.skipped)) for m in report.messages] == [
        ("sms", 1, {"skipped: no consent": 1}), ("thanks", 1, {}), ("reminder", 0, {"skipped: no consent": 1}),
    ]  # fmt: skip
    assert report.attribution.by_node == {"sms": Revenue(1, {"USD": Decimal("99.50")})}
    assert report.to_dict()["runs"] == {"entered": 2, "waiting_at_end": 0, "completed": 2, "exited": 0,
                                        "exit_reasons": {}}  # fmt: skip


def test_holdout_runs_send_nothing_and_their_orders_are_reported_apart() -> None:
    # given a flow holding out 50 % before an SMS, and 40 customers abandoning
    flow = definition.parse_flow({
        "trigger": {"type": "event", "event": "Checkout Abandoned"}, "start": "hold",
        "nodes": [{"id": "hold", "type": "holdout", "percent": 50, "next": "sms"},
                  {"id": "sms", "type": "action", "action": {"type": "send_sms", "body": "Hi"}}],
    })  # fmt: skip
    simulation = Simulation(flow, timezone="UTC", lookup=Known({cid: _casual() for cid in range(1, 41)}))
    for cid in range(1, 41):
        simulation.feed(_event(cid, "Checkout Abandoned", T0))
    orders = [_placed(cid, f"o{cid}", T0 + HOUR, "1.00") for cid in range(1, 41)]
    simulation.finish(T0 + HOUR)
    report = simulation.report(
        start=T0, end=T0 + HOUR, window=timedelta(days=5), events_replayed=40, orders=orders
    )
    # then the runs split as their draws fall (19 of these 40 run ids draw under 50 %), and the
    # orders split the same way
    assert report.exit_reasons == {"holdout": 19}
    assert [(m.node_id, m.would_send) for m in report.messages] == [("sms", 21)]
    assert report.attribution.held_out == Revenue(19, {"USD": Decimal("19.00")})
    assert report.attribution.flow == Revenue(21, {"USD": Decimal("21.00")})
    assert report.attribution.by_node == {"sms": Revenue(21, {"USD": Decimal("21.00")})}
