"""Saving flows: creating them, new versions on every edit, and the draft/live/paused switch."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from winback.db.models import CustomerList, Flow, FlowVersion, Segment
from winback.flows import copy
from winback.flows import definition as d
from winback.kernel.errors import InvalidInput, NotFound
from winback.segments import rules

STATUSES = ("draft", "live", "paused")


def create_flow(
    session: Session, *, name: str, definition: Any, now: datetime, description: str | None = None
) -> Flow:
    """A new draft flow with its first version; the definition is validated first."""
    parsed = d.parse_flow(definition)
    check_references(session, parsed)
    if not name.strip():
        raise InvalidInput("a flow needs a name", field="name")
    if session.scalar(select(Flow.id).where(Flow.name == name.strip())) is not None:
        raise InvalidInput(f"a flow named {name.strip()!r} already exists", field="name")
    flow = Flow(name=name.strip(), description=description, status="draft", created_at=now, updated_at=now)
    session.add(flow)
    try:
        session.flush()
    except IntegrityError:
        raise InvalidInput(f"a flow named {name.strip()!r} already exists", field="name") from None
    _add_version(session, flow, parsed, now)
    return flow


def update_definition(session: Session, flow_id: int, definition: Any, now: datetime) -> FlowVersion:
    """Save an edit as a new version; runs already under way stay on the version they entered."""
    parsed = d.parse_flow(definition)
    check_references(session, parsed)
    flow = get_flow(session, flow_id)
    version = _add_version(session, flow, parsed, now)
    flow.updated_at = now
    return version


def set_status(session: Session, flow_id: int, status: str, now: datetime) -> Flow:
    if status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}, got {status!r}", field="status")
    flow = get_flow(session, flow_id)
    flow.status = status
    flow.updated_at = now
    return flow


def references(definition: d.FlowDefinition) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Segment ids and list ids the flow names, each with where (node id, or trigger/entry)."""
    segments: dict[int, list[str]] = {}
    lists: dict[int, list[str]] = {}
    trigger = definition.trigger
    if isinstance(trigger, d.SegmentTrigger | d.ScheduleTrigger):
        segments.setdefault(trigger.segment_id, []).append("trigger")
    if isinstance(trigger, d.ListTrigger):
        lists.setdefault(trigger.list_id, []).append("trigger")
    rule_places: list[tuple[str, Any]] = [("entry.filter", definition.entry.filter)]
    for node in definition.nodes:
        if isinstance(node, d.ConditionNode):
            rule_places.append((node.id, node.rule))
        if isinstance(node, d.ActionNode) and isinstance(node.action, d.ListAction):
            lists.setdefault(node.action.list_id, []).append(node.id)
    for place, rule in rule_places:
        if rule is None:
            continue
        for segment_id in rules.referenced_segments(rule):
            segments.setdefault(segment_id, []).append(place)
        for list_id in rules.referenced_lists(rule):
            lists.setdefault(list_id, []).append(place)
    return segments, lists


def check_references(session: Session, definition: d.FlowDefinition) -> None:
    """Every segment and list the flow names must exist, and its message copy must be sound
    (else every problem is reported)."""
    segments, lists = references(definition)
    known_segments = (
        set(session.scalars(select(Segment.id).where(Segment.id.in_(list(segments))))) if segments else set()
    )
    known_lists = (
        set(session.scalars(select(CustomerList.id).where(CustomerList.id.in_(list(lists)))))
        if lists
        else set()
    )
    problems = [
        {"node_id": None if place in ("trigger", "entry.filter") else place, "path": place, "message": f"segment {sid} does not exist"}
        for sid, places in sorted(segments.items()) if sid not in known_segments for place in places
    ] + [
        {"node_id": None if place in ("trigger", "entry.filter") else place, "path": place, "message": f"list {lid} does not exist"}
        for lid, places in sorted(lists.items()) if lid not in known_lists for place in places
    ]  # fmt: skip
    problems += copy.problems(definition)
    if problems:
        first = problems[0]
        raise InvalidInput(
            f"invalid flow at {first['path']}: {first['message']}", field=first["path"], problems=problems
        )


def get_flow(session: Session, flow_id: int) -> Flow:
    flow = session.get(Flow, flow_id)
    if flow is None:
        raise NotFound(f"no flow with id {flow_id}", field="flow_id")
    return flow


def _add_version(session: Session, flow: Flow, parsed: d.FlowDefinition, now: datetime) -> FlowVersion:
    latest = session.scalar(select(func.max(FlowVersion.version)).where(FlowVersion.flow_id == flow.id)) or 0
    version = FlowVersion(
        flow_id=flow.id, version=latest + 1, definition=parsed.model_dump(mode="json"), created_at=now
    )
    session.add(version)
    session.flush()
    flow.current_version_id = version.id
    return version
