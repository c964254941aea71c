"""Enrolment from the clock: date triggers (birthdays, first-order anniversaries) and schedule
triggers (a one-off campaign to a segment, or a recurring cron audience).

The pure half says *when* a trigger fires and *who* is due: `next_occurrences` (cron in the
store's timezone with DST handled as Debian cron does — a time skipped by the spring change runs
at the first minute after the gap, a time repeated by the autumn change runs once, the first
time — and one-off `at` moments), `due_occurrences` (what should fire at `now`) and `is_due`
(whose birthday or first-order anniversary falls on a local day, 29 February → 28 February in
other years). The other half, `run_schedules`, enrols those customers through the same path as
events (`engine.enrol`: entry filter, re-entry policy, one active run).

Each occurrence fires exactly once: a row in `flow_schedule_marks` (unique per flow and moment) is
written in the same transaction as the runs it starts, so a second pass, a restart or a second
worker finds it and starts nothing.

Per-recipient local times (date triggers, and `at` with `recipient_local_time`) are one occurrence
per distinct UTC moment: every timezone whose wall clock reads `at` at that moment belongs to it,
and a customer belongs to the timezone of their profile (the store's when missing or unknown).

When is an occurrence due?
- A one-off `at` fires once its moment has passed, however late (a campaign made live after its
  time goes out at once; after downtime it goes out when the scheduler is back).
- A cron schedule or a date trigger fires only for moments after the flow last went live or was
  edited (`flows.updated_at`), and after downtime only the *latest* missed moment fires (per
  timezone for date triggers): a daily audience missed for three days is enrolled once, not three
  times, and a paused flow resumed does not catch up on what fell during the pause.
"""

from __future__ import annotations

import functools
import logging
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim
from sqlalchemy import Table, and_, extract, or_, select, update
from sqlalchemy.orm import Session

from winback import store
from winback.db.engine import reading, transaction
from winback.db.expressions import insert_or_ignore, one_of
from winback.db.models import Customer, Flow, FlowScheduleMark, SegmentMembership
from winback.flows import definition as d
from winback.flows import engine as flow_engine
from winback.runtime import Runtime

log = logging.getLogger(__name__)

ENROL_CHUNK = 1_000  # customers passed to one `engine.enrol` call (its entry filter loads their facts)
MAX_OCCURRENCES = 10_000  # `next_occurrences` returns at most this many (a week of a per-minute cron)
SCHEDULE_EVENT = "Scheduled"  # the trigger snapshot's event name for schedule triggers
DATE_EVENT = "Date Reached"  # … and for date triggers

MARKS: Table = FlowScheduleMark.__table__  # type: ignore[assignment]


# --- pure: time zones ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def all_timezones() -> frozenset[str]:
    """Every IANA timezone name this machine knows (read once: listing them walks the tz data)."""
    return frozenset(zoneinfo.available_timezones())


@functools.lru_cache(maxsize=4096)
def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def effective_zone(name: str | None, store_timezone: str) -> str:
    """The timezone a customer lives by: their profile's when it is a known zone, else the store's."""
    return name if name and _is_zone(name) else store_timezone


def local_moment(day: date, at: time, zone: str) -> datetime:
    """`at` on `day` in `zone`, in UTC. A wall time skipped by a DST change is taken as the same
    distance past the gap (02:30 → 03:30); a repeated one as its first occurrence."""
    wall = datetime.combine(day, at.replace(tzinfo=None), tzinfo=ZoneInfo(zone))  # fold=0
    return wall.astimezone(UTC)


def _group(moments: Iterable[tuple[str, datetime, date | None]]) -> dict[datetime, dict[str, date | None]]:
    """(zone, moment, local day) → moment → {zone: local day}. Zones 24 hours apart (UTC+14 and
    UTC−10) reach one wall time at the same moment on different days, so the day is per zone."""
    zones: dict[datetime, dict[str, date | None]] = defaultdict(dict)
    for zone, moment, day in moments:
        zones[moment][zone] = day
    return dict(zones)


# --- pure: schedule triggers --------------------------------------------------------------------


def parse_at(at: str) -> datetime:
    """A one-off `at` (ISO 8601); naive means the store's (or with `recipient_local_time`, each
    recipient's) wall clock."""
    try:
        return datetime.fromisoformat(at)
    except ValueError:
        raise ValueError(f"'at' must be an ISO date-time such as 2026-11-27T09:00:00, got {at!r}") from None


def one_off_moment(trigger: d.ScheduleTrigger, store_timezone: str) -> datetime:
    """The UTC moment of a one-off schedule without `recipient_local_time`."""
    assert trigger.at is not None
    moment = parse_at(trigger.at)
    if moment.tzinfo is None:
        moment = local_moment(moment.date(), moment.time(), store_timezone)
    return moment.astimezone(UTC)


def local_time_moments(
    trigger: d.ScheduleTrigger, store_timezone: str
) -> dict[datetime, dict[str, date | None]]:
    """For `recipient_local_time`: each UTC moment at which `at`'s wall time is reached, with the
    timezones reaching it then (any offset written in `at` is ignored: only the wall time counts)."""
    assert trigger.at is not None
    wall = parse_at(trigger.at)
    zones = all_timezones() | {store_timezone}
    return _group((zone, local_moment(wall.date(), wall.time(), zone), None) for zone in zones)


def next_occurrences(
    trigger: d.ScheduleTrigger,
    after: datetime,
    until: datetime,
    store_timezone: str,
    *,
    limit: int = MAX_OCCURRENCES,
) -> list[datetime]:
    """The UTC moments in (`after`, `until`] at which a schedule trigger fires, ascending (at most
    `limit`). Cron runs in the store's timezone, DST as Debian cron; with `recipient_local_time`
    each distinct moment at which some timezone reaches `at`'s wall time."""
    if trigger.cron is not None:
        found: list[datetime] = []
        for moment in CronSim(trigger.cron, after.astimezone(ZoneInfo(store_timezone))):
            moment_utc = moment.astimezone(UTC)
            if moment_utc > until or len(found) >= limit:
                break
            if moment_utc > after and (not found or moment_utc > found[-1]):
                found.append(moment_utc)
        return found
    if trigger.recipient_local_time:
        moments = local_time_moments(trigger, store_timezone)
        return sorted(m for m in moments if after < m <= until)[:limit]
    moment = one_off_moment(trigger, store_timezone)
    return [moment] if after < moment <= until else []


def latest_cron_moment(cron: str, after: datetime, until: datetime, store_timezone: str) -> datetime | None:
    """The last moment in (`after`, `until`] of a cron in the store's timezone, or None."""
    start = until.astimezone(ZoneInfo(store_timezone)).replace(microsecond=0) + timedelta(seconds=1)
    # Reverse iteration ticks once before matching, so it starts a second past `until`.
    for moment in CronSim(cron, start, reverse=True):
        moment_utc = moment.astimezone(UTC)
        if moment_utc > until:
            continue
        return moment_utc if moment_utc > after else None
    return None


# --- pure: date triggers ------------------------------------------------------------------------


def anniversary(original: date, year: int) -> date:
    """`original`'s month and day in `year`; 29 February falls on 28 February in other years."""
    if original.month == 2 and original.day == 29:
        try:
            return date(year, 2, 29)
        except ValueError:
            return date(year, 2, 28)
    return original.replace(year=year)


def is_due(original: date, local_day: date, offset_days: int) -> bool:
    """Does a date trigger with `offset_days` fire on `local_day` for a customer whose birthday (or
    first order) is `original`? Only from the first anniversary on."""
    target = local_day - timedelta(days=offset_days)
    return target.year > original.year and anniversary(original, target.year) == target


def month_days(local_days: Iterable[date], offset_days: int) -> set[tuple[int, int]]:
    """The (month, day) pairs of the original dates that can be due on `local_days` — a
    pre-filter for the database (`is_due` decides)."""
    pairs: set[tuple[int, int]] = set()
    for day in local_days:
        target = day - timedelta(days=offset_days)
        pairs.add((target.month, target.day))
        if (target.month, target.day) == (2, 28) and anniversary(date(2000, 2, 29), target.year) == target:
            pairs.add((2, 29))
    return pairs


# --- pure: what is due now ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One moment at which a trigger fires."""

    at: datetime  # UTC
    # Recipients living by one of these timezones (None: everyone), each with its local day (date
    # triggers; None for schedules).
    zones: Mapping[str, date | None] | None = None


def due_occurrences(
    trigger: d.DateTrigger | d.ScheduleTrigger, now: datetime, live_since: datetime, store_timezone: str
) -> list[Occurrence]:
    """The occurrences that should have fired by `now` (whether they did is the marks' business):
    one-off moments that have passed; the latest cron moment, or for a date trigger the latest
    local day per timezone, after `live_since`. Ascending by moment."""
    if isinstance(trigger, d.DateTrigger):
        moments: list[tuple[str, datetime, date | None]] = []
        for zone in all_timezones() | {store_timezone}:
            day = now.astimezone(ZoneInfo(zone)).date()
            moment = local_moment(day, trigger.at, zone)
            if moment > now:
                day -= timedelta(days=1)
                moment = local_moment(day, trigger.at, zone)
            if moment > live_since:
                moments.append((zone, moment, day))
        return [Occurrence(moment, zones) for moment, zones in sorted(_group(moments).items())]
    if trigger.cron is not None:
        latest = latest_cron_moment(trigger.cron, live_since, now, store_timezone)
        return [] if latest is None else [Occurrence(latest)]
    if trigger.recipient_local_time:
        return [
            Occurrence(moment, zones)
            for moment, zones in sorted(local_time_moments(trigger, store_timezone).items())
            if moment <= now
        ]
    moment = one_off_moment(trigger, store_timezone)
    return [Occurrence(moment)] if moment <= now else []


# --- enrolling ----------------------------------------------------------------------------------


def run_schedules(runtime: Runtime) -> int:
    """Fire the due occurrences of every live flow with a date or schedule trigger; returns how
    many runs started. Each flow is its own transaction: one that fails is logged and retried on
    the next pass, and the others still fire."""
    now = runtime.clock.now()
    with reading(runtime.engine) as session:
        timezone = store.profile_in(session, runtime.settings).timezone
        flow_ids = [
            flow_id
            for flow_id, version_id in session.execute(
                select(Flow.id, Flow.current_version_id)
                .where(Flow.status == "live", Flow.current_version_id.is_not(None))
                .order_by(Flow.id)
            )
            if version_id is not None and _is_scheduled(session, flow_id, version_id)
        ]
    started = 0
    for flow_id in flow_ids:
        try:
            with transaction(runtime.engine) as session:
                started += fire_due(session, flow_id, now, timezone)
        except Exception:
            log.exception("scheduled enrolment of flow %s failed; the other flows carry on", flow_id)
    return started


def _is_scheduled(session: Session, flow_id: int, version_id: int) -> bool:
    try:
        trigger = flow_engine.plan_of(session, version_id).flow.trigger
    except Exception:
        log.exception("flow %s has a current version that no longer parses; not scheduled", flow_id)
        return False
    return isinstance(trigger, d.DateTrigger | d.ScheduleTrigger)


def fire_due(session: Session, flow_id: int, now: datetime, timezone: str) -> int:
    """Fire the due, not yet fired occurrences of one flow inside the caller's transaction;
    returns how many runs started."""
    flow = session.get(Flow, flow_id)
    if flow is None or flow.status != "live" or flow.current_version_id is None:
        return 0  # paused or deleted since the flows were listed
    version_id = flow.current_version_id
    plan = flow_engine.plan_of(session, version_id)
    trigger = plan.flow.trigger
    if not isinstance(trigger, d.DateTrigger | d.ScheduleTrigger):
        return 0
    due = due_occurrences(trigger, now, flow.updated_at, timezone)
    if not due:
        return 0
    fired = set(
        session.scalars(
            select(MARKS.c.occurrence_at).where(
                MARKS.c.flow_id == flow_id, one_of(MARKS.c.occurrence_at, [o.at for o in due])
            )
        )
    )
    dialect = session.get_bind().dialect.name
    started = 0
    for occurrence in due:
        if occurrence.at in fired:
            continue
        # The mark is claimed first: a concurrent scheduler waits on it and then finds it taken.
        mark_id = session.execute(
            insert_or_ignore(dialect, MARKS, ["flow_id", "occurrence_at"]).returning(MARKS.c.id),
            {
                "flow_id": flow_id,
                "flow_version_id": version_id,
                "occurrence_at": occurrence.at,
                "fired_at": now,
                "enrolled": 0,
            },
        ).scalar()
        if mark_id is None:
            continue
        if isinstance(trigger, d.DateTrigger):
            due_customers = _date_audience(session, trigger, occurrence, timezone)
        else:
            due_customers = _segment_audience(session, trigger, occurrence, timezone)
        enrolled = 0
        for start in range(0, len(due_customers), ENROL_CHUNK):
            chunk = due_customers[start : start + ENROL_CHUNK]
            candidates = [
                (
                    flow,
                    version_id,
                    plan,
                    trigger_event(flow_id, trigger, occurrence, customer_id, properties),
                )
                for customer_id, properties in chunk
            ]
            enrolled += flow_engine.enrol(session, candidates, now, timezone)
        session.execute(update(MARKS).where(MARKS.c.id == mark_id).values(enrolled=enrolled))
        if enrolled:
            log.info("flow %s: occurrence %s enrolled %d", flow_id, occurrence.at.isoformat(), enrolled)
        started += enrolled
    return started


def trigger_event(
    flow_id: int,
    trigger: d.DateTrigger | d.ScheduleTrigger,
    occurrence: Occurrence,
    customer_id: int,
    properties: dict[str, Any],
) -> flow_engine.AppliedEvent:
    """The trigger snapshot a scheduled run carries, shaped like an event's."""
    return flow_engine.AppliedEvent(
        customer_id=customer_id,
        event=DATE_EVENT if isinstance(trigger, d.DateTrigger) else SCHEDULE_EVENT,
        type="schedule",
        properties={"occurrence_at": occurrence.at.isoformat(), **properties},
        traits={},
        timestamp=occurrence.at,
        message_id=f"schedule:{flow_id}:{occurrence.at.isoformat()}:{customer_id}",
    )


def _reachable() -> Any:
    return and_(Customer.merged_into_id.is_(None), Customer.erased_at.is_(None))


def _segment_audience(
    session: Session, trigger: d.ScheduleTrigger, occurrence: Occurrence, timezone: str
) -> list[tuple[int, dict[str, Any]]]:
    """The segment's current members (living by one of the occurrence's timezones, if it has any)."""
    query = (
        select(Customer.id, Customer.timezone)
        .join(SegmentMembership, SegmentMembership.customer_id == Customer.id)
        .where(SegmentMembership.segment_id == trigger.segment_id, _reachable())
        .order_by(Customer.id)
    )
    properties = {"segment_id": trigger.segment_id}
    return [
        (customer_id, properties)
        for customer_id, zone in session.execute(query)
        if occurrence.zones is None or effective_zone(zone, timezone) in occurrence.zones
    ]


def _date_audience(
    session: Session, trigger: d.DateTrigger, occurrence: Occurrence, timezone: str
) -> list[tuple[int, dict[str, Any]]]:
    """Customers living by one of the occurrence's timezones whose birthday or first-order
    anniversary (in their own timezone) is due on its local day."""
    assert occurrence.zones is not None
    column: Any = Customer.birthday if trigger.property == "birthday" else Customer.first_order_at
    local_days = {day for day in occurrence.zones.values() if day is not None}
    # A first order is a UTC moment: its local date may be a day either side of the UTC one (two,
    # reading it in PostgreSQL's session timezone), so the pre-filter is widened.
    spread = 0 if trigger.property == "birthday" else 2
    pairs = month_days(
        (day + timedelta(days=shift) for day in local_days for shift in range(-spread, spread + 1)),
        trigger.offset_days,
    )
    query = (
        select(Customer.id, Customer.timezone, column)
        .where(
            column.is_not(None),
            _reachable(),
            or_(
                *(
                    and_(extract("month", column) == m, extract("day", column) == dd)
                    for m, dd in sorted(pairs)
                )
            ),
        )
        .order_by(Customer.id)
    )
    due: list[tuple[int, dict[str, Any]]] = []
    for customer_id, zone_name, value in session.execute(query):
        zone = effective_zone(zone_name, timezone)
        local_day = occurrence.zones.get(zone)
        if local_day is None:
            continue
        original = value if isinstance(value, date) and not isinstance(value, datetime) else None
        if original is None:
            original = value.astimezone(ZoneInfo(zone)).date()
        if is_due(original, local_day, trigger.offset_days):
            target = local_day - timedelta(days=trigger.offset_days)
            due.append((customer_id, date_properties(trigger, original, target)))
    return due


def date_properties(trigger: d.DateTrigger, original: date, target: date) -> dict[str, Any]:
    """What a date trigger's snapshot says: the date it marks and how many years on."""
    return {
        "property": trigger.property,
        "date": target.isoformat(),
        "years": target.year - original.year,
        "offset_days": trigger.offset_days,
    }
