"""Running per-customer aggregates: updated by each order, refund and cancellation, and combined
on merges — never rebuilt by rescanning history. Pure functions over a customer-like object."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from winback.profiles import traits

ZERO = Decimal("0.00")

PROFILE_FIELDS = (*traits.PROFILE_COLUMNS, *traits.CONSENT_COLUMNS)


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return min(x for x in (a, b) if x is not None) if (a or b) else None


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return max(x for x in (a, b) if x is not None) if (a or b) else None


def refresh_average(customer: Any) -> None:
    count = customer.orders_count or 0
    customer.average_order_value = (
        (customer.total_spent / count).quantize(Decimal("0.01")) if count > 0 else None
    )


def add_order(customer: Any, total: Decimal, placed_at: datetime) -> None:
    customer.orders_count = (customer.orders_count or 0) + 1
    customer.total_spent = (customer.total_spent or ZERO) + total
    customer.first_order_at = _earliest(customer.first_order_at, placed_at)
    customer.last_order_at = _latest(customer.last_order_at, placed_at)
    refresh_average(customer)


def change_order_total(customer: Any, old_total: Decimal, new_total: Decimal) -> None:
    customer.total_spent = (customer.total_spent or ZERO) + (new_total - old_total)
    refresh_average(customer)


def remove_order(customer: Any, net_total: Decimal) -> None:
    """A cancelled order stops counting; `net_total` is what it still contributed (total - refunds)."""
    customer.orders_count = max((customer.orders_count or 0) - 1, 0)
    customer.total_spent = (customer.total_spent or ZERO) - net_total
    refresh_average(customer)


def add_refund(customer: Any, amount: Decimal) -> None:
    customer.total_spent = (customer.total_spent or ZERO) - amount
    customer.total_refunded = (customer.total_refunded or ZERO) + amount
    refresh_average(customer)


def see(customer: Any, at: datetime) -> None:
    """Widen the seen window to `at`; attributes are only set when they move (this runs per event)."""
    last = customer.last_seen_at
    if last is None or at > last:
        customer.last_seen_at = at
    first = customer.first_seen_at
    if first is None or at < first:
        customer.first_seen_at = at


def combine_profiles(survivor: Any, absorbed: Any) -> None:
    """Fold the absorbed profile's aggregates and missing fields into the survivor's."""
    survivor.orders_count = (survivor.orders_count or 0) + (absorbed.orders_count or 0)
    survivor.total_spent = (survivor.total_spent or ZERO) + (absorbed.total_spent or ZERO)
    survivor.total_refunded = (survivor.total_refunded or ZERO) + (absorbed.total_refunded or ZERO)
    survivor.first_order_at = _earliest(survivor.first_order_at, absorbed.first_order_at)
    survivor.last_order_at = _latest(survivor.last_order_at, absorbed.last_order_at)
    survivor.first_seen_at = _earliest(survivor.first_seen_at, absorbed.first_seen_at)
    survivor.last_seen_at = _latest(survivor.last_seen_at, absorbed.last_seen_at)
    survivor.created_at = _earliest(survivor.created_at, absorbed.created_at)
    survivor.last_cart_activity_at = _latest(survivor.last_cart_activity_at, absorbed.last_cart_activity_at)
    if absorbed.last_product_viewed_at and (
        survivor.last_product_viewed_at is None
        or absorbed.last_product_viewed_at > survivor.last_product_viewed_at
    ):
        survivor.last_product_viewed_id = absorbed.last_product_viewed_id
        survivor.last_product_viewed_at = absorbed.last_product_viewed_at
    refresh_average(survivor)
    for name in PROFILE_FIELDS:
        if getattr(survivor, name) is None and getattr(absorbed, name) is not None:
            setattr(survivor, name, getattr(absorbed, name))
    survivor.tags = list(dict.fromkeys([*(survivor.tags or []), *(absorbed.tags or [])]))
    survivor.properties = {**(absorbed.properties or {}), **(survivor.properties or {})}
    # The absorbed row is a tombstone now: it must not count twice in any report.
    absorbed.orders_count = 0
    absorbed.total_spent = ZERO
    absorbed.total_refunded = ZERO
    absorbed.average_order_value = None
