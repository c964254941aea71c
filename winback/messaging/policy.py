"""The one decision "may this message go out now?": send, defer until a time, or skip.

`SendPolicy.decide` composes the rules, in this order:

1. Merchant channels (slack, webhook, meta) always send: they reach the merchant or an ad
   platform, not a shopper's phone or inbox. (Meta audience sync keeps customers in step with
   the merchant's audiences; "remove" operations must be able to go out after an unsubscribe or
   an erasure, so nothing here stops them — what is synced is the flow's business.)
2. No address on the channel (no phone, no email, no push subscription) → skip.
3. Suppressed address → skip. Every reason stops every message on the channel, except
   `unsubscribed`, which stops marketing only: receipts and shipping updates still go.
4. Consent, marketing only:
   - SMS/MMS need a recorded opt-in (`consent == "subscribed"`); none or an opt-out → skip.
   - Email is opt-out: skipped only when the customer unsubscribed (`consent == "unsubscribed"`);
     no record means they never said no (most stores collect email on checkout under that rule).
   - Push needs the subscription (the address, rule 2); an explicit `push_consent` of
     "unsubscribed" also stops marketing pushes.
   Transactional messages need no marketing consent.
5. Transactional messages send now: quiet hours and caps are for marketing.
6. Quiet hours (marketing SMS/MMS): outside the recipient's window → defer until it opens.
7. Frequency caps (marketing): over a cap → skip, or defer until it frees (`when_capped`).

Why this order: everything that can end in a skip comes before what can only defer, so a message
that will never go is not held back and re-examined for nothing ("a skip beats a deferral"); and
the permanent reasons (no address, suppression, consent) come before the passing ones. Caps come
last and are measured at the moment the message could actually leave — when quiet hours push it
to 08:00, the cap is checked at 08:00, because a send from yesterday evening may have left the
window by then. With `when_capped="defer"` the two are combined until both allow the same instant.

Pure: `now`, the recipient's zones and their history are all in the request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

from winback.messaging.caps import Cap, CapResult, SentRecord, check, parse_caps
from winback.messaging.channels.base import ChannelName
from winback.messaging.quiet_hours import QuietHours, Window, is_inside, next_allowed

if TYPE_CHECKING:
    from winback.settings import Settings

__all__ = [
    "MERCHANT_CHANNELS",
    "Action",
    "Consent",
    "Decision",
    "SendPolicy",
    "SendRequest",
    "SuppressionReason",
]

Action = Literal["send", "defer", "skip"]
Consent = Literal["subscribed", "unsubscribed"]
SuppressionReason = Literal["unsubscribed", "bounced", "complained", "invalid", "manual"]
Rule = Literal[
    "merchant", "transactional", "allowed", "no_address", "suppressed", "consent", "quiet_hours", "cap"
]

MERCHANT_CHANNELS: frozenset[str] = frozenset({"slack", "webhook", "meta"})
QUIET_HOURS_CHANNELS: frozenset[str] = frozenset({"sms", "mms"})
_MAX_ROUNDS = 16  # quiet hours ↔ caps alternations; each round moves strictly later

_NO_ADDRESS = {
    "sms": "no phone number on the profile",
    "mms": "no phone number on the profile",
    "email": "no email address on the profile",
    "push": "no push subscription for this customer",
}
_CHANNEL_WORD = {"sms": "SMS", "mms": "SMS", "email": "email", "push": "push"}
_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Everything the decision needs about one message and its recipient.

    `address` is only used in reason texts (the phone number, email address or push endpoint);
    `has_address` says whether there is one at all. `zones` are the recipient's timezones, most
    likely first (`quiet_hours.recipient_timezones`); `history` their recent marketing sends.
    """

    channel: ChannelName
    now: datetime
    transactional: bool = False
    category: str | None = None
    consent: Consent | None = None
    suppression: SuppressionReason | None = None
    has_address: bool = True
    address: str | None = None
    zones: tuple[ZoneInfo, ...] = ()
    country: str | None = None
    region: str | None = None
    history: tuple[SentRecord, ...] = ()
    when_capped: Literal["skip", "defer"] = "skip"


@dataclass(frozen=True, slots=True)
class Decision:
    """`send` now; `defer` until `until` (then decide again); `skip` for good. `reason` is a
    sentence for people (message status, logs); `rule` names the check that decided."""

    action: Action
    until: datetime | None = None
    reason: str | None = None
    rule: Rule = "allowed"


def _send(rule: Rule = "allowed") -> Decision:
    return Decision("send", None, None, rule)


def _skip(reason: str, rule: Rule) -> Decision:
    return Decision("skip", None, reason, rule)


def _utc_text(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


@dataclass(frozen=True)
class SendPolicy:
    """The quiet hours and frequency caps in force; `decide` applies them to one message."""

    quiet_hours: QuietHours
    caps: tuple[Cap, ...] = ()

    @classmethod
    def from_config(
        cls,
        *,
        quiet_hours_window: str,
        quiet_hours_overrides: Mapping[str, str],
        frequency_caps: Mapping[str, str],
    ) -> SendPolicy:
        return cls(
            QuietHours.from_settings(quiet_hours_window, quiet_hours_overrides),
            parse_caps(frequency_caps),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> SendPolicy:
        return cls.from_config(
            quiet_hours_window=settings.quiet_hours_window,
            quiet_hours_overrides=settings.quiet_hours_overrides,
            frequency_caps=settings.frequency_caps,
        )

    def decide(self, request: SendRequest) -> Decision:
        now = request.now
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"SendRequest.now must be a timezone-aware datetime, got {now!r}")
        channel = request.channel
        if channel in MERCHANT_CHANNELS:
            return _send("merchant")

        if not request.has_address:
            return _skip(_NO_ADDRESS.get(channel, f"no {channel} address for this customer"), "no_address")

        suppression = request.suppression
        if suppression is not None and not (suppression == "unsubscribed" and request.transactional):
            who = request.address or "the address"
            return _skip(f"{who} is on the suppression list ({suppression})", "suppressed")

        if request.transactional:
            return _send("transactional")
        refusal = self._consent_refusal(request)
        if refusal is not None:
            return _skip(refusal, "consent")

        return self._when(request, now.astimezone(UTC))

    @staticmethod
    def _consent_refusal(request: SendRequest) -> str | None:
        word = _CHANNEL_WORD.get(request.channel, request.channel)
        if request.channel in ("sms", "mms"):
            if request.consent is None:
                return "no SMS opt-in recorded"
            if request.consent != "subscribed":
                return "the customer unsubscribed from SMS"
        elif request.consent == "unsubscribed":
            return f"the customer unsubscribed from {word}"
        return None

    def _when(self, request: SendRequest, now: datetime) -> Decision:
        """Quiet hours and caps, for a marketing message that may be sent at all."""
        quiet = request.channel in QUIET_HOURS_CHANNELS
        if quiet and not request.zones:
            raise ValueError("a marketing SMS needs the recipient's timezones (SendRequest.zones)")
        window = self.quiet_hours.window_for(request.country, request.region) if quiet else None
        at = now
        last_rule: Rule = "allowed"
        capped: CapResult | None = None
        for _ in range(_MAX_ROUNDS):
            if window is not None:
                opens = next_allowed(at, request.zones, window)
                if opens > at:
                    at, last_rule = opens, "quiet_hours"
            capped = check(
                self.caps, channel=request.channel, category=request.category, now=at, history=request.history
            )
            if capped.allowed or capped.free_at is None:
                break
            if request.when_capped == "skip":
                return _skip(self._cap_text(capped), "cap")
            at, last_rule = capped.free_at, "cap"
            if window is None or all(is_inside(at, zone, window) for zone in request.zones):
                break
        if at == now:
            return _send()
        if last_rule == "cap" and capped is not None and not capped.allowed:
            return Decision("defer", at, self._cap_text(capped), "cap")
        assert window is not None
        return Decision("defer", at, self._quiet_text(now, at, request.zones, window), "quiet_hours")

    @staticmethod
    def _cap_text(result: CapResult) -> str:
        return result.reason or "over a frequency cap"

    @staticmethod
    def _quiet_text(now: datetime, until: datetime, zones: Sequence[ZoneInfo], window: Window) -> str:
        closed = [zone for zone in zones if not is_inside(now, zone, window)] or list(zones)
        zone = closed[0]
        local = until.astimezone(zone)
        text = f"quiet hours in {zone.key} until {local:%H:%M}"
        if until - now >= _DAY:  # "until 08:00" would read as the next 08:00
            text += f" on {local:%Y-%m-%d}"
        if len(zones) > 1:
            text += f" (the number may be in {len(zones)} timezones; waiting until all allow it)"
        return text
