"""Wire shapes of the admin API: one pydantic model per shape (public, create, update).

Money leaves as a fixed-point string ("12.50") beside its currency, never as a float; timestamps
are ISO-8601 with their UTC offset. Inputs reject unknown fields.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

T = TypeVar("T")

MoneyStr = Annotated[Decimal, PlainSerializer(lambda amount: f"{amount:.2f}", return_type=str)]


class Public(BaseModel):
    """A response shape read from ORM rows."""

    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    """One page of a list, newest first unless asked otherwise; pass `next_cursor` as `cursor`."""

    items: list[T]
    next_cursor: str | None = Field(None, description="opaque; null on the last page")


# --- store --------------------------------------------------------------------------------------


class StoreProfileUpdate(BaseModel):
    """A partial change to the store profile: only the fields sent are changed."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    url: str | None = None
    timezone: str | None = Field(None, description="IANA name, e.g. 'Europe/Berlin'")
    currency: str | None = Field(None, description="ISO 4217 code, e.g. 'EUR'")
    locale: str | None = None
    support_email: str | None = None
    support_phone: str | None = None


# --- customers ----------------------------------------------------------------------------------


class CustomerSummary(Public):
    id: int
    user_id: str | None
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    orders_count: int
    total_spent: MoneyStr
    currency: str = Field(description="the store currency, in which aggregates are kept")
    first_seen_at: datetime
    last_seen_at: datetime
    created_at: datetime
    merged_into_id: int | None
    erased_at: datetime | None


class Identity(Public):
    kind: str = Field(description="user_id | anonymous_id | email | phone")
    value: str
    customer_id: int
    created_at: datetime


class ConsentState(BaseModel):
    """Current consent per channel: subscribed | unsubscribed | null (never asked)."""

    email: str | None
    sms: str | None
    push: str | None


class ConsentRecordPublic(Public):
    id: int
    channel: str
    status: str
    source: str
    evidence: dict[str, Any]
    event_id: int | None
    recorded_at: datetime


class BoughtProduct(Public):
    product_id: str
    quantity: int
    first_bought_at: datetime
    last_bought_at: datetime


class BoughtCollection(Public):
    collection: str
    first_bought_at: datetime
    last_bought_at: datetime


class CustomerAggregates(BaseModel):
    orders_count: int
    total_spent: MoneyStr = Field(description="net of refunds; cancelled orders excluded")
    total_refunded: MoneyStr
    average_order_value: MoneyStr | None
    currency: str
    first_order_at: datetime | None
    last_order_at: datetime | None
    last_product_viewed_id: str | None
    last_product_viewed_at: datetime | None
    last_cart_activity_at: datetime | None
    products_bought: list[BoughtProduct]
    collections_bought: list[BoughtCollection]
    open_checkouts: int
    abandoned_checkouts: int


class CustomerProfile(Public):
    id: int
    user_id: str | None
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    birthday: date | None
    gender: str | None
    locale: str | None
    timezone: str | None
    address_line1: str | None
    address_line2: str | None
    city: str | None
    region: str | None
    zip: str | None
    country: str | None
    tags: list[str]
    properties: dict[str, Any]
    first_seen_at: datetime
    last_seen_at: datetime
    created_at: datetime
    updated_at: datetime
    erased_at: datetime | None


class CustomerDetail(BaseModel):
    profile: CustomerProfile
    identities: list[Identity]
    consent: ConsentState
    consent_history: list[ConsentRecordPublic] = Field(description="oldest first")
    aggregates: CustomerAggregates
    merged_from: list[int] = Field(description="ids of profiles merged into this one (tombstones)")


class MergedCustomer(BaseModel):
    """Answer for a merged (tombstone) id: the profile now lives at `location`."""

    merged_into_id: int
    location: str


class EventPublic(Public):
    id: int
    message_id: str
    source: str
    type: str
    event: str | None
    name: str | None
    category: str | None
    user_id: str | None
    anonymous_id: str | None
    properties: dict[str, Any]
    traits: dict[str, Any]
    context: dict[str, Any]
    timestamp: datetime
    received_at: datetime
    processed_at: datetime | None


class ErasureResult(BaseModel):
    """What `DELETE /customers/{id}` erased (row counts changed; a repeat reports zeros)."""

    customer_id: int
    customer_ids: list[int] = Field(description="the survivor first, then profiles merged into it")
    erased_at: datetime
    already_erased: bool
    profiles_erased: int
    identities_deleted: int
    events_scrubbed: int
    checkouts_scrubbed: int
    orders_scrubbed: int
    consent_records_scrubbed: int
    intent_sessions_deleted: int
    list_memberships_deleted: int
    flow_runs_scrubbed: int = Field(description="runs under way ended; trigger snapshots emptied")
    outbox_entries_scrubbed: int = Field(description="queued messages skipped; contents removed")


# --- commerce -----------------------------------------------------------------------------------


class CheckoutPublic(Public):
    id: int
    kind: str = Field(description="cart | checkout")
    external_id: str
    cart_id: str | None
    customer_id: int | None
    status: str = Field(description="open | abandoned | recovered | completed | checked_out")
    value: MoneyStr
    currency: str | None
    items: list[dict[str, Any]]
    coupon: str | None
    recovery_url: str | None
    email: str | None
    phone: str | None
    step: int | None
    order_id: str | None
    created_at: datetime
    updated_at: datetime
    last_activity_at: datetime
    abandoned_at: datetime | None
    completed_at: datetime | None


class OrderLinePublic(Public):
    product_id: str | None
    variant_id: str | None
    sku: str | None
    name: str | None
    category: str | None
    price: MoneyStr | None
    quantity: int


class OrderPublic(Public):
    id: int
    order_id: str
    customer_id: int | None
    checkout_id: str | None
    cart_id: str | None
    status: str = Field(description="placed | paid | cancelled | refunded | partially_refunded")
    total: MoneyStr
    subtotal: MoneyStr | None
    revenue: MoneyStr | None
    shipping: MoneyStr | None
    tax: MoneyStr | None
    discount: MoneyStr | None
    refunded_total: MoneyStr
    currency: str | None
    coupons: list[str]
    shipping_country: str | None
    shipping_region: str | None
    shipping_city: str | None
    placed_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None
    lines: list[OrderLinePublic]


# --- errors -------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str = Field(description="stable: invalid_input | unauthorized | forbidden | not_found | ...")
    message: str
    field: str | None = Field(None, description="the parameter or body field at fault, when one is")


class ErrorResponse(BaseModel):
    """Every error answers with this body."""

    error: ErrorDetail
