"""Stored, live segment membership: full evaluation, incremental refresh, time-based re-checks, lists.

Membership changes in three ways, each writing `segment_memberships`, the segment's
`member_count` and one derived `Segment Entered` / `Segment Exited` event per transition, inside
the caller's transaction:
- full evaluation (`evaluate_segment`): the compiled SQL query is diffed against the stored rows
  by two statements (DELETE … RETURNING the leavers, INSERT … SELECT … RETURNING the newcomers);
- incremental (`refresh_customers`): after a batch of events or a list change, the in-memory
  evaluator re-checks every active segment for just those customers, with their facts loaded
  once for all segments;
- time-based (`recheck_time_based`): segments whose rules change with time alone are evaluated in
  full once `WINBACK_SEGMENT_RECHECK_S` has passed since their last evaluation, together with the
  segments built on them.

Segments that reference other segments are always evaluated after them (dependency order), so
they read the memberships just written.

Events are announced only for transitions the database actually made (the RETURNING rows), so two
writers can never announce the same transition twice. A derived Segment event is itself processed
later, which refreshes its customer; a membership that holds writes nothing and announces nothing,
so the loop ends. Tombstones of merged profiles and erased profiles leave segments silently: they
are no longer people a flow could reach (a merged profile's memberships are re-derived for the
survivor, who is refreshed in the same batch).

On PostgreSQL every membership writer takes one transaction-scoped advisory lock, so the
processor, the re-check and the API never interleave their diffs. On SQLite write transactions
are serial already (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import functools
import heapq
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Table, and_, delete, exists, func, literal, or_, select, update
from sqlalchemy.orm import Session

from winback import store
from winback.db.engine import reading, transaction
from winback.db.expressions import insert_or_ignore, one_of
from winback.db.models import Customer, CustomerList, ListMembership, Segment, SegmentMembership
from winback.db.types import UTCDateTime
from winback.ingest.segment import EventRow, derived_event
from winback.ingest.store import append_events
from winback.kernel.errors import NotFound
from winback.runtime import Runtime
from winback.segments import compiler, evaluator, facts, rules
from winback.settings import Settings

log = logging.getLogger(__name__)

SEGMENT_ENTERED = "Segment Entered"
SEGMENT_EXITED = "Segment Exited"
LIST_JOINED = "List Joined"
LIST_LEFT = "List Left"
MEMBERSHIP_LOCK = 0x57_1B_AC_5E  # PostgreSQL advisory lock key held by every membership writer
SEGMENT_GRAPH_LOCK = MEMBERSHIP_LOCK  # saving segments: one lock, so a save and a diff never interleave
WRITE_CHUNK = 1000  # rows per INSERT/DELETE … RETURNING statement

MEMBERSHIPS: Table = SegmentMembership.__table__  # type: ignore[assignment]
LIST_MEMBERSHIPS: Table = ListMembership.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """Who entered and who left one segment (customer ids, ascending)."""

    segment_id: int
    entered: tuple[int, ...] = ()
    exited: tuple[int, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.entered and not self.exited


@dataclass(frozen=True, slots=True)
class LiveSegment:
    """An active segment with its parsed rule, as the incremental path needs it."""

    id: int
    name: str
    rule: Any


# --- the reference graph (pure) -----------------------------------------------------------------


def find_cycle(graph: Mapping[int, Iterable[int]], start: int) -> list[int] | None:
    """A path of references `start → … → start`, or None when `start` is on no cycle."""
    path = [start]
    stack: list[Iterator[int]] = [iter(sorted(graph.get(start, ())))]
    explored: set[int] = set()  # nodes from which `start` cannot be reached
    while stack:
        following = next(stack[-1], None)
        if following is None:
            stack.pop()
            explored.add(path.pop())
        elif following == start:
            return [*path, start]
        elif following not in explored and following not in path:
            path.append(following)
            stack.append(iter(sorted(graph.get(following, ()))))
    return None


def dependency_order(graph: Mapping[int, Iterable[int]], segment_ids: Iterable[int]) -> list[int]:
    """`segment_ids` with every segment after the segments it references (ties by id).

    References to segments outside `segment_ids` are ignored. Saved graphs have no cycles; were
    one ever there, its members come last in id order rather than never."""
    wanted = set(segment_ids)
    waiting_on = {sid: {ref for ref in graph.get(sid, ()) if ref in wanted and ref != sid} for sid in wanted}
    users: dict[int, set[int]] = defaultdict(set)
    for sid, references in waiting_on.items():
        for ref in references:
            users[ref].add(sid)
    ready = [sid for sid, references in waiting_on.items() if not references]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        sid = heapq.heappop(ready)
        order.append(sid)
        for user in users[sid]:
            waiting_on[user].discard(sid)
            if not waiting_on[user]:
                heapq.heappush(ready, user)
    placed = set(order)
    return order + sorted(wanted - placed)


def with_dependents(graph: Mapping[int, Iterable[int]], segment_ids: Iterable[int]) -> set[int]:
    """`segment_ids` and every segment that references one of them, directly or through others."""
    users: dict[int, set[int]] = defaultdict(set)
    for sid, references in graph.items():
        for ref in references:
            users[ref].add(sid)
    found = set(segment_ids)
    pending = list(found)
    while pending:
        for user in users[pending.pop()]:
            if user not in found:
                found.add(user)
                pending.append(user)
    return found


# --- reading segments ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _parse(definition_json: bytes) -> rules.SegmentDefinition:
    return rules.parse_definition(orjson.loads(definition_json))


def parse_stored(definition: Mapping[str, Any]) -> rules.SegmentDefinition:
    """A stored definition, parsed (and cached by its content: parsed rules are immutable)."""
    return _parse(orjson.dumps(definition, option=orjson.OPT_SORT_KEYS))


def reference_graph(session: Session) -> dict[int, set[int]]:
    """Every saved segment → the segments its rule references."""
    graph: dict[int, set[int]] = {}
    for segment_id, definition in session.execute(select(Segment.id, Segment.definition)):
        graph[segment_id] = _referenced(segment_id, definition)
    return graph


def _referenced(segment_id: int, definition: Mapping[str, Any]) -> set[int]:
    try:
        return rules.referenced_segments(parse_stored(definition).rule)
    except Exception:
        log.exception("segment %s has a stored definition that no longer parses", segment_id)
        return set()


def live_segments(session: Session) -> list[LiveSegment]:
    """Active segments in dependency order; one whose stored rule no longer parses is skipped
    (and logged), so it cannot stop event processing."""
    found: dict[int, LiveSegment] = {}
    for segment_id, name, definition in session.execute(
        select(Segment.id, Segment.name, Segment.definition).where(Segment.is_active.is_(True))
    ):
        try:
            found[segment_id] = LiveSegment(segment_id, name, parse_stored(definition).rule)
        except Exception:
            log.exception("segment %s has a stored definition that no longer parses; skipped", segment_id)
    graph = {sid: rules.referenced_segments(segment.rule) for sid, segment in found.items()}
    return [found[sid] for sid in dependency_order(graph, found)]


def lock_memberships(session: Session) -> None:
    """Serialise membership writers on PostgreSQL until this transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(MEMBERSHIP_LOCK)))


# --- full evaluation ----------------------------------------------------------------------------


def evaluate_segment(
    session: Session, segment: Segment, now: datetime, timezone: str, *, announce: bool = True
) -> MembershipChange:
    """Evaluate `segment` in full with the compiled query and store the difference.

    With `announce` (the default) each transition appends a Segment Entered/Exited event; without,
    members are recorded silently (a segment's first evaluation, see `service`)."""
    lock_memberships(session)
    session.flush()  # pending profile and segment changes are what the query must see
    rule = parse_stored(segment.definition).rule
    dialect = session.get_bind().dialect.name
    context = compiler.CompileContext(now=now, timezone=timezone, dialect=dialect)
    members = compiler.members_query(rule, context).subquery("members")
    member_id = members.c[0]
    in_segment = MEMBERSHIPS.c.segment_id == segment.id
    still_member: ColumnElement[bool]
    if dialect == "postgresql":  # an anti-join; NOT IN would be a per-row subplan past work_mem
        still_member = exists(select(member_id).where(member_id == MEMBERSHIPS.c.customer_id))
    else:  # SQLite builds the IN list once, as an ephemeral index
        still_member = MEMBERSHIPS.c.customer_id.in_(select(member_id))
    exited = session.scalars(
        delete(MEMBERSHIPS).where(in_segment, ~still_member).returning(MEMBERSHIPS.c.customer_id)
    ).all()
    known = MEMBERSHIPS.alias("known")
    newcomers = (
        select(literal(segment.id), member_id, literal(now, UTCDateTime()))
        .select_from(
            members.outerjoin(known, and_(known.c.segment_id == segment.id, known.c.customer_id == member_id))
        )
        .where(known.c.customer_id.is_(None))
    )
    entered = session.scalars(
        insert_or_ignore(dialect, MEMBERSHIPS, ["segment_id", "customer_id"])
        .from_select(["segment_id", "customer_id", "entered_at"], newcomers)
        .returning(MEMBERSHIPS.c.customer_id)
    ).all()
    segment.member_count = (
        session.scalar(select(func.count()).select_from(MEMBERSHIPS).where(in_segment)) or 0
    )
    segment.evaluated_at = now
    change = MembershipChange(segment.id, tuple(sorted(entered)), tuple(sorted(exited)))
    if announce and not change.is_empty:
        _announce(session, [(segment.id, segment.name, change)], _people(session, _ids_of([change])), now)
    return change


def evaluate_with_dependents(
    session: Session, segment_ids: Iterable[int], now: datetime, timezone: str, *, announce: bool = True
) -> list[MembershipChange]:
    """Evaluate `segment_ids` and every active segment built on them, in dependency order."""
    graph = reference_graph(session)
    active = {
        segment.id: segment for segment in session.scalars(select(Segment).where(Segment.is_active.is_(True)))
    }
    targets = with_dependents(graph, segment_ids) & set(active)
    return [
        evaluate_segment(session, active[sid], now, timezone, announce=announce)
        for sid in dependency_order(graph, targets)
    ]


def forget_members(session: Session, segment: Segment) -> None:
    """Drop every membership of `segment` silently (it was turned off or is being deleted)."""
    lock_memberships(session)
    session.execute(delete(MEMBERSHIPS).where(MEMBERSHIPS.c.segment_id == segment.id))
    segment.member_count = 0
    segment.evaluated_at = None


# --- incremental --------------------------------------------------------------------------------


def refresh_customers(
    session: Session,
    customer_ids: Iterable[int],
    now: datetime,
    timezone: str,
    caused_at: Mapping[int, datetime] | None = None,
) -> list[MembershipChange]:
    """Re-check every active segment for `customer_ids` with the in-memory evaluator and store
    (and announce) the changes. Cheap when there are no active segments: one small query (and on
    PostgreSQL an advisory lock). `caused_at`: per customer, when what changed them happened (the
    newest event of theirs just applied), carried on the transition events as `caused_at` when
    it is earlier than `now` (imported history), so flows can tell old news from new."""
    ids = sorted(set(customer_ids))
    if not ids:
        return []
    # Locked before the segments are read: a segment saved concurrently is then either seen here
    # or was evaluated in full after this transaction's changes were committed.
    lock_memberships(session)
    segments = live_segments(session)
    if not segments:
        return []
    ctx = evaluator.EvalContext(now=now, timezone=timezone)
    needs = evaluator.FactNeeds()
    for segment in segments:
        needs = needs.merge(evaluator.needs(segment.rule, ctx))
    # Current memberships are read here for every active segment (not only the referenced ones):
    # they are both what the referencing rules read and what the answers are diffed against.
    known = facts.load_facts(session, ids, replace(needs, segment_ids=frozenset()), ctx)
    current: dict[int, set[int]] = defaultdict(set)
    active_ids = [segment.id for segment in segments]
    for chunk in _chunks(ids):
        for segment_id, customer_id in session.execute(
            select(MEMBERSHIPS.c.segment_id, MEMBERSHIPS.c.customer_id).where(
                one_of(MEMBERSHIPS.c.customer_id, chunk), one_of(MEMBERSHIPS.c.segment_id, active_ids)
            )
        ):
            current[customer_id].add(segment_id)
    known = {cid: replace(fact, segment_ids=frozenset(current[cid])) for cid, fact in known.items()}

    wanted: list[tuple[LiveSegment, list[int], list[int]]] = []
    for segment in segments:  # dependency order: references see the answers written before them
        entering: list[int] = []
        leaving: list[int] = []
        for customer_id in ids:
            fact = known.get(customer_id)
            inside = fact is not None and evaluator.evaluate(segment.rule, fact, ctx)
            if inside == (segment.id in current[customer_id]):
                continue
            if inside:
                entering.append(customer_id)
                current[customer_id].add(segment.id)
            else:
                leaving.append(customer_id)
                current[customer_id].discard(segment.id)
            if fact is not None:
                known[customer_id] = replace(fact, segment_ids=frozenset(current[customer_id]))
        if entering or leaving:
            wanted.append((segment, entering, leaving))

    changes = [
        (segment.id, segment.name, _apply(session, segment.id, entering, leaving, now))
        for segment, entering, leaving in wanted
    ]
    people = {
        cid: _Person(fact.profile.get("user_id"), fact.is_member_candidate) for cid, fact in known.items()
    }
    _announce(session, changes, people, now, caused_at)
    return [change for _, _, change in changes if not change.is_empty]


def _apply(
    session: Session, segment_id: int, entering: Sequence[int], leaving: Sequence[int], now: datetime
) -> MembershipChange:
    """Write one segment's transitions; returns those the database made (concurrent writers may
    have made some already)."""
    dialect = session.get_bind().dialect.name
    exited: list[int] = []
    for chunk in _chunks(leaving):
        exited.extend(
            session.scalars(
                delete(MEMBERSHIPS)
                .where(MEMBERSHIPS.c.segment_id == segment_id, one_of(MEMBERSHIPS.c.customer_id, chunk))
                .returning(MEMBERSHIPS.c.customer_id)
            )
        )
    entered: list[int] = []
    for chunk in _chunks(entering):
        entered.extend(
            session.scalars(
                insert_or_ignore(dialect, MEMBERSHIPS, ["segment_id", "customer_id"])
                .values([{"segment_id": segment_id, "customer_id": cid, "entered_at": now} for cid in chunk])
                .returning(MEMBERSHIPS.c.customer_id)
            )
        )
    delta = len(entered) - len(exited)
    if delta:
        session.execute(
            update(Segment).where(Segment.id == segment_id).values(member_count=Segment.member_count + delta),
            execution_options={"synchronize_session": False},
        )
    return MembershipChange(segment_id, tuple(sorted(entered)), tuple(sorted(exited)))


# --- time-based ---------------------------------------------------------------------------------


def recheck_time_based(runtime: Runtime) -> int:
    """Evaluate in full the active segments that change with time alone and were last evaluated
    `segment_recheck_s` or more ago, plus the segments built on them; returns how many were
    evaluated. Each segment is its own transaction, so the write lock is never held for long; one
    that fails is logged and the others still run."""
    now = runtime.clock.now()
    cutoff = now - timedelta(seconds=runtime.settings.segment_recheck_s)
    with reading(runtime.engine) as session:
        due = list(
            session.scalars(
                select(Segment.id).where(
                    Segment.is_active.is_(True),
                    Segment.depends_on_time.is_(True),
                    or_(Segment.evaluated_at.is_(None), Segment.evaluated_at <= cutoff),
                )
            )
        )
        if not due:
            return 0
        graph = reference_graph(session)
        active = set(session.scalars(select(Segment.id).where(Segment.is_active.is_(True))))
        timezone = store.profile_in(session, runtime.settings).timezone
    evaluated = 0
    for segment_id in dependency_order(graph, with_dependents(graph, due) & active):
        try:
            with transaction(runtime.engine) as session:
                segment = session.get(Segment, segment_id)
                if segment is None or not segment.is_active:
                    continue
                evaluate_segment(session, segment, now, timezone, announce=True)
                evaluated += 1
        except Exception:
            log.exception("time-based re-check of segment %s failed; the others carry on", segment_id)
    return evaluated


# --- lists --------------------------------------------------------------------------------------


def add_to_list(
    session: Session,
    list_id: int,
    customer_ids: Iterable[int],
    *,
    source: str,
    now: datetime,
    timezone: str | None = None,
) -> list[int]:
    """Add customers to a static list; returns those not already on it. Each newcomer gets a derived
    `List Joined` event (what `list_joined` flow triggers listen for), and segments that use the
    list are refreshed for them (`timezone`: the store's, read from the database when not given)."""
    target = _list(session, list_id)
    dialect = session.get_bind().dialect.name
    added: list[int] = []
    for chunk in _chunks(sorted(set(customer_ids))):
        added.extend(
            session.scalars(
                insert_or_ignore(dialect, LIST_MEMBERSHIPS, ["list_id", "customer_id"])
                .values(
                    [
                        {"list_id": list_id, "customer_id": cid, "added_at": now, "source": source}
                        for cid in chunk
                    ]
                )
                .returning(LIST_MEMBERSHIPS.c.customer_id)
            )
        )
    if added:
        target.updated_at = now
        people = _people(session, added)
        joined = [
            list_event(target, customer_id, people[customer_id].user_id, now)
            for customer_id in sorted(added)
            if customer_id in people and people[customer_id].is_reachable
        ]
        for start in range(0, len(joined), WRITE_CHUNK):
            append_events(session.connection(), joined[start : start + WRITE_CHUNK])
        refresh_customers(session, added, now, timezone or _store_timezone(session))
    return sorted(added)


def list_event(target: CustomerList, customer_id: int, user_id: str | None, now: datetime) -> EventRow:
    """The derived `List Joined` event of one addition; its message id is unique per list,
    customer and moment."""
    return derived_event(
        message_id=f"derived:list:{target.id}:{customer_id}:joined:{now.isoformat()}",
        customer_id=customer_id,
        user_id=user_id,
        at=now,
        event=LIST_JOINED,
        properties={"list_id": target.id, "list_name": target.name},
    )


def list_left_event(target: CustomerList, customer_id: int, user_id: str | None, now: datetime) -> EventRow:
    """The derived `List Left` event of one removal by a flow (so segments using the list are
    refreshed when it is processed)."""
    return replace(
        list_event(target, customer_id, user_id, now),
        message_id=f"derived:list:{target.id}:{customer_id}:left:{now.isoformat()}",
        event=LIST_LEFT,
    )


def remove_from_list(
    session: Session, list_id: int, customer_ids: Iterable[int], *, now: datetime, timezone: str | None = None
) -> list[int]:
    """Take customers off a static list; returns those that were on it. Segments that use the list
    are refreshed for them."""
    target = _list(session, list_id)
    removed: list[int] = []
    for chunk in _chunks(sorted(set(customer_ids))):
        removed.extend(
            session.scalars(
                delete(LIST_MEMBERSHIPS)
                .where(LIST_MEMBERSHIPS.c.list_id == list_id, one_of(LIST_MEMBERSHIPS.c.customer_id, chunk))
                .returning(LIST_MEMBERSHIPS.c.customer_id)
            )
        )
    if removed:
        target.updated_at = now
        refresh_customers(session, removed, now, timezone or _store_timezone(session))
    return sorted(removed)


def forget_list_members(session: Session, list_id: int) -> None:
    """Drop every membership of a list (it is being deleted; no segment uses it)."""
    session.execute(delete(LIST_MEMBERSHIPS).where(LIST_MEMBERSHIPS.c.list_id == list_id))


def move_list_memberships(session: Session, absorbed_id: int, survivor_id: int) -> None:
    """On a merge, the survivor joins every list the absorbed profile was on (an entry the
    survivor already had is kept as it is)."""
    rows = session.execute(
        select(LIST_MEMBERSHIPS.c.list_id, LIST_MEMBERSHIPS.c.added_at, LIST_MEMBERSHIPS.c.source).where(
            LIST_MEMBERSHIPS.c.customer_id == absorbed_id
        )
    ).all()
    if not rows:
        return
    session.execute(
        insert_or_ignore(session.get_bind().dialect.name, LIST_MEMBERSHIPS, ["list_id", "customer_id"]),
        [
            {
                "list_id": row.list_id,
                "customer_id": survivor_id,
                "added_at": row.added_at,
                "source": row.source,
            }
            for row in rows
        ],
    )
    session.execute(delete(LIST_MEMBERSHIPS).where(LIST_MEMBERSHIPS.c.customer_id == absorbed_id))


def _list(session: Session, list_id: int) -> CustomerList:
    found = session.get(CustomerList, list_id)
    if found is None:
        raise NotFound(f"list {list_id} does not exist", list_id=list_id)
    return found


def _store_timezone(session: Session) -> str:
    return store.profile_in(session, Settings()).timezone


# --- announcing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Person:
    user_id: str | None
    is_reachable: bool  # neither a merged tombstone nor erased


def _ids_of(changes: Iterable[MembershipChange]) -> set[int]:
    return {cid for change in changes for cid in (*change.entered, *change.exited)}


def _people(session: Session, customer_ids: Iterable[int]) -> dict[int, _Person]:
    people: dict[int, _Person] = {}
    for chunk in _chunks(sorted(customer_ids)):
        for cid, user_id, merged_into_id, erased_at in session.execute(
            select(Customer.id, Customer.user_id, Customer.merged_into_id, Customer.erased_at).where(
                one_of(Customer.id, chunk)
            )
        ):
            people[cid] = _Person(user_id, merged_into_id is None and erased_at is None)
    return people


def _announce(
    session: Session,
    changes: Sequence[tuple[int, str, MembershipChange]],
    people: Mapping[int, _Person],
    now: datetime,
    caused_at: Mapping[int, datetime] | None = None,
) -> None:
    """Append one derived event per transition of a reachable customer (exits before entries)."""
    caused_at = caused_at or {}
    rows: list[EventRow] = []
    for segment_id, name, change in changes:
        for kind, event, customer_ids in (
            ("exited", SEGMENT_EXITED, change.exited),
            ("entered", SEGMENT_ENTERED, change.entered),
        ):
            for customer_id in customer_ids:
                person = people.get(customer_id)
                if person is None or not person.is_reachable:
                    continue
                rows.append(
                    segment_event(segment_id, name, customer_id, person.user_id, kind, event, now,
                                  caused_at=caused_at.get(customer_id))
                )  # fmt: skip
    for start in range(0, len(rows), WRITE_CHUNK):
        append_events(session.connection(), rows[start : start + WRITE_CHUNK])


def segment_event(
    segment_id: int,
    name: str,
    customer_id: int,
    user_id: str | None,
    kind: str,
    event: str,
    now: datetime,
    *,
    caused_at: datetime | None = None,
) -> EventRow:
    """The derived event for one transition; its message id is unique per segment, customer,
    direction and moment. `caused_at` is kept when the cause is older than `now`."""
    properties: dict[str, Any] = {"segment_id": segment_id, "segment_name": name}
    if caused_at is not None and caused_at < now:
        properties["caused_at"] = caused_at.isoformat()
    return derived_event(
        message_id=f"derived:segment:{segment_id}:{customer_id}:{kind}:{now.isoformat()}",
        customer_id=customer_id,
        user_id=user_id,
        at=now,
        event=event,
        properties=properties,
    )


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), WRITE_CHUNK):
        yield ids[start : start + WRITE_CHUNK]
