"""The pure parts of back-testing date and schedule triggers: membership as of a moment, the
moments a birthday or first-order anniversary fires in a period, every occurrence of a schedule."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from winback.flows import definition as d
from winback.flows import scheduler
from winback.flows.simulate_schedules import date_firings, member_at, schedule_occurrences, transition_time


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def _birthday(offset_days: int = 0, at: time = time(10, 0)) -> d.DateTrigger:
    return d.DateTrigger(type="date", property="birthday", offset_days=offset_days, at=at)


# --- membership as of a moment ------------------------------------------------------------------

JOINED, LEFT, REJOINED = _utc(2026, 3, 3, 12), _utc(2026, 3, 4, 12), _utc(2026, 3, 5, 12)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (JOINED - timedelta(seconds=1), False),  # before the first transition: its opposite
        (JOINED, True),  # a transition counts from its own moment
        (LEFT - timedelta(seconds=1), True),
        (LEFT, False),
        (REJOINED + timedelta(days=30), True),
    ],
)
def test_membership_follows_the_last_transition_at_or_before_the_moment(
    now: datetime, expected: bool
) -> None:
    changes = [(JOINED, True), (LEFT, False), (REJOINED, True)]
    assert member_at(changes, now, stored=False) is expected


def test_a_member_who_only_ever_left_was_a_member_before_leaving() -> None:
    # (recorded silently when the segment was first evaluated, then left)
    assert member_at([(LEFT, False)], LEFT - timedelta(hours=1), stored=False) is True
    assert member_at([(LEFT, False)], LEFT, stored=False) is False


@pytest.mark.parametrize("stored", [True, False])
def test_without_transitions_the_stored_membership_holds_throughout(stored: bool) -> None:
    assert member_at([], JOINED, stored=stored) is stored


# --- date triggers ------------------------------------------------------------------------------


def test_a_birthday_fires_three_days_ahead_at_ten_on_the_customers_own_clock() -> None:
    # 7 March 10:00 in New York is 15:00 UTC (EST, the day before DST starts); in Paris 09:00 UTC
    trigger = _birthday(offset_days=-3)
    march = (_utc(2026, 3, 1), _utc(2026, 4, 1))
    assert date_firings(date(1990, 3, 10), "America/New_York", trigger, *march) == [
        (_utc(2026, 3, 7, 15), date(2026, 3, 10))
    ]
    assert date_firings(date(1990, 3, 10), "Europe/Paris", trigger, *march) == [
        (_utc(2026, 3, 7, 9), date(2026, 3, 10))
    ]


def test_a_birthday_outside_the_period_does_not_fire_and_a_long_period_fires_yearly() -> None:
    trigger = _birthday()
    assert date_firings(date(1990, 4, 20), "UTC", trigger, _utc(2026, 3, 1), _utc(2026, 4, 1)) == []
    assert [moment for moment, _ in date_firings(date(1990, 4, 20), "UTC", trigger, _utc(2025, 1, 1),
                                                 _utc(2027, 1, 1))] == [_utc(2025, 4, 20, 10), _utc(2026, 4, 20, 10)]  # fmt: skip


def test_an_offset_reaching_across_new_year_fires_in_the_earlier_year() -> None:
    # a 2 January birthday, 5 days ahead: 28 December of the year before
    firings = date_firings(
        date(1990, 1, 2), "UTC", _birthday(offset_days=-5), _utc(2026, 12, 1), _utc(2027, 1, 1)
    )
    assert firings == [(_utc(2026, 12, 28, 10), date(2027, 1, 2))]


def test_29_february_fires_on_28_february_in_a_common_year_and_no_anniversary_in_the_first_year() -> None:
    assert date_firings(date(2000, 2, 29), "UTC", _birthday(), _utc(2026, 2, 1), _utc(2026, 3, 1)) == [
        (_utc(2026, 2, 28, 10), date(2026, 2, 28))
    ]
    # a first order on 10 March 2026 has its first anniversary in 2027, not the same day
    assert date_firings(date(2026, 3, 10), "UTC", _birthday(), _utc(2026, 3, 1), _utc(2026, 4, 1)) == []


@given(
    original=st.dates(min_value=date(1950, 1, 1), max_value=date(2025, 12, 31)),
    offset_days=st.integers(min_value=-365, max_value=365),
    zone=st.sampled_from(
        ["UTC", "Europe/Paris", "America/New_York", "Pacific/Kiritimati", "Pacific/Pago_Pago"]
    ),
)
def test_firings_are_exactly_the_days_the_live_scheduler_finds_due(
    original: date, offset_days: int, zone: str
) -> None:
    # walking forward gives the days the live scheduler's question says yes to, and no others
    trigger = _birthday(offset_days=offset_days)
    start, end = _utc(2026, 1, 1), _utc(2027, 1, 1)
    fired = {moment for moment, _ in date_firings(original, zone, trigger, start, end)}
    expected = set()
    day = date(2025, 12, 30)
    while day <= date(2027, 1, 2):
        moment = scheduler.local_moment(day, trigger.at, zone)
        if start <= moment < end and scheduler.is_due(original, day, offset_days):
            expected.add(moment)
        day += timedelta(days=1)
    assert fired == expected


# --- schedule triggers --------------------------------------------------------------------------


def test_every_cron_moment_of_the_period_fires_not_only_the_latest() -> None:
    trigger = d.ScheduleTrigger(type="schedule", segment_id=1, cron="0 9 * * *")
    occurrences = schedule_occurrences(trigger, _utc(2026, 3, 3), _utc(2026, 3, 6), "UTC")
    assert [o.at for o in occurrences] == [_utc(2026, 3, 3, 9), _utc(2026, 3, 4, 9), _utc(2026, 3, 5, 9)]
    assert all(o.zones is None for o in occurrences)


def test_the_period_includes_its_start_and_excludes_its_end() -> None:
    trigger = d.ScheduleTrigger(type="schedule", segment_id=1, cron="0 0 * * *")
    occurrences = schedule_occurrences(trigger, _utc(2026, 3, 3), _utc(2026, 3, 5), "UTC")
    assert [o.at for o in occurrences] == [_utc(2026, 3, 3), _utc(2026, 3, 4)]


def test_a_one_off_campaign_fires_once_if_inside_the_period() -> None:
    trigger = d.ScheduleTrigger(type="schedule", segment_id=1, at="2026-03-03T09:00:00")
    assert [
        o.at for o in schedule_occurrences(trigger, _utc(2026, 3, 1), _utc(2026, 3, 4), "Europe/Berlin")
    ] == [_utc(2026, 3, 3, 8)]
    assert schedule_occurrences(trigger, _utc(2026, 3, 4), _utc(2026, 3, 5), "Europe/Berlin") == []


def test_a_campaign_at_recipient_local_time_fires_per_offset_with_its_timezones() -> None:
    trigger = d.ScheduleTrigger(
        type="schedule", segment_id=1, at="2026-03-03T10:00:00", recipient_local_time=True
    )
    occurrences = schedule_occurrences(trigger, _utc(2026, 3, 3, 8, 30), _utc(2026, 3, 3, 15, 30), "UTC")
    by_moment = {o.at: o.zones for o in occurrences}
    assert "Europe/Paris" in by_moment[_utc(2026, 3, 3, 9)]
    assert "UTC" in by_moment[_utc(2026, 3, 3, 10)]
    assert "America/New_York" in by_moment[_utc(2026, 3, 3, 15)]
    assert all(_utc(2026, 3, 3, 8, 30) <= moment < _utc(2026, 3, 3, 15, 30) for moment in by_moment)


def test_a_transition_counts_from_what_caused_it_when_that_was_earlier() -> None:
    stamp = _utc(2026, 6, 1, 12)
    assert transition_time(stamp, {}) == stamp
    assert transition_time(stamp, {"caused_at": "2025-06-01T12:00:00+00:00"}) == _utc(2025, 6, 1, 12)
    assert transition_time(stamp, {"caused_at": "2027-01-01T00:00:00+00:00"}) == stamp  # never later
    assert transition_time(stamp, {"caused_at": "garbage"}) == stamp
