"""Date and schedule triggers enrol from the scheduler, on the virtual clock and both databases:
birthdays and first-order anniversaries at each customer's local time, one-off campaigns (also at
recipients' local times), a daily cron across a DST change, exactly once across passes, restarts
and workers; and list additions start `list_joined` flows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from winback import store
from winback.db.engine import transaction
from winback.db.models import Customer, Event, FlowRun, FlowScheduleMark, OutboxEntry
from winback.flows import engine as flow_engine
from winback.flows import scheduler, service
from winback.kernel.clock import VirtualClock
from winback.processing.processor import process_pending
from winback.runtime import Runtime
from winback.segments import membership
from winback.segments import service as segments
from winback.worker import runner

HELLO = [{"id": "hello", "type": "action", "action": {"type": "send_sms", "body": "Hello {{ customer.first_name }}"}}]


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def _customer(runtime: Runtime, name: str, **fields: Any) -> int:
    now = runtime.clock.now()
    with transaction(runtime.engine) as session:
        customer = Customer(
            user_id=name, first_name=name, tags=fields.pop("tags", []), properties={}, orders_count=0,
            total_spent=Decimal("0"), total_refunded=Decimal("0"), first_seen_at=now, last_seen_at=now,
            created_at=now, updated_at=now, **fields,
        )  # fmt: skip
        session.add(customer)
        session.flush()
        return customer.id


def _live_flow(runtime: Runtime, trigger: dict[str, Any], name: str = "scheduled", **entry: Any) -> int:
    flow = {"trigger": trigger, "entry": {"reentry": {"mode": "every_time"}, **entry}, "start": "hello",
            "nodes": HELLO}  # fmt: skip
    with transaction(runtime.engine) as session:
        created = service.create_flow(session, name=name, definition=flow, now=runtime.clock.now())
        service.set_status(session, created.id, "live", runtime.clock.now())
        return created.id


def _vip_segment(runtime: Runtime) -> int:
    with transaction(runtime.engine) as session:
        return segments.create_segment(
            session, name="vip", definition={"type": "tag", "tag": "vip"},
            now=runtime.clock.now(), timezone="UTC",
        ).id  # fmt: skip


def _runs(runtime: Runtime) -> list[tuple[str, datetime]]:
    """(customer name, entered at) of every run, in the order they started."""
    with Session(runtime.engine) as session:
        query = (
            sa.select(Customer.user_id, FlowRun.entered_at)
            .join(Customer, Customer.id == FlowRun.customer_id)
            .order_by(FlowRun.id)
        )
        return [(name, entered_at) for name, entered_at in session.execute(query)]


def _marks(runtime: Runtime) -> list[tuple[datetime, int]]:
    with Session(runtime.engine) as session:
        query = sa.select(FlowScheduleMark.occurrence_at, FlowScheduleMark.enrolled).order_by(
            FlowScheduleMark.occurrence_at
        )
        return [(at, enrolled) for at, enrolled in session.execute(query) if enrolled]


def _run_until(runtime: Runtime, clock: VirtualClock, until: datetime, every: timedelta) -> None:
    """The scheduler every `every` up to `until` (as a worker would, only coarser)."""
    while clock.now() < until:
        clock.advance(every)
        scheduler.run_schedules(runtime)


def test_a_birthday_flow_enrols_those_whose_birthday_is_three_days_ahead_at_their_local_ten(
    runtime: Runtime, clock: VirtualClock
) -> None:
    # given (Monday 2 March, 09:00 UTC, store in UTC) customers with birthdays on 5 and 6 March in
    # several timezones, one with no timezone, one erased, one without a birthday
    _customer(runtime, "ny-5th", birthday=date(1990, 3, 5), timezone="America/New_York")
    _customer(runtime, "utc-5th", birthday=date(1985, 3, 5))
    _customer(runtime, "tokyo-6th", birthday=date(2001, 3, 6), timezone="Asia/Tokyo")
    _customer(runtime, "ny-6th", birthday=date(1970, 3, 6), timezone="America/New_York")
    _customer(runtime, "erased-5th", birthday=date(1990, 3, 5), erased_at=clock.now())
    _customer(runtime, "no-birthday")
    _customer(runtime, "ny-7th", birthday=date(1990, 3, 7), timezone="America/New_York")
    _live_flow(runtime, {"type": "date", "property": "birthday", "offset_days": -3, "at": "10:00"})
    # when the scheduler runs every 15 minutes until Tuesday 23:00 UTC
    assert scheduler.run_schedules(runtime) == 0
    _run_until(runtime, clock, _utc(2026, 3, 3, 23, 0), timedelta(minutes=15))
    # then each entered at 10:00 on their own clock, three days before their birthday
    assert _runs(runtime) == [
        ("utc-5th", _utc(2026, 3, 2, 10, 0)),  # no timezone: the store's
        ("ny-5th", _utc(2026, 3, 2, 15, 0)),  # 10:00 EST
        ("tokyo-6th", _utc(2026, 3, 3, 1, 0)),  # 10:00 JST on Tuesday
        ("ny-6th", _utc(2026, 3, 3, 15, 0)),
    ]
    # and the run's trigger snapshot says which date it is about
    with Session(runtime.engine) as session:
        first = session.scalars(sa.select(FlowRun).order_by(FlowRun.id)).first()
        assert first is not None
        assert first.trigger["event"] == "Date Reached"
        assert first.trigger["properties"] == {
            "occurrence_at": "2026-03-02T10:00:00+00:00", "property": "birthday", "date": "2026-03-05",
            "years": 41, "offset_days": -3,
        }  # fmt: skip


def test_a_29_february_birthday_is_celebrated_on_28_february_in_a_common_year(
    runtime: Runtime, clock: VirtualClock
) -> None:
    # given the evening of 27 February 2027 (not a leap year) and a birthday flow on the day itself
    clock.set(_utc(2027, 2, 27, 20, 0))
    _customer(runtime, "leapling", birthday=date(2004, 2, 29))
    _customer(runtime, "28th", birthday=date(1999, 2, 28))
    _customer(runtime, "1st-march", birthday=date(1999, 3, 1))
    _live_flow(runtime, {"type": "date", "property": "birthday", "at": "09:30"})
    # when the scheduler runs through 28 February
    _run_until(runtime, clock, _utc(2027, 2, 28, 23, 0), timedelta(minutes=30))
    # then the leapling and the 28th enter at 09:30; 1 March is not yet due
    assert _runs(runtime) == [("leapling", _utc(2027, 2, 28, 9, 30)), ("28th", _utc(2027, 2, 28, 9, 30))]


def test_a_first_order_anniversary_follows_the_customers_own_calendar(
    runtime: Runtime, clock: VirtualClock
) -> None:
    # given first orders a year ago (one late in the UTC evening, which was already 3 March in Tokyo)
    # and one placed this morning
    _customer(runtime, "year-ago", first_order_at=_utc(2025, 3, 2, 8, 0))
    _customer(runtime, "tokyo-evening", first_order_at=_utc(2025, 3, 2, 23, 30), timezone="Asia/Tokyo")
    _customer(runtime, "today", first_order_at=_utc(2026, 3, 2, 8, 0))
    _live_flow(runtime, {"type": "date", "property": "first_order_at", "at": "10:00"})
    # when the scheduler runs until Tuesday noon
    _run_until(runtime, clock, _utc(2026, 3, 3, 12, 0), timedelta(hours=1))
    # then the anniversaries are on the local dates of the first orders; today's first order is none
    assert _runs(runtime) == [
        ("year-ago", _utc(2026, 3, 2, 10, 0)),
        ("tokyo-evening", _utc(2026, 3, 3, 1, 0)),
    ]


def test_a_one_off_campaign_enrols_the_segments_members_once_at_its_moment(
    runtime: Runtime, clock: VirtualClock
) -> None:
    # given two VIPs and one other customer, and a campaign for Tuesday 09:00 in the store's timezone
    store.update_profile(runtime.engine, runtime.settings, {"timezone": "Europe/Berlin"}, clock.now())
    _customer(runtime, "vip-1", tags=["vip"])
    _customer(runtime, "vip-2", tags=["vip"], timezone="America/New_York")
    _customer(runtime, "regular")
    segment_id = _vip_segment(runtime)
    _live_flow(runtime, {"type": "schedule", "segment_id": segment_id, "at": "2026-03-03T09:00:00"})
    # when the scheduler runs just before and at the moment (09:00 Berlin is 08:00 UTC)
    clock.set(_utc(2026, 3, 3, 7, 59))
    assert scheduler.run_schedules(runtime) == 0
    clock.set(_utc(2026, 3, 3, 8, 0))
    assert scheduler.run_schedules(runtime) == 2
    # then both VIPs entered then, whatever their own timezone, and a later pass adds nobody
    assert _runs(runtime) == [("vip-1", _utc(2026, 3, 3, 8, 0)), ("vip-2", _utc(2026, 3, 3, 8, 0))]
    clock.advance(timedelta(days=3))
    assert scheduler.run_schedules(runtime) == 0
    # and stepping them writes one message each
    assert flow_engine.step_due_runs(runtime) == 2
    with Session(runtime.engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(OutboxEntry)) == 2


def test_a_campaign_at_recipient_local_time_reaches_each_timezone_at_its_own_ten(
    runtime: Runtime, clock: VirtualClock
) -> None:
    # given VIPs in Paris, New York and with no timezone (store: UTC)
    _customer(runtime, "paris", tags=["vip"], timezone="Europe/Paris")
    _customer(runtime, "new-york", tags=["vip"], timezone="America/New_York")
    _customer(runtime, "unknown-zone", tags=["vip"], timezone="Not/AZone")
    segment_id = _vip_segment(runtime)
    trigger = {
        "type": "schedule",
        "segment_id": segment_id,
        "at": "2026-03-03T10:00:00",
        "recipient_local_time": True,
    }
    _live_flow(runtime, trigger)
    # when the scheduler runs every 30 minutes through Tuesday
    _run_until(runtime, clock, _utc(2026, 3, 4, 0, 0), timedelta(minutes=30))
    # then each entered at 10:00 on their own clock
    assert _runs(runtime) == [
        ("paris", _utc(2026, 3, 3, 9, 0)),
        ("unknown-zone", _utc(2026, 3, 3, 10, 0)),  # an unknown zone falls back to the store's
        ("new-york", _utc(2026, 3, 3, 15, 0)),
    ]
    assert _marks(runtime) == [
        (_utc(2026, 3, 3, 9, 0), 1),
        (_utc(2026, 3, 3, 10, 0), 1),
        (_utc(2026, 3, 3, 15, 0), 1),
    ]


def test_a_daily_cron_keeps_nine_oclock_across_the_dst_change(runtime: Runtime, clock: VirtualClock) -> None:
    # given a store in New York, one VIP, and a daily 09:00 audience
    store.update_profile(runtime.engine, runtime.settings, {"timezone": "America/New_York"}, clock.now())
    _customer(runtime, "vip", tags=["vip"])
    segment_id = _vip_segment(runtime)
    clock.set(_utc(2026, 3, 6, 0, 0))
    _live_flow(runtime, {"type": "schedule", "segment_id": segment_id, "cron": "0 9 * * *"})
    # when the scheduler runs (and runs are stepped) every 30 minutes from Friday to Tuesday
    while clock.now() < _utc(2026, 3, 10, 23, 0):
        clock.advance(timedelta(minutes=30))
        scheduler.run_schedules(runtime)
        flow_engine.step_due_runs(runtime)
    # then the VIP entered at 09:00 New York time each day: 14:00 UTC under EST, 13:00 under EDT
    assert [entered_at for _, entered_at in _runs(runtime)] == [
        _utc(2026, 3, 6, 14, 0),
        _utc(2026, 3, 7, 14, 0),
        _utc(2026, 3, 8, 13, 0),
        _utc(2026, 3, 9, 13, 0),
        _utc(2026, 3, 10, 13, 0),
    ]


def test_each_occurrence_fires_once_across_passes_workers_restarts_and_downtime(
    runtime: Runtime, clock: VirtualClock
) -> None:
    # given one VIP and a daily 10:00 UTC audience
    _customer(runtime, "vip", tags=["vip"])
    segment_id = _vip_segment(runtime)
    flow_id = _live_flow(runtime, {"type": "schedule", "segment_id": segment_id, "cron": "0 10 * * *"})
    clock.set(_utc(2026, 3, 2, 10, 0))
    # when two workers pass at the moment, twice each
    first, second = runner.Worker(runtime, holder="worker-1"), runner.Worker(runtime, holder="worker-2")
    reports = [first.run_pass(), second.run_pass(), first.run_pass(), second.run_pass()]
    # then the lease holder enrolled the VIP once (and stepped the run); the others did nothing
    assert [report.flow_runs_scheduled for report in reports] == [1, 0, 0, 0]
    assert reports[0].flow_steps == 1
    # and a scheduler called directly, or after a restart (a new runtime, no cached plans), adds nobody
    assert scheduler.run_schedules(runtime) == 0
    flow_engine._plans.clear()
    restarted = Runtime.from_settings(runtime.settings, clock=clock)
    try:
        assert scheduler.run_schedules(restarted) == 0
        # when the scheduler is down from Monday 10:00 to Thursday 12:00
        clock.set(_utc(2026, 3, 5, 12, 0))
        assert scheduler.run_schedules(restarted) == 1
        assert scheduler.run_schedules(restarted) == 0
    finally:
        restarted.engine.dispose()
    # then only the latest missed occurrence (Thursday's) fired, once
    assert _marks(runtime) == [(_utc(2026, 3, 2, 10, 0), 1), (_utc(2026, 3, 5, 10, 0), 1)]
    assert _runs(runtime) == [("vip", _utc(2026, 3, 2, 10, 0)), ("vip", _utc(2026, 3, 5, 12, 0))]
    with Session(runtime.engine) as session:
        assert set(session.scalars(sa.select(FlowScheduleMark.flow_id))) == {flow_id}


def test_a_paused_flow_enrols_nobody_and_does_not_catch_up_when_resumed(
    runtime: Runtime, clock: VirtualClock
) -> None:
    # given a daily 10:00 UTC audience, paused at 09:30
    _customer(runtime, "vip", tags=["vip"])
    segment_id = _vip_segment(runtime)
    flow_id = _live_flow(runtime, {"type": "schedule", "segment_id": segment_id, "cron": "0 10 * * *"})
    clock.set(_utc(2026, 3, 2, 9, 30))
    with transaction(runtime.engine) as session:
        service.set_status(session, flow_id, "paused", clock.now())
    # when 10:00 passes while it is paused
    clock.set(_utc(2026, 3, 2, 10, 30))
    assert scheduler.run_schedules(runtime) == 0
    # and it is resumed at 11:00
    clock.set(_utc(2026, 3, 2, 11, 0))
    with transaction(runtime.engine) as session:
        service.set_status(session, flow_id, "live", clock.now())
    assert scheduler.run_schedules(runtime) == 0
    # then nobody entered for Monday, and Tuesday's 10:00 enrols as usual
    assert _runs(runtime) == []
    clock.set(_utc(2026, 3, 3, 10, 0))
    assert scheduler.run_schedules(runtime) == 1
    assert _runs(runtime) == [("vip", _utc(2026, 3, 3, 10, 0))]


def test_the_entry_filter_and_one_active_run_apply_to_scheduled_enrolment(
    runtime: Runtime, clock: VirtualClock
) -> None:
    # given VIPs, one subscribed to SMS, and a daily audience that waits a week before its message
    subscribed = _customer(runtime, "subscribed", tags=["vip"], sms_consent="subscribed")
    _customer(runtime, "not-asked", tags=["vip"])
    segment_id = _vip_segment(runtime)
    flow = {"trigger": {"type": "schedule", "segment_id": segment_id, "cron": "0 10 * * *"},
            "entry": {"filter": {"type": "consent", "channel": "sms", "status": "subscribed"},
                      "reentry": {"mode": "every_time"}},
            "start": "wait", "nodes": [{"id": "wait", "type": "delay", "duration": {"amount": 7, "unit": "days"},
                                        "next": "hello"}, *HELLO]}  # fmt: skip
    with transaction(runtime.engine) as session:
        created = service.create_flow(session, name="weekly", definition=flow, now=clock.now())
        service.set_status(session, created.id, "live", clock.now())
    # when two daily occurrences pass
    clock.set(_utc(2026, 3, 2, 10, 0))
    assert scheduler.run_schedules(runtime) == 1
    flow_engine.step_due_runs(runtime)
    clock.set(_utc(2026, 3, 3, 10, 0))
    # then only the subscriber entered, once: their first run is still waiting
    assert scheduler.run_schedules(runtime) == 0
    with Session(runtime.engine) as session:
        assert list(session.execute(sa.select(FlowRun.customer_id, FlowRun.status))) == [
            (subscribed, "waiting")
        ]


def test_adding_to_a_list_starts_a_list_joined_flow(runtime: Runtime, clock: VirtualClock) -> None:
    # given a list, a flow on joining it, and two customers, one already on the list
    ann = _customer(runtime, "ann")
    bob = _customer(runtime, "bob")
    with transaction(runtime.engine) as session:
        newsletter = segments.create_list(session, name="newsletter", now=clock.now()).id
        membership.add_to_list(session, newsletter, [bob], source="api", now=clock.now())
    process_pending(runtime)
    _live_flow(runtime, {"type": "list_joined", "list_id": newsletter})
    # when both are added (again, for bob)
    clock.advance(timedelta(minutes=5))
    with transaction(runtime.engine) as session:
        assert membership.add_to_list(session, newsletter, [ann, bob], source="api", now=clock.now()) == [ann]
    # then one List Joined event was derived for ann, and processing it starts her run
    with Session(runtime.engine) as session:
        joined = session.execute(
            sa.select(Event.customer_id, Event.properties, Event.source).where(
                Event.event == "List Joined", Event.timestamp == clock.now()
            )
        ).all()
        assert [tuple(row) for row in joined] == [
            (ann, {"list_id": newsletter, "list_name": "newsletter"}, "derived")
        ]
    process_pending(runtime)
    assert flow_engine.step_due_runs(runtime) == 1
    with Session(runtime.engine) as session:
        run = session.scalars(sa.select(FlowRun)).one()
        assert (run.customer_id, run.status, run.trigger["event"], run.trigger["properties"]["list_id"]) == (
            ann, "completed", "List Joined", newsletter,
        )  # fmt: skip
