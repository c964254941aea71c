"""The segment SQL compiler: the SQL it prints for each rule kind, on both dialects.

The compiled SQL of every rule kind is kept in tests/unit/snapshots/segment_sql/, one file per
rule and dialect, so any change to the SQL shows as a diff in review. After an intended change,
regenerate them with `WINBACK_UPDATE_SNAPSHOTS=1 python -m pytest tests/unit/test_segment_compiler.py`
and read the diff.
"""

from __future__ import annotations

import json
import os
import typing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import psycopg
from sqlalchemy.engine import Dialect

from winback.segments import compiler, periods, rules

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SNAPSHOTS = Path(__file__).parent / "snapshots" / "segment_sql"
UPDATE = os.environ.get("WINBACK_UPDATE_SNAPSHOTS") == "1"
DIALECTS: dict[str, Dialect] = {"sqlite": sqlite.dialect(), "postgresql": psycopg.dialect()}
LAST_30 = {"type": "last", "amount": 30, "unit": "days"}

# One rule (or more, where the compiler takes different paths) for every rule kind.
RULES: dict[str, dict[str, Any]] = {
    "all": {"type": "all", "rules": [{"type": "tag", "tag": "vip"}, {"type": "has_contact", "channel": "email"}]},
    "any": {"type": "any", "rules": [{"type": "tag", "tag": "vip"}, {"type": "has_contact", "channel": "phone"}]},
    "not": {"type": "not", "rule": {"type": "tag", "tag": "vip"}},
    "segment": {"type": "segment", "segment_id": 7},
    "segment_not_member": {"type": "segment", "segment_id": 7, "member": False},
    "list": {"type": "list", "list_id": 3},
    "money_spent": {"type": "money_spent", "compare": {"op": "gte", "value": 500}},
    "money_spent_in_period": {"type": "money_spent", "compare": {"op": "between", "value": 100, "to": 200}, "period": LAST_30},
    "order_count": {"type": "order_count", "compare": {"op": "gte", "value": 5}},
    "order_count_in_period": {"type": "order_count", "compare": {"op": "gte", "value": 3}, "period": {"type": "this_month"}},
    "placed_order": {"type": "placed_order", "period": {"type": "last", "amount": 3, "unit": "months"}},
    "placed_no_order": {"type": "placed_order", "period": {"type": "on", "date": "2026-02-14"}, "placed": False},
    "not_ordered_for": {"type": "not_ordered_for", "days": 90},
    "not_ordered_for_or_never": {"type": "not_ordered_for", "days": 90, "include_never_ordered": True},
    "ordered_product": {"type": "ordered_product", "product_id": "p1", "variant_id": "v1", "period": LAST_30},
    "ordered_from_collection": {"type": "ordered_from_collection", "collection": "dog-food"},
    "abandoned_checkout": {"type": "abandoned_checkout", "period": {"type": "this_week"}, "min_value": 50},
    "event": {"type": "event", "event": "Product Viewed", "where": [{"property": "product_id", "op": "eq", "value": "p1"}], "count": {"op": "gte", "value": 2}, "period": {"type": "last", "amount": 7}},
    "event_never": {"type": "event", "event": "Product Added to Wishlist", "count": {"op": "eq", "value": 0}},
    "event_filters": {"type": "event", "event": "Products Searched", "period": {"type": "yesterday"}, "where": [
        {"property": "query", "op": "contains", "value": "boots"},
        {"property": "price", "op": "gt", "value": 30},
        {"property": "sent_at", "op": "lte", "value": "2026-03-01"},
        {"property": "in_stock", "op": "eq", "value": True},
        {"property": "size", "op": "not_in", "value": ["S", 42]},
        {"property": "page.url", "op": "starts_with", "value": "https://"},
        {"property": "coupon", "op": "not_exists"},
    ]},
    "orders_matching": {"type": "orders_matching", "where": [
        {"field": "total", "op": "gt", "value": 100},
        {"field": "coupon", "op": "eq", "value": "SPRING"},
        {"field": "shipping_country", "op": "in", "value": ["DE", "AT"]},
    ], "count": {"op": "gte", "value": 2}, "period": {"type": "last", "amount": 1, "unit": "years"}},
    "orders_matching_no_coupon": {"type": "orders_matching", "where": [{"field": "coupon", "op": "not_exists"}]},
    "attribute_text": {"type": "attribute", "field": "email", "op": "contains", "value": "@example.com"},
    "attribute_number": {"type": "attribute", "field": "average_order_value", "op": "neq", "value": 50},
    "attribute_time": {"type": "attribute", "field": "created_at", "op": "gt", "value": "2026-01-15"},
    "attribute_within_last_days": {"type": "attribute", "field": "last_seen_at", "op": "within_last_days", "value": 7},
    "attribute_property": {"type": "attribute", "property": "plan", "op": "in", "value": ["gold", "silver"]},
    "attribute_property_days": {"type": "attribute", "property": "signed_up", "op": "more_than_days_ago", "value": 30},
    "tag": {"type": "tag", "tag": "vip", "present": False},
    "has_contact": {"type": "has_contact", "channel": "phone"},
    "consent": {"type": "consent", "channel": "sms", "status": "subscribed"},
    "consent_none": {"type": "consent", "channel": "email", "status": "none"},
    "birthday_within_next_days": {"type": "birthday", "within_next_days": 3},
    "birthday_month_day": {"type": "birthday", "month": 12, "day": 24},
    "location_country": {"type": "location", "field": "country", "op": "in", "value": ["de", "AT"]},
    "location_city": {"type": "location", "field": "city", "op": "neq", "value": "Paris"},
    "location_zip_prefix": {"type": "location", "field": "zip_prefix", "value": "75"},
    "engagement": {"type": "engagement", "action": "clicked", "flow_id": "welcome", "channel": "email", "period": LAST_30},
    "not_engaged_for": {"type": "not_engaged_for", "days": 90},
    "unsubscribed": {"type": "unsubscribed"},
    "unsubscribed_sms": {"type": "unsubscribed", "channel": "sms"},
}  # fmt: skip


def _context(dialect: str, timezone: str = "Europe/Berlin") -> compiler.CompileContext:
    return compiler.CompileContext(now=NOW, timezone=timezone, dialect=dialect)


def _compile(rule: dict[str, Any], dialect: str) -> Any:
    statement = compiler.members_query(rules.parse_definition(rule).rule, _context(dialect))
    return statement.compile(dialect=DIALECTS[dialect])


def test_every_rule_kind_has_a_snapshot() -> None:
    rule_classes = typing.get_args(typing.get_args(rules.Rule)[0])
    kinds = {typing.get_args(cls.model_fields["type"].annotation)[0] for cls in rule_classes}
    assert {rule["type"] for rule in RULES.values()} == kinds


@pytest.mark.parametrize("dialect", list(DIALECTS))
@pytest.mark.parametrize("name", list(RULES))
def test_compiled_sql_matches_its_snapshot(name: str, dialect: str) -> None:
    # given a rule of one kind, when compiled for a dialect
    sql = str(_compile(RULES[name], dialect))
    text = f"-- {json.dumps(RULES[name], sort_keys=True)}\n{sql}\n"
    path = SNAPSHOTS / f"{name}.{dialect}.sql"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    # then the SQL is the reviewed one
    assert path.exists(), f"no snapshot {path.name}; run with WINBACK_UPDATE_SNAPSHOTS=1 and review it"
    assert text == path.read_text()


SENTINELS: dict[str, Any] = {
    "type": "all",
    "rules": [
        {"type": "segment", "segment_id": 424242},
        {"type": "list", "list_id": 434343},
        {"type": "money_spent", "compare": {"op": "between", "value": "1234.56", "to": "2345.67"}, "period": {"type": "last", "amount": 17}},
        {"type": "order_count", "compare": {"op": "eq", "value": 777}, "period": LAST_30},
        {"type": "ordered_product", "product_id": "sentinel-product", "variant_id": "sentinel-variant"},
        {"type": "ordered_from_collection", "collection": "sentinel-collection"},
        {"type": "abandoned_checkout", "min_value": "8765.43"},
        {"type": "event", "event": "Sentinel Event", "count": {"op": "lt", "value": 919}, "where": [
            {"property": "sentinel_key", "op": "eq", "value": "sentinel-value"},
            {"property": "sentinel_number", "op": "gte", "value": 31415.9},
            {"property": "sentinel_text", "op": "contains", "value": "sentinel-needle"},
        ]},
        {"type": "orders_matching", "where": [{"field": "coupon", "op": "starts_with", "value": "SENTINEL-COUPON"}]},
        {"type": "attribute", "property": "sentinel_prop", "op": "not_in", "value": ["sentinel-a", 271828]},
        {"type": "attribute", "field": "city", "op": "eq", "value": "Sentinelville"},
        {"type": "tag", "tag": "sentinel-tag"},
        {"type": "location", "field": "zip_prefix", "value": "SENTINEL-ZIP"},
        {"type": "engagement", "action": "opened", "flow_id": "sentinel-flow"},
        {"type": "birthday", "month": 11, "day": 23},
    ],
}  # fmt: skip
SENTINEL_VALUES = [
    "424242", "434343", "1234.56", "2345.67", "777", "sentinel-product", "sentinel-variant",
    "sentinel-collection", "8765.43", "Sentinel Event", "919", "sentinel_key", "sentinel-value",
    "31415.9", "sentinel-needle", "SENTINEL-COUPON", "sentinel_prop", "sentinel-a", "271828",
    "Sentinelville", "sentinel-tag", "SENTINEL-ZIP", "sentinel-flow", "11-23", "cancelled", "Message Opened",
]  # fmt: skip


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_every_value_is_a_bound_parameter(dialect: str) -> None:
    # given a rule full of distinctive values, when compiled
    compiled = _compile(SENTINELS, dialect)
    sql = str(compiled).lower()
    bound = " ".join(str(value) for value in compiled.params.values()).lower()
    for value in SENTINEL_VALUES:
        # then no value appears in the SQL text, and each is among the bound parameters
        assert value.lower() not in sql, value
        assert value.lower() in bound, value


def test_dialect_differences_are_confined_to_json_dates_and_text() -> None:
    # given the same tag rule, when compiled for each dialect
    on_sqlite = str(_compile({"type": "tag", "tag": "vip"}, "sqlite"))
    on_postgresql = str(_compile({"type": "tag", "tag": "vip"}, "postgresql"))
    # then SQLite walks the JSON array and PostgreSQL uses jsonb containment
    assert "json_each(customers.tags)" in on_sqlite
    assert "customers.tags @> %(param_1)s::JSONB" in on_postgresql


def test_a_count_that_means_at_least_once_or_never_becomes_exists() -> None:
    def shape(op: str, value: int, to: int | None = None) -> str:
        return compiler.count_shape(
            rules.CountCompare(op=op, value=Decimal(value), to=None if to is None else Decimal(to))
        )  # type: ignore[arg-type]

    assert [shape("gte", 1), shape("gt", 0), shape("neq", 0)] == ["some", "some", "some"]
    assert [shape("eq", 0), shape("lt", 1), shape("lte", 0), shape("between", 0, 0)] == ["none"] * 4
    assert [shape("gte", 2), shape("lt", 3), shape("between", 0, 1), shape("eq", 1)] == ["count"] * 4


def test_a_date_means_its_whole_local_day_and_a_date_time_one_instant() -> None:
    # a date in Berlin (UTC+1 in winter) runs from 23:00 UTC the day before
    assert periods.time_span("2026-01-15", "Europe/Berlin") == (
        datetime(2026, 1, 14, 23, 0, tzinfo=UTC),
        datetime(2026, 1, 15, 23, 0, tzinfo=UTC),
    )
    # a date-time without a zone is the store's local time; with one it is that instant
    assert periods.time_span("2026-01-15T10:00:00", "Europe/Berlin") == (
        datetime(2026, 1, 15, 9, 0, tzinfo=UTC),
        datetime(2026, 1, 15, 9, 0, 0, 1, tzinfo=UTC),
    )
    assert periods.time_span("2026-01-15T10:00:00Z", "Europe/Berlin") == (
        datetime(2026, 1, 15, 10, 0, tzinfo=UTC),
        datetime(2026, 1, 15, 10, 0, tzinfo=UTC) + timedelta(microseconds=1),
    )
    # and text that is neither is no time at all
    assert periods.time_span("last tuesday", "Europe/Berlin") is None


def test_the_context_refuses_what_would_compile_a_wrong_query() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        compiler.CompileContext(now=datetime(2026, 3, 2, 9, 0), timezone="UTC", dialect="sqlite")
    with pytest.raises(ValueError, match="unsupported dialect"):
        compiler.CompileContext(now=NOW, timezone="UTC", dialect="mysql")
    with pytest.raises(ValueError, match="unknown timezone"):
        compiler.CompileContext(now=NOW, timezone="Mars/Olympus_Mons", dialect="sqlite")


def test_an_unknown_rule_is_refused_never_matched() -> None:
    with pytest.raises(TypeError, match="unknown segment rule"):
        compiler.condition(object(), _context("sqlite"))
