"""The segment SQL compiler: a rule tree becomes one SQLAlchemy Core query over `customers`.

Pure: it builds statements and runs none. Every rule value is a bound parameter. Each rule
becomes a boolean over the `customers` row — a column test, or a correlated EXISTS / scalar
subquery over events, orders, order lines, checkouts and memberships — and groups become
AND / OR / NOT of those.

Every condition built here is two-valued (true or false, never SQL NULL), so `not` means exactly
"not": a customer without a city is "not in Paris". Missing values (NULL columns, absent JSON keys,
JSON null) fail every comparison except the negative ops (`neq`, `not_in`, `not_contains`,
`not_exists`), which are the negation of their positive op.

The semantics are those of `winback.segments.rules`, answered value for value like
`winback.segments.evaluator` (property tests compare the two):
- JSON property values compare by kind: a string rule value against JSON strings, a number
  against JSON numbers (never booleans), a boolean against booleans; `gt`/`gte`/`lt`/`lte`
  compare numbers numerically and strings code point by code point (ISO dates sort correctly).
- Text columns compare with the rule value's text form, case-sensitively; `contains` and
  `starts_with` ignore case (SQLite folds ASCII letters only).
- Time columns compare by instant; a date-only value stands for its whole day in the store's
  timezone.

Speed: all-time money and order counts read the running aggregates on `customers`; behaviour
tests are correlated EXISTS probes that the `(customer_id, …)` indexes answer, and a count
comparison that means "at least once" or "never" is compiled to EXISTS / NOT EXISTS rather than
a COUNT.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Select
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from winback.db.expressions import one_of
from winback.db.models import (
    Checkout,
    Customer,
    Event,
    ListMembership,
    Order,
    OrderLine,
    Product,
    SegmentMembership,
)
from winback.segments import periods, rules

DIALECTS = ("sqlite", "postgresql")
CANCELLED = "cancelled"  # orders in this status never count
ENGAGED_EVENTS = (rules.ENGAGEMENT_EVENTS["opened"], rules.ENGAGEMENT_EVENTS["clicked"])
CONSENT_CHANNELS = ("email", "sms", "push")
POSITIVE_OF = {"neq": "eq", "not_in": "in", "not_contains": "contains", "not_exists": "exists"}
ORDERING_OPS = ("gt", "gte", "lt", "lte")

TEXT_FIELDS = frozenset(
    {"user_id", "email", "phone", "first_name", "last_name", "gender", "locale", "timezone"}
    | {"city", "region", "zip", "country"}
)
NUMBER_FIELDS = frozenset({"orders_count", "total_spent", "average_order_value"})
TIME_FIELDS = frozenset({"created_at", "first_seen_at", "last_seen_at", "first_order_at", "last_order_at"})
ORDER_TEXT_FIELDS = frozenset({"shipping_country", "shipping_region", "shipping_city", "currency", "status"})

Condition = ColumnElement[bool]
RuleT = TypeVar("RuleT")


@dataclass(frozen=True)
class CompileContext:
    """When the rule is evaluated (from the injected clock), the store's timezone, and the SQL
    dialect the statement is for ("sqlite" or "postgresql")."""

    now: datetime
    timezone: str
    dialect: str

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("CompileContext needs a timezone-aware `now`")
        if self.dialect not in DIALECTS:
            raise ValueError(f"unsupported dialect {self.dialect!r}; expected one of {DIALECTS}")
        try:
            ZoneInfo(self.timezone)  # an unknown zone fails here, not half-way through a query
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {self.timezone!r}") from None

    @property
    def is_postgresql(self) -> bool:
        return self.dialect == "postgresql"

    def window(self, period: rules.Period | None) -> tuple[datetime, datetime] | None:
        return None if period is None else periods.resolve(period, self.now, self.timezone)


# --- statements ---------------------------------------------------------------------------------


def is_live() -> Condition:
    """Tombstones of merged profiles and erased profiles are never members."""
    return sa.and_(Customer.merged_into_id.is_(None), Customer.erased_at.is_(None))


def members_query(rule: Any, ctx: CompileContext, customer_ids: Iterable[int] | None = None) -> Select[Any]:
    """`SELECT customers.id` of the live customers matching `rule` (only among `customer_ids`
    when given: the incremental check after events). Unordered; add an ORDER BY to page."""
    statement = sa.select(Customer.id).where(is_live(), condition(rule, ctx))
    if customer_ids is not None:
        statement = statement.where(one_of(Customer.id, customer_ids))
    return statement


def for_customers(rule: Any, ctx: CompileContext, customer_ids: Iterable[int]) -> Select[Any]:
    """The ids among `customer_ids` that are members of `rule` now."""
    return members_query(rule, ctx, customer_ids=customer_ids)


def count_query(rule: Any, ctx: CompileContext) -> Select[Any]:
    """`SELECT count(*)` of the live customers matching `rule`."""
    return sa.select(sa.func.count()).select_from(Customer).where(is_live(), condition(rule, ctx))


def condition(rule: Any, ctx: CompileContext) -> Condition:
    """The rule as a two-valued boolean over the `customers` row."""
    compile_one = _COMPILERS.get(type(rule))
    if compile_one is None:
        raise TypeError(f"unknown segment rule {type(rule).__name__}")  # never match by accident
    return compile_one(rule, ctx)


# --- groups and references ----------------------------------------------------------------------


def _all(rule: rules.AllRule, ctx: CompileContext) -> Condition:
    return sa.and_(*(condition(child, ctx) for child in rule.rules))


def _any(rule: rules.AnyRule, ctx: CompileContext) -> Condition:
    return sa.or_(*(condition(child, ctx) for child in rule.rules))


def _not(rule: rules.NotRule, ctx: CompileContext) -> Condition:
    return sa.not_(condition(rule.rule, ctx))


def _segment(rule: rules.SegmentRule, ctx: CompileContext) -> Condition:
    found = _exists(
        SegmentMembership.segment_id == rule.segment_id,
        SegmentMembership.customer_id == Customer.id,
    )
    return found if rule.member else sa.not_(found)


def _list(rule: rules.ListRule, ctx: CompileContext) -> Condition:
    found = _exists(ListMembership.list_id == rule.list_id, ListMembership.customer_id == Customer.id)
    return found if rule.member else sa.not_(found)


# --- behaviour ----------------------------------------------------------------------------------


def _money_spent(rule: rules.MoneySpentRule, ctx: CompileContext) -> Condition:
    if rule.period is None:
        return _compare(Customer.total_spent, rule.compare, Customer.total_spent.type)
    net: ColumnElement[Any] = sa.func.sum(Order.total - Order.refunded_total)
    if not ctx.is_postgresql:
        net = sa.func.round(net, 2)  # SQLite adds money as floats; PostgreSQL's numeric is exact
    spent = sa.select(sa.func.coalesce(net, 0)).where(*_counted_orders(rule.period, ctx)).scalar_subquery()
    return _compare(spent, rule.compare, Order.total.type)


def _order_count(rule: rules.OrderCountRule, ctx: CompileContext) -> Condition:
    if rule.period is None:
        return _compare(Customer.orders_count, rule.compare, sa.Integer())
    return _count_matches(rule.compare, _counted_orders(rule.period, ctx))


def _placed_order(rule: rules.PlacedOrderRule, ctx: CompileContext) -> Condition:
    placed = _exists(*_counted_orders(rule.period, ctx))
    return placed if rule.placed else sa.not_(placed)


def _not_ordered_for(rule: rules.NotOrderedForRule, ctx: CompileContext) -> Condition:
    cutoff = ctx.now - timedelta(days=rule.days)
    lapsed = sa.and_(Customer.last_order_at.is_not(None), Customer.last_order_at < cutoff)
    if rule.include_never_ordered:
        return sa.or_(lapsed, Customer.last_order_at.is_(None))
    return lapsed


def _ordered_product(rule: rules.OrderedProductRule, ctx: CompileContext) -> Condition:
    line_tests = [OrderLine.product_id == rule.product_id]
    if rule.variant_id is not None:
        line_tests.append(OrderLine.variant_id == rule.variant_id)
    return _exists_line(rule.period, ctx, line_tests)


def _ordered_from_collection(rule: rules.OrderedFromCollectionRule, ctx: CompileContext) -> Condition:
    # Products of the collection are found once (uncorrelated), then each customer's lines probed.
    in_catalog = sa.select(Product.product_id).where(
        _json_array_has(Product.collections, rule.collection, ctx)
    )
    line_test = sa.or_(OrderLine.category == rule.collection, OrderLine.product_id.in_(in_catalog))
    return _exists_line(rule.period, ctx, [line_test])


def _abandoned_checkout(rule: rules.AbandonedCheckoutRule, ctx: CompileContext) -> Condition:
    tests: list[Condition] = [
        Checkout.customer_id == Customer.id,
        Checkout.kind == "checkout",
        Checkout.abandoned_at.is_not(None),
        *_between(Checkout.abandoned_at, ctx.window(rule.period)),
    ]
    if rule.min_value is not None:
        tests.append(Checkout.value >= rule.min_value)
    return _exists(*tests)


def _event(rule: rules.EventRule, ctx: CompileContext) -> Condition:
    filters = [_json_test(Event.properties, f.property, f.op, f.value, ctx) for f in rule.where]
    return _count_matches(rule.count, [*_events_named(rule.event, rule.period, ctx), *filters])


def _orders_matching(rule: rules.OrdersMatchingRule, ctx: CompileContext) -> Condition:
    filters = [_order_filter(f, ctx) for f in rule.where]
    return _count_matches(rule.count, [*_counted_orders(rule.period, ctx), *filters])


def _engagement(rule: rules.EngagementRule, ctx: CompileContext) -> Condition:
    tests = _events_named(rules.ENGAGEMENT_EVENTS[rule.action], rule.period, ctx)
    if rule.flow_id is not None:
        tests.append(_json_equals(Event.properties, "flow_id", rule.flow_id, ctx))
    if rule.channel is not None:
        tests.append(_json_equals(Event.properties, "channel", rule.channel, ctx))
    return _count_matches(rule.count, tests)


def _not_engaged_for(rule: rules.LastEngagedRule, ctx: CompileContext) -> Condition:
    cutoff = ctx.now - timedelta(days=rule.days)
    return sa.not_(
        _exists(
            Event.customer_id == Customer.id,
            Event.event.in_(ENGAGED_EVENTS),
            Event.timestamp >= cutoff,
        )
    )


def _unsubscribed(rule: rules.UnsubscribedRule, ctx: CompileContext) -> Condition:
    channels = CONSENT_CHANNELS if rule.channel is None else (rule.channel,)
    return sa.or_(*(_equals(_consent_column(channel), "unsubscribed") for channel in channels))


def _counted_orders(period: rules.Period | None, ctx: CompileContext) -> list[Condition]:
    """The customer's orders that count (not cancelled), placed in `period` when given."""
    return [
        Order.customer_id == Customer.id,
        Order.status != CANCELLED,
        *_between(Order.placed_at, ctx.window(period)),
    ]


def _exists_line(period: rules.Period | None, ctx: CompileContext, line_tests: list[Condition]) -> Condition:
    """An order line passing `line_tests` in one of the customer's counted orders."""
    orders_and_lines = sa.join(Order, OrderLine, OrderLine.order_pk == Order.id)
    return sa.exists().select_from(orders_and_lines).where(*_counted_orders(period, ctx), *line_tests)


def _events_named(name: str, period: rules.Period | None, ctx: CompileContext) -> list[Condition]:
    return [
        Event.customer_id == Customer.id,
        Event.event == name,
        *_between(Event.timestamp, ctx.window(period)),
    ]


def _between(column: Any, window: tuple[datetime, datetime] | None) -> list[Condition]:
    if window is None:
        return []
    start, end = window
    return [column >= start, column < end]


def _exists(*tests: Condition) -> Condition:
    return sa.exists().where(*tests)


# --- comparisons --------------------------------------------------------------------------------


def _compare(value: ColumnElement[Any] | Any, comparison: rules.Compare, type_: Any) -> Condition:
    """`value <op> bound` for a non-null numeric expression (`between` inclusive at both ends)."""

    def bound(number: Decimal) -> ColumnElement[Any]:
        return sa.literal(int(number) if isinstance(type_, sa.Integer) else number, type_)

    first = bound(comparison.value)
    match comparison.op:
        case "eq":
            return value == first
        case "neq":
            return value != first
        case "gt":
            return value > first
        case "gte":
            return value >= first
        case "lt":
            return value < first
        case "lte":
            return value <= first
        case "between":
            assert comparison.to is not None  # the model refuses 'between' without 'to'
            return value.between(first, bound(comparison.to))
    raise ValueError(f"unknown comparison {comparison.op!r}")


def count_shape(comparison: rules.Compare) -> str:
    """ "some" when the comparison holds exactly for counts ≥ 1, "none" when exactly for 0,
    else "count" (the count itself must be compared)."""
    op, value, to = comparison.op, comparison.value, comparison.to
    if (op == "gte" and value == 1) or (op in ("gt", "neq") and value == 0):
        return "some"
    if (op == "eq" and value == 0) or (op == "lt" and value == 1) or (op == "lte" and value == 0):
        return "none"
    if op == "between" and value == 0 and to == 0:
        return "none"
    if op == "between" and value == 1 and to is None:  # pragma: no cover - 'between' always has 'to'
        return "some"
    return "count"


def _count_matches(comparison: rules.Compare, tests: Sequence[Condition]) -> Condition:
    """Compare how many rows pass `tests` (EXISTS / NOT EXISTS when that is all it asks)."""
    shape = count_shape(comparison)
    if shape == "some":
        return _exists(*tests)
    if shape == "none":
        return sa.not_(_exists(*tests))
    counted = sa.select(sa.func.count()).where(*tests).scalar_subquery()
    return _compare(counted, comparison, sa.Integer())


def _equals(column: Any, value: Any) -> Condition:
    """`column = value`, false (not NULL) when the column is NULL."""
    return sa.and_(column.is_not(None), column == value)


# --- text, number and time columns --------------------------------------------------------------


def text_form(value: Any) -> str:
    """A rule value as text, the way it is compared with a text column (JSON spelling)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _negated(op: str, test: Callable[[str], Condition]) -> Condition:
    """Negative ops are the exact negation of their positive op (so true on missing values)."""
    if op in POSITIVE_OF:
        return sa.not_(test(POSITIVE_OF[op]))
    return test(op)


def _text_column_test(column: Any, op: str, value: Any, ctx: CompileContext) -> Condition:
    def positive(op: str) -> Condition:
        present = column.is_not(None)
        if op == "exists":
            return present  # type: ignore[no-any-return]
        if op == "eq":
            return sa.and_(present, column == text_form(value))
        if op == "in":
            return sa.and_(present, column.in_([text_form(v) for v in value]))
        if op in ("contains", "starts_with"):
            return sa.and_(present, _text_match(column, op, text_form(value), ctx))
        if op in ORDERING_OPS:
            return sa.and_(present, _ordered(_binary(column, ctx), op, sa.literal(text_form(value))))
        raise ValueError(f"op {op!r} does not apply to a text field")

    return _negated(op, positive)


def _number_column_test(column: Any, op: str, value: Any, ctx: CompileContext) -> Condition:
    def positive(op: str) -> Condition:
        present = column.is_not(None)
        if op == "exists":
            return present  # type: ignore[no-any-return]
        candidates = value if op == "in" else [value]
        numbers = [Decimal(str(v)) for v in candidates if _is_number(v)]
        if op in ("contains", "starts_with") or not numbers:
            return sa.false()
        if op in ("eq", "in"):
            return sa.and_(present, column.in_([sa.literal(n, sa.Numeric()) for n in numbers]))
        return sa.and_(present, _ordered(column, op, sa.literal(numbers[0], sa.Numeric())))

    return _negated(op, positive)


def _time_column_test(column: Any, op: str, value: Any, ctx: CompileContext) -> Condition:
    def positive(op: str) -> Condition:
        present = column.is_not(None)
        if op == "exists":
            return present  # type: ignore[no-any-return]
        if op == "in":
            return sa.or_(sa.false(), *(_time_column_test(column, "eq", v, ctx) for v in value))
        span = periods.time_span(value, ctx.timezone) if isinstance(value, str) else None
        if span is None or op in ("contains", "starts_with"):
            return sa.false()
        start, end = span
        if op == "eq":
            return sa.and_(present, column >= start, column < end)
        if op == "gt":
            return sa.and_(present, column >= end)
        if op == "gte":
            return sa.and_(present, column >= start)
        if op == "lt":
            return sa.and_(present, column < start)
        return sa.and_(present, column < end)  # lte

    return _negated(op, positive)


def _ordered(left: Any, op: str, right: Any) -> Condition:
    if op == "gt":
        return left > right  # type: ignore[no-any-return]
    if op == "gte":
        return left >= right  # type: ignore[no-any-return]
    if op == "lt":
        return left < right  # type: ignore[no-any-return]
    return left <= right  # type: ignore[no-any-return]


def _binary(text: Any, ctx: CompileContext) -> Any:
    """Text ordered code point by code point (SQLite's default; PostgreSQL's "C" collation)."""
    return sa.collate(text, "C") if ctx.is_postgresql else text


def _text_match(text: Any, op: str, needle: str, ctx: CompileContext) -> Condition:
    """Case-insensitive `contains` / `starts_with` of a non-null text (no LIKE: `%` and `_` in a
    value are plain characters)."""
    folded = sa.func.lower(text)
    wanted = needle.lower()
    if op == "starts_with":
        return sa.func.substr(folded, 1, len(wanted)) == wanted
    position = sa.func.strpos(folded, wanted) if ctx.is_postgresql else sa.func.instr(folded, wanted)
    return position > 0


# --- JSON values --------------------------------------------------------------------------------
# SQLite: json_type / json_extract with a `$."key"` path; PostgreSQL: jsonb_typeof / -> / ->>.
# Keys are single top-level keys (a dot is part of the name, not a path).


def _json_path(key: str) -> str:
    return f'$."{key}"'  # the rule language refuses quotes in property names


def _json_kind(document: Any, key: str, ctx: CompileContext) -> ColumnElement[Any]:
    """The JSON type of the value under `key`: NULL when absent; 'null', 'text'/'string', …"""
    if ctx.is_postgresql:
        return sa.func.jsonb_typeof(document.op("->", return_type=JSONB)(sa.literal(key)))
    return sa.func.json_type(document, sa.literal(_json_path(key)))


def _json_is(document: Any, key: str, kinds: Mapping[str, tuple[str, ...]], ctx: CompileContext) -> Condition:
    """Whether the value under `key` is of one of `kinds` (false, not NULL, when absent)."""
    names = kinds[ctx.dialect]
    kind = sa.func.coalesce(_json_kind(document, key, ctx), "absent")
    return kind == names[0] if len(names) == 1 else kind.in_(names)


STRING: Mapping[str, tuple[str, ...]] = {"sqlite": ("text",), "postgresql": ("string",)}
NUMBER: Mapping[str, tuple[str, ...]] = {"sqlite": ("integer", "real"), "postgresql": ("number",)}
PRESENT: Mapping[str, tuple[str, ...]] = {
    "sqlite": ("text", "integer", "real", "true", "false", "array", "object"),
    "postgresql": ("string", "number", "boolean", "array", "object"),
}


def _json_text(document: Any, key: str, ctx: CompileContext) -> ColumnElement[Any]:
    """The value under `key` as text (meant for JSON strings)."""
    if ctx.is_postgresql:
        return document.op("->>", return_type=sa.Text())(sa.literal(key))  # type: ignore[no-any-return]
    return sa.func.json_extract(document, sa.literal(_json_path(key)), type_=sa.Text())


def _json_number(document: Any, key: str, ctx: CompileContext) -> ColumnElement[Any]:
    """The value under `key` as a number (NULL unless it is a JSON number; never a failed cast)."""
    if ctx.is_postgresql:
        return sa.case(
            (
                _json_kind(document, key, ctx) == "number",
                sa.cast(_json_text(document, key, ctx), sa.Numeric()),
            ),
        )
    return sa.func.json_extract(document, sa.literal(_json_path(key)), type_=sa.Numeric())


def _json_equals(document: Any, key: str, value: Any, ctx: CompileContext) -> Condition:
    """The value under `key` equals `value` and is of the same kind (string, number, boolean)."""
    return _json_in(document, key, [value], ctx)


def _json_in(document: Any, key: str, values: Sequence[Any], ctx: CompileContext) -> Condition:
    strings = [v for v in values if isinstance(v, str)]
    numbers = [Decimal(str(v)) for v in values if _is_number(v)]
    booleans = sorted({v for v in values if isinstance(v, bool)})
    tests: list[Condition] = []
    if strings:
        tests.append(
            sa.and_(_json_is(document, key, STRING, ctx), _json_text(document, key, ctx).in_(strings))
        )
    if numbers:
        number = _json_number(document, key, ctx)
        tests.append(
            sa.and_(
                _json_is(document, key, NUMBER, ctx),
                number.in_([sa.literal(n, sa.Numeric()) for n in numbers]),
            )
        )
    for boolean in booleans:
        if ctx.is_postgresql:
            tests.append(
                sa.and_(
                    _json_is(document, key, {"postgresql": ("boolean",)}, ctx),
                    _json_text(document, key, ctx) == text_form(boolean),
                )
            )
        else:
            tests.append(_json_is(document, key, {"sqlite": (text_form(boolean),)}, ctx))
    return sa.or_(sa.false(), *tests)


def _json_test(document: Any, key: str, op: str, value: Any, ctx: CompileContext) -> Condition:
    """One property filter on the JSON value under `key` (see the module docstring)."""

    def positive(op: str) -> Condition:
        if op == "exists":
            return _json_is(document, key, PRESENT, ctx)
        if op == "eq":
            return _json_equals(document, key, value, ctx)
        if op == "in":
            return _json_in(document, key, value, ctx)
        if op in ("contains", "starts_with"):
            if not isinstance(value, str):
                return sa.false()
            return sa.and_(
                _json_is(document, key, STRING, ctx),
                _text_match(_json_text(document, key, ctx), op, value, ctx),
            )
        if op in ORDERING_OPS:
            if _is_number(value):
                bound = sa.literal(Decimal(str(value)), sa.Numeric())
                return sa.and_(
                    _json_is(document, key, NUMBER, ctx),
                    _ordered(_json_number(document, key, ctx), op, bound),
                )
            if isinstance(value, str):
                text = _binary(_json_text(document, key, ctx), ctx)
                return sa.and_(_json_is(document, key, STRING, ctx), _ordered(text, op, sa.literal(value)))
            return sa.false()
        raise ValueError(f"unknown filter op {op!r}")

    return _negated(op, positive)


def _json_array_has(array: Any, element: str, ctx: CompileContext) -> Condition:
    """The JSON array contains the string `element` (exactly)."""
    if ctx.is_postgresql:
        return sa.type_coerce(array, JSONB).contains([element])
    items = sa.func.json_each(array).table_valued("value", "type")
    return sa.exists().select_from(items).where(items.c.type == "text", items.c.value == element)


def _json_array_strings(array: Any, ctx: CompileContext) -> Any:
    """The string elements of a JSON array, as a table with one `value` column."""
    if ctx.is_postgresql:
        items = sa.func.jsonb_array_elements(array).table_valued("value").render_derived()
        return (
            sa.select(
                (items.c.value.op("#>>", return_type=sa.Text())(sa.literal([], ARRAY(sa.Text())))).label(
                    "value"
                )
            )
            .select_from(items)
            .where(sa.func.jsonb_typeof(items.c.value) == "string")
            .subquery()
        )
    items = sa.func.json_each(array).table_valued("value", "type")
    return sa.select(items.c.value.label("value")).select_from(items).where(items.c.type == "text").subquery()


# --- orders matching ----------------------------------------------------------------------------


def _order_filter(order_filter: rules.OrderFilter, ctx: CompileContext) -> Condition:
    op, value = order_filter.op, order_filter.value
    if order_filter.field == "coupon":
        return _coupon_test(op, value, ctx)
    if order_filter.field in ("total", "discount"):
        column = Order.total if order_filter.field == "total" else Order.discount
        return _number_column_test(column, op, value, ctx)
    return _text_column_test(getattr(Order, order_filter.field), op, value, ctx)


def _coupon_test(op: str, value: Any, ctx: CompileContext) -> Condition:
    """True when any of the order's coupons passes (a negative op: when none passes the positive)."""

    def positive(op: str) -> Condition:
        coupons = _json_array_strings(Order.coupons, ctx)
        coupon = coupons.c.value
        if op == "exists":
            test: Condition = sa.true()
        elif op in ("eq", "in"):
            wanted = [v for v in (value if op == "in" else [value]) if isinstance(v, str)]
            if not wanted:
                return sa.false()
            test = coupon.in_(wanted)
        elif op in ("contains", "starts_with"):
            if not isinstance(value, str):
                return sa.false()
            test = _text_match(coupon, op, value, ctx)
        elif op in ORDERING_OPS:
            if not isinstance(value, str):
                return sa.false()  # coupons are strings; a number never orders against them
            test = _ordered(_binary(coupon, ctx), op, sa.literal(value))
        else:
            raise ValueError(f"unknown filter op {op!r}")
        return sa.exists().select_from(coupons).where(test)

    return _negated(op, positive)


# --- attributes and location --------------------------------------------------------------------


def _attribute(rule: rules.AttributeRule, ctx: CompileContext) -> Condition:
    if rule.property is not None:
        if rule.op in ("within_last_days", "more_than_days_ago"):
            return _property_days(rule.property, rule.op, rule.value, ctx)
        return _json_test(Customer.properties, rule.property, rule.op, rule.value, ctx)
    assert rule.field is not None  # the model requires exactly one of field / property
    column = getattr(Customer, rule.field)
    if rule.field in TIME_FIELDS:
        if rule.op in ("within_last_days", "more_than_days_ago"):
            assert isinstance(rule.value, int)  # the model requires a whole number of days
            cutoff = ctx.now - timedelta(days=rule.value)
            later = column >= cutoff if rule.op == "within_last_days" else column < cutoff
            return sa.and_(column.is_not(None), later)
        return _time_column_test(column, rule.op, rule.value, ctx)
    if rule.op in ("within_last_days", "more_than_days_ago"):
        return sa.false()  # only times are so many days ago
    if rule.field in NUMBER_FIELDS:
        return _number_column_test(column, rule.op, rule.value, ctx)
    return _text_column_test(column, rule.op, rule.value, ctx)


# A custom property holding a date: an ISO date, or a date-time with an optional zone (`Z` or
# ±HH:MM). Text of another shape is not a time and never matches.
_ISO_SHAPE = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$"
)
_ZONED = r"(Z|[+-][0-9]{2}:[0-9]{2})$"
_SQLITE_DATE_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


def _property_days(key: str, op: str, days: Any, ctx: CompileContext) -> Condition:
    """A custom property holding an ISO date/date-time, compared with `now - days`.

    A value without a zone is the store's local time (as the evaluator reads it), so it is
    compared with the cutoff as a local wall time; a value with a zone is compared as an instant.
    """
    assert isinstance(days, int)  # the model requires a whole number of days
    cutoff = ctx.now - timedelta(days=days)
    local_cutoff = cutoff.astimezone(ZoneInfo(ctx.timezone)).replace(tzinfo=None)
    text = _json_text(Customer.properties, key, ctx)
    is_string = _json_is(Customer.properties, key, STRING, ctx)
    if ctx.is_postgresql:
        shaped = text.op("~", return_type=sa.Boolean())(sa.literal(_ISO_SHAPE))
        zoned = text.op("~", return_type=sa.Boolean())(sa.literal(_ZONED))
        # Nested CASEs keep each cast away from text that would make it fail.
        instant = sa.case(
            (
                sa.and_(is_string, shaped),
                sa.case(
                    (
                        _valid_calendar_day(text),
                        sa.case(
                            (zoned, sa.cast(text, sa.DateTime(timezone=True))),
                            else_=sa.func.timezone(ctx.timezone, sa.cast(text, sa.DateTime())),
                        ),
                    ),
                ),
            ),
        )
        bound: Any = sa.literal(cutoff, sa.DateTime(timezone=True))
    else:
        # julianday() turns a zoned value into UTC; date() of an impossible day (2026-02-30)
        # rolls over, so comparing it with the text refuses it.
        day = sa.func.substr(text, 1, 10)
        zoned_text = sa.or_(
            sa.func.substr(text, -1) == "Z",
            sa.and_(sa.func.length(text) > 10, sa.func.substr(text, -6, 1).in_(["+", "-"])),
        )
        instant = sa.case(
            (
                sa.and_(is_string, text.op("GLOB", return_type=sa.Boolean())(_SQLITE_DATE_GLOB)),
                sa.case(
                    (
                        sa.func.date(day) == day,
                        sa.case(
                            (
                                zoned_text,
                                sa.func.julianday(text) - sa.func.julianday(cutoff.strftime(_SQLITE_TIME)),
                            ),
                            else_=sa.func.julianday(text)
                            - sa.func.julianday(local_cutoff.strftime(_SQLITE_TIME)),
                        ),
                    ),
                ),
            ),
        )
        bound = sa.literal(0)  # `instant` is the days after the cutoff here
    compared = instant >= bound if op == "within_last_days" else instant < bound
    return sa.func.coalesce(compared, sa.false())


def _valid_calendar_day(text: Any) -> Condition:
    """PostgreSQL: the text's YYYY-MM-DD names a real day (casting 2026-02-30 would fail)."""
    year = sa.cast(sa.func.substr(text, 1, 4), sa.Integer())
    month = sa.cast(sa.func.substr(text, 6, 2), sa.Integer())
    day = sa.cast(sa.func.substr(text, 9, 2), sa.Integer())
    next_month = sa.func.make_date(
        sa.case((month == 12, year + 1), else_=year), sa.case((month == 12, 1), else_=month + 1), 1
    )
    days_in_month = sa.case(
        (sa.and_(month >= 1, month <= 12), sa.extract("day", next_month - 1)),
    )
    return sa.and_(day >= 1, sa.func.coalesce(day <= days_in_month, sa.false()))


def _tag(rule: rules.TagRule, ctx: CompileContext) -> Condition:
    found = _json_array_has(Customer.tags, rule.tag, ctx)
    return found if rule.present else sa.not_(found)


def _contact(rule: rules.ContactRule, ctx: CompileContext) -> Condition:
    column = Customer.email if rule.channel == "email" else Customer.phone
    return column.is_not(None) if rule.present else column.is_(None)


def _consent_column(channel: str) -> Any:
    return {"email": Customer.email_consent, "sms": Customer.sms_consent, "push": Customer.push_consent}[
        channel
    ]


def _consent(rule: rules.ConsentRule, ctx: CompileContext) -> Condition:
    column = _consent_column(rule.channel)
    return column.is_(None) if rule.status == "none" else _equals(column, rule.status)


def _birthday(rule: rules.BirthdayRule, ctx: CompileContext) -> Condition:
    def formatted(sqlite_format: str, postgresql_format: str) -> ColumnElement[Any]:
        if ctx.is_postgresql:
            return sa.func.to_char(Customer.birthday, postgresql_format)
        return sa.func.strftime(sqlite_format, Customer.birthday)

    present = Customer.birthday.is_not(None)
    if rule.within_next_days is not None:
        upcoming = periods.upcoming_month_days(ctx.now, ctx.timezone, rule.within_next_days)
        month_days = [f"{month:02d}-{day:02d}" for month, day in upcoming]
        return sa.and_(present, formatted("%m-%d", "MM-DD").in_(month_days))
    assert rule.month is not None  # the model requires month when within_next_days is absent
    if rule.day is None:
        return sa.and_(present, formatted("%m", "MM") == f"{rule.month:02d}")
    return sa.and_(present, formatted("%m-%d", "MM-DD") == f"{rule.month:02d}-{rule.day:02d}")


def _location(rule: rules.LocationRule, ctx: CompileContext) -> Condition:
    values = [rule.value] if isinstance(rule.value, str) else list(rule.value)
    if rule.field == "zip_prefix":
        found = sa.and_(
            Customer.zip.is_not(None),
            sa.or_(*(_text_match(Customer.zip, "starts_with", prefix, ctx) for prefix in values)),
        )
    elif rule.field == "country":
        upper = sorted({value.upper() for value in values})
        found = sa.and_(Customer.country.is_not(None), sa.func.upper(Customer.country).in_(upper))
    else:
        column = Customer.region if rule.field == "region" else Customer.city
        found = sa.and_(column.is_not(None), column.in_(values))
    return found if rule.op in ("eq", "in") else sa.not_(found)


def _register() -> dict[type, Callable[[Any, CompileContext], Condition]]:
    return {
        rules.AllRule: _all,
        rules.AnyRule: _any,
        rules.NotRule: _not,
        rules.SegmentRule: _segment,
        rules.ListRule: _list,
        rules.MoneySpentRule: _money_spent,
        rules.OrderCountRule: _order_count,
        rules.PlacedOrderRule: _placed_order,
        rules.NotOrderedForRule: _not_ordered_for,
        rules.OrderedProductRule: _ordered_product,
        rules.OrderedFromCollectionRule: _ordered_from_collection,
        rules.AbandonedCheckoutRule: _abandoned_checkout,
        rules.EventRule: _event,
        rules.OrdersMatchingRule: _orders_matching,
        rules.AttributeRule: _attribute,
        rules.TagRule: _tag,
        rules.ContactRule: _contact,
        rules.ConsentRule: _consent,
        rules.BirthdayRule: _birthday,
        rules.LocationRule: _location,
        rules.EngagementRule: _engagement,
        rules.LastEngagedRule: _not_engaged_for,
        rules.UnsubscribedRule: _unsubscribed,
    }


_COMPILERS = _register()
