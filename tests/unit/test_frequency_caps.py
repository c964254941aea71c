"""Frequency caps: parsing the setting, counting per channel and category, and `free_at`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winback.messaging.caps import Cap, CapResult, SentRecord, check, parse_caps

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CAPS = parse_caps({"sms": "1/24", "sms:cart_recovery": "1/48", "email": "3/24"})


def _ago(hours: float, channel: str = "sms", category: str | None = None) -> SentRecord:
    return SentRecord(at=NOW - timedelta(hours=hours), channel=channel, category=category)


def test_parse_caps_reads_channel_and_category_keys() -> None:
    assert list(CAPS) == [
        Cap("sms", None, 1, 24.0),
        Cap("sms", "cart_recovery", 1, 48.0),
        Cap("email", None, 3, 24.0),
    ]
    assert [cap.text for cap in CAPS] == [
        "at most 1 sms per 24 h",
        "at most 1 sms (cart_recovery) per 48 h",
        "at most 3 email per 24 h",
    ]
    assert parse_caps({"push": " 2 / 1.5 "}) == (Cap("push", None, 2, 1.5),)
    assert parse_caps({}) == ()


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"fax": "1/24"}, "frequency cap key 'fax' must be a channel"),
        ({"mms": "1/24"}, "mms counts as sms"),
        ({"sms:Cart Recovery": "1/24"}, "'sms:Cart Recovery': the category must be"),
        ({"sms:": "1/24"}, "'sms:': the category must be"),
        ({"sms": "1 per day"}, "frequency cap 'sms' must look like 'count/hours' .*got '1 per day'"),
        ({"sms": "0/24"}, "'sms': the count must be at least 1, got '0/24'"),
        ({"email": "3/0"}, "'email': the hours must be more than 0, got '3/0'"),
        ({"sms": "1/24", " sms": "2/24"}, "given twice"),
    ],
)
def test_parse_caps_errors_name_the_key_or_value(mapping: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_caps(mapping)


def test_no_history_is_allowed() -> None:
    result = check(CAPS, channel="sms", category=None, now=NOW, history=())
    assert result == CapResult(allowed=True)
    assert result.reason is None


def test_channel_cap_counts_every_category() -> None:
    result = check(CAPS, channel="sms", category="winback", now=NOW, history=[_ago(3, category="welcome")])
    assert not result.allowed
    assert result.cap == Cap("sms", None, 1, 24.0)
    assert result.free_at == NOW + timedelta(hours=21)
    assert result.reason == "over the cap 'at most 1 sms per 24 h' until 2026-03-03 06:00 UTC"


def test_category_cap_counts_only_its_category() -> None:
    history = [_ago(30, category="cart_recovery")]  # outside the 24 h sms cap, inside the 48 h one
    capped = check(CAPS, channel="sms", category="cart_recovery", now=NOW, history=history)
    assert capped.cap == Cap("sms", "cart_recovery", 1, 48.0)
    assert capped.free_at == NOW + timedelta(hours=18)
    other = check(CAPS, channel="sms", category="winback", now=NOW, history=history)
    assert other.allowed


def test_mms_counts_as_sms_both_ways() -> None:
    assert not check(CAPS, channel="mms", category=None, now=NOW, history=[_ago(1, "sms")]).allowed
    assert not check(CAPS, channel="sms", category=None, now=NOW, history=[_ago(1, "mms")]).allowed


def test_other_channels_do_not_count() -> None:
    history = [_ago(1, "email"), _ago(2, "push"), _ago(3, "email")]
    assert check(CAPS, channel="sms", category=None, now=NOW, history=history).allowed
    assert check(CAPS, channel="email", category=None, now=NOW, history=history).allowed
    assert check(CAPS, channel="push", category=None, now=NOW, history=history).allowed  # no push cap


def test_count_above_one_frees_when_enough_have_left() -> None:
    history = [_ago(20, "email"), _ago(10, "email"), _ago(1, "email"), _ago(30, "email")]
    result = check(CAPS, channel="email", category=None, now=NOW, history=history)
    assert not result.allowed
    assert result.free_at == NOW + timedelta(hours=4)  # the one sent 20 h ago leaves the window
    assert check(CAPS, channel="email", category=None, now=NOW, history=history[1:]).allowed


def test_window_is_sliding_and_exclusive_at_its_start() -> None:
    exactly_a_day = [_ago(24)]
    assert check(CAPS, channel="sms", category=None, now=NOW, history=exactly_a_day).allowed
    just_inside = [SentRecord(NOW - timedelta(hours=24) + timedelta(microseconds=1), "sms")]
    assert not check(CAPS, channel="sms", category=None, now=NOW, history=just_inside).allowed


def test_the_cap_that_frees_last_is_reported() -> None:
    history = [_ago(1, category="cart_recovery"), _ago(40, category="cart_recovery")]
    result = check(CAPS, channel="sms", category="cart_recovery", now=NOW, history=history)
    assert result.cap == Cap("sms", "cart_recovery", 1, 48.0)
    assert result.free_at == NOW + timedelta(hours=47)


def test_times_in_other_zones_are_compared_as_instants() -> None:
    new_york = ZoneInfo("America/New_York")
    # The night clocks jump forward: 24 h after 2026-03-07 12:00 EST is 2026-03-08 13:00 EDT.
    sent = datetime(2026, 3, 7, 12, 0, tzinfo=new_york)
    now = datetime(2026, 3, 8, 12, 30, tzinfo=new_york)
    result = check(CAPS, channel="sms", category=None, now=now, history=[SentRecord(sent, "sms")])
    assert result.free_at == datetime(2026, 3, 8, 17, 0, tzinfo=UTC)
    assert result.free_at is not None and result.free_at.tzinfo is UTC


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="now must be a timezone-aware"):
        check(CAPS, channel="sms", category=None, now=datetime(2026, 3, 2), history=())
    with pytest.raises(ValueError, match="SentRecord.at must be"):
        check(CAPS, channel="sms", category=None, now=NOW, history=[SentRecord(datetime(2026, 3, 1), "sms")])


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(1, 4),
    hours=st.sampled_from([1.0, 24.0, 48.0, 0.5]),
    offsets=st.lists(st.integers(-3 * 86_400, 0), max_size=10),
)
def test_free_at_is_the_first_instant_with_room(count: int, hours: float, offsets: list[int]) -> None:
    caps = (Cap("sms", None, count, hours),)
    history = [SentRecord(NOW + timedelta(seconds=offset), "sms") for offset in offsets]
    result = check(caps, channel="sms", category=None, now=NOW, history=history)
    window = timedelta(hours=hours)
    in_window = sum(1 for record in history if record.at > NOW - window)
    assert result.allowed == (in_window < count)
    if not result.allowed:
        assert result.free_at is not None and result.free_at > NOW
        assert check(caps, channel="sms", category=None, now=result.free_at, history=history).allowed
        just_before = result.free_at - timedelta(microseconds=1)
        assert not check(caps, channel="sms", category=None, now=just_before, history=history).allowed
