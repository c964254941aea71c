"""Stepping a flow run: a pure function of (plan, run state, stimulus, context, now).

`step` walks the run from its current node until it has to wait (a delay, a wait for an event) or
ends, and returns the new state plus the commands the worker must carry out in the same
transaction (write an outbox message, add a tag, …). It reads no clock, database or random
source: time is `now`, customer data comes in `StepContext`, and splits draw from a hash of the
run id and node id, so a replayed step makes the same choice and the same commands.

Every command carries an idempotency key `"{run_id}:{node_id}"`: applying a command twice (after a
crash between writing it and recording the step) is detected by the worker and ignored.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from zoneinfo import ZoneInfo

from winback.flows import definition as d
from winback.segments import evaluator

Status = Literal["active", "waiting", "completed", "exited"]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_STEPS = 1_000  # nodes passed in one call; a tree is finite, this only guards a corrupt plan


@dataclass(frozen=True, slots=True)
class Visit:
    node_id: str
    at: datetime
    outcome: str  # "entered", "passed", "yes", "no", "event", "timeout", "branch:<n>", "held out", …


@dataclass(frozen=True, slots=True)
class RunState:
    run_id: int
    node_id: str | None  # None before the first step
    status: Status
    entered_at: datetime  # when the run entered the flow
    node_entered_at: datetime | None = None  # when the current node was reached
    wake_at: datetime | None = None
    exit_reason: str | None = None
    history: tuple[Visit, ...] = ()

    @property
    def is_finished(self) -> bool:
        return self.status in ("completed", "exited")


@dataclass(frozen=True, slots=True)
class Tick:
    """Time has passed (the run's wake-at is due, or it was just enrolled)."""


@dataclass(frozen=True, slots=True)
class EventArrived:
    event: str
    timestamp: datetime
    properties: Mapping[str, Any]


Stimulus = Tick | EventArrived


@dataclass(frozen=True, slots=True)
class StepContext:
    """What the worker knows about the customer when it steps a run."""

    facts: evaluator.CustomerFacts  # for segment-rule conditions and entry filters
    trigger: Mapping[str, Any]  # the trigger event's properties (a snapshot taken at entry)
    events_since_entry: Sequence[evaluator.EventFact] = ()
    checkout_status: str | None = None  # of the checkout that triggered the run, if any
    customer_timezone: str | None = None
    store_timezone: str = "UTC"

    @property
    def timezone(self) -> str:
        return self.customer_timezone or self.store_timezone


@dataclass(frozen=True, slots=True)
class Command:
    """Something the worker must do; `key` makes it happen at most once."""

    key: str
    node_id: str
    action: Any  # a definition action model (SendSms, AddTag, …)


@dataclass(frozen=True, slots=True)
class StepResult:
    state: RunState
    commands: tuple[Command, ...] = ()


@dataclass
class Plan:
    """A validated flow definition indexed for stepping."""

    flow: d.FlowDefinition
    nodes: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.nodes = {node.id: node for node in self.flow.nodes}


# --- the step function --------------------------------------------------------------------------


def step(plan: Plan, state: RunState, stimulus: Stimulus, context: StepContext, now: datetime) -> StepResult:
    """Advance the run as far as it can go now."""
    if state.is_finished:
        return StepResult(state)
    commands: list[Command] = []
    history = list(state.history)

    if state.node_id is None:
        state = _at(state, plan.flow.start, now)
        history.append(Visit(plan.flow.start, now, "entered"))
    else:
        resumed = _resume(plan, state, stimulus, now, history, context.trigger)
        if resumed is None:  # still waiting: unless an exit condition now holds ("stop once they buy")
            reason = exit_reason(plan.flow.exit_when, context)
            if reason is None:
                return StepResult(state)
            history.append(Visit(state.node_id, now, "exited"))
            return _finish(state, "exited", reason, now, history, commands)
        state = resumed

    for _ in range(MAX_STEPS):
        node = plan.nodes[state.node_id]  # type: ignore[index]
        if isinstance(node, d.ActionNode):
            reason = None if node.ignore_exit_conditions else exit_reason(plan.flow.exit_when, context)
            if reason is not None:
                return _finish(state, "exited", reason, now, history, commands)
            commands.append(Command(key=f"{state.run_id}:{node.id}", node_id=node.id, action=node.action))
            history.append(Visit(node.id, now, "passed"))
            if node.next is None:
                return _finish(state, "completed", "completed", now, history, commands)
            state = _goto(state, node.next, now, history)
            continue
        if isinstance(node, d.ExitNode):
            history.append(Visit(node.id, now, "passed"))
            return _finish(
                state,
                "completed" if node.reason == "completed" else "exited",
                node.reason,
                now,
                history,
                commands,
            )
        if isinstance(node, d.ConditionNode):
            outcome = condition_holds(node, context, state.entered_at, now)
            history.append(Visit(node.id, now, "yes" if outcome else "no"))
            state = _goto(state, node.yes if outcome else node.no, now, history)
            continue
        if isinstance(node, d.RandomSplitNode):
            index = pick_branch([branch.percent for branch in node.branches], draw(state.run_id, node.id))
            history.append(Visit(node.id, now, f"branch:{index}"))
            state = _goto(state, node.branches[index].next, now, history)
            continue
        if isinstance(node, d.HoldoutNode):
            if draw(state.run_id, node.id) < node.percent / 100:
                history.append(Visit(node.id, now, "held out"))
                return _finish(state, "exited", "holdout", now, history, commands)
            history.append(Visit(node.id, now, "passed"))
            state = _goto(state, node.next, now, history)
            continue
        if isinstance(node, d.DelayNode):
            wake_at = delay_until(node, context, now)
            if wake_at is None:  # no birthday on the profile, or no such product in the order
                if node.supply is not None:
                    history.append(Visit(node.id, now, "skipped: not in the order"))
                    return _finish(state, "exited", "product not in the order", now, history, commands)
                history.append(Visit(node.id, now, "skipped: no date"))
                return _finish(state, "exited", "no date to wait for", now, history, commands)
            if wake_at <= now:
                history.append(Visit(node.id, now, "passed"))
                state = _goto(state, node.next, now, history)
                continue
            return _wait(state, wake_at, history, commands)
        if isinstance(node, d.WaitForEventNode):
            return _wait(state, now + timedelta(seconds=node.timeout.seconds), history, commands)
        raise TypeError(f"unknown node type {type(node).__name__}")
    raise RuntimeError(f"run {state.run_id} passed {MAX_STEPS} nodes in one step; the plan must be a tree")


def _resume(
    plan: Plan,
    state: RunState,
    stimulus: Stimulus,
    now: datetime,
    history: list[Visit],
    trigger: Mapping[str, Any],
) -> RunState | None:
    """Leave the node the run waits at, when the stimulus allows it; None: keep waiting."""
    node = plan.nodes[state.node_id]  # type: ignore[index]
    if isinstance(node, d.WaitForEventNode):
        if (
            isinstance(stimulus, EventArrived)
            and stimulus.event == node.event
            and state.node_entered_at is not None
            and stimulus.timestamp >= state.node_entered_at
            and filters_pass(node.where, stimulus.properties, trigger)
        ):
            history.append(Visit(node.id, now, "event"))
            return _goto(state, node.on_event, now, history)
        if state.wake_at is not None and now >= state.wake_at:
            history.append(Visit(node.id, now, "timeout"))
            return _goto(state, node.on_timeout, now, history)
        return None
    if isinstance(node, d.DelayNode):
        if state.wake_at is not None and now >= state.wake_at:
            history.append(Visit(node.id, now, "passed"))
            return _goto(state, node.next, now, history)
        return None
    # An active run at any other node (e.g. recovered after a crash) continues from it.
    return state


# The new states below are built field by field rather than with `dataclasses.replace`, which costs
# several times as much and runs a few times per step on the worker's hot path.


def _at(state: RunState, node_id: str, now: datetime) -> RunState:
    """The run active at `node_id`, entered at `now`, with no timer."""
    return RunState(
        state.run_id, node_id, "active", state.entered_at, now, None, state.exit_reason, state.history
    )


def _goto(state: RunState, node_id: str, now: datetime, history: list[Visit]) -> RunState:
    history.append(Visit(node_id, now, "entered"))
    return _at(state, node_id, now)


def _wait(state: RunState, wake_at: datetime, history: list[Visit], commands: list[Command]) -> StepResult:
    waiting = RunState(
        state.run_id,
        state.node_id,
        "waiting",
        state.entered_at,
        state.node_entered_at,
        wake_at,
        state.exit_reason,
        tuple(history),
    )
    return StepResult(waiting, tuple(commands))


def _finish(
    state: RunState, status: Status, reason: str, now: datetime, history: list[Visit], commands: list[Command]
) -> StepResult:
    finished = RunState(
        state.run_id,
        state.node_id,
        status,
        state.entered_at,
        state.node_entered_at,
        None,
        reason,
        tuple(history),
    )
    return StepResult(finished, tuple(commands))


# --- decisions (pure helpers, tested directly) --------------------------------------------------


def exit_reason(conditions: Sequence[Any], context: StepContext) -> str | None:
    """The first exit condition that holds, as a reason; None when the run may go on."""
    for condition in conditions:
        if isinstance(condition, d.EventSinceEntryExit) and _did_since_entry(condition, context):
            return f"{condition.event} since entry"
        if isinstance(condition, d.CheckoutCompletedExit) and context.checkout_status in (
            "completed",
            "recovered",
        ):
            return "checkout completed"
        if (
            isinstance(condition, d.UnsubscribedExit)
            and context.facts.profile.get(f"{condition.channel}_consent") == "unsubscribed"
        ):
            return f"unsubscribed from {condition.channel}"
    return None


def _did_since_entry(condition: d.EventSinceEntryExit, context: StepContext) -> bool:
    return any(
        event.event == condition.event and filters_pass(condition.where, event.properties, context.trigger)
        for event in context.events_since_entry
    )


def filters_pass(
    tests: Sequence[d.PropertyTest], properties: Mapping[str, Any], trigger: Mapping[str, Any] | None = None
) -> bool:
    """Whether an event's properties pass every test (a filter comparing with the trigger reads
    `trigger`, the properties of the event that started the run)."""
    return all(filter_passes(test, properties, trigger) for test in tests)


def filter_passes(
    test: d.PropertyTest, properties: Mapping[str, Any], trigger: Mapping[str, Any] | None = None
) -> bool:
    """One property test; `list[].field` holds for a positive op when some item passes, for a
    negative op when none passes the positive one (`neq`: no item equals)."""
    expected = test.value
    reference = getattr(test, "trigger", None)
    if reference is not None:
        expected = (trigger or {}).get(reference)
        if expected is None or isinstance(expected, dict | list):
            return False  # nothing (or nothing single) to compare with
    name, _, field_name = test.property.partition("[].")
    if not field_name:
        return evaluator.json_test(properties.get(name), test.op, expected)
    items = properties.get(name)
    negative = test.op in evaluator.NEGATIVE_OPS
    op = evaluator.POSITIVE_OF[test.op] if negative else test.op
    found = isinstance(items, list) and any(
        isinstance(item, dict) and evaluator.json_test(item.get(field_name), op, expected) for item in items
    )
    return not found if negative else found


def condition_holds(node: d.ConditionNode, context: StepContext, entered_at: datetime, now: datetime) -> bool:
    """All the parts the condition gives must hold."""
    if node.rule is not None:
        eval_context = evaluator.EvalContext(now=now, timezone=context.store_timezone)
        if not evaluator.evaluate(node.rule, context.facts, eval_context):
            return False
    if not filters_pass(node.trigger, context.trigger):
        return False
    return node.did_since_entry is None or _did_since_entry(node.did_since_entry, context)


def draw(run_id: int, node_id: str) -> Decimal:
    """A uniform number in [0, 1) fixed by the run and node (splits stay put across retries)."""
    digest = hashlib.sha256(f"{run_id}:{node_id}".encode()).digest()
    return Decimal(int.from_bytes(digest[:8], "big")) / Decimal(2**64)


def pick_branch(percents: Sequence[Decimal], number: Decimal) -> int:
    threshold = Decimal(0)
    for index, percent in enumerate(percents):
        threshold += percent / 100
        if number < threshold:
            return index
    return len(percents) - 1


def delay_until(node: d.DelayNode, context: StepContext, now: datetime) -> datetime | None:
    """When a delay node releases a run that reaches it at `now` (None: nothing to wait for)."""
    if node.duration is not None:
        return now + timedelta(seconds=node.duration.seconds)
    if node.supply is not None:
        days = supply_days(node.supply, context.trigger)
        return None if days is None else now + timedelta(days=max(days, 0))
    zone = ZoneInfo(context.timezone)
    local = now.astimezone(zone)
    if node.until_time is not None:
        allowed = set(node.weekdays or WEEKDAYS)
        for offset in range(8):
            day = local.date() + timedelta(days=offset)
            candidate = datetime.combine(day, node.until_time, tzinfo=zone)
            if candidate > local and WEEKDAYS[day.weekday()] in allowed:
                return candidate.astimezone(now.tzinfo)
        raise AssertionError("a weekday set always has a match within a week")  # pragma: no cover
    birthday = context.facts.profile.get("birthday")
    if not isinstance(birthday, date):
        return None
    for year in (local.year, local.year + 1):
        occurrence = _on_year(birthday, year) + timedelta(days=node.offset_days)
        moment = datetime.combine(occurrence, local.timetz().replace(tzinfo=None), tzinfo=zone)
        if moment > local:
            return moment.astimezone(now.tzinfo)
    return None


def supply_days(supply: d.SupplyDelay, trigger: Mapping[str, Any]) -> int | None:
    """Days until the supply bought with the trigger's order runs low: its quantity of the product
    (lines without a quantity count one) × days per item, less `minus_days`, rounded down (better
    a day early than a day without); None when the order has none of the product."""
    lines = trigger.get("products")
    quantity = Decimal(0)
    for line in lines if isinstance(lines, list) else ():
        if isinstance(line, dict) and str(line.get("product_id") or "") == supply.product_id:
            quantity += _quantity(line.get("quantity"))
    if quantity <= 0:
        return None
    return math.floor(quantity * supply.days_per_item) - supply.minus_days


def _quantity(value: Any) -> Decimal:
    if value is None:
        return Decimal(1)
    if isinstance(value, bool):
        return Decimal(0)
    try:
        quantity = Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)
    return quantity if quantity.is_finite() and quantity > 0 else Decimal(0)


def _on_year(day: date, year: int) -> date:
    """The date in `year`; 29 February becomes 28 February in years without it."""
    try:
        return day.replace(year=year)
    except ValueError:
        return day.replace(year=year, day=28)
