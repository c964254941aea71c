"""Discount codes: made from a pattern (or a static code), recorded, offered to message templates.

The pure half — `validate_pattern`, `generate_code`, `DiscountSpec` — does no I/O. The database
half records each code in `discount_codes`:

- A **unique code** (from a pattern such as `WB-{random:8}`) is one row per outbox row: issuing
  it again for the same outbox row (a retried send) returns the row made the first time. It is
  single use.
- A **static code** (`static_code: WELCOME10`, or a pattern without placeholders) is the same
  text for everyone. `discount_codes.code` is unique, so it is recorded once, with no customer,
  run or outbox row, and every issue returns that shared row. A run still finds it: its
  `create_discount` outbox row names the code (see `codes_for_run`). A static code is one offer
  (one Shopify price rule) for everyone, so it has no per-customer expiry and is not single use.

Codes are upper-case; Shopify compares codes case-insensitively.
"""

from __future__ import annotations

import logging
import math
import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from winback.db.models import DiscountCode, OutboxEntry
from winback.flows.definition import CreateDiscount

log = logging.getLogger(__name__)

# Upper-case letters and digits a reader cannot confuse: no 0/O, 1/I/L.
ALPHABET: Final = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
DIGITS: Final = "0123456789"
DEFAULT_PATTERN: Final = "WB-{random:8}"
MAX_CODE_LENGTH: Final = 64
PLACEHOLDER_MIN, PLACEHOLDER_MAX = 4, 32
MIN_RANDOM_CHARS: Final = 6  # of ALPHABET, or the same randomness from digits
MAX_ATTEMPTS: Final = 5  # inserts tried before a collision is reported

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_KNOWN = re.compile(r"^(random|digits):(\d+)$")
_LITERAL = re.compile(r"^[A-Za-z0-9_\-]*$")
_STATIC = re.compile(r"^[^\s{}]{1,64}$")
_MIN_BITS: Final = MIN_RANDOM_CHARS * math.log2(len(ALPHABET))

Kind = Literal["percent", "amount", "free_shipping"]


class CodeCollisionError(RuntimeError):
    """Every generated code was already taken: the pattern leaves too few codes free."""


# --- patterns (pure) ----------------------------------------------------------------------------


def _parts(pattern: str) -> list[tuple[str, str, int]]:
    """The pattern as ("text", literal, 0) and ("random"|"digits", "", N) parts, or ValueError."""
    parts: list[tuple[str, str, int]] = []
    position = 0
    for match in _PLACEHOLDER.finditer(pattern):
        parts.append(("text", pattern[position : match.start()], 0))
        inner = match.group(1).strip()
        known = _KNOWN.match(inner)
        if known is None:
            raise ValueError(
                f"unknown placeholder {match.group(0)!r} in pattern {pattern!r}: "
                "use {random:N} (letters and digits) or {digits:N}"
            )
        count = int(known.group(2))
        if not PLACEHOLDER_MIN <= count <= PLACEHOLDER_MAX:
            raise ValueError(
                f"{match.group(0)!r} in pattern {pattern!r}: N must be between "
                f"{PLACEHOLDER_MIN} and {PLACEHOLDER_MAX}, got {count}"
            )
        parts.append((known.group(1), "", count))
        position = match.end()
    parts.append(("text", pattern[position:], 0))
    for kind, literal, _ in parts:
        if kind != "text":
            continue
        if "{" in literal or "}" in literal:
            raise ValueError(f"unbalanced brace in pattern {pattern!r}")
        if not _LITERAL.match(literal):
            bad = next(ch for ch in literal if not _LITERAL.match(ch))
            raise ValueError(
                f"pattern {pattern!r} has {bad!r}: codes may only hold letters, digits, '-' and '_'"
            )
    return [part for part in parts if part[0] != "text" or part[1]]


def is_static_pattern(pattern: str) -> bool:
    """A pattern without placeholders is a static code."""
    return _PLACEHOLDER.search(pattern) is None


def validate_pattern(pattern: str) -> None:
    """Raise ValueError naming the problem: an unknown placeholder, N outside 4..32, too little
    randomness for a unique code (6 characters of the code alphabet, or as much from digits;
    a pattern without placeholders is a static code and needs none), a code over 64 characters."""
    if not pattern.strip():
        raise ValueError("the code pattern is empty")
    parts = _parts(pattern)
    length = sum(len(literal) if kind == "text" else count for kind, literal, count in parts)
    if length > MAX_CODE_LENGTH:
        raise ValueError(f"pattern {pattern!r} makes codes of {length} characters; at most {MAX_CODE_LENGTH}")
    if is_static_pattern(pattern):
        return
    bits = sum(
        count * math.log2(len(ALPHABET) if kind == "random" else len(DIGITS))
        for kind, _, count in parts
        if kind != "text"
    )
    if bits < _MIN_BITS - 1e-9:
        raise ValueError(
            f"pattern {pattern!r} has too little randomness for unique codes: use at least "
            f"{{random:{MIN_RANDOM_CHARS}}} (or {{digits:9}})"
        )


def generate_code(pattern: str, rng: random.Random) -> str:
    """A code from the pattern, upper-case. `{random:N}`: N of ALPHABET; `{digits:N}`: N digits."""
    validate_pattern(pattern)
    out: list[str] = []
    for kind, literal, count in _parts(pattern):
        if kind == "text":
            out.append(literal.upper())
        else:
            symbols = ALPHABET if kind == "random" else DIGITS
            out.append("".join(rng.choice(symbols) for _ in range(count)))
    return "".join(out)


def normalise_code(code: str) -> str:
    """How codes are stored and compared: trimmed, upper-case."""
    return code.strip().upper()


def validate_static_code(code: str) -> str:
    """The static code normalised, or ValueError (empty, spaces, braces, over 64 characters)."""
    normalised = normalise_code(code)
    if not _STATIC.match(normalised):
        raise ValueError(
            f"static code {code!r} must be 1 to {MAX_CODE_LENGTH} characters without spaces or braces"
        )
    return normalised


# --- what an action asks for (pure) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiscountSpec:
    """A `create_discount` action made concrete at a moment.

    `static_code` is set for a static code (shared by everyone, not single use, no expiry of its
    own); otherwise `pattern` makes a unique, single-use code that expires `expires_after` after
    it is issued."""

    kind: Kind
    value: Decimal
    currency: str
    single_use: bool
    expires_at: datetime | None
    pattern: str
    static_code: str | None

    @classmethod
    def from_action(cls, action: CreateDiscount, now: datetime, currency: str) -> DiscountSpec:
        if action.kind == "percent" and not Decimal(0) < action.value <= Decimal(100):
            raise ValueError(f"a percent discount needs a value above 0 and at most 100, got {action.value}")
        if action.kind == "amount" and action.value <= 0:
            raise ValueError(f"an amount discount needs a value above 0, got {action.value}")
        if len(currency) != 3 or not currency.isalpha():
            raise ValueError(f"currency must be a 3-letter ISO 4217 code, got {currency!r}")
        value = Decimal(0) if action.kind == "free_shipping" else action.value
        static: str | None = None
        if action.static_code is not None:
            static = validate_static_code(action.static_code)
        else:
            validate_pattern(action.pattern)
            if is_static_pattern(action.pattern):
                static = validate_static_code(action.pattern)
        expires_at = None
        if static is None and action.expires_after is not None:
            expires_at = now + timedelta(seconds=action.expires_after.seconds)
        return cls(
            kind=action.kind,
            value=value,
            currency=currency.upper(),
            single_use=static is None,
            expires_at=expires_at,
            pattern=action.pattern,
            static_code=static,
        )


def _plain_number(value: Decimal) -> Decimal:
    """10.00 → 10 (a percentage reads "10 %"), 7.50 stays 7.50."""
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value


def as_template_value(code: DiscountCode) -> dict[str, Any]:
    """What message templates see as `discount` and `discounts.<node id>`."""
    value = _plain_number(Decimal(code.value))
    if code.kind == "percent":
        label = f"{value}% off"
    elif code.kind == "amount":
        label = f"{value} {code.currency} off"
    else:
        label = "free shipping"
    return {
        "code": code.code,
        "kind": code.kind,
        "value": value,
        "currency": code.currency,
        "expires_at": code.expires_at.isoformat() if code.expires_at is not None else None,
        "single_use": code.single_use,
        "label": label,
    }


# --- database -----------------------------------------------------------------------------------


def issue_code(
    session: Session,
    *,
    action: CreateDiscount,
    customer_id: int | None,
    outbox_id: int | None,
    run_id: int | None,
    node_id: str | None,
    currency: str,
    now: datetime,
    rng: random.Random,
) -> DiscountCode:
    """The code this outbox row stands for, made and recorded once.

    Unique codes: a retry for the same `outbox_id` returns the row already made; a generated code
    that is taken is replaced by another (each insert in its own savepoint), `CodeCollisionError`
    after MAX_ATTEMPTS. Static codes: the one shared row for that code. ValueError for an action
    that cannot make a code (bad pattern, percent over 100 …)."""
    spec = DiscountSpec.from_action(action, now, currency)
    if spec.static_code is not None:
        return _static_row(session, spec, now)
    if outbox_id is not None:
        existing = _by_outbox(session, outbox_id)
        if existing is not None:
            return existing
    for _ in range(MAX_ATTEMPTS):
        candidate = generate_code(spec.pattern, rng)
        row = DiscountCode(
            code=candidate,
            customer_id=customer_id,
            outbox_id=outbox_id,
            run_id=run_id,
            node_id=node_id,
            kind=spec.kind,
            value=spec.value,
            currency=spec.currency,
            single_use=True,
            expires_at=spec.expires_at,
            created_at=now,
        )
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:
            if outbox_id is not None:
                raced = _by_outbox(session, outbox_id)
                if raced is not None:  # another worker issued it for this outbox row meanwhile
                    return raced
            log.info("discount code %s is taken; generating another", candidate)
            continue
        return row
    raise CodeCollisionError(
        f"{MAX_ATTEMPTS} codes generated from pattern {spec.pattern!r} were all taken; "
        "add more {random:N} characters to the pattern"
    )


def _by_outbox(session: Session, outbox_id: int) -> DiscountCode | None:
    return session.scalars(select(DiscountCode).where(DiscountCode.outbox_id == outbox_id)).one_or_none()


def _by_code(session: Session, code: str) -> DiscountCode | None:
    return session.scalars(select(DiscountCode).where(DiscountCode.code == code)).one_or_none()


def _static_row(session: Session, spec: DiscountSpec, now: datetime) -> DiscountCode:
    assert spec.static_code is not None
    for _ in range(2):  # a concurrent first issue may win the insert; then read theirs
        existing = _by_code(session, spec.static_code)
        if existing is not None:
            if existing.single_use:
                raise ValueError(
                    f"static code {spec.static_code!r} is already a unique code issued to a customer"
                )
            if (existing.kind, Decimal(existing.value)) != (spec.kind, spec.value):
                log.warning(
                    "static code %s is recorded as %s %s; this action says %s %s (the record stands)",
                    spec.static_code, existing.kind, existing.value, spec.kind, spec.value,
                )  # fmt: skip
            return existing
        row = DiscountCode(
            code=spec.static_code,
            customer_id=None,
            outbox_id=None,
            run_id=None,
            node_id=None,
            kind=spec.kind,
            value=spec.value,
            currency=spec.currency,
            single_use=False,
            expires_at=None,
            created_at=now,
        )
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:
            continue
        return row
    raise CodeCollisionError(f"could not record static code {spec.static_code!r}")


def codes_for_run(session: Session, run_id: int) -> dict[str, DiscountCode]:
    """The codes a run's `create_discount` nodes issued, by node id, oldest first (so the last
    value is the latest: templates see it as `discount`). Static codes are found through the run's
    outbox rows, which name them; a static code shows once it has been recorded."""
    found: list[tuple[int, str, DiscountCode]] = []
    seen: set[str] = set()
    for row in session.scalars(
        select(DiscountCode).where(DiscountCode.run_id == run_id).order_by(DiscountCode.id)
    ):
        if row.node_id is not None:
            found.append((row.outbox_id or 0, row.node_id, row))
            seen.add(row.node_id)
    statics: dict[str, tuple[int, str]] = {}
    outbox = session.execute(
        select(OutboxEntry.id, OutboxEntry.node_id, OutboxEntry.payload).where(
            OutboxEntry.run_id == run_id, OutboxEntry.kind == "create_discount"
        )
    )
    for outbox_id, node_id, payload in outbox:
        if node_id is None or node_id in seen:
            continue
        code = _static_code_of(payload)
        if code is not None:
            statics[node_id] = (outbox_id, code)
    if statics:
        rows = {
            row.code: row
            for row in session.scalars(
                select(DiscountCode).where(
                    DiscountCode.code.in_(sorted({code for _, code in statics.values()}))
                )
            )
        }
        for node_id, (outbox_id, code) in statics.items():
            if code in rows:
                found.append((outbox_id, node_id, rows[code]))
    found.sort(key=lambda item: item[0])
    return {node_id: row for _, node_id, row in found}


def _static_code_of(payload: Any) -> str | None:
    """The static code an outbox payload's action names, normalised (None: a unique code)."""
    action = payload.get("action") if isinstance(payload, dict) else None
    if not isinstance(action, dict):
        return None
    static = action.get("static_code")
    if isinstance(static, str) and static.strip():
        return normalise_code(static)
    pattern = action.get("pattern")
    if isinstance(pattern, str) and pattern.strip() and is_static_pattern(pattern):
        return normalise_code(pattern)
    return None


def template_values(session: Session, run_id: int) -> dict[str, Any]:
    """`{"discounts": {node id: value}, "discount": latest value or None}` for a run's messages."""
    codes = {node_id: as_template_value(row) for node_id, row in codes_for_run(session, run_id).items()}
    return {"discounts": codes, "discount": list(codes.values())[-1] if codes else None}


def mark_used(session: Session, code: str, order_id: str | None, now: datetime) -> DiscountCode | None:
    """Record that an order used `code` (the Segment ecommerce `coupon`). The first use sets
    `used_at`; later uses (of a static code, or a replayed order) change nothing. None when winback
    did not make the code."""
    row = _by_code(session, normalise_code(code))
    if row is None:
        return None
    if row.used_at is None:
        row.used_at = now
        log.info("discount code %s used by order %s", row.code, order_id)
    return row
