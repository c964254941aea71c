"""The store profile: what the merchant set through the admin API, else the settings' defaults.

The saved profile lives in the single `store_settings` row (id 1). Reading it never writes, so a
fresh install answers with `Settings.store_profile()` until someone saves a profile.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from winback.db.engine import reading, transaction
from winback.db.models import StoreSettingsRow
from winback.kernel.errors import InvalidInput
from winback.settings import Settings, StoreProfile

PROFILE_ROW_ID = 1


def current_profile(engine: Engine, settings: Settings) -> StoreProfile:
    """The saved store profile, or the one built from settings when none was saved yet."""
    with reading(engine) as session:
        return profile_in(session, settings)


def profile_in(session: Session, settings: Settings) -> StoreProfile:
    """The current store profile, read inside the caller's transaction."""
    return _profile_of(session.get(StoreSettingsRow, PROFILE_ROW_ID), settings)


def save_profile(engine: Engine, profile: StoreProfile, now: datetime) -> StoreProfile:
    """Store `profile` as the store's profile (replacing any saved one) and return it."""
    with transaction(engine) as session:
        _write(session, session.get(StoreSettingsRow, PROFILE_ROW_ID, with_for_update=True), profile, now)
    return profile


def update_profile(
    engine: Engine, settings: Settings, changes: dict[str, Any], now: datetime
) -> StoreProfile:
    """Apply a partial change to the current profile and save the result, in one transaction.

    The row is locked while read, so two concurrent partial updates both land.
    """
    with transaction(engine) as session:
        row = session.get(StoreSettingsRow, PROFILE_ROW_ID, with_for_update=True)
        profile = apply_changes(_profile_of(row, settings), changes)
        _write(session, row, profile, now)
    return profile


def apply_changes(profile: StoreProfile, changes: dict[str, Any]) -> StoreProfile:
    """A copy of `profile` with `changes` applied and validated as a whole (pure).

    Raises `InvalidInput` naming the first bad field, e.g. an unknown timezone.
    """
    try:
        return StoreProfile.model_validate({**profile.model_dump(), **changes})
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
            for error in exc.errors()
        ]
        first = problems[0]
        raise InvalidInput(
            f"{first['field']}: {first['message']}", field=first["field"], problems=problems
        ) from None


def _profile_of(row: StoreSettingsRow | None, settings: Settings) -> StoreProfile:
    if row is None:
        return settings.store_profile()
    # Fields saved by an older version and since removed are ignored, not fatal.
    known = {key: value for key, value in row.profile.items() if key in StoreProfile.model_fields}
    return StoreProfile.model_validate(known)


def _write(session: Session, row: StoreSettingsRow | None, profile: StoreProfile, now: datetime) -> None:
    if row is None:
        session.add(StoreSettingsRow(id=PROFILE_ROW_ID, profile=profile.model_dump(), updated_at=now))
    else:
        row.profile = profile.model_dump()
        row.updated_at = now
