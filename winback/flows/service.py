"""Saving flows: creating them, new versions on every edit, and the draft/live/paused switch."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from winback.db.models import Flow, FlowVersion
from winback.flows import definition as d
from winback.kernel.errors import InvalidInput, NotFound

STATUSES = ("draft", "live", "paused")


def create_flow(
    session: Session, *, name: str, definition: Any, now: datetime, description: str | None = None
) -> Flow:
    """A new draft flow with its first version; the definition is validated first."""
    parsed = d.parse_flow(definition)
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
