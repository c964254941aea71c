"""Orders credited to the messages that led to them (last touch, within the attribution window).

When the event processor applies an `Order Completed`, the most recent message the customer
clicked within `attribution_window_days` before the order gets the conversion; failing a click, the
most recent one they opened; failing that, the most recent one delivered to them (SMS and push are
rarely "opened" in any way winback can see). The conversion is a `converted` message event with
the order id and revenue — and a `Message Converted` event in the stream — recorded once per order.
A discount code the order used is marked used.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from winback.db.models import Message, MessageEvent, Order
from winback.messaging import records

CREDITABLE = ("sent", "delivered", "unknown")


def on_order(
    session: Session,
    *,
    customer_id: int,
    properties: Mapping[str, Any],
    ordered_at: datetime,
    window_days: int,
    now: datetime,
) -> Message | None:
    """Credit one applied `Order Completed`; returns the message credited, if any."""
    order_id = str(properties.get("order_id") or "") or None
    _mark_codes_used(session, properties, order_id, ordered_at)
    if order_id is None:
        return None
    since = ordered_at - timedelta(days=window_days)
    candidates = list(
        session.scalars(
            select(Message).where(
                Message.customer_id == customer_id,
                Message.sent_at.is_not(None),
                Message.sent_at >= since,
                Message.sent_at <= ordered_at,
                Message.status.in_(CREDITABLE),
                Message.channel.in_(("sms", "mms", "email", "push")),
            )
        )
    )
    if not candidates:
        return None
    if _already_credited(session, [m.id for m in candidates], order_id):
        return None
    clicked = [m for m in candidates if m.clicked_at is not None and m.clicked_at <= ordered_at]
    opened = [m for m in candidates if m.opened_at is not None and m.opened_at <= ordered_at]
    if clicked:
        touch, message = "click", max(clicked, key=lambda m: (m.clicked_at, m.id))
    elif opened:
        touch, message = "open", max(opened, key=lambda m: (m.opened_at, m.id))
    else:
        touch, message = "delivery", max(candidates, key=lambda m: (m.sent_at, m.id))
    order = session.scalars(select(Order).where(Order.order_id == order_id)).first()
    revenue = order.total if order is not None else Decimal(str(properties.get("total") or 0))
    currency = (order.currency if order is not None else None) or properties.get("currency")
    records.record(
        session,
        message,
        "converted",
        now,
        reason=f"order {order_id} within {window_days} days of a {touch}",
        details={"order_id": order_id, "revenue": str(revenue), "currency": currency, "touch": touch},
    )
    return message


def _already_credited(session: Session, message_ids: list[int], order_id: str) -> bool:
    rows = session.scalars(
        select(MessageEvent.details).where(
            MessageEvent.message_id.in_(message_ids), MessageEvent.status == "converted"
        )
    )
    return any((details or {}).get("order_id") == order_id for details in rows)


def _mark_codes_used(
    session: Session, properties: Mapping[str, Any], order_id: str | None, at: datetime
) -> None:
    from winback.messaging import discounts

    codes = {str(properties.get(key)).strip() for key in ("coupon", "discount_code") if properties.get(key)}
    for code in codes:
        discounts.mark_used(session, code, order_id, at)
