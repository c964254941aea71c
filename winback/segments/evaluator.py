"""The in-memory segment evaluator: "is this customer in?" for one customer's facts.

Pure: it works on frozen facts (`CustomerFacts`, loaded by `winback.segments.facts`) and answers
exactly what the SQL compiler answers for the same rule and data (the semantics are documented in
`winback.segments.rules`; the property tests in tests/integration/test_segment_agreement.py hold
the two to it). `needs` tells the loader which facts a rule tree reads, so a customer with years of
history is loaded with only the events and rows the rule can look at.

Value semantics shared with the compiler:
- Missing values (absent key, JSON null, NULL column) fail every comparison, except the negative
  ops (`neq`, `not_in`, `not_contains`, `not_exists`), each of which is the exact negation of its
  positive op and is therefore true on a missing value.
- JSON property values compare by kind: a string rule value against string values, a number
  against numbers (never booleans), a boolean against booleans. `contains`/`starts_with` are
  case-insensitive and need strings. `gt`/`gte`/`lt`/`lte` compare numbers numerically and strings
  as strings (ISO dates sort correctly that way).
- Profile fields compare by the column's kind: text columns with the rule value's text form
  (case-sensitive, except `contains`/`starts_with`), numeric columns numerically, time columns by
  instant, where a date-only value stands for its whole day in the store's timezone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from winback.segments import periods, rules

CANCELLED = "cancelled"  # orders in this status never count
ENGAGED_EVENTS = (rules.ENGAGEMENT_EVENTS["opened"], rules.ENGAGEMENT_EVENTS["clicked"])
CONSENT_CHANNELS = ("email", "sms", "push")
NEGATIVE_OPS = frozenset({"neq", "not_in", "not_contains", "not_exists"})
POSITIVE_OF = {"neq": "eq", "not_in": "in", "not_contains": "contains", "not_exists": "exists"}

TEXT_FIELDS = frozenset(
    {"user_id", "email", "phone", "first_name", "last_name", "gender", "locale", "timezone"}
    | {"city", "region", "zip", "country"}
)
NUMBER_FIELDS = frozenset({"orders_count", "total_spent", "average_order_value"})
TIME_FIELDS = frozenset({"created_at", "first_seen_at", "last_seen_at", "first_order_at", "last_order_at"})


# --- facts ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineFact:
    """One order line; `collections` are those of its product in the catalog."""

    product_id: str | None
    variant_id: str | None
    category: str | None
    collections: tuple[str, ...] = ()


@dataclass(frozen=True)
class OrderFact:
    order_id: str
    status: str
    total: Decimal
    refunded_total: Decimal
    placed_at: datetime
    discount: Decimal | None = None
    coupons: tuple[str, ...] = ()
    currency: str | None = None
    shipping_country: str | None = None
    shipping_region: str | None = None
    shipping_city: str | None = None
    lines: tuple[LineFact, ...] = ()

    @property
    def counts(self) -> bool:
        """Whether the order counts at all (cancelled orders never do)."""
        return self.status != CANCELLED


@dataclass(frozen=True)
class EventFact:
    event: str
    timestamp: datetime
    properties: Mapping[str, Any]


@dataclass(frozen=True)
class CheckoutFact:
    kind: str
    abandoned_at: datetime | None
    value: Decimal


@dataclass(frozen=True)
class CustomerFacts:
    """What the evaluator may know about one customer: the `customers` row and the rows behind it.

    Only what `needs(rule, ctx)` asked for is loaded; the rest is left empty.
    """

    profile: Mapping[str, Any]
    orders: tuple[OrderFact, ...] = ()
    events: tuple[EventFact, ...] = ()
    checkouts: tuple[CheckoutFact, ...] = ()
    segment_ids: frozenset[int] = frozenset()
    list_ids: frozenset[int] = frozenset()

    @property
    def is_member_candidate(self) -> bool:
        """Tombstones of merged profiles and erased profiles are never members."""
        return self.profile.get("merged_into_id") is None and self.profile.get("erased_at") is None


@dataclass(frozen=True)
class EvalContext:
    """The moment of evaluation (from the injected clock) and the store's timezone."""

    now: datetime
    timezone: str = "UTC"


@dataclass(frozen=True)
class FactNeeds:
    """Which facts a rule tree reads.

    `events` maps an event name to the earliest timestamp any rule needs (None: all time).
    `orders_since` likewise bounds the orders (None: all time) when `orders` is set.
    """

    events: Mapping[str, datetime | None] = field(default_factory=dict)
    orders: bool = False
    orders_since: datetime | None = None
    order_lines: bool = False
    checkouts: bool = False
    segment_ids: frozenset[int] = frozenset()
    list_ids: frozenset[int] = frozenset()

    def merge(self, other: FactNeeds) -> FactNeeds:
        events = dict(self.events)
        for name, since in other.events.items():
            events[name] = _earliest(events[name], since) if name in events else since
        return FactNeeds(
            events=events,
            orders=self.orders or other.orders,
            orders_since=_orders_since(self, other),
            order_lines=self.order_lines or other.order_lines,
            checkouts=self.checkouts or other.checkouts,
            segment_ids=self.segment_ids | other.segment_ids,
            list_ids=self.list_ids | other.list_ids,
        )


def _earliest(first: datetime | None, second: datetime | None) -> datetime | None:
    if first is None or second is None:
        return None
    return min(first, second)


def _orders_since(first: FactNeeds, second: FactNeeds) -> datetime | None:
    if not first.orders:
        return second.orders_since
    if not second.orders:
        return first.orders_since
    return _earliest(first.orders_since, second.orders_since)


# --- needs ----------------------------------------------------------------------------------------


def needs(rule: Any, ctx: EvalContext) -> FactNeeds:
    """The facts `rule` reads when evaluated at `ctx` (for loading no more than that)."""
    total = FactNeeds()
    for node in rules.walk(rule):
        total = total.merge(_own_needs(node, ctx))
    return total


def _own_needs(node: Any, ctx: EvalContext) -> FactNeeds:
    since = _period_start(getattr(node, "period", None), ctx)
    if isinstance(node, rules.EventRule):
        return FactNeeds(events={node.event: since})
    if isinstance(node, rules.EngagementRule):
        return FactNeeds(events={rules.ENGAGEMENT_EVENTS[node.action]: since})
    if isinstance(node, rules.LastEngagedRule):
        cutoff = ctx.now - timedelta(days=node.days)
        return FactNeeds(events=dict.fromkeys(ENGAGED_EVENTS, cutoff))
    if isinstance(node, rules.MoneySpentRule | rules.OrderCountRule):
        # All time is read from the running aggregates on the profile.
        return FactNeeds(orders=True, orders_since=since) if node.period is not None else FactNeeds()
    if isinstance(node, rules.PlacedOrderRule | rules.OrdersMatchingRule):
        return FactNeeds(orders=True, orders_since=since)
    if isinstance(node, rules.OrderedProductRule | rules.OrderedFromCollectionRule):
        return FactNeeds(orders=True, orders_since=since, order_lines=True)
    if isinstance(node, rules.AbandonedCheckoutRule):
        return FactNeeds(checkouts=True)
    if isinstance(node, rules.SegmentRule):
        return FactNeeds(segment_ids=frozenset({node.segment_id}))
    if isinstance(node, rules.ListRule):
        return FactNeeds(list_ids=frozenset({node.list_id}))
    return FactNeeds()


def _period_start(period: rules.Period | None, ctx: EvalContext) -> datetime | None:
    if period is None:
        return None
    return periods.resolve(period, ctx.now, ctx.timezone)[0]


# --- evaluation -----------------------------------------------------------------------------------


def evaluate(rule: Any, facts: CustomerFacts, ctx: EvalContext) -> bool:
    """Whether the customer described by `facts` is a member of the segment `rule` at `ctx`."""
    return facts.is_member_candidate and _matches(rule, facts, ctx)


def _matches(rule: Any, facts: CustomerFacts, ctx: EvalContext) -> bool:  # noqa: PLR0911, PLR0912
    if isinstance(rule, rules.AllRule):
        return all(_matches(child, facts, ctx) for child in rule.rules)
    if isinstance(rule, rules.AnyRule):
        return any(_matches(child, facts, ctx) for child in rule.rules)
    if isinstance(rule, rules.NotRule):
        return not _matches(rule.rule, facts, ctx)
    if isinstance(rule, rules.SegmentRule):
        return (rule.segment_id in facts.segment_ids) == rule.member
    if isinstance(rule, rules.ListRule):
        return (rule.list_id in facts.list_ids) == rule.member
    if isinstance(rule, rules.MoneySpentRule):
        return _money_spent(rule, facts, ctx)
    if isinstance(rule, rules.OrderCountRule):
        return _order_count(rule, facts, ctx)
    if isinstance(rule, rules.PlacedOrderRule):
        return any(_counted_orders(facts, rule.period, ctx)) == rule.placed
    if isinstance(rule, rules.NotOrderedForRule):
        last_order_at = facts.profile.get("last_order_at")
        if last_order_at is None:
            return rule.include_never_ordered
        return bool(last_order_at < ctx.now - timedelta(days=rule.days))
    if isinstance(rule, rules.OrderedProductRule):
        return any(
            line.product_id == rule.product_id
            and (rule.variant_id is None or line.variant_id == rule.variant_id)
            for order in _counted_orders(facts, rule.period, ctx)
            for line in order.lines
        )
    if isinstance(rule, rules.OrderedFromCollectionRule):
        return any(
            rule.collection in line.collections or line.category == rule.collection
            for order in _counted_orders(facts, rule.period, ctx)
            for line in order.lines
        )
    if isinstance(rule, rules.AbandonedCheckoutRule):
        return _abandoned_checkout(rule, facts, ctx)
    if isinstance(rule, rules.EventRule):
        count = sum(
            1
            for event in _events_named(facts, rule.event, rule.period, ctx)
            if all(_filter_passes(event.properties, f) for f in rule.where)
        )
        return compare(rule.count, Decimal(count))
    if isinstance(rule, rules.OrdersMatchingRule):
        count = sum(
            1
            for order in _counted_orders(facts, rule.period, ctx)
            if all(_order_filter_passes(order, f) for f in rule.where)
        )
        return compare(rule.count, Decimal(count))
    if isinstance(rule, rules.EngagementRule):
        return _engagement(rule, facts, ctx)
    if isinstance(rule, rules.LastEngagedRule):
        cutoff = ctx.now - timedelta(days=rule.days)
        return not any(event.event in ENGAGED_EVENTS and event.timestamp >= cutoff for event in facts.events)
    if isinstance(rule, rules.UnsubscribedRule):
        channels = CONSENT_CHANNELS if rule.channel is None else (rule.channel,)
        return any(facts.profile.get(f"{channel}_consent") == "unsubscribed" for channel in channels)
    if isinstance(rule, rules.AttributeRule):
        return _attribute(rule, facts.profile, ctx)
    if isinstance(rule, rules.TagRule):
        tags = facts.profile.get("tags") or ()
        return (rule.tag in tags) == rule.present
    if isinstance(rule, rules.ContactRule):
        return (facts.profile.get(rule.channel) is not None) == rule.present
    if isinstance(rule, rules.ConsentRule):
        status = facts.profile.get(f"{rule.channel}_consent")
        return status is None if rule.status == "none" else status == rule.status
    if isinstance(rule, rules.BirthdayRule):
        return _birthday(rule, facts.profile.get("birthday"), ctx)
    if isinstance(rule, rules.LocationRule):
        return _location(rule, facts.profile)
    raise TypeError(f"unknown segment rule {type(rule).__name__}")  # never match by accident


def compare(comparison: rules.Compare, number: Decimal) -> bool:
    """A numeric comparison (`between` is inclusive at both ends)."""
    value = comparison.value
    match comparison.op:
        case "eq":
            return number == value
        case "neq":
            return number != value
        case "gt":
            return number > value
        case "gte":
            return number >= value
        case "lt":
            return number < value
        case "lte":
            return number <= value
        case "between":
            assert comparison.to is not None  # the model refuses 'between' without 'to'
            return value <= number <= comparison.to
    raise ValueError(f"unknown comparison {comparison.op!r}")


def _within(moment: datetime | None, window: tuple[datetime, datetime] | None) -> bool:
    if window is None:
        return True
    return moment is not None and window[0] <= moment < window[1]


def _window(period: rules.Period | None, ctx: EvalContext) -> tuple[datetime, datetime] | None:
    return None if period is None else periods.resolve(period, ctx.now, ctx.timezone)


def _counted_orders(facts: CustomerFacts, period: rules.Period | None, ctx: EvalContext) -> list[OrderFact]:
    window = _window(period, ctx)
    return [order for order in facts.orders if order.counts and _within(order.placed_at, window)]


def _events_named(
    facts: CustomerFacts, name: str, period: rules.Period | None, ctx: EvalContext
) -> list[EventFact]:
    window = _window(period, ctx)
    return [event for event in facts.events if event.event == name and _within(event.timestamp, window)]


def _money_spent(rule: rules.MoneySpentRule, facts: CustomerFacts, ctx: EvalContext) -> bool:
    if rule.period is None:
        spent = _decimal(facts.profile.get("total_spent"))
        return spent is not None and compare(rule.compare, spent)
    orders = _counted_orders(facts, rule.period, ctx)
    return compare(rule.compare, sum((order.total - order.refunded_total for order in orders), Decimal(0)))


def _order_count(rule: rules.OrderCountRule, facts: CustomerFacts, ctx: EvalContext) -> bool:
    if rule.period is None:
        count = _decimal(facts.profile.get("orders_count"))
        return count is not None and compare(rule.compare, count)
    return compare(rule.compare, Decimal(len(_counted_orders(facts, rule.period, ctx))))


def _abandoned_checkout(rule: rules.AbandonedCheckoutRule, facts: CustomerFacts, ctx: EvalContext) -> bool:
    window = _window(rule.period, ctx)
    return any(
        checkout.kind == "checkout"
        and checkout.abandoned_at is not None
        and _within(checkout.abandoned_at, window)
        and (rule.min_value is None or checkout.value >= rule.min_value)
        for checkout in facts.checkouts
    )


def _engagement(rule: rules.EngagementRule, facts: CustomerFacts, ctx: EvalContext) -> bool:
    wanted: dict[str, str] = {}
    if rule.flow_id is not None:
        wanted["flow_id"] = rule.flow_id
    if rule.channel is not None:
        wanted["channel"] = rule.channel
    name = rules.ENGAGEMENT_EVENTS[rule.action]
    count = sum(
        1
        for event in _events_named(facts, name, rule.period, ctx)
        if all(json_equals(event.properties.get(key), value) for key, value in wanted.items())
    )
    return compare(rule.count, Decimal(count))


# --- property filters (JSON values) -------------------------------------------------------------


def _filter_passes(properties: Mapping[str, Any], rule_filter: rules.PropertyFilter) -> bool:
    return json_test(properties.get(rule_filter.property), rule_filter.op, rule_filter.value)


def json_test(found: Any, op: str, value: Any) -> bool:
    """One filter op on a JSON value (None: missing or JSON null)."""
    if op in NEGATIVE_OPS:
        return not json_test(found, POSITIVE_OF[op], value)
    if found is None:
        return False
    if op == "exists":
        return True
    if op == "eq":
        return json_equals(found, value)
    if op == "in":
        return any(json_equals(found, candidate) for candidate in value)
    if op in ("contains", "starts_with"):
        if not isinstance(found, str) or not isinstance(value, str):
            return False
        text, needle = found.lower(), value.lower()
        return needle in text if op == "contains" else text.startswith(needle)
    if op in ("gt", "gte", "lt", "lte"):
        if _is_number(value) and _is_number(found):
            return _ordered(Decimal(str(found)), op, Decimal(str(value)))
        if isinstance(value, str) and isinstance(found, str):
            return _ordered(found, op, value)
        return False
    raise ValueError(f"unknown filter op {op!r}")


def json_equals(found: Any, value: Any) -> bool:
    """Equality of a JSON value and a rule value of the same kind (string, number or boolean)."""
    if found is None:
        return False
    if isinstance(value, bool) or isinstance(found, bool):
        return isinstance(value, bool) and isinstance(found, bool) and found == value
    if _is_number(value):
        return _is_number(found) and Decimal(str(found)) == Decimal(str(value))
    return isinstance(found, str) and found == value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _ordered(left: Any, op: str, right: Any) -> bool:
    if op == "gt":
        return bool(left > right)
    if op == "gte":
        return bool(left >= right)
    if op == "lt":
        return bool(left < right)
    return bool(left <= right)


# --- orders matching ------------------------------------------------------------------------------


def _order_filter_passes(order: OrderFact, order_filter: rules.OrderFilter) -> bool:
    op, value = order_filter.op, order_filter.value
    if order_filter.field == "coupon":
        return _coupon_test(order.coupons, op, value)
    if order_filter.field in ("total", "discount"):
        return _number_test(getattr(order, order_filter.field), op, value)
    return _text_test(getattr(order, order_filter.field), op, value)


def _coupon_test(coupons: tuple[str, ...], op: str, value: Any) -> bool:
    """A test on the order's coupons: true when any coupon passes (negative ops: when none does)."""
    if op in NEGATIVE_OPS:
        return not _coupon_test(coupons, POSITIVE_OF[op], value)
    return any(json_test(coupon, op, value) for coupon in coupons)


# --- profile attributes ---------------------------------------------------------------------------


def _attribute(rule: rules.AttributeRule, profile: Mapping[str, Any], ctx: EvalContext) -> bool:
    if rule.property is not None:
        properties = profile.get("properties") or {}
        found = properties.get(rule.property)
        if rule.op in ("within_last_days", "more_than_days_ago"):
            return _days_test(
                periods.parse_instant(found, ctx.timezone) if isinstance(found, str) else None, rule, ctx
            )
        return json_test(found, rule.op, rule.value)
    assert rule.field is not None  # the model requires exactly one of field / property
    found = profile.get(rule.field)
    if rule.field in TIME_FIELDS:
        if rule.op in ("within_last_days", "more_than_days_ago"):
            return _days_test(found, rule, ctx)
        return _time_test(found, rule.op, rule.value, ctx.timezone)
    if rule.op in ("within_last_days", "more_than_days_ago"):
        return False  # only times are so many days ago
    if rule.field in NUMBER_FIELDS:
        return _number_test(found, rule.op, rule.value)
    return _text_test(found, rule.op, rule.value)


def _days_test(found: datetime | None, rule: rules.AttributeRule, ctx: EvalContext) -> bool:
    if found is None:
        return False
    assert isinstance(rule.value, int)  # the model requires a whole number of days
    cutoff = ctx.now - timedelta(days=rule.value)
    return found >= cutoff if rule.op == "within_last_days" else found < cutoff


def text_form(value: Any) -> str:
    """A rule value as text, the way it is compared with a text column (JSON spelling)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _text_test(found: str | None, op: str, value: Any) -> bool:
    """A test on a text column: exact equality, case-insensitive contains/starts_with."""
    if op in NEGATIVE_OPS:
        return not _text_test(found, POSITIVE_OF[op], value)
    if found is None:
        return False
    if op == "exists":
        return True
    if op == "eq":
        return found == text_form(value)
    if op == "in":
        return found in {text_form(candidate) for candidate in value}
    if op == "contains":
        return text_form(value).lower() in found.lower()
    if op == "starts_with":
        return found.lower().startswith(text_form(value).lower())
    if op in ("gt", "gte", "lt", "lte"):
        return _ordered(found, op, text_form(value))
    raise ValueError(f"unknown filter op {op!r}")


def _number_test(found: Any, op: str, value: Any) -> bool:
    """A test on a numeric column; a rule value that is not a number never matches."""
    if op in NEGATIVE_OPS:
        return not _number_test(found, POSITIVE_OF[op], value)
    number = _decimal(found)
    if number is None:
        return False
    if op == "exists":
        return True
    if op == "in":
        return any(_number_test(found, "eq", candidate) for candidate in value)
    wanted = _decimal(value) if _is_number(value) else None
    if wanted is None or op in ("contains", "starts_with"):
        return False
    return number == wanted if op == "eq" else _ordered(number, op, wanted)


def _time_test(found: datetime | None, op: str, value: Any, timezone: str) -> bool:
    """A test on a time column; a date-only value stands for that whole day in the store's zone."""
    if op in NEGATIVE_OPS:
        return not _time_test(found, POSITIVE_OF[op], value, timezone)
    if found is None:
        return False
    if op == "exists":
        return True
    if op == "in":
        return any(_time_test(found, "eq", candidate, timezone) for candidate in value)
    span = periods.time_span(value, timezone) if isinstance(value, str) else None
    if span is None or op in ("contains", "starts_with"):
        return False
    start, end = span
    if op == "eq":
        return start <= found < end
    if op == "gt":
        return found >= end
    if op == "gte":
        return found >= start
    if op == "lt":
        return found < start
    return found < end  # lte


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        return None


# --- birthday and location ------------------------------------------------------------------------


def _birthday(rule: rules.BirthdayRule, birthday: date | None, ctx: EvalContext) -> bool:
    if birthday is None:
        return False
    if rule.within_next_days is not None:
        upcoming = periods.upcoming_month_days(ctx.now, ctx.timezone, rule.within_next_days)
        return (birthday.month, birthday.day) in upcoming
    return birthday.month == rule.month and (rule.day is None or birthday.day == rule.day)


def _location(rule: rules.LocationRule, profile: Mapping[str, Any]) -> bool:
    values: Sequence[str] = [rule.value] if isinstance(rule.value, str) else rule.value
    if rule.field == "zip_prefix":
        zip_code = profile.get("zip")
        found = zip_code is not None and any(zip_code.lower().startswith(v.lower()) for v in values)
    elif rule.field == "country":
        country = profile.get("country")
        found = country is not None and country.upper() in {v.upper() for v in values}
    else:
        found = profile.get(rule.field) in set(values)
    return found if rule.op in ("eq", "in") else not found


def evaluate_many(rule: Any, facts: Iterable[tuple[int, CustomerFacts]], ctx: EvalContext) -> set[int]:
    """The ids among `facts` that are members of `rule` at `ctx`."""
    return {customer_id for customer_id, one in facts if evaluate(rule, one, ctx)}
