"""Discount code patterns, generation and what an action asks for (pure)."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from winback.flows.definition import CreateDiscount, Duration
from winback.messaging import discounts
from winback.messaging.discounts import ALPHABET, DiscountSpec, generate_code, validate_pattern

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _action(**fields: Any) -> CreateDiscount:
    return CreateDiscount(type="create_discount", **{"kind": "percent", "value": Decimal("10"), **fields})


def test_default_pattern_makes_prefixed_unambiguous_codes() -> None:
    code = generate_code(discounts.DEFAULT_PATTERN, random.Random(1))
    assert re.fullmatch(rf"WB-[{ALPHABET}]{{8}}", code)
    assert not set(code[3:]) & set("0O1IL")


def test_same_seed_same_code_and_different_seeds_differ() -> None:
    assert generate_code("WB-{random:8}", random.Random(7)) == generate_code(
        "WB-{random:8}", random.Random(7)
    )
    assert len({generate_code("WB-{random:8}", random.Random(seed)) for seed in range(50)}) == 50


def test_literal_text_is_upper_cased_and_digits_are_digits() -> None:
    code = generate_code("spring_{digits:9}-{random:4}", random.Random(3))
    assert re.fullmatch(rf"SPRING_\d{{9}}-[{ALPHABET}]{{4}}", code)


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("WB-{rand:8}", "unknown placeholder"),
        ("WB-{random}", "unknown placeholder"),
        ("WB-{random:3}{random:8}", "between 4 and 32"),
        ("WB-{random:33}", "between 4 and 32"),
        ("WB-{random:5}", "too little randomness"),
        ("{digits:8}", "too little randomness"),
        ("WB-{random:8", "unbalanced brace"),
        ("WB-random:8}", "unbalanced brace"),
        ("WB {random:8}", "letters, digits"),
        ("X" * 40 + "{random:30}", "at most 64"),
        ("   ", "empty"),
    ],
)
def test_bad_patterns_are_refused_naming_the_problem(pattern: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        validate_pattern(pattern)


@pytest.mark.parametrize(
    "pattern", ["WB-{random:8}", "{random:6}", "{digits:9}", "{random:4}-{digits:4}", "WELCOME10", "X" * 64]
)
def test_good_patterns_pass(pattern: str) -> None:
    validate_pattern(pattern)


@given(
    prefix=st.text(alphabet="ABCdef0123-_", max_size=10),
    random_count=st.integers(min_value=6, max_value=32),
    digit_count=st.one_of(st.none(), st.integers(min_value=4, max_value=16)),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_generated_codes_match_their_pattern(
    prefix: str, random_count: int, digit_count: int | None, seed: int
) -> None:
    pattern = f"{prefix}{{random:{random_count}}}" + (f"-{{digits:{digit_count}}}" if digit_count else "")
    if len(prefix) + random_count + (1 + digit_count if digit_count else 0) > 64:
        with pytest.raises(ValueError, match="at most 64"):
            validate_pattern(pattern)
        return
    code = generate_code(pattern, random.Random(seed))
    expected = re.escape(prefix.upper()) + f"[{ALPHABET}]{{{random_count}}}"
    if digit_count:
        expected += rf"-\d{{{digit_count}}}"
    assert re.fullmatch(expected, code)
    assert code == code.upper()
    assert len(code) <= 64


def test_spec_for_a_unique_code_expires_after_the_duration() -> None:
    action = _action(kind="amount", value=Decimal("5.00"), expires_after=Duration(amount=3, unit="days"))
    spec = DiscountSpec.from_action(action, NOW, "eur")
    assert spec.kind == "amount" and spec.value == Decimal("5.00") and spec.currency == "EUR"
    assert spec.single_use is True and spec.static_code is None
    assert spec.expires_at == NOW + timedelta(days=3)


def test_spec_for_a_static_code_is_shared_and_does_not_expire() -> None:
    spec = DiscountSpec.from_action(
        _action(static_code=" welcome10 ", expires_after=Duration(amount=1, unit="days")), NOW, "USD"
    )
    assert spec.static_code == "WELCOME10" and spec.single_use is False and spec.expires_at is None
    assert DiscountSpec.from_action(_action(pattern="SPRING"), NOW, "USD").static_code == "SPRING"


def test_spec_free_shipping_has_no_value_and_no_expiry_without_a_duration() -> None:
    spec = DiscountSpec.from_action(_action(kind="free_shipping", value=Decimal("3")), NOW, "USD")
    assert spec.value == 0 and spec.expires_at is None and spec.single_use


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"kind": "percent", "value": Decimal("0")}, "above 0"),
        ({"kind": "percent", "value": Decimal("120")}, "at most 100"),
        ({"kind": "amount", "value": Decimal("0")}, "above 0"),
        ({"pattern": "WB-{random:4}"}, "too little randomness"),
        ({"static_code": "TWO WORDS"}, "without spaces"),
    ],
)
def test_spec_refuses_actions_that_cannot_make_a_code(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        DiscountSpec.from_action(_action(**fields), NOW, "USD")


def test_template_value() -> None:
    row: Any = SimpleNamespace(
        code="WB-ABCDEFGH", kind="percent", value=Decimal("10.00"), currency="USD",
        expires_at=NOW + timedelta(days=2), single_use=True,
    )  # fmt: skip
    assert discounts.as_template_value(row) == {
        "code": "WB-ABCDEFGH",
        "kind": "percent",
        "value": Decimal("10"),
        "currency": "USD",
        "expires_at": "2026-03-04T09:00:00+00:00",
        "single_use": True,
        "label": "10% off",
    }
    row.kind, row.value, row.expires_at = "amount", Decimal("7.50"), None
    assert discounts.as_template_value(row)["label"] == "7.50 USD off"
    assert discounts.as_template_value(row)["expires_at"] is None
