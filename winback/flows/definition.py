"""The flow definition language: a trigger, entry rules, exit conditions and a tree of steps.

Stored as JSON (and importable/exportable as YAML or JSON files); pydantic models with a `type`
tag on every variant and unknown fields refused. Steps form a tree: each node names the node(s)
that follow it by id. `validate_flow` returns every problem with the id of the node it concerns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from winback.kernel.errors import InvalidInput
from winback.segments import rules

SCHEMA_VERSION: Final = 1
NODE_ID = r"^[a-z0-9][a-z0-9_\-]{0,63}$"
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Duration(Strict):
    """`{"amount": 24, "unit": "hours"}`."""

    amount: int = Field(ge=1, le=100_000)
    unit: Literal["seconds", "minutes", "hours", "days", "weeks"]

    @property
    def seconds(self) -> int:
        return (
            self.amount
            * {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86_400, "weeks": 604_800}[self.unit]
        )


# --- triggers -----------------------------------------------------------------------------------


PROPERTY_NAME = r"^[A-Za-z0-9_$][A-Za-z0-9_$\-. ]*$"
# A property name, or `list[].field` for the items of a list property (`products[].category`).
PROPERTY_PATH = r"^[A-Za-z0-9_$][A-Za-z0-9_$\-. ]*(\[\]\.[A-Za-z0-9_$][A-Za-z0-9_$\-. ]*)?$"
ONE_VALUE_OPS = frozenset({"eq", "neq", "contains", "not_contains", "starts_with", "gt", "gte", "lt", "lte"})


class PropertyTest(Strict):
    """A test on one property of an event: `{"property": "value", "op": "gt", "value": 200}`.

    `products[].category` tests the items of a list property: a positive op holds when some item
    passes (`eq`: an item is in that category), a negative one when none does (`neq`: no item is).
    """

    property: str = Field(min_length=1, max_length=200, pattern=PROPERTY_PATH)
    op: rules.FilterOp
    value: rules.Scalar | list[rules.Scalar] | None = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> PropertyTest:
        if getattr(self, "trigger", None) is not None:
            if self.value is not None:
                raise ValueError("give 'value' or 'trigger', not both")
            if self.op not in ONE_VALUE_OPS:
                raise ValueError(f"op '{self.op}' cannot compare with the trigger; use one of "
                                 f"{', '.join(sorted(ONE_VALUE_OPS))}")  # fmt: skip
            return self
        rules.check_value(self, self.op, self.value)
        return self


class EventFilter(PropertyTest):
    """A test on a property of an event a run sees. Instead of a `value`, `trigger: order_id`
    compares with that property of the event that started the run (`Review Submitted` whose
    `order_id` is the order the run is about); if the trigger lacks it, the test fails."""

    trigger: str | None = Field(default=None, min_length=1, max_length=200, pattern=PROPERTY_NAME)


class EventTrigger(Strict):
    """An event (incl. derived ones such as `Checkout Abandoned`) with property filters."""

    type: Literal["event"]
    event: str = Field(min_length=1, max_length=200)
    where: list[PropertyTest] = Field(default_factory=list, max_length=20)


class SegmentTrigger(Strict):
    type: Literal["segment_entered", "segment_exited"]
    segment_id: int = Field(ge=1)


class ListTrigger(Strict):
    type: Literal["list_joined"]
    list_id: int = Field(ge=1)


class DateTrigger(Strict):
    """Yearly on a date property: N days before (negative) or after (positive) the birthday or the
    anniversary of the first order, at a local time of day."""

    type: Literal["date"]
    property: Literal["birthday", "first_order_at"]
    offset_days: int = Field(default=0, ge=-365, le=365)
    at: time = time(10, 0)


class PropertyChangedTrigger(Strict):
    type: Literal["property_changed"]
    property: str = Field(min_length=1, max_length=200)


class ScheduleTrigger(Strict):
    """Enrol a segment's members once at a moment (a campaign), or on a cron schedule in the
    store's timezone (a recurring promotion, a daily audience)."""

    type: Literal["schedule"]
    segment_id: int = Field(ge=1)
    at: str | None = Field(default=None, description="ISO date-time for a one-off send")
    recipient_local_time: bool = False  # send at `at`'s wall time in each recipient's timezone
    cron: str | None = Field(default=None, description="five-field cron, store timezone")

    @model_validator(mode="after")
    def _one_schedule(self) -> ScheduleTrigger:
        if (self.at is None) == (self.cron is None):
            raise ValueError("give either 'at' (once) or 'cron' (recurring)")
        if self.cron is not None and len(self.cron.split()) != 5:
            raise ValueError("cron needs five fields: minute hour day-of-month month day-of-week")
        if self.recipient_local_time and self.at is None:
            raise ValueError("'recipient_local_time' goes with 'at'")
        if self.at is not None:
            try:
                datetime.fromisoformat(self.at)
            except ValueError:
                raise ValueError(
                    f"'at' must be an ISO date-time such as 2026-11-27T09:00:00, got {self.at!r}"
                ) from None
        if self.cron is not None:
            try:
                CronSim(self.cron, datetime(2000, 1, 1))
            except CronSimError as exc:
                raise ValueError(f"invalid cron {self.cron!r}: {exc}") from None
        return self


Trigger = Annotated[
    EventTrigger | SegmentTrigger | ListTrigger | DateTrigger | PropertyChangedTrigger | ScheduleTrigger,
    Field(discriminator="type"),
]


class ReentryPolicy(Strict):
    """once ever, once per N days, or every time (never two active runs at once either way)."""

    mode: Literal["once", "every_time", "once_per_days"] = "once_per_days"
    days: int | None = Field(default=30, ge=1, le=3650)

    @model_validator(mode="after")
    def _days_for_mode(self) -> ReentryPolicy:
        if self.mode == "once_per_days" and self.days is None:
            raise ValueError("'once_per_days' needs 'days'")
        return self


class Entry(Strict):
    filter: rules.Rule | None = None  # any segment rule, checked on entry
    reentry: ReentryPolicy = ReentryPolicy()
    one_run_per: Literal["customer", "checkout", "order"] = "customer"


# --- exit conditions ----------------------------------------------------------------------------


class EventSinceEntryExit(Strict):
    """Exit once the customer did an event after entering (e.g. `Order Completed`)."""

    type: Literal["event_since_entry"]
    event: str = Field(min_length=1, max_length=200)
    where: list[EventFilter] = Field(default_factory=list, max_length=20)


class CheckoutCompletedExit(Strict):
    """Exit once the checkout that triggered the run is completed or recovered."""

    type: Literal["checkout_completed"]


class UnsubscribedExit(Strict):
    type: Literal["unsubscribed"]
    channel: Literal["email", "sms", "push"]


ExitCondition = Annotated[
    EventSinceEntryExit | CheckoutCompletedExit | UnsubscribedExit, Field(discriminator="type")
]


# --- actions ------------------------------------------------------------------------------------


class SendSms(Strict):
    type: Literal["send_sms"]
    body: str = Field(min_length=1, max_length=1600)
    transactional: bool = False  # an order confirmation, not marketing: no opt-in, quiet hours or caps


class SendMms(Strict):
    type: Literal["send_mms"]
    body: str = Field(min_length=1, max_length=1600)
    media: Literal["cart_grid"] | str = "cart_grid"  # the cart's product images as one grid, or a URL
    transactional: bool = False


class SendEmail(Strict):
    type: Literal["send_email"]
    subject: str = Field(min_length=1, max_length=300)
    html: str | None = None
    text: str = Field(min_length=1)
    transactional: bool = False


class SendPush(Strict):
    type: Literal["send_push"]
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=1000)
    url: str | None = None
    transactional: bool = False


class ListAction(Strict):
    type: Literal["add_to_list", "remove_from_list"]
    list_id: int = Field(ge=1)


class TagAction(Strict):
    type: Literal["add_tag", "remove_tag"]
    tag: str = Field(min_length=1, max_length=100)


class SetProperty(Strict):
    type: Literal["set_property"]
    property: str = Field(min_length=1, max_length=200)
    value: str | int | float | bool | None


class CreateDiscount(Strict):
    """A unique code for this customer (from a pattern) or a static code."""

    type: Literal["create_discount"]
    kind: Literal["percent", "amount", "free_shipping"]
    value: Decimal = Field(default=Decimal(0), ge=0)
    pattern: str = Field(default="WB-{random:8}", max_length=64)
    static_code: str | None = Field(default=None, max_length=64)
    expires_after: Duration | None = None


class NotifySlack(Strict):
    type: Literal["notify_slack"]
    text: str = Field(min_length=1, max_length=3000)


class MetaAudience(Strict):
    type: Literal["meta_audience_add", "meta_audience_remove"]
    audience_id: str = Field(min_length=1, max_length=100)


class CallWebhook(Strict):
    type: Literal["webhook"]
    url: str = Field(min_length=1, max_length=2000, pattern=r"^https?://")
    payload: dict[str, Any] | None = None


class ConversionGoal(Strict):
    type: Literal["conversion_goal"]
    name: str = Field(min_length=1, max_length=200)


Action = Annotated[
    SendSms | SendMms | SendEmail | SendPush | ListAction | TagAction | SetProperty | CreateDiscount
    | NotifySlack | MetaAudience | CallWebhook | ConversionGoal,
    Field(discriminator="type"),
]  # fmt: skip
MESSAGE_ACTIONS = (SendSms, SendMms, SendEmail, SendPush)


# --- nodes --------------------------------------------------------------------------------------


class NodeBase(Strict):
    id: str = Field(pattern=NODE_ID)
    name: str | None = Field(default=None, max_length=200)


class SupplyDelay(Strict):
    """Until a supply bought with the trigger's order runs low: the quantity of `product_id` on its
    lines (`products[]`) × `days_per_item`, less `minus_days` (shipping, and a lead to decide)."""

    product_id: str = Field(min_length=1, max_length=255)
    days_per_item: Decimal = Field(gt=0, le=3650)  # how long one item lasts (100 capsules, 1 a day: 100)
    minus_days: int = Field(default=0, ge=0, le=3650)


class DelayNode(NodeBase):
    """Wait a duration, until a local time of day (optionally on given weekdays), until a date
    property (plus an offset), or until a supply bought with the trigger's order runs low."""

    type: Literal["delay"]
    duration: Duration | None = None
    until_time: time | None = None
    weekdays: list[Weekday] | None = None
    until_property: Literal["birthday"] | None = None
    offset_days: int = 0
    supply: SupplyDelay | None = None
    next: str

    @model_validator(mode="after")
    def _one_kind(self) -> DelayNode:
        kinds = [
            self.duration is not None,
            self.until_time is not None,
            self.until_property is not None,
            self.supply is not None,
        ]
        if sum(kinds) != 1:
            raise ValueError(
                "a delay takes exactly one of 'duration', 'until_time', 'until_property' or 'supply'"
            )
        if self.weekdays is not None and self.until_time is None:
            raise ValueError("'weekdays' goes with 'until_time'")
        return self


class WaitForEventNode(NodeBase):
    """Wait for an event (yes branch) or the timeout (timed-out branch), whichever comes first."""

    type: Literal["wait_for_event"]
    event: str = Field(min_length=1, max_length=200)
    where: list[EventFilter] = Field(default_factory=list, max_length=20)
    timeout: Duration
    on_event: str
    on_timeout: str


class TriggerPropertyCondition(PropertyTest):
    """A property of the trigger event, e.g. `value` > 200 (or `products[].category` eq `Tea`)."""


class ConditionNode(NodeBase):
    """Yes/no on any segment rule, trigger properties, and "did X since the flow started" (all
    given parts must hold for yes)."""

    type: Literal["condition"]
    rule: rules.Rule | None = None
    trigger: list[TriggerPropertyCondition] = Field(default_factory=list, max_length=20)
    did_since_entry: EventSinceEntryExit | None = None
    yes: str
    no: str

    @model_validator(mode="after")
    def _something_to_test(self) -> ConditionNode:
        if self.rule is None and not self.trigger and self.did_since_entry is None:
            raise ValueError("a condition needs 'rule', 'trigger' or 'did_since_entry'")
        return self


class Branch(Strict):
    percent: Decimal = Field(gt=0, le=100)
    next: str


class RandomSplitNode(NodeBase):
    type: Literal["random_split"]
    branches: list[Branch] = Field(min_length=2, max_length=10)


class HoldoutNode(NodeBase):
    """A share of runs that gets no messages (exits as `holdout`), for measuring lift."""

    type: Literal["holdout"]
    percent: Decimal = Field(gt=0, lt=100)
    next: str


class ActionNode(NodeBase):
    """Do something. Exit conditions are checked first, unless this action is the reason for
    them (a thank-you for the order that would otherwise end the run)."""

    type: Literal["action"]
    action: Action
    next: str | None = None  # None: the run completes after the action
    ignore_exit_conditions: bool = False


class ExitNode(NodeBase):
    type: Literal["exit"]
    reason: str = Field(default="completed", max_length=200)


Node = Annotated[
    DelayNode | WaitForEventNode | ConditionNode | RandomSplitNode | HoldoutNode | ActionNode | ExitNode,
    Field(discriminator="type"),
]


class FlowDefinition(Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    trigger: Trigger
    entry: Entry = Entry()
    exit_when: list[ExitCondition] = Field(default_factory=list, max_length=20)
    start: str
    nodes: list[Node] = Field(min_length=1, max_length=500)
    priority: int = Field(default=50, ge=0, le=100)  # higher wins when frequency caps collide
    # Frequency caps may have a cap of their own per category ("sms:cart_recovery": "1/48").
    category: str | None = Field(default=None, pattern=r"^[a-z0-9_]{1,64}$")
    when_capped: Literal["skip", "defer"] = "skip"  # a marketing message over a cap


_DEFINITION = TypeAdapter(FlowDefinition)


# --- validation ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    node_id: str | None  # None: the flow as a whole
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "message": self.message}


def successors(node: Any) -> list[str]:
    """The ids a node leads to, in a stable order."""
    if isinstance(node, DelayNode | HoldoutNode):
        return [node.next]
    if isinstance(node, ActionNode):
        return [node.next] if node.next else []
    if isinstance(node, WaitForEventNode):
        return [node.on_event, node.on_timeout]
    if isinstance(node, ConditionNode):
        return [node.yes, node.no]
    if isinstance(node, RandomSplitNode):
        return [branch.next for branch in node.branches]
    return []


def validate_flow(definition: FlowDefinition) -> list[Problem]:
    """Every structural problem, each with the node it concerns (empty: the flow is sound)."""
    problems: list[Problem] = []
    by_id: dict[str, Any] = {}
    for node in definition.nodes:
        if node.id in by_id:
            problems.append(Problem(node.id, f"node id {node.id!r} is used twice"))
        by_id[node.id] = node
    if definition.start not in by_id:
        problems.append(Problem(None, f"'start' names {definition.start!r}, which is not a node"))
    for node in definition.nodes:
        for target in successors(node):
            if target not in by_id:
                problems.append(Problem(node.id, f"leads to {target!r}, which is not a node"))
            elif target == node.id:
                problems.append(Problem(node.id, "leads to itself"))
        if isinstance(node, RandomSplitNode):
            total = sum(branch.percent for branch in node.branches)
            if total != 100:
                problems.append(Problem(node.id, f"branch shares add up to {total} %, not 100 %"))
        if isinstance(node, WaitForEventNode) and node.on_event == node.on_timeout:
            problems.append(Problem(node.id, "the event and timeout branches lead to the same node"))
    if definition.start in by_id:
        problems.extend(_graph_problems(definition.start, by_id))
    scope = {"checkout": "a checkout", "order": "an order"}.get(definition.entry.one_run_per)
    if scope is not None and not isinstance(definition.trigger, EventTrigger):
        problems.append(
            Problem(None, f"one run per {definition.entry.one_run_per} needs an event trigger carrying {scope}")
        )
    return problems


def _graph_problems(start: str, by_id: dict[str, Any]) -> list[Problem]:
    """Unreachable nodes, and cycles (a run must always move towards an end)."""
    problems: list[Problem] = []
    reached: set[str] = set()
    on_path: set[str] = set()
    reported_cycle: set[str] = set()

    def visit(node_id: str) -> None:
        if node_id not in by_id:
            return
        if node_id in on_path:
            if node_id not in reported_cycle:
                reported_cycle.add(node_id)
                problems.append(Problem(node_id, "is part of a loop; steps must form a tree"))
            return
        if node_id in reached:
            return
        reached.add(node_id)
        on_path.add(node_id)
        for target in successors(by_id[node_id]):
            visit(target)
        on_path.discard(node_id)

    visit(start)
    for node_id in by_id:
        if node_id not in reached:
            problems.append(Problem(node_id, "is unreachable from 'start'"))
    return problems


def parse_flow(data: Any) -> FlowDefinition:
    """Validate a submitted flow: schema errors name their path; structural problems name their
    node. `InvalidInput.details["problems"]` lists them all."""
    try:
        definition = _DEFINITION.validate_python(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            location = error["loc"]
            node_id = None
            if len(location) >= 2 and location[0] == "nodes" and isinstance(location[1], int):
                raw_nodes = data.get("nodes") if isinstance(data, dict) else None
                if (
                    isinstance(raw_nodes, list)
                    and location[1] < len(raw_nodes)
                    and isinstance(raw_nodes[location[1]], dict)
                ):
                    node_id = raw_nodes[location[1]].get("id")
            path = ".".join(str(part) for part in location)
            problems.append({"node_id": node_id, "path": path, "message": error["msg"]})
        first = problems[0]
        where = f"node {first['node_id']!r}" if first["node_id"] else first["path"]
        raise InvalidInput(
            f"invalid flow at {where}: {first['message']}", field=first["path"], problems=problems
        ) from None
    structural = validate_flow(definition)
    if structural:
        first_problem = structural[0]
        where = f"node {first_problem.node_id!r}" if first_problem.node_id else "the flow"
        raise InvalidInput(
            f"invalid flow: {where} {first_problem.message}", problems=[p.to_dict() for p in structural]
        )
    return definition


def json_schema() -> dict[str, Any]:
    return _DEFINITION.json_schema()
