"""The send decision: every rule, in order, with the sentence it gives."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winback.messaging.caps import SentRecord
from winback.messaging.policy import Decision, SendPolicy, SendRequest
from winback.settings import Settings

NEW_YORK = ZoneInfo("America/New_York")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
NOON_NY = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)  # Monday 12:00 in New York
POLICY = SendPolicy.from_config(
    quiet_hours_window="08:00-21:00",
    quiet_hours_overrides={"US-TX": "09:00-21:00"},
    frequency_caps={"sms": "1/24", "sms:cart_recovery": "1/48", "email": "3/24"},
)
PHONE = "+12125550123"


def _sms(**changes: Any) -> SendRequest:
    base = SendRequest(
        channel="sms",
        now=NOON_NY,
        consent="subscribed",
        address=PHONE,
        zones=(NEW_YORK,),
        country="US",
        region="NY",
    )
    return replace(base, **changes)


def _email(**changes: Any) -> SendRequest:
    return replace(SendRequest(channel="email", now=NOON_NY, address="ann@example.com"), **changes)


def _decide(request: SendRequest) -> Decision:
    return POLICY.decide(request)


# --- merchant channels --------------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["slack", "webhook", "meta"])
def test_merchant_channels_always_send(channel: Any) -> None:
    request = SendRequest(
        channel=channel, now=NOON_NY, has_address=False, suppression="bounced", consent="unsubscribed"
    )
    assert _decide(request) == Decision("send", None, None, "merchant")


# --- address ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "reason"),
    [
        ("sms", "no phone number on the profile"),
        ("mms", "no phone number on the profile"),
        ("email", "no email address on the profile"),
        ("push", "no push subscription for this customer"),
    ],
)
def test_no_address_skips(channel: Any, reason: str) -> None:
    for transactional in (False, True):
        request = SendRequest(channel=channel, now=NOON_NY, has_address=False, transactional=transactional)
        assert _decide(request) == Decision("skip", None, reason, "no_address")


# --- suppression --------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["bounced", "complained", "invalid", "manual"])
def test_suppression_stops_marketing_and_transactional(reason: Any) -> None:
    for transactional in (False, True):
        decision = _decide(_sms(suppression=reason, transactional=transactional))
        assert decision == Decision(
            "skip", None, f"+12125550123 is on the suppression list ({reason})", "suppressed"
        )


def test_unsubscribed_suppression_stops_marketing_only() -> None:
    marketing = _decide(_email(suppression="unsubscribed"))
    assert marketing == Decision(
        "skip", None, "ann@example.com is on the suppression list (unsubscribed)", "suppressed"
    )
    assert _decide(_email(suppression="unsubscribed", transactional=True)) == Decision(
        "send", None, None, "transactional"
    )


def test_suppression_without_an_address_text() -> None:
    decision = _decide(_sms(suppression="bounced", address=None))
    assert decision.reason == "the address is on the suppression list (bounced)"


def test_suppression_is_checked_before_consent() -> None:
    decision = _decide(_sms(suppression="complained", consent=None))
    assert decision.rule == "suppressed"


# --- consent ------------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["sms", "mms"])
def test_sms_marketing_needs_a_recorded_opt_in(channel: Any) -> None:
    assert _decide(_sms(channel=channel, consent=None)) == Decision(
        "skip", None, "no SMS opt-in recorded", "consent"
    )
    assert _decide(_sms(channel=channel, consent="unsubscribed")) == Decision(
        "skip", None, "the customer unsubscribed from SMS", "consent"
    )
    assert _decide(_sms(channel=channel)) == Decision("send", None, None, "allowed")


def test_email_is_opt_out() -> None:
    assert _decide(_email(consent=None)).action == "send"
    assert _decide(_email(consent="subscribed")).action == "send"
    assert _decide(_email(consent="unsubscribed")) == Decision(
        "skip", None, "the customer unsubscribed from email", "consent"
    )


def test_push_needs_the_subscription_and_honours_an_opt_out() -> None:
    push = SendRequest(channel="push", now=NOON_NY, address="https://push.example/abc")
    assert _decide(push).action == "send"
    assert _decide(replace(push, consent="unsubscribed")) == Decision(
        "skip", None, "the customer unsubscribed from push", "consent"
    )


def test_transactional_needs_no_consent() -> None:
    assert _decide(_sms(consent=None, transactional=True)) == Decision("send", None, None, "transactional")
    assert _decide(_email(consent="unsubscribed", transactional=True)).action == "send"


# --- quiet hours --------------------------------------------------------------------------------


def test_marketing_sms_in_the_evening_waits_for_the_morning() -> None:
    evening = datetime(2026, 3, 2, 21, 30, tzinfo=NEW_YORK)
    decision = _decide(_sms(now=evening))
    assert decision == Decision(
        "defer",
        datetime(2026, 3, 3, 8, 0, tzinfo=NEW_YORK),
        "quiet hours in America/New_York until 08:00",
        "quiet_hours",
    )
    assert decision.until is not None and decision.until.tzinfo is UTC


def test_mms_keeps_quiet_hours_too() -> None:
    early = datetime(2026, 3, 2, 7, 59, tzinfo=NEW_YORK)
    decision = _decide(_sms(channel="mms", now=early))
    assert (decision.action, decision.until) == ("defer", datetime(2026, 3, 2, 8, 0, tzinfo=NEW_YORK))


def test_region_override_is_used() -> None:
    chicago = ZoneInfo("America/Chicago")
    at_eight = datetime(2026, 3, 2, 8, 30, tzinfo=chicago)
    decision = _decide(_sms(now=at_eight, zones=(chicago,), region="TX"))
    assert decision == Decision(
        "defer",
        datetime(2026, 3, 2, 9, 0, tzinfo=chicago),
        "quiet hours in America/Chicago until 09:00",
        "quiet_hours",
    )
    assert _decide(_sms(now=at_eight, zones=(chicago,), region="IL")).action == "send"


def test_several_zones_name_the_closed_one() -> None:
    early_west = datetime(2026, 3, 2, 9, 0, tzinfo=NEW_YORK)  # 06:00 in Los Angeles
    decision = _decide(_sms(now=early_west, zones=(NEW_YORK, LOS_ANGELES)))
    assert decision.until == datetime(2026, 3, 2, 8, 0, tzinfo=LOS_ANGELES)
    assert decision.reason == (
        "quiet hours in America/Los_Angeles until 08:00 (the number may be in 2 timezones; waiting until all allow it)"
    )


def test_email_and_push_ignore_quiet_hours() -> None:
    night = datetime(2026, 3, 2, 3, 0, tzinfo=NEW_YORK)
    assert _decide(_email(now=night, zones=(NEW_YORK,))).action == "send"
    assert _decide(SendRequest(channel="push", now=night, zones=(NEW_YORK,))).action == "send"


def test_transactional_sms_ignores_quiet_hours_and_caps() -> None:
    night = datetime(2026, 3, 2, 3, 0, tzinfo=NEW_YORK)
    history = (SentRecord(night - timedelta(hours=1), "sms"),)
    assert _decide(_sms(now=night, transactional=True, history=history)) == Decision(
        "send", None, None, "transactional"
    )


def test_marketing_sms_without_zones_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezones"):
        _decide(_sms(zones=()))


# --- caps ---------------------------------------------------------------------------------------


def test_over_the_cap_skips_by_default() -> None:
    history = (SentRecord(NOON_NY - timedelta(hours=8), "sms", "welcome"),)
    assert _decide(_sms(history=history)) == Decision(
        "skip", None, "over the cap 'at most 1 sms per 24 h' until 2026-03-03 09:00 UTC", "cap"
    )


def test_over_the_cap_defers_when_asked() -> None:
    history = (SentRecord(NOON_NY - timedelta(hours=20), "sms", "welcome"),)
    decision = _decide(_sms(history=history, when_capped="defer"))
    assert decision == Decision(
        "defer",
        datetime(2026, 3, 2, 21, 0, tzinfo=UTC),  # 16:00 in New York: inside the window
        "over the cap 'at most 1 sms per 24 h' until 2026-03-02 21:00 UTC",
        "cap",
    )


def test_category_cap() -> None:
    history = (SentRecord(NOON_NY - timedelta(hours=40), "mms", "cart_recovery"),)
    decision = _decide(_sms(category="cart_recovery", history=history, when_capped="defer"))
    assert (
        decision.reason == "over the cap 'at most 1 sms (cart_recovery) per 48 h' until 2026-03-03 01:00 UTC"
    )
    assert _decide(_sms(category="winback", history=history)).action == "send"


def test_email_cap() -> None:
    history = tuple(SentRecord(NOON_NY - timedelta(hours=h), "email") for h in (1, 2, 3))
    decision = _decide(_email(history=history))
    assert decision == Decision(
        "skip", None, "over the cap 'at most 3 email per 24 h' until 2026-03-03 14:00 UTC", "cap"
    )


def test_cap_is_measured_when_quiet_hours_end() -> None:
    # 22:00 in New York; the last SMS went out at 09:00 yesterday → out of the 24 h window by 08:00.
    night = datetime(2026, 3, 2, 22, 0, tzinfo=NEW_YORK)
    history = (SentRecord(datetime(2026, 3, 2, 7, 30, tzinfo=NEW_YORK), "sms"),)
    decision = _decide(_sms(now=night, history=history))
    assert decision.action == "defer" and decision.rule == "quiet_hours"
    assert decision.until == datetime(2026, 3, 3, 8, 0, tzinfo=NEW_YORK)


def test_cap_still_full_when_quiet_hours_end_skips_now() -> None:
    night = datetime(2026, 3, 2, 22, 0, tzinfo=NEW_YORK)
    history = (SentRecord(datetime(2026, 3, 2, 12, 0, tzinfo=NEW_YORK), "sms"),)
    decision = _decide(_sms(now=night, history=history))
    assert decision == Decision(
        "skip", None, "over the cap 'at most 1 sms per 24 h' until 2026-03-03 17:00 UTC", "cap"
    )


def test_deferred_cap_that_frees_at_night_waits_for_the_morning() -> None:
    # Capped until 22:30 New York time (outside the window) → the answer is the next 08:00.
    now = datetime(2026, 3, 2, 12, 0, tzinfo=NEW_YORK)
    history = (SentRecord(datetime(2026, 3, 1, 22, 30, tzinfo=NEW_YORK), "sms"),)
    decision = _decide(_sms(now=now, history=history, when_capped="defer"))
    assert decision.until == datetime(2026, 3, 3, 8, 0, tzinfo=NEW_YORK)
    assert decision.rule == "quiet_hours"
    assert decision.reason == "quiet hours in America/New_York until 08:00"


def test_deferred_until_when_both_allow() -> None:
    night = datetime(2026, 3, 2, 22, 0, tzinfo=NEW_YORK)
    history = (SentRecord(datetime(2026, 3, 2, 9, 30, tzinfo=NEW_YORK), "sms"),)
    decision = _decide(_sms(now=night, history=history, when_capped="defer"))
    assert decision.until == datetime(2026, 3, 3, 9, 30, tzinfo=NEW_YORK)
    assert decision.rule == "cap"
    assert decision.reason == "over the cap 'at most 1 sms per 24 h' until 2026-03-03 14:30 UTC"
    later = _decide(_sms(now=decision.until, history=history, when_capped="defer"))
    assert later.action == "send"


def test_push_without_a_cap_is_not_capped() -> None:
    history = tuple(SentRecord(NOON_NY - timedelta(minutes=m), "push") for m in range(1, 50))
    assert _decide(SendRequest(channel="push", now=NOON_NY, history=history)).action == "send"


# --- the rest -----------------------------------------------------------------------------------


def test_order_of_checks_address_first() -> None:
    decision = _decide(_sms(has_address=False, suppression="bounced", consent=None))
    assert decision.rule == "no_address"


def test_consent_beats_quiet_hours() -> None:
    night = datetime(2026, 3, 2, 23, 0, tzinfo=NEW_YORK)
    assert _decide(_sms(now=night, consent=None)).action == "skip"


def test_long_deferral_names_the_date() -> None:
    policy = SendPolicy.from_config(
        quiet_hours_window="02:10-02:40", quiet_hours_overrides={}, frequency_caps={}
    )
    # The window lies in the spring-forward gap on 2026-03-08: the next one is on the 9th.
    now = datetime(2026, 3, 8, 1, 0, tzinfo=NEW_YORK)
    decision = policy.decide(_sms(now=now))
    assert decision.reason == "quiet hours in America/New_York until 02:10 on 2026-03-09"


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _decide(_sms(now=datetime(2026, 3, 2, 12, 0)))


def test_from_settings_reads_the_messaging_block() -> None:
    configured = Settings(quiet_hours_window="09:00-20:00", frequency_caps={"sms": "2/24"})
    policy = SendPolicy.from_settings(configured)
    assert str(policy.quiet_hours.default) == "09:00-20:00"
    assert [cap.text for cap in policy.caps] == ["at most 2 sms per 24 h"]
    with pytest.raises(ValueError, match="frequency cap key 'fax'"):
        SendPolicy.from_settings(Settings(frequency_caps={"fax": "1/24"}))


@settings(max_examples=150, deadline=None)
@given(
    now=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
    ),
    sent_hours_ago=st.lists(st.floats(0.0, 72.0), max_size=4),
    category=st.sampled_from([None, "cart_recovery", "winback"]),
    zones=st.lists(
        st.sampled_from([NEW_YORK, LOS_ANGELES, ZoneInfo("Europe/London")]),
        min_size=1,
        max_size=2,
        unique=True,
    ),
)
def test_a_deferral_ends_in_a_send(
    now: datetime, sent_hours_ago: list[float], category: str | None, zones: list[ZoneInfo]
) -> None:
    history = tuple(SentRecord(now - timedelta(hours=h), "sms", "cart_recovery") for h in sent_hours_ago)
    request = _sms(now=now, history=history, category=category, when_capped="defer", zones=tuple(zones))
    decision = _decide(request)
    assert decision.action in ("send", "defer")
    if decision.action == "defer":
        assert decision.until is not None and decision.until > now
        assert _decide(replace(request, now=decision.until)) == Decision("send", None, None, "allowed")
