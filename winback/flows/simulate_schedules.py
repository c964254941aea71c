"""Date and schedule triggers in a back-test: the runs they would have started in a period.

A live flow with a date or schedule trigger is enrolled by the scheduler (`flows/scheduler.py`),
not by events. To back-test one, `scheduled_entries` yields, in time order, the trigger snapshots
the scheduler would have made in [start, end) — the same moments (`next_occurrences`, per-recipient
local times, birthdays and first-order anniversaries at each customer's local time) and the same
snapshot (`scheduler.trigger_event`) — and `simulate.simulate_flow` enters them like events.

Who is in a segment at an earlier moment is rebuilt from its stored `Segment Entered`/`Segment
Exited` events (`member_at`), each at the time of what caused it (`transition_time`); a member with
no transition at all (recorded silently when the segment was first evaluated) counts as a member
throughout. Birthdays and first-order dates are taken as stored now.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from winback.db.expressions import one_of
from winback.db.models import Customer, Event, SegmentMembership
from winback.flows import definition as d
from winback.flows import scheduler
from winback.flows.engine import AppliedEvent
from winback.kernel.clock import as_utc
from winback.segments.membership import SEGMENT_ENTERED, SEGMENT_EXITED

JUST_BEFORE = timedelta(microseconds=1)  # next_occurrences takes (after, until]; a period is [start, end)
CHUNK = 1_000  # customer ids per query


# --- pure ---------------------------------------------------------------------------------------


def member_at(changes: Sequence[tuple[datetime, bool]], now: datetime, stored: bool) -> bool:
    """Membership at `now` from a member's transitions (at, entered), in time order: the last one
    at or before `now`; before the first, the opposite of that first one; with none, `stored`."""
    if not changes:
        return stored
    before = bisect.bisect_right(changes, now, key=lambda change: change[0])
    return changes[before - 1][1] if before else not changes[0][1]


def transition_time(timestamp: datetime, properties: Mapping[str, Any]) -> datetime:
    """When a segment transition happened: the time of the events that caused it when they were
    older than the transition's own stamp (`caused_at`: imported history), else the stamp."""
    caused = properties.get("caused_at")
    if isinstance(caused, str):
        try:
            return min(as_utc(datetime.fromisoformat(caused)), timestamp)
        except ValueError:
            pass
    return timestamp


def date_firings(
    original: date, zone: str, trigger: d.DateTrigger, start: datetime, end: datetime
) -> list[tuple[datetime, date]]:
    """The moments in [start, end) at which a date trigger fires for a customer living by `zone`
    whose birthday (or first order's local day) is `original`, each with the anniversary it marks.
    The same rule as the live scheduler's `scheduler.is_due`, walked forward instead of asked."""
    found = []
    offset = timedelta(days=trigger.offset_days)
    tz = ZoneInfo(zone)
    # The offset reaches up to a year either way, so the anniversaries looked at do too.
    for year in range(start.astimezone(tz).year - 2, end.astimezone(tz).year + 3):
        target = scheduler.anniversary(original, year)
        local_day = target + offset
        if not scheduler.is_due(original, local_day, trigger.offset_days):
            continue
        moment = scheduler.local_moment(local_day, trigger.at, zone)
        if start <= moment < end:
            found.append((moment, target))
    return sorted(found)


def schedule_occurrences(
    trigger: d.ScheduleTrigger, start: datetime, end: datetime, store_timezone: str
) -> list[scheduler.Occurrence]:
    """Every occurrence of a schedule trigger in [start, end), ascending: each cron moment (at most
    `scheduler.MAX_OCCURRENCES`), the one-off moment, or per-recipient local moments with their
    timezones. Unlike the live scheduler, nothing is skipped as missed: a back-test fires them all."""
    if trigger.recipient_local_time:
        moments = scheduler.local_time_moments(trigger, store_timezone)
        return [scheduler.Occurrence(at, zones) for at, zones in sorted(moments.items()) if start <= at < end]
    return [
        scheduler.Occurrence(at)
        for at in scheduler.next_occurrences(trigger, start - JUST_BEFORE, end - JUST_BEFORE, store_timezone)
    ]


# --- over the database (reads only) -------------------------------------------------------------


def scheduled_entries(
    session: Session,
    trigger: d.DateTrigger | d.ScheduleTrigger,
    flow_id: int,
    start: datetime,
    end: datetime,
    store_timezone: str,
) -> Iterator[AppliedEvent]:
    """The trigger snapshots a date or schedule trigger would have made in [start, end), in time
    order (then by customer id). Reads what it needs up front; audiences are computed per moment."""
    if isinstance(trigger, d.DateTrigger):
        yield from _date_entries(session, trigger, flow_id, start, end, store_timezone)
    else:
        yield from _schedule_entries(session, trigger, flow_id, start, end, store_timezone)


def _reachable() -> Any:
    return and_(Customer.merged_into_id.is_(None), Customer.erased_at.is_(None))


def _date_entries(
    session: Session,
    trigger: d.DateTrigger,
    flow_id: int,
    start: datetime,
    end: datetime,
    store_timezone: str,
) -> Iterator[AppliedEvent]:
    column: Any = Customer.birthday if trigger.property == "birthday" else Customer.first_order_at
    query = select(Customer.id, Customer.timezone, column).where(column.is_not(None), _reachable())
    firings: list[tuple[datetime, int, dict[str, Any]]] = []
    for customer_id, zone_name, value in session.execute(query, execution_options={"yield_per": 10_000}):
        zone = scheduler.effective_zone(zone_name, store_timezone)
        original = as_utc(value).astimezone(ZoneInfo(zone)).date() if isinstance(value, datetime) else value
        for moment, target in date_firings(original, zone, trigger, start, end):
            firings.append((moment, customer_id, scheduler.date_properties(trigger, original, target)))
    firings.sort(key=lambda firing: (firing[0], firing[1]))
    for moment, customer_id, properties in firings:
        occurrence = scheduler.Occurrence(moment)
        yield scheduler.trigger_event(flow_id, trigger, occurrence, customer_id, properties)


def _schedule_entries(
    session: Session,
    trigger: d.ScheduleTrigger,
    flow_id: int,
    start: datetime,
    end: datetime,
    store_timezone: str,
) -> Iterator[AppliedEvent]:
    occurrences = schedule_occurrences(trigger, start, end, store_timezone)
    if not occurrences:
        return
    stored = set(
        session.scalars(
            select(SegmentMembership.customer_id).where(SegmentMembership.segment_id == trigger.segment_id)
        )
    )
    transitions = _transitions(session, trigger.segment_id)
    zones = _zones_of(session, stored | set(transitions), store_timezone)  # reachable customers only
    properties = {"segment_id": trigger.segment_id}
    for occurrence in occurrences:
        for customer_id in sorted(zones):
            if occurrence.zones is not None and zones[customer_id] not in occurrence.zones:
                continue
            if member_at(transitions.get(customer_id, ()), occurrence.at, customer_id in stored):
                yield scheduler.trigger_event(flow_id, trigger, occurrence, customer_id, properties)


def _transitions(session: Session, segment_id: int) -> Mapping[int, list[tuple[datetime, bool]]]:
    """customer id → the segment's (at, entered) transitions for them, in time order."""
    query = (
        select(Event.customer_id, Event.event, Event.timestamp, Event.properties)
        .where(one_of(Event.event, [SEGMENT_ENTERED, SEGMENT_EXITED]), Event.customer_id.is_not(None))
        .order_by(Event.timestamp, Event.id)
    )
    found: dict[int, list[tuple[datetime, bool]]] = defaultdict(list)
    for customer_id, name, timestamp, properties in session.execute(
        query, execution_options={"yield_per": 10_000}
    ):
        if (properties or {}).get("segment_id") == segment_id:
            found[customer_id].append(
                (transition_time(as_utc(timestamp), properties), name == SEGMENT_ENTERED)
            )
    for changes in found.values():
        changes.sort(key=lambda change: change[0])
    return found


def _zones_of(session: Session, customer_ids: set[int], store_timezone: str) -> dict[int, str]:
    """customer id → the timezone they live by, for those not merged away or erased."""
    ids = sorted(customer_ids)
    zones: dict[int, str] = {}
    for index in range(0, len(ids), CHUNK):
        query = select(Customer.id, Customer.timezone).where(
            one_of(Customer.id, ids[index : index + CHUNK]), _reachable()
        )
        for customer_id, zone in session.execute(query):
            zones[customer_id] = scheduler.effective_zone(zone, store_timezone)
    return zones
