"""Frequency caps across flows: how many marketing messages one person may get per channel.

Configuration maps `"channel"` or `"channel:category"` to `"count/hours"`:
`{"sms": "1/24", "sms:cart_recovery": "1/48", "email": "3/24"}`.

- A `"channel"` cap counts every marketing message on that channel, whatever its category.
- A `"channel:category"` cap counts only that category's messages, and applies only to a message
  of that category (the plain channel cap still applies to it too).
- MMS counts as SMS: a cap on `"sms"` limits SMS and MMS together (both land in the same
  messaging app and both need the SMS opt-in); a key `"mms"` is refused to make that plain.
- Only marketing messages count, and only marketing messages are capped: transactional ones are
  never in `history`, and the policy does not call `check` for them.

The window is a sliding one: a message sent at `t` counts until `t + hours` (then no longer).
When a message is over a cap, `free_at` is the first instant at which enough counted messages
have left the window for it to fit — the earliest time deferring makes sense. Pure: `now` is an
argument.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from winback.messaging.channels.base import family

__all__ = ["CAPPED_CHANNELS", "Cap", "CapResult", "SentRecord", "check", "parse_caps"]

CAPPED_CHANNELS = ("sms", "email", "push")  # customer-facing channels a cap may name
_CATEGORY = re.compile(r"^[a-z0-9_]{1,64}$")
_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*$")


def _hours_text(hours: float) -> str:
    return f"{hours:g} h"


@dataclass(frozen=True, slots=True)
class Cap:
    """At most `count` marketing messages on `channel` (of `category`, when set) per `hours`."""

    channel: str
    category: str | None
    count: int
    hours: float

    @property
    def key(self) -> str:
        return self.channel if self.category is None else f"{self.channel}:{self.category}"

    @property
    def window(self) -> timedelta:
        return timedelta(hours=self.hours)

    @property
    def text(self) -> str:
        """e.g. "at most 1 sms per 24 h", "at most 1 sms (cart_recovery) per 48 h"."""
        what = self.channel if self.category is None else f"{self.channel} ({self.category})"
        return f"at most {self.count} {what} per {_hours_text(self.hours)}"

    def applies_to(self, channel: str, category: str | None) -> bool:
        return self.channel == family(channel) and (self.category is None or self.category == category)

    def counts(self, record: SentRecord) -> bool:
        return self.applies_to(record.channel, record.category)


@dataclass(frozen=True, slots=True)
class SentRecord:
    """A marketing message already sent (or accepted for sending) to this person."""

    at: datetime
    channel: str
    category: str | None = None


@dataclass(frozen=True, slots=True)
class CapResult:
    """`allowed`, or the cap that is full and `free_at`, when the message would fit again."""

    allowed: bool
    cap: Cap | None = None
    free_at: datetime | None = None

    @property
    def reason(self) -> str | None:
        if self.allowed or self.cap is None or self.free_at is None:
            return None
        return f"over the cap '{self.cap.text}' until {self.free_at:%Y-%m-%d %H:%M} UTC"


def _parse_key(key: str) -> tuple[str, str | None]:
    channel, separator, category = key.strip().partition(":") if isinstance(key, str) else ("", "", "")
    if channel == "mms":
        raise ValueError(f"frequency cap {key!r}: mms counts as sms for caps; write 'sms' instead")
    if channel not in CAPPED_CHANNELS:
        raise ValueError(
            f"frequency cap key {key!r} must be a channel ({', '.join(CAPPED_CHANNELS)}), "
            "optionally followed by ':category' (e.g. 'sms:cart_recovery')"
        )
    if separator and not _CATEGORY.match(category):
        raise ValueError(
            f"frequency cap key {key!r}: the category must be lower-case letters, digits and '_' "
            "(e.g. 'sms:cart_recovery')"
        )
    return channel, (category or None)


def _parse_limit(key: str, value: str) -> tuple[int, float]:
    match = _LIMIT.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"frequency cap {key!r} must look like 'count/hours' (e.g. '1/24'), got {value!r}")
    count, hours = int(match.group(1)), float(match.group(2))
    if count < 1:
        raise ValueError(f"frequency cap {key!r}: the count must be at least 1, got {value!r}")
    if hours <= 0:
        raise ValueError(f"frequency cap {key!r}: the hours must be more than 0, got {value!r}")
    return count, hours


def parse_caps(mapping: Mapping[str, str]) -> tuple[Cap, ...]:
    """Parse the `frequency_caps` setting; every error names the bad key or value."""
    caps: list[Cap] = []
    seen: set[tuple[str, str | None]] = set()
    for key, value in mapping.items():
        channel, category = _parse_key(key)
        if (channel, category) in seen:
            raise ValueError(f"frequency cap {key!r} is given twice")
        seen.add((channel, category))
        count, hours = _parse_limit(key, value)
        caps.append(Cap(channel, category, count, hours))
    return tuple(caps)


def _utc(moment: datetime, what: str) -> datetime:
    # Arithmetic on zoneinfo-aware datetimes is wall-clock arithmetic: work in UTC.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {moment!r}")
    return moment.astimezone(UTC)


def check(
    caps: Sequence[Cap],
    *,
    channel: str,
    category: str | None,
    now: datetime,
    history: Sequence[SentRecord],
) -> CapResult:
    """Whether one more marketing message on `channel` (`category`) fits every cap at `now`.

    Every datetime must be timezone-aware; `free_at` is in UTC. When several caps are full, the one that frees up last is reported: at its `free_at` every
    cap has room (given the same history), so deferring until then is enough.
    """
    now = _utc(now, "now")
    worst: CapResult | None = None
    for cap in caps:
        if not cap.applies_to(channel, category):
            continue
        since = now - cap.window
        counted: list[datetime] = []
        for record in history:
            at = _utc(record.at, "SentRecord.at")
            if cap.counts(record) and at > since:
                counted.append(at)
        if len(counted) < cap.count:
            continue
        counted.sort()
        # The message fits once all but count - 1 of the counted messages have left the window.
        leaving = counted[len(counted) - cap.count]
        free_at = leaving + cap.window
        if worst is None or worst.free_at is None or free_at > worst.free_at:
            worst = CapResult(allowed=False, cap=cap, free_at=free_at)
    return worst if worst is not None else CapResult(allowed=True)
