"""Flows over the admin API (`/api/v1/flows`, Bearer admin key), and each customer's runs.

Saving goes through `winback.flows.service` (validation, a new version on every edit, the
draft/live/paused switch), so the API and the CLI share one path. An invalid definition is refused
with every problem found, each naming its node (`node_id`) and, for schema errors, its place in
the request body (`path`, e.g. `definition.nodes.2.duration`).

Pausing a flow stops enrolment only: runs already under way keep going on the version they
entered (a customer halfway through an abandoned-cart sequence still gets the reminder, and exit
conditions still end runs). Counts (`winback.flows.reporting`) come from `flow_runs`: entered,
waiting (at the node now), passed (moved on), exited by reason, and the outcomes of splits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from winback import store
from winback.db.engine import reading, transaction
from winback.db.models import Flow, FlowRun, FlowVersion
from winback.flows import definition as d
from winback.flows import library, reporting, service, simulate
from winback.kernel.errors import InvalidInput, NotFound
from winback.messaging.policy import SendPolicy
from winback.web import schemas
from winback.web.admin import (
    DEFAULT_LIMIT,
    MAX_ID,
    MAX_LIMIT,
    PREFIX,
    _customer_or_redirect,
    page_by_id,
)
from winback.web.auth import AdminDep, require_admin

NAME_MAX_LENGTH = 200  # flows.name

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": schemas.ErrorResponse, "description": "missing, unknown or revoked admin key"},
    403: {"model": schemas.ErrorResponse, "description": "a write key was used on the admin API"},
    422: {"model": schemas.ErrorResponse, "description": "a parameter or body field is invalid"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorResponse, "description": "no such id"}
}
_BAD_INPUT: dict[int | str, dict[str, Any]] = {
    400: {
        "model": schemas.ErrorResponse,
        "description": "invalid definition, template, parameter, name or cursor; `problems` lists every "
        "problem with its `node_id` and `path`",
    }
}
_MERGED: dict[int | str, dict[str, Any]] = {
    308: {"model": schemas.MergedCustomer, "description": "merged into another profile; follow Location"}
}

router = APIRouter(prefix=PREFIX, dependencies=[Depends(require_admin)], responses=_ERRORS)

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="items per page")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page")]
FlowId = Annotated[int, Path(ge=1, le=MAX_ID, description="flow id")]
VersionNumber = Annotated[int, Path(ge=1, le=1_000_000, description="version number within the flow")]
CustomerId = Annotated[int, Path(ge=1, le=MAX_ID, description="winback customer id")]
RunStatus = Literal["active", "waiting", "completed", "exited"]


# --- shapes -------------------------------------------------------------------------------------


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FlowCreate(Input):
    """A definition, or a ready flow from the library: `{"template": NAME, "parameters": {...}}`."""

    name: str | None = Field(
        None, min_length=1, max_length=NAME_MAX_LENGTH, description="required with a definition; "
        "with a template, defaults to the template's title"
    )  # fmt: skip
    description: str | None = None
    definition: dict[str, Any] | None = Field(None, description="see GET /flows/schema")
    template: str | None = Field(None, description="a name from GET /flows/templates")
    parameters: dict[str, Any] = Field(default_factory=dict, description="the template's parameters")

    @model_validator(mode="after")
    def _one_source(self) -> FlowCreate:
        if (self.definition is None) == (self.template is None):
            raise ValueError("give either 'definition' or 'template'")
        if self.definition is not None and self.name is None:
            raise ValueError("a flow from a definition needs a 'name'")
        if self.template is None and self.parameters:
            raise ValueError("'parameters' go with 'template'")
        return self


class FlowUpdate(Input):
    definition: dict[str, Any] = Field(description="the new version's definition; see GET /flows/schema")
    description: str | None = Field(None, description="replaces the description when given")


class DefinitionInput(Input):
    definition: dict[str, Any]


class VersionSummary(BaseModel):
    version: int
    created_at: datetime
    is_current: bool
    runs: int = Field(description="runs that entered on this version")
    runs_in_progress: int = Field(description="of those, active or waiting now")


class FlowSummary(BaseModel):
    id: int
    name: str
    description: str | None
    status: Literal["draft", "live", "paused"]
    current_version: int | None
    runs_in_progress: int
    created_at: datetime
    updated_at: datetime


class NodeCountsPublic(BaseModel):
    node_id: str
    type: str | None = Field(description="null: the node is only in other versions")
    name: str | None
    action: str | None = Field(description="an action node's action type")
    entered: int
    waiting: int = Field(description="runs at the node now")
    passed: int = Field(description="runs that moved on to a following node")
    exited: dict[str, int] = Field(description="runs that ended at the node, by reason ('completed', …)")
    outcomes: dict[str, int] = Field(
        description="what happened at the node: yes/no, event/timeout, branch:N…"
    )


class RunTotalsPublic(BaseModel):
    started: int
    in_progress: int
    completed: int
    exited: int


class CountsPublic(BaseModel):
    runs: RunTotalsPublic
    nodes: list[NodeCountsPublic]


class FlowCountsPublic(BaseModel):
    current_version: CountsPublic = Field(description="runs on the current version")
    overall: CountsPublic = Field(description="runs on every version, by node id")


class FlowDetail(FlowSummary):
    definition: dict[str, Any] = Field(description="the current version's definition")
    versions: list[VersionSummary]
    counts: FlowCountsPublic


class VersionDetail(VersionSummary):
    flow_id: int
    definition: dict[str, Any]
    counts: CountsPublic = Field(description="runs on this version")


class VersionSaved(BaseModel):
    flow_id: int
    version: int = Field(description="the new version's number; runs under way stay on theirs")
    created_at: datetime


class ValidationResult(BaseModel):
    valid: bool
    problems: list[dict[str, Any]] = Field(description="empty when valid")


class ParameterPublic(BaseModel):
    name: str
    type: Literal["integer", "number", "string"]
    description: str
    default: int | float | str | None
    required: bool
    minimum: int | float | None
    maximum: int | float | None
    suggested_segment: dict[str, Any] | None = Field(description="a segment rule that fits a segment_id")


class TemplatePublic(BaseModel):
    name: str
    title: str
    description: str
    parameters: list[ParameterPublic]


class PathStepPublic(BaseModel):
    node_id: str
    type: str | None
    name: str | None
    action: str | None
    at: datetime
    outcome: str


class RunPublic(BaseModel):
    id: int
    flow_id: int
    flow_name: str
    version: int
    customer_id: int
    status: RunStatus
    node_id: str | None = Field(description="where the run is now, or where it ended")
    exit_reason: str | None
    checkout_id: str | None
    entered_at: datetime
    node_entered_at: datetime | None
    wake_at: datetime | None
    finished_at: datetime | None
    attempts: int = Field(description="failed attempts at the current step (retried with backoff)")
    last_error: str | None
    path: list[PathStepPublic] = Field(description="every node visited, in order")


# --- helpers ------------------------------------------------------------------------------------


def _in_body(path: str | None, prefix: str) -> str | None:
    if not path:
        return None
    return f"{prefix}.{path}"


@contextmanager
def _definition_errors(prefix: str = "definition") -> Iterator[None]:
    """parse_flow's problems re-raised with paths inside the request body."""
    try:
        yield
    except InvalidInput as exc:
        if "problems" not in exc.details:
            raise
        raise _restated(exc, prefix) from None


def _restated(exc: InvalidInput, prefix: str) -> InvalidInput:
    problems = [
        {
            "node_id": problem.get("node_id"),
            "path": _in_body(problem.get("path"), prefix),
            "message": problem["message"],
        }
        for problem in exc.details["problems"]
    ]
    details = {key: value for key, value in exc.details.items() if key not in ("problems", "field")}
    field = _in_body(exc.details.get("field"), prefix) or prefix
    return InvalidInput(exc.message, field=field, problems=problems, **details)


@contextmanager
def _template_errors() -> Iterator[None]:
    """A template's parameter errors name `parameters.<name>`; its flow's problems, `definition…`."""
    try:
        yield
    except InvalidInput as exc:
        if "problems" in exc.details:
            raise _restated(exc, "definition") from None
        field = exc.details.get("field")
        if field and field != "template":
            details = {key: value for key, value in exc.details.items() if key != "field"}
            raise InvalidInput(exc.message, field=f"parameters.{field}", **details) from None
        raise


def _number(value: Any) -> int | float | str | None:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value  # type: ignore[no-any-return]


def _template_public(info: library.TemplateInfo) -> TemplatePublic:
    return TemplatePublic(
        name=info.name,
        title=info.title,
        description=info.description,
        parameters=[
            ParameterPublic(
                name=p.name,
                type=p.type,
                description=p.description,
                default=_number(p.default),
                required=p.default is None,
                minimum=_number(p.minimum),
                maximum=_number(p.maximum),
                suggested_segment=dict(p.suggested_segment) if p.suggested_segment is not None else None,
            )
            for p in info.parameters
        ],
    )


def _counts_public(counts: reporting.FlowCounts) -> CountsPublic:
    return CountsPublic(
        runs=RunTotalsPublic(
            started=counts.runs.started,
            in_progress=counts.runs.in_progress,
            completed=counts.runs.completed,
            exited=counts.runs.exited,
        ),
        nodes=[
            NodeCountsPublic(
                node_id=node.node_id,
                type=node.type,
                name=node.name,
                action=node.action,
                entered=node.entered,
                waiting=node.waiting,
                passed=node.passed,
                exited=dict(node.exited),
                outcomes=dict(node.outcomes),
            )
            for node in counts.nodes
        ],
    )


def _versions(session: Session, flow: Flow) -> list[FlowVersion]:
    return list(
        session.scalars(
            select(FlowVersion).where(FlowVersion.flow_id == flow.id).order_by(FlowVersion.version)
        )
    )


def _version_summary(version: FlowVersion, flow: Flow, runs: dict[int, dict[str, int]]) -> VersionSummary:
    counted = runs.get(version.id, {"runs": 0, "in_progress": 0})
    return VersionSummary(
        version=version.version,
        created_at=version.created_at,
        is_current=version.id == flow.current_version_id,
        runs=counted["runs"],
        runs_in_progress=counted["in_progress"],
    )


def _summaries(session: Session, flows: list[Flow]) -> list[FlowSummary]:
    runs = reporting.runs_by_version(session, [flow.id for flow in flows])
    current = reporting.version_numbers(
        session, [flow.current_version_id for flow in flows if flow.current_version_id is not None]
    )
    owners = reporting.version_owners(session, runs)
    in_progress: dict[int, int] = {}
    for version_id, counted in runs.items():
        in_progress[owners[version_id]] = in_progress.get(owners[version_id], 0) + counted["in_progress"]
    return [
        FlowSummary(
            id=flow.id,
            name=flow.name,
            description=flow.description,
            status=flow.status,
            current_version=current.get(flow.current_version_id) if flow.current_version_id else None,
            runs_in_progress=in_progress.get(flow.id, 0),
            created_at=flow.created_at,
            updated_at=flow.updated_at,
        )
        for flow in flows
    ]


def flow_detail(session: Session, flow_id: int) -> FlowDetail:
    """The flow, its current definition, its versions and its per-node counts."""
    flow = service.get_flow(session, flow_id)
    versions = _versions(session, flow)
    current = next(version for version in versions if version.id == flow.current_version_id)
    parsed = d.parse_flow(current.definition)
    runs = reporting.runs_by_version(session, [flow.id])
    (summary,) = _summaries(session, [flow])
    return FlowDetail(
        **summary.model_dump(),
        definition=current.definition,
        versions=[_version_summary(version, flow, runs) for version in versions],
        counts=FlowCountsPublic(
            current_version=_counts_public(reporting.flow_counts(session, flow.id, current.id, parsed)),
            overall=_counts_public(reporting.flow_counts(session, flow.id, None, parsed)),
        ),
    )


def _version(session: Session, flow_id: int, number: int) -> FlowVersion:
    service.get_flow(session, flow_id)
    version = session.scalar(
        select(FlowVersion).where(FlowVersion.flow_id == flow_id, FlowVersion.version == number)
    )
    if version is None:
        raise NotFound(f"flow {flow_id} has no version {number}", field="version")
    return version


def _runs_public(session: Session, runs: list[FlowRun]) -> list[RunPublic]:
    version_ids = {run.flow_version_id for run in runs}
    versions = {
        version.id: version
        for version in session.scalars(select(FlowVersion).where(FlowVersion.id.in_(version_ids)))
    } if version_ids else {}  # fmt: skip
    flow_ids = {run.flow_id for run in runs}
    names = (
        {
            flow_id: name
            for flow_id, name in session.execute(select(Flow.id, Flow.name).where(Flow.id.in_(flow_ids)))
        }
        if flow_ids
        else {}
    )
    plans = {version_id: d.parse_flow(version.definition) for version_id, version in versions.items()}
    return [
        RunPublic(
            id=run.id,
            flow_id=run.flow_id,
            flow_name=names.get(run.flow_id, ""),
            version=versions[run.flow_version_id].version,
            customer_id=run.customer_id,
            status=run.status,
            node_id=run.node_id,
            exit_reason=run.exit_reason,
            checkout_id=run.checkout_id,
            entered_at=run.entered_at,
            node_entered_at=run.node_entered_at,
            wake_at=run.wake_at,
            finished_at=run.finished_at,
            attempts=run.attempts or 0,
            last_error=run.last_error,
            path=[
                PathStepPublic.model_validate(step, from_attributes=True)
                for step in reporting.run_path(run.history or [], plans.get(run.flow_version_id))
            ],
        )
        for run in runs
    ]


def _page_of_runs(
    session: Session, statement: Any, limit: int, cursor: str | None
) -> schemas.Page[RunPublic]:
    """Runs newest first (by id), `limit` at a time."""
    rows, next_cursor = page_by_id(session, statement, FlowRun.id, limit, cursor, newest_first=True)
    return schemas.Page(items=_runs_public(session, rows), next_cursor=next_cursor)


# --- routes without a flow id (declared first: they would otherwise read as one) -----------------


@router.get(
    "/flows/schema",
    tags=["flows"],
    summary="The JSON Schema of a flow definition",
    response_model=dict[str, Any],
)
def flow_schema() -> dict[str, Any]:
    return d.json_schema()


@router.get(
    "/flows/templates",
    tags=["flows"],
    summary="The library of ready flows and the parameters each takes",
    response_model=list[TemplatePublic],
)
def flow_templates() -> list[TemplatePublic]:
    return [_template_public(info) for info in library.templates()]


@router.post(
    "/flows/validate",
    tags=["flows"],
    summary="Check a definition without saving it: every problem with its node id",
    response_model=ValidationResult,
    responses=_BAD_INPUT,
)
def validate_definition(body: DefinitionInput) -> ValidationResult:
    with _definition_errors():
        d.parse_flow(body.definition)
    return ValidationResult(valid=True, problems=[])


@router.post(
    "/flows",
    tags=["flows"],
    summary="Create a draft flow from a definition or a template (activate it to start enrolling)",
    status_code=201,
    response_model=FlowDetail,
    responses=_BAD_INPUT,
)
def create_flow(body: FlowCreate, runtime: AdminDep) -> FlowDetail:
    name, description = body.name, body.description
    if body.template is not None:
        with _template_errors():
            info = library.get(body.template)
            definition: Any = library.render(body.template, **body.parameters).model_dump(mode="json")
        name = name or info.title
        description = description if description is not None else info.description
    else:
        definition = body.definition
    assert name is not None
    with _definition_errors(), transaction(runtime.engine) as session:
        flow = service.create_flow(
            session, name=name, description=description, definition=definition, now=runtime.clock.now()
        )
        return flow_detail(session, flow.id)


@router.get(
    "/flows",
    tags=["flows"],
    summary="List flows by id with their status and current version",
    response_model=schemas.Page[FlowSummary],
    responses=_BAD_INPUT,
)
def list_flows(
    runtime: AdminDep,
    status: Annotated[Literal["draft", "live", "paused"] | None, Query(description="only these")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> schemas.Page[FlowSummary]:
    statement = select(Flow)
    if status is not None:
        statement = statement.where(Flow.status == status)
    with reading(runtime.engine) as session:
        rows, next_cursor = page_by_id(session, statement, Flow.id, limit, cursor)
        return schemas.Page(items=_summaries(session, rows), next_cursor=next_cursor)


# --- one flow -----------------------------------------------------------------------------------


@router.get(
    "/flows/{flow_id}",
    tags=["flows"],
    summary="A flow: current definition, versions, and per-node counts (current version and overall)",
    response_model=FlowDetail,
    responses=_NOT_FOUND,
)
def get_flow(flow_id: FlowId, runtime: AdminDep) -> FlowDetail:
    with reading(runtime.engine) as session:
        return flow_detail(session, flow_id)


@router.put(
    "/flows/{flow_id}",
    tags=["flows"],
    summary="Save an edit as a new version; runs under way stay on the version they entered",
    response_model=VersionSaved,
    responses={**_NOT_FOUND, **_BAD_INPUT},
)
def update_flow(flow_id: FlowId, body: FlowUpdate, runtime: AdminDep) -> VersionSaved:
    with _definition_errors(), transaction(runtime.engine) as session:
        version = service.update_definition(session, flow_id, body.definition, runtime.clock.now())
        if body.description is not None:
            service.get_flow(session, flow_id).description = body.description
        return VersionSaved(flow_id=flow_id, version=version.version, created_at=version.created_at)


@router.post(
    "/flows/{flow_id}/validate",
    tags=["flows"],
    summary="Check an edit of this flow before saving it (no body: check the current version again)",
    response_model=ValidationResult,
    responses={**_NOT_FOUND, **_BAD_INPUT},
)
def validate_flow(
    flow_id: FlowId,
    runtime: AdminDep,
    body: Annotated[DefinitionInput | None, Body()] = None,
) -> ValidationResult:
    with reading(runtime.engine) as session:
        flow = service.get_flow(session, flow_id)
        current = session.get(FlowVersion, flow.current_version_id)
        assert current is not None
        definition = body.definition if body is not None else current.definition
    with _definition_errors():
        d.parse_flow(definition)
    return ValidationResult(valid=True, problems=[])


class SimulationRequest(Input):
    """Back-test a flow on the stored events of [from, to) — its current version, another saved
    version, or an unsaved `definition` — with no sends and no change to live data."""

    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    version: int | None = Field(default=None, ge=1)
    definition: dict[str, Any] | None = None
    attribution_days: float = Field(default=5, gt=0, le=365)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _period(self) -> SimulationRequest:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("'from' and 'to' need a timezone (e.g. 2026-03-01T00:00:00Z)")
        if self.end <= self.start:
            raise ValueError("'to' must be after 'from'")
        if self.version is not None and self.definition is not None:
            raise ValueError("give 'version' or 'definition', not both")
        return self


@router.post(
    "/flows/{flow_id}/simulate",
    tags=["flows"],
    summary="Back-test: replay a period's stored events through the flow, on a virtual clock",
    responses=_NOT_FOUND,
)
def simulate_flow(flow_id: FlowId, body: SimulationRequest, runtime: AdminDep) -> dict[str, Any]:
    with reading(runtime.engine) as session:
        flow = service.get_flow(session, flow_id)
        if body.definition is not None:
            with _definition_errors():
                plan = d.parse_flow(body.definition)
        else:
            found = (
                _version(session, flow_id, body.version)
                if body.version
                else session.get(FlowVersion, flow.current_version_id)
            )
            assert found is not None
            plan = d.parse_flow(found.definition)
        timezone = store.profile_in(session, runtime.settings).timezone
    report = simulate.simulate_flow(
        runtime.engine, plan, body.start, body.end, timezone=timezone, flow_id=flow_id,
        attribution_window=timedelta(days=body.attribution_days),
        policy=SendPolicy.from_settings(runtime.settings),
    )  # fmt: skip
    return report.to_dict()


def _switch(flow_id: int, status: str, runtime: Any) -> FlowSummary:
    with transaction(runtime.engine) as session:
        flow = service.set_status(session, flow_id, status, runtime.clock.now())
        return _summaries(session, [flow])[0]


@router.post(
    "/flows/{flow_id}/activate",
    tags=["flows"],
    summary="Turn a flow on: its trigger enrols customers into the current version",
    response_model=FlowSummary,
    responses=_NOT_FOUND,
)
def activate_flow(flow_id: FlowId, runtime: AdminDep) -> FlowSummary:
    return _switch(flow_id, "live", runtime)


@router.post(
    "/flows/{flow_id}/pause",
    tags=["flows"],
    summary="Stop enrolling; runs already under way carry on to their end",
    response_model=FlowSummary,
    responses=_NOT_FOUND,
)
def pause_flow(flow_id: FlowId, runtime: AdminDep) -> FlowSummary:
    return _switch(flow_id, "paused", runtime)


@router.get(
    "/flows/{flow_id}/versions",
    tags=["flows"],
    summary="Every version of a flow, oldest first, with how many runs each holds",
    response_model=list[VersionSummary],
    responses=_NOT_FOUND,
)
def list_versions(flow_id: FlowId, runtime: AdminDep) -> list[VersionSummary]:
    with reading(runtime.engine) as session:
        flow = service.get_flow(session, flow_id)
        runs = reporting.runs_by_version(session, [flow.id])
        return [_version_summary(version, flow, runs) for version in _versions(session, flow)]


@router.get(
    "/flows/{flow_id}/versions/{version}",
    tags=["flows"],
    summary="One version: its definition and the per-node counts of the runs pinned to it",
    response_model=VersionDetail,
    responses=_NOT_FOUND,
)
def get_version(flow_id: FlowId, version: VersionNumber, runtime: AdminDep) -> VersionDetail:
    with reading(runtime.engine) as session:
        flow = service.get_flow(session, flow_id)
        found = _version(session, flow_id, version)
        runs = reporting.runs_by_version(session, [flow.id])
        counts = reporting.flow_counts(session, flow.id, found.id, d.parse_flow(found.definition))
        return VersionDetail(
            **_version_summary(found, flow, runs).model_dump(),
            flow_id=flow.id,
            definition=found.definition,
            counts=_counts_public(counts),
        )


@router.get(
    "/flows/{flow_id}/runs",
    tags=["flows"],
    summary="A flow's runs, newest first, each with its path",
    response_model=schemas.Page[RunPublic],
    responses={**_NOT_FOUND, **_BAD_INPUT},
)
def list_runs(
    flow_id: FlowId,
    runtime: AdminDep,
    status: Annotated[RunStatus | None, Query(description="only runs in this state")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> schemas.Page[RunPublic]:
    statement = select(FlowRun).where(FlowRun.flow_id == flow_id)
    if status is not None:
        statement = statement.where(FlowRun.status == status)
    with reading(runtime.engine) as session:
        service.get_flow(session, flow_id)
        return _page_of_runs(session, statement, limit, cursor)


# --- a customer's runs --------------------------------------------------------------------------


@router.get(
    "/customers/{customer_id}/runs",
    tags=["customers"],
    summary="A customer's flow runs, newest first, each with its flow, state, exit reason and path",
    response_model=schemas.Page[RunPublic],
    responses={**_NOT_FOUND, **_MERGED, **_BAD_INPUT},
)
def customer_runs(
    customer_id: CustomerId,
    request: Request,
    runtime: AdminDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Any:
    with reading(runtime.engine) as session:
        customer = _customer_or_redirect(session, request, customer_id)
        if isinstance(customer, JSONResponse):
            return customer
        statement = select(FlowRun).where(FlowRun.customer_id == customer_id)
        return _page_of_runs(session, statement, limit, cursor)
