"""Back-testing a flow: replay the stored events of a period through it on a virtual clock.

`simulate_flow` streams the events of [start, end) in time order (with the entries a date or
schedule trigger would have made, from `simulate_schedules`) and feeds them to a `Simulation`,
an in-memory copy of what the live engine does: triggers match with `engine.trigger_matches`,
re-entry is judged by `engine.reentry_allows`, runs are stepped by the pure `stepping.step` at
each event's moment and at every wake-at in between, and a waiting run sees the later events of
its customer (exit conditions, awaited events). Nothing is written: runs, messages and actions
exist only in the report, which says per node how many runs would enter, wait, branch and end,
which messages would be sent, deferred or skipped by the same send policies the messaging pipeline
applies (consent, quiet hours, frequency caps), and the orders that followed.

Customer data is taken AS OF each simulated moment where the database keeps its history, and from
the stored profile where it does not (the approximation is spelled out in `NOTES`).
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from winback.db.engine import reading
from winback.db.expressions import one_of
from winback.db.models import Checkout, Customer, Event, Order
from winback.flows import definition as d
from winback.flows import engine as flow_engine
from winback.flows import reporting, simulate_schedules, stepping
from winback.kernel.clock import as_utc
from winback.messaging.caps import SentRecord
from winback.messaging.channels.base import ChannelName, family
from winback.messaging.policy import SendPolicy, SendRequest
from winback.messaging.quiet_hours import recipient_timezones
from winback.segments import evaluator, facts
from winback.segments.membership import SEGMENT_ENTERED, SEGMENT_EXITED
from winback.settings import Settings

CHUNK_SIZE = 2_000  # events fetched and fed per round trip
ATTRIBUTION_WINDOW = timedelta(days=5)
# The customer channel of each message action: these go through the send policies.
MESSAGE_CHANNEL: dict[str, ChannelName] = {
    "send_sms": "sms",
    "send_mms": "mms",
    "send_email": "email",
    "send_push": "push",
}
# How a decision is counted: by the rule that made it, not its sentence (which names times).
VERDICT_LABEL = {
    "no_address": "no address",
    "suppressed": "suppressed",
    "consent": "no consent",
    "cap": "frequency cap",
    "quiet_hours": "quiet hours",
}
COMPLETED_CHECKOUT = ("completed", "recovered")
ZERO = Decimal("0.00")
MAX_MERGE_HOPS = 10  # a chain of merges longer than this is left where it ends

NOTES = (
    "Messages are decided by the send policies the messaging pipeline applies (docs/messaging.md): "
    "an address on the profile, consent (SMS needs an opt-in, email only that nobody opted out, "
    "push a subscription), quiet hours in the recipient's timezone and frequency caps counted over "
    "the simulated sends of this flow (not over other flows' messages, and suppression lists are "
    "not consulted). A deferred message is counted as deferred, and then as sent when its wait "
    "ends (its attribution starts then) or as skipped if its run had exited by then.",
    "Customer data as of each simulated moment: order count, money spent, average order value, "
    "first and last order times, and the orders, events and abandoned checkouts that rules read "
    "are limited to what had happened by then; segment memberships are rebuilt from the stored "
    "Segment Entered/Exited events. Every other profile attribute (consent, names, tags, custom "
    "properties, timezone, birthday) and list memberships are taken as they are stored now; order "
    "statuses and refunds too.",
    "Actions are not carried out: tags, lists, properties or discounts a step would set do not "
    "change what later steps see.",
    "The simulation starts with no runs: runs from before the period, and the re-entry history "
    "they carry, are not considered.",
    "Date and schedule triggers fire at every one of their moments in the period (the live "
    "scheduler fires only the latest one missed during downtime). A segment's members at each "
    "moment are rebuilt from its stored Segment Entered/Exited events; members recorded when the "
    "segment was first evaluated, with no transition since, count as members throughout. "
    "Birthdays and first-order dates are taken as stored now.",
    "Random splits and holdouts draw from simulated run ids: the shares are those of a live run, "
    "the individual customers differ.",
    "Attributed orders: not cancelled, net of refunds, placed after a run entered and before its "
    "attribution window closed (also after the period's end); per node, an order goes to the last "
    "message that would have been sent to the customer before it, within the window. Orders of "
    "runs held out are reported apart, for comparison.",
)


# --- pure: customer facts as of a moment --------------------------------------------------------


def facts_as_of(known: evaluator.CustomerFacts, now: datetime) -> evaluator.CustomerFacts:
    """What the evaluator may know at `now`, from facts loaded for all time.

    Orders, events and abandoned checkouts after `now` are dropped, the order aggregates on the
    profile are recomputed from the orders left, and memberships of segments whose Segment
    Entered/Exited events were loaded are rebuilt from them."""
    orders = tuple(order for order in known.orders if order.placed_at <= now)
    counted = [order for order in orders if order.counts]
    spent = sum((order.total - order.refunded_total for order in counted), ZERO)
    refunded = sum((order.refunded_total for order in counted), ZERO)
    placed = [order.placed_at for order in counted]
    profile = {
        **known.profile,
        "orders_count": len(counted),
        "total_spent": spent,
        "total_refunded": refunded,
        "average_order_value": (spent / len(counted)).quantize(Decimal("0.01")) if counted else None,
        "first_order_at": min(placed) if placed else None,
        "last_order_at": max(placed) if placed else None,
    }
    return evaluator.CustomerFacts(
        profile=profile,
        orders=orders,
        events=tuple(event for event in known.events if event.timestamp <= now),
        checkouts=tuple(c for c in known.checkouts if c.abandoned_at is not None and c.abandoned_at <= now),
        segment_ids=_segments_as_of(known, now),
        list_ids=known.list_ids,
    )


def _segments_as_of(known: evaluator.CustomerFacts, now: datetime) -> frozenset[int]:
    """Membership at `now`: the last transition at or before it; before the first transition, the
    opposite of that transition; a segment without transitions keeps its stored membership."""
    transitions: dict[int, list[tuple[datetime, bool]]] = defaultdict(list)
    for event in known.events:
        if event.event in (SEGMENT_ENTERED, SEGMENT_EXITED):
            segment_id = event.properties.get("segment_id")
            if isinstance(segment_id, int):
                at = simulate_schedules.transition_time(event.timestamp, event.properties)
                transitions[segment_id].append((at, event.event == SEGMENT_ENTERED))
    if not transitions:
        return known.segment_ids
    members = set(known.segment_ids - set(transitions))
    for segment_id, changes in transitions.items():
        changes.sort(key=lambda change: change[0])
        if simulate_schedules.member_at(changes, now, segment_id in known.segment_ids):
            members.add(segment_id)
    return frozenset(members)


def fact_needs(definition: d.FlowDefinition, start: datetime, timezone: str) -> evaluator.FactNeeds:
    """The facts the flow's rules read anywhere in [start, …): bounds are taken at `start`, the
    earliest moment evaluated, so every later evaluation finds what it looks at."""
    context = evaluator.EvalContext(now=start, timezone=timezone)
    found = [definition.entry.filter] if definition.entry.filter is not None else []
    found += [node.rule for node in definition.nodes if isinstance(node, d.ConditionNode) and node.rule]
    if not found:
        return evaluator.FactNeeds()
    total = evaluator.FactNeeds(orders=True)  # the recomputed aggregates need every order
    for rule in found:
        total = total.merge(evaluator.needs(rule, context))
    total = replace(total, orders_since=None)
    if total.segment_ids:
        total = total.merge(evaluator.FactNeeds(events={SEGMENT_ENTERED: None, SEGMENT_EXITED: None}))
    return total


# --- pure: attribution --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderPlaced:
    customer_id: int
    order_id: str
    placed_at: datetime
    net_total: Decimal  # total less refunds
    currency: str


@dataclass(frozen=True, slots=True)
class Revenue:
    orders: int = 0
    revenue: Mapping[str, Decimal] = field(default_factory=dict)  # currency → amount

    def to_dict(self) -> dict[str, Any]:
        return {"orders": self.orders, "revenue": {cur: str(amount) for cur, amount in self.revenue.items()}}


def _revenue(orders: Iterable[OrderPlaced]) -> Revenue:
    count = 0
    amounts: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for order in orders:
        count += 1
        amounts[order.currency] += order.net_total
    return Revenue(count, dict(sorted(amounts.items())))


@dataclass(frozen=True, slots=True)
class Attribution:
    flow: Revenue  # orders after entering (runs not held out)
    held_out: Revenue  # orders after entering, of runs held out
    by_node: Mapping[str, Revenue]  # last message before the order


def attribute_orders(
    entries: Sequence[tuple[int, datetime, bool]],
    touches: Sequence[tuple[int, datetime, str]],
    orders: Iterable[OrderPlaced],
    window: timedelta,
) -> Attribution:
    """Orders that followed entries (customer, entered_at, held out) within `window` (strictly after:
    the order that triggered a run is not its result), each counted
    once; per node, each goes to the last message (customer, sent_at, node) before it in `window`."""
    entered: dict[int, list[tuple[datetime, bool]]] = defaultdict(list)
    for customer_id, at, held_out in entries:
        entered[customer_id].append((at, held_out))
    sent: dict[int, list[tuple[datetime, str]]] = defaultdict(list)
    for customer_id, at, node_id in touches:
        sent[customer_id].append((at, node_id))
    after_entry: list[OrderPlaced] = []
    after_holdout: list[OrderPlaced] = []
    by_node: dict[str, list[OrderPlaced]] = defaultdict(list)
    for order in sorted(orders, key=lambda o: (o.placed_at, o.order_id)):
        windows = [
            held for at, held in entered.get(order.customer_id, ()) if at < order.placed_at < at + window
        ]
        if not windows:
            continue
        if all(windows):
            after_holdout.append(order)
            continue
        after_entry.append(order)
        touched = [
            (at, node) for at, node in sent.get(order.customer_id, ()) if at < order.placed_at < at + window
        ]
        if touched:
            by_node[max(touched)[1]].append(order)
    return Attribution(
        flow=_revenue(after_entry),
        held_out=_revenue(after_holdout),
        by_node={node_id: _revenue(placed) for node_id, placed in sorted(by_node.items())},
    )


# --- the report ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageCounts:
    """Messages one node would send, by kind (send_sms, …), those skipped and those deferred (and
    sent later), each with why."""

    node_id: str
    kind: str
    would_send: int = 0
    skipped: Mapping[str, int] = field(default_factory=dict)
    deferred: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "kind": self.kind, "would_send": self.would_send,
                "skipped": dict(self.skipped), "deferred": dict(self.deferred)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class SimulationReport:
    start: datetime
    end: datetime
    timezone: str
    attribution_window: timedelta
    events_replayed: int
    triggered: int  # trigger events matched
    not_entered: Mapping[str, int]  # why a matched trigger started no run → how often
    runs: reporting.RunTotals  # started = entered; in_progress = waiting at the end
    exit_reasons: Mapping[str, int]  # runs that exited (not completed), by reason
    nodes: tuple[reporting.NodeCounts, ...]
    messages: tuple[MessageCounts, ...]
    actions: Mapping[str, int]  # every action a step would carry out (messages included), by kind
    attribution: Attribution
    notes: tuple[str, ...] = NOTES

    def channels(self) -> dict[str, dict[str, Any]]:
        """Messages per kind (channel) over all nodes."""
        totals: dict[str, dict[str, Any]] = {}
        for message in self.messages:
            entry = totals.setdefault(
                message.kind, {"would_send": 0, "skipped": Counter(), "deferred": Counter()}
            )
            entry["would_send"] += message.would_send
            entry["skipped"].update(message.skipped)
            entry["deferred"].update(message.deferred)
        return {
            kind: {
                "would_send": entry["would_send"],
                "skipped": dict(sorted(entry["skipped"].items())),
                "deferred": dict(sorted(entry["deferred"].items())),
            }
            for kind, entry in sorted(totals.items())
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times in ISO-8601, money as decimal strings."""
        return {
            "period": {
                "start": self.start.isoformat(),
                "end": self.end.isoformat(),
                "timezone": self.timezone,
            },
            "attribution_window_seconds": int(self.attribution_window.total_seconds()),
            "events_replayed": self.events_replayed,
            "triggered": self.triggered,
            "not_entered": dict(self.not_entered),
            "runs": {
                "entered": self.runs.started,
                "waiting_at_end": self.runs.in_progress,
                "completed": self.runs.completed,
                "exited": self.runs.exited,
                "exit_reasons": dict(self.exit_reasons),
            },
            "nodes": [
                {
                    "node_id": n.node_id,
                    "type": n.type,
                    "name": n.name,
                    "action": n.action,
                    "entered": n.entered,
                    "waiting": n.waiting,
                    "passed": n.passed,
                    "exited": dict(n.exited),
                    "outcomes": dict(n.outcomes),
                }
                for n in self.nodes
            ],  # fmt: skip
            "messages": [message.to_dict() for message in self.messages],
            "channels": self.channels(),
            "actions": dict(self.actions),
            "orders": {
                "after_entry": self.attribution.flow.to_dict(),
                "held_out": self.attribution.held_out.to_dict(),
                "by_node": {node: revenue.to_dict() for node, revenue in self.attribution.by_node.items()},
            },
            "notes": list(self.notes),
        }


# --- the in-memory engine -----------------------------------------------------------------------


class Lookup(Protocol):
    """Where a simulation finds customer data (loaded for all time; cut to the moment by it)."""

    def facts(self, customer_id: int) -> evaluator.CustomerFacts | None: ...

    def checkout_completed_at(self, checkout_id: str) -> datetime | None: ...


@dataclass
class _Run:
    state: stepping.RunState
    customer_id: int
    trigger: Mapping[str, Any]
    checkout_id: str | None
    key: tuple[int, str | None]
    events: list[evaluator.EventFact] = field(default_factory=list)  # since entry, names the flow reads


@dataclass(frozen=True, slots=True)
class _Deferred:
    """A message the send policies held back, until `at`."""

    run: _Run
    node_id: str
    kind: str
    queued_at: datetime
    at: datetime
    checked: bool  # whether the flow's exit rule is checked again when it goes (not for receipts)
    profile: Mapping[str, Any]


class Simulation:
    """The live engine's behaviour for one flow, in memory, driven by events in time order.

    Call `feed` with each event (never going back in time), then `finish(end)`."""

    def __init__(
        self, definition: d.FlowDefinition, *, timezone: str, lookup: Lookup, policy: SendPolicy | None = None
    ) -> None:
        self.plan = stepping.Plan(definition)
        self.policy = policy or SendPolicy.from_settings(Settings())
        self._sent: dict[int, list[SentRecord]] = defaultdict(list)  # simulated marketing sends
        self._deferred: list[_Deferred] = []  # messages waiting (quiet hours, caps), settled in `report`
        self._exited_at: dict[int, datetime] = {}  # runs that ended by an exit condition
        self.timezone = timezone
        self.lookup = lookup
        self.names = _event_names(definition)
        self.now: datetime | None = None
        self.triggered = 0
        self.not_entered: Counter[str] = Counter()
        self.visits: Counter[tuple[str, str]] = Counter()
        self.positions: Counter[tuple[str | None, str, str | None]] = Counter()
        self.messages: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        self.actions: Counter[str] = Counter()
        self.entries: list[tuple[int, datetime, bool]] = []
        self.touches: list[tuple[int, datetime, str]] = []
        self._runs: dict[int, _Run] = {}  # active and waiting runs by id
        self._by_customer: dict[int, set[int]] = defaultdict(set)
        self._active_keys: set[tuple[int, str | None]] = set()
        self._last_entered: dict[int, datetime] = {}
        self._timers: list[tuple[datetime, int]] = []  # (wake_at, run id), stale entries skipped
        self._ids = itertools.count(1)

    @property
    def customers_in_flow(self) -> set[int]:
        return set(self._by_customer)

    @property
    def open_checkouts(self) -> set[str]:
        """Checkouts of runs still going (their completion may still end a run)."""
        return {run.checkout_id for run in self._runs.values() if run.checkout_id is not None}

    def would_enrol(self, event: flow_engine.AppliedEvent) -> bool:
        return flow_engine.trigger_matches(self.plan.flow.trigger, event)

    def feed(self, event: flow_engine.AppliedEvent) -> None:
        """One event at its timestamp: due timers first, then the customer's waiting runs see it,
        then it may start a run."""
        self.advance(event.timestamp)
        self.now = event.timestamp
        for run_id in sorted(self._by_customer.get(event.customer_id, ())):
            run = self._runs[run_id]
            if event.event in self.names:
                run.events.append(evaluator.EventFact(event.event, event.timestamp, event.properties))
            stimulus = stepping.EventArrived(event.event or event.type, event.timestamp, event.properties)
            self._step(run, stimulus, event.timestamp)
        if self.would_enrol(event):
            self._enter(event)

    def fire(self, entry: flow_engine.AppliedEvent) -> None:
        """A date or schedule trigger's snapshot at its moment (from `simulate_schedules`): it may
        start a run; unlike an event, no waiting run sees it (the live scheduler emits none)."""
        self.advance(entry.timestamp)
        self.now = entry.timestamp
        self._enter(entry)

    def advance(self, until: datetime) -> None:
        """Step every run whose wake-at falls before `until`, each at its wake-at, in time order."""
        while self._timers and self._timers[0][0] < until:
            wake_at, run_id = heapq.heappop(self._timers)
            run = self._runs.get(run_id)
            if run is None or run.state.status != "waiting" or run.state.wake_at != wake_at:
                continue
            self.now = wake_at
            self._step(run, stepping.Tick(), wake_at)

    def finish(self, end: datetime) -> None:
        """Run the clock to `end`; runs still waiting then are counted where they wait."""
        self.advance(end)
        for run in self._runs.values():
            self._fold(run)
        self._runs.clear()

    def _enter(self, event: flow_engine.AppliedEvent) -> None:
        self.triggered += 1
        now = event.timestamp
        flow = self.plan.flow
        known = self.lookup.facts(event.customer_id)
        if known is None or not known.is_member_candidate:
            self.not_entered["no profile"] += 1
            return
        if flow.entry.filter is not None:
            context = evaluator.EvalContext(now=now, timezone=self.timezone)
            if not evaluator.evaluate(flow.entry.filter, facts_as_of(known, now), context):
                self.not_entered["entry filter"] += 1
                return
        if not flow_engine.reentry_allows(flow.entry.reentry, self._last_entered.get(event.customer_id), now):
            self.not_entered["re-entry policy"] += 1
            return
        checkout_id, scope = flow_engine.run_scope(flow.entry.one_run_per, event.properties)
        key = (event.customer_id, scope)  # never two active runs per customer (or checkout, order)
        if key in self._active_keys:
            self.not_entered["already in the flow"] += 1
            return
        self._last_entered[event.customer_id] = now
        run_id = next(self._ids)
        state = stepping.RunState(run_id=run_id, node_id=None, status="active", entered_at=now)
        run = _Run(state, event.customer_id, dict(event.properties), checkout_id, key)
        self._runs[run_id] = run
        self._by_customer[event.customer_id].add(run_id)
        self._active_keys.add(key)
        self._step(run, stepping.Tick(), now)

    def _step(self, run: _Run, stimulus: stepping.Stimulus, now: datetime) -> None:
        known = self.lookup.facts(run.customer_id) or evaluator.CustomerFacts(profile={})
        current = facts_as_of(known, now)
        checkout_status = None
        if run.checkout_id is not None:
            completed_at = self.lookup.checkout_completed_at(run.checkout_id)
            checkout_status = "completed" if completed_at is not None and completed_at <= now else "open"
        context = stepping.StepContext(
            facts=current,
            trigger=run.trigger,
            events_since_entry=tuple(run.events),
            checkout_status=checkout_status,
            customer_timezone=current.profile.get("timezone"),
            store_timezone=self.timezone,
        )
        result = stepping.step(self.plan, run.state, stimulus, context, now)
        run.state = result.state
        for command in result.commands:
            kind = command.action.type
            self.actions[kind] += 1
            if kind in MESSAGE_CHANNEL:
                self._decide(run, command, current.profile, now)
        if run.state.is_finished:
            self._fold(run)
            del self._runs[run.state.run_id]
            self._by_customer[run.customer_id].discard(run.state.run_id)
            if not self._by_customer[run.customer_id]:
                del self._by_customer[run.customer_id]
            self._active_keys.discard(run.key)
        elif run.state.status == "waiting" and run.state.wake_at is not None:
            heapq.heappush(self._timers, (run.state.wake_at, run.state.run_id))

    def _decide(
        self, run: _Run, command: stepping.Command, profile: Mapping[str, Any], now: datetime
    ) -> None:
        """What the send policies would do with one message (as the pipeline would decide it)."""
        customer_id = run.customer_id
        channel = MESSAGE_CHANNEL[command.action.type]
        transactional = bool(getattr(command.action, "transactional", False))
        address = {
            "sms": profile.get("phone"),
            "mms": profile.get("phone"),
            "email": profile.get("email"),
            "push": "subscribed" if profile.get("push_consent") == "subscribed" else None,
        }[channel]
        flow = self.plan.flow
        decision = self.policy.decide(
            SendRequest(
                channel=channel,
                now=now,
                transactional=transactional,
                category=flow.category,
                consent=profile.get(f"{'sms' if channel == 'mms' else channel}_consent"),
                has_address=bool(address),
                zones=recipient_timezones(
                    profile_timezone=profile.get("timezone"),
                    phone_e164=profile.get("phone"),
                    country=profile.get("country"),
                    store_timezone=self.timezone,
                ),
                country=profile.get("country"),
                region=profile.get("region"),
                history=tuple(self._sent[customer_id]),
                when_capped=flow.when_capped,
            )
        )
        tally = self.messages[(command.node_id, command.action.type)]
        if decision.action == "skip":
            tally["skipped: " + VERDICT_LABEL.get(decision.rule, decision.rule)] += 1
            return
        at = now
        if decision.action == "defer" and decision.until is not None:
            tally["deferred: " + VERDICT_LABEL.get(decision.rule, decision.rule)] += 1
            at = decision.until
            # Sent when the wait ends, unless the run has exited by then (as the pipeline does):
            # settled in `report`, once every run's end is known.
            node = self.plan.nodes.get(command.node_id)
            checked = not getattr(node, "ignore_exit_conditions", False) and not transactional
            self._deferred.append(
                _Deferred(run, command.node_id, command.action.type, now, at, checked, profile)
            )
        else:
            tally["would_send"] += 1
            self.touches.append((customer_id, at, command.node_id))
        if not transactional:
            self._sent[customer_id].append(SentRecord(at=at, channel=family(channel), category=flow.category))

    def _ended_before(self, waiting: _Deferred) -> str | None:
        """Why a deferred message would not go out when its wait ends (as the pipeline decides):
        its run exited by then, or the flow's exit rule came to hold while it waited."""
        exited = self._exited_at.get(waiting.run.state.run_id)
        if exited is not None and exited <= waiting.at:
            return "the run ended before it was sent"
        if not waiting.checked or not self.plan.flow.exit_when:
            return None
        checkout_status = None
        if waiting.run.checkout_id is not None:
            completed_at = self.lookup.checkout_completed_at(waiting.run.checkout_id)
            checkout_status = (
                "completed" if completed_at is not None and completed_at <= waiting.at else "open"
            )
        context = stepping.StepContext(
            facts=evaluator.CustomerFacts(profile=dict(waiting.profile)),
            trigger=waiting.run.trigger,
            events_since_entry=[
                e for e in waiting.run.events if waiting.queued_at <= e.timestamp <= waiting.at
            ],
            checkout_status=checkout_status,
        )
        reason = stepping.exit_reason(self.plan.flow.exit_when, context)
        return f"exit rule held while it waited ({reason})" if reason else None

    def _fold(self, run: _Run) -> None:
        """Count a run's visits and where it is (or ended) into the tallies."""
        state = run.state
        if state.status == "exited" and state.history:
            self._exited_at[state.run_id] = state.history[-1].at
        self.visits.update((visit.node_id, visit.outcome) for visit in state.history)
        self.positions[(state.node_id, state.status, state.exit_reason)] += 1
        self.entries.append((run.customer_id, state.entered_at, state.exit_reason == "holdout"))

    def report(
        self,
        *,
        start: datetime,
        end: datetime,
        window: timedelta,
        events_replayed: int,
        orders: Iterable[OrderPlaced],
    ) -> SimulationReport:
        counts = reporting.tally(
            ((node, outcome, n) for (node, outcome), n in self.visits.items()),
            ((node, status, reason, n) for (node, status, reason), n in self.positions.items()),
            self.plan.flow,
        )
        exit_reasons: Counter[str] = Counter()
        for (_, status, reason), n in self.positions.items():
            if status == "exited":
                exit_reasons[reason or status] += n
        for waiting in self._deferred:
            reason = self._ended_before(waiting)
            if reason is not None:
                self.messages[(waiting.node_id, waiting.kind)][f"skipped: {reason}"] += 1
            else:
                self.messages[(waiting.node_id, waiting.kind)]["would_send"] += 1
                self.touches.append((waiting.run.customer_id, waiting.at, waiting.node_id))
        self._deferred = []
        order = {node.id: index for index, node in enumerate(self.plan.flow.nodes)}
        messages = tuple(
            MessageCounts(
                node_id=node_id,
                kind=kind,
                would_send=tally["would_send"],
                skipped=dict(sorted((why, n) for why, n in tally.items() if why.startswith("skipped"))),
                deferred=dict(
                    sorted(
                        (why.removeprefix("deferred: "), n)
                        for why, n in tally.items()
                        if why.startswith("deferred")
                    )
                ),
            )
            for (node_id, kind), tally in sorted(self.messages.items(), key=lambda item: order[item[0][0]])
        )
        return SimulationReport(
            start=start,
            end=end,
            timezone=self.timezone,
            attribution_window=window,
            events_replayed=events_replayed,
            triggered=self.triggered,
            not_entered=dict(sorted(self.not_entered.items())),
            runs=counts.runs,
            exit_reasons=dict(sorted(exit_reasons.items())),
            nodes=counts.nodes,
            messages=messages,
            actions=dict(sorted(self.actions.items())),
            attribution=attribute_orders(self.entries, self.touches, orders, window),
        )


def _event_names(definition: d.FlowDefinition) -> set[str]:
    """Events a run keeps once entered: exit conditions, awaited events, "did X since entry"."""
    names = {c.event for c in definition.exit_when if isinstance(c, d.EventSinceEntryExit)}
    for node in definition.nodes:
        if isinstance(node, d.WaitForEventNode):
            names.add(node.event)
        if isinstance(node, d.ConditionNode) and node.did_since_entry is not None:
            names.add(node.did_since_entry.event)
    return names


# --- over the database (reads only) -------------------------------------------------------------


class _StoredData:
    """Customer facts and checkout completions read from the database, for the customers that
    entered (or may enter) the flow; dropped again when their runs end."""

    def __init__(self, session: Session, needs: evaluator.FactNeeds, context: evaluator.EvalContext) -> None:
        self.session = session
        self.needs = needs
        self.context = context
        self._facts: dict[int, evaluator.CustomerFacts] = {}
        self._checkouts: dict[str, datetime | None] = {}

    def facts(self, customer_id: int) -> evaluator.CustomerFacts | None:
        return self._facts.get(customer_id)

    def checkout_completed_at(self, checkout_id: str) -> datetime | None:
        return self._checkouts.get(checkout_id)

    def load(self, customer_ids: set[int], checkout_ids: set[str]) -> None:
        missing = customer_ids - set(self._facts)
        if missing:
            self._facts.update(facts.load_facts(self.session, missing, self.needs, self.context))
        wanted = checkout_ids - set(self._checkouts)
        if wanted:
            self._checkouts.update(dict.fromkeys(wanted))
            query = select(Checkout.external_id, Checkout.status, Checkout.completed_at).where(
                Checkout.kind == "checkout", one_of(Checkout.external_id, wanted)
            )
            for external_id, status, completed_at in self.session.execute(query):
                if status in COMPLETED_CHECKOUT and completed_at is not None:
                    self._checkouts[external_id] = as_utc(completed_at)

    def keep_only(self, customer_ids: set[int], checkout_ids: set[str]) -> None:
        self._facts = {cid: known for cid, known in self._facts.items() if cid in customer_ids}
        self._checkouts = {key: at for key, at in self._checkouts.items() if key in checkout_ids}


def _survivors(session: Session, customer_ids: set[int]) -> dict[int, int]:
    """Absorbed profile id → the profile it was finally merged into (events keep the id their
    customer had when they were applied)."""
    found: dict[int, int] = {}
    frontier = customer_ids
    for _ in range(MAX_MERGE_HOPS):
        if not frontier:
            break
        query = select(Customer.id, Customer.merged_into_id).where(
            one_of(Customer.id, frontier), Customer.merged_into_id.is_not(None)
        )
        hop = {absorbed: survivor for absorbed, survivor in session.execute(query) if survivor is not None}
        for absorbed, survivor in found.items():
            found[absorbed] = hop.get(survivor, survivor)
        for absorbed, survivor in hop.items():
            found.setdefault(absorbed, survivor)
        frontier = set(hop.values())
    return found


def _stream(session: Session, start: datetime, end: datetime) -> Iterator[Sequence[Any]]:
    """Processed events of [start, end) in time order, CHUNK_SIZE at a time (a server-side cursor
    on PostgreSQL; SQLite reads its cursor lazily)."""
    query = (
        select(Event.customer_id, Event.event, Event.type, Event.properties, Event.traits,
               Event.timestamp, Event.message_id)
        .where(Event.timestamp >= start, Event.timestamp < end, Event.customer_id.is_not(None))
        .order_by(Event.timestamp, Event.id)
    )  # fmt: skip
    result = session.execute(query, execution_options={"yield_per": CHUNK_SIZE})
    yield from result.partitions()


def _orders_of(
    session: Session, customer_ids: set[int], start: datetime, until: datetime
) -> Iterator[OrderPlaced]:
    ids = sorted(customer_ids)
    for index in range(0, len(ids), facts.CHUNK_SIZE):
        query = select(
            Order.customer_id,
            Order.order_id,
            Order.placed_at,
            Order.total,
            Order.refunded_total,
            Order.currency,
        ).where(
            one_of(Order.customer_id, ids[index : index + facts.CHUNK_SIZE]),
            Order.status != evaluator.CANCELLED,
            Order.placed_at >= start,
            Order.placed_at < until,
        )
        for customer_id, order_id, placed_at, total, refunded, currency in session.execute(query):
            assert customer_id is not None  # selected by customer id
            yield OrderPlaced(
                customer_id=customer_id,
                order_id=order_id,
                placed_at=as_utc(placed_at),
                net_total=Decimal(total) - Decimal(refunded or 0),
                currency=currency or "",
            )


class _Upcoming:
    """Scheduled entries (ascending by moment), handed out up to a moment, CHUNK_SIZE at most."""

    def __init__(self, entries: Iterator[flow_engine.AppliedEvent]) -> None:
        self._entries = entries
        self._next = next(entries, None)

    def until(self, moment: datetime | None) -> list[flow_engine.AppliedEvent]:
        """The entries at or before `moment` (None: any), at most CHUNK_SIZE of them."""
        taken = []
        while (
            self._next is not None
            and len(taken) < CHUNK_SIZE
            and (moment is None or self._next.timestamp <= moment)
        ):
            taken.append(self._next)
            self._next = next(self._entries, None)
        return taken


def _replay(
    simulation: Simulation,
    stored: _StoredData,
    events: list[flow_engine.AppliedEvent],
    entries: list[flow_engine.AppliedEvent],
) -> None:
    """Feed one chunk of events and the scheduled entries up to its end, in time order (an entry
    before an event at the same moment), loading the facts of the customers who may enter first."""
    entering = [event for event in events if simulation.would_enrol(event)] + entries
    stored.load(
        {event.customer_id for event in entering},
        {checkout_id for e in entering if (checkout_id := flow_engine.trigger_checkout_id(e.properties))},
    )
    tagged = heapq.merge(
        ((entry.timestamp, 0, entry) for entry in entries),
        ((event.timestamp, 1, event) for event in events),
        key=lambda item: (item[0], item[1]),
    )
    for _, is_event, item in tagged:
        if is_event:
            simulation.feed(item)
        else:
            simulation.fire(item)
    stored.keep_only(simulation.customers_in_flow, simulation.open_checkouts)


def simulate_flow(
    engine: Engine,
    definition: d.FlowDefinition,
    start: datetime,
    end: datetime,
    *,
    timezone: str,
    flow_id: int = 0,  # the saved flow's id, for scheduled snapshots' message ids (0: a draft file)
    attribution_window: timedelta = ATTRIBUTION_WINDOW,
    progress: Callable[[int, int], None] | None = None,  # (events done, events total)
    policy: SendPolicy | None = None,  # the store's quiet hours and caps (default: the settings')
) -> SimulationReport:
    """Replay the stored events of [start, end) through `definition` on a virtual clock and report
    what the flow would have done. Reads only; nothing is written anywhere."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    if end <= start:
        raise ValueError("the period must end after it starts")
    start, end = as_utc(start), as_utc(end)
    needs = fact_needs(definition, start, timezone)
    trigger = definition.trigger
    with reading(engine) as stream_session, reading(engine) as session:
        total = stream_session.scalar(
            select(func.count()).select_from(Event)
            .where(Event.timestamp >= start, Event.timestamp < end, Event.customer_id.is_not(None))
        ) or 0  # fmt: skip
        stored = _StoredData(session, needs, evaluator.EvalContext(now=start, timezone=timezone))
        simulation = Simulation(definition, timezone=timezone, lookup=stored, policy=policy)
        scheduled = _Upcoming(
            simulate_schedules.scheduled_entries(session, trigger, flow_id, start, end, timezone)
            if isinstance(trigger, d.DateTrigger | d.ScheduleTrigger)
            else iter(())
        )
        done = 0
        if progress is not None:
            progress(0, total)
        for rows in _stream(stream_session, start, end):
            merged = _survivors(session, {row.customer_id for row in rows})
            chunk = [
                flow_engine.AppliedEvent(
                    customer_id=merged.get(row.customer_id, row.customer_id),
                    event=row.event,
                    type=row.type,
                    properties=row.properties or {},
                    traits=row.traits or {},
                    timestamp=as_utc(row.timestamp),
                    message_id=row.message_id,
                )
                for row in rows
            ]
            _replay(simulation, stored, chunk, scheduled.until(chunk[-1].timestamp))
            done += len(rows)
            if progress is not None:
                progress(done, total)
        while entries := scheduled.until(None):  # scheduled entries after the last event
            _replay(simulation, stored, [], entries)
        simulation.finish(end)
        enrolled = {customer_id for customer_id, _, _ in simulation.entries}
        orders = list(_orders_of(session, enrolled, start, end + attribution_window))
    return simulation.report(
        start=start, end=end, window=attribution_window, events_replayed=done, orders=orders
    )
