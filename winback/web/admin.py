"""The admin API (`/api/v1`, Bearer admin key): store profile, customers, checkouts, orders.

Lists are paged by keyset: each page carries an opaque `next_cursor`, passed back as `cursor`.
Customer ids of profiles merged into another one answer `308 Permanent Redirect` with `Location`
pointing at the surviving profile (and a body naming it), so a link kept from before a merge still
leads to the person. `DELETE /customers/{id}` erases the person (GDPR) and says what it changed.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from winback import store
from winback.db.engine import reading, transaction
from winback.db.models import (
    Checkout,
    ConsentRecord,
    Customer,
    CustomerCollection,
    CustomerIdentity,
    CustomerProduct,
    Event,
    Order,
    OrderLine,
)
from winback.kernel.clock import as_utc
from winback.kernel.errors import InvalidInput, NotFound
from winback.profiles import contact, erasure, export
from winback.settings import StoreProfile
from winback.web import schemas
from winback.web.auth import AdminDep, require_admin

PREFIX = "/api/v1"
DEFAULT_LIMIT = 50  # items per page
MAX_LIMIT = 500
MAX_ID = 2**63 - 1
PUT_REQUIRED = ("name", "url", "timezone", "currency", "locale")  # support_* may be left out

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": schemas.ErrorResponse, "description": "missing, unknown or revoked admin key"},
    403: {"model": schemas.ErrorResponse, "description": "a write key was used on the admin API"},
    422: {"model": schemas.ErrorResponse, "description": "a parameter or body field is invalid"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorResponse, "description": "no such id"}
}
_BAD_INPUT: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorResponse, "description": "a parameter is invalid"}
}
_MERGED: dict[int | str, dict[str, Any]] = {
    308: {"model": schemas.MergedCustomer, "description": "merged into another profile; follow Location"}
}

router = APIRouter(prefix=PREFIX, dependencies=[Depends(require_admin)], responses=_ERRORS)

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="items per page")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page")]
CustomerId = Annotated[int, Path(ge=1, le=MAX_ID, description="winback customer id")]
OptionalCustomerId = Annotated[int | None, Query(ge=1, le=MAX_ID, description="only this customer's")]


# --- paging -------------------------------------------------------------------------------------


def encode_cursor(*values: Any) -> str:
    """An opaque continuation token for a keyset position."""
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode().rstrip("=")


def decode_cursor(cursor: str, *kinds: type) -> list[Any]:
    """The keyset position in `cursor`, checked against the expected kinds; InvalidInput if not one."""
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or len(values) != len(kinds):
            raise ValueError
        decoded: list[Any] = []
        for value, kind in zip(values, kinds, strict=True):
            if kind is datetime:
                decoded.append(as_utc(datetime.fromisoformat(value)))
            elif kind is int and isinstance(value, int) and not isinstance(value, bool):
                decoded.append(value)
            else:
                raise ValueError
        return decoded
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidInput(
            "cursor is not one this API handed out; pass `next_cursor` from the previous page unchanged",
            field="cursor",
        ) from None


def _page_by_id(rows: list[Any], limit: int) -> tuple[list[Any], str | None]:
    """Split off the probe row fetched past `limit` and make the cursor from the last kept row."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].id)


def page_by_id(
    session: Session,
    statement: Any,
    id_column: Any,
    limit: int,
    cursor: str | None,
    *,
    newest_first: bool = False,
) -> tuple[list[Any], str | None]:
    """One keyset page of `statement`'s rows ordered by `id_column`, and the cursor to the next."""
    if cursor is not None:
        (position,) = decode_cursor(cursor, int)
        statement = statement.where(id_column < position if newest_first else id_column > position)
    ordered = statement.order_by(id_column.desc() if newest_first else id_column).limit(limit + 1)
    return _page_by_id(list(session.scalars(ordered)), limit)


# --- store --------------------------------------------------------------------------------------


@router.get("/store", tags=["store"], summary="Get the store profile", response_model=StoreProfile)
def get_store(runtime: AdminDep) -> StoreProfile:
    return store.current_profile(runtime.engine, runtime.settings)


@router.put(
    "/store",
    tags=["store"],
    summary="Replace the store profile",
    response_model=StoreProfile,
    responses=_BAD_INPUT,
)
def put_store(profile: StoreProfile, runtime: AdminDep) -> StoreProfile:
    """A replacement must say every required field: a forgotten one is not silently reset."""
    missing = [name for name in PUT_REQUIRED if name not in profile.model_fields_set]
    if missing:
        raise InvalidInput(
            f"{missing[0]}: required when replacing the profile (use PATCH to change some fields)",
            field=missing[0],
            missing=missing,
        )
    return store.save_profile(runtime.engine, profile, runtime.clock.now())


@router.patch(
    "/store",
    tags=["store"],
    summary="Change some fields of the store profile",
    response_model=StoreProfile,
    responses=_BAD_INPUT,
)
def patch_store(changes: schemas.StoreProfileUpdate, runtime: AdminDep) -> StoreProfile:
    return store.update_profile(
        runtime.engine, runtime.settings, changes.model_dump(exclude_unset=True), runtime.clock.now()
    )


# --- customers ----------------------------------------------------------------------------------


@router.get(
    "/customers",
    tags=["customers"],
    summary="List or look up customers",
    response_model=schemas.Page[schemas.CustomerSummary],
    responses=_BAD_INPUT,
)
def list_customers(
    runtime: AdminDep,
    user_id: Annotated[str | None, Query(max_length=255, description="exact user id")] = None,
    email: Annotated[str | None, Query(max_length=320, description="matched case-insensitively")] = None,
    phone: Annotated[str | None, Query(max_length=64, description="any format; compared as E.164")] = None,
    include_merged: Annotated[bool, Query(description="also list tombstones of merged profiles")] = False,
    include_erased: Annotated[bool, Query(description="also list erased profiles")] = False,
    order: Annotated[Literal["newest", "oldest"], Query(description="by id")] = "newest",
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> schemas.Page[schemas.CustomerSummary]:
    profile = store.current_profile(runtime.engine, runtime.settings)
    lookups: list[tuple[Any, str, str]] = []  # (profile column, identity kind, normalised value)
    if user_id is not None:
        lookups.append((Customer.user_id, "user_id", user_id))
    if email is not None:
        normalised = contact.normalise_email(email)
        if normalised is None:
            raise InvalidInput(f"email {email!r} is not a valid address", field="email")
        lookups.append((Customer.email, "email", normalised))
    if phone is not None:
        e164 = contact.normalise_phone(phone, contact.region_of_locale(profile.locale))
        if e164 is None:
            raise InvalidInput(
                f"phone {phone!r} is not a valid number (use E.164, e.g. +14155550123)", field="phone"
            )
        lookups.append((Customer.phone, "phone", e164))
    newest_first = order == "newest"
    after_id = decode_cursor(cursor, int)[0] if cursor is not None else None

    with reading(runtime.engine) as session:
        statement = select(Customer)
        for column, kind, value in lookups:
            statement = statement.where(_matches_identity(session, column, kind, value))
        if not include_merged:
            statement = statement.where(Customer.merged_into_id.is_(None))
        if not include_erased:
            statement = statement.where(Customer.erased_at.is_(None))
        if after_id is not None:
            statement = statement.where(Customer.id < after_id if newest_first else Customer.id > after_id)
        statement = statement.order_by(Customer.id.desc() if newest_first else Customer.id).limit(limit + 1)
        rows, next_cursor = _page_by_id(list(session.scalars(statement)), limit)
        items = [
            schemas.CustomerSummary.model_validate(
                {**_columns(row, schemas.CustomerSummary), "currency": profile.currency}
            )
            for row in rows
        ]
    return schemas.Page(items=items, next_cursor=next_cursor)


def _matches_identity(session: Session, column: Any, kind: str, value: str) -> Any:
    """The profile's own field equals `value`, or one of its identities of that kind does.

    The identity owners are read first (a unique-index lookup) so that both halves of the OR are
    plain indexed comparisons the planner can combine.
    """
    owners = list(
        session.scalars(
            select(CustomerIdentity.customer_id).where(
                CustomerIdentity.kind == kind, CustomerIdentity.value == value
            )
        )
    )
    return or_(column == value, Customer.id.in_(owners)) if owners else column == value


def _columns(row: Any, model: type[Any]) -> dict[str, Any]:
    return {name: getattr(row, name) for name in model.model_fields if hasattr(row, name)}


def _customer_or_redirect(session: Session, request: Request, customer_id: int) -> Customer | JSONResponse:
    """The live profile, a 308 towards the survivor for a merged id, or NotFound."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise NotFound(f"no customer {customer_id}", field="customer_id", customer_id=customer_id)
    if customer.merged_into_id is None:
        return customer
    survivor = erasure.survivor_of(session, customer)
    suffix = request.url.path.removeprefix(f"{PREFIX}/customers/{customer_id}")
    location = f"{PREFIX}/customers/{survivor.id}{suffix}"
    if request.url.query:
        location += f"?{request.url.query}"
    body = schemas.MergedCustomer(merged_into_id=survivor.id, location=location)
    return JSONResponse(body.model_dump(), status_code=308, headers={"Location": location})


@router.get(
    "/customers/{customer_id}",
    tags=["customers"],
    summary="A customer's profile, identities, consent and aggregates",
    response_model=schemas.CustomerDetail,
    responses={**_NOT_FOUND, **_MERGED},
)
def get_customer(customer_id: CustomerId, request: Request, runtime: AdminDep) -> Any:
    currency = store.current_profile(runtime.engine, runtime.settings).currency
    with reading(runtime.engine) as session:
        customer = _customer_or_redirect(session, request, customer_id)
        if isinstance(customer, JSONResponse):
            return customer
        return _customer_detail(session, customer, currency)


def _customer_detail(session: Session, customer: Customer, currency: str) -> schemas.CustomerDetail:
    cid = customer.id
    identities = list(
        session.scalars(
            select(CustomerIdentity).where(CustomerIdentity.customer_id == cid).order_by(CustomerIdentity.id)
        )
    )
    history = list(
        session.scalars(
            select(ConsentRecord)
            .where(ConsentRecord.customer_id == cid)
            .order_by(ConsentRecord.recorded_at, ConsentRecord.id)
        )
    )
    products = list(
        session.scalars(
            select(CustomerProduct)
            .where(CustomerProduct.customer_id == cid)
            .order_by(CustomerProduct.first_bought_at, CustomerProduct.product_id)
        )
    )
    collections = list(
        session.scalars(
            select(CustomerCollection)
            .where(CustomerCollection.customer_id == cid)
            .order_by(CustomerCollection.first_bought_at, CustomerCollection.collection)
        )
    )
    checkout_counts: dict[str, int] = {
        status: count
        for status, count in session.execute(
            select(Checkout.status, func.count())
            .where(Checkout.customer_id == cid, Checkout.status.in_(("open", "abandoned")))
            .group_by(Checkout.status)
        )
    }
    merged_from = erasure.person_ids(session, cid)[1:]
    return schemas.CustomerDetail(
        profile=schemas.CustomerProfile.model_validate(customer),
        identities=[schemas.Identity.model_validate(row) for row in identities],
        consent=schemas.ConsentState(
            email=customer.email_consent, sms=customer.sms_consent, push=customer.push_consent
        ),
        consent_history=[schemas.ConsentRecordPublic.model_validate(row) for row in history],
        aggregates=schemas.CustomerAggregates(
            orders_count=customer.orders_count,
            total_spent=customer.total_spent,
            total_refunded=customer.total_refunded,
            average_order_value=customer.average_order_value,
            currency=currency,
            first_order_at=customer.first_order_at,
            last_order_at=customer.last_order_at,
            last_product_viewed_id=customer.last_product_viewed_id,
            last_product_viewed_at=customer.last_product_viewed_at,
            last_cart_activity_at=customer.last_cart_activity_at,
            products_bought=[schemas.BoughtProduct.model_validate(row) for row in products],
            collections_bought=[schemas.BoughtCollection.model_validate(row) for row in collections],
            open_checkouts=checkout_counts.get("open", 0),
            abandoned_checkouts=checkout_counts.get("abandoned", 0),
        ),
        merged_from=merged_from,
    )


@router.get(
    "/customers/{customer_id}/events",
    tags=["customers"],
    summary="A customer's events, newest first",
    response_model=schemas.Page[schemas.EventPublic],
    responses={**_NOT_FOUND, **_MERGED, **_BAD_INPUT},
)
def customer_events(
    customer_id: CustomerId,
    request: Request,
    runtime: AdminDep,
    before: Annotated[datetime | None, Query(description="only events strictly before this time")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Any:
    statement = select(Event).where(Event.customer_id == customer_id)
    if before is not None:
        statement = statement.where(Event.timestamp < as_utc(before))
    if cursor is not None:
        at, after_id = decode_cursor(cursor, datetime, int)
        statement = statement.where(
            or_(Event.timestamp < at, (Event.timestamp == at) & (Event.id < after_id))
        )
    statement = statement.order_by(Event.timestamp.desc(), Event.id.desc()).limit(limit + 1)
    with reading(runtime.engine) as session:
        customer = _customer_or_redirect(session, request, customer_id)
        if isinstance(customer, JSONResponse):
            return customer
        rows = list(session.scalars(statement))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].timestamp.isoformat(), rows[-1].id)
    return schemas.Page(
        items=[schemas.EventPublic.model_validate(row) for row in rows], next_cursor=next_cursor
    )


@router.get(
    "/customers/{customer_id}/export",
    tags=["customers"],
    summary="Everything held about a customer, as one JSON document (GDPR access request)",
    response_model=dict[str, Any],
    responses={**_NOT_FOUND, **_MERGED},
)
def export_customer(customer_id: CustomerId, request: Request, runtime: AdminDep) -> Any:
    exported_at = runtime.clock.now()
    with reading(runtime.engine) as session:
        customer = _customer_or_redirect(session, request, customer_id)
        if isinstance(customer, JSONResponse):
            return customer
        document = export.export_customer(session, customer.id)
    document["exported_at"] = exported_at.isoformat()
    return JSONResponse(
        document,
        headers={"Content-Disposition": f'attachment; filename="winback-customer-{customer_id}.json"'},
    )


@router.delete(
    "/customers/{customer_id}",
    tags=["customers"],
    summary="Erase a customer's personal data (GDPR erasure); anonymous aggregates stay",
    response_model=schemas.ErasureResult,
    responses=_NOT_FOUND,
)
def erase_customer(customer_id: CustomerId, runtime: AdminDep) -> schemas.ErasureResult:
    with transaction(runtime.engine) as session:
        summary = erasure.erase_customer(session, customer_id, runtime.clock.now())
    return schemas.ErasureResult(**dataclasses.asdict(summary))


# --- commerce -----------------------------------------------------------------------------------


@router.get(
    "/checkouts",
    tags=["commerce"],
    summary="List carts and checkouts, newest first",
    response_model=schemas.Page[schemas.CheckoutPublic],
    responses=_BAD_INPUT,
)
def list_checkouts(
    runtime: AdminDep,
    status: Annotated[
        Literal["open", "abandoned", "recovered", "completed", "checked_out"] | None, Query()
    ] = None,
    kind: Annotated[Literal["cart", "checkout"] | None, Query()] = None,
    customer_id: OptionalCustomerId = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> schemas.Page[schemas.CheckoutPublic]:
    statement = select(Checkout)
    if status is not None:
        statement = statement.where(Checkout.status == status)
    if kind is not None:
        statement = statement.where(Checkout.kind == kind)
    if customer_id is not None:
        statement = statement.where(Checkout.customer_id == customer_id)
    with reading(runtime.engine) as session:
        rows, next_cursor = page_by_id(session, statement, Checkout.id, limit, cursor, newest_first=True)
    return schemas.Page(
        items=[schemas.CheckoutPublic.model_validate(row) for row in rows], next_cursor=next_cursor
    )


@router.get(
    "/orders",
    tags=["commerce"],
    summary="List orders with their lines, newest first",
    response_model=schemas.Page[schemas.OrderPublic],
    responses=_BAD_INPUT,
)
def list_orders(
    runtime: AdminDep,
    customer_id: OptionalCustomerId = None,
    status: Annotated[
        Literal["placed", "paid", "cancelled", "refunded", "partially_refunded"] | None, Query()
    ] = None,
    since: Annotated[datetime | None, Query(description="only orders placed at or after this time")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> schemas.Page[schemas.OrderPublic]:
    statement = select(Order)
    if customer_id is not None:
        statement = statement.where(Order.customer_id == customer_id)
    if status is not None:
        statement = statement.where(Order.status == status)
    if since is not None:
        statement = statement.where(Order.placed_at >= as_utc(since))
    with reading(runtime.engine) as session:
        rows, next_cursor = page_by_id(session, statement, Order.id, limit, cursor, newest_first=True)
        lines: dict[int, list[OrderLine]] = {row.id: [] for row in rows}
        if rows:
            for line in session.scalars(
                select(OrderLine).where(OrderLine.order_pk.in_(lines)).order_by(OrderLine.id)
            ):
                lines[line.order_pk].append(line)
    items = [
        schemas.OrderPublic.model_validate(
            {
                **_columns(row, schemas.OrderPublic),
                "lines": [schemas.OrderLinePublic.model_validate(line) for line in lines[row.id]],
            }
        )
        for row in rows
    ]
    return schemas.Page(items=items, next_cursor=next_cursor)
