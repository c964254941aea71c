"""Every change of a message's state: the current columns on `messages`, one `message_events` row,
and — for what shoppers do with messages — an event in the stream that segments and flows read.

`Message Sent`, `Message Delivered`, `Message Opened`, `Message Clicked`, `Message Failed`,
`Message Unsubscribed` and `Message Converted` carry `message_id`, `flow_id` (a string, as
segment rules compare it), `node_id`, `channel` (`sms` for MMS too, with `message_type: mms`).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Final

from sqlalchemy.orm import Session

from winback.db.models import Customer, Message, MessageEvent
from winback.ingest import store as event_store
from winback.ingest.segment import derived_event
from winback.messaging.channels.base import family

# Message status → the stream event shoppers' segments and flows see (None: not a stream event).
STREAM_EVENTS: Final[dict[str, str]] = {
    "sent": "Message Sent",
    "delivered": "Message Delivered",
    "opened": "Message Opened",
    "clicked": "Message Clicked",
    "failed": "Message Failed",
    "unsubscribed": "Message Unsubscribed",
    "converted": "Message Converted",
}

# Statuses that move the message's own `status` column (the others are engagement on top of it).
DELIVERY_STATUSES: Final = frozenset(
    {"queued", "deferred", "retrying", "sending", "sent", "delivered", "failed", "skipped", "unknown"}
)

CUSTOMER_CHANNELS: Final = frozenset({"sms", "mms", "email", "push"})


def record(
    session: Session,
    message: Message,
    status: str,
    now: datetime,
    *,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    stream: bool = True,
) -> MessageEvent:
    """Record one change of state of `message` in the caller's transaction."""
    details = details or {}
    if status in DELIVERY_STATUSES:
        message.status = status
        message.status_reason = reason
    if status == "sent" and message.sent_at is None:
        message.sent_at = now
    elif status == "delivered" and message.delivered_at is None:
        message.delivered_at = now
    elif status == "opened" and message.opened_at is None:
        message.opened_at = now
    elif status == "clicked" and message.clicked_at is None:
        message.clicked_at = now
    message.updated_at = now
    row = MessageEvent(message_id=message.id, status=status, reason=reason, details=details, at=now)
    session.add(row)
    event_name = STREAM_EVENTS.get(status)
    if stream and event_name and message.customer_id is not None and message.channel in CUSTOMER_CHANNELS:
        _emit(session, message, event_name, status, now, reason, details)
    return row


def stream_message_id(message_id: int, status: str, details: dict[str, Any]) -> str:
    """The stream event's id: one per message and state — per order for a conversion, per link
    for a click — so an event is never streamed twice for one change."""
    suffix = ""
    if status == "converted" and details.get("order_id"):
        suffix = f":{details['order_id']}"
    elif status == "clicked" and details.get("url"):
        suffix = ":" + hashlib.blake2b(str(details["url"]).encode(), digest_size=8).hexdigest()
    return f"derived:message:{message_id}:{status}{suffix}"


def _emit(
    session: Session,
    message: Message,
    event_name: str,
    status: str,
    now: datetime,
    reason: str | None,
    details: dict[str, Any],
) -> None:
    customer = session.get(Customer, message.customer_id)
    if customer is None or customer.erased_at is not None:
        return
    properties: dict[str, Any] = {
        "message_id": str(message.id),
        "channel": family(message.channel),
        "flow_id": str(message.flow_id) if message.flow_id is not None else None,
        "node_id": message.node_id,
        "transactional": message.transactional,
    }
    if message.channel == "mms":
        properties["message_type"] = "mms"
    if reason:
        properties["reason"] = reason
    properties.update({k: v for k, v in details.items() if k in ("url", "order_id", "revenue", "currency")})
    event_store.append_events(
        session.connection(),
        [
            derived_event(
                message_id=stream_message_id(message.id, status, details),
                customer_id=customer.id,
                user_id=customer.user_id,
                at=now,
                event=event_name,
                properties=properties,
            )
        ],
    )
