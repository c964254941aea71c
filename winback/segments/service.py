"""Saving segments and lists: the named actions the API, the CLI and the shipped library call.

A segment is validated as a whole before anything is written: the rule parses (errors name the
path), every segment and list it references exists, and segment references form no cycle (the
error names the loop, e.g. `segment 3 "VIP" → segment 5 "Lapsed VIP" → segment 3 "VIP"`).

Membership is kept from the moment a segment is saved. Saving (creating, changing the rule or
turning a segment back on) evaluates it in full *silently* by default: its members are recorded
without `Segment Entered` events, because a new or edited definition is not something the
customers did, and announcing every existing member would start every flow triggered by the
segment for all of them at once. Later changes — events, time passing, list changes — are
announced (`winback.segments.membership`). Pass `announce=True` to announce the first evaluation.

Every function works inside the caller's transaction (`winback.db.engine.transaction`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from winback.db.models import CustomerList, Segment
from winback.kernel.errors import InvalidInput, NotFound
from winback.segments import membership, rules

NAME_MAX_LENGTH = 200


class _Keep:
    """Marks an optional argument left out of an update (None is a value: "no description")."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()


# --- segments -----------------------------------------------------------------------------------


def get_segment(session: Session, segment_id: int) -> Segment:
    segment = session.get(Segment, segment_id)
    if segment is None:
        raise NotFound(f"segment {segment_id} does not exist", segment_id=segment_id)
    return segment


def create_segment(
    session: Session,
    *,
    name: str,
    definition: Any,
    now: datetime,
    timezone: str,
    description: str | None = None,
    is_active: bool = True,
    announce: bool = False,
) -> Segment:
    """Validate and save a new segment; when active, record its members (silently unless `announce`)."""
    _lock_segments(session)
    name = _valid_name(session, name, segment_id=None)
    parsed = validate_definition(session, definition)
    segment = Segment(
        name=name,
        description=description,
        definition=_stored(definition, parsed),
        is_active=is_active,
        depends_on_time=rules.depends_on_time(parsed.rule),
        member_count=0,
        created_at=now,
        updated_at=now,
        evaluated_at=None,
    )
    if is_active:
        _refuse_inactive_references(session, parsed, name)
    session.add(segment)
    session.flush()
    if is_active:
        membership.evaluate_segment(session, segment, now, timezone, announce=announce)
    return segment


def update_segment(
    session: Session,
    segment_id: int,
    *,
    now: datetime,
    timezone: str,
    name: str | None = None,
    definition: Any = None,
    description: Any = KEEP,
    is_active: bool | None = None,
    announce: bool = False,
) -> Segment:
    """Change a segment (arguments left out stay as they are).

    A changed rule re-evaluates the segment and every active segment that references it, in
    dependency order (silently unless `announce`). Turning a segment off forgets its members; it
    is refused while active segments reference it. Turning it on evaluates it afresh.
    """
    _lock_segments(session)
    segment = get_segment(session, segment_id)
    if name is not None:
        segment.name = _valid_name(session, name, segment_id=segment.id)
    if description is not KEEP:
        segment.description = description
    parsed = rules.parse_definition(segment.definition)
    rule_changed = False
    if definition is not None:
        previous = parsed
        parsed = validate_definition(session, definition, segment_id=segment.id)
        rule_changed = parsed != previous
        segment.definition = _stored(definition, parsed)
        segment.depends_on_time = rules.depends_on_time(parsed.rule)
    activated = is_active is True and not segment.is_active
    if is_active is False and segment.is_active:
        users = [s for s in _segments_referencing(session, segment.id) if s.is_active]
        if users:
            raise InvalidInput(
                f"segment {segment.id} {segment.name!r} is used by active segments "
                f"({_describe(users)}); turn those off or change them first",
                field="is_active",
            )
        segment.is_active = False
        membership.forget_members(session, segment)
    if is_active is True:
        segment.is_active = True
    segment.updated_at = now
    if segment.is_active and (rule_changed or activated):
        _refuse_inactive_references(session, parsed, segment.name)
        session.flush()
        membership.evaluate_with_dependents(session, [segment.id], now, timezone, announce=announce)
    return segment


def delete_segment(session: Session, segment_id: int) -> None:
    """Delete a segment and its memberships (no `Segment Exited` events: the segment is gone).
    Refused while other segments reference it, naming them."""
    _lock_segments(session)
    segment = get_segment(session, segment_id)
    users = _segments_referencing(session, segment.id)
    if users:
        raise InvalidInput(
            f"segment {segment.id} {segment.name!r} is used by {_describe(users)}; change or delete those first",
            field="segment_id",
        )
    membership.forget_members(session, segment)
    session.delete(segment)
    session.flush()


# --- lists --------------------------------------------------------------------------------------


def get_list(session: Session, list_id: int) -> CustomerList:
    found = session.get(CustomerList, list_id)
    if found is None:
        raise NotFound(f"list {list_id} does not exist", list_id=list_id)
    return found


def create_list(
    session: Session, *, name: str, now: datetime, description: str | None = None
) -> CustomerList:
    name = name.strip()
    if not name or len(name) > NAME_MAX_LENGTH:
        raise InvalidInput(f"a list name is 1 to {NAME_MAX_LENGTH} characters", field="name")
    if session.scalar(select(CustomerList.id).where(CustomerList.name == name)) is not None:
        raise InvalidInput(f"a list named {name!r} already exists", field="name")
    created = CustomerList(name=name, description=description, created_at=now, updated_at=now)
    session.add(created)
    session.flush()
    return created


def delete_list(session: Session, list_id: int) -> None:
    """Delete a list and its memberships; refused while segments reference it, naming them."""
    _lock_segments(session)
    found = get_list(session, list_id)
    users = [
        segment
        for segment in session.scalars(select(Segment).order_by(Segment.id))
        if list_id in rules.referenced_lists(rules.parse_definition(segment.definition).rule)
    ]
    if users:
        raise InvalidInput(
            f"list {list_id} {found.name!r} is used by {_describe(users)}; change or delete those first",
            field="list_id",
        )
    membership.forget_list_members(session, list_id)
    session.delete(found)
    session.flush()


# --- validation ---------------------------------------------------------------------------------


def _lock_segments(session: Session) -> None:
    """Serialise saves that could together form a cycle (A → B saved while B → A is saved).

    SQLite write transactions are already serial (BEGIN IMMEDIATE); PostgreSQL takes a
    transaction-scoped advisory lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(membership.SEGMENT_GRAPH_LOCK)))


def _valid_name(session: Session, name: str, *, segment_id: int | None) -> str:
    name = name.strip()
    if not name or len(name) > NAME_MAX_LENGTH:
        raise InvalidInput(f"a segment name is 1 to {NAME_MAX_LENGTH} characters", field="name")
    existing = session.scalar(select(Segment.id).where(Segment.name == name))
    if existing is not None and existing != segment_id:
        raise InvalidInput(f"a segment named {name!r} already exists", field="name")
    return name


def _stored(submitted: Any, parsed: rules.SegmentDefinition) -> dict[str, Any]:
    """The definition as written (a bare rule wrapped with its schema version), so it reads back
    the way the marketer wrote it; a parsed model is stored without its unset defaults."""
    if isinstance(submitted, rules.SegmentDefinition):
        return submitted.model_dump(mode="json", exclude_unset=True) | {
            "schema_version": submitted.schema_version
        }
    if isinstance(submitted, dict) and "schema_version" not in submitted:
        return {"schema_version": parsed.schema_version, "rule": submitted}
    return dict(submitted)


def validate_definition(
    session: Session, definition: Any, *, segment_id: int | None = None
) -> rules.SegmentDefinition:
    """Parse a rule and check its references exist and, for the saved segment `segment_id`, form no
    cycle. `InvalidInput` names the path of the bad part."""
    parsed = rules.parse_definition(definition)
    segment_refs = list(_references(parsed.rule, "rule", rules.SegmentRule))
    list_refs = list(_references(parsed.rule, "rule", rules.ListRule))
    if segment_refs:
        wanted = {ref.segment_id for _, ref in segment_refs}
        known = set(session.scalars(select(Segment.id).where(Segment.id.in_(wanted))))
        for path, ref in segment_refs:
            if ref.segment_id == segment_id:
                raise InvalidInput(
                    f"invalid segment rule at {path}.segment_id: a segment cannot reference itself",
                    field=f"{path}.segment_id",
                )
            if ref.segment_id not in known:
                raise InvalidInput(
                    f"invalid segment rule at {path}.segment_id: segment {ref.segment_id} does not exist",
                    field=f"{path}.segment_id",
                )
    if list_refs:
        wanted = {ref.list_id for _, ref in list_refs}
        known = set(session.scalars(select(CustomerList.id).where(CustomerList.id.in_(wanted))))
        for path, ref in list_refs:
            if ref.list_id not in known:
                raise InvalidInput(
                    f"invalid segment rule at {path}.list_id: list {ref.list_id} does not exist",
                    field=f"{path}.list_id",
                )
    if segment_id is not None and segment_refs:
        _refuse_cycle(session, segment_id, rules.referenced_segments(parsed.rule))
    return parsed


def _refuse_cycle(session: Session, segment_id: int, references: set[int]) -> None:
    graph = membership.reference_graph(session)
    graph[segment_id] = references
    loop = membership.find_cycle(graph, segment_id)
    if loop is not None:
        rows = session.execute(select(Segment.id, Segment.name).where(Segment.id.in_(set(loop))))
        names = {node: name for node, name in rows}
        path = " → ".join(f"segment {node} {names.get(node, '')!r}" for node in loop)
        raise InvalidInput(f"segment references would form a cycle: {path}", field="rule", cycle=loop)


def _refuse_inactive_references(session: Session, parsed: rules.SegmentDefinition, name: str) -> None:
    """An active segment may only reference active ones: an inactive segment's members are not kept."""
    referenced = rules.referenced_segments(parsed.rule)
    if not referenced:
        return
    inactive = list(
        session.scalars(select(Segment).where(Segment.id.in_(referenced), Segment.is_active.is_(False)))
    )
    if inactive:
        raise InvalidInput(
            f"segment {name!r} references inactive segments ({_describe(inactive)}), whose members "
            "are not kept; turn them on first",
            field="rule",
        )


def _references(rule: Any, path: str, kind: type[Any]) -> Iterator[tuple[str, Any]]:
    """(path, rule) for every rule of `kind` in the tree, with paths as parse errors name them."""
    if isinstance(rule, kind):
        yield path, rule
    if isinstance(rule, rules.AllRule | rules.AnyRule):
        for index, child in enumerate(rule.rules):
            yield from _references(child, f"{path}.rules[{index}]", kind)
    elif isinstance(rule, rules.NotRule):
        yield from _references(rule.rule, f"{path}.rule", kind)


def _segments_referencing(session: Session, segment_id: int) -> list[Segment]:
    graph = membership.reference_graph(session)
    users = sorted(user for user, referenced in graph.items() if segment_id in referenced)
    return [session.get_one(Segment, user) for user in users]


def _describe(segments: list[Segment]) -> str:
    return ", ".join(f"segment {segment.id} {segment.name!r}" for segment in segments)
