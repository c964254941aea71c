"""Quiet hours: windows, overrides, the recipient's timezones, and the next allowed instant.

The property tests compare `next_allowed` with a brute-force oracle that steps minute by minute
(every opening and closing falls on a whole UTC minute for today's zone data, so the first allowed
minute — or `now` itself — is the exact answer).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winback.messaging.quiet_hours import (
    QuietHours,
    Window,
    is_inside,
    next_allowed,
    parse_window,
    recipient_timezones,
)

NEW_YORK = ZoneInfo("America/New_York")
DAY = parse_window("08:00-21:00")
ZONE_NAMES = (
    "America/New_York",
    "America/Los_Angeles",
    "Europe/London",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Australia/Sydney",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "America/Santiago",
    "Pacific/Honolulu",
    "America/St_Johns",
    "UTC",
)
ZONES = tuple(ZoneInfo(name) for name in ZONE_NAMES)


def _approximate_transitions() -> list[datetime]:
    """Instants in 2025-2027 within six hours after one of ZONES changed its UTC offset."""
    found: list[datetime] = []
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for zone in ZONES:
        previous = start.astimezone(zone).utcoffset()
        for hour in range(6, 3 * 365 * 24, 6):
            moment = start + timedelta(hours=hour)
            offset = moment.astimezone(zone).utcoffset()
            if offset != previous:
                found.append(moment)
            previous = offset
    return found


TRANSITIONS = _approximate_transitions()


def _oracle(now: datetime, zones: list[ZoneInfo], window: Window, hours: int = 48) -> datetime | None:
    def inside(moment: datetime) -> bool:
        return all(window.contains(moment.astimezone(zone).time()) for zone in zones)

    if inside(now):
        return now
    minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    limit = now + timedelta(hours=hours)
    while minute <= limit:
        if inside(minute):
            return minute
        minute += timedelta(minutes=1)
    return None


windows = st.one_of(
    st.sampled_from(
        ["08:00-21:00", "09:00-20:00", "22:00-06:00", "02:30-03:30", "01:15-01:45", "00:00-24:00"]
    ).map(parse_window),
    st.tuples(st.integers(0, 1439), st.integers(1, 1440))
    .filter(lambda pair: pair[0] != pair[1] % 1440)
    .map(lambda pair: Window(*pair)),
)
near_transitions = st.builds(
    lambda base, seconds, micro: base + timedelta(seconds=seconds, microseconds=micro),
    st.sampled_from(TRANSITIONS),
    st.integers(-36 * 3600, 36 * 3600),
    st.integers(0, 999_999),
)
anywhere = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 1), timezones=st.just(UTC)
)
instants = st.one_of(near_transitions, anywhere)
zone_lists = st.lists(st.sampled_from(ZONES), min_size=1, max_size=3, unique=True)


# --- parsing ------------------------------------------------------------------------------------


def test_parse_window_reads_both_kinds() -> None:
    assert parse_window("08:00-21:00") == Window(8 * 60, 21 * 60)
    night = parse_window(" 22:00 - 06:00 ")
    assert (night.start, night.end, night.crosses_midnight) == (22 * 60, 6 * 60, True)
    assert parse_window("00:00-24:00").whole_day
    assert parse_window("18:00-00:00") == Window(18 * 60, 1440)
    assert str(parse_window("8:05-21:00")) == "08:05-21:00"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8-21", "quiet hours window must look like 08:00-21:00, got '8-21'"),
        ("08:00", "got '08:00'"),
        ("24:00-06:00", "only the end may be 24:00"),
        ("08:60-21:00", "minutes 00-59"),
        ("08:00-24:30", "only the end may be 24:00"),
        ("08:00-08:00", "is empty"),
        ("", "got ''"),
    ],
)
def test_parse_window_names_the_bad_text(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_window(text)


def test_window_is_half_open() -> None:
    ny = datetime(2026, 3, 2, tzinfo=NEW_YORK)
    assert is_inside(ny.replace(hour=8), NEW_YORK, DAY)
    assert is_inside(ny.replace(hour=20, minute=59, second=59, microsecond=999_999), NEW_YORK, DAY)
    assert not is_inside(ny.replace(hour=21), NEW_YORK, DAY)
    assert not is_inside(ny.replace(hour=7, minute=59, second=59), NEW_YORK, DAY)
    night = parse_window("22:00-06:00")
    assert is_inside(ny.replace(hour=23), NEW_YORK, night)
    assert is_inside(ny.replace(hour=0), NEW_YORK, night)
    assert not is_inside(ny.replace(hour=6), NEW_YORK, night)
    assert not is_inside(ny.replace(hour=12), NEW_YORK, night)


# --- overrides ----------------------------------------------------------------------------------


def test_region_override_beats_country_beats_default() -> None:
    quiet = QuietHours.from_settings(
        "08:00-21:00", {"US": "09:00-20:00", "US-TX": "09:00-21:00", "ca-qc": "10:00-19:00"}
    )
    assert quiet.window_for("US", "TX") == parse_window("09:00-21:00")
    assert quiet.window_for("us", "tx") == parse_window("09:00-21:00")
    assert quiet.window_for("US", "US-TX") == parse_window("09:00-21:00")
    assert quiet.window_for(None, "US-TX") == parse_window("09:00-21:00")
    assert quiet.window_for("US", "NY") == parse_window("09:00-20:00")
    assert quiet.window_for("US", None) == parse_window("09:00-20:00")
    assert quiet.window_for("CA", "QC") == parse_window("10:00-19:00")
    assert quiet.window_for("CA", "ON") == DAY
    assert quiet.window_for("DE", "BE") == DAY
    assert quiet.window_for(None, None) == DAY


def test_region_override_by_name() -> None:
    quiet = QuietHours.from_settings("08:00-21:00", {"US-New  York": "10:00-18:00"})
    assert quiet.window_for("US", "new york") == parse_window("10:00-18:00")
    assert quiet.window_for("US", "NY") == DAY  # names and codes are not translated


def test_override_errors_name_the_entry() -> None:
    with pytest.raises(ValueError, match=r"quiet_hours_overrides\['US'\]: .*got '9-5'"):
        QuietHours.from_settings("08:00-21:00", {"US": "9-5"})
    with pytest.raises(ValueError, match="override key .* got 'USA'"):
        QuietHours.from_settings("08:00-21:00", {"USA": "09:00-17:00"})
    with pytest.raises(ValueError, match="got '8-21'"):
        QuietHours.from_settings("8-21", {})


# --- timezones ----------------------------------------------------------------------------------


def test_profile_timezone_wins() -> None:
    zones = recipient_timezones(
        profile_timezone="Europe/Berlin", phone_e164="+12125550123", country="US", store_timezone="UTC"
    )
    assert zones == (ZoneInfo("Europe/Berlin"),)


def test_new_york_number_gives_new_york() -> None:
    zones = recipient_timezones(
        profile_timezone=None, phone_e164="+12125550123", country="US", store_timezone="UTC"
    )
    assert zones == (NEW_YORK,)


def test_invalid_profile_timezone_falls_back_to_the_phone() -> None:
    zones = recipient_timezones(
        profile_timezone="Mars/Olympus", phone_e164="+442071234567", country=None, store_timezone="UTC"
    )
    assert zones == (ZoneInfo("Europe/London"),)


def test_toll_free_number_gives_many_zones() -> None:
    zones = recipient_timezones(
        profile_timezone=None, phone_e164="+18005550123", country="US", store_timezone="UTC"
    )
    names = {zone.key for zone in zones}
    assert {"America/New_York", "America/Los_Angeles", "Pacific/Honolulu"} <= names
    assert "Etc/Unknown" not in names
    store_first = recipient_timezones(
        profile_timezone=None, phone_e164="+18005550123", country="US", store_timezone="America/Chicago"
    )
    assert store_first[0] == ZoneInfo("America/Chicago")
    assert set(store_first) == set(zones) and len(store_first) == len(zones)


def test_unknown_zone_is_ignored_and_store_zone_used() -> None:
    # +800 (international freephone) has no geography: phonenumbers answers "Etc/Unknown".
    zones = recipient_timezones(
        profile_timezone=None, phone_e164="+80012345678", country=None, store_timezone="Europe/Paris"
    )
    assert zones == (ZoneInfo("Europe/Paris"),)


def test_country_with_one_zone_is_used_without_a_phone() -> None:
    assert recipient_timezones(
        profile_timezone=None, phone_e164=None, country="DE", store_timezone="UTC"
    ) == (ZoneInfo("Europe/Berlin"),)
    assert recipient_timezones(
        profile_timezone=None, phone_e164="not a number", country="US", store_timezone="Asia/Tokyo"
    ) == (ZoneInfo("Asia/Tokyo"),)
    assert recipient_timezones(
        profile_timezone="", phone_e164=None, country=None, store_timezone="nonsense"
    ) == (ZoneInfo("UTC"),)


# --- next_allowed: fixed examples ---------------------------------------------------------------


def test_after_nine_pm_waits_until_eight_next_morning() -> None:
    now = datetime(2026, 3, 2, 21, 30, tzinfo=NEW_YORK)
    assert next_allowed(now, [NEW_YORK], DAY) == datetime(2026, 3, 3, 8, 0, tzinfo=NEW_YORK)


def test_a_minute_before_eight_waits_a_minute() -> None:
    now = datetime(2026, 3, 2, 7, 59, tzinfo=NEW_YORK)
    assert next_allowed(now, [NEW_YORK], DAY) == datetime(2026, 3, 2, 8, 0, tzinfo=NEW_YORK)


def test_inside_the_window_is_now_and_utc() -> None:
    now = datetime(2026, 3, 2, 12, 0, 30, 5, tzinfo=NEW_YORK)
    result = next_allowed(now, [NEW_YORK], DAY)
    assert result == now
    assert result.tzinfo is UTC


def test_opening_in_the_spring_forward_gap_opens_after_the_gap() -> None:
    # 2026-03-08: New York jumps from 02:00 to 03:00; 02:30 does not exist that day.
    now = datetime(2026, 3, 8, 1, 0, tzinfo=NEW_YORK)
    result = next_allowed(now, [NEW_YORK], parse_window("02:30-05:00"))
    assert result.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2026, 3, 8, 3, 0)
    assert result == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


def test_window_entirely_in_the_gap_opens_next_day() -> None:
    now = datetime(2026, 3, 8, 1, 0, tzinfo=NEW_YORK)
    result = next_allowed(now, [NEW_YORK], parse_window("02:10-02:40"))
    assert result == datetime(2026, 3, 9, 2, 10, tzinfo=NEW_YORK)


def test_repeated_hour_opens_at_its_first_occurrence() -> None:
    # 2026-11-01: New York falls back from 02:00 EDT to 01:00 EST; 01:30 happens twice.
    now = datetime(2026, 11, 1, 0, 0, tzinfo=NEW_YORK)
    result = next_allowed(now, [NEW_YORK], parse_window("01:30-05:00"))
    assert result == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT


def test_repeated_hour_reopens_a_window_that_closed_in_it() -> None:
    # Window 08:00-01:30 closes at 01:30 EDT, and the clock then reads 01:00 EST: open again.
    window = parse_window("08:00-01:30")
    closed = datetime(2026, 11, 1, 5, 45, tzinfo=UTC)  # 01:45 EDT
    assert next_allowed(closed, [NEW_YORK], window) == datetime(2026, 11, 1, 6, 0, tzinfo=UTC)  # 01:00 EST


def test_several_zones_wait_for_all_of_them() -> None:
    los_angeles = ZoneInfo("America/Los_Angeles")
    now = datetime(2026, 3, 2, 8, 30, tzinfo=NEW_YORK)  # 05:30 in Los Angeles
    result = next_allowed(now, [NEW_YORK, los_angeles], DAY)
    assert result == datetime(2026, 3, 2, 8, 0, tzinfo=los_angeles)


def test_zones_too_far_apart_use_the_first_zone() -> None:
    window = parse_window("09:00-12:00")
    tokyo, new_york = ZoneInfo("Asia/Tokyo"), NEW_YORK  # 14 h apart: the windows never meet
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # 21:00 Tokyo
    result = next_allowed(now, [tokyo, new_york], window)
    assert result == datetime(2026, 3, 3, 9, 0, tzinfo=tokyo)
    assert next_allowed(result, [tokyo, new_york], window) == result


def test_naive_now_and_no_zone_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_allowed(datetime(2026, 3, 2, 12, 0), [NEW_YORK], DAY)
    with pytest.raises(ValueError, match="at least one timezone"):
        next_allowed(datetime(2026, 3, 2, 22, 0, tzinfo=UTC), [], DAY)


# --- next_allowed: properties -------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(now=instants, zones=zone_lists, window=windows)
def test_next_allowed_is_the_earliest_allowed_instant(
    now: datetime, zones: list[ZoneInfo], window: Window
) -> None:
    result = next_allowed(now, zones, window)
    assert result >= now
    expected = _oracle(now, zones, window)
    if expected is not None:
        assert result == expected  # no earlier allowed instant, and inside every zone's window
        assert all(is_inside(result, zone, window) for zone in zones)
    else:
        assert is_inside(result, zones[0], window)
        assert result == _oracle(now, zones[:1], window, hours=24 * 8)
    if all(is_inside(now, zone, window) for zone in zones):
        assert result == now


@settings(max_examples=200, deadline=None)
@given(now=instants, zones=zone_lists, window=windows)
def test_next_allowed_is_idempotent(now: datetime, zones: list[ZoneInfo], window: Window) -> None:
    once = next_allowed(now, zones, window)
    assert next_allowed(once, zones, window) == once


@settings(max_examples=100, deadline=None)
@given(base=st.sampled_from(TRANSITIONS), minutes=st.integers(-180, 180), zone=st.sampled_from(ZONES))
def test_default_window_around_transitions(base: datetime, minutes: int, zone: ZoneInfo) -> None:
    now = base + timedelta(minutes=minutes)
    result = next_allowed(now, [zone], DAY)
    assert result == _oracle(now, [zone], DAY)
    local = result.astimezone(zone)
    assert local.time() >= DAY.start_time and local.hour < 21
