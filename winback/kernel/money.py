"""Money is Decimal, parsed leniently from what shops and trackers send (numbers or strings)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

CENT = Decimal("0.01")


def to_amount(value: Any) -> Decimal | None:
    """Parse a price/total; None when absent or not a number (bad data must not stop processing)."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if not amount.is_finite():
        return None
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def amount_or_zero(value: Any) -> Decimal:
    return to_amount(value) or Decimal("0.00")
