"""Retry backoff (exponential, full jitter, Retry-After as a floor) and giving up."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winback.messaging.retry import backoff, give_up


def test_waits_stay_within_the_growing_ceiling() -> None:
    rng = random.Random(1)
    for attempt, ceiling in [(1, 30.0), (2, 60.0), (3, 120.0), (4, 240.0), (10, 15_360.0), (11, 21_600.0)]:
        waits = [backoff(attempt, rng=rng) for _ in range(500)]
        assert all(0.0 <= wait <= ceiling for wait in waits)
        assert max(waits) > 0.9 * ceiling  # the whole range is used …
        assert min(waits) < 0.1 * ceiling  # … from near zero (full jitter)


def test_the_cap_holds_for_huge_attempt_numbers() -> None:
    rng = random.Random(2)
    for attempt in (50, 1_023, 1_024, 10**6):
        assert 0.0 <= backoff(attempt, rng=rng) <= 6 * 3600


def test_custom_base_and_cap() -> None:
    rng = random.Random(3)
    assert all(backoff(3, base_s=1.0, cap_s=3.0, rng=rng) <= 3.0 for _ in range(200))
    assert all(backoff(1, base_s=0.5, cap_s=100.0, rng=rng) <= 0.5 for _ in range(200))


def test_retry_after_is_a_floor() -> None:
    rng = random.Random(4)
    assert all(backoff(1, rng=rng, retry_after_s=120.0) == 120.0 for _ in range(100))  # above 30 s
    assert backoff(1, rng=rng, retry_after_s=10 * 3600) == 10 * 3600  # beyond the cap: the provider wins
    waits = [backoff(5, rng=rng, retry_after_s=1.0) for _ in range(200)]
    assert all(wait >= 1.0 for wait in waits) and max(waits) > 100  # the jitter still applies above it


@pytest.mark.parametrize("nonsense", [math.nan, -5.0, math.inf])
def test_meaningless_retry_after_is_ignored(nonsense: float) -> None:
    wait = backoff(2, rng=random.Random(5), retry_after_s=nonsense)
    assert 0.0 <= wait <= 60.0


def test_deterministic_for_a_seed() -> None:
    first = [backoff(n, rng=random.Random(9)) for n in range(1, 9)]
    second = [backoff(n, rng=random.Random(9)) for n in range(1, 9)]
    assert first == second


def test_bad_arguments() -> None:
    rng = random.Random(6)
    with pytest.raises(ValueError, match="attempt counts from 1, got 0"):
        backoff(0, rng=rng)
    with pytest.raises(ValueError, match="positive base and cap"):
        backoff(1, base_s=0.0, rng=rng)
    with pytest.raises(ValueError, match="positive base and cap"):
        backoff(1, cap_s=math.inf, rng=rng)
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        give_up(1, 0)


def test_give_up_after_the_last_attempt() -> None:
    assert [give_up(attempt, 3) for attempt in (1, 2, 3, 4)] == [False, False, True, True]
    assert give_up(1, 1)
    assert not give_up(7, 8) and give_up(8, 8)


@settings(max_examples=300, deadline=None)
@given(
    attempt=st.integers(1, 5_000),
    base=st.floats(0.001, 1_000.0),
    cap=st.floats(0.001, 100_000.0),
    retry_after=st.one_of(st.none(), st.floats(0.0, 1e6)),
    seed=st.integers(0, 2**32 - 1),
)
def test_bounds(attempt: int, base: float, cap: float, retry_after: float | None, seed: int) -> None:
    wait = backoff(attempt, base_s=base, cap_s=cap, rng=random.Random(seed), retry_after_s=retry_after)
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 1_000))
    floor = retry_after or 0.0
    assert floor <= wait
    assert wait <= max(ceiling, floor)
