"""Quiet hours: marketing SMS go out only while it is daytime where the recipient is.

A `Window` is the part of the local day when sending is allowed ("08:00-21:00"; a window may cross
midnight, "22:00-06:00"; "00:00-24:00" is the whole day). It is half-open: at 08:00 the window is
open, at 21:00 it is closed again. "Local" means the wall clock of the recipient's timezone, so
on the night clocks fall back the hour that repeats is inside or outside the window both times.

Which window applies (`QuietHours.window_for`): an override for the recipient's region, else one
for their country, else the default. Override keys are `"CC"` (ISO 3166-1 alpha-2) or `"CC-XX"`.
The part after the dash is compared, case-insensitively and with spaces collapsed, with the
profile's free-text `region`: so `"US-TX"` (the ISO 3166-2 code) matches a profile whose region
is `"TX"`, `"tx"` or `"US-TX"`, and a merchant whose data holds names may write `"US-Texas"` to
match `"Texas"`. No table of subdivision names is consulted: codes and names are not translated
into each other.

Which timezones (`recipient_timezones`): the profile's own IANA timezone when it is valid; else
what the phone number says (an area code gives one zone, a toll-free or unknown prefix can give
many, and "Etc/Unknown" is ignored; when the store's timezone is among several, it is put first);
else the country's zone when phonenumbers' data for its calling code names exactly one ("DE",
not "US"); else the store's timezone.

When (`next_allowed`): with several zones (an ambiguous number) the message waits until the
window is open in every one of them — the conservative reading. When the zones are so far apart
that the windows never overlap within 48 hours, the first zone's window alone decides (callers
list the most likely zone first); the message is delayed, never dropped.

Everything here is pure: the current time is an argument.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezone

__all__ = [
    "QuietHours",
    "Window",
    "is_inside",
    "next_allowed",
    "parse_window",
    "recipient_timezones",
]

MINUTES_PER_DAY = 24 * 60
SEARCH_HORIZON = timedelta(hours=48)  # how far ahead all zones' windows are looked for together
_FALLBACK_HORIZON = timedelta(days=8)  # one zone's window: always found within a day or two
_TRANSITION_PROBE_S = 3 * 3600  # offsets are sampled this often to find DST transitions
_UNKNOWN_ZONE = "Etc/Unknown"

_WINDOW_TEXT = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_OVERRIDE_KEY = re.compile(r"^([A-Za-z]{2})(?:-(.+))?$")


@dataclass(frozen=True, slots=True)
class Window:
    """Allowed local times: `start` ≤ t < `end`, in minutes after local midnight.

    `start` is 0‥1439, `end` 1‥1440 (1440 is the midnight that ends the day). `start > end` is a
    window that crosses midnight.
    """

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < MINUTES_PER_DAY:
            raise ValueError(f"window start must be 00:00‥23:59, got minute {self.start}")
        if not 0 < self.end <= MINUTES_PER_DAY:
            raise ValueError(f"window end must be 00:01‥24:00, got minute {self.end}")
        if self.start == self.end % MINUTES_PER_DAY and not self.whole_day:
            raise ValueError(f"window {self} is empty or ambiguous; write 00:00-24:00 for the whole day")

    @property
    def crosses_midnight(self) -> bool:
        return self.start > self.end

    @property
    def whole_day(self) -> bool:
        return self.start == 0 and self.end == MINUTES_PER_DAY

    @property
    def start_time(self) -> time:
        return time(self.start // 60, self.start % 60)

    @property
    def end_time(self) -> time:
        """The wall time the window closes at (24:00 is 00:00)."""
        minute = self.end % MINUTES_PER_DAY
        return time(minute // 60, minute % 60)

    def contains(self, local: time) -> bool:
        """Whether a local wall-clock time (seconds and microseconds count) is inside."""
        micro = ((local.hour * 60 + local.minute) * 60 + local.second) * 1_000_000 + local.microsecond
        start = self.start * 60_000_000
        end = self.end * 60_000_000
        if self.crosses_midnight:
            return micro >= start or micro < end
        return start <= micro < end

    def __str__(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"


def parse_window(text: str) -> Window:
    """Parse "HH:MM-HH:MM" (24-hour clock; the end may be 24:00)."""
    bad = f"quiet hours window must look like 08:00-21:00, got {text!r}"
    match = _WINDOW_TEXT.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(bad)
    start_h, start_m, end_h, end_m = (int(group) for group in match.groups())
    if start_h > 23 or start_m > 59 or end_m > 59 or end_h > 24 or (end_h == 24 and end_m != 0):
        raise ValueError(f"{bad} (hours run 00-23, minutes 00-59; only the end may be 24:00)")
    start = start_h * 60 + start_m
    end = end_h * 60 + end_m
    if end == 0 and start != 0:
        end = MINUTES_PER_DAY  # "22:00-00:00" ends at midnight
    if start == end % MINUTES_PER_DAY and not (start == 0 and end == MINUTES_PER_DAY):
        raise ValueError(f"quiet hours window {text!r} is empty; use 00:00-24:00 to allow the whole day")
    return Window(start, end)


def _normalise_region(text: str) -> str:
    return " ".join(text.split()).casefold()


def _override_key(key: str) -> str:
    match = _OVERRIDE_KEY.match(key.strip()) if isinstance(key, str) else None
    if match is None or (match.group(2) is not None and not match.group(2).strip()):
        raise ValueError(
            f"quiet hours override key must be a country code like 'US' or a region like 'US-TX', got {key!r}"
        )
    country = match.group(1).upper()
    region = match.group(2)
    return country if region is None else f"{country}-{_normalise_region(region)}"


@dataclass(frozen=True)
class QuietHours:
    """The default window and the overrides by country ("US") or region ("US-TX", "CA-QC")."""

    default: Window
    overrides: Mapping[str, Window] = field(default_factory=dict)

    def __post_init__(self) -> None:
        normalised: dict[str, Window] = {}
        for key, window in self.overrides.items():
            normalised[_override_key(key)] = window
        object.__setattr__(self, "overrides", normalised)

    @classmethod
    def from_settings(cls, window: str, overrides: Mapping[str, str]) -> QuietHours:
        """From `quiet_hours_window` and `quiet_hours_overrides`; errors name the bad entry."""
        parsed: dict[str, Window] = {}
        for key, text in overrides.items():
            try:
                parsed[key] = parse_window(text)
            except ValueError as exc:
                raise ValueError(f"quiet_hours_overrides[{key!r}]: {exc}") from None
        return cls(parse_window(window), parsed)

    def window_for(self, country: str | None, region: str | None) -> Window:
        """The most specific window: region override, else country override, else the default."""
        code = (country or "").strip().upper()
        place = (region or "").strip()
        if not code and re.match(r"^[A-Za-z]{2}-.", place):
            code = place[:2].upper()  # a region written "US-TX" names its country
        if code and place:
            if place.upper().startswith(f"{code}-"):
                place = place[len(code) + 1 :]
            window = self.overrides.get(f"{code}-{_normalise_region(place)}")
            if window is not None:
                return window
        if code:
            window = self.overrides.get(code)
            if window is not None:
                return window
        return self.default


def _zone(name: str | None) -> ZoneInfo | None:
    if not name or not isinstance(name, str) or name == _UNKNOWN_ZONE:
        return None
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _zones(names: Sequence[str]) -> tuple[ZoneInfo, ...]:
    zones: list[ZoneInfo] = []
    for name in names:
        zone = _zone(name)
        if zone is not None and zone not in zones:
            zones.append(zone)
    return tuple(zones)


def _phone_zones(phone_e164: str | None) -> tuple[ZoneInfo, ...]:
    if not phone_e164:
        return ()
    try:
        number = phonenumbers.parse(phone_e164, None)
    except phonenumbers.NumberParseException:
        return ()
    return _zones(phone_timezone.time_zones_for_number(number))


def _country_zones(country: str | None) -> tuple[ZoneInfo, ...]:
    if not country:
        return ()
    code = phonenumbers.country_code_for_region(country.strip().upper())
    if not code:
        return ()
    # The prefix → zones table; its entry for the bare calling code lists the country's zones.
    table: Mapping[str, tuple[str, ...]] = getattr(phone_timezone, "TIMEZONE_DATA", {})
    zones = _zones(table.get(str(code), ()))
    return zones if len(zones) == 1 else ()  # "US" or "AU" alone says too little


def recipient_timezones(
    *,
    profile_timezone: str | None,
    phone_e164: str | None,
    country: str | None,
    store_timezone: str,
) -> tuple[ZoneInfo, ...]:
    """The zones the recipient may be in, most likely first; never empty (UTC as a last resort)."""
    profile = _zone(profile_timezone)
    if profile is not None:
        return (profile,)
    store = _zone(store_timezone)
    zones = _phone_zones(phone_e164)
    if zones:
        if store is not None and store in zones:
            # Most likely first (it decides when the zones never share a window): the store's own.
            zones = (store, *(zone for zone in zones if zone != store))
        return zones
    zones = _country_zones(country)
    if zones:
        return zones
    return (store,) if store is not None else (ZoneInfo("UTC"),)


# --- when ---------------------------------------------------------------------------------------


def _aware_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"a timezone-aware datetime is required, got {moment!r}")
    return moment.astimezone(UTC)


def is_inside(moment: datetime, zone: ZoneInfo, window: Window) -> bool:
    """Whether the wall clock in `zone` at `moment` reads a time inside `window`."""
    return window.contains(_aware_utc(moment).astimezone(zone).time())


def _instants_at_wall_time(zone: ZoneInfo, day: date, wall: time) -> list[datetime]:
    """The UTC instants at which `zone`'s clock reads `day wall`: none (skipped), one or two."""
    naive = datetime.combine(day, wall)
    found: list[datetime] = []
    for fold in (0, 1):
        instant = naive.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == naive and instant not in found:
            found.append(instant)
    return found


def _offset_at(zone: ZoneInfo, timestamp: int) -> timedelta | None:
    return datetime.fromtimestamp(timestamp, zone).utcoffset()


def _transitions(zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """The instants in [start, end] at which `zone`'s UTC offset changes (to the second)."""
    found: list[datetime] = []
    low = int(start.timestamp()) - 1
    last = int(end.timestamp()) + 1
    offset = _offset_at(zone, low)
    while low < last:
        high = min(low + _TRANSITION_PROBE_S, last)
        high_offset = _offset_at(zone, high)
        if high_offset != offset:
            a, b = low, high  # offset(a) is the old one, offset(b) the new one
            while b - a > 1:
                middle = (a + b) // 2
                if _offset_at(zone, middle) == offset:
                    a = middle
                else:
                    b = middle
            found.append(datetime.fromtimestamp(b, UTC))
        low, offset = high, high_offset
    return found


def _first_allowed(
    now: datetime, zones: Sequence[ZoneInfo], window: Window, horizon: timedelta
) -> datetime | None:
    """The earliest instant in [now, now + horizon] inside the window in every zone.

    Inside a zone, whether the window is open changes only when the wall clock reaches the
    window's start or end, or jumps (a DST transition). Between two such instants, taken over
    all zones, the answer is constant, so testing `now` and each of those instants is exact.
    """
    limit = now + horizon
    candidates: set[datetime] = {now}
    for zone in zones:
        first_day = now.astimezone(zone).date() - timedelta(days=1)
        last_day = limit.astimezone(zone).date() + timedelta(days=1)
        day = first_day
        while day <= last_day:
            for wall in (window.start_time, window.end_time):
                candidates.update(_instants_at_wall_time(zone, day, wall))
            day += timedelta(days=1)
        candidates.update(_transitions(zone, now, limit))
    for candidate in sorted(c for c in candidates if now <= c <= limit):
        if all(window.contains(candidate.astimezone(zone).time()) for zone in zones):
            return candidate
    return None


def next_allowed(now: datetime, zones: Sequence[ZoneInfo], window: Window) -> datetime:
    """`now` when the window is open in every zone, else the earliest later instant when it is.

    Returns an aware UTC datetime ≥ `now`. Local times skipped by a spring-forward transition
    open the window at the first instant after the gap (02:30 on a day that jumps from 02:00 to
    03:00 opens at 03:00); a wall time that happens twice counts from its first occurrence. If no
    instant in the next 48 hours is inside the window in every zone, the first zone's window alone
    decides.
    """
    moment = _aware_utc(now)
    if not zones:
        raise ValueError("next_allowed needs at least one timezone")
    if window.whole_day or all(window.contains(moment.astimezone(zone).time()) for zone in zones):
        return moment
    found = _first_allowed(moment, zones, window, SEARCH_HORIZON)
    if found is None:
        found = _first_allowed(moment, zones[:1], window, _FALLBACK_HORIZON)
    return found if found is not None else moment  # unreachable: a window opens in any real zone
