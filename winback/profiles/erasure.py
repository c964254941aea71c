"""Right to erasure (GDPR art. 17, Shopify customers/redact and shop/redact).

Erasing a customer removes what identifies the person everywhere winback keeps it, while the
anonymous facts that reports rest on stay: the customer row keeps its id, counters, money
aggregates and dates; events keep their type, name, time and commerce amounts; orders keep their
totals and lines; consent records keep channel, status and times (their evidence is replaced by a
note that an erasure happened). Identities and browse/search sessions are deleted.

A person is one survivor profile plus every tombstone merged into it (at any depth), so erasing
either a survivor or a tombstone erases all of them. Erasing twice changes nothing the second time.
Both functions work inside the caller's transaction and never commit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from winback.db.models import (
    Checkout,
    ConsentRecord,
    Customer,
    CustomerIdentity,
    Event,
    FlowRun,
    IntentSession,
    ListMembership,
    Order,
    OutboxEntry,
)
from winback.kernel.errors import NotFound
from winback.profiles import traits
from winback.segments import membership

BATCH_SIZE = 1000  # rows read and rewritten per round trip

# Property keys (compared after normalising camelCase/dashes to snake_case) that identify a person.
# Removed at any depth of an event's or order's properties; product fields such as `name`, `price`
# and `category` are not personal and stay.
PERSONAL_KEYS = frozenset(
    {
        "email",
        "email_address",
        "phone",
        "phone_number",
        "mobile",
        "first_name",
        "last_name",
        "full_name",
        "customer_name",
        "username",
        "birthday",
        "birthdate",
        "date_of_birth",
        "address",
        "address1",
        "address2",
        "address_line1",
        "address_line2",
        "street",
        "city",
        "zip",
        "postal_code",
        "postcode",
        "shipping_address",
        "billing_address",
        "shipping_city",
        "billing_city",
        "ip",
        "ip_address",
        "browser_ip",
        "user_agent",
        "recovery_url",
        "abandoned_checkout_url",
        "customer",
        "user_id",
        "anonymous_id",
        "consent_evidence",
        "note",
        "company",
        "latitude",
        "longitude",
    }
)

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@dataclass(frozen=True, slots=True)
class ErasureSummary:
    """What one erasure changed (counts are of rows changed, so a repeat reports zeros)."""

    customer_id: int
    customer_ids: tuple[int, ...]  # the survivor first, then the tombstones merged into it
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
    flow_runs_scrubbed: int
    outbox_entries_scrubbed: int


# --- pure scrubbing -----------------------------------------------------------------------------


def normalise_key(key: str) -> str:
    """`firstName`, `first-name` and `First_Name` all become `first_name`."""
    return _CAMEL_BOUNDARY.sub("_", key).replace("-", "_").lower()


def is_personal_key(key: str) -> bool:
    return normalise_key(key) in PERSONAL_KEYS


def scrub_properties(value: Any) -> Any:
    """A copy of `value` with every personal key removed at any depth (lists walked too)."""
    if isinstance(value, dict):
        return {key: scrub_properties(item) for key, item in value.items() if not is_personal_key(str(key))}
    if isinstance(value, list):
        return [scrub_properties(item) for item in value]
    return value


def scrubbed_event(event: Event) -> dict[str, Any]:
    """The columns of `event` after erasure: identifiers, traits and context gone."""
    return {
        "user_id": None,
        "anonymous_id": None,
        "previous_id": None,
        "group_id": None,
        "traits": {},
        "context": {},
        "properties": scrub_properties(event.properties or {}),
    }


def erasure_evidence(now: datetime) -> dict[str, Any]:
    """What a consent record's evidence becomes: only the fact and time of the erasure."""
    return {"erased": True, "erased_at": now.isoformat()}


# --- erasing ------------------------------------------------------------------------------------


def erase_customer(session: Session, customer_id: int, now: datetime) -> ErasureSummary:
    """Erase the person behind `customer_id` (survivor and tombstones). Raises NotFound."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise NotFound(f"no customer {customer_id}", field="customer_id", customer_id=customer_id)
    survivor = survivor_of(session, customer)
    ids = person_ids(session, survivor.id)
    already_erased = survivor.erased_at is not None
    counts = _erase(session, ids, now)
    return ErasureSummary(
        customer_id=survivor.id,
        customer_ids=tuple(ids),
        erased_at=survivor.erased_at or now,
        already_erased=already_erased,
        **counts,
    )


def erase_all_customers(session: Session, now: datetime) -> int:
    """Erase every customer, and personal data not tied to one (shop/redact); returns profiles erased."""
    erased = 0
    last_id = 0
    while True:
        ids = list(
            session.scalars(
                select(Customer.id).where(Customer.id > last_id).order_by(Customer.id).limit(BATCH_SIZE)
            )
        )
        if not ids:
            break
        erased += _erase(session, ids, now)["profiles_erased"]
        last_id = ids[-1]
    # Guest checkouts, unlinked orders and unprocessed events belong to no profile yet.
    _scrub_events(session, Event.customer_id.is_(None), now)
    _scrub_checkouts(session, [Checkout.customer_id.is_(None)])
    _scrub_orders(session, Order.customer_id.is_(None))
    return erased


def survivor_of(session: Session, customer: Customer) -> Customer:
    """Follow `merged_into_id` to the profile that absorbed this one (cycles are cut)."""
    seen = {customer.id}
    while customer.merged_into_id is not None and customer.merged_into_id not in seen:
        target = session.get(Customer, customer.merged_into_id)
        if target is None:
            break
        seen.add(target.id)
        customer = target
    return customer


def person_ids(session: Session, survivor_id: int) -> list[int]:
    """The survivor and every profile merged into it, directly or through other tombstones."""
    ids = [survivor_id]
    frontier = [survivor_id]
    while frontier:
        found = [
            found_id
            for found_id in session.scalars(
                select(Customer.id).where(Customer.merged_into_id.in_(frontier)).order_by(Customer.id)
            )
            if found_id not in ids
        ]
        ids.extend(found)
        frontier = found
    return ids


def _erase(session: Session, ids: Sequence[int], now: datetime) -> dict[str, int]:
    customers = list(session.scalars(select(Customer).where(Customer.id.in_(ids)).order_by(Customer.id)))
    identities = list(session.scalars(select(CustomerIdentity).where(CustomerIdentity.customer_id.in_(ids))))
    emails = {c.email for c in customers if c.email} | {i.value for i in identities if i.kind == "email"}
    phones = {c.phone for c in customers if c.phone} | {i.value for i in identities if i.kind == "phone"}
    user_ids = {c.user_id for c in customers if c.user_id} | {
        i.value for i in identities if i.kind == "user_id"
    }
    anonymous_ids = {i.value for i in identities if i.kind == "anonymous_id"}
    pending_matches = [Event.user_id.in_(user_ids)] if user_ids else []
    if anonymous_ids:
        pending_matches.append(Event.anonymous_id.in_(anonymous_ids))
    pending = Event.processed_at.is_(None) & or_(*pending_matches) if pending_matches else None

    # Lock in the processor's order (its claimed events, then the profiles) so the two never
    # deadlock: a batch in flight finishes first, and its events are then scrubbed as applied ones.
    if pending is not None:
        session.execute(select(Event.id).where(pending).with_for_update()).all()
    customers = list(
        session.scalars(
            select(Customer)
            .where(Customer.id.in_(ids))
            .order_by(Customer.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )

    profiles_erased = sum(_erase_profile(customer, now) for customer in customers)
    identities_deleted = _rowcount(
        session, delete(CustomerIdentity).where(CustomerIdentity.customer_id.in_(ids))
    )

    events_scrubbed = _scrub_events(session, Event.customer_id.in_(ids), now)
    # Events of this person not yet applied would otherwise rebuild the profile: scrub them and
    # mark them applied to the erased profile so the processor leaves them alone.
    if pending is not None:
        events_scrubbed += _scrub_events(session, pending, now, claim_for=ids[0])

    checkout_matches = [Checkout.customer_id.in_(ids)]
    if emails:
        checkout_matches.append(Checkout.email.in_(emails))
    if phones:
        checkout_matches.append(Checkout.phone.in_(phones))
    checkouts_scrubbed = _scrub_checkouts(session, checkout_matches)
    orders_scrubbed = _scrub_orders(session, Order.customer_id.in_(ids))

    consent_records_scrubbed = 0
    for record in session.scalars(select(ConsentRecord).where(ConsentRecord.customer_id.in_(ids))):
        if not record.evidence.get("erased"):
            record.evidence = erasure_evidence(now)
            consent_records_scrubbed += 1

    intent_sessions_deleted = _rowcount(
        session, delete(IntentSession).where(IntentSession.customer_id.in_(ids))
    )
    list_memberships_deleted = _rowcount(
        session, delete(ListMembership).where(ListMembership.customer_id.in_(ids))
    )
    flow_runs_scrubbed = _scrub_flow_runs(session, ids, now)
    outbox_entries_scrubbed = _scrub_outbox(session, ids, now)
    session.flush()
    # Erased profiles are never segment members: they leave every segment, silently.
    membership.refresh_customers(session, ids, now, "UTC")
    return {
        "profiles_erased": profiles_erased,
        "identities_deleted": identities_deleted,
        "events_scrubbed": events_scrubbed,
        "checkouts_scrubbed": checkouts_scrubbed,
        "orders_scrubbed": orders_scrubbed,
        "consent_records_scrubbed": consent_records_scrubbed,
        "intent_sessions_deleted": intent_sessions_deleted,
        "list_memberships_deleted": list_memberships_deleted,
        "flow_runs_scrubbed": flow_runs_scrubbed,
        "outbox_entries_scrubbed": outbox_entries_scrubbed,
    }


def _scrub_flow_runs(session: Session, ids: Sequence[int], now: datetime) -> int:
    """Runs under way end ("customer erased"); every run keeps only the trigger's event name."""
    changed = 0
    for run in session.scalars(select(FlowRun).where(FlowRun.customer_id.in_(ids))):
        if (run.trigger or {}).get("erased"):
            continue
        run.trigger = {"event": (run.trigger or {}).get("event"), "erased": True}
        if run.status in ("active", "waiting"):
            run.status, run.exit_reason = "exited", "customer erased"
            run.active_key = run.due_at = run.wake_at = None
            run.finished_at = now
        run.updated_at = now
        changed += 1
    return changed


def _scrub_outbox(session: Session, ids: Sequence[int], now: datetime) -> int:
    """Commands for the person lose their content; those not yet sent are skipped for good."""
    changed = 0
    for entry in session.scalars(select(OutboxEntry).where(OutboxEntry.customer_id.in_(ids))):
        if entry.payload.get("erased"):
            continue
        entry.payload = {"erased": True}
        if entry.status == "pending":
            entry.status = "skipped"
        entry.updated_at = now
        changed += 1
    return changed


_PERSONAL_PROFILE_FIELDS = ("user_id", *traits.PROFILE_COLUMNS)


def _erase_profile(customer: Customer, now: datetime) -> bool:
    """Blank the personal fields of one profile; True when it was not erased before."""
    for name in _PERSONAL_PROFILE_FIELDS:
        if getattr(customer, name) is not None:
            setattr(customer, name, None)
    if customer.tags:
        customer.tags = []
    if customer.properties:
        customer.properties = {}
    if customer.erased_at is not None:
        return False
    customer.erased_at = now
    customer.updated_at = now
    return True


def _rowcount(session: Session, statement: Any) -> int:
    return int(session.execute(statement.execution_options(synchronize_session=False)).rowcount or 0)


def _scrub_events(session: Session, where: Any, now: datetime, *, claim_for: int | None = None) -> int:
    """Rewrite matching events without personal data, in batches by id; returns rows changed."""
    changed = 0
    last_id = 0
    while True:
        events = list(
            session.scalars(
                select(Event).where(where, Event.id > last_id).order_by(Event.id).limit(BATCH_SIZE)
            )
        )
        if not events:
            return changed
        updates = []
        for event in events:
            values = scrubbed_event(event)
            if claim_for is not None:
                values.update(customer_id=claim_for, processed_at=now)
            if any(getattr(event, key) != value for key, value in values.items()):
                updates.append({"id": event.id, **values})
        if updates:
            session.execute(update(Event), updates)
            changed += len(updates)
        last_id = events[-1].id


def _scrub_checkouts(session: Session, matches: Iterable[Any]) -> int:
    statement = (
        update(Checkout)
        .where(or_(*matches))
        .where(
            or_(Checkout.email.is_not(None), Checkout.phone.is_not(None), Checkout.recovery_url.is_not(None))
        )
        .values(email=None, phone=None, recovery_url=None)
    )
    return _rowcount(session, statement)


def _scrub_orders(session: Session, where: Any) -> int:
    changed = 0
    last_id = 0
    while True:
        orders = list(
            session.scalars(
                select(Order).where(where, Order.id > last_id).order_by(Order.id).limit(BATCH_SIZE)
            )
        )
        if not orders:
            return changed
        for order in orders:
            properties = scrub_properties(order.properties or {})
            if order.shipping_city is not None or properties != (order.properties or {}):
                order.shipping_city = None
                order.properties = properties
                changed += 1
        session.flush()
        last_id = orders[-1].id
