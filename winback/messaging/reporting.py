"""What messages achieved, per flow and per node: how many were queued, sent, delivered, failed,
skipped or deferred, how many people opened and clicked, and the orders and revenue credited to
them (messaging.attribution). Counted from `messages` and `message_events`, the rows every state
change writes, so the figures agree with `GET /api/v1/messages/{id}`.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from winback.db.models import Message, MessageEvent

STATUS_COLUMNS = (
    "queued",
    "deferred",
    "retrying",
    "sending",
    "sent",
    "delivered",
    "failed",
    "skipped",
    "unknown",
)


def flow_report(
    session: Session,
    flow_id: int | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """Totals and per-node figures for one flow's messages (all flows when `flow_id` is None)."""
    where = []
    if flow_id is not None:
        where.append(Message.flow_id == flow_id)
    if since is not None:
        where.append(Message.created_at >= since)
    if until is not None:
        where.append(Message.created_at < until)
    nodes: dict[tuple[Any, Any], dict[str, Any]] = defaultdict(_empty)
    for flow, node, channel, status, count in session.execute(
        select(Message.flow_id, Message.node_id, Message.channel, Message.status, func.count())
        .where(*where)
        .group_by(Message.flow_id, Message.node_id, Message.channel, Message.status)
    ):
        row = nodes[(flow, node)]
        row["channels"].add(channel)
        row["messages"] += count
        row["status"][status] = row["status"].get(status, 0) + count
    engagement = (
        select(
            Message.flow_id,
            Message.node_id,
            func.count(Message.sent_at).label("sent"),
            func.count(Message.delivered_at).label("delivered"),
            func.count(Message.opened_at).label("opened"),
            func.count(Message.clicked_at).label("clicked"),
        )
        .where(*where)
        .group_by(Message.flow_id, Message.node_id)
    )
    for flow, node, sent, delivered, opened, clicked in session.execute(engagement):
        row = nodes[(flow, node)]
        row.update(sent=sent, delivered=delivered, opened=opened, clicked=clicked)
    conversions = (
        select(Message.flow_id, Message.node_id, MessageEvent.details)
        .join(MessageEvent, MessageEvent.message_id == Message.id)
        .where(MessageEvent.status == "converted", *where)
    )
    for flow, node, details in session.execute(conversions):
        row = nodes[(flow, node)]
        row["converted"] += 1
        currency = str((details or {}).get("currency") or "?")
        row["revenue"][currency] = row["revenue"].get(currency, Decimal(0)) + Decimal(
            str((details or {}).get("revenue") or 0)
        )
    per_node = [
        {"flow_id": flow, "node_id": node, **_finish(row)}
        for (flow, node), row in sorted(nodes.items(), key=lambda item: (item[0][0] or 0, item[0][1] or ""))
    ]
    totals = _empty()
    for (_, _), row in nodes.items():
        for key in ("messages", "sent", "delivered", "opened", "clicked", "converted"):
            totals[key] += row[key]
        for currency, amount in row["revenue"].items():
            totals["revenue"][currency] = totals["revenue"].get(currency, Decimal(0)) + amount
        for status, count in row["status"].items():
            totals["status"][status] = totals["status"].get(status, 0) + count
        totals["channels"] |= row["channels"]
    return {"flow_id": flow_id, "totals": _finish(totals), "nodes": per_node}


def _empty() -> dict[str, Any]:
    return {
        "messages": 0,
        "sent": 0,
        "delivered": 0,
        "opened": 0,
        "clicked": 0,
        "converted": 0,
        "revenue": {},  # currency → amount: orders in different currencies are not added up
        "status": {},
        "channels": set(),
    }


def _finish(row: dict[str, Any]) -> dict[str, Any]:
    sent = row["sent"] or 0
    return {
        **row,
        "channels": sorted(row["channels"]),
        "revenue": {currency: str(amount) for currency, amount in sorted(row["revenue"].items())},
        "rates": {
            "delivered": _rate(row["delivered"], sent),
            "opened": _rate(row["opened"], row["delivered"] or sent),
            "clicked": _rate(row["clicked"], row["delivered"] or sent),
            "converted": _rate(row["converted"], row["delivered"] or sent),
        },
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
