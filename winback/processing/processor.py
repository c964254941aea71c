"""Applying stored events to profiles and the store model, in arrival order, a batch at a time.

One batch is one write transaction: the events are read, every row they touch is loaded with a
handful of set-based queries, the events are applied in order in memory, and everything is
written back together with the events' `processed_at`. A crash mid-batch rolls all of it back,
so an event is applied exactly once.

Two phases per batch:
1. identity: each event is given its customer (creating profiles, attaching identities and
   merging profiles that the event proves are one person), then new profiles are inserted and
   merges are carried out in the database;
2. effects: traits, consent, catalog, carts/checkouts, orders/refunds, browse and search
   sessions, and the running aggregates are applied to the surviving profiles (`effects.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, inspect, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from winback import store
from winback.db.engine import index_order_only, transaction
from winback.db.expressions import one_of
from winback.db.models import Base, Checkout, Customer, CustomerIdentity, IntentSession, Product
from winback.flows import engine as flow_engine
from winback.ingest.store import EVENTS
from winback.processing import effects, merge
from winback.profiles import contact, identity, traits
from winback.runtime import Runtime
from winback.segments import membership

log = logging.getLogger(__name__)


def _value_columns(model: type[Base]) -> tuple[str, ...]:
    return tuple(column.key for column in model.__table__.columns if not column.primary_key)


CUSTOMER_COLUMNS = _value_columns(Customer)
UNIFORM_UPDATE_COLUMNS = {
    model: _value_columns(model) for model in (Customer, Checkout, IntentSession, Product)
}


@dataclass(slots=True)
class PreparedEvent:
    """An event row plus what phase 1 worked out about it."""

    row: Row[Any]
    update: traits.ProfileUpdate | None
    email: str | None
    phone: str | None
    customer: Customer | None = None


@dataclass
class IdentityBook:
    """Which profile owns which identity, for the keys this batch mentions."""

    owners: dict[identity.Key, Customer] = field(default_factory=dict)
    new_identities: list[tuple[identity.Key, Customer]] = field(default_factory=list)
    absorbed_into: dict[int, Customer] = field(default_factory=dict)  # id(obj) -> survivor

    def final(self, customer: Customer) -> Customer:
        while id(customer) in self.absorbed_into:
            customer = self.absorbed_into[id(customer)]
        return customer

    def owner(self, key: identity.Key) -> identity.Owner[Customer] | None:
        customer = self.owners.get(key)
        if customer is None:
            return None
        customer = self.final(customer)
        return identity.Owner(customer, customer.user_id)


def process_pending(runtime: Runtime, limit: int | None = None) -> int:
    """Apply unprocessed events; one batch of at most `limit`, or everything when limit is None
    (in batches of `WINBACK_PROCESS_BATCH_SIZE`)."""
    if limit is not None:
        return process_batch(runtime, limit)
    size = runtime.settings.process_batch_size
    applied = 0
    while True:
        count = process_batch(runtime, size)
        applied += count
        if count < size:
            return applied


def process_batch(runtime: Runtime, size: int) -> int:
    with transaction(runtime.engine) as session:
        rows = _claim(session, size)
        if not rows:
            return 0
        BatchProcessor(session, runtime, rows).run()
        return len(rows)


def _claim(session: Session, size: int) -> list[Row[Any]]:
    table = EVENTS
    query = select(table).where(table.c.processed_at.is_(None)).order_by(table.c.id).limit(size)
    if session.get_bind().dialect.name != "postgresql":
        return list(session.execute(query))
    with index_order_only(session):  # walks ix_events_unprocessed, never sorts the backlog
        return list(session.execute(query.with_for_update(skip_locked=True)))


class BatchProcessor:
    def __init__(self, session: Session, runtime: Runtime, rows: list[Row[Any]]) -> None:
        self.session = session
        self.runtime = runtime
        self.now: datetime = runtime.clock.now()
        self.profile = store.profile_in(session, runtime.settings)
        self.store_region = contact.region_of_locale(self.profile.locale)
        self.events = [self._prepare(row) for row in rows]
        self.book = IdentityBook()
        self.customers_by_id: dict[int, Customer] = {}
        self.merges: list[tuple[Customer, Customer]] = []  # (absorbed, survivor) in order

    # --- phase 1: identity ---------------------------------------------------------------------

    def _prepare(self, row: Row[Any]) -> PreparedEvent:
        context = row.context or {}
        sources: list[dict[str, Any]] = []
        if isinstance(context.get("traits"), dict):
            sources.append(context["traits"])
        if row.type == "identify" and row.traits:
            sources.append(row.traits)
        if row.type == "group":
            sources = [s for s in sources if s is not row.traits]
        merged: dict[str, Any] = {}
        for source in sources:
            merged.update(source)
        update = (
            traits.read_traits(merged, context=context, phone_region=self.store_region) if merged else None
        )
        email = update.email if update else None
        phone = update.phone if update else None
        if row.type == "track" and row.event in effects.CONTACT_BEARING_EVENTS:
            props = row.properties or {}
            email = email or contact.normalise_email(props.get("email"))
            phone = phone or contact.normalise_phone(props.get("phone"), self.store_region)
        return PreparedEvent(row=row, update=update, email=email, phone=phone)

    def run(self) -> None:
        self._load_identities()
        for prepared in self.events:
            prepared.customer = self._resolve(prepared)
        self._write_identities_and_merges()
        for prepared in self.events:
            customer = self.book.final(prepared.customer) if prepared.customer else None
            if customer is not None and customer.erased_at is not None:
                customer = None  # an erased person's late events must not rebuild the profile
            prepared.customer = customer
        applicable = [(p.row, p.customer) for p in self.events if p.customer is not None]
        context = effects.BatchContext.load(
            self.session, self.runtime, self.now, applicable, profile=self.profile
        )
        for prepared in self.events:
            customer = prepared.customer
            if customer is not None:
                effects.apply_event(context, customer, prepared.row, prepared.update)
                # A guest checkout's email/phone is the profile's contact when it has none yet.
                customer.email = customer.email or prepared.email
                customer.phone = customer.phone or prepared.phone
        self._uniform_updates()
        context.flush()
        self._mark_processed()
        self._refresh_segments()
        self._start_and_wake_flows()
        self._credit_messages()

    def _uniform_updates(self) -> None:
        """Give a table's changed rows in this batch one UPDATE shape — the union of the columns
        any of them changed — so they reach the database as one executemany instead of one
        statement per shape, without rewriting columns nobody changed."""
        changed: dict[type, list[Any]] = {}
        for instance in self.session.dirty:
            if type(instance) in UNIFORM_UPDATE_COLUMNS and inspect(instance).key is not None:
                changed.setdefault(type(instance), []).append(instance)
        for model, instances in changed.items():
            columns = set().union(*(inspect(instance).committed_state.keys() for instance in instances))
            columns &= set(UNIFORM_UPDATE_COLUMNS[model])
            for instance in instances:
                state = instance.__dict__
                for column in columns:
                    if column in state:
                        flag_modified(instance, column)

    def _keys_of(self, prepared: PreparedEvent) -> list[identity.Key]:
        row = prepared.row
        return identity.event_keys(row.user_id, row.anonymous_id, prepared.email, prepared.phone)

    def _alias_keys(self, prepared: PreparedEvent) -> list[identity.Key]:
        previous = prepared.row.previous_id
        if prepared.row.type != "alias" or not previous:
            return []
        return [(identity.USER_ID, previous), (identity.ANONYMOUS_ID, previous)]

    def _load_identities(self) -> None:
        wanted: set[identity.Key] = set()
        derived_ids: set[int] = set()
        for prepared in self.events:
            wanted.update(self._keys_of(prepared))
            wanted.update(self._alias_keys(prepared))
            if prepared.row.customer_id is not None:
                derived_ids.add(prepared.row.customer_id)
        owner_ids: dict[identity.Key, int] = {}
        by_kind: dict[str, list[str]] = {}
        for kind, value in wanted:
            by_kind.setdefault(kind, []).append(value)
        for kind, values in by_kind.items():
            query = select(CustomerIdentity.value, CustomerIdentity.customer_id).where(
                CustomerIdentity.kind == kind, one_of(CustomerIdentity.value, values)
            )
            for value, customer_id in self.session.execute(query):
                owner_ids[(kind, value)] = customer_id
        self._load_customers(set(owner_ids.values()) | derived_ids)
        for key, customer_id in owner_ids.items():
            customer = self.customers_by_id.get(customer_id)
            if customer is not None:
                self.book.owners[key] = customer

    def _load_customers(self, ids: set[int]) -> None:
        """Load profiles by id, following merge tombstones to their survivors."""
        pending = ids - set(self.customers_by_id)
        while pending:
            rows = list(self.session.scalars(select(Customer).where(one_of(Customer.id, pending))))
            next_ids: set[int] = set()
            for customer in rows:
                self.customers_by_id[customer.id] = customer
                if customer.merged_into_id is not None:
                    next_ids.add(customer.merged_into_id)
            pending = next_ids - set(self.customers_by_id)
        for customer in list(self.customers_by_id.values()):
            if customer.merged_into_id is not None:
                survivor = self.customers_by_id.get(customer.merged_into_id)
                if survivor is not None:
                    self.book.absorbed_into[id(customer)] = survivor

    def _resolve(self, prepared: PreparedEvent) -> Customer | None:
        row = prepared.row
        if row.customer_id is not None:  # derived events know their customer
            known = self.customers_by_id.get(row.customer_id)
            return self.book.final(known) if known is not None else None
        keys = self._keys_of(prepared)
        alias_keys = self._alias_keys(prepared)
        owners = {key: owner for key in [*keys, *alias_keys] if (owner := self.book.owner(key)) is not None}
        resolution = identity.resolve(keys, owners, user_id=row.user_id, alias_of=alias_keys)
        survivor = self._new_customer(row) if resolution.survivor is None else resolution.survivor.profile
        if resolution.give_user_id is not None:
            survivor.user_id = resolution.give_user_id
        for absorbed in resolution.absorbed:
            self._absorb(absorbed.profile, survivor)
        for key in resolution.unowned:
            self.book.owners[key] = survivor
            self.book.new_identities.append((key, survivor))
        return survivor

    def _new_customer(self, row: Row[Any]) -> Customer:
        # Every column is given a value so all profiles flush with one UPDATE shape.
        values = dict.fromkeys(CUSTOMER_COLUMNS)
        values.update(
            user_id=row.user_id,
            tags=[],
            properties={},
            orders_count=0,
            total_spent=effects.ZERO,
            total_refunded=effects.ZERO,
            first_seen_at=row.timestamp,
            last_seen_at=row.timestamp,
            created_at=row.timestamp,
            updated_at=self.now,
        )
        customer = Customer(**values)
        self.session.add(customer)
        return customer

    def _absorb(self, absorbed: Customer, survivor: Customer) -> None:
        if absorbed is survivor:
            return
        self.book.absorbed_into[id(absorbed)] = survivor
        if absorbed.user_id and not survivor.user_id:
            # Only possible through an explicit alias: the survivor takes the user id over. The
            # absorbed row lets go first, so the unique user_id column never holds it twice.
            user_id, absorbed.user_id = absorbed.user_id, None
            if absorbed.id is not None:
                self.session.execute(
                    update(Customer).where(Customer.id == absorbed.id).values(user_id=None),
                    execution_options={"synchronize_session": False},
                )
            survivor.user_id = user_id
        elif absorbed.user_id:
            absorbed.user_id = None  # the identity row keeps pointing the old user id here
        self.merges.append((absorbed, survivor))

    def _write_identities_and_merges(self) -> None:
        # Profiles created and absorbed within this batch are never written.
        for absorbed, _survivor in self.merges:
            if absorbed.id is None and absorbed in self.session.new:
                self.session.expunge(absorbed)
        self.session.flush()  # inserts new profiles (ids now known), writes user id changes
        identities = []
        for key, owner in self.book.new_identities:
            final = self.book.final(owner)
            identities.append(
                {"customer_id": final.id, "kind": key[0], "value": key[1], "created_at": self.now}
            )
        if identities:
            self.session.execute(CustomerIdentity.__table__.insert(), identities)
        for absorbed, survivor in self.merges:
            if absorbed.id is not None:
                merge.merge_into(self.session, absorbed, self.book.final(survivor), self.now)

    # --- bookkeeping ---------------------------------------------------------------------------

    def _refresh_segments(self) -> None:
        """Re-check segment membership for every profile the batch touched (absorbed ones leave)."""
        touched = {prepared.customer.id for prepared in self.events if prepared.customer is not None}
        touched.update(absorbed.id for absorbed, _survivor in self.merges if absorbed.id is not None)
        newest: dict[int, datetime] = {}  # per customer, when the newest event applied happened
        for prepared in self.events:
            if prepared.customer is not None:
                at = prepared.row.timestamp
                newest[prepared.customer.id] = max(at, newest.get(prepared.customer.id, at))
        membership.refresh_customers(self.session, touched, self.now, self.profile.timezone, caused_at=newest)

    def _start_and_wake_flows(self) -> None:
        """Triggers fire for the batch's events, and the touched customers' waiting runs are looked
        at now (an order may end them, an awaited event resume them)."""
        touched = {prepared.customer.id for prepared in self.events if prepared.customer is not None}
        if flow_engine.any_live_flows(self.session):  # most batches of a store without flows stop here
            applied = [
                flow_engine.AppliedEvent(
                    customer_id=prepared.customer.id,
                    event=prepared.row.event,
                    type=prepared.row.type,
                    properties=prepared.row.properties or {},
                    traits=prepared.row.traits or {},
                    timestamp=prepared.row.timestamp,
                    message_id=prepared.row.message_id,
                )
                for prepared in self.events
                if prepared.customer is not None
            ]
            max_age = timedelta(hours=self.runtime.settings.flow_trigger_max_age_h)
            flow_engine.enrol_for_events(self.session, applied, self.now, self.profile.timezone, max_age)
        flow_engine.wake_for_events(self.session, touched, self.now)

    def _credit_messages(self) -> None:
        """Orders are credited to the message that led to them (messaging.attribution)."""
        from winback.messaging import attribution  # lazy: most batches hold no order

        for prepared in self.events:
            if prepared.customer is not None and prepared.row.event == "Order Completed":
                attribution.on_order(
                    self.session,
                    customer_id=prepared.customer.id,
                    properties=prepared.row.properties or {},
                    ordered_at=prepared.row.timestamp,
                    window_days=self.runtime.settings.attribution_window_days,
                    now=self.now,
                )

    def _mark_processed(self) -> None:
        """Stamp the batch's events as applied (and with their customer) in one statement."""
        ids = [prepared.row.id for prepared in self.events]
        customer_ids = [
            prepared.customer.id if prepared.customer is not None else None for prepared in self.events
        ]
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(
                text(
                    "UPDATE events SET processed_at = :now, customer_id = batch.customer_id "
                    "FROM unnest(CAST(:ids AS BIGINT[]), CAST(:customer_ids AS BIGINT[])) "
                    "AS batch(id, customer_id) WHERE events.id = batch.id"
                ),
                {"now": self.now, "ids": ids, "customer_ids": customer_ids},
            )
            return
        table = EVENTS
        self.session.execute(
            table.update()
            .where(table.c.id == bindparam("event_id"))
            .values(customer_id=bindparam("event_customer_id"), processed_at=self.now),
            [{"event_id": i, "event_customer_id": c} for i, c in zip(ids, customer_ids, strict=True)],
        )
