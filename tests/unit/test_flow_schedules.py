"""When date and schedule triggers fire: cron in the store's timezone across DST, one-off moments,
recipients' local times, the latest missed moment after downtime, and who is due on a local day."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time

import pytest

from winback.flows import definition as d
from winback.flows import scheduler


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def _cron(expression: str) -> d.ScheduleTrigger:
    return d.ScheduleTrigger(type="schedule", segment_id=1, cron=expression)


def _once(at: str, *, local: bool = False) -> d.ScheduleTrigger:
    return d.ScheduleTrigger(type="schedule", segment_id=1, at=at, recipient_local_time=local)


def test_a_daily_cron_keeps_its_wall_time_across_the_spring_change() -> None:
    # given 09:00 every day in New York, where clocks go forward on Sunday 8 March 2026
    # when the moments from Friday to Tuesday are listed
    moments = scheduler.next_occurrences(
        _cron("0 9 * * *"), _utc(2026, 3, 6, 0, 0), _utc(2026, 3, 10, 23, 0), "America/New_York"
    )
    # then each is 09:00 local: 14:00 UTC under EST, 13:00 UTC under EDT
    assert moments == [
        _utc(2026, 3, 6, 14, 0),
        _utc(2026, 3, 7, 14, 0),
        _utc(2026, 3, 8, 13, 0),
        _utc(2026, 3, 9, 13, 0),
        _utc(2026, 3, 10, 13, 0),
    ]


def test_a_time_skipped_by_the_spring_change_runs_after_the_gap_and_a_repeated_one_runs_once() -> None:
    # given 02:30 daily (skipped on 8 March) and 01:30 daily (repeated on 1 November) in New York
    spring = scheduler.next_occurrences(
        _cron("30 2 * * *"), _utc(2026, 3, 7, 12, 0), _utc(2026, 3, 9, 12, 0), "America/New_York"
    )
    autumn = scheduler.next_occurrences(
        _cron("30 1 * * *"), _utc(2026, 10, 31, 12, 0), _utc(2026, 11, 2, 12, 0), "America/New_York"
    )
    # then the skipped one runs at 03:00 EDT (the first minute after the gap), the repeated one at
    # its first (EDT) occurrence only
    assert spring == [_utc(2026, 3, 8, 7, 0), _utc(2026, 3, 9, 6, 30)]
    assert autumn == [_utc(2026, 11, 1, 5, 30), _utc(2026, 11, 2, 6, 30)]


def test_a_per_minute_cron_is_cut_at_the_limit_and_at_until() -> None:
    trigger = _cron("*/15 * * * *")
    assert scheduler.next_occurrences(trigger, _utc(2026, 3, 2, 9, 0), _utc(2026, 3, 2, 9, 45), "UTC") == [
        _utc(2026, 3, 2, 9, 15),
        _utc(2026, 3, 2, 9, 30),
        _utc(2026, 3, 2, 9, 45),
    ]
    assert scheduler.next_occurrences(
        trigger, _utc(2026, 3, 2, 9, 0), _utc(2026, 3, 9, 9, 0), "UTC", limit=2
    ) == [
        _utc(2026, 3, 2, 9, 15),
        _utc(2026, 3, 2, 9, 30),
    ]


def test_a_one_off_moment_is_in_the_store_timezone_unless_it_carries_an_offset() -> None:
    window = (_utc(2026, 11, 1, 0, 0), _utc(2026, 12, 1, 0, 0))
    assert scheduler.next_occurrences(_once("2026-11-27T09:00:00"), *window, "Europe/Berlin") == [
        _utc(2026, 11, 27, 8, 0)
    ]
    assert scheduler.next_occurrences(_once("2026-11-27T09:00:00-05:00"), *window, "Europe/Berlin") == [
        _utc(2026, 11, 27, 14, 0)
    ]
    # outside the window: nothing
    assert scheduler.next_occurrences(_once("2026-12-27T09:00:00"), *window, "Europe/Berlin") == []


def test_recipient_local_time_is_one_moment_per_utc_offset_reaching_the_wall_time() -> None:
    trigger = _once("2026-03-10T10:00:00", local=True)
    moments = scheduler.local_time_moments(trigger, "UTC")
    # Paris and Berlin (UTC+1) reach 10:00 together; New York (EDT since 8 March) five hours later
    paris = _utc(2026, 3, 10, 9, 0)
    assert {"Europe/Paris", "Europe/Berlin"} <= set(moments[paris])
    assert "America/New_York" in moments[_utc(2026, 3, 10, 14, 0)]
    assert "America/New_York" not in moments[paris]
    # and the first moment is Kiritimati's (UTC+14), the last one the UTC−12 zone's
    listed = scheduler.next_occurrences(trigger, _utc(2026, 3, 1, 0, 0), _utc(2026, 3, 12, 0, 0), "UTC")
    assert (listed[0], listed[-1]) == (_utc(2026, 3, 9, 20, 0), _utc(2026, 3, 10, 22, 0))


def test_after_downtime_only_the_latest_missed_cron_moment_is_due() -> None:
    # given a daily 09:00 UTC schedule live since Monday 08:00, and a scheduler back on Thursday 12:00
    trigger = _cron("0 9 * * *")
    due = scheduler.due_occurrences(trigger, _utc(2026, 3, 5, 12, 0), _utc(2026, 3, 2, 8, 0), "UTC")
    # then only Thursday's moment is due
    assert due == [scheduler.Occurrence(_utc(2026, 3, 5, 9, 0))]
    # and a moment before the flow went live never is
    assert scheduler.due_occurrences(trigger, _utc(2026, 3, 2, 12, 0), _utc(2026, 3, 2, 9, 30), "UTC") == []
    assert scheduler.due_occurrences(trigger, _utc(2026, 3, 2, 8, 59), _utc(2026, 3, 1, 0, 0), "UTC") == [
        scheduler.Occurrence(_utc(2026, 3, 1, 9, 0))
    ]


def test_a_one_off_moment_is_due_once_passed_however_late() -> None:
    trigger = _once("2026-03-03T09:00:00")
    live_since = _utc(2026, 3, 4, 0, 0)  # made live after its time: it still goes out
    assert scheduler.due_occurrences(trigger, _utc(2026, 3, 3, 8, 59), live_since, "UTC") == []
    assert scheduler.due_occurrences(trigger, _utc(2026, 3, 4, 0, 0), live_since, "UTC") == [
        scheduler.Occurrence(_utc(2026, 3, 3, 9, 0))
    ]


@pytest.mark.parametrize(
    ("original", "local_day", "offset_days", "expected"),
    [
        (date(1990, 3, 5), date(2026, 3, 5), 0, True),
        (date(1990, 3, 5), date(2026, 3, 2), -3, True),  # three days before
        (date(1990, 3, 5), date(2026, 3, 8), 3, True),  # three days after
        (date(1990, 3, 5), date(2026, 3, 3), -3, False),
        (date(1990, 1, 2), date(2026, 12, 30), -3, True),  # before, across the new year
        (date(2004, 2, 29), date(2027, 2, 28), 0, True),  # 29 February → 28 February
        (date(2004, 2, 29), date(2028, 2, 28), 0, False),  # … but not in a leap year
        (date(2004, 2, 29), date(2028, 2, 29), 0, True),
        (date(1990, 2, 28), date(2027, 2, 28), 0, True),
        (date(2026, 3, 2), date(2026, 3, 2), 0, False),  # a first order is no anniversary of itself
        (date(2025, 3, 2), date(2026, 3, 2), 0, True),
    ],
)
def test_who_is_due_on_a_local_day(original: date, local_day: date, offset_days: int, expected: bool) -> None:
    assert scheduler.is_due(original, local_day, offset_days) is expected


def test_the_database_pre_filter_includes_29_february_on_28_february_of_common_years() -> None:
    assert scheduler.month_days([date(2027, 2, 28)], 0) == {(2, 28), (2, 29)}
    assert scheduler.month_days([date(2028, 2, 28)], 0) == {(2, 28)}
    assert scheduler.month_days([date(2026, 3, 2)], -3) == {(3, 5)}


def test_date_trigger_moments_carry_each_timezones_own_local_day() -> None:
    # given a birthday trigger at 10:00 and a scheduler looking on Monday 2 March 2026, 20:30 UTC
    trigger = d.DateTrigger(type="date", property="birthday", at=time(10, 0))
    now = _utc(2026, 3, 2, 20, 30)
    due = {o.at: o for o in scheduler.due_occurrences(trigger, now, _utc(2026, 3, 1, 0, 0), "UTC")}
    # then Kiritimati (UTC+14) reached Tuesday 10:00 at 20:00 UTC, the same moment as Honolulu
    # (UTC−10) reached Monday 10:00: one moment, two local days
    zones = due[_utc(2026, 3, 2, 20, 0)].zones
    assert zones is not None
    assert (zones["Pacific/Kiritimati"], zones["Pacific/Honolulu"]) == (date(2026, 3, 3), date(2026, 3, 2))
    # and London's latest is Monday 10:00 (UTC), New York's Monday 10:00 EST
    assert due[_utc(2026, 3, 2, 10, 0)].zones["Europe/London"] == date(2026, 3, 2)  # type: ignore[index]
    assert due[_utc(2026, 3, 2, 15, 0)].zones["America/New_York"] == date(2026, 3, 2)  # type: ignore[index]
    # and nothing after now, nothing before the flow went live
    assert max(due) <= now
    later = scheduler.due_occurrences(trigger, now, _utc(2026, 3, 2, 19, 0), "UTC")
    assert [o.at for o in later] == [
        _utc(2026, 3, 2, 19, 30),  # Marquesas, UTC−9:30
        _utc(2026, 3, 2, 20, 0),
        _utc(2026, 3, 2, 20, 15),  # Chatham, UTC+13:45
    ]


def test_an_unknown_or_missing_profile_timezone_falls_back_to_the_store() -> None:
    assert scheduler.effective_zone("Asia/Tokyo", "Europe/Berlin") == "Asia/Tokyo"
    assert scheduler.effective_zone(None, "Europe/Berlin") == "Europe/Berlin"
    assert scheduler.effective_zone("Mars/Olympus_Mons", "Europe/Berlin") == "Europe/Berlin"


def test_a_wall_time_in_the_spring_gap_moves_past_it() -> None:
    assert scheduler.local_moment(date(2026, 3, 8), time(2, 30), "America/New_York") == _utc(
        2026, 3, 8, 7, 30
    )
    assert scheduler.local_moment(date(2026, 11, 1), time(1, 30), "America/New_York") == _utc(
        2026, 11, 1, 5, 30
    )


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"cron": "61 * * * *"}, "invalid cron '61 * * * *': Bad minute"),
        ({"cron": "0 9 31 2 *"}, "invalid cron '0 9 31 2 *': Bad day-of-month"),
        (
            {"at": "next friday"},
            "'at' must be an ISO date-time such as 2026-11-27T09:00:00, got 'next friday'",
        ),
    ],
)
def test_a_schedule_that_can_never_fire_is_refused_when_saved(schedule: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        d.ScheduleTrigger.model_validate({"type": "schedule", "segment_id": 1, **schedule})
