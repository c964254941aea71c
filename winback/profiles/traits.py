"""Reading Segment traits into profile fields and consent changes (pure: no database).

Known traits become columns (see docs/events.md); the rest go to the free `properties`.
A trait that does not parse (a bad email, an unknown timezone) is ignored rather than stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from winback.profiles import contact

CHANNELS = ("email", "sms", "push")

# Profile columns that describe or reach the person (the ones traits set, erasure clears, merges fill).
PROFILE_COLUMNS = (
    "email", "phone", "first_name", "last_name", "birthday", "gender", "locale", "timezone",
    "address_line1", "address_line2", "city", "region", "zip", "country",
)  # fmt: skip
CONSENT_COLUMNS = tuple(f"{channel}_consent" for channel in CHANNELS)
SUBSCRIBED, UNSUBSCRIBED = "subscribed", "unsubscribed"

# Traits that are read into columns or consent and so never land in `properties`.
RESERVED_TRAITS = frozenset(
    {
        "email", "phone", "firstName", "first_name", "lastName", "last_name", "name", "birthday",
        "gender", "locale", "timezone", "address", "city", "state", "region", "postal_code", "zip",
        "postalCode", "country", "tags", "email_consent", "sms_consent", "push_consent",
        "consent_source", "consent_evidence", "id", "userId", "user_id", "anonymousId", "createdAt",
        "created_at",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ConsentChange:
    channel: str
    status: str
    source: str | None
    evidence: Mapping[str, Any]


@dataclass(slots=True)
class ProfileUpdate:
    """The profile fields a set of traits asks to set (None: leave as is)."""

    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    birthday: date | None = None
    gender: str | None = None
    locale: str | None = None
    timezone: str | None = None
    address_line1: str | None = None
    address_line2: str | None = None
    city: str | None = None
    region: str | None = None
    zip: str | None = None
    country: str | None = None
    tags: list[str] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict)
    consent: list[ConsentChange] = field(default_factory=list)

    COLUMNS = PROFILE_COLUMNS


def _text(value: Any, limit: int = 200) -> str | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    return text[:limit] or None


def consent_status(value: Any) -> str | None:
    """'subscribed'/'unsubscribed' (or booleans, 'true'/'false', 'yes'/'no'); else None."""
    if value is True:
        return SUBSCRIBED
    if value is False:
        return UNSUBSCRIBED
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("subscribed", "true", "yes", "opted_in", "opt_in"):
            return SUBSCRIBED
        if lowered in ("unsubscribed", "false", "no", "opted_out", "opt_out"):
            return UNSUBSCRIBED
    return None


def valid_timezone(value: Any) -> str | None:
    text = _text(value, 64)
    if text is None:
        return None
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return text


def read_traits(
    traits: Mapping[str, Any],
    *,
    context: Mapping[str, Any] | None = None,
    phone_region: str | None = None,
) -> ProfileUpdate:
    """What these traits say about the person. `phone_region` reads national phone numbers."""
    context = context or {}
    update = ProfileUpdate()
    raw_address = traits.get("address")
    address: Mapping[str, Any] = raw_address if isinstance(raw_address, dict) else {}

    update.country = contact.normalise_country(address.get("country") or traits.get("country"))
    update.email = contact.normalise_email(traits.get("email"))
    update.phone = contact.normalise_phone(traits.get("phone"), update.country or phone_region)

    update.first_name = _text(traits.get("firstName") or traits.get("first_name"))
    update.last_name = _text(traits.get("lastName") or traits.get("last_name"))
    full_name = _text(traits.get("name"))
    if full_name and not (update.first_name or update.last_name):
        first, _, last = full_name.partition(" ")
        update.first_name, update.last_name = first or None, last.strip() or None

    update.birthday = contact.parse_birthday(traits.get("birthday"))
    update.gender = _text(traits.get("gender"), 50)
    update.locale = _text(traits.get("locale") or context.get("locale"), 35)
    update.timezone = valid_timezone(traits.get("timezone") or context.get("timezone"))

    update.address_line1 = _text(address.get("street") or address.get("address1"), 300)
    update.address_line2 = _text(address.get("address2"), 300)
    update.city = _text(address.get("city") or traits.get("city"))
    update.region = _text(
        address.get("state") or address.get("region") or traits.get("state") or traits.get("region")
    )
    update.zip = _text(
        address.get("postal_code") or address.get("postalCode") or address.get("zip")
        or traits.get("postal_code") or traits.get("postalCode") or traits.get("zip"),
        32,
    )  # fmt: skip

    tags = traits.get("tags")
    if isinstance(tags, str):
        tags = tags.split(",")
    if isinstance(tags, list):
        update.tags = [t for t in (_text(tag, 100) for tag in tags) if t]

    source = _text(traits.get("consent_source"), 100)
    raw_evidence = traits.get("consent_evidence")
    evidence: Mapping[str, Any] = raw_evidence if isinstance(raw_evidence, dict) else {}
    for channel in CHANNELS:
        status = consent_status(traits.get(f"{channel}_consent"))
        if status is not None:
            update.consent.append(ConsentChange(channel, status, source, evidence))

    update.properties = {key: value for key, value in traits.items() if key not in RESERVED_TRAITS}
    return update


def apply_update(customer: Any, update: ProfileUpdate) -> bool:
    """Set the fields the update carries on a customer row; True when anything changed."""
    changed = False
    for column in ProfileUpdate.COLUMNS:
        value = getattr(update, column)
        if value is not None and getattr(customer, column) != value:
            setattr(customer, column, value)
            changed = True
    if update.tags:
        merged = list(dict.fromkeys([*(customer.tags or []), *update.tags]))
        if merged != (customer.tags or []):
            customer.tags = merged
            changed = True
    if update.properties:
        merged_properties = {**(customer.properties or {}), **update.properties}
        if merged_properties != (customer.properties or {}):
            customer.properties = merged_properties
            changed = True
    return changed
