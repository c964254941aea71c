"""Merging one profile into another: every event, order, checkout, consent record and identity
moves to the survivor, aggregates are combined arithmetically, and the absorbed profile stays as
a tombstone (`merged_into_id`) so old ids still lead somewhere."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from winback.db.models import (
    Checkout,
    ConsentRecord,
    Customer,
    CustomerCollection,
    CustomerIdentity,
    CustomerProduct,
    DiscountCode,
    Event,
    FlowRun,
    IntentSession,
    Message,
    Order,
    OrderLine,
    OutboxEntry,
    PushSubscription,
    Refund,
)
from winback.flows.engine import active_key
from winback.processing.aggregates import combine_profiles
from winback.segments import membership

MOVED_TABLES = (
    Event, Order, OrderLine, Refund, Checkout, ConsentRecord, CustomerIdentity, IntentSession,
    # what winback did for the person: their messages (attribution, caps and reports count them per
    # profile), queued commands, discount codes and browsers' push subscriptions
    Message, OutboxEntry, DiscountCode, PushSubscription,
)  # fmt: skip
MERGED_RUN_EXIT = "merged into another profile's run"


def merge_into(session: Session, absorbed: Customer, survivor: Customer, now: datetime) -> None:
    """Fold `absorbed` into `survivor` inside the caller's transaction (both must have ids)."""
    assert absorbed.id is not None and survivor.id is not None and absorbed.id != survivor.id
    for model in MOVED_TABLES:
        session.execute(
            update(model).where(model.customer_id == absorbed.id).values(customer_id=survivor.id),
            execution_options={"synchronize_session": False},
        )
    _merge_bought(session, CustomerProduct, CustomerProduct.product_id, absorbed.id, survivor.id)
    _merge_bought(session, CustomerCollection, CustomerCollection.collection, absorbed.id, survivor.id)
    membership.move_list_memberships(session, absorbed.id, survivor.id)
    _move_flow_runs(session, absorbed.id, survivor.id, now)
    session.execute(
        update(Customer).where(Customer.merged_into_id == absorbed.id).values(merged_into_id=survivor.id),
        execution_options={"synchronize_session": False},
    )
    combine_profiles(survivor, absorbed)
    _settle_consent(session, survivor)
    absorbed.merged_into_id = survivor.id
    absorbed.updated_at = now
    survivor.updated_at = now


def _move_flow_runs(session: Session, absorbed_id: int, survivor_id: int, now: datetime) -> None:
    """The absorbed profile's flow runs go on as the survivor's, so they see the survivor's events
    from now on (an order placed after logging in ends the cart reminders the guest's checkout
    started). A run under way whose flow (and checkout or order) the survivor is already in ends
    instead: still one active run per flow and customer."""
    finished = (
        update(FlowRun)
        .where(FlowRun.customer_id == absorbed_id, FlowRun.active_key.is_(None))
        .values(customer_id=survivor_id)
    )
    session.execute(finished, execution_options={"synchronize_session": False})
    under_way = session.execute(
        select(FlowRun.id, FlowRun.flow_id, FlowRun.active_key).where(
            FlowRun.customer_id == absorbed_id, FlowRun.active_key.is_not(None)
        )
    ).all()
    if not under_way:
        return
    moved: dict[int, str] = {}
    for run_id, flow_id, key in under_way:
        prefix = f"{flow_id}:{absorbed_id}"
        scope = key[len(prefix) + 1 :] if key.startswith(prefix + ":") else None
        moved[run_id] = active_key(flow_id, survivor_id, scope)
    taken = set(
        session.scalars(select(FlowRun.active_key).where(FlowRun.active_key.in_(list(moved.values()))))
    )
    for run_id, key in moved.items():
        values: dict[str, object]
        if key in taken:
            values = {"status": "exited", "exit_reason": MERGED_RUN_EXIT, "active_key": None, "due_at": None,
                      "wake_at": None, "finished_at": now}  # fmt: skip
        else:
            values = {"active_key": key}
        session.execute(
            update(FlowRun)
            .where(FlowRun.id == run_id)
            .values(customer_id=survivor_id, updated_at=now, **values),
            execution_options={"synchronize_session": False},
        )


def _merge_bought(session: Session, model: type, key_column, absorbed_id: int, survivor_id: int) -> None:  # type: ignore[no-untyped-def]
    """Combine 'ever bought' rows: same key → first/last dates (and quantity) combined."""
    theirs = {
        getattr(row, key_column.key): row
        for row in session.scalars(select(model).where(model.customer_id == absorbed_id))
    }
    if not theirs:
        return
    ours = {
        getattr(row, key_column.key): row
        for row in session.scalars(
            select(model).where(model.customer_id == survivor_id, key_column.in_(list(theirs)))
        )
    }
    for key, row in theirs.items():
        mine = ours.get(key)
        if mine is None:
            session.add(
                model(
                    customer_id=survivor_id,
                    **{key_column.key: key},
                    first_bought_at=row.first_bought_at,
                    last_bought_at=row.last_bought_at,
                    **({"quantity": row.quantity} if hasattr(row, "quantity") else {}),
                )
            )
        else:
            mine.first_bought_at = min(mine.first_bought_at, row.first_bought_at)
            mine.last_bought_at = max(mine.last_bought_at, row.last_bought_at)
            if hasattr(mine, "quantity"):
                mine.quantity += row.quantity
        session.delete(row)


def _settle_consent(session: Session, survivor: Customer) -> None:
    """After a merge the newest consent record per channel decides the current status."""
    records = session.execute(
        select(ConsentRecord.channel, ConsentRecord.status)
        .where(ConsentRecord.customer_id == survivor.id)
        .order_by(ConsentRecord.recorded_at, ConsentRecord.id)
    )
    for channel, status in records:
        setattr(survivor, f"{channel}_consent", status)
