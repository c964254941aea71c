"""Loading the facts the in-memory evaluator works on, for many customers at once.

A handful of set-based queries per chunk of customer ids — profiles, then only what the rule tree
needs (`evaluator.needs`): the named events since the earliest moment any rule looks at, counted
orders (with their lines and the catalog's collections), abandoned checkouts, and memberships of the
referenced segments and lists. A customer with years of browsing history costs no more than the
events the rule can see.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from winback.db import expressions
from winback.db.models import (
    Checkout,
    Customer,
    Event,
    ListMembership,
    Order,
    OrderLine,
    Product,
    SegmentMembership,
)
from winback.segments.evaluator import (
    CANCELLED,
    CheckoutFact,
    CustomerFacts,
    EvalContext,
    EventFact,
    FactNeeds,
    LineFact,
    OrderFact,
)

CHUNK_SIZE = 500  # customer ids per query (well inside every driver's parameter limit)


def load_facts(
    session: Session, customer_ids: Iterable[int], needs: FactNeeds, ctx: EvalContext
) -> dict[int, CustomerFacts]:
    """Facts for each of `customer_ids` that exists, limited to what `needs` asks for.

    `ctx` is the evaluation context the needs were computed for (kept in the signature so callers
    load and evaluate at the same moment)."""
    del ctx  # the needs already carry every time bound
    facts: dict[int, CustomerFacts] = {}
    for chunk in _chunks(sorted(set(customer_ids)), CHUNK_SIZE):
        facts.update(_load_chunk(session, chunk, needs))
    return facts


def _chunks(ids: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _load_chunk(session: Session, ids: Sequence[int], needs: FactNeeds) -> dict[int, CustomerFacts]:
    profiles = {
        row["id"]: dict(row)
        for row in session.execute(
            select(Customer.__table__).where(expressions.one_of(Customer.id, ids))
        ).mappings()
    }
    if not profiles:
        return {}
    found = list(profiles)
    orders = _orders(session, found, needs) if needs.orders else {}
    events = _events(session, found, needs) if needs.events else {}
    checkouts = _checkouts(session, found) if needs.checkouts else {}
    segment_ids = (
        _memberships(
            session, found, SegmentMembership.segment_id, SegmentMembership.customer_id, needs.segment_ids
        )
        if needs.segment_ids
        else {}
    )
    list_ids = (
        _memberships(session, found, ListMembership.list_id, ListMembership.customer_id, needs.list_ids)
        if needs.list_ids
        else {}
    )
    return {
        customer_id: CustomerFacts(
            profile=profile,
            orders=tuple(orders.get(customer_id, ())),
            events=tuple(events.get(customer_id, ())),
            checkouts=tuple(checkouts.get(customer_id, ())),
            segment_ids=frozenset(segment_ids.get(customer_id, ())),
            list_ids=frozenset(list_ids.get(customer_id, ())),
        )
        for customer_id, profile in profiles.items()
    }


def _counted_orders_filter(ids: Sequence[int], since: datetime | None) -> list[ColumnElement[bool]]:
    conditions = [expressions.one_of(Order.customer_id, ids), Order.status != CANCELLED]
    if since is not None:
        conditions.append(Order.placed_at >= since)
    return conditions


def _orders(session: Session, ids: Sequence[int], needs: FactNeeds) -> dict[int, list[OrderFact]]:
    conditions = _counted_orders_filter(ids, needs.orders_since)
    lines: dict[int, list[LineFact]] = defaultdict(list)
    if needs.order_lines:
        line_rows = session.execute(
            select(
                OrderLine.order_pk,
                OrderLine.product_id,
                OrderLine.variant_id,
                OrderLine.category,
                Product.collections,
            )
            .join(Order, Order.id == OrderLine.order_pk)
            .outerjoin(Product, Product.product_id == OrderLine.product_id)
            .where(*conditions)
            .order_by(OrderLine.id)
        )
        for order_pk, product_id, variant_id, category, collections in line_rows:
            lines[order_pk].append(
                LineFact(
                    product_id=product_id,
                    variant_id=variant_id,
                    category=category,
                    collections=tuple(str(c) for c in collections or ()),
                )
            )
    rows = session.execute(
        select(
            Order.id,
            Order.customer_id,
            Order.order_id,
            Order.status,
            Order.total,
            Order.refunded_total,
            Order.discount,
            Order.coupons,
            Order.currency,
            Order.shipping_country,
            Order.shipping_region,
            Order.shipping_city,
            Order.placed_at,
        )
        .where(*conditions)
        .order_by(Order.placed_at, Order.id)
    ).mappings()
    orders: dict[int, list[OrderFact]] = defaultdict(list)
    for row in rows:
        orders[row["customer_id"]].append(
            OrderFact(
                order_id=row["order_id"],
                status=row["status"],
                total=_money(row["total"]),
                refunded_total=_money(row["refunded_total"]),
                placed_at=row["placed_at"],
                discount=None if row["discount"] is None else _money(row["discount"]),
                coupons=tuple(str(c) for c in row["coupons"] or ()),
                currency=row["currency"],
                shipping_country=row["shipping_country"],
                shipping_region=row["shipping_region"],
                shipping_city=row["shipping_city"],
                lines=tuple(lines.get(row["id"], ())),
            )
        )
    return orders


def _events(session: Session, ids: Sequence[int], needs: FactNeeds) -> dict[int, list[EventFact]]:
    # One condition per distinct time bound: (event IN names AND timestamp >= since) OR ...
    names_by_since: dict[datetime | None, list[str]] = defaultdict(list)
    for name, since in needs.events.items():
        names_by_since[since].append(name)
    wanted: list[ColumnElement[bool]] = []
    for since, names in names_by_since.items():
        by_name = Event.event.in_(sorted(names))
        wanted.append(by_name if since is None else and_(by_name, Event.timestamp >= since))
    rows = session.execute(
        select(Event.customer_id, Event.event, Event.timestamp, Event.properties)
        .where(expressions.one_of(Event.customer_id, ids), or_(*wanted))
        .order_by(Event.customer_id, Event.timestamp, Event.id)
    )
    events: dict[int, list[EventFact]] = defaultdict(list)
    for customer_id, name, timestamp, properties in rows:
        events[customer_id].append(EventFact(event=name, timestamp=timestamp, properties=properties or {}))
    return events


def _checkouts(session: Session, ids: Sequence[int]) -> dict[int, list[CheckoutFact]]:
    rows = session.execute(
        select(Checkout.customer_id, Checkout.kind, Checkout.abandoned_at, Checkout.value).where(
            expressions.one_of(Checkout.customer_id, ids),
            Checkout.kind == "checkout",
            Checkout.abandoned_at.is_not(None),
        )
    )
    checkouts: dict[int, list[CheckoutFact]] = defaultdict(list)
    for customer_id, kind, abandoned_at, value in rows:
        assert customer_id is not None  # selected by customer id
        checkouts[customer_id].append(CheckoutFact(kind=kind, abandoned_at=abandoned_at, value=_money(value)))
    return checkouts


def _memberships(
    session: Session, ids: Sequence[int], group_column: Any, customer_column: Any, wanted: frozenset[int]
) -> dict[int, set[int]]:
    rows = session.execute(
        select(customer_column, group_column).where(
            expressions.one_of(customer_column, ids), group_column.in_(sorted(wanted))
        )
    )
    found: dict[int, set[int]] = defaultdict(set)
    for customer_id, group_id in rows:
        found[customer_id].add(group_id)
    return found


def _money(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))
