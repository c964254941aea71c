"""The in-memory segment evaluator: every rule kind, groups, periods, missing data, birthdays."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from winback.segments import rules
from winback.segments.evaluator import (
    CheckoutFact,
    CustomerFacts,
    EvalContext,
    EventFact,
    FactNeeds,
    LineFact,
    OrderFact,
    evaluate,
    needs,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday morning
CTX = EvalContext(now=NOW, timezone="UTC")


def rule(data: dict[str, Any]) -> Any:
    return rules.parse_definition(data).rule


def profile(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 1,
        "email": None,
        "phone": None,
        "city": None,
        "region": None,
        "zip": None,
        "country": None,
        "birthday": None,
        "tags": [],
        "properties": {},
        "email_consent": None,
        "sms_consent": None,
        "push_consent": None,
        "orders_count": 0,
        "total_spent": Decimal("0"),
        "average_order_value": None,
        "last_order_at": None,
        "created_at": NOW - timedelta(days=100),
        "merged_into_id": None,
        "erased_at": None,
    }
    base.update(fields)
    return base


def customer(**kwargs: Any) -> CustomerFacts:
    fields = {key: kwargs.pop(key) for key in list(kwargs) if key not in CustomerFacts.__dataclass_fields__}
    return CustomerFacts(profile=profile(**fields), **kwargs)


def order(
    days_ago: float,
    total: str = "100",
    *,
    status: str = "paid",
    refunded: str = "0",
    lines: tuple[LineFact, ...] = (),
    **extra: Any,
) -> OrderFact:
    return OrderFact(
        order_id=f"o-{days_ago}-{total}",
        status=status,
        total=Decimal(total),
        refunded_total=Decimal(refunded),
        placed_at=NOW - timedelta(days=days_ago),
        lines=lines,
        **extra,
    )


def event(name: str, days_ago: float, **properties: Any) -> EventFact:
    return EventFact(event=name, timestamp=NOW - timedelta(days=days_ago), properties=properties)


# --- groups and membership ----------------------------------------------------------------------


def test_groups_combine_with_and_or_not_at_any_depth() -> None:
    # given a customer tagged vip from Germany
    person = customer(tags=["vip"], country="DE")
    vip = {"type": "tag", "tag": "vip"}
    french = {"type": "location", "field": "country", "value": "FR"}
    # then all/any/not combine exactly as AND/OR/NOT
    assert (
        evaluate(rule({"type": "all", "rules": [vip, {"type": "not", "rule": french}]}), person, CTX) is True
    )
    assert evaluate(rule({"type": "all", "rules": [vip, french]}), person, CTX) is False
    assert evaluate(rule({"type": "any", "rules": [french, vip]}), person, CTX) is True
    assert (
        evaluate(rule({"type": "any", "rules": [french, {"type": "not", "rule": vip}]}), person, CTX) is False
    )
    nested = {"type": "not", "rule": {"type": "any", "rules": [french, {"type": "not", "rule": vip}]}}
    assert evaluate(rule(nested), person, CTX) is True


def test_merged_and_erased_profiles_are_never_members_even_of_a_negation() -> None:
    # given a rule that matches almost anybody
    nobody_is_french = rule({"type": "not", "rule": {"type": "location", "field": "country", "value": "FR"}})
    # then the tombstone of a merge and an erased profile are still out
    assert evaluate(nobody_is_french, customer(), CTX) is True
    assert evaluate(nobody_is_french, customer(merged_into_id=7), CTX) is False
    assert evaluate(nobody_is_french, customer(erased_at=NOW), CTX) is False


def test_segment_and_list_membership_and_their_negation() -> None:
    person = customer(segment_ids=frozenset({3}), list_ids=frozenset({5}))
    assert evaluate(rule({"type": "segment", "segment_id": 3}), person, CTX) is True
    assert evaluate(rule({"type": "segment", "segment_id": 4}), person, CTX) is False
    assert evaluate(rule({"type": "segment", "segment_id": 3, "member": False}), person, CTX) is False
    assert evaluate(rule({"type": "list", "list_id": 5}), person, CTX) is True
    assert evaluate(rule({"type": "list", "list_id": 6, "member": False}), person, CTX) is True


# --- behaviour ----------------------------------------------------------------------------------


def test_money_spent_all_time_reads_the_running_total() -> None:
    person = customer(total_spent=Decimal("500.00"))
    assert (
        evaluate(rule({"type": "money_spent", "compare": {"op": "gte", "value": 500}}), person, CTX) is True
    )
    assert (
        evaluate(rule({"type": "money_spent", "compare": {"op": "gt", "value": 500}}), person, CTX) is False
    )
    between = {"type": "money_spent", "compare": {"op": "between", "value": 100, "to": 500}}
    assert evaluate(rule(between), person, CTX) is True


def test_money_spent_in_a_period_is_net_of_refunds_without_cancelled_orders() -> None:
    # given orders in the last 30 days: 100 with 30 refunded, 50 cancelled, and 200 forty days ago
    person = customer(
        orders=(order(2, "100", refunded="30"), order(3, "50", status="cancelled"), order(40, "200")),
    )
    spent = {"type": "money_spent", "period": {"type": "last", "amount": 30}}
    # then 70 was spent in the period
    assert evaluate(rule({**spent, "compare": {"op": "eq", "value": 70}}), person, CTX) is True
    assert evaluate(rule({**spent, "compare": {"op": "gt", "value": 70}}), person, CTX) is False
    # and a customer without orders in the period spent 0 there
    assert evaluate(rule({**spent, "compare": {"op": "lt", "value": 1}}), customer(), CTX) is True


def test_order_count_all_time_and_in_a_period() -> None:
    person = customer(orders_count=5, orders=(order(1), order(2, status="cancelled"), order(10)))
    assert evaluate(rule({"type": "order_count", "compare": {"op": "gte", "value": 5}}), person, CTX) is True
    in_week = {"type": "order_count", "period": {"type": "last", "amount": 7}}
    assert evaluate(rule({**in_week, "compare": {"op": "eq", "value": 1}}), person, CTX) is True
    assert evaluate(rule({**in_week, "compare": {"op": "eq", "value": 2}}), person, CTX) is False


def test_placed_order_in_a_period_and_placed_none() -> None:
    person = customer(orders=(order(10), order(1, status="cancelled")))
    last_week = {"type": "last", "amount": 1, "unit": "weeks"}
    assert evaluate(rule({"type": "placed_order", "period": last_week}), person, CTX) is False
    assert evaluate(rule({"type": "placed_order", "period": last_week, "placed": False}), person, CTX) is True
    last_month = {"type": "last", "amount": 1, "unit": "months"}
    assert evaluate(rule({"type": "placed_order", "period": last_month}), person, CTX) is True


def test_period_start_is_inclusive_and_end_exclusive() -> None:
    # given orders exactly 7 days ago and exactly now
    at_start = customer(orders=(order(7),))
    at_now = customer(orders=(order(0),))
    last_7 = rule({"type": "placed_order", "period": {"type": "last", "amount": 7}})
    # then the one at the start counts and the one at the (exclusive) end does not
    assert evaluate(last_7, at_start, CTX) is True
    assert evaluate(last_7, at_now, CTX) is False


def test_calendar_periods_follow_the_store_timezone() -> None:
    # given an order at 2026-03-01 23:30 UTC, which is already 2 March in Berlin
    late = OrderFact(
        order_id="o1",
        status="paid",
        total=Decimal(10),
        refunded_total=Decimal(0),
        placed_at=datetime(2026, 3, 1, 23, 30, tzinfo=UTC),
    )
    person = customer(orders=(late,))
    today = rule({"type": "placed_order", "period": {"type": "today"}})
    yesterday = rule({"type": "placed_order", "period": {"type": "yesterday"}})
    # then in UTC it was yesterday, and in Berlin it was today
    assert (evaluate(today, person, CTX), evaluate(yesterday, person, CTX)) == (False, True)
    berlin = EvalContext(now=NOW, timezone="Europe/Berlin")
    assert (evaluate(today, person, berlin), evaluate(yesterday, person, berlin)) == (True, False)
    # and "on" a date means that local day
    on_day = rule({"type": "placed_order", "period": {"type": "on", "date": "2026-03-02"}})
    assert (evaluate(on_day, person, CTX), evaluate(on_day, person, berlin)) == (False, True)


def test_not_ordered_for_and_people_who_never_ordered() -> None:
    lapsed = customer(last_order_at=NOW - timedelta(days=91))
    recent = customer(last_order_at=NOW - timedelta(days=89))
    never = customer()
    plain = rule({"type": "not_ordered_for", "days": 90})
    with_never = rule({"type": "not_ordered_for", "days": 90, "include_never_ordered": True})
    assert [evaluate(plain, c, CTX) for c in (lapsed, recent, never)] == [True, False, False]
    assert [evaluate(with_never, c, CTX) for c in (lapsed, recent, never)] == [True, False, True]


def test_ordered_product_and_variant_in_counted_orders_only() -> None:
    shoe = LineFact(product_id="nike-1", variant_id="nike-1-42", category="Shoes")
    person = customer(
        orders=(order(5, lines=(shoe,)), order(1, status="cancelled", lines=(LineFact("hat", None, None),)))
    )
    assert evaluate(rule({"type": "ordered_product", "product_id": "nike-1"}), person, CTX) is True
    variant = {"type": "ordered_product", "product_id": "nike-1", "variant_id": "nike-1-42"}
    assert evaluate(rule(variant), person, CTX) is True
    other_variant = {"type": "ordered_product", "product_id": "nike-1", "variant_id": "nike-1-43"}
    assert evaluate(rule(other_variant), person, CTX) is False
    assert evaluate(rule({"type": "ordered_product", "product_id": "hat"}), person, CTX) is False  # cancelled
    in_3_days = {"type": "ordered_product", "product_id": "nike-1", "period": {"type": "last", "amount": 3}}
    assert evaluate(rule(in_3_days), person, CTX) is False


def test_ordered_from_collection_by_catalog_collection_or_line_category() -> None:
    by_collection = customer(orders=(order(5, lines=(LineFact("kibble", None, "Food", ("dog-food",)),)),))
    by_category = customer(orders=(order(5, lines=(LineFact("bone", None, "dog-food"),)),))
    neither = customer(orders=(order(5, lines=(LineFact("cat", None, "Cats", ("cat-food",)),)),))
    dog_food = rule({"type": "ordered_from_collection", "collection": "dog-food"})
    assert [evaluate(dog_food, c, CTX) for c in (by_collection, by_category, neither)] == [True, True, False]


def test_abandoned_checkout_kind_period_and_minimum_value() -> None:
    person = customer(
        checkouts=(
            CheckoutFact(kind="checkout", abandoned_at=NOW - timedelta(days=2), value=Decimal("80")),
            CheckoutFact(kind="cart", abandoned_at=NOW - timedelta(hours=1), value=Decimal("500")),
            CheckoutFact(kind="checkout", abandoned_at=None, value=Decimal("900")),
        )
    )
    assert evaluate(rule({"type": "abandoned_checkout"}), person, CTX) is True
    assert evaluate(rule({"type": "abandoned_checkout", "min_value": 80}), person, CTX) is True
    assert evaluate(rule({"type": "abandoned_checkout", "min_value": 81}), person, CTX) is False
    today = {"type": "abandoned_checkout", "period": {"type": "today"}}
    assert evaluate(rule(today), person, CTX) is False  # only the cart is from today


def test_event_count_in_a_window_with_property_filters() -> None:
    # given three views of X in the week (one 8 days ago) and a view of Y
    person = customer(
        events=(
            event("Product Viewed", 1, product_id="X"),
            event("Product Viewed", 6, product_id="X"),
            event("Product Viewed", 8, product_id="X"),
            event("Product Viewed", 2, product_id="Y"),
        )
    )
    viewed_x = {
        "type": "event",
        "event": "Product Viewed",
        "where": [{"property": "product_id", "op": "eq", "value": "X"}],
        "period": {"type": "last", "amount": 7},
    }
    # then X was viewed twice in 7 days
    assert evaluate(rule({**viewed_x, "count": {"op": "gte", "value": 2}}), person, CTX) is True
    assert evaluate(rule({**viewed_x, "count": {"op": "gte", "value": 3}}), person, CTX) is False
    # and "fewer than once" matches someone who never did it
    never = rule({**viewed_x, "count": {"op": "lt", "value": 1}})
    assert (evaluate(never, person, CTX), evaluate(never, customer(), CTX)) == (False, True)


def test_event_searched_for_boots_yesterday_is_case_insensitive_contains() -> None:
    yesterday_morning = NOW - timedelta(hours=20)  # 1 March 13:00 UTC
    person = customer(events=(EventFact("Products Searched", yesterday_morning, {"query": "Red BOOTS"}),))
    searched = {
        "type": "event",
        "event": "Products Searched",
        "where": [{"property": "query", "op": "contains", "value": "boots"}],
        "period": {"type": "yesterday"},
    }
    assert evaluate(rule(searched), person, CTX) is True
    assert evaluate(rule({**searched, "period": {"type": "today"}}), person, CTX) is False


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("eq", "10", False),  # a number is not the string "10"
        ("eq", 10, True),
        ("eq", 10.0, True),
        ("neq", 10, False),
        ("gt", 9.5, True),
        ("gte", 10, True),
        ("lt", 10, False),
        ("in", [1, 10], True),
        ("not_in", [1, 2], True),
        ("exists", None, True),
        ("not_exists", None, False),
        ("contains", "1", False),  # contains is for strings
        ("not_contains", "1", True),
    ],
)
def test_number_property_filters(op: str, value: Any, expected: bool) -> None:
    person = customer(events=(event("Product Viewed", 1, price=10),))
    where = (
        [{"property": "price", "op": op, "value": value}]
        if value is not None
        else [{"property": "price", "op": op}]
    )
    assert (
        evaluate(rule({"type": "event", "event": "Product Viewed", "where": where}), person, CTX) is expected
    )


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("eq", "x", False),
        ("neq", "x", True),
        ("in", ["x"], False),
        ("not_in", ["x"], True),
        ("contains", "x", False),
        ("not_contains", "x", True),
        ("starts_with", "x", False),
        ("gt", 1, False),
        ("lt", 1, False),
        ("exists", None, False),
        ("not_exists", None, True),
    ],
)
def test_missing_property_fails_every_test_but_the_negative_ones(op: str, value: Any, expected: bool) -> None:
    # given an event whose 'color' is null (the same as absent)
    person = customer(events=(event("Product Viewed", 1, color=None),))
    where = (
        [{"property": "color", "op": op, "value": value}]
        if value is not None
        else [{"property": "color", "op": op}]
    )
    assert (
        evaluate(rule({"type": "event", "event": "Product Viewed", "where": where}), person, CTX) is expected
    )


def test_string_properties_order_as_strings_and_booleans_match_only_booleans() -> None:
    person = customer(events=(event("Signed Up", 1, plan_date="2026-02-10", trial=True, code="1"),))

    def matches(*where: dict[str, Any]) -> bool:
        return evaluate(rule({"type": "event", "event": "Signed Up", "where": list(where)}), person, CTX)

    assert matches({"property": "plan_date", "op": "gt", "value": "2026-02-01"}) is True
    assert matches({"property": "plan_date", "op": "lt", "value": "2026-02-01"}) is False
    assert matches({"property": "trial", "op": "eq", "value": True}) is True
    assert matches({"property": "trial", "op": "eq", "value": 1}) is False
    assert matches({"property": "code", "op": "eq", "value": 1}) is False
    assert matches({"property": "code", "op": "starts_with", "value": "1"}) is True


def test_orders_matching_counts_orders_passing_every_filter() -> None:
    person = customer(
        orders=(
            order(3, "150", coupons=("SPRING",), shipping_country="DE", discount=Decimal("10")),
            order(4, "80", coupons=("SPRING",), shipping_country="DE"),
            order(5, "300", shipping_country="FR"),
            order(6, "400", coupons=("SPRING",), status="cancelled"),
        )
    )

    def count_is(expected: int, *where: dict[str, Any]) -> bool:
        data = {"type": "orders_matching", "where": list(where), "count": {"op": "eq", "value": expected}}
        return evaluate(rule(data), person, CTX)

    assert count_is(
        1, {"field": "total", "op": "gt", "value": 100}, {"field": "coupon", "op": "eq", "value": "SPRING"}
    )
    assert count_is(2, {"field": "coupon", "op": "eq", "value": "SPRING"})
    assert count_is(1, {"field": "coupon", "op": "neq", "value": "SPRING"})  # the order without any coupon
    assert count_is(2, {"field": "shipping_country", "op": "eq", "value": "DE"})
    assert count_is(1, {"field": "discount", "op": "exists"})
    assert count_is(2, {"field": "discount", "op": "neq", "value": 10})  # null discounts are "not 10"
    assert count_is(0, {"field": "status", "op": "eq", "value": "cancelled"})


# --- engagement ---------------------------------------------------------------------------------


def test_engagement_by_action_flow_and_channel_in_a_window() -> None:
    person = customer(
        events=(
            event("Message Opened", 2, flow_id="welcome", channel="email"),
            event("Message Clicked", 40, flow_id="winback", channel="sms"),
            event("Message Delivered", 2, flow_id="welcome", channel="email"),
        )
    )
    month = {"type": "last", "amount": 30}
    assert evaluate(rule({"type": "engagement", "action": "opened", "period": month}), person, CTX) is True
    assert evaluate(rule({"type": "engagement", "action": "clicked", "period": month}), person, CTX) is False
    assert (
        evaluate(rule({"type": "engagement", "action": "clicked", "flow_id": "winback"}), person, CTX) is True
    )
    assert (
        evaluate(rule({"type": "engagement", "action": "received", "channel": "sms"}), person, CTX) is False
    )
    received = {"type": "engagement", "action": "received", "flow_id": "welcome", "channel": "email"}
    assert evaluate(rule(received), person, CTX) is True


def test_not_engaged_for_looks_at_opens_and_clicks_only() -> None:
    opened_long_ago = customer(events=(event("Message Opened", 100), event("Message Delivered", 1)))
    clicked_lately = customer(events=(event("Message Clicked", 10),))
    never = customer()
    quiet = rule({"type": "not_engaged_for", "days": 90})
    assert [evaluate(quiet, c, CTX) for c in (opened_long_ago, clicked_lately, never)] == [True, False, True]


def test_unsubscribed_from_one_channel_or_any() -> None:
    person = customer(email_consent="subscribed", sms_consent="unsubscribed")
    assert evaluate(rule({"type": "unsubscribed"}), person, CTX) is True
    assert evaluate(rule({"type": "unsubscribed", "channel": "sms"}), person, CTX) is True
    assert evaluate(rule({"type": "unsubscribed", "channel": "email"}), person, CTX) is False
    assert evaluate(rule({"type": "unsubscribed"}), customer(), CTX) is False


# --- attributes ---------------------------------------------------------------------------------


def test_text_fields_equal_exactly_and_contain_case_insensitively() -> None:
    person = customer(email="Ann@Example.com", city="Paris")
    assert (
        evaluate(rule({"type": "attribute", "field": "city", "op": "eq", "value": "Paris"}), person, CTX)
        is True
    )
    assert (
        evaluate(rule({"type": "attribute", "field": "city", "op": "eq", "value": "paris"}), person, CTX)
        is False
    )
    contains = {"type": "attribute", "field": "email", "op": "contains", "value": "@example.COM"}
    assert evaluate(rule(contains), person, CTX) is True
    starts = {"type": "attribute", "field": "email", "op": "starts_with", "value": "ann"}
    assert evaluate(rule(starts), person, CTX) is True
    in_list = {"type": "attribute", "field": "city", "op": "in", "value": ["Lyon", "Paris"]}
    assert evaluate(rule(in_list), person, CTX) is True


def test_a_customer_without_a_city_is_not_in_paris() -> None:
    nowhere = customer()
    for op, value, expected in [
        ("eq", "Paris", False),
        ("neq", "Paris", True),
        ("in", ["Paris"], False),
        ("not_in", ["Paris"], True),
        ("contains", "a", False),
        ("not_contains", "a", True),
        ("exists", None, False),
        ("not_exists", None, True),
    ]:
        data = {"type": "attribute", "field": "city", "op": op}
        if value is not None:
            data["value"] = value
        assert evaluate(rule(data), nowhere, CTX) is expected, op


def test_numeric_fields_compare_as_numbers() -> None:
    person = customer(orders_count=3, average_order_value=Decimal("49.90"))
    assert (
        evaluate(rule({"type": "attribute", "field": "orders_count", "op": "gte", "value": 3}), person, CTX)
        is True
    )
    aov = {"type": "attribute", "field": "average_order_value", "op": "lt", "value": 50}
    assert evaluate(rule(aov), person, CTX) is True
    assert evaluate(rule(aov), customer(), CTX) is False  # no average without orders


def test_date_fields_by_local_day_and_relative_days() -> None:
    # given a customer created on 15 February at 23:30 UTC (16 February in Berlin)
    person = customer(created_at=datetime(2026, 2, 15, 23, 30, tzinfo=UTC))
    berlin = EvalContext(now=NOW, timezone="Europe/Berlin")

    def created(op: str, value: Any, ctx: EvalContext = CTX) -> bool:
        return evaluate(
            rule({"type": "attribute", "field": "created_at", "op": op, "value": value}), person, ctx
        )

    # then an ISO date stands for that whole day in the store's timezone
    assert created("eq", "2026-02-15") is True
    assert created("eq", "2026-02-15", berlin) is False
    assert created("gt", "2026-02-15") is False
    assert created("gt", "2026-02-15", berlin) is True
    assert created("gte", "2026-02-15") is True
    assert created("lt", "2026-02-16") is True
    assert created("lte", "2026-02-15") is True
    assert created("lt", "2026-02-15T23:30:00+00:00") is False
    assert created("lte", "2026-02-15T23:30:00+00:00") is True
    # and relative days are measured back from now (14 days 9.5 hours ago)
    assert created("within_last_days", 15) is True
    assert created("within_last_days", 14) is False
    assert created("more_than_days_ago", 14) is True


def test_custom_properties_compare_like_event_properties() -> None:
    person = customer(properties={"plan": "gold", "seats": 12, "renews_on": "2026-03-20"})

    def prop(name: str, op: str, value: Any = None) -> bool:
        data: dict[str, Any] = {"type": "attribute", "property": name, "op": op}
        if value is not None:
            data["value"] = value
        return evaluate(rule(data), person, CTX)

    assert prop("plan", "in", ["gold", "silver"]) is True
    assert prop("seats", "gt", 10) is True
    assert prop("seats", "eq", "12") is False
    assert prop("renews_on", "gte", "2026-03-01") is True
    assert prop("missing", "not_exists") is True
    assert prop("missing", "neq", "gold") is True
    assert prop("renews_on", "within_last_days", 30) is True  # a future date is within the window


def test_tags_contact_and_consent() -> None:
    person = customer(tags=["vip", "wholesale"], email="a@example.com", sms_consent="subscribed")
    assert evaluate(rule({"type": "tag", "tag": "vip"}), person, CTX) is True
    assert evaluate(rule({"type": "tag", "tag": "VIP"}), person, CTX) is False  # tags are exact
    assert evaluate(rule({"type": "tag", "tag": "retail", "present": False}), person, CTX) is True
    assert evaluate(rule({"type": "has_contact", "channel": "email"}), person, CTX) is True
    assert evaluate(rule({"type": "has_contact", "channel": "phone", "present": False}), person, CTX) is True
    assert evaluate(rule({"type": "consent", "channel": "sms", "status": "subscribed"}), person, CTX) is True
    assert evaluate(rule({"type": "consent", "channel": "email", "status": "none"}), person, CTX) is True
    assert (
        evaluate(rule({"type": "consent", "channel": "push", "status": "unsubscribed"}), person, CTX) is False
    )


def test_location_country_upper_case_and_zip_prefix() -> None:
    person = customer(country="DE", zip="10115", city="Berlin")
    assert evaluate(rule({"type": "location", "field": "country", "value": "de"}), person, CTX) is True
    assert evaluate(rule({"type": "location", "field": "zip_prefix", "value": "101"}), person, CTX) is True
    assert evaluate(rule({"type": "location", "field": "zip_prefix", "value": "102"}), person, CTX) is False
    not_in = {"type": "location", "field": "city", "op": "not_in", "value": ["Munich", "Hamburg"]}
    assert evaluate(rule(not_in), person, CTX) is True
    assert (
        evaluate(rule({"type": "location", "field": "region", "op": "neq", "value": "BE"}), customer(), CTX)
        is True
    )


# --- birthdays ----------------------------------------------------------------------------------


def test_birthday_within_next_days_across_the_month_end() -> None:
    # given "now" is 30 April
    ctx = EvalContext(now=datetime(2026, 4, 30, 12, 0, tzinfo=UTC))
    soon = rule({"type": "birthday", "within_next_days": 3})
    # then birthdays from 30 April to 3 May are in, 4 May is not, nor is a missing one
    assert evaluate(soon, customer(birthday=date(1990, 4, 30)), ctx) is True
    assert evaluate(soon, customer(birthday=date(1985, 5, 3)), ctx) is True
    assert evaluate(soon, customer(birthday=date(1985, 5, 4)), ctx) is False
    assert evaluate(soon, customer(), ctx) is False


def test_birthday_on_29_february_is_celebrated_on_28_february_in_other_years() -> None:
    leapling = customer(birthday=date(2000, 2, 29))
    today = rule({"type": "birthday", "within_next_days": 0})
    assert evaluate(today, leapling, EvalContext(now=datetime(2027, 2, 28, 12, tzinfo=UTC))) is True
    assert evaluate(today, leapling, EvalContext(now=datetime(2028, 2, 28, 12, tzinfo=UTC))) is False
    assert evaluate(today, leapling, EvalContext(now=datetime(2028, 2, 29, 12, tzinfo=UTC))) is True


def test_birthday_today_is_the_store_local_day() -> None:
    # given 23:30 UTC on 1 March, already 2 March in Tokyo
    ctx = EvalContext(now=datetime(2026, 3, 1, 23, 30, tzinfo=UTC), timezone="Asia/Tokyo")
    assert (
        evaluate(rule({"type": "birthday", "within_next_days": 0}), customer(birthday=date(1990, 3, 2)), ctx)
        is True
    )


def test_birthday_month_and_day_form() -> None:
    person = customer(birthday=date(1990, 7, 14))
    assert evaluate(rule({"type": "birthday", "month": 7}), person, CTX) is True
    assert evaluate(rule({"type": "birthday", "month": 7, "day": 14}), person, CTX) is True
    assert evaluate(rule({"type": "birthday", "month": 7, "day": 15}), person, CTX) is False


# --- needs --------------------------------------------------------------------------------------


def test_needs_names_events_with_the_earliest_time_and_only_the_tables_read() -> None:
    tree = rule(
        {
            "type": "all",
            "rules": [
                {"type": "event", "event": "Product Viewed", "period": {"type": "last", "amount": 7}},
                {
                    "type": "not",
                    "rule": {
                        "type": "event",
                        "event": "Product Viewed",
                        "period": {"type": "last", "amount": 30},
                    },
                },
                {"type": "event", "event": "Products Searched"},
                {"type": "not_engaged_for", "days": 90},
                {"type": "money_spent", "compare": {"op": "gte", "value": 500}},
                {"type": "segment", "segment_id": 4},
            ],
        }
    )
    assert needs(tree, CTX) == FactNeeds(
        events={
            "Product Viewed": NOW - timedelta(days=30),
            "Products Searched": None,
            "Message Opened": NOW - timedelta(days=90),
            "Message Clicked": NOW - timedelta(days=90),
        },
        segment_ids=frozenset({4}),
    )


def test_needs_orders_since_the_earliest_period_and_lines_only_for_products() -> None:
    recent = rule({"type": "placed_order", "period": {"type": "last", "amount": 7}})
    assert needs(recent, CTX) == FactNeeds(orders=True, orders_since=NOW - timedelta(days=7))
    products = rule(
        {
            "type": "any",
            "rules": [
                {"type": "placed_order", "period": {"type": "last", "amount": 7}},
                {"type": "ordered_product", "product_id": "p1"},
                {"type": "abandoned_checkout"},
                {"type": "list", "list_id": 2},
            ],
        }
    )
    assert needs(products, CTX) == FactNeeds(
        orders=True, orders_since=None, order_lines=True, checkouts=True, list_ids=frozenset({2})
    )
