"""Normalising what identifies and reaches a person: email addresses, phone numbers, dates."""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

DEFAULT_PHONE_REGION = "US"


@lru_cache(maxsize=65_536)
def normalise_email(raw: Any) -> str | None:
    """A syntactically valid address, lower-cased; None for anything else (never stored)."""
    if not isinstance(raw, str) or "@" not in raw:
        return None
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError:
        return None
    return result.normalized.lower()


@lru_cache(maxsize=65_536)
def _parse_phone(text: str, region: str) -> str | None:
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_phone(raw: Any, region: str | None = None) -> str | None:
    """E.164 (e.g. +14155550123); national numbers are read in `region` (ISO alpha-2)."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not raw.strip():
        return None
    return _parse_phone(raw.strip(), (region or DEFAULT_PHONE_REGION).upper())


def region_of_locale(locale: str | None) -> str | None:
    """'en-US' → 'US', 'de_DE' → 'DE'; None when the locale names no region."""
    if not locale:
        return None
    parts = locale.replace("_", "-").split("-")
    if len(parts) >= 2 and len(parts[-1]) == 2 and parts[-1].isalpha():
        return parts[-1].upper()
    return None


def phone_timezones(e164: str) -> tuple[str, ...]:
    """IANA timezones a number may be in (used when a profile has no timezone of its own)."""
    from phonenumbers import timezone as phone_timezone

    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return ()
    zones = phone_timezone.time_zones_for_number(number)
    return tuple(zone for zone in zones if zone != "Etc/Unknown")


def parse_birthday(raw: Any) -> date | None:
    """'1990-05-17', an ISO date-time, or a date; None when unreadable."""
    if isinstance(raw, datetime):
        return raw.date()
    if isinstance(raw, date):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        return None
    text = raw.strip()
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


COUNTRY_NAMES = {
    "united states": "US",
    "united states of america": "US",
    "usa": "US",
    "united kingdom": "GB",
    "uk": "GB",
    "great britain": "GB",
    "canada": "CA",
    "germany": "DE",
    "deutschland": "DE",
    "france": "FR",
    "australia": "AU",
    "spain": "ES",
    "italy": "IT",
    "netherlands": "NL",
    "ireland": "IE",
    "mexico": "MX",
    "brazil": "BR",
    "india": "IN",
    "japan": "JP",
    "new zealand": "NZ",
    "sweden": "SE",
    "norway": "NO",
    "denmark": "DK",
    "switzerland": "CH",
    "austria": "AT",
    "belgium": "BE",
    "poland": "PL",
    "portugal": "PT",
}


def normalise_country(raw: Any) -> str | None:
    """ISO 3166-1 alpha-2 from a code or a common English name; None when unknown."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    text = raw.strip()
    if len(text) == 2 and text.isalpha():
        return text.upper()
    return COUNTRY_NAMES.get(text.lower())
