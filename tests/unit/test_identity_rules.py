"""Identity resolution rules, on plain strings standing in for profiles."""

from __future__ import annotations

from winback.profiles import identity
from winback.profiles.identity import Owner

ANON = Owner("anon-profile", None)
KNOWN = Owner("known-profile", "u1")
OTHER_KNOWN = Owner("other-known", "u2")


def test_unknown_keys_create_a_profile_and_are_attached() -> None:
    keys = identity.event_keys(None, "a1", "x@example.com", None)
    result = identity.resolve(keys, {}, user_id=None)
    assert result.survivor is None
    assert result.unowned == (("anonymous_id", "a1"), ("email", "x@example.com"))


def test_identify_gives_the_user_id_to_the_anonymous_visitor() -> None:
    keys = identity.event_keys("u9", "a1", None, None)
    result = identity.resolve(keys, {("anonymous_id", "a1"): ANON}, user_id="u9")
    assert result.survivor == ANON
    assert result.give_user_id == "u9"
    assert result.absorbed == ()
    assert result.unowned == (("user_id", "u9"),)


def test_anonymous_profile_is_merged_into_the_known_one() -> None:
    keys = identity.event_keys("u1", "a1", None, None)
    owners = {("user_id", "u1"): KNOWN, ("anonymous_id", "a1"): ANON}
    result = identity.resolve(keys, owners, user_id="u1")
    assert result.survivor == KNOWN
    assert result.absorbed == (ANON,)


def test_guest_checkout_email_merges_the_visitor_into_the_email_owner() -> None:
    keys = identity.event_keys(None, "a1", "x@example.com", None)
    owners = {("anonymous_id", "a1"): ANON, ("email", "x@example.com"): KNOWN}
    result = identity.resolve(keys, owners, user_id=None)
    assert result.survivor == KNOWN
    assert result.absorbed == (ANON,)


def test_two_known_customers_on_one_device_are_never_merged() -> None:
    keys = identity.event_keys("u2", "a1", None, None)
    owners = {("user_id", "u2"): OTHER_KNOWN, ("anonymous_id", "a1"): KNOWN}
    result = identity.resolve(keys, owners, user_id="u2")
    assert result.survivor == OTHER_KNOWN
    assert result.absorbed == ()


def test_new_user_id_on_a_device_of_another_known_customer_creates_a_profile() -> None:
    keys = identity.event_keys("u3", "a1", None, None)
    result = identity.resolve(keys, {("anonymous_id", "a1"): KNOWN}, user_id="u3")
    assert result.survivor is None
    assert result.absorbed == ()
    assert result.unowned == (("user_id", "u3"),)


def test_alias_merges_even_a_known_previous_profile() -> None:
    keys = identity.event_keys("u1", None, None, None)
    alias = [("user_id", "u2"), ("anonymous_id", "u2")]
    owners = {("user_id", "u1"): KNOWN, ("user_id", "u2"): OTHER_KNOWN}
    result = identity.resolve(keys, owners, user_id="u1", alias_of=alias)
    assert result.survivor == KNOWN
    assert result.absorbed == (OTHER_KNOWN,)


def test_alias_of_an_anonymous_visitor_to_a_new_user_id_reuses_the_visitor() -> None:
    alias = [("user_id", "old"), ("anonymous_id", "old")]
    result = identity.resolve([("user_id", "u7")], {("anonymous_id", "old"): ANON}, user_id="u7", alias_of=alias)
    assert (result.survivor, result.give_user_id, result.absorbed) == (ANON, "u7", ())


def test_alias_of_a_known_profile_to_a_new_user_id_merges_into_a_new_profile() -> None:
    alias = [("user_id", "u1"), ("anonymous_id", "u1")]
    result = identity.resolve([("user_id", "u7")], {("user_id", "u1"): KNOWN}, user_id="u7", alias_of=alias)
    assert (result.survivor, result.absorbed) == (None, (KNOWN,))
