"""The library of ready flows: every template renders to a valid flow, parameters are checked, and
the flows behave as their descriptions say when stepped on a virtual clock."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from winback.flows import definition as d
from winback.flows import engine as flow_engine
from winback.flows import files, library
from winback.flows import stepping as s
from winback.kernel.errors import InvalidInput
from winback.segments import rules
from winback.segments.evaluator import CustomerFacts, EventFact, LineFact, OrderFact

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
NAMES = [
    "abandoned-cart", "birthday", "browse-abandonment", "cross-sell", "order-follow-up",
    "product-review", "promotion", "referral", "replenishment", "search-abandonment", "upsell",
    "welcome-series", "win-back",
]  # fmt: skip
REQUIRED = {"segment_id": 12, "list_id": 3, "product_id": "capsules-100"}


def _required(info: library.TemplateInfo) -> dict[str, Any]:
    return {p.name: REQUIRED[p.name] for p in info.parameters if p.required}


def _render(name: str, **parameters: Any) -> d.FlowDefinition:
    return library.render(name, **{**_required(library.get(name)), **parameters})


# --- the catalogue ------------------------------------------------------------------------------


def test_the_library_lists_one_template_per_flow_of_the_issue() -> None:
    infos = library.templates()
    assert [info.name for info in infos] == NAMES
    assert all(info.title and info.description for info in infos)
    assert [p.name for p in library.get("search-abandonment").parameters if p.required] == ["segment_id"]


@pytest.mark.parametrize("name", NAMES)
def test_every_template_renders_to_a_valid_flow_that_survives_a_file(name: str) -> None:
    flow = _render(name)
    assert d.validate_flow(flow) == []
    for file_format in ("yaml", "json"):
        data = files.read_yaml(files.dump_flow(flow, file_format))
        assert d.parse_flow(data) == flow


@pytest.mark.parametrize("name", NAMES)
def test_every_declared_parameter_is_used(name: str) -> None:
    text = resources.files("winback.flows").joinpath("templates", f"{name}.yaml").read_text()
    used = set(re.findall(r"\$\{([a-z0-9_]+)\}", text))
    derived_from = {
        "browse-abandonment": {"second_reminder_days", "third_reminder_days"},
        "order-follow-up": {"survey_after_days"},
        "promotion": {"valid_days"},
        "birthday": {"days_before"},
        "replenishment": {"quantity", "days_per_unit", "shipping_days", "reminder_lead_days"},
    }.get(name, set())
    assert {p.name for p in library.get(name).parameters} <= used | derived_from


def _actions(flow: d.FlowDefinition) -> list[Any]:
    return [node.action for node in flow.nodes if isinstance(node, d.ActionNode)]


@pytest.mark.parametrize("name", NAMES)
def test_copy_carries_opt_out_wording_and_unsubscribe_links(name: str) -> None:
    flow = _render(name)
    for action in _actions(flow):
        if isinstance(action, d.SendSms | d.SendMms):
            assert action.body.endswith("Reply STOP to opt out"), action.body
        if isinstance(action, d.SendEmail) and action.subject != "Order {{ event.order_id }} confirmed":
            assert "{{ unsubscribe_url }}" in action.text, action.subject
        for text in (getattr(action, "body", ""), getattr(action, "text", "")):
            assert "${" not in text  # every template parameter was filled in


def test_suggested_segments_are_valid_segment_rules() -> None:
    suggested = [
        p.suggested_segment for info in library.templates() for p in info.parameters if p.suggested_segment
    ]
    assert len(suggested) == 3  # search abandonment, promotion, win-back
    for rule in suggested:
        rules.parse_definition(dict(rule))


# --- parameters ---------------------------------------------------------------------------------


def test_an_unknown_template_is_named() -> None:
    with pytest.raises(InvalidInput) as caught:
        library.render("cart-rescue")
    assert caught.value.message.startswith("no flow template 'cart-rescue'; known: abandoned-cart, birthday")
    assert caught.value.details["field"] == "template"


def test_a_missing_required_parameter_is_named() -> None:
    with pytest.raises(InvalidInput) as caught:
        library.render("win-back")
    assert caught.value.message.startswith("template 'win-back' needs the parameter 'segment_id': ")
    assert caught.value.details["field"] == "segment_id"


def test_an_unknown_parameter_is_named_with_those_it_takes() -> None:
    with pytest.raises(InvalidInput) as caught:
        library.render("upsell", delay_hours=2)
    assert caught.value.message == (
        "template 'upsell' takes no parameter 'delay_hours'; it takes: after_hours, min_price, reentry_days"
    )


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"casual_amount_off": "five"}, "parameter 'casual_amount_off' needs a number, not 'five'"),
        ({"reminder_after_hours": 1.5}, "parameter 'reminder_after_hours' needs a whole number, not 1.5"),
        ({"high_value_percent_off": True}, "parameter 'high_value_percent_off' needs a number, not True"),
        (
            {"high_value_percent_off": 120},
            "template 'abandoned-cart': parameter 'high_value_percent_off' must be at most 100, not 120",
        ),
        (
            {"first_message_after_hours": 0},
            "template 'abandoned-cart': parameter 'first_message_after_hours' must be at least 1, not 0",
        ),
    ],
)
def test_bad_parameter_values_are_refused_naming_the_parameter(
    parameters: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        library.render("abandoned-cart", **parameters)
    assert caught.value.message == message


def test_parameters_given_as_text_from_a_command_line_are_read() -> None:
    flow = library.render("abandoned-cart", high_value_min_spent="750.50", high_value_min_orders="3")
    rule = flow.nodes[0].rule  # type: ignore[union-attr]
    assert [r.compare.value for r in rule.rules] == [Decimal("750.50"), Decimal(3)]


def test_a_parameter_that_makes_the_flow_invalid_is_reported_with_the_flows_problem() -> None:
    with pytest.raises(InvalidInput) as caught:
        library.render("promotion", segment_id=1, cron="every monday")
    assert caught.value.message.startswith("template 'promotion' with these parameters gives an invalid flow")
    assert "cron needs five fields" in caught.value.message


def test_browse_reminders_are_days_after_browsing_and_must_come_in_order() -> None:
    flow = library.render(
        "browse-abandonment", first_reminder_days=2, second_reminder_days=4, third_reminder_days=9
    )
    delays = [node.duration.amount for node in flow.nodes if isinstance(node, d.DelayNode) and node.duration]
    assert delays == [2, 2, 5]
    with pytest.raises(InvalidInput) as caught:
        library.render("browse-abandonment", second_reminder_days=5, third_reminder_days=5)
    assert caught.value.message == (
        "template 'browse-abandonment': 'third_reminder_days' (5) must come after 'second_reminder_days' (5)"
    )


def test_the_birthday_code_must_outlast_the_days_before_the_birthday() -> None:
    flow = library.render("birthday", days_before=10, valid_days=20)
    assert isinstance(flow.trigger, d.DateTrigger)
    assert (flow.trigger.offset_days, flow.trigger.at.isoformat()) == (-10, "10:00:00")
    with pytest.raises(InvalidInput) as caught:
        library.render("birthday", days_before=10, valid_days=10)
    assert caught.value.details["field"] == "valid_days"


# --- the abandoned-cart flow, stepped on a virtual clock ----------------------------------------

CART = s.Plan(library.render("abandoned-cart"))
HIGH_VALUE = {"total_spent": Decimal("900.00"), "orders_count": 7}
CASUAL = {"total_spent": Decimal("40.00"), "orders_count": 1}
CHECKOUT = {"checkout_id": "c1", "value": 120, "recovery_url": "https://shop.test/r/c1"}


def _context(
    profile: dict[str, Any], events: Sequence[EventFact] = (), orders: Sequence[OrderFact] = (), **extra: Any
) -> s.StepContext:
    facts = CustomerFacts(profile=profile, orders=tuple(orders))
    return s.StepContext(facts=facts, trigger=CHECKOUT, events_since_entry=tuple(events), **extra)


def _start(run_id: int = 1) -> s.RunState:
    return s.RunState(run_id=run_id, node_id=None, status="active", entered_at=T0)


def _commands(result: s.StepResult) -> list[tuple[str, str, Any]]:
    """(idempotency key, action type, what matters about it) for each command."""
    summary = []
    for command in result.commands:
        action = command.action
        detail: Any = None
        if isinstance(action, d.CreateDiscount):
            detail = (
                action.kind,
                action.value,
                action.expires_after.seconds if action.expires_after else None,
            )
        elif isinstance(action, d.SendMms):
            detail = action.media
        elif isinstance(action, d.TagAction):
            detail = action.tag
        summary.append((command.key, action.type, detail))
    return summary


def _arrive(event: EventFact) -> s.EventArrived:
    return s.EventArrived(event.event, event.timestamp, event.properties)


def test_high_value_path_free_shipping_and_5_percent_by_mms_after_an_hour_then_the_reminder() -> None:
    first = s.step(CART, _start(), s.Tick(), _context(HIGH_VALUE), T0)
    assert (first.state.node_id, first.state.wake_at, first.commands) == (
        "wait-high-value",
        T0 + timedelta(hours=1),
        (),
    )
    assert (
        s.step(CART, first.state, s.Tick(), _context(HIGH_VALUE), T0 + timedelta(minutes=59)).commands == ()
    )

    due = s.step(CART, first.state, s.Tick(), _context(HIGH_VALUE), T0 + timedelta(hours=1))
    assert _commands(due) == [
        ("1:free_shipping", "create_discount", ("free_shipping", Decimal(0), 72 * 3600)),
        ("1:percent_off", "create_discount", ("percent", Decimal(5), 72 * 3600)),
        ("1:mms", "send_mms", "cart_grid"),
    ]
    mms = due.commands[2].action
    assert "5% off with code {{ discounts.percent_off.code }}" in mms.body
    assert "{{ checkout.recovery_url }}" in mms.body
    assert (due.state.node_id, due.state.wake_at) == ("ordered", T0 + timedelta(hours=25))

    reminder = s.step(CART, due.state, s.Tick(), _context(HIGH_VALUE), T0 + timedelta(hours=25))
    assert _commands(reminder) == [("1:reminder", "send_sms", None)]
    assert (reminder.state.status, reminder.state.exit_reason) == ("completed", "completed")


def test_casual_path_a_plain_sms_with_5_off_then_the_stronger_reminder() -> None:
    first = s.step(CART, _start(), s.Tick(), _context(CASUAL), T0)
    assert (first.state.node_id, first.state.wake_at) == ("wait-casual", T0 + timedelta(hours=1))
    due = s.step(CART, first.state, s.Tick(), _context(CASUAL), T0 + timedelta(hours=1))
    assert _commands(due) == [
        ("1:amount_off", "create_discount", ("amount", Decimal(5), 72 * 3600)),
        ("1:sms", "send_sms", None),
    ]
    assert "{{ discount.code }}" in due.commands[1].action.body
    early = s.step(CART, due.state, s.Tick(), _context(CASUAL), T0 + timedelta(hours=24, minutes=59))
    assert early.commands == () and early.state == due.state
    reminder = s.step(CART, due.state, s.Tick(), _context(CASUAL), T0 + timedelta(hours=25))
    assert _commands(reminder) == [("1:reminder", "send_sms", None)]
    assert reminder.commands[0].action.body.startswith("Last chance, {{ customer.first_name }}")
    assert [(v.node_id, v.outcome) for v in reminder.state.history] == [
        ("high-value", "entered"), ("high-value", "no"), ("wait-casual", "entered"),
        ("wait-casual", "passed"), ("amount_off", "entered"), ("amount_off", "passed"),
        ("sms", "entered"), ("sms", "passed"), ("ordered", "entered"), ("ordered", "timeout"),
        ("reminder", "entered"), ("reminder", "passed"),
    ]  # fmt: skip


def test_an_order_between_the_reminders_gets_a_thank_you_and_no_reminder() -> None:
    waiting = s.step(CART, _start(), s.Tick(), _context(CASUAL), T0).state
    after_sms = s.step(CART, waiting, s.Tick(), _context(CASUAL), T0 + timedelta(hours=1)).state
    order = EventFact("Order Completed", T0 + timedelta(hours=6), {"order_id": "o1", "checkout_id": "c1"})
    thanked = s.step(CART, after_sms, _arrive(order), _context(CASUAL, [order]), T0 + timedelta(hours=6))
    assert _commands(thanked) == [("1:thanks", "send_sms", None)]
    assert thanked.commands[0].action.body.startswith("Thank you for your order")
    assert (thanked.state.status, thanked.state.exit_reason) == ("completed", "completed")
    later = s.step(CART, thanked.state, s.Tick(), _context(CASUAL, [order]), T0 + timedelta(hours=25))
    assert later.commands == ()


def test_an_order_before_the_first_reminder_ends_the_run_with_nothing_sent() -> None:
    for profile, waiting_at in ((HIGH_VALUE, "wait-high-value"), (CASUAL, "wait-casual")):
        waiting = s.step(CART, _start(), s.Tick(), _context(profile), T0).state
        assert waiting.node_id == waiting_at
        order = EventFact("Order Completed", T0 + timedelta(minutes=20), {"order_id": "o1"})
        result = s.step(CART, waiting, _arrive(order), _context(profile, [order]), T0 + timedelta(minutes=20))
        assert result.commands == ()
        assert (result.state.status, result.state.exit_reason) == ("exited", "Order Completed since entry")


def test_one_run_per_checkout_every_time() -> None:
    assert CART.flow.entry.one_run_per == "checkout"
    assert CART.flow.entry.reentry.mode == "every_time"
    assert CART.flow.exit_when == [d.EventSinceEntryExit(type="event_since_entry", event="Order Completed")]


# --- replenishment ------------------------------------------------------------------------------


def test_replenishment_delay_for_100_capsules_a_day_and_5_days_shipping_is_92_days() -> None:
    assert library.replenishment_delay_days(100, 1, 5, reminder_lead_days=3) == 92
    assert library.replenishment_delay_days(100, 1, 5) == 95  # the bare formula, no lead
    assert library.replenishment_delay_days(60, Decimal("0.5"), 2) == 28
    flow = library.render("replenishment", product_id="capsules-100")
    wait = flow.nodes[0]
    assert isinstance(wait, d.DelayNode) and wait.supply == d.SupplyDelay(
        product_id="capsules-100", days_per_item=Decimal(100), minus_days=8
    )
    one_bottle = {"order_id": "o1", "products": [{"product_id": "capsules-100", "quantity": 1}]}
    assert s.supply_days(wait.supply, one_bottle) == 92


def _ordered(order_id: str, at: datetime, *product_ids: str) -> EventFact:
    return EventFact(
        "Order Completed", at, {"order_id": order_id, "products": [{"product_id": p} for p in product_ids]}
    )


REPLENISH = s.Plan(library.render("replenishment", product_id="capsules-100"))


def _replenish_context(events: Sequence[EventFact] = (), quantity: int = 1) -> s.StepContext:
    trigger = {"order_id": "o1", "products": [{"product_id": "tea", "quantity": 3},
                                              {"product_id": "capsules-100", "quantity": quantity}]}  # fmt: skip
    return s.StepContext(facts=CustomerFacts(profile={}), trigger=trigger, events_since_entry=tuple(events))


def test_replenishment_waits_by_the_quantity_bought() -> None:
    # one bottle lasts 100 days: reminded 8 days before (5 days' shipping, a 3-day lead); two, 200
    assert s.step(REPLENISH, _start(), s.Tick(), _replenish_context(), T0).state.wake_at == T0 + timedelta(
        days=92
    )
    two = s.step(REPLENISH, _start(), s.Tick(), _replenish_context(quantity=2), T0)
    assert two.state.wake_at == T0 + timedelta(days=192)
    # and the flow starts only for orders with the product
    added = flow_engine.AppliedEvent(customer_id=1, event="Order Completed", type="track", traits={},
                                     properties={"products": [{"product_id": "tea"}]}, timestamp=T0, message_id="m")  # fmt: skip
    assert flow_engine.trigger_matches(REPLENISH.flow.trigger, added) is False
    assert flow_engine.trigger_matches(
        REPLENISH.flow.trigger, replace(added, properties=_replenish_context().trigger)
    )


def test_replenishment_reminds_those_who_did_not_reorder_and_leaves_the_others_alone() -> None:
    waiting = s.step(REPLENISH, _start(), s.Tick(), _replenish_context(), T0)
    due = T0 + timedelta(days=92)
    # the order that started the run is not a reorder, nor is an order of something else
    not_reorders = [_ordered("o1", T0, "capsules-100"), _ordered("o2", T0 + timedelta(days=30), "tea")]
    reminded = s.step(REPLENISH, waiting.state, s.Tick(), _replenish_context(not_reorders), due)
    assert _commands(reminded) == [("1:reminder", "send_email", None)]
    followup = s.step(
        REPLENISH, reminded.state, s.Tick(), _replenish_context(not_reorders), due + timedelta(days=3)
    )
    assert _commands(followup) == [("1:followup", "send_sms", None)]

    reorder = _ordered("o3", T0 + timedelta(days=80), "capsules-100")
    skipped = s.step(REPLENISH, waiting.state, s.Tick(), _replenish_context([*not_reorders, reorder]), due)
    assert (skipped.commands, skipped.state.exit_reason) == ((), "reordered")


def test_a_supply_delay_without_the_product_in_the_order_ends_the_run() -> None:
    context = s.StepContext(facts=CustomerFacts(profile={}), trigger={"products": [{"product_id": "tea"}]})
    result = s.step(REPLENISH, _start(), s.Tick(), context, T0)
    assert (result.state.status, result.state.exit_reason) == ("exited", "product not in the order")


@pytest.mark.parametrize(
    ("quantity", "days"),
    [(None, 92), (1, 92), ("2", 192), (0.5, 42), (0, None), (-1, None), ("lots", None), (True, None)],
)
def test_supply_days_read_the_quantity_on_the_line(quantity: Any, days: int | None) -> None:
    supply = d.SupplyDelay(product_id="capsules-100", days_per_item=Decimal(100), minus_days=8)
    line = {"product_id": "capsules-100"} | ({} if quantity is None else {"quantity": quantity})
    assert s.supply_days(supply, {"products": [line]}) == days


# --- other flows, stepped -----------------------------------------------------------------------


def test_product_review_waits_longer_for_hard_goods_and_answers_the_rating() -> None:
    plan = s.Plan(library.render("product-review"))
    hard = OrderFact("o1", "paid", Decimal(300), Decimal(0), T0 - timedelta(days=2),
                     lines=(LineFact("chair", None, None, ("hard-goods",)),))  # fmt: skip
    assert s.step(plan, _start(), s.Tick(), _context({}, orders=[hard]), T0).state.wake_at == T0 + timedelta(
        days=21
    )
    soft = s.step(plan, _start(), s.Tick(), _context({}), T0)
    assert soft.state.wake_at == T0 + timedelta(days=7)

    asked = s.step(plan, soft.state, s.Tick(), _context({}), T0 + timedelta(days=7))
    assert _commands(asked) == [("1:ask", "send_email", None)]
    at = T0 + timedelta(days=8)
    good = EventFact("Review Submitted", at, {"rating": 5})
    assert _commands(s.step(plan, asked.state, _arrive(good), _context({}, [good]), at)) == [
        ("1:thanks", "send_email", None)
    ]
    bad = EventFact("Review Submitted", at, {"rating": 2})
    assert _commands(s.step(plan, asked.state, _arrive(bad), _context({}, [bad]), at)) == [
        ("1:alert", "notify_slack", None),
        ("1:make-good-code", "create_discount", ("percent", Decimal(15), 30 * 86_400)),
        ("1:make-good", "send_email", None),
    ]
    reminded = s.step(plan, asked.state, s.Tick(), _context({}), T0 + timedelta(days=14))
    assert _commands(reminded) == [("1:reminder", "send_email", None)]
    gave_up = s.step(plan, reminded.state, s.Tick(), _context({}), T0 + timedelta(days=21))
    assert (gave_up.commands, gave_up.state.exit_reason) == ((), "no review")


def test_cross_sell_asks_for_a_review_3_to_4_days_after_a_second_purchase() -> None:
    plan = s.Plan(library.render("cross-sell"))
    waiting = s.step(plan, _start(), s.Tick(), _context({}), T0).state
    sent = s.step(plan, waiting, s.Tick(), _context({}), T0 + timedelta(days=1))
    assert _commands(sent) == [("1:complements", "send_email", None)]
    second = EventFact("Order Completed", T0 + timedelta(days=2, hours=5), {"order_id": "o2"})
    after = s.step(plan, sent.state, _arrive(second), _context({}, [second]), second.timestamp)
    # 3 days after 14:00 on Wednesday, then the next 10:00: Sunday 8 March 10:00 (UTC customer)
    assert after.state.wake_at == datetime(2026, 3, 7, 14, 0, tzinfo=UTC)
    timed = s.step(plan, after.state, s.Tick(), _context({}), after.state.wake_at)
    assert timed.state.wake_at == datetime(2026, 3, 8, 10, 0, tzinfo=UTC)
    review = s.step(plan, timed.state, s.Tick(), _context({}), timed.state.wake_at)
    assert _commands(review) == [("1:review", "send_email", None)]
    follow_up = s.step(plan, sent.state, s.Tick(), _context({}), T0 + timedelta(days=3))
    assert _commands(follow_up) == [("1:follow-up", "send_email", None)]


def test_win_back_suppresses_those_who_never_answer() -> None:
    plan = s.Plan(library.render("win-back", segment_id=4))
    first = s.step(plan, _start(), s.Tick(), _context({}), T0)
    assert [key for key, _, _ in _commands(first)] == ["1:offer-code", "1:offer"]
    state = first.state
    for day, expected in ((7, ["1:reminder"]), (14, ["1:still-interested"]), (21, ["1:suppress"])):
        result = s.step(plan, state, s.Tick(), _context({}), T0 + timedelta(days=day))
        assert [key for key, _, _ in _commands(result)] == expected
        state = result.state
    assert _commands(result) == [("1:suppress", "add_tag", "suppressed")]


def test_promotion_holds_out_a_share_and_reminds_on_the_last_day() -> None:
    plan = s.Plan(library.render("promotion", segment_id=2, holdout_percent=20))
    results = [s.step(plan, _start(run), s.Tick(), _context({}), T0) for run in range(500)]
    held = [r for r in results if r.state.exit_reason == "holdout"]
    assert 70 < len(held) < 130 and all(r.commands == () for r in held)
    sent = next(r for r in results if r.state.exit_reason != "holdout")
    assert [action for _, action, _ in _commands(sent)] == ["create_discount", "send_email", "send_sms"]
    assert sent.state.wake_at == T0 + timedelta(days=2)  # valid 3 days: the last day starts after 2


# --- docs/flows.md ------------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "flows.md"


def test_the_docs_describe_every_template_and_parameter() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for info in library.templates():
        assert f"### `{info.name}` — {info.title}" in text
        for parameter in info.parameters:
            assert f"| `{parameter.name}` |" in text, (info.name, parameter.name)


def test_the_docs_first_example_is_a_valid_flow() -> None:
    text = DOCS.read_text(encoding="utf-8")
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    flow = files.load_flow_text(example, "yaml", source="docs/flows.md")
    assert [node.id for node in flow.nodes][:2] == ["high-value", "wait-vip"]


def test_order_follow_up_runs_once_per_order() -> None:
    flow = library.render("order-follow-up")
    assert (flow.entry.one_run_per, flow.entry.reentry.mode) == ("order", "every_time")
