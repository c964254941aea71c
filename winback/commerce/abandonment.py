"""Abandonment: carts, checkouts, browsing and searching that stopped short of an order.

The rules are pure: given a cart/checkout or an intent session, the thresholds and the time, they
say whether to abandon it now (close it and emit a derived event), not yet, or to close it without
an event (browsing that never showed enough interest), and they build the event's properties.
`sweep` applies them to the rows that are due, each batch in one write transaction that closes the
rows and appends the events together — so an event is emitted exactly when its row is closed, and
the message id (`derived:<rule>:<row id>`) makes a repeated append a no-op.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import ColumnElement, Engine, case, func, select
from sqlalchemy.orm import InstrumentedAttribute

from winback.db.engine import reading, transaction
from winback.db.models import Checkout, Customer, Event, IntentSession
from winback.ingest import segment as wire
from winback.ingest.segment import EventRow
from winback.ingest.store import append_events
from winback.kernel.money import to_amount

if TYPE_CHECKING:
    from winback.runtime import Runtime
    from winback.settings import Settings

SWEEP_BATCH = 1000  # rows of each kind closed per sweep (one transaction per kind)

CHECKOUT_ABANDONED = "Checkout Abandoned"
CART_ABANDONED = "Cart Abandoned"
BROWSE_ABANDONED = "Browse Abandoned"
SEARCH_ABANDONED = "Search Abandoned"

# Product fields copied from a cart/checkout line into the event, in the Segment spec's order.
PRODUCT_FIELDS = (
    "product_id",
    "variant_id",
    "sku",
    "name",
    "brand",
    "category",
    "price",
    "quantity",
    "url",
    "image_url",
)
# Fields copied from a browse-session item (besides `views`, `dwell_seconds`).
BROWSED_FIELDS = ("name", "url", "image_url", "price", "last_viewed_at")


class Verdict(enum.StrEnum):
    """What to do with a cart, checkout or intent session now."""

    NOT_YET = "not_yet"  # leave it open: still inside its window, or nothing to abandon
    ABANDON = "abandon"  # close it as abandoned and emit the derived event
    EXPIRE = "expire"  # close it without an event: it never showed enough interest


@dataclass(frozen=True, slots=True)
class Rules:
    """The thresholds of the abandonment rules (seconds, views)."""

    checkout_abandoned_after_s: float
    browse_abandoned_after_s: float
    browse_min_views: int
    browse_min_dwell_s: float
    search_abandoned_after_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Rules:
        return cls(
            checkout_abandoned_after_s=settings.checkout_abandoned_after_s,
            browse_abandoned_after_s=settings.browse_abandoned_after_s,
            browse_min_views=settings.browse_min_views,
            browse_min_dwell_s=settings.browse_min_dwell_s,
            search_abandoned_after_s=settings.search_abandoned_after_s,
        )


class CartLike(Protocol):
    """What the rules read from a cart or checkout (a `Checkout` row fits)."""

    @property
    def kind(self) -> str: ...
    @property
    def external_id(self) -> str: ...
    @property
    def cart_id(self) -> str | None: ...
    @property
    def customer_id(self) -> int | None: ...
    @property
    def status(self) -> str: ...
    @property
    def value(self) -> Decimal: ...
    @property
    def currency(self) -> str | None: ...
    @property
    def items(self) -> list[dict[str, Any]]: ...
    @property
    def coupon(self) -> str | None: ...
    @property
    def recovery_url(self) -> str | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def last_activity_at(self) -> datetime: ...


class SessionLike(Protocol):
    """What the rules read from a browse or search session (an `IntentSession` row fits)."""

    @property
    def kind(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def items(self) -> list[dict[str, Any]]: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def last_activity_at(self) -> datetime: ...


# --- pure rules ---------------------------------------------------------------------------------


def is_due(last_activity_at: datetime, after_s: float, now: datetime) -> bool:
    """Whether `after_s` seconds without activity have passed (the boundary counts as passed)."""
    return last_activity_at <= now - timedelta(seconds=after_s)


def checkout_verdict(checkout: CartLike, rules: Rules, now: datetime) -> Verdict:
    """An open cart/checkout with items and a customer is abandoned once its window has passed."""
    if checkout.kind not in ("cart", "checkout") or checkout.status != "open":
        return Verdict.NOT_YET
    if checkout.customer_id is None or not checkout.items:
        return Verdict.NOT_YET  # nobody to bring back, or nothing to bring them back to
    if not is_due(checkout.last_activity_at, rules.checkout_abandoned_after_s, now):
        return Verdict.NOT_YET
    return Verdict.ABANDON


def shows_interest(item: Mapping[str, Any], rules: Rules) -> bool:
    """A browsed product/category counts when viewed often enough or long enough."""
    return (
        _int(item.get("views")) >= rules.browse_min_views
        or _float(item.get("dwell_seconds")) >= rules.browse_min_dwell_s
    )


def browse_verdict(session: SessionLike, rules: Rules, now: datetime) -> Verdict:
    """Browsing that went quiet is abandoned if anything in it showed interest, else expired."""
    if session.kind != "browse" or session.status != "open":
        return Verdict.NOT_YET
    if not is_due(session.last_activity_at, rules.browse_abandoned_after_s, now):
        return Verdict.NOT_YET
    if any(shows_interest(item, rules) for item in session.items):
        return Verdict.ABANDON
    return Verdict.EXPIRE


def search_verdict(session: SessionLike, rules: Rules, now: datetime) -> Verdict:
    """Searching that went quiet is abandoned (a session without any query just expires)."""
    if session.kind != "search" or session.status != "open":
        return Verdict.NOT_YET
    if not is_due(session.last_activity_at, rules.search_abandoned_after_s, now):
        return Verdict.NOT_YET
    if _queries(session.items):
        return Verdict.ABANDON
    return Verdict.EXPIRE


def checkout_event_name(kind: str) -> str:
    return CART_ABANDONED if kind == "cart" else CHECKOUT_ABANDONED


def checkout_properties(checkout: CartLike) -> dict[str, Any]:
    """Checkout/Cart Abandoned properties: money as numbers (Segment spec) beside `currency`."""
    properties: dict[str, Any] = {}
    if checkout.kind == "checkout":
        properties["checkout_id"] = checkout.external_id
        properties["cart_id"] = checkout.cart_id
    else:
        properties["cart_id"] = checkout.external_id
    properties.update(
        value=_number(checkout.value),
        currency=checkout.currency,
        products=[_cart_product(item) for item in checkout.items],
        recovery_url=checkout.recovery_url,
        coupon=checkout.coupon,
        started_at=checkout.created_at.isoformat(),
        last_activity_at=checkout.last_activity_at.isoformat(),
    )
    return properties


def browse_properties(session: SessionLike) -> dict[str, Any]:
    """Browse Abandoned properties: what was viewed, most viewed (then longest viewed) first."""
    ranked = sorted(
        session.items, key=lambda item: (-_int(item.get("views")), -_float(item.get("dwell_seconds")))
    )
    products = [
        {"product_id": item.get("id"), **_browsed(item)} for item in ranked if item.get("kind") == "product"
    ]
    categories = [
        {"id": item.get("id"), **_browsed(item)} for item in ranked if item.get("kind") == "category"
    ]
    return {
        "products": products,
        "categories": categories,
        "started_at": session.started_at.isoformat(),
        "last_activity_at": session.last_activity_at.isoformat(),
    }


def search_properties(session: SessionLike) -> dict[str, Any]:
    """Search Abandoned properties: the distinct queries in the order first searched, and the last."""
    queries = _queries(session.items)
    return {
        "queries": list(dict.fromkeys(queries)),
        "query": queries[-1] if queries else None,
        "started_at": session.started_at.isoformat(),
        "last_activity_at": session.last_activity_at.isoformat(),
    }


def derived_message_id(rule: str, row_id: int) -> str:
    """The message id that makes each derived event unique per rule and row."""
    return f"derived:{rule}:{row_id}"


def derived_event(
    *,
    rule: str,
    row_id: int,
    event: str,
    customer_id: int,
    user_id: str | None,
    properties: dict[str, Any],
    now: datetime,
) -> EventRow:
    """A derived track event for a known customer, timed at the moment the rule fired."""
    return wire.derived_event(
        message_id=derived_message_id(rule, row_id),
        customer_id=customer_id,
        user_id=user_id,
        at=now,
        event=event,
        properties=properties,
    )


def _cart_product(item: Mapping[str, Any]) -> dict[str, Any]:
    product = {key: item.get(key) for key in PRODUCT_FIELDS}
    product["price"] = _number(product["price"])
    return {key: value for key, value in product.items() if value is not None}


def _browsed(item: Mapping[str, Any]) -> dict[str, Any]:
    fields = {key: item.get(key) for key in BROWSED_FIELDS}
    fields["price"] = _number(fields["price"])
    fields = {key: value for key, value in fields.items() if value is not None}
    return {**fields, "views": _int(item.get("views")), "dwell_seconds": _float(item.get("dwell_seconds"))}


def _queries(items: Sequence[Mapping[str, Any]]) -> list[str]:
    return [item["query"] for item in items if isinstance(item.get("query"), str) and item["query"].strip()]


def _number(value: Any) -> float | None:
    """Money as a JSON number, or None when absent or not a number."""
    amount = to_amount(value)
    return None if amount is None else float(amount)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


# --- the sweep ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What one sweep closed, by kind; `as_of` is the time the windows were measured against."""

    as_of: datetime
    checkouts_abandoned: int = 0
    carts_abandoned: int = 0
    browse_abandoned: int = 0
    browse_expired: int = 0
    search_abandoned: int = 0
    search_expired: int = 0

    @property
    def events(self) -> int:
        """Derived events emitted."""
        return self.checkouts_abandoned + self.carts_abandoned + self.browse_abandoned + self.search_abandoned

    @property
    def total(self) -> int:
        """Rows closed (with or without an event)."""
        return self.events + self.browse_expired + self.search_expired

    def describe(self) -> str:
        return (
            f"abandoned {self.checkouts_abandoned} checkouts, {self.carts_abandoned} carts, "
            f"{self.browse_abandoned} browse and {self.search_abandoned} search sessions; "
            f"expired {self.browse_expired} browse and {self.search_expired} search sessions"
        )


def sweep(runtime: Runtime, limit: int = SWEEP_BATCH) -> SweepResult:
    """Close every due cart, checkout and intent session (at most `limit` of each kind per call).

    Windows are measured against the time up to which all received events have been applied (the
    receipt time of the oldest unprocessed event, when that is earlier than now): a checkout whose
    Order Completed is still waiting in the queue must not be reported abandoned.
    """
    now = runtime.clock.now()
    as_of = min(now, _oldest_unprocessed_event_at(runtime.engine) or now)
    rules = Rules.from_settings(runtime.settings)
    engine = runtime.engine
    checkouts = _sweep_checkouts(engine, "checkout", rules, as_of=as_of, now=now, limit=limit)
    carts = _sweep_checkouts(engine, "cart", rules, as_of=as_of, now=now, limit=limit)
    browse_abandoned, browse_expired = _sweep_sessions(
        engine, "browse", rules, as_of=as_of, now=now, limit=limit
    )
    search_abandoned, search_expired = _sweep_sessions(
        engine, "search", rules, as_of=as_of, now=now, limit=limit
    )
    return SweepResult(
        as_of=as_of,
        checkouts_abandoned=checkouts,
        carts_abandoned=carts,
        browse_abandoned=browse_abandoned,
        browse_expired=browse_expired,
        search_abandoned=search_abandoned,
        search_expired=search_expired,
    )


def _oldest_unprocessed_event_at(engine: Engine) -> datetime | None:
    with reading(engine) as session:
        return session.scalar(
            select(Event.received_at).where(Event.processed_at.is_(None)).order_by(Event.id).limit(1)
        )


def _has_items(column: InstrumentedAttribute[Any], dialect: str) -> ColumnElement[bool]:
    """A JSON array column holds at least one element (anything else counts as empty)."""
    if dialect == "postgresql":
        length = case((func.jsonb_typeof(column) == "array", func.jsonb_array_length(column)), else_=0)
        return length > 0
    return func.json_array_length(column) > 0


def _sweep_checkouts(
    engine: Engine, kind: str, rules: Rules, *, as_of: datetime, now: datetime, limit: int
) -> int:
    cutoff = as_of - timedelta(seconds=rules.checkout_abandoned_after_s)
    rule = "cart_abandoned" if kind == "cart" else "checkout_abandoned"
    with transaction(engine) as session:
        due = session.execute(
            select(Checkout, Customer.user_id)
            # A checkout of an erased (or unknown) customer is left to the privacy code: no event.
            .join(Customer, Customer.id == Checkout.customer_id)
            .where(
                Checkout.kind == kind,
                Checkout.status == "open",
                Checkout.last_activity_at <= cutoff,
                _has_items(Checkout.items, engine.dialect.name),
                Customer.erased_at.is_(None),
            )
            .order_by(Checkout.last_activity_at, Checkout.id)
            .limit(limit)
            .with_for_update(of=Checkout, skip_locked=True)
        ).all()
        events = []
        for checkout, user_id in due:
            if checkout_verdict(checkout, rules, as_of) is not Verdict.ABANDON:
                continue
            assert checkout.customer_id is not None  # checked by the verdict
            events.append(
                derived_event(
                    rule=rule,
                    row_id=checkout.id,
                    event=checkout_event_name(kind),
                    customer_id=checkout.customer_id,
                    user_id=user_id,
                    properties=checkout_properties(checkout),
                    now=now,
                )
            )
            checkout.status = "abandoned"
            checkout.abandoned_at = now
            checkout.updated_at = now
        append_events(session.connection(), events)
    return len(events)


def _sweep_sessions(
    engine: Engine, kind: str, rules: Rules, *, as_of: datetime, now: datetime, limit: int
) -> tuple[int, int]:
    """Close due sessions of one kind; returns (abandoned, expired)."""
    if kind == "browse":
        after_s, verdict_of, properties_of, event_name = (
            rules.browse_abandoned_after_s,
            browse_verdict,
            browse_properties,
            BROWSE_ABANDONED,
        )
    else:
        after_s, verdict_of, properties_of, event_name = (
            rules.search_abandoned_after_s,
            search_verdict,
            search_properties,
            SEARCH_ABANDONED,
        )
    cutoff = as_of - timedelta(seconds=after_s)
    expired = 0
    with transaction(engine) as session:
        due = session.execute(
            select(IntentSession, Customer.user_id, Customer.erased_at)
            .outerjoin(Customer, Customer.id == IntentSession.customer_id)
            .where(
                IntentSession.kind == kind,
                IntentSession.status == "open",
                IntentSession.last_activity_at <= cutoff,
            )
            .order_by(IntentSession.last_activity_at, IntentSession.id)
            .limit(limit)
            .with_for_update(of=IntentSession, skip_locked=True)
        ).all()
        events = []
        for intent, user_id, erased_at in due:
            # An erased customer's browsing is closed like browsing without interest: no event.
            verdict = verdict_of(intent, rules, as_of)
            if verdict is Verdict.ABANDON and erased_at is None:
                events.append(
                    derived_event(
                        rule=f"{kind}_abandoned",
                        row_id=intent.id,
                        event=event_name,
                        customer_id=intent.customer_id,
                        user_id=user_id,
                        properties=properties_of(intent),
                        now=now,
                    )
                )
                intent.status = "abandoned"
            elif verdict is not Verdict.NOT_YET:
                expired += 1
                intent.status = "expired"
            else:
                continue
            intent.closed_at = now
        append_events(session.connection(), events)
    return len(events), expired
