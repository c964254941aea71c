"""The pure step function, on the abandoned-cart flow and on every node type."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from tests.unit.test_flow_definition import ABANDONED_CART
from winback.flows import definition as d
from winback.flows import stepping as s
from winback.segments.evaluator import CustomerFacts, EventFact

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
PLAN = s.Plan(d.parse_flow(ABANDONED_CART))
VIP = {"total_spent": Decimal("900.00"), "orders_count": 7}
CASUAL = {"total_spent": Decimal("40.00"), "orders_count": 1}


def _context(profile: dict[str, Any], events: tuple[EventFact, ...] = (), **extra: Any) -> s.StepContext:
    return s.StepContext(
        facts=CustomerFacts(profile=profile), trigger={"value": 120}, events_since_entry=events, **extra
    )


def _start(run_id: int = 1) -> s.RunState:
    return s.RunState(run_id=run_id, node_id=None, status="active", entered_at=T0)


def _sent(result: s.StepResult) -> list[tuple[str, str]]:
    return [(command.node_id, command.action.type) for command in result.commands]


def test_high_value_customer_gets_the_mms_after_an_hour() -> None:
    first = s.step(PLAN, _start(), s.Tick(), _context(VIP), T0)
    assert (first.state.node_id, first.state.status, first.state.wake_at) == (
        "wait-vip",
        "waiting",
        T0 + timedelta(hours=1),
    )
    assert first.commands == ()
    early = s.step(PLAN, first.state, s.Tick(), _context(VIP), T0 + timedelta(minutes=59))
    assert early.state == first.state and early.commands == ()
    due = s.step(PLAN, first.state, s.Tick(), _context(VIP), T0 + timedelta(hours=1))
    assert _sent(due) == [("mms", "send_mms")]
    assert due.commands[0].key == "1:mms"
    assert (due.state.node_id, due.state.wake_at) == ("ordered", T0 + timedelta(hours=25))


def test_casual_shopper_gets_the_sms_and_a_reminder_when_no_order_comes() -> None:
    waiting = s.step(PLAN, _start(), s.Tick(), _context(CASUAL), T0).state
    after_sms = s.step(PLAN, waiting, s.Tick(), _context(CASUAL), T0 + timedelta(hours=1))
    assert _sent(after_sms) == [("sms", "send_sms")]
    reminder = s.step(PLAN, after_sms.state, s.Tick(), _context(CASUAL), T0 + timedelta(hours=25))
    assert _sent(reminder) == [("reminder", "send_sms")]
    assert (reminder.state.status, reminder.state.exit_reason) == ("completed", "completed")
    assert [visit.outcome for visit in reminder.state.history if visit.node_id == "ordered"] == [
        "entered",
        "timeout",
    ]


def test_order_between_reminders_gets_a_thank_you_and_no_reminder() -> None:
    waiting = s.step(PLAN, _start(), s.Tick(), _context(CASUAL), T0).state
    after_sms = s.step(PLAN, waiting, s.Tick(), _context(CASUAL), T0 + timedelta(hours=1)).state
    order = EventFact("Order Completed", T0 + timedelta(hours=3), {"order_id": "o1"})
    result = s.step(PLAN, after_sms, s.EventArrived(order.event, order.timestamp, order.properties),
                    _context(CASUAL, (order,)), T0 + timedelta(hours=3))  # fmt: skip
    assert _sent(result) == [("thanks", "send_sms")]
    assert result.state.status == "completed"


def test_order_before_the_first_reminder_exits_at_once() -> None:
    waiting = s.step(PLAN, _start(), s.Tick(), _context(VIP), T0).state
    order = EventFact("Order Completed", T0 + timedelta(minutes=20), {})
    result = s.step(PLAN, waiting, s.EventArrived(order.event, order.timestamp, {}), _context(VIP, (order,)),
                    T0 + timedelta(minutes=20))  # fmt: skip
    assert result.commands == ()
    assert (result.state.status, result.state.exit_reason) == ("exited", "Order Completed since entry")


def test_a_step_replayed_after_a_crash_gives_the_same_commands() -> None:
    waiting = s.step(PLAN, _start(7), s.Tick(), _context(VIP), T0).state
    once = s.step(PLAN, waiting, s.Tick(), _context(VIP), T0 + timedelta(hours=2))
    again = s.step(PLAN, waiting, s.Tick(), _context(VIP), T0 + timedelta(hours=2))
    assert once == again


def _flow(nodes: list[dict[str, Any]], **extra: Any) -> s.Plan:
    return s.Plan(
        d.parse_flow(
            {
                "trigger": {"type": "event", "event": "Signed Up"},
                "start": nodes[0]["id"],
                "nodes": nodes,
                **extra,
            }
        )
    )


SMS = {"type": "send_sms", "body": "hi"}


def test_random_split_is_deterministic_per_run_and_follows_the_shares() -> None:
    plan = _flow([
        {"id": "ab", "type": "random_split", "branches": [{"percent": 30, "next": "a"}, {"percent": 70, "next": "b"}]},
        {"id": "a", "type": "action", "action": SMS}, {"id": "b", "type": "action", "action": SMS},
    ])  # fmt: skip
    picks = [s.step(plan, _start(run), s.Tick(), _context({}), T0).commands[0].node_id for run in range(2000)]
    assert 0.27 < picks.count("a") / 2000 < 0.33
    assert picks[:50] == [
        s.step(plan, _start(run), s.Tick(), _context({}), T0).commands[0].node_id for run in range(50)
    ]


def test_holdout_runs_get_no_message() -> None:
    plan = _flow(
        [
            {"id": "hold", "type": "holdout", "percent": 10, "next": "a"},
            {"id": "a", "type": "action", "action": SMS},
        ]
    )
    results = [s.step(plan, _start(run), s.Tick(), _context({}), T0) for run in range(1000)]
    held = [r for r in results if r.state.exit_reason == "holdout"]
    assert 70 < len(held) < 130
    assert all(r.commands == () for r in held)


def test_delay_until_a_weekday_time_in_the_customers_timezone() -> None:
    plan = _flow([
        {"id": "wait", "type": "delay", "until_time": "10:00", "weekdays": ["sat"], "next": "a"},
        {"id": "a", "type": "action", "action": SMS},
    ])  # fmt: skip
    result = s.step(plan, _start(), s.Tick(), _context({}, customer_timezone="America/New_York"), T0)
    # Monday 09:00 UTC → Saturday 7 March 10:00 in New York (UTC-5) = 15:00 UTC
    assert result.state.wake_at == datetime(2026, 3, 7, 15, 0, tzinfo=UTC)
    assert s.delay_until(plan.nodes["wait"], _context({}), T0) == datetime(2026, 3, 7, 10, 0, tzinfo=UTC)


def test_delay_until_birthday_and_exit_without_one() -> None:
    plan = _flow([
        {"id": "bday", "type": "delay", "until_property": "birthday", "offset_days": -3, "next": "a"},
        {"id": "a", "type": "action", "action": SMS},
    ])  # fmt: skip
    result = s.step(plan, _start(), s.Tick(), _context({"birthday": date(1990, 3, 20)}), T0)
    assert result.state.wake_at == datetime(2026, 3, 17, 9, 0, tzinfo=UTC)
    missing = s.step(plan, _start(), s.Tick(), _context({}), T0)
    assert (missing.state.status, missing.state.exit_reason) == ("exited", "no date to wait for")


def test_condition_on_trigger_properties_and_events_since_entry() -> None:
    plan = _flow([
        {"id": "big", "type": "condition", "trigger": [{"property": "value", "op": "gt", "value": 200}], "yes": "a", "no": "b"},
        {"id": "a", "type": "action", "action": SMS}, {"id": "b", "type": "action", "action": SMS},
    ])  # fmt: skip
    assert s.step(plan, _start(), s.Tick(), _context({}), T0).commands[0].node_id == "b"  # 120 is not > 200
    rich = s.StepContext(facts=CustomerFacts(profile={}), trigger={"value": 250})
    assert s.step(plan, _start(), s.Tick(), rich, T0).commands[0].node_id == "a"


def test_unsubscribed_customer_exits_before_the_action() -> None:
    plan = _flow(
        [{"id": "a", "type": "action", "action": SMS}], exit_when=[{"type": "unsubscribed", "channel": "sms"}]
    )
    result = s.step(plan, _start(), s.Tick(), _context({"sms_consent": "unsubscribed"}), T0)
    assert (result.commands, result.state.exit_reason) == ((), "unsubscribed from sms")


def test_wait_for_event_ignores_events_from_before_it_started_waiting() -> None:
    plan = _flow([
        {"id": "w", "type": "wait_for_event", "event": "Product Added", "timeout": {"amount": 1, "unit": "days"},
         "on_event": "a", "on_timeout": "b"},
        {"id": "a", "type": "action", "action": SMS}, {"id": "b", "type": "action", "action": SMS},
    ])  # fmt: skip
    waiting = s.step(plan, _start(), s.Tick(), _context({}), T0).state
    stale = s.step(
        plan, waiting, s.EventArrived("Product Added", T0 - timedelta(seconds=1), {}), _context({}), T0
    )
    assert stale.state == waiting
    fresh = s.step(
        plan,
        waiting,
        s.EventArrived("Product Added", T0 + timedelta(seconds=5), {}),
        _context({}),
        T0 + timedelta(seconds=5),
    )
    assert _sent(fresh) == [("a", "send_sms")]


def test_delay_until_time_rolls_to_tomorrow_when_today_has_passed() -> None:
    node = d.DelayNode(id="x", type="delay", until_time=time(8, 0), next="y")
    assert s.delay_until(node, _context({}), T0) == datetime(2026, 3, 3, 8, 0, tzinfo=UTC)


def test_a_step_only_appends_to_the_history_so_the_worker_may_step_from_an_empty_one() -> None:
    # given a run partway through the flow, with the history of its first step
    first = s.step(PLAN, _start(), s.Tick(), _context(CASUAL), T0)
    assert first.state.history
    later = T0 + timedelta(days=2)
    # when its next step is taken from the full history and from an empty one
    full = s.step(PLAN, first.state, s.Tick(), _context(CASUAL), later)
    bare = s.step(
        PLAN, s.RunState(**{**_fields(first.state), "history": ()}), s.Tick(), _context(CASUAL), later
    )
    # then the full history is the old one plus exactly the visits of the bare step, and the rest agrees
    assert full.state.history == first.state.history + bare.state.history
    assert _fields(full.state) | {"history": ()} == _fields(bare.state) | {"history": ()}
    assert full.commands == bare.commands


def _fields(state: s.RunState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in s.RunState.__dataclass_fields__}
