"""The flow definition language: the abandoned-cart flow parses; every problem names its node."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from winback.flows import definition
from winback.kernel.errors import InvalidInput

ABANDONED_CART: dict[str, Any] = {
    "trigger": {"type": "event", "event": "Checkout Abandoned"},
    "entry": {"reentry": {"mode": "every_time"}, "one_run_per": "checkout"},
    "exit_when": [{"type": "event_since_entry", "event": "Order Completed"}],
    "start": "high-value",
    "nodes": [
        {"id": "high-value", "type": "condition", "yes": "wait-vip", "no": "wait-casual",
         "rule": {"type": "all", "rules": [
             {"type": "money_spent", "compare": {"op": "gte", "value": 500}},
             {"type": "order_count", "compare": {"op": "gte", "value": 5}}]}},
        {"id": "wait-vip", "type": "delay", "duration": {"amount": 1, "unit": "hours"}, "next": "mms"},
        {"id": "mms", "type": "action", "next": "ordered",
         "action": {"type": "send_mms", "body": "{{ customer.first_name }}, free shipping + 5% off: {{ checkout.recovery_url }}"}},
        {"id": "wait-casual", "type": "delay", "duration": {"amount": 1, "unit": "hours"}, "next": "sms"},
        {"id": "sms", "type": "action", "next": "ordered",
         "action": {"type": "send_sms", "body": "Still thinking it over? $5 off: {{ checkout.recovery_url }}"}},
        {"id": "ordered", "type": "wait_for_event", "event": "Order Completed",
         "timeout": {"amount": 24, "unit": "hours"}, "on_event": "thanks", "on_timeout": "reminder"},
        {"id": "thanks", "type": "action", "ignore_exit_conditions": True,
         "action": {"type": "send_sms", "body": "Thank you!", "transactional": True}},
        {"id": "reminder", "type": "action", "action": {"type": "send_sms", "body": "Last chance: {{ checkout.recovery_url }}"}},
    ],
}  # fmt: skip


def _problems(flow: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(InvalidInput) as caught:
        definition.parse_flow(flow)
    problems: list[dict[str, Any]] = caught.value.details["problems"]
    return problems


def test_the_abandoned_cart_flow_is_valid() -> None:
    flow = definition.parse_flow(ABANDONED_CART)
    assert flow.start == "high-value"
    assert [node.type for node in flow.nodes] == [
        "condition", "delay", "action", "delay", "action", "wait_for_event", "action", "action",
    ]  # fmt: skip
    assert definition.validate_flow(flow) == []


def test_unreachable_nodes_and_dangling_links_are_named() -> None:
    flow = copy.deepcopy(ABANDONED_CART)
    flow["nodes"].append({"id": "orphan", "type": "exit"})
    flow["nodes"][1]["next"] = "nowhere"
    problems = _problems(flow)
    assert {"node_id": "wait-vip", "message": "leads to 'nowhere', which is not a node"} in problems
    assert {"node_id": "mms", "message": "is unreachable from 'start'"} in problems
    assert {"node_id": "orphan", "message": "is unreachable from 'start'"} in problems


def test_a_wait_without_a_timeout_is_refused_naming_the_node() -> None:
    flow = copy.deepcopy(ABANDONED_CART)
    del flow["nodes"][5]["timeout"]
    [problem] = _problems(flow)
    assert problem["node_id"] == "ordered"
    assert problem["path"].endswith("timeout")


def test_split_shares_must_add_up_to_100() -> None:
    flow = copy.deepcopy(ABANDONED_CART)
    flow["nodes"][0] = {"id": "high-value", "type": "random_split",
                        "branches": [{"percent": 50, "next": "wait-vip"}, {"percent": 40, "next": "wait-casual"}]}  # fmt: skip
    assert _problems(flow) == [
        {"node_id": "high-value", "message": "branch shares add up to 90 %, not 100 %"}
    ]


def test_loops_and_duplicate_ids_are_refused() -> None:
    flow = copy.deepcopy(ABANDONED_CART)
    flow["nodes"][7]["next"] = "ordered"  # reminder → wait again → reminder …
    flow["nodes"].append({"id": "thanks", "type": "exit"})
    problems = _problems(flow)
    assert {"node_id": "thanks", "message": "node id 'thanks' is used twice"} in problems
    assert {"node_id": "ordered", "message": "is part of a loop; steps must form a tree"} in problems


def test_one_run_per_checkout_needs_an_event_trigger() -> None:
    flow = copy.deepcopy(ABANDONED_CART)
    flow["trigger"] = {"type": "segment_entered", "segment_id": 3}
    assert {
        "node_id": None,
        "message": "one run per checkout needs an event trigger carrying a checkout",
    } in _problems(flow)


def test_one_run_per_order_needs_an_event_trigger() -> None:
    flow = copy.deepcopy(ABANDONED_CART)
    flow["trigger"] = {"type": "segment_entered", "segment_id": 3}
    flow["entry"]["one_run_per"] = "order"
    assert {
        "node_id": None,
        "message": "one run per order needs an event trigger carrying an order",
    } in _problems(flow)


def test_schedule_trigger_needs_exactly_one_schedule() -> None:
    flow = copy.deepcopy(ABANDONED_CART)
    flow["entry"]["one_run_per"] = "customer"
    flow["trigger"] = {"type": "schedule", "segment_id": 1}
    [problem] = _problems(flow)
    assert "give either 'at' (once) or 'cron' (recurring)" in problem["message"]
