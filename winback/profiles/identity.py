"""Identity resolution: which profile an event belongs to, and which profiles it proves are one.

Pure: works on `Owner` snapshots, so the rules are tested without a database.

Rules (docs/events.md, "Identity"):
- the owner of the event's `userId` wins; otherwise an owner that already has a user id (a known
  customer) wins over anonymous ones; ties go to the key order anonymous id → email → phone;
- every other owner without a user id is merged into the winner (an anonymous visitor meets the
  known customer); owners with a different user id are never merged, except by an explicit alias;
- an event with a `userId` nobody owns gives it to an anonymous owner when there is one, else a
  new profile is created;
- keys nobody owns are attached to the winner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

USER_ID, ANONYMOUS_ID, EMAIL, PHONE = "user_id", "anonymous_id", "email", "phone"
KEY_PRIORITY = (USER_ID, ANONYMOUS_ID, EMAIL, PHONE)

Key = tuple[str, str]  # (kind, value)
P = TypeVar("P")  # whatever stands for a profile (an ORM row in the processor, a string in tests)


@dataclass(frozen=True, slots=True)
class Owner(Generic[P]):
    profile: P
    user_id: str | None


@dataclass(frozen=True, slots=True)
class Resolution(Generic[P]):
    survivor: Owner[P] | None  # None: create a new profile
    absorbed: tuple[Owner[P], ...]  # merged into the survivor (or into the new profile)
    unowned: tuple[Key, ...]  # keys to attach to the survivor
    give_user_id: str | None  # set this user id on the survivor (it had none)


def event_keys(
    user_id: str | None, anonymous_id: str | None, email: str | None, phone: str | None
) -> list[Key]:
    keys: list[Key] = []
    for kind, value in ((USER_ID, user_id), (ANONYMOUS_ID, anonymous_id), (EMAIL, email), (PHONE, phone)):
        if value:
            keys.append((kind, value))
    return keys


def resolve(
    keys: Sequence[Key],
    owners: Mapping[Key, Owner[P]],
    *,
    user_id: str | None,
    alias_of: Sequence[Key] = (),
) -> Resolution[P]:
    """Decide the survivor, the merges and the keys to attach for one event.

    `alias_of` are the keys named by an alias call's previousId: their owner is merged into the
    survivor even when it has a user id of its own (the caller says they are the same person).
    """
    ordered = sorted(keys, key=lambda key: KEY_PRIORITY.index(key[0]))
    found: list[Owner[P]] = []
    for key in ordered:
        owner = owners.get(key)
        if owner is not None and all(owner.profile is not seen.profile for seen in found):
            found.append(owner)
    forced = [owners[key] for key in alias_of if key in owners]

    survivor: Owner[P] | None = None
    give_user_id: str | None = None
    if user_id is not None:
        survivor = owners.get((USER_ID, user_id))
        if survivor is None:
            anonymous = [owner for owner in [*found, *forced] if owner.user_id is None]
            if anonymous:
                survivor, give_user_id = anonymous[0], user_id
    else:
        known = [owner for owner in found if owner.user_id is not None]
        survivor = known[0] if known else (found[0] if found else None)
        if survivor is None and forced:
            survivor = forced[0]

    absorbed: list[Owner[P]] = []
    if survivor is None:
        absorbed = list(dict.fromkeys(forced))  # an alias onto a brand-new profile
    else:
        for owner in [*found, *forced]:
            if owner.profile is survivor.profile or any(owner.profile is a.profile for a in absorbed):
                continue
            if owner.user_id is None or owner in forced:
                absorbed.append(owner)
    unowned = tuple(key for key in ordered if key not in owners)
    return Resolution(survivor, tuple(absorbed), unowned, give_user_id)
