"""Turning a rule's period into a concrete half-open UTC interval [start, end).

Pure. Calendar periods (days, weeks starting Monday, months) follow the store's timezone, so
"yesterday" means the store's yesterday; "last N days" is a rolling window ending now.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from winback.segments import rules

UNIT_SECONDS = {"minutes": 60, "hours": 3600, "days": 86_400, "weeks": 7 * 86_400}


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _months_back(moment: datetime, months: int) -> datetime:
    """The same local wall time `months` months earlier, clamped to the month's last day."""
    year, month = divmod(moment.year * 12 + (moment.month - 1) - months, 12)
    month += 1
    next_month = date(year + (month == 12), month % 12 + 1, 1)
    last_day = (next_month - timedelta(days=1)).day
    return moment.replace(year=year, month=month, day=min(moment.day, last_day))


def resolve(period: rules.Period, now: datetime, timezone: str) -> tuple[datetime, datetime]:
    """[start, end) in UTC for `period` evaluated at `now` in the store's `timezone`."""
    zone = ZoneInfo(timezone)
    local_now = now.astimezone(zone)
    today = local_now.date()
    if isinstance(period, rules.LastPeriod):
        if period.unit in UNIT_SECONDS:
            return now - timedelta(seconds=UNIT_SECONDS[period.unit] * period.amount), now
        months = period.amount * (12 if period.unit == "years" else 1)
        return _months_back(local_now, months).astimezone(UTC), now
    if isinstance(period, rules.BetweenPeriod):
        return _local_midnight(period.start, zone), _local_midnight(period.end + timedelta(days=1), zone)
    if isinstance(period, rules.OnPeriod):
        return _local_midnight(period.date, zone), _local_midnight(period.date + timedelta(days=1), zone)
    kind = period.type
    if kind == "today":
        return _local_midnight(today, zone), _local_midnight(today + timedelta(days=1), zone)
    if kind == "yesterday":
        return _local_midnight(today - timedelta(days=1), zone), _local_midnight(today, zone)
    week_start = today - timedelta(days=today.weekday())
    if kind == "this_week":
        return _local_midnight(week_start, zone), _local_midnight(week_start + timedelta(days=7), zone)
    if kind == "last_week":
        return _local_midnight(week_start - timedelta(days=7), zone), _local_midnight(week_start, zone)
    month_start = today.replace(day=1)
    next_month = (month_start + timedelta(days=32)).replace(day=1)
    if kind == "this_month":
        return _local_midnight(month_start, zone), _local_midnight(next_month, zone)
    previous_month = (month_start - timedelta(days=1)).replace(day=1)
    return _local_midnight(previous_month, zone), _local_midnight(month_start, zone)


def upcoming_month_days(now: datetime, timezone: str, days: int) -> list[tuple[int, int]]:
    """(month, day) pairs of today and the next `days` days in the store's timezone (birthdays).
    29 February counts on 28 February in years without it."""
    today = now.astimezone(ZoneInfo(timezone)).date()
    pairs: list[tuple[int, int]] = []
    for offset in range(days + 1):
        day = today + timedelta(days=offset)
        pairs.append((day.month, day.day))
        if day.month == 2 and day.day == 28 and not _is_leap(day.year):
            pairs.append((2, 29))
    return list(dict.fromkeys(pairs))


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def time_span(value: str, timezone: str) -> tuple[datetime, datetime] | None:
    """[start, end) that a rule's ISO date (its whole local day) or date-time (one instant) means;
    None when the text is neither."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        instant = parse_instant(value, timezone)
        return None if instant is None else (instant, instant + timedelta(microseconds=1))
    zone = ZoneInfo(timezone)
    return _local_midnight(day, zone), _local_midnight(day + timedelta(days=1), zone)


def parse_instant(value: str, timezone: str) -> datetime | None:
    """An ISO date or date-time as a UTC instant; without a zone it is the store's local time."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(timezone))
    return parsed.astimezone(UTC)
