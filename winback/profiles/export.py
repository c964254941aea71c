"""Right of access (GDPR art. 15, Shopify customers/data_request): everything held about a person.

The export is one JSON-ready document (dates ISO-8601, money as strings with their currency). A
person is the survivor profile plus every tombstone merged into it; asking with a tombstone's id
exports the whole person. Rows are read in id order, so two exports of unchanged data are equal.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from winback.db.models import (
    Checkout,
    ConsentRecord,
    Customer,
    CustomerCollection,
    CustomerIdentity,
    CustomerProduct,
    Event,
    IntentSession,
    Order,
    OrderLine,
    Refund,
)
from winback.kernel.errors import NotFound
from winback.profiles import traits
from winback.profiles.erasure import person_ids, survivor_of

EXPORT_VERSION = 1

PROFILE_FIELDS = (
    "id",
    "user_id",
    *traits.PROFILE_COLUMNS,
    "tags",
    "properties",
    "email_consent",
    "sms_consent",
    "push_consent",
    "orders_count",
    "total_spent",
    "total_refunded",
    "average_order_value",
    "first_order_at",
    "last_order_at",
    "last_product_viewed_id",
    "last_product_viewed_at",
    "last_cart_activity_at",
    "first_seen_at",
    "last_seen_at",
    "created_at",
    "updated_at",
    "merged_into_id",
    "erased_at",
)


def jsonable(value: Any) -> Any:
    """Dates as ISO-8601, money as a fixed-point string; containers walked."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


def row_dict(row: Any, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The mapped columns of an ORM row (or just `fields`), JSON-ready."""
    names = fields or tuple(column.key for column in row.__mapper__.column_attrs)
    return {name: jsonable(getattr(row, name)) for name in names}


def export_customer(session: Session, customer_id: int) -> dict[str, Any]:
    """Everything winback holds about the person behind `customer_id`. Raises NotFound."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise NotFound(f"no customer {customer_id}", field="customer_id", customer_id=customer_id)
    survivor = survivor_of(session, customer)
    ids = person_ids(session, survivor.id)
    profiles = {row.id: row for row in session.scalars(select(Customer).where(Customer.id.in_(ids)))}

    def rows(model: Any, *order: Any, where: Any = None) -> list[Any]:
        condition = model.customer_id.in_(ids) if where is None else where
        return list(session.scalars(select(model).where(condition).order_by(*order)))

    orders = rows(Order, Order.placed_at, Order.id)
    order_pks = [order.id for order in orders]
    lines_by_order: dict[int, list[dict[str, Any]]] = {pk: [] for pk in order_pks}
    if order_pks:
        for line in session.scalars(
            select(OrderLine).where(OrderLine.order_pk.in_(order_pks)).order_by(OrderLine.id)
        ):
            lines_by_order[line.order_pk].append(row_dict(line))
    refund_matches = [Refund.customer_id.in_(ids)]
    if order_pks:
        refund_matches.append(Refund.order_pk.in_(order_pks))
    refunds = rows(Refund, Refund.refunded_at, Refund.id, where=or_(*refund_matches))

    emails = {p.email for p in profiles.values() if p.email}
    phones = {p.phone for p in profiles.values() if p.phone}
    checkout_matches = [Checkout.customer_id.in_(ids)]
    if emails:
        checkout_matches.append(Checkout.customer_id.is_(None) & Checkout.email.in_(emails))
    if phones:
        checkout_matches.append(Checkout.customer_id.is_(None) & Checkout.phone.in_(phones))

    return {
        "export_version": EXPORT_VERSION,
        "customer_id": survivor.id,
        "profile": row_dict(survivor, PROFILE_FIELDS),
        "merged_profiles": [row_dict(profiles[i], PROFILE_FIELDS) for i in ids[1:]],
        "identities": [
            row_dict(identity, ("kind", "value", "customer_id", "created_at"))
            for identity in rows(CustomerIdentity, CustomerIdentity.id)
        ],
        "consent_records": [
            row_dict(record) for record in rows(ConsentRecord, ConsentRecord.recorded_at, ConsentRecord.id)
        ],
        "events": [row_dict(event) for event in rows(Event, Event.timestamp, Event.id)],
        "orders": [{**row_dict(order), "lines": lines_by_order[order.id]} for order in orders],
        "refunds": [row_dict(refund) for refund in refunds],
        "checkouts": [
            row_dict(checkout)
            for checkout in rows(Checkout, Checkout.created_at, Checkout.id, where=or_(*checkout_matches))
        ],
        "intent_sessions": [
            row_dict(item) for item in rows(IntentSession, IntentSession.started_at, IntentSession.id)
        ],
        "products_bought": [
            row_dict(item)
            for item in rows(CustomerProduct, CustomerProduct.first_bought_at, CustomerProduct.product_id)
        ],
        "collections_bought": [
            row_dict(item)
            for item in rows(
                CustomerCollection, CustomerCollection.first_bought_at, CustomerCollection.collection
            )
        ],
    }
