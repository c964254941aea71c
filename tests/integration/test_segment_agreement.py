"""Property tests: the SQL compiler and the in-memory evaluator choose the same customers.

Hypothesis generates small random stores — customers with random aggregates, attributes, tags and
consent; orders with lines; events with properties of every JSON kind; checkouts; catalog
collections; list and segment memberships — at a random moment in a random store timezone, and
random rule trees over every rule kind (nested all/any/not). Timestamps are drawn from the exact
period boundaries as well as at random, so off-by-one-instant differences show. Each example is
written inside one transaction that is rolled back, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, insert
from sqlalchemy.orm import Session

from winback.db.models import (
    Checkout,
    Customer,
    CustomerList,
    Event,
    ListMembership,
    Order,
    OrderLine,
    Product,
    Segment,
    SegmentMembership,
)
from winback.segments import compiler, evaluator, facts, periods, rules

# --- vocabularies (small, so generated rules and data meet often) ----------------------------

MOMENTS = [
    datetime(2026, 3, 2, 9, 0, tzinfo=UTC),  # the test clock: a Monday morning
    datetime(2026, 3, 8, 6, 30, tzinfo=UTC),  # US daylight saving starts that day
    datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # EU daylight saving ends that night
    datetime(2028, 2, 29, 23, 30, tzinfo=UTC),  # a leap day, already 1 March east of UTC
    datetime(2027, 1, 1, 0, 15, tzinfo=UTC),  # just after New Year in UTC, still 2026 in New York
]
TIMEZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Pacific/Auckland"]
PERIODS: list[dict[str, Any]] = [
    {"type": "last", "amount": 1, "unit": "days"},
    {"type": "last", "amount": 7, "unit": "days"},
    {"type": "last", "amount": 30, "unit": "days"},
    {"type": "last", "amount": 2, "unit": "hours"},
    {"type": "last", "amount": 1, "unit": "weeks"},
    {"type": "last", "amount": 1, "unit": "months"},
    {"type": "last", "amount": 1, "unit": "years"},
    {"type": "today"},
    {"type": "yesterday"},
    {"type": "this_week"},
    {"type": "last_week"},
    {"type": "this_month"},
    {"type": "last_month"},
]
DAY_COUNTS = [1, 7, 30, 90]
MONEY = ["0", "0.10", "0.20", "0.30", "9.99", "70", "99.99", "100", "500", "500.01"]
PRODUCTS = {"p1": ["dog-food", "summer"], "p2": ["shoes"]}  # p3 is not in the catalog
PRODUCT_IDS = ["p1", "p2", "p3"]
VARIANTS = {"p1": ["p1-a", "p1-b"], "p2": ["p2-a"], "p3": ["p3-a"]}
CATEGORIES = [None, "Shoes", "dog-food", "summer"]
COLLECTIONS = ["dog-food", "summer", "shoes", "Shoes"]
EVENT_NAMES = [
    "Product Viewed",
    "Products Searched",
    "Message Opened",
    "Message Clicked",
    "Message Delivered",
]
SCALARS: list[Any] = [
    "X",
    "x",
    "boots",
    "Boots",
    "10",
    "50%_off",
    "_",
    "%",
    "gold",
    "2026-03-01",
    10,
    10.5,
    5,
    0,
    True,
    False,
]
PROPERTY_VALUES: dict[str, list[Any]] = {
    "product_id": ["X", "x", "Y", 10],
    "price": [5, 10, 10.0, 10.5, 20, "10"],
    "query": ["Red Boots", "boots", "50%_off", "50 off", "Sandals"],
    "in_stock": [True, False],
    "flow_id": ["welcome", "winback", 7],
    "channel": ["email", "sms", "push"],
    "odd key.with dots": ["X", "gold"],
    "mixed": ["10", 10, True, None, ["X"], {"a": 1}],
}
PROFILE_PROPERTY_VALUES: dict[str, list[Any]] = {
    "plan": ["gold", "Gold", "silver"],
    "seats": [0, 5, 10, 10.5],
    "renews_on": ["2026-03-01", "2026-02-20", "2027-01-01T00:00:00+00:00", "soon"],
    "mixed": ["10", 10, False, None, ["gold"]],
    "a.b": ["X", 10],
}
TEXT_VALUES: dict[str, list[str | None]] = {
    "user_id": [None, "u1", "U1"],
    "email": [None, "ann@example.com", "Bob@Example.org"],
    "phone": [None, "+4915112345678"],
    "first_name": [None, "Ann", "ann"],
    "last_name": [None, "Lee"],
    "gender": [None, "female", "male"],
    "locale": [None, "de-DE", "en-US"],
    "timezone": [None, "Europe/Berlin"],
    "city": [None, "Paris", "paris", "Berlin"],
    "region": [None, "BE", "NY"],
    "zip": [None, "10115", "1011", "SW1A 1AA", "sw1a 2aa"],
    "country": [None, "DE", "FR", "GB"],
}
TIME_FIELDS = ["created_at", "first_seen_at", "last_seen_at", "first_order_at", "last_order_at"]
NUMBER_FIELDS = ["orders_count", "total_spent", "average_order_value"]
LIST_IDS = [1, 2]
RULES_PER_STORE = 8
SEGMENT_IDS = [1, 2]


@dataclass(frozen=True)
class Scenario:
    now: datetime
    timezone: str
    tables: dict[Any, list[dict[str, Any]]]  # model class → rows, in insertion order
    rules: tuple[Any, ...]  # several rules per store: the database work is shared

    @property
    def ctx(self) -> evaluator.EvalContext:
        return evaluator.EvalContext(now=self.now, timezone=self.timezone)

    @property
    def customer_ids(self) -> list[int]:
        return [row["id"] for row in self.tables[Customer]]


# --- data ---------------------------------------------------------------------------------------


def boundaries(now: datetime, timezone: str) -> list[datetime]:
    """Every instant where a generated rule's answer can flip, so data lands exactly on them."""
    found = {now, now - timedelta(microseconds=1)}
    for data in PERIODS:
        period = rules.parse_definition({"type": "placed_order", "period": data}).rule.period
        start, end = periods.resolve(period, now, timezone)
        found |= {start, end, start - timedelta(seconds=1)}
    for days in DAY_COUNTS:
        found |= {now - timedelta(days=days), now - timedelta(days=days, seconds=1)}
    return sorted(found)


def rule_boundaries(trees: tuple[Any, ...], now: datetime, timezone: str) -> list[datetime]:
    """The instants where these rules' answers flip, and the microsecond before each."""
    found: set[datetime] = set()
    for node in (node for tree in trees for node in rules.walk(tree)):
        if getattr(node, "period", None) is not None:
            found.update(periods.resolve(node.period, now, timezone))
        days = getattr(node, "days", None)
        if isinstance(node, rules.AttributeRule) and node.op in ("within_last_days", "more_than_days_ago"):
            days = node.value
        if isinstance(days, int):
            found.add(now - timedelta(days=days))
    return sorted(found | {moment - timedelta(microseconds=1) for moment in found})


@st.composite
def moments(draw: st.DrawFn, now: datetime, timezone: str, critical: tuple[datetime, ...] = ()) -> datetime:
    """A random instant: on a boundary of the rules at hand, of any rule, or anywhere near now."""
    choice = draw(st.integers(0, 3))
    if choice <= 1 and critical:
        return draw(st.sampled_from(critical))
    if choice <= 2:
        return draw(st.sampled_from(boundaries(now, timezone)))
    return now + timedelta(minutes=draw(st.integers(-400 * 24 * 60, 2 * 24 * 60)))


def local_day(now: datetime, timezone: str, offset_days: int) -> date:
    return now.astimezone(ZoneInfo(timezone)).date() + timedelta(days=offset_days)


@st.composite
def birthdays(draw: st.DrawFn, now: datetime, timezone: str) -> date | None:
    kind = draw(st.sampled_from(["none", "near", "leap", "any"]))
    if kind == "none":
        return None
    if kind == "leap":
        return date(1992, 2, 29)
    if kind == "any":
        return draw(st.dates(date(1950, 1, 1), date(2010, 12, 31)))
    near = local_day(now, timezone, draw(st.integers(-2, 10)))
    year = draw(st.sampled_from([1980, 1991, 2000]))
    if near.month == 2 and near.day == 29:
        year = 2000
    return near.replace(year=year)


def money(draw: st.DrawFn) -> Decimal:
    return Decimal(draw(st.sampled_from(MONEY)))


@st.composite
def customer_rows(
    draw: st.DrawFn, customer_id: int, now: datetime, timezone: str, critical: tuple[datetime, ...]
) -> dict[str, Any]:
    when = moments(now, timezone, critical)
    row: dict[str, Any] = {field: draw(st.sampled_from(values)) for field, values in TEXT_VALUES.items()}
    if row["user_id"] is not None:
        row["user_id"] = f"{row['user_id']}-{customer_id}"  # unique per customer
    ever_ordered = draw(st.booleans())
    row.update(
        id=customer_id,
        birthday=draw(birthdays(now, timezone)),
        tags=draw(st.lists(st.sampled_from(["vip", "VIP", "wholesale"]), max_size=2, unique=True)),
        properties={
            key: draw(st.sampled_from(values))
            for key, values in PROFILE_PROPERTY_VALUES.items()
            if draw(st.booleans())
        },
        email_consent=draw(st.sampled_from([None, "subscribed", "unsubscribed"])),
        sms_consent=draw(st.sampled_from([None, "subscribed", "unsubscribed"])),
        push_consent=draw(st.sampled_from([None, "subscribed", "unsubscribed"])),
        orders_count=draw(st.integers(0, 6)),
        total_spent=money(draw),
        total_refunded=Decimal(0),
        average_order_value=money(draw) if ever_ordered else None,
        first_order_at=draw(when) if ever_ordered else None,
        last_order_at=draw(when) if ever_ordered else None,
        first_seen_at=draw(when),
        last_seen_at=draw(when),
        created_at=draw(when),
        updated_at=now,
        merged_into_id=draw(st.sampled_from([None, None, None, 1])),
        erased_at=draw(st.sampled_from([None, None, None, now])),
    )
    return row


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    now = draw(st.sampled_from(MOMENTS))
    timezone = draw(st.sampled_from(TIMEZONES))
    trees = draw(st.lists(rule_trees(now, timezone), min_size=RULES_PER_STORE, max_size=RULES_PER_STORE))
    parsed = tuple(rules.parse_definition(tree).rule for tree in trees)
    critical = tuple(rule_boundaries(parsed, now, timezone))
    when = moments(now, timezone, critical)
    tables: dict[Any, list[dict[str, Any]]] = {
        model: []
        for model in (
            Product, CustomerList, Segment, Customer, Order, OrderLine, Event, Checkout,
            ListMembership, SegmentMembership,
        )
    }  # fmt: skip
    tables[Product] = [
        {"product_id": product_id, "collections": collections, "created_at": now, "updated_at": now}
        for product_id, collections in PRODUCTS.items()
    ]
    tables[CustomerList] = [
        {"id": list_id, "name": f"list {list_id}", "created_at": now, "updated_at": now}
        for list_id in LIST_IDS
    ]
    tables[Segment] = [
        {
            "id": segment_id,
            "name": f"segment {segment_id}",
            "definition": {"schema_version": 1, "rule": {"type": "tag", "tag": "vip"}},
            "created_at": now,
            "updated_at": now,
        }
        for segment_id in SEGMENT_IDS
    ]
    order_pk = line_pk = event_pk = checkout_pk = 0
    for customer_id in range(1, draw(st.integers(2, 6)) + 1):
        tables[Customer].append(draw(customer_rows(customer_id, now, timezone, critical)))
        for _ in range(draw(st.integers(0, 3))):
            order_pk += 1
            tables[Order].append(
                {
                    "id": order_pk,
                    "order_id": f"o{order_pk}",
                    "customer_id": customer_id,
                    "status": draw(
                        st.sampled_from(["paid", "placed", "cancelled", "refunded", "partially_refunded"])
                    ),
                    "total": money(draw),
                    "refunded_total": Decimal(draw(st.sampled_from(["0", "0", "0.10", "30"]))),
                    "discount": draw(st.sampled_from([None, Decimal("0"), Decimal("10")])),
                    "coupons": draw(
                        st.lists(st.sampled_from(["SPRING", "spring", "50%OFF"]), max_size=2, unique=True)
                    ),
                    "currency": draw(st.sampled_from([None, "EUR", "USD"])),
                    "shipping_country": draw(st.sampled_from([None, "DE", "FR"])),
                    "shipping_region": draw(st.sampled_from([None, "BE"])),
                    "shipping_city": draw(st.sampled_from([None, "Berlin", "berlin"])),
                    "properties": {},
                    "placed_at": draw(when),
                    "updated_at": now,
                }
            )
            for _ in range(draw(st.integers(0, 2))):
                line_pk += 1
                product_id = draw(st.sampled_from([*PRODUCT_IDS, None]))
                variant = draw(st.sampled_from([None, *VARIANTS[product_id]])) if product_id else None
                tables[OrderLine].append(
                    {
                        "id": line_pk,
                        "order_pk": order_pk,
                        "customer_id": customer_id,
                        "product_id": product_id,
                        "variant_id": variant,
                        "category": draw(st.sampled_from(CATEGORIES)),
                        "quantity": 1,
                    }
                )
        for _ in range(draw(st.integers(0, 4))):
            event_pk += 1
            keys = draw(st.lists(st.sampled_from(list(PROPERTY_VALUES)), max_size=3, unique=True))
            tables[Event].append(
                {
                    "id": event_pk,
                    "message_id": f"m{event_pk}",
                    "source": "segment",
                    "type": "track",
                    "event": draw(st.sampled_from(EVENT_NAMES)),
                    "properties": {key: draw(st.sampled_from(PROPERTY_VALUES[key])) for key in keys},
                    "traits": {},
                    "context": {},
                    "timestamp": draw(when),
                    "received_at": now,
                    "customer_id": customer_id,
                    "processed_at": now,
                }
            )
        for _ in range(draw(st.integers(0, 2))):
            checkout_pk += 1
            tables[Checkout].append(
                {
                    "id": checkout_pk,
                    "kind": draw(st.sampled_from(["cart", "checkout"])),
                    "external_id": f"c{checkout_pk}",
                    "customer_id": customer_id,
                    "status": "abandoned",
                    "value": money(draw),
                    "items": [],
                    "created_at": now,
                    "updated_at": now,
                    "last_activity_at": now,
                    "abandoned_at": draw(st.one_of(st.none(), when)),
                }
            )
        for list_id in draw(st.lists(st.sampled_from(LIST_IDS), unique=True)):
            tables[ListMembership].append(
                {"list_id": list_id, "customer_id": customer_id, "added_at": now, "source": "api"}
            )
        for segment_id in draw(st.lists(st.sampled_from(SEGMENT_IDS), unique=True)):
            tables[SegmentMembership].append(
                {"segment_id": segment_id, "customer_id": customer_id, "entered_at": now}
            )
    return Scenario(now=now, timezone=timezone, tables=tables, rules=parsed)


# --- rules --------------------------------------------------------------------------------------


def optional_period(now: datetime, timezone: str) -> st.SearchStrategy[dict[str, Any] | None]:
    return st.one_of(st.none(), period(now, timezone))


def period(now: datetime, timezone: str) -> st.SearchStrategy[dict[str, Any]]:
    days = st.integers(-40, 1).map(lambda offset: local_day(now, timezone, offset).isoformat())
    between = st.tuples(days, days).map(
        lambda pair: {"type": "between", "start": min(pair), "end": max(pair)}
    )
    return st.one_of(st.sampled_from(PERIODS), days.map(lambda day: {"type": "on", "date": day}), between)


def compare(values: list[Any]) -> st.SearchStrategy[dict[str, Any]]:
    single = st.builds(
        lambda op, value: {"op": op, "value": value},
        st.sampled_from(["eq", "neq", "gt", "gte", "lt", "lte"]),
        st.sampled_from(values),
    )
    between = st.tuples(st.sampled_from(values), st.sampled_from(values)).map(
        lambda pair: {"op": "between", "value": min(pair, key=Decimal), "to": max(pair, key=Decimal)}
    )
    return st.one_of(single, between)


COUNTS = [0, 1, 2, 3]


def with_period(data: dict[str, Any], chosen: dict[str, Any] | None) -> dict[str, Any]:
    return data if chosen is None else {**data, "period": chosen}


def filter_value(op: str, values: list[Any]) -> st.SearchStrategy[Any]:
    if op in ("exists", "not_exists"):
        return st.none()
    if op in ("in", "not_in"):
        return st.lists(st.sampled_from(values), min_size=1, max_size=3)
    if op in ("gt", "gte", "lt", "lte"):
        return st.sampled_from([v for v in values if not isinstance(v, bool)])
    return st.sampled_from(values)


FILTER_OPS = list(rules.FilterOp.__args__)  # type: ignore[attr-defined]


@st.composite
def property_filters(draw: st.DrawFn, keys: dict[str, list[Any]]) -> dict[str, Any]:
    key = draw(st.sampled_from(list(keys)))
    op = draw(st.sampled_from(FILTER_OPS))
    scalars = [v for v in keys[key] if isinstance(v, str | int | float)] + SCALARS
    value = draw(filter_value(op, scalars))
    return {"property": key, "op": op} if value is None else {"property": key, "op": op, "value": value}


@st.composite
def order_filters(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from(list(rules.OrderField.__args__)))  # type: ignore[attr-defined]
    op = draw(st.sampled_from(FILTER_OPS))
    values: list[Any] = {
        "total": [0, 9.99, 70, 100, 500],
        "discount": [0, 10],
        "coupon": ["SPRING", "spring", "50%OFF", "%", "_"],
        "shipping_country": ["DE", "FR", "de"],
        "shipping_region": ["BE"],
        "shipping_city": ["Berlin", "berlin"],
        "currency": ["EUR", "USD"],
        "status": ["paid", "placed", "cancelled", "refunded"],
    }[field]
    value = draw(filter_value(op, values))
    return {"field": field, "op": op} if value is None else {"field": field, "op": op, "value": value}


@st.composite
def attribute_rules(draw: st.DrawFn, now: datetime, timezone: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "number", "time", "property"]))
    if kind == "property":
        found = draw(property_filters(PROFILE_PROPERTY_VALUES))
        if found["property"] == "renews_on" and draw(st.booleans()):
            op = draw(st.sampled_from(["within_last_days", "more_than_days_ago"]))
            return {
                "type": "attribute",
                "property": "renews_on",
                "op": op,
                "value": draw(st.sampled_from(DAY_COUNTS)),
            }
        return {"type": "attribute", **found}
    if kind == "time":
        field = draw(st.sampled_from(TIME_FIELDS))
        op = draw(
            st.sampled_from(
                [
                    "gt",
                    "gte",
                    "lt",
                    "lte",
                    "eq",
                    "neq",
                    "exists",
                    "not_exists",
                    "within_last_days",
                    "more_than_days_ago",
                    "in",
                ]
            )
        )
        if op in ("within_last_days", "more_than_days_ago"):
            return {
                "type": "attribute",
                "field": field,
                "op": op,
                "value": draw(st.sampled_from([0, *DAY_COUNTS])),
            }
        days = [local_day(now, timezone, offset).isoformat() for offset in (-400, -90, -30, -7, -1, 0, 1)]
        instants = [
            moment.isoformat()
            for moment in boundaries(now, timezone)[:: max(1, len(boundaries(now, timezone)) // 6)]
        ]
        value = draw(filter_value(op, days + instants))
    elif kind == "number":
        field = draw(st.sampled_from(NUMBER_FIELDS))
        op = draw(
            st.sampled_from(["eq", "neq", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "not_exists"])
        )
        value = draw(filter_value(op, [0, 1, 3, 0.3, 70, 99.99, 100, 500]))
    else:
        field = draw(st.sampled_from(list(TEXT_VALUES)))
        op = draw(st.sampled_from(FILTER_OPS))
        texts = [v for v in TEXT_VALUES[field] if v is not None] + ["a", "%", "_", "SW1A"]
        value = draw(filter_value(op, texts))
    return {"type": "attribute", "field": field, "op": op} | ({} if value is None else {"value": value})


@st.composite
def leaf_rules(draw: st.DrawFn, now: datetime, timezone: str) -> dict[str, Any]:  # noqa: PLR0911
    kind = draw(
        st.sampled_from(
            [
                "segment", "list", "money_spent", "order_count", "placed_order", "not_ordered_for",
                "ordered_product", "ordered_from_collection", "abandoned_checkout", "event",
                "orders_matching", "attribute", "tag", "has_contact", "consent", "birthday", "location",
                "engagement", "not_engaged_for", "unsubscribed",
            ]
        )
    )  # fmt: skip
    chosen_period = draw(optional_period(now, timezone))
    if kind == "segment":
        return {
            "type": "segment",
            "segment_id": draw(st.sampled_from(SEGMENT_IDS)),
            "member": draw(st.booleans()),
        }
    if kind == "list":
        return {"type": "list", "list_id": draw(st.sampled_from(LIST_IDS)), "member": draw(st.booleans())}
    if kind == "money_spent":
        return with_period({"type": "money_spent", "compare": draw(compare(MONEY))}, chosen_period)
    if kind == "order_count":
        return with_period({"type": "order_count", "compare": draw(compare(COUNTS))}, chosen_period)
    if kind == "placed_order":
        return {"type": "placed_order", "period": draw(period(now, timezone)), "placed": draw(st.booleans())}
    if kind == "not_ordered_for":
        return {
            "type": "not_ordered_for",
            "days": draw(st.sampled_from(DAY_COUNTS)),
            "include_never_ordered": draw(st.booleans()),
        }
    if kind == "ordered_product":
        product_id = draw(st.sampled_from(PRODUCT_IDS))
        data: dict[str, Any] = {"type": "ordered_product", "product_id": product_id}
        if draw(st.booleans()):
            data["variant_id"] = draw(st.sampled_from(VARIANTS[product_id]))
        return with_period(data, chosen_period)
    if kind == "ordered_from_collection":
        collection = draw(st.sampled_from(COLLECTIONS))
        return with_period({"type": "ordered_from_collection", "collection": collection}, chosen_period)
    if kind == "abandoned_checkout":
        data = {"type": "abandoned_checkout"}
        if draw(st.booleans()):
            data["min_value"] = draw(st.sampled_from(MONEY))
        return with_period(data, chosen_period)
    if kind == "event":
        data = {
            "type": "event",
            "event": draw(st.sampled_from(EVENT_NAMES)),
            "where": draw(st.lists(property_filters(PROPERTY_VALUES), max_size=2)),
            "count": draw(compare(COUNTS)),
        }
        return with_period(data, chosen_period)
    if kind == "orders_matching":
        data = {
            "type": "orders_matching",
            "where": draw(st.lists(order_filters(), min_size=1, max_size=2)),
            "count": draw(compare(COUNTS)),
        }
        return with_period(data, chosen_period)
    if kind == "attribute":
        return draw(attribute_rules(now, timezone))
    if kind == "tag":
        return {
            "type": "tag",
            "tag": draw(st.sampled_from(["vip", "VIP", "wholesale"])),
            "present": draw(st.booleans()),
        }
    if kind == "has_contact":
        return {
            "type": "has_contact",
            "channel": draw(st.sampled_from(["email", "phone"])),
            "present": draw(st.booleans()),
        }
    if kind == "consent":
        return {
            "type": "consent",
            "channel": draw(st.sampled_from(["email", "sms", "push"])),
            "status": draw(st.sampled_from(["subscribed", "unsubscribed", "none"])),
        }
    if kind == "birthday":
        if draw(st.booleans()):
            return {"type": "birthday", "within_next_days": draw(st.sampled_from([0, 1, 3, 7, 30]))}
        day = local_day(now, timezone, draw(st.integers(0, 5)))
        return {"type": "birthday", "month": day.month} | ({"day": day.day} if draw(st.booleans()) else {})
    if kind == "location":
        field = draw(st.sampled_from(["country", "region", "city", "zip_prefix"]))
        values = {
            "country": ["DE", "de", "FR", "gb"],
            "region": ["BE", "NY", "be"],
            "city": ["Paris", "paris", "Berlin"],
            "zip_prefix": ["101", "1011", "sw1a", "SW1A 1", "%"],
        }[field]
        op = draw(st.sampled_from(["eq", "neq", "in", "not_in"]))
        if op in ("in", "not_in"):
            value: Any = draw(st.lists(st.sampled_from(values), min_size=1, max_size=2))
        else:
            value = draw(st.sampled_from(values))
        return {"type": "location", "field": field, "op": op, "value": value}
    if kind == "engagement":
        data = {
            "type": "engagement",
            "action": draw(st.sampled_from(["received", "opened", "clicked"])),
            "count": draw(compare(COUNTS)),
        }
        if draw(st.booleans()):
            data["flow_id"] = draw(st.sampled_from(["welcome", "winback", "7"]))
        if draw(st.booleans()):
            data["channel"] = draw(st.sampled_from(["email", "sms", "push"]))
        return with_period(data, chosen_period)
    if kind == "not_engaged_for":
        return {"type": "not_engaged_for", "days": draw(st.sampled_from(DAY_COUNTS))}
    return {"type": "unsubscribed"} | (
        {"channel": draw(st.sampled_from(["email", "sms", "push"]))} if draw(st.booleans()) else {}
    )


def rule_trees(now: datetime, timezone: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.recursive(
        leaf_rules(now, timezone),
        lambda inner: st.one_of(
            st.lists(inner, min_size=1, max_size=3).map(lambda found: {"type": "all", "rules": found}),
            st.lists(inner, min_size=1, max_size=3).map(lambda found: {"type": "any", "rules": found}),
            inner.map(lambda found: {"type": "not", "rule": found}),
        ),
        max_leaves=5,
    )


# --- the database side ----------------------------------------------------------------------------


@contextmanager
def stored(engine: Engine, scenario: Scenario) -> Iterator[Session]:
    """A session over the scenario's rows, inside a transaction rolled back afterwards."""
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            _insert(connection, scenario)
            with Session(bind=connection) as session:
                yield session
        finally:
            transaction.rollback()


def _insert(connection: Connection, scenario: Scenario) -> None:
    for model, rows in scenario.tables.items():
        if rows:
            connection.execute(insert(model), rows)


def facts_from_rows(scenario: Scenario) -> dict[int, evaluator.CustomerFacts]:
    """Every fact of every customer, built straight from the generated rows (no database)."""
    tables = scenario.tables
    collections = {row["product_id"]: tuple(row["collections"]) for row in tables[Product]}
    lines: dict[int, list[evaluator.LineFact]] = {}
    for line in tables[OrderLine]:
        lines.setdefault(line["order_pk"], []).append(
            evaluator.LineFact(
                product_id=line["product_id"],
                variant_id=line["variant_id"],
                category=line["category"],
                collections=collections.get(line["product_id"], ()),
            )
        )
    result = {}
    for customer in tables[Customer]:
        customer_id = customer["id"]
        result[customer_id] = evaluator.CustomerFacts(
            profile=customer,
            orders=tuple(
                evaluator.OrderFact(
                    order_id=row["order_id"],
                    status=row["status"],
                    total=row["total"],
                    refunded_total=row["refunded_total"],
                    placed_at=row["placed_at"],
                    discount=row["discount"],
                    coupons=tuple(row["coupons"]),
                    currency=row["currency"],
                    shipping_country=row["shipping_country"],
                    shipping_region=row["shipping_region"],
                    shipping_city=row["shipping_city"],
                    lines=tuple(lines.get(row["id"], ())),
                )
                for row in tables[Order]
                if row["customer_id"] == customer_id
            ),
            events=tuple(
                evaluator.EventFact(
                    event=row["event"], timestamp=row["timestamp"], properties=row["properties"]
                )
                for row in tables[Event]
                if row["customer_id"] == customer_id
            ),
            checkouts=tuple(
                evaluator.CheckoutFact(kind=row["kind"], abandoned_at=row["abandoned_at"], value=row["value"])
                for row in tables[Checkout]
                if row["customer_id"] == customer_id
            ),
            segment_ids=frozenset(
                row["segment_id"] for row in tables[SegmentMembership] if row["customer_id"] == customer_id
            ),
            list_ids=frozenset(
                row["list_id"] for row in tables[ListMembership] if row["customer_id"] == customer_id
            ),
        )
    return result


def evaluated_members(session: Session, scenario: Scenario, rule: Any) -> set[int]:
    """Members by the in-memory evaluator over facts loaded for exactly what the rule needs."""
    ctx = scenario.ctx
    loaded = facts.load_facts(session, scenario.customer_ids, evaluator.needs(rule, ctx), ctx)
    return evaluator.evaluate_many(rule, loaded.items(), ctx)


def describe(scenario: Scenario, rule: Any) -> str:
    return f"now={scenario.now.isoformat()} timezone={scenario.timezone}\nrule={rule!r}"


EXAMPLES = settings(
    # A deeper search when hunting: WINBACK_AGREEMENT_EXAMPLES=2000 pytest tests/integration/test_segment_agreement.py
    max_examples=int(os.environ.get("WINBACK_AGREEMENT_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@EXAMPLES
@given(scenario=scenarios())
def test_facts_loaded_for_a_rule_answer_as_all_facts_do(engine: Engine, scenario: Scenario) -> None:
    # given a random store in the database and random rules
    everything = facts_from_rows(scenario)
    with stored(engine, scenario) as session:
        for rule in scenario.rules:
            # when members are evaluated over facts loaded for only what the rule needs
            from_database = evaluated_members(session, scenario, rule)
            # then they are the members found over every fact of every customer
            expected = evaluator.evaluate_many(rule, everything.items(), scenario.ctx)
            assert from_database == expected, describe(scenario, rule)


@EXAMPLES
@given(scenario=scenarios())
def test_compiler_and_evaluator_choose_the_same_members(engine: Engine, scenario: Scenario) -> None:
    # given a random store in the database and random rules
    compile_context = compiler.CompileContext(
        now=scenario.now, timezone=scenario.timezone, dialect=engine.dialect.name
    )
    with stored(engine, scenario) as session:
        for rule in scenario.rules:
            # when the compiled query and the in-memory evaluator each choose the members
            compiled = set(session.execute(compiler.members_query(rule, compile_context)).scalars())
            evaluated = evaluated_members(session, scenario, rule)
            # then they choose the same customers
            assert compiled == evaluated, f"{describe(scenario, rule)}\nsql={compiled} evaluator={evaluated}"
