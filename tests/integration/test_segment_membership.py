"""Stored, live segment membership on SQLite and PostgreSQL, on a virtual clock.

Membership is followed through processed events, time passing (the worker's re-check), segment
references and list changes; every change is one `Segment Entered`/`Segment Exited` event, and
re-running anything that has nothing new to say changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from winback.db.engine import transaction
from winback.db.models import Customer, Event, ListMembership, Segment, SegmentMembership
from winback.ingest import segment as wire
from winback.ingest import store
from winback.kernel.clock import VirtualClock
from winback.kernel.errors import InvalidInput
from winback.processing.processor import process_pending
from winback.runtime import Runtime
from winback.segments import membership, service
from winback.settings import Settings
from winback.worker import runner

RECHECK_S = 60.0  # seconds; time-based segments are re-checked once a minute in these tests

Send = Callable[..., None]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, segment_recheck_s=RECHECK_S)


@pytest.fixture
def send(runtime: Runtime, clock: VirtualClock) -> Send:
    """send(*messages): store Segment messages (timestamped now), then process until nothing is
    left — the derived Segment events included."""
    counter = iter(range(1_000_000))

    def _send(*messages: dict[str, Any]) -> None:
        rows = [
            wire.parse_message({"messageId": f"m{next(counter)}", **message}, received_at=clock.now())
            for message in messages
        ]
        store.store_events(runtime.engine, rows)
        _process_all(runtime)

    return _send


def _process_all(runtime: Runtime) -> None:
    for _ in range(10):
        if process_pending(runtime) == 0:
            return
    raise AssertionError("processing did not converge within 10 rounds")


def _order(user_id: str, order_id: str, total: float) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user_id,
        "event": "Order Completed",
        "properties": {"order_id": order_id, "total": total, "currency": "USD"},
    }


def _create(runtime: Runtime, name: str, rule: dict[str, Any], **options: Any) -> int:
    with transaction(runtime.engine) as session:
        saved = service.create_segment(
            session, name=name, definition=rule, now=runtime.clock.now(), timezone="UTC", **options
        )
        return saved.id


def _ids(runtime: Runtime) -> dict[str, int]:
    """user id → customer id of every live profile."""
    with Session(runtime.engine) as session:
        rows = session.execute(
            sa.select(Customer.user_id, Customer.id).where(
                Customer.user_id.is_not(None), Customer.merged_into_id.is_(None)
            )
        )
        return {user_id: customer_id for user_id, customer_id in rows}


def _members(runtime: Runtime, segment_id: int) -> list[str]:
    with Session(runtime.engine) as session:
        return list(
            session.scalars(
                sa.select(Customer.user_id)
                .join(SegmentMembership, SegmentMembership.customer_id == Customer.id)
                .where(SegmentMembership.segment_id == segment_id)
                .order_by(Customer.user_id)
            )
        )


def _count(runtime: Runtime, segment_id: int) -> tuple[int, datetime | None]:
    with Session(runtime.engine) as session:
        row = session.get_one(Segment, segment_id)
        return row.member_count, row.evaluated_at


def _segment_events(runtime: Runtime) -> list[tuple[str, str | None, dict[str, Any], datetime]]:
    """(event, user id, properties, timestamp) of every derived Segment event, in stream order."""
    with Session(runtime.engine) as session:
        rows = session.execute(
            sa.select(Event.event, Event.user_id, Event.properties, Event.timestamp, Event.source)
            .where(Event.event.in_([membership.SEGMENT_ENTERED, membership.SEGMENT_EXITED]))
            .order_by(Event.id)
        )
        found = []
        for event, user_id, properties, timestamp, source in rows:
            assert source == "derived"
            found.append((event, user_id, properties, timestamp))
        return found


def _unprocessed(runtime: Runtime) -> int:
    with Session(runtime.engine) as session:
        return session.scalar(sa.select(sa.func.count()).where(Event.processed_at.is_(None))) or 0


SPENT_100 = {"type": "money_spent", "compare": {"op": "gte", "value": 100}}


# --- incremental: as events are processed ---------------------------------------------------------


def test_membership_follows_processed_events_with_one_event_per_change(
    runtime: Runtime, send: Send, clock: VirtualClock
) -> None:
    # given a segment "Spent 100+" saved before anyone shopped
    segment_id = _create(runtime, "Spent 100+", SPENT_100)
    start = clock.now()
    # when Ann orders for 60, then for 50 more (110 in all)
    send({"type": "identify", "userId": "ann", "traits": {"email": "ann@example.com"}})
    send(_order("ann", "o1", 60))
    assert _members(runtime, segment_id) == []
    clock.advance(60)
    send(_order("ann", "o2", 50))
    # then she is a member, announced once
    assert _members(runtime, segment_id) == ["ann"]
    entered = (
        "Segment Entered",
        "ann",
        {"segment_id": segment_id, "segment_name": "Spent 100+"},
        start + timedelta(seconds=60),
    )
    assert _segment_events(runtime) == [entered]
    assert _count(runtime, segment_id)[0] == 1
    # when the second order is refunded in full (net 60 again)
    clock.advance(60)
    send({"type": "track", "userId": "ann", "event": "Order Refunded", "properties": {"order_id": "o2"}})
    # then she leaves, announced once, and the derived events themselves changed nothing more
    assert _members(runtime, segment_id) == []
    exited = (
        "Segment Exited",
        "ann",
        {"segment_id": segment_id, "segment_name": "Spent 100+"},
        start + timedelta(seconds=120),
    )
    assert _segment_events(runtime) == [entered, exited]
    assert _count(runtime, segment_id)[0] == 0
    assert _unprocessed(runtime) == 0


def test_unrelated_events_and_derived_events_change_nothing(runtime: Runtime, send: Send) -> None:
    # given Ann is a member of "Spent 100+"
    segment_id = _create(runtime, "Spent 100+", SPENT_100)
    send(_order("ann", "o1", 150))
    assert _segment_events(runtime)[0][:2] == ("Segment Entered", "ann")
    # when she keeps browsing
    send({"type": "track", "userId": "ann", "event": "Product Viewed", "properties": {"product_id": "p1"}})
    send({"type": "page", "userId": "ann", "name": "Home"})
    # then nothing more is announced and she is still a member
    assert len(_segment_events(runtime)) == 1
    assert _members(runtime, segment_id) == ["ann"]
    # and refreshing her again by hand changes nothing
    with transaction(runtime.engine) as session:
        assert membership.refresh_customers(session, _ids(runtime).values(), runtime.clock.now(), "UTC") == []


def test_a_derived_event_can_itself_move_someone_into_a_segment(runtime: Runtime, send: Send) -> None:
    # given "Spent 100+" and "Ever entered Spent 100+", which counts the derived event
    spent = _create(runtime, "Spent 100+", SPENT_100)
    ever = _create(
        runtime,
        "Ever entered Spent 100+",
        {
            "type": "event",
            "event": "Segment Entered",
            "where": [{"property": "segment_id", "op": "eq", "value": spent}],
        },
    )
    # when Ann spends 150
    send(_order("ann", "o1", 150))
    # then she enters the first segment, and once that event is processed, the second
    assert [(e[0], e[2]["segment_id"]) for e in _segment_events(runtime)] == [
        ("Segment Entered", spent),
        ("Segment Entered", ever),
    ]
    assert (_members(runtime, spent), _members(runtime, ever)) == (["ann"], ["ann"])
    assert _unprocessed(runtime) == 0


# --- creation, full evaluation, idempotence -------------------------------------------------------


def test_first_evaluation_records_existing_members_silently(
    runtime: Runtime, send: Send, clock: VirtualClock
) -> None:
    # given Ann spent 150 and Bob 40
    send(_order("ann", "o1", 150), _order("bob", "o2", 40))
    # when the segment is created
    clock.advance(60)
    segment_id = _create(runtime, "Spent 100+", SPENT_100)
    # then Ann is recorded as a member without any Segment Entered event
    assert _members(runtime, segment_id) == ["ann"]
    assert _count(runtime, segment_id) == (1, clock.now())
    assert _segment_events(runtime) == []


def test_first_evaluation_announces_when_asked(runtime: Runtime, send: Send, clock: VirtualClock) -> None:
    # given Ann spent 150
    send(_order("ann", "o1", 150))
    # when the segment is created with announce=True
    segment_id = _create(runtime, "Spent 100+", SPENT_100, announce=True)
    # then her entry is announced
    assert _segment_events(runtime) == [
        ("Segment Entered", "ann", {"segment_id": segment_id, "segment_name": "Spent 100+"}, clock.now())
    ]


def test_full_evaluation_is_idempotent(runtime: Runtime, send: Send, clock: VirtualClock) -> None:
    # given a segment with one member recorded
    send(_order("ann", "o1", 150), _order("bob", "o2", 40))
    segment_id = _create(runtime, "Spent 100+", SPENT_100)
    # when it is evaluated in full again, twice
    clock.advance(60)
    with transaction(runtime.engine) as session:
        first = membership.evaluate_segment(session, session.get_one(Segment, segment_id), clock.now(), "UTC")
        second = membership.evaluate_segment(
            session, session.get_one(Segment, segment_id), clock.now(), "UTC"
        )
    # then nothing changes, nothing is announced, and the evaluation time moves on
    assert first == second == membership.MembershipChange(segment_id)
    assert _members(runtime, segment_id) == ["ann"]
    assert _count(runtime, segment_id) == (1, clock.now())
    assert _segment_events(runtime) == []
    # when Bob's profile is changed behind the processor's back (an import) and it is evaluated again
    with transaction(runtime.engine) as session:
        session.execute(sa.update(Customer).where(Customer.user_id == "bob").values(total_spent=120))
        change = membership.evaluate_segment(
            session, session.get_one(Segment, segment_id), clock.now(), "UTC"
        )
    # then exactly Bob enters, announced
    bob = _ids(runtime)["bob"]
    assert change == membership.MembershipChange(segment_id, entered=(bob,))
    assert [(e[0], e[1]) for e in _segment_events(runtime)] == [("Segment Entered", "bob")]
    assert _count(runtime, segment_id)[0] == 2


# --- time-based re-checks -------------------------------------------------------------------------


def test_not_ordered_for_90_days_enters_as_the_clock_moves(
    runtime: Runtime, send: Send, clock: VirtualClock
) -> None:
    # given Ann ordered today, and "Lapsed 90 days" is saved
    send(_order("ann", "o1", 30))
    segment_id = _create(runtime, "Lapsed 90 days", {"type": "not_ordered_for", "days": 90})
    assert _members(runtime, segment_id) == []
    # when 89 days pass and the re-check runs
    clock.advance(timedelta(days=89))
    assert membership.recheck_time_based(runtime) == 1
    # then she is still not a member
    assert _members(runtime, segment_id) == []
    # when the 91st day comes
    clock.advance(timedelta(days=2))
    assert membership.recheck_time_based(runtime) == 1
    # then she enters, announced at that moment
    assert _members(runtime, segment_id) == ["ann"]
    assert _segment_events(runtime) == [
        ("Segment Entered", "ann", {"segment_id": segment_id, "segment_name": "Lapsed 90 days"}, clock.now())
    ]
    # and a re-check before the interval has passed does nothing; one after it changes nothing
    assert membership.recheck_time_based(runtime) == 0
    clock.advance(RECHECK_S)
    assert membership.recheck_time_based(runtime) == 1
    assert len(_segment_events(runtime)) == 1
    # when she orders again, the processor takes her out at once
    send(_order("ann", "o2", 30))
    assert _members(runtime, segment_id) == []
    assert [e[0] for e in _segment_events(runtime)] == ["Segment Entered", "Segment Exited"]


def test_birthday_in_the_next_7_days_enters_and_leaves_through_the_worker(
    runtime: Runtime, send: Send, clock: VirtualClock
) -> None:
    # given Ann's birthday is 12 March and it is Monday 2 March
    send({"type": "identify", "userId": "ann", "traits": {"birthday": "1990-03-12"}})
    segment_id = _create(runtime, "Birthday this week", {"type": "birthday", "within_next_days": 7})
    worker = runner.Worker(runtime, holder="w1")
    assert _members(runtime, segment_id) == []
    # when the clock reaches 5 March (her birthday is 7 days away) and the worker passes
    clock.set(datetime(2026, 3, 5, 9, 0, tzinfo=UTC))
    report = worker.run_pass()
    # then she enters
    assert report.segments_rechecked == 1
    assert _members(runtime, segment_id) == ["ann"]
    # when the worker passes again within the re-check interval, nothing is re-checked
    clock.advance(RECHECK_S / 2)
    assert worker.run_pass().segments_rechecked == 0
    # when the clock reaches 13 March (the day after her birthday)
    clock.set(datetime(2026, 3, 13, 0, 30, tzinfo=UTC))
    assert worker.run_pass().segments_rechecked == 1
    # then she leaves; both changes were announced at the moment the worker saw them
    assert _members(runtime, segment_id) == []
    assert [(e[0], e[1], e[3]) for e in _segment_events(runtime)] == [
        ("Segment Entered", "ann", datetime(2026, 3, 5, 9, 0, tzinfo=UTC)),
        ("Segment Exited", "ann", datetime(2026, 3, 13, 0, 30, tzinfo=UTC)),
    ]
    # and processing those derived events changes nothing
    _process_all(runtime)
    assert len(_segment_events(runtime)) == 2


def test_recheck_also_evaluates_segments_built_on_a_time_based_one(
    runtime: Runtime, send: Send, clock: VirtualClock
) -> None:
    # given "Lapsed 90 days" (time-based) and "Lapsed in Germany" built on it (not time-based itself)
    send({"type": "identify", "userId": "ann", "traits": {"address": {"country": "DE"}}})
    send(_order("ann", "o1", 30))
    lapsed = _create(runtime, "Lapsed 90 days", {"type": "not_ordered_for", "days": 90})
    german = _create(
        runtime,
        "Lapsed in Germany",
        {
            "type": "all",
            "rules": [
                {"type": "segment", "segment_id": lapsed},
                {"type": "location", "field": "country", "value": "DE"},
            ],
        },
    )
    with Session(runtime.engine) as session:
        assert session.get_one(Segment, german).depends_on_time is False
    # when 91 days pass and the re-check runs
    clock.advance(timedelta(days=91))
    assert membership.recheck_time_based(runtime) == 2
    # then Ann entered both, the referenced segment first
    assert [(e[0], e[2]["segment_id"]) for e in _segment_events(runtime)] == [
        ("Segment Entered", lapsed),
        ("Segment Entered", german),
    ]
    assert (_members(runtime, lapsed), _members(runtime, german)) == (["ann"], ["ann"])


# --- segments built on segments -------------------------------------------------------------------


def test_segment_referencing_another_follows_it_in_the_same_batch(runtime: Runtime, send: Send) -> None:
    # given "Spent 100+" and "Spent 100+, not in Germany" built on it
    spent = _create(runtime, "Spent 100+", SPENT_100)
    abroad = _create(
        runtime,
        "Spent 100+ abroad",
        {
            "type": "all",
            "rules": [
                {"type": "segment", "segment_id": spent},
                {"type": "location", "field": "country", "op": "neq", "value": "DE"},
            ],
        },
    )
    # when Ann (France) and Bob (Germany) each spend 150 in one batch
    send(
        {"type": "identify", "userId": "ann", "traits": {"address": {"country": "FR"}}},
        {"type": "identify", "userId": "bob", "traits": {"address": {"country": "DE"}}},
        _order("ann", "o1", 150),
        _order("bob", "o2", 150),
    )
    # then both are in "Spent 100+", only Ann in the segment built on it, announced in that order
    assert (_members(runtime, spent), _members(runtime, abroad)) == (["ann", "bob"], ["ann"])
    assert [(e[0], e[1], e[2]["segment_id"]) for e in _segment_events(runtime)] == [
        ("Segment Entered", "ann", spent),
        ("Segment Entered", "bob", spent),
        ("Segment Entered", "ann", abroad),
    ]


def test_changing_a_rule_re_evaluates_the_segments_built_on_it(
    runtime: Runtime, send: Send, clock: VirtualClock
) -> None:
    # given Ann (150 spent) is in "Spent 100+" and in "VIP" built on it
    send(_order("ann", "o1", 150))
    spent = _create(runtime, "Spent 100+", SPENT_100)
    vip = _create(runtime, "VIP", {"type": "segment", "segment_id": spent})
    assert (_members(runtime, spent), _members(runtime, vip)) == (["ann"], ["ann"])
    # when the threshold is raised to 200, announcing the changes
    clock.advance(60)
    with transaction(runtime.engine) as session:
        service.update_segment(
            session,
            spent,
            definition={"type": "money_spent", "compare": {"op": "gte", "value": 200}},
            now=clock.now(),
            timezone="UTC",
            announce=True,
        )
    # then she left both, the referenced one first
    assert (_members(runtime, spent), _members(runtime, vip)) == ([], [])
    assert [(e[0], e[2]["segment_id"]) for e in _segment_events(runtime)] == [
        ("Segment Exited", spent),
        ("Segment Exited", vip),
    ]
    assert (_count(runtime, spent), _count(runtime, vip)) == ((0, clock.now()), (0, clock.now()))


# --- lists ----------------------------------------------------------------------------------------


def test_list_changes_move_people_in_and_out_of_segments_using_the_list(
    runtime: Runtime, send: Send, clock: VirtualClock
) -> None:
    # given a list "Newsletter" and a segment of its members who spent 100+
    send(_order("ann", "o1", 150), _order("bob", "o2", 150))
    ids = _ids(runtime)
    with transaction(runtime.engine) as session:
        newsletter = service.create_list(session, name="Newsletter", now=clock.now()).id
    segment_id = _create(
        runtime,
        "Newsletter big spenders",
        {"type": "all", "rules": [{"type": "list", "list_id": newsletter}, SPENT_100]},
    )
    assert _members(runtime, segment_id) == []
    # when Ann and Bob are added (Ann twice)
    clock.advance(60)
    with transaction(runtime.engine) as session:
        added = membership.add_to_list(
            session,
            newsletter,
            [ids["ann"], ids["bob"], ids["ann"]],
            source="api",
            now=clock.now(),
            timezone="UTC",
        )
    # then both are on the list and entered the segment
    assert added == sorted([ids["ann"], ids["bob"]])
    assert _members(runtime, segment_id) == ["ann", "bob"]
    # when Ann is added again and Bob removed
    clock.advance(60)
    with transaction(runtime.engine) as session:
        again = membership.add_to_list(session, newsletter, [ids["ann"]], source="api", now=clock.now())
        removed = membership.remove_from_list(session, newsletter, [ids["bob"]], now=clock.now())
    # then only Bob's removal changed anything
    assert (again, removed) == ([], [ids["bob"]])
    assert _members(runtime, segment_id) == ["ann"]
    with Session(runtime.engine) as session:
        on_list = session.execute(
            sa.select(ListMembership.customer_id, ListMembership.source).where(
                ListMembership.list_id == newsletter
            )
        ).all()
    assert on_list == [(ids["ann"], "api")]
    assert [(e[0], e[1]) for e in _segment_events(runtime)] == [
        ("Segment Entered", "ann"),
        ("Segment Entered", "bob"),
        ("Segment Exited", "bob"),
    ]
    assert _count(runtime, segment_id)[0] == 1


def test_a_merge_carries_list_membership_to_the_survivor(
    runtime: Runtime, send: Send, clock: VirtualClock
) -> None:
    # given an anonymous visitor on the "Newsletter" list, and a segment of the list
    send({"type": "page", "anonymousId": "visitor", "name": "Home"})
    with Session(runtime.engine) as session:
        visitor = session.scalar(sa.select(Customer.id))
    with transaction(runtime.engine) as session:
        newsletter = service.create_list(session, name="Newsletter", now=clock.now()).id
        membership.add_to_list(session, newsletter, [visitor], source="api", now=clock.now())
    segment_id = _create(runtime, "On the newsletter", {"type": "list", "list_id": newsletter})
    with Session(runtime.engine) as session:
        assert list(session.scalars(sa.select(SegmentMembership.customer_id))) == [visitor]
    # when the visitor turns out to be known customer Ann, whose profile existed before
    send({"type": "identify", "userId": "ann", "traits": {"email": "ann@example.com"}})
    clock.advance(60)
    send({"type": "identify", "userId": "ann", "anonymousId": "visitor"})
    # then the one surviving profile is on the list and in the segment, and the tombstone left silently
    survivor = _ids(runtime)["ann"]
    with Session(runtime.engine) as session:
        tombstone = session.get_one(Customer, visitor)
        lists = list(session.scalars(sa.select(ListMembership.customer_id)))
    assert tombstone.merged_into_id == survivor
    assert lists == [survivor]
    assert _members(runtime, segment_id) == ["ann"]
    assert [(e[0], e[1]) for e in _segment_events(runtime)] == [("Segment Entered", "ann")]
    assert _count(runtime, segment_id)[0] == 1


def test_a_stored_rule_that_no_longer_parses_never_stops_processing(
    runtime: Runtime, send: Send, clock: VirtualClock
) -> None:
    # given a segment row whose stored rule an older version wrote, and a valid segment
    with transaction(runtime.engine) as session:
        session.add(
            Segment(
                name="From an older version",
                definition={"schema_version": 1, "rule": {"type": "retired_rule_kind"}},
                is_active=True,
                depends_on_time=False,
                member_count=0,
                created_at=clock.now(),
                updated_at=clock.now(),
            )
        )
    segment_id = _create(runtime, "Spent 100+", SPENT_100)
    # when Ann spends 150
    send(_order("ann", "o1", 150))
    # then the valid segment is kept up to date all the same
    assert _members(runtime, segment_id) == ["ann"]
    assert _unprocessed(runtime) == 0


def test_turning_a_segment_off_forgets_its_members_and_on_evaluates_it_afresh(
    runtime: Runtime, send: Send, clock: VirtualClock
) -> None:
    # given Ann is a member of "Spent 100+"
    send(_order("ann", "o1", 150))
    segment_id = _create(runtime, "Spent 100+", SPENT_100)
    # when it is turned off, and Bob spends 150 meanwhile
    with transaction(runtime.engine) as session:
        service.update_segment(session, segment_id, is_active=False, now=clock.now(), timezone="UTC")
    send(_order("bob", "o2", 150))
    # then it has no members and nothing was announced
    assert (_members(runtime, segment_id), _count(runtime, segment_id)) == ([], (0, None))
    # when it is turned on again an hour later
    clock.advance(3600)
    with transaction(runtime.engine) as session:
        service.update_segment(session, segment_id, is_active=True, now=clock.now(), timezone="UTC")
    # then both are members again, recorded silently
    assert _members(runtime, segment_id) == ["ann", "bob"]
    assert _count(runtime, segment_id) == (2, clock.now())
    assert _segment_events(runtime) == []


# --- validation -----------------------------------------------------------------------------------


def test_cycles_between_segments_are_refused_naming_the_path(runtime: Runtime) -> None:
    # given A, and B built on A
    a = _create(runtime, "A", SPENT_100)
    b = _create(runtime, "B", {"type": "any", "rules": [SPENT_100, {"type": "segment", "segment_id": a}]})
    # when A is changed to use B
    with pytest.raises(InvalidInput) as refused, transaction(runtime.engine) as session:
        service.update_segment(
            session,
            a,
            definition={"type": "segment", "segment_id": b},
            now=runtime.clock.now(),
            timezone="UTC",
        )
    # then it is refused, naming the loop, and A is unchanged
    assert refused.value.message == (
        f"segment references would form a cycle: segment {a} 'A' → segment {b} 'B' → segment {a} 'A'"
    )
    assert refused.value.details["cycle"] == [a, b, a]
    with Session(runtime.engine) as session:
        assert session.get_one(Segment, a).definition == {"schema_version": 1, "rule": SPENT_100}
    # and a segment using itself is refused with the path of the reference
    with pytest.raises(InvalidInput) as itself, transaction(runtime.engine) as session:
        service.update_segment(
            session,
            a,
            definition={"type": "all", "rules": [SPENT_100, {"type": "segment", "segment_id": a}]},
            now=runtime.clock.now(),
            timezone="UTC",
        )
    assert itself.value.details["field"] == "rule.rules[1].segment_id"
    assert itself.value.message == (
        "invalid segment rule at rule.rules[1].segment_id: a segment cannot reference itself"
    )


def test_unknown_references_are_refused_with_their_path(runtime: Runtime) -> None:
    # given no segment 42 and no list 7
    rule = {
        "type": "all",
        "rules": [SPENT_100, {"type": "not", "rule": {"type": "segment", "segment_id": 42}}],
    }
    # when segments using them are saved, then each is refused naming the bad reference
    with pytest.raises(InvalidInput) as unknown_segment, transaction(runtime.engine) as session:
        service.create_segment(session, name="S", definition=rule, now=runtime.clock.now(), timezone="UTC")
    assert unknown_segment.value.message == (
        "invalid segment rule at rule.rules[1].rule.segment_id: segment 42 does not exist"
    )
    with pytest.raises(InvalidInput) as unknown_list, transaction(runtime.engine) as session:
        service.create_segment(
            session,
            name="L",
            definition={"type": "list", "list_id": 7},
            now=runtime.clock.now(),
            timezone="UTC",
        )
    assert unknown_list.value.message == "invalid segment rule at rule.list_id: list 7 does not exist"
    # and nothing was saved
    with Session(runtime.engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Segment)) == 0


def test_a_segment_in_use_cannot_be_deleted_or_turned_off(runtime: Runtime, send: Send) -> None:
    # given "Spent 100+" with a member, and "VIP" built on it
    send(_order("ann", "o1", 150))
    spent = _create(runtime, "Spent 100+", SPENT_100)
    vip = _create(runtime, "VIP", {"type": "segment", "segment_id": spent})
    # when it is deleted or turned off, then both are refused naming VIP
    with pytest.raises(InvalidInput) as deleting, transaction(runtime.engine) as session:
        service.delete_segment(session, spent)
    assert deleting.value.message == (
        f"segment {spent} 'Spent 100+' is used by segment {vip} 'VIP'; change or delete those first"
    )
    with pytest.raises(InvalidInput), transaction(runtime.engine) as session:
        service.update_segment(session, spent, is_active=False, now=runtime.clock.now(), timezone="UTC")
    # when VIP is deleted first, then "Spent 100+" can go, with its memberships and no events
    with transaction(runtime.engine) as session:
        service.delete_segment(session, vip)
        service.delete_segment(session, spent)
    with Session(runtime.engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(SegmentMembership)) == 0
    assert _segment_events(runtime) == []


# --- the reference graph (pure) -------------------------------------------------------------------


def test_dependency_order_puts_referenced_segments_first() -> None:
    graph = {1: {3}, 2: set(), 3: {2}, 4: {1, 2}}
    assert membership.dependency_order(graph, [1, 2, 3, 4]) == [2, 3, 1, 4]
    assert membership.dependency_order(graph, [4, 1]) == [1, 4]
    assert membership.with_dependents(graph, [3]) == {3, 1, 4}
    assert membership.find_cycle(graph, 1) is None
    assert membership.find_cycle({**graph, 2: {4}}, 1) == [1, 3, 2, 4, 1]
