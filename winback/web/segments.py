"""Segments and lists over the admin API (`/api/v1/segments`, `/api/v1/lists`, Bearer admin key).

Saving goes through `winback.segments.service` (validation, cycles, first evaluation) and list
changes through `winback.segments.membership`, so the API, the CLI and flows share one path.
Errors in a rule name their path inside the request body, e.g. `definition.rule.rules[1].value`,
and list every problem found. Members are paged by customer id (`next_cursor`) and exported as
CSV with `?format=csv` or `Accept: text/csv`, streamed in batches.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from winback import store
from winback.db.engine import reading, transaction
from winback.db.models import Customer, CustomerList, ListMembership, Segment
from winback.kernel.errors import InvalidInput, PayloadTooLarge
from winback.profiles import contact
from winback.runtime import Runtime
from winback.segments import compiler, csvio, library, membership, rules, service
from winback.web import schemas
from winback.web.admin import (
    DEFAULT_LIMIT,
    MAX_ID,
    MAX_LIMIT,
    PREFIX,
    decode_cursor,
    encode_cursor,
    page_by_id,
)
from winback.web.auth import AdminDep, require_admin

SAMPLE_SIZE = 20  # customers shown by a preview
MAX_IDENTIFIERS = 10_000  # customer ids / emails / user ids / phones per add or remove request
MAX_IMPORT_BYTES = 50 * 1024 * 1024  # a CSV body for POST /lists/{id}/import
API_SOURCE = "api"

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
        "description": "invalid rule, reference, name or cursor; `field` names the path, `problems` lists all",
    }
}
_CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "JSON page, or CSV of every member with format=csv"}
}

router = APIRouter(prefix=PREFIX, dependencies=[Depends(require_admin)], responses=_ERRORS)

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="items per page")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page")]
Format = Annotated[Literal["json", "csv"] | None, Query(description="csv: every member as a CSV download")]
SegmentId = Annotated[int, Path(ge=1, le=MAX_ID, description="segment id")]
ListId = Annotated[int, Path(ge=1, le=MAX_ID, description="list id")]


# --- shapes -------------------------------------------------------------------------------------


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SegmentCreate(Input):
    name: str = Field(min_length=1, max_length=service.NAME_MAX_LENGTH)
    description: str | None = None
    definition: dict[str, Any] = Field(
        description='`{"schema_version": 1, "rule": {...}}` (or a bare rule); see GET /segments/schema'
    )
    is_active: bool = Field(True, description="keep membership up to date (false: saved, not evaluated)")


class SegmentReplace(SegmentCreate):
    """A full replacement: a description left out becomes none."""


class SegmentPreviewRequest(Input):
    definition: dict[str, Any]


class SegmentPublic(schemas.Public):
    id: int
    name: str
    description: str | None
    definition: dict[str, Any]
    is_active: bool
    depends_on_time: bool = Field(
        description="re-checked on a schedule: membership can change with time alone"
    )
    member_count: int
    created_at: datetime
    updated_at: datetime
    evaluated_at: datetime | None


class SampleCustomer(schemas.Public):
    id: int
    user_id: str | None
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    country: str | None
    orders_count: int
    total_spent: schemas.MoneyStr
    created_at: datetime


class SegmentPreview(BaseModel):
    count: int
    sample: list[SampleCustomer] = Field(description=f"the first {SAMPLE_SIZE} members by customer id")
    elapsed_ms: float = Field(description="time taken by the count and the sample queries")


class SegmentMember(schemas.Public):
    id: int
    user_id: str | None
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    entered_at: datetime


class Template(BaseModel):
    key: str
    name: str
    description: str
    definition: dict[str, Any]


class ListCreate(Input):
    name: str = Field(min_length=1, max_length=service.NAME_MAX_LENGTH)
    description: str | None = None


class ListReplace(ListCreate):
    """A full replacement: a description left out becomes none."""


class ListPublic(BaseModel):
    id: int
    name: str
    description: str | None
    member_count: int
    created_at: datetime
    updated_at: datetime


class ListMember(schemas.Public):
    id: int
    user_id: str | None
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    added_at: datetime
    source: str


class People(Input):
    """Who to add or remove: any mix of customer ids, emails, user ids and phone numbers."""

    customer_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(default_factory=list)
    emails: list[str] = Field(default_factory=list)
    user_ids: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(default_factory=list)
    phones: list[str] = Field(default_factory=list)


class NotFoundPeople(BaseModel):
    customer_ids: list[int]
    emails: list[str]
    user_ids: list[str]
    phones: list[str]


class MembersAdded(BaseModel):
    added: list[int] = Field(description="customer ids newly added")
    already_members: list[int]
    not_found: NotFoundPeople = Field(description="given but matching no live customer (nothing done)")


class MembersRemoved(BaseModel):
    removed: list[int] = Field(description="customer ids removed")
    not_members: list[int]
    not_found: NotFoundPeople


# --- helpers ------------------------------------------------------------------------------------


def _in_body(field: str | None) -> str:
    """A rule path as the request body names it: `rule.rules[1]` → `definition.rule.rules[1]`."""
    if not field or field == "(root)":
        return "definition"
    return f"definition.{field}"


@contextmanager
def _definition_errors() -> Iterator[None]:
    """Rule errors (parse, references, cycles) re-raised with paths inside the request body."""
    try:
        yield
    except InvalidInput as exc:
        field = exc.details.get("field")
        if not (
            isinstance(field, str) and (field == "rule" or field.startswith(("rule.", "rule[", "(root)")))
        ):
            raise
        details = dict(exc.details)
        details["field"] = _in_body(field)
        if "problems" in details:
            details["problems"] = [
                {**problem, "path": _in_body(problem.get("path"))} for problem in details["problems"]
            ]
        message = exc.message.replace(f" at {field}", f" at {details['field']}", 1)
        raise InvalidInput(message, **details) from None


def _timezone(runtime: Runtime) -> str:
    return store.current_profile(runtime.engine, runtime.settings).timezone


def _wants_csv(request: Request, format: str | None) -> bool:
    if format is not None:
        return format == "csv"
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept


def _csv_response(chunks: Iterator[str], filename: str) -> StreamingResponse:
    return StreamingResponse(
        (chunk.encode() for chunk in chunks),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


# --- segments -----------------------------------------------------------------------------------


@router.get(
    "/segments/schema",
    tags=["segments"],
    summary="The JSON Schema of a segment definition (the rule language)",
    response_model=dict[str, Any],
)
def segment_schema() -> dict[str, Any]:
    return rules.json_schema()


@router.get(
    "/segments/templates",
    tags=["segments"],
    summary="Ready-made segments shipped with winback",
    response_model=list[Template],
)
def segment_templates() -> list[Template]:
    return [
        Template(key=t.key, name=t.name, description=t.description, definition=t.definition)
        for t in library.TEMPLATES
    ]


@router.post(
    "/segments/preview",
    tags=["segments"],
    summary="Count and sample the members of a rule without saving it",
    response_model=SegmentPreview,
    responses=_BAD_INPUT,
)
def preview_segment(body: SegmentPreviewRequest, runtime: AdminDep) -> SegmentPreview:
    timezone = _timezone(runtime)
    with reading(runtime.engine) as session:
        with _definition_errors():
            # the same checks as saving: the rule parses, referenced segments and lists exist
            parsed = service.validate_definition(session, body.definition, segment_id=None)
        started = time.perf_counter()
        context = compiler.CompileContext(
            now=runtime.clock.now(), timezone=timezone, dialect=runtime.engine.dialect.name
        )
        count = session.scalar(compiler.count_query(parsed.rule, context)) or 0
        members = compiler.members_query(parsed.rule, context).subquery()
        sample = list(
            session.scalars(
                select(Customer)
                .where(Customer.id.in_(select(members.c[0])))
                .order_by(Customer.id)
                .limit(SAMPLE_SIZE)
            )
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
    return SegmentPreview(
        count=count,
        sample=[SampleCustomer.model_validate(row) for row in sample],
        elapsed_ms=round(elapsed_ms, 3),
    )


@router.post(
    "/segments",
    tags=["segments"],
    summary="Save a segment; its members are evaluated before the answer",
    status_code=201,
    response_model=SegmentPublic,
    responses=_BAD_INPUT,
)
def create_segment(body: SegmentCreate, runtime: AdminDep) -> SegmentPublic:
    timezone = _timezone(runtime)
    with _definition_errors(), transaction(runtime.engine) as session:
        segment = service.create_segment(
            session,
            name=body.name,
            description=body.description,
            definition=body.definition,
            is_active=body.is_active,
            now=runtime.clock.now(),
            timezone=timezone,
        )
        return SegmentPublic.model_validate(segment)


@router.get(
    "/segments",
    tags=["segments"],
    summary="List segments by id",
    response_model=schemas.Page[SegmentPublic],
    responses=_BAD_INPUT,
)
def list_segments(
    runtime: AdminDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> schemas.Page[SegmentPublic]:
    with reading(runtime.engine) as session:
        rows, next_cursor = page_by_id(session, select(Segment), Segment.id, limit, cursor)
    return schemas.Page(items=[SegmentPublic.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get(
    "/segments/{segment_id}",
    tags=["segments"],
    summary="One segment with its member count",
    response_model=SegmentPublic,
    responses=_NOT_FOUND,
)
def get_segment(segment_id: SegmentId, runtime: AdminDep) -> SegmentPublic:
    with reading(runtime.engine) as session:
        return SegmentPublic.model_validate(service.get_segment(session, segment_id))


@router.put(
    "/segments/{segment_id}",
    tags=["segments"],
    summary="Replace a segment; a changed rule is evaluated again (and segments built on it)",
    response_model=SegmentPublic,
    responses={**_NOT_FOUND, **_BAD_INPUT},
)
def replace_segment(segment_id: SegmentId, body: SegmentReplace, runtime: AdminDep) -> SegmentPublic:
    timezone = _timezone(runtime)
    with _definition_errors(), transaction(runtime.engine) as session:
        segment = service.update_segment(
            session,
            segment_id,
            name=body.name,
            description=body.description,
            definition=body.definition,
            is_active=body.is_active,
            now=runtime.clock.now(),
            timezone=timezone,
        )
        return SegmentPublic.model_validate(segment)


@router.delete(
    "/segments/{segment_id}",
    tags=["segments"],
    summary="Delete a segment and its memberships (refused while other segments use it)",
    status_code=204,
    responses={**_NOT_FOUND, **_BAD_INPUT},
)
def delete_segment(segment_id: SegmentId, runtime: AdminDep) -> Response:
    with transaction(runtime.engine) as session:
        service.delete_segment(session, segment_id)
    return Response(status_code=204)


@router.get(
    "/segments/{segment_id}/members",
    tags=["segments"],
    summary="A segment's members by customer id; CSV of all with format=csv or Accept: text/csv",
    response_model=schemas.Page[SegmentMember],
    responses={**_NOT_FOUND, **_BAD_INPUT, **_CSV},
)
def segment_members(
    segment_id: SegmentId,
    request: Request,
    runtime: AdminDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    format: Format = None,
) -> Any:
    return _members_page(
        runtime, request, format, limit, cursor,
        check=lambda session: service.get_segment(session, segment_id),
        statement_for=lambda after, size: csvio.segment_members_statement(segment_id, after, size),
        model=SegmentMember, columns=csvio.SEGMENT_MEMBER_COLUMNS, filename=f"segment-{segment_id}-members.csv",
    )  # fmt: skip


def _members_page(
    runtime: Any, request: Request, format: str | None, limit: int, cursor: str | None, *,
    check: Any, statement_for: Any, model: Any, columns: Any, filename: str,
) -> Any:  # fmt: skip
    """A segment's or list's members: a keyset page as JSON, or all of them streamed as CSV."""
    after_id = decode_cursor(cursor, int)[0] if cursor is not None else None
    wants_csv = _wants_csv(request, format)
    with reading(runtime.engine) as session:
        check(session)  # 404 for an unknown segment or list, before anything is streamed
        rows = [] if wants_csv else list(session.execute(statement_for(after_id, limit + 1)))
    if wants_csv:
        members = csvio.iter_members(runtime.engine, statement_for)
        return _csv_response(csvio.csv_chunks(columns, members), filename)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].id)
    return schemas.Page(items=[model.model_validate(row) for row in rows], next_cursor=next_cursor)


# --- lists --------------------------------------------------------------------------------------


def _list_public(session: Session, found: CustomerList) -> ListPublic:
    return _lists_public(session, [found])[0]


def _lists_public(session: Session, found: list[CustomerList]) -> list[ListPublic]:
    counts: dict[int, int] = {}
    if found:
        counts = {
            list_id: count
            for list_id, count in session.execute(
                select(ListMembership.list_id, func.count())
                .join(Customer, Customer.id == ListMembership.customer_id)
                .where(
                    ListMembership.list_id.in_([row.id for row in found]),
                    Customer.merged_into_id.is_(None),
                    Customer.erased_at.is_(None),
                )
                .group_by(ListMembership.list_id)
            )
        }
    return [
        ListPublic(
            id=row.id,
            name=row.name,
            description=row.description,
            member_count=counts.get(row.id, 0),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        for row in found
    ]


@router.post(
    "/lists",
    tags=["lists"],
    summary="Create a static list",
    status_code=201,
    response_model=ListPublic,
    responses=_BAD_INPUT,
)
def create_list(body: ListCreate, runtime: AdminDep) -> ListPublic:
    with transaction(runtime.engine) as session:
        created = service.create_list(
            session, name=body.name, description=body.description, now=runtime.clock.now()
        )
        return _list_public(session, created)


@router.get(
    "/lists",
    tags=["lists"],
    summary="List static lists by id",
    response_model=schemas.Page[ListPublic],
    responses=_BAD_INPUT,
)
def list_lists(
    runtime: AdminDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> schemas.Page[ListPublic]:
    with reading(runtime.engine) as session:
        rows, next_cursor = page_by_id(session, select(CustomerList), CustomerList.id, limit, cursor)
        return schemas.Page(items=_lists_public(session, rows), next_cursor=next_cursor)


@router.get(
    "/lists/{list_id}",
    tags=["lists"],
    summary="One list with its member count",
    response_model=ListPublic,
    responses=_NOT_FOUND,
)
def get_list(list_id: ListId, runtime: AdminDep) -> ListPublic:
    with reading(runtime.engine) as session:
        return _list_public(session, service.get_list(session, list_id))


@router.put(
    "/lists/{list_id}",
    tags=["lists"],
    summary="Rename a list or change its description",
    response_model=ListPublic,
    responses={**_NOT_FOUND, **_BAD_INPUT},
)
def replace_list(list_id: ListId, body: ListReplace, runtime: AdminDep) -> ListPublic:
    name = body.name.strip()
    if not name:
        raise InvalidInput(f"a list name is 1 to {service.NAME_MAX_LENGTH} characters", field="name")
    try:
        with transaction(runtime.engine) as session:
            found = service.get_list(session, list_id)
            clash = session.scalar(
                select(CustomerList.id).where(CustomerList.name == name, CustomerList.id != list_id)
            )
            if clash is not None:
                raise InvalidInput(f"a list named {name!r} already exists", field="name")
            found.name = name
            found.description = body.description
            found.updated_at = runtime.clock.now()
            session.flush()
            return _list_public(session, found)
    except IntegrityError:
        raise InvalidInput(f"a list named {name!r} already exists", field="name") from None


@router.delete(
    "/lists/{list_id}",
    tags=["lists"],
    summary="Delete a list and its memberships (refused while segments use it)",
    status_code=204,
    responses={**_NOT_FOUND, **_BAD_INPUT},
)
def delete_list(list_id: ListId, runtime: AdminDep) -> Response:
    with transaction(runtime.engine) as session:
        service.delete_list(session, list_id)
    return Response(status_code=204)


def _resolve_people(
    session: Session, people: People, phone_region: str | None
) -> tuple[list[int], NotFoundPeople]:
    """The live customers `people` names (merged ids followed to their survivor), and the rest."""
    total = len(people.customer_ids) + len(people.emails) + len(people.user_ids) + len(people.phones)
    if total == 0:
        raise InvalidInput(
            "give customer_ids, emails, user_ids or phones (at least one)", field="customer_ids"
        )
    if total > MAX_IDENTIFIERS:
        raise PayloadTooLarge(
            f"at most {MAX_IDENTIFIERS} people per request (got {total}); import a CSV for more",
            field="customer_ids",
        )
    found: list[int] = []
    missing_ids: list[int] = []
    if people.customer_ids:
        rows = {
            row.id: row
            for row in session.execute(
                select(Customer.id, Customer.merged_into_id, Customer.erased_at).where(
                    Customer.id.in_(set(people.customer_ids))
                )
            )
        }
        for customer_id in people.customer_ids:
            row = rows.get(customer_id)
            if row is None or row.erased_at is not None:
                missing_ids.append(customer_id)
            elif row.merged_into_id is None:
                found.append(customer_id)
            else:
                survivor = membership_survivor(session, customer_id)
                if survivor is None:
                    missing_ids.append(customer_id)
                else:
                    found.append(survivor)
    missing: dict[str, list[str]] = {"emails": [], "user_ids": [], "phones": []}
    for key, kind, values in (
        ("emails", "email", people.emails),
        ("user_ids", "user_id", people.user_ids),
        ("phones", "phone", people.phones),
    ):
        if not values:
            continue
        normalised: dict[str, str | None] = {}
        for value in values:
            if kind == "email":
                normalised[value] = contact.normalise_email(value)
            elif kind == "phone":
                normalised[value] = contact.normalise_phone(value, phone_region)
            else:
                normalised[value] = value
        matches = csvio.resolve_customers(
            session,
            kind,
            (v for v in normalised.values() if v is not None),  # type: ignore[arg-type]
        )
        for value in values:
            target = normalised[value]
            if target is not None and target in matches:
                found.append(matches[target])
            else:
                missing[key].append(value)
    return list(dict.fromkeys(found)), NotFoundPeople(customer_ids=missing_ids, **missing)


def membership_survivor(session: Session, customer_id: int) -> int | None:
    """The live profile a merged id now lives in, or None if that one was erased."""
    from winback.profiles import erasure

    customer = session.get(Customer, customer_id)
    if customer is None:
        return None
    survivor = erasure.survivor_of(session, customer)
    if survivor.merged_into_id is not None or survivor.erased_at is not None:
        return None
    return survivor.id


def _phone_region(runtime: Runtime) -> str | None:
    return contact.region_of_locale(store.current_profile(runtime.engine, runtime.settings).locale)


@router.post(
    "/lists/{list_id}/members",
    tags=["lists"],
    summary="Add people to a list by customer id, email, user id or phone; unknown ones are reported",
    response_model=MembersAdded,
    responses={**_NOT_FOUND, **_BAD_INPUT},
)
def add_list_members(list_id: ListId, body: People, runtime: AdminDep) -> MembersAdded:
    region = _phone_region(runtime)
    with transaction(runtime.engine) as session:
        service.get_list(session, list_id)
        customer_ids, not_found = _resolve_people(session, body, region)
        added = set(
            membership.add_to_list(session, list_id, customer_ids, source=API_SOURCE, now=runtime.clock.now())
            if customer_ids
            else ()
        )
    return MembersAdded(
        added=[customer_id for customer_id in customer_ids if customer_id in added],
        already_members=[customer_id for customer_id in customer_ids if customer_id not in added],
        not_found=not_found,
    )


@router.delete(
    "/lists/{list_id}/members",
    tags=["lists"],
    summary="Remove people from a list by customer id, email, user id or phone",
    response_model=MembersRemoved,
    responses={**_NOT_FOUND, **_BAD_INPUT},
)
def remove_list_members(list_id: ListId, body: People, runtime: AdminDep) -> MembersRemoved:
    region = _phone_region(runtime)
    with transaction(runtime.engine) as session:
        service.get_list(session, list_id)
        customer_ids, not_found = _resolve_people(session, body, region)
        removed = set(
            membership.remove_from_list(session, list_id, customer_ids, now=runtime.clock.now())
            if customer_ids
            else ()
        )
    return MembersRemoved(
        removed=[customer_id for customer_id in customer_ids if customer_id in removed],
        not_members=[customer_id for customer_id in customer_ids if customer_id not in removed],
        not_found=not_found,
    )


@router.get(
    "/lists/{list_id}/members",
    tags=["lists"],
    summary="A list's members by customer id; CSV of all with format=csv or Accept: text/csv",
    response_model=schemas.Page[ListMember],
    responses={**_NOT_FOUND, **_BAD_INPUT, **_CSV},
)
def list_members(
    list_id: ListId,
    request: Request,
    runtime: AdminDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    format: Format = None,
) -> Any:
    return _members_page(
        runtime, request, format, limit, cursor,
        check=lambda session: service.get_list(session, list_id),
        statement_for=lambda after, size: csvio.list_members_statement(list_id, after, size),
        model=ListMember, columns=csvio.LIST_MEMBER_COLUMNS, filename=f"list-{list_id}-members.csv",
    )  # fmt: skip


@router.post(
    "/lists/{list_id}/import",
    tags=["lists"],
    summary="Add the people of a CSV (email, user_id or phone column) to a list; a report by line",
    response_model=dict[str, Any],
    responses={
        **_NOT_FOUND,
        **_BAD_INPUT,
        413: {"model": schemas.ErrorResponse, "description": "body too large"},
    },
    openapi_extra={
        "requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}
    },
)
async def import_list(list_id: ListId, request: Request, runtime: AdminDep) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_IMPORT_BYTES:
        raise PayloadTooLarge(f"a CSV import is at most {MAX_IMPORT_BYTES} bytes; use `winback lists import`")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_IMPORT_BYTES:
            raise PayloadTooLarge(
                f"a CSV import is at most {MAX_IMPORT_BYTES} bytes; use `winback lists import`"
            )
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_import_body, runtime, list_id, bytes(body))


def _import_body(runtime: Runtime, list_id: int, body: bytes) -> dict[str, Any]:
    with reading(runtime.engine) as session:
        service.get_list(session, list_id)
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise csvio.ListImportFailed(
            "the body is not UTF-8 text; send the CSV as UTF-8", field="body"
        ) from None
    now = runtime.clock.now()
    report = csvio.import_rows(
        runtime.engine,
        list_id,
        lambda: io.StringIO(text, newline=""),
        "body",
        lambda session, target, ids: membership.add_to_list(session, target, ids, source=API_SOURCE, now=now),
        phone_region=_phone_region(runtime),
    )
    return report.to_dict()
