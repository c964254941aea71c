"""The segment rule language: pydantic models stored as JSON, one `type` tag per rule.

A segment definition is `{"schema_version": 1, "rule": <rule>}`. Rules nest through the groups
`all` (AND), `any` (OR) and `not`. Unknown fields and unknown types are refused, and every error
names the path of the bad part (e.g. `rule.rules[1].value`), so a malformed rule can never be
saved — and therefore can never match everyone by accident.

Semantics shared by the SQL compiler and the in-memory evaluator (they must agree):
- Comparisons against a missing value are false, except `neq`/`not_in`/`not_exists`, which are true
  (a customer without a city is "not in Paris").
- Money is compared as Decimal in the store currency; counts are integers.
- Periods resolve to a half-open UTC interval [start, end) from the injected clock in the store's
  timezone (`winback.segments.periods`).
- Orders count when not cancelled; money spent is order total minus refunds.
- Tombstones of merged profiles and erased profiles are never members.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from winback.kernel.errors import InvalidInput

SCHEMA_VERSION = 1
MAX_DEPTH = 20  # nesting deeper than this is refused (and is never what a marketer meant)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- periods and comparisons --------------------------------------------------------------------


class LastPeriod(Strict):
    """The last N units up to now, e.g. the last 30 days."""

    type: Literal["last"]
    amount: int = Field(ge=1, le=36_500)
    unit: Literal["minutes", "hours", "days", "weeks", "months", "years"] = "days"


class BetweenPeriod(Strict):
    """From the start date through the end date, inclusive, in the store's timezone."""

    type: Literal["between"]
    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> BetweenPeriod:
        if self.end < self.start:
            raise ValueError("end must not be before start")
        return self


class OnPeriod(Strict):
    """One calendar day in the store's timezone."""

    type: Literal["on"]
    date: date


class CalendarPeriod(Strict):
    """A calendar period relative to now in the store's timezone."""

    type: Literal["today", "yesterday", "this_week", "last_week", "this_month", "last_month"]


Period = Annotated[LastPeriod | BetweenPeriod | OnPeriod | CalendarPeriod, Field(discriminator="type")]

NumberOp = Literal["eq", "neq", "gt", "gte", "lt", "lte", "between"]


class Compare(Strict):
    """A numeric comparison: `{"op": "gte", "value": 500}` or `{"op": "between", "value": 100, "to": 200}`."""

    op: NumberOp
    value: Decimal
    to: Decimal | None = None

    @model_validator(mode="after")
    def _range(self) -> Compare:
        if self.op == "between":
            if self.to is None:
                raise ValueError("'between' needs 'to'")
            if self.to < self.value:
                raise ValueError("'to' must not be below 'value'")
        elif self.to is not None:
            raise ValueError("'to' is only for op 'between'")
        return self


class CountCompare(Compare):
    """A comparison of how many times something happened (whole numbers, never negative)."""

    @model_validator(mode="after")
    def _whole(self) -> CountCompare:
        for number in (self.value, self.to):
            if number is not None and (number < 0 or number != number.to_integral_value()):
                raise ValueError("counts are whole numbers, 0 or more")
        return self


AT_LEAST_ONCE = CountCompare(op="gte", value=Decimal(1))

# --- property filters (events, orders, custom profile properties) -------------------------------

FilterOp = Literal[
    "eq", "neq", "contains", "not_contains", "starts_with", "in", "not_in", "exists", "not_exists",
    "gt", "gte", "lt", "lte",
]  # fmt: skip
Scalar = str | int | float | bool


class PropertyFilter(Strict):
    """A test on one property: `{"property": "product_id", "op": "eq", "value": "p1"}`."""

    property: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_$][A-Za-z0-9_$\-. ]*$")
    op: FilterOp
    value: Scalar | list[Scalar] | None = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> PropertyFilter:
        return check_value(self, self.op, self.value)


def check_value(model: Any, op: str, value: Any) -> Any:
    """Refuse a value that does not fit the filter op (none, one, or a non-empty list)."""
    if op in ("exists", "not_exists"):
        if value is not None:
            raise ValueError(f"op '{op}' takes no value")
    elif op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise ValueError(f"op '{op}' needs a non-empty list of values")
    elif value is None or isinstance(value, list):
        raise ValueError(f"op '{op}' needs one value")
    elif op in ("gt", "gte", "lt", "lte") and (
        isinstance(value, bool) or not isinstance(value, int | float | str)
    ):
        raise ValueError(f"op '{op}' needs a number or an ISO date")
    return model


# --- groups and references ----------------------------------------------------------------------


class AllRule(Strict):
    """Every rule inside must match (AND). An empty `all` is refused: it would match everyone."""

    type: Literal["all"]
    rules: list[Rule] = Field(min_length=1, max_length=200)


class AnyRule(Strict):
    """At least one rule inside must match (OR)."""

    type: Literal["any"]
    rules: list[Rule] = Field(min_length=1, max_length=200)


class NotRule(Strict):
    type: Literal["not"]
    rule: Rule


class SegmentRule(Strict):
    """Member (or not) of another saved segment; cycles are refused when saved."""

    type: Literal["segment"]
    segment_id: int = Field(ge=1)
    member: bool = True


class ListRule(Strict):
    """Member (or not) of a static list."""

    type: Literal["list"]
    list_id: int = Field(ge=1)
    member: bool = True


# --- behaviour ----------------------------------------------------------------------------------


class MoneySpentRule(Strict):
    """Total spent (net of refunds, cancelled orders excluded), all time or in a period."""

    type: Literal["money_spent"]
    compare: Compare
    period: Period | None = None


class OrderCountRule(Strict):
    """Number of orders (cancelled ones excluded), all time or in a period."""

    type: Literal["order_count"]
    compare: CountCompare
    period: Period | None = None


class PlacedOrderRule(Strict):
    """Placed at least one order in the period (`placed: false`: placed none in it)."""

    type: Literal["placed_order"]
    period: Period
    placed: bool = True


class NotOrderedForRule(Strict):
    """Last order more than N days ago; people who never ordered only with `include_never_ordered`."""

    type: Literal["not_ordered_for"]
    days: int = Field(ge=1, le=36_500)
    include_never_ordered: bool = False


class OrderedProductRule(Strict):
    """Ordered a product (or one variant of it), ever or in a period."""

    type: Literal["ordered_product"]
    product_id: str = Field(min_length=1, max_length=255)
    variant_id: str | None = Field(default=None, min_length=1, max_length=255)
    period: Period | None = None


class OrderedFromCollectionRule(Strict):
    """Ordered a product of a collection (or category), ever or in a period."""

    type: Literal["ordered_from_collection"]
    collection: str = Field(min_length=1, max_length=300)
    period: Period | None = None


class AbandonedCheckoutRule(Strict):
    """Abandoned a checkout (a `Checkout Abandoned` happened), optionally in a period and above a value."""

    type: Literal["abandoned_checkout"]
    period: Period | None = None
    min_value: Decimal | None = Field(default=None, ge=0)


class EventRule(Strict):
    """Did an event a number of times in a period, with property filters.

    e.g. viewed product X at least twice in 7 days:
    `{"type": "event", "event": "Product Viewed", "where": [{"property": "product_id", "op": "eq",
    "value": "X"}], "count": {"op": "gte", "value": 2}, "period": {"type": "last", "amount": 7}}`.
    """

    type: Literal["event"]
    event: str = Field(min_length=1, max_length=200)
    where: list[PropertyFilter] = Field(default_factory=list, max_length=20)
    count: CountCompare = AT_LEAST_ONCE
    period: Period | None = None


OrderField = Literal[
    "total",
    "discount",
    "coupon",
    "shipping_country",
    "shipping_region",
    "shipping_city",
    "currency",
    "status",
]


class OrderFilter(Strict):
    field: OrderField
    op: FilterOp
    value: Scalar | list[Scalar] | None = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> OrderFilter:
        return check_value(self, self.op, self.value)


class OrdersMatchingRule(Strict):
    """Orders with given details (total above X, used coupon Y, shipped to Z) counted in a period."""

    type: Literal["orders_matching"]
    where: list[OrderFilter] = Field(min_length=1, max_length=20)
    count: CountCompare = AT_LEAST_ONCE
    period: Period | None = None


# --- attributes and location --------------------------------------------------------------------

ProfileField = Literal[
    "user_id", "email", "phone", "first_name", "last_name", "gender", "locale", "timezone",
    "city", "region", "zip", "country", "created_at", "first_seen_at", "last_seen_at",
    "first_order_at", "last_order_at", "orders_count", "total_spent", "average_order_value",
]  # fmt: skip
AttributeOp = Literal[
    "eq", "neq", "contains", "not_contains", "starts_with", "in", "not_in", "exists", "not_exists",
    "gt", "gte", "lt", "lte", "within_last_days", "more_than_days_ago",
]  # fmt: skip


class AttributeRule(Strict):
    """A profile field or a custom property (`property`), compared: `{"type": "attribute",
    "field": "country", "op": "eq", "value": "DE"}` or `{"type": "attribute", "property": "plan",
    "op": "in", "value": ["gold", "silver"]}`. Dates take ISO dates for gt/lt and a number of days
    for `within_last_days` / `more_than_days_ago`."""

    type: Literal["attribute"]
    field: ProfileField | None = None
    property: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_$][A-Za-z0-9_$\-. ]*$"
    )
    op: AttributeOp
    value: Scalar | list[Scalar] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> AttributeRule:
        if (self.field is None) == (self.property is None):
            raise ValueError("give exactly one of 'field' or 'property'")
        if self.op in ("within_last_days", "more_than_days_ago"):
            if isinstance(self.value, bool) or not isinstance(self.value, int) or self.value < 0:
                raise ValueError(f"op '{self.op}' needs a whole number of days")
            return self
        return check_value(self, self.op, self.value)


class TagRule(Strict):
    type: Literal["tag"]
    tag: str = Field(min_length=1, max_length=100)
    present: bool = True


class ContactRule(Strict):
    """Has (or lacks) an email address or a phone number."""

    type: Literal["has_contact"]
    channel: Literal["email", "phone"]
    present: bool = True


class ConsentRule(Strict):
    """Consent status on a channel; `none` means never recorded."""

    type: Literal["consent"]
    channel: Literal["email", "sms", "push"]
    status: Literal["subscribed", "unsubscribed", "none"]


class BirthdayRule(Strict):
    """Birthday within the next N days (0 = today), or in a month (and day)."""

    type: Literal["birthday"]
    within_next_days: int | None = Field(default=None, ge=0, le=366)
    month: int | None = Field(default=None, ge=1, le=12)
    day: int | None = Field(default=None, ge=1, le=31)

    @model_validator(mode="after")
    def _one_form(self) -> BirthdayRule:
        if (self.within_next_days is None) == (self.month is None):
            raise ValueError("give either 'within_next_days' or 'month' (with an optional 'day')")
        if self.day is not None and self.month is None:
            raise ValueError("'day' needs 'month'")
        return self


class LocationRule(Strict):
    """Country (ISO alpha-2), region/state, city, or zip/postal code prefix."""

    type: Literal["location"]
    field: Literal["country", "region", "city", "zip_prefix"]
    op: Literal["eq", "neq", "in", "not_in"] = "eq"
    value: str | list[str]

    @model_validator(mode="after")
    def _value_fits_op(self) -> LocationRule:
        if self.op in ("in", "not_in") and not (isinstance(self.value, list) and self.value):
            raise ValueError(f"op '{self.op}' needs a non-empty list")
        if self.op in ("eq", "neq") and not isinstance(self.value, str):
            raise ValueError(f"op '{self.op}' needs one value")
        return self


# --- messaging engagement -----------------------------------------------------------------------

ENGAGEMENT_EVENTS = {
    "received": "Message Delivered",
    "opened": "Message Opened",
    "clicked": "Message Clicked",
}


class EngagementRule(Strict):
    """Received / opened / clicked a message (any, or from one flow or on one channel) in a period."""

    type: Literal["engagement"]
    action: Literal["received", "opened", "clicked"]
    flow_id: str | None = Field(default=None, min_length=1, max_length=255)
    channel: Literal["email", "sms", "push"] | None = None
    count: CountCompare = AT_LEAST_ONCE
    period: Period | None = None


class LastEngagedRule(Strict):
    """Opened or clicked nothing for more than N days (people never engaged included)."""

    type: Literal["not_engaged_for"]
    days: int = Field(ge=1, le=36_500)


class UnsubscribedRule(Strict):
    """Unsubscribed from a channel (any channel when none is given)."""

    type: Literal["unsubscribed"]
    channel: Literal["email", "sms", "push"] | None = None


Rule = Annotated[
    AllRule | AnyRule | NotRule | SegmentRule | ListRule
    | MoneySpentRule | OrderCountRule | PlacedOrderRule | NotOrderedForRule | OrderedProductRule
    | OrderedFromCollectionRule | AbandonedCheckoutRule | EventRule | OrdersMatchingRule
    | AttributeRule | TagRule | ContactRule | ConsentRule | BirthdayRule | LocationRule
    | EngagementRule | LastEngagedRule | UnsubscribedRule,
    Field(discriminator="type"),
]  # fmt: skip

for _group in (AllRule, AnyRule, NotRule):
    _group.model_rebuild()


class SegmentDefinition(Strict):
    """What is stored for a segment: the rule and the version of this language it is written in."""

    schema_version: Literal[1] = SCHEMA_VERSION
    rule: Rule


_DEFINITION = TypeAdapter(SegmentDefinition)


def _path(location: tuple[int | str, ...]) -> str:
    """`('rule', 'all', 'rules', 1, 'event', 'count', 'value')` → `rule.rules[1].count.value`.

    Pydantic puts the discriminator's tag into the location; it is dropped here."""
    parts: list[str] = []
    tags = {"all", "any", "not", "segment", "list", "money_spent", "order_count", "placed_order",
            "not_ordered_for", "ordered_product", "ordered_from_collection", "abandoned_checkout",
            "event", "orders_matching", "attribute", "tag", "has_contact", "consent", "birthday",
            "location", "engagement", "not_engaged_for", "unsubscribed", "last", "between", "on",
            "today", "yesterday", "this_week", "last_week", "this_month", "last_month"}  # fmt: skip
    previous: int | str | None = None
    for part in location:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif part in tags and (isinstance(previous, int) or previous in ("rule", "period")):
            pass  # the union member pydantic tried, not a field
        else:
            parts.append(f".{part}" if parts else part)
        previous = part
    return "".join(parts) or "(root)"


def parse_definition(data: Any) -> SegmentDefinition:
    """Validate a stored or submitted definition; `InvalidInput` names every bad path."""
    if isinstance(data, dict) and "type" in data and "schema_version" not in data:
        data = {"schema_version": SCHEMA_VERSION, "rule": data}  # a bare rule is accepted too
    try:
        definition = _DEFINITION.validate_python(data)
    except ValidationError as exc:
        problems = [{"path": _path(error["loc"]), "message": error["msg"]} for error in exc.errors()]
        first = problems[0]
        raise InvalidInput(
            f"invalid segment rule at {first['path']}: {first['message']}",
            field=first["path"],
            problems=problems,
        ) from None
    depth = rule_depth(definition.rule)
    if depth > MAX_DEPTH:
        raise InvalidInput(f"segment rule is nested {depth} deep; the limit is {MAX_DEPTH}", field="rule")
    return definition


def children(rule: Any) -> list[Any]:
    if isinstance(rule, AllRule | AnyRule):
        return list(rule.rules)
    if isinstance(rule, NotRule):
        return [rule.rule]
    return []


def walk(rule: Any) -> list[Any]:
    """Every rule in the tree, depth first."""
    found = [rule]
    for child in children(rule):
        found.extend(walk(child))
    return found


def rule_depth(rule: Any) -> int:
    return 1 + max((rule_depth(child) for child in children(rule)), default=0)


def referenced_segments(rule: Any) -> set[int]:
    return {r.segment_id for r in walk(rule) if isinstance(r, SegmentRule)}


def referenced_lists(rule: Any) -> set[int]:
    return {r.list_id for r in walk(rule) if isinstance(r, ListRule)}


def depends_on_time(rule: Any) -> bool:
    """Whether membership can change with time alone (so it must be re-checked on a schedule)."""
    for node in walk(rule):
        period = getattr(node, "period", None)
        if period is not None and not isinstance(period, BetweenPeriod | OnPeriod):
            return True
        if isinstance(node, NotOrderedForRule | BirthdayRule | LastEngagedRule):
            return True
        if isinstance(node, AttributeRule) and node.op in ("within_last_days", "more_than_days_ago"):
            return True
    return False


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a segment definition (served at GET /api/v1/segments/schema)."""
    return _DEFINITION.json_schema()
