"""Pacing: simulated sends on a fake monotonic clock, checked over every sliding one-second window."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winback.messaging.pacing import Pacer, Pacers

Send = tuple[float, int]  # (start, units)


def _busiest_window(sends: list[Send]) -> tuple[int, int]:
    """The most units, and the number of sends carrying them, in any window [t, t + 1).

    The busiest window starts at a send, so only those windows are checked; times are compared
    exactly (as fractions).
    """
    exact = [(Fraction(start), units) for start, units in sends]
    best = (0, 0)
    end = 0
    units_in = 0
    for begin, (start, _) in enumerate(exact):
        while end < len(exact) and exact[end][0] < start + 1:
            units_in += exact[end][1]
            end += 1
        best = max(best, (units_in, end - begin))
        units_in -= exact[begin][1]
    return best


def _assert_within_rate(sends: list[Send], rate: float) -> None:
    limit = math.floor(rate)
    exact = [(Fraction(start), units) for start, units in sends]
    end = 0
    units_in = 0
    for begin, (start, units) in enumerate(exact):
        while end < len(exact) and exact[end][0] < start + 1:
            units_in += exact[end][1]
            end += 1
        alone = end - begin == 1 and (begin == 0 or exact[begin - 1][0] <= start - 1)
        assert units_in <= limit or alone, f"{units_in} units in [{float(start)}, {float(start) + 1})"
        units_in -= units


def _continuous(rate: float, sizes: list[int], start: float = 1000.0) -> list[Send]:
    """Sends queued back to back: each asks as soon as the previous one went out."""
    pacer = Pacer(rate)
    now = start
    sends: list[Send] = []
    for units in sizes:
        at = pacer.reserve(now, units)
        assert at >= now
        sends.append((at, units))
        now = at
    return sends


def _utilisation(sends: list[Send], rate: float) -> float:
    elapsed = sends[-1][0] - sends[0][0]
    units = sum(units for _, units in sends[:-1])  # the last send's units belong to the time after it
    return units / elapsed / rate


@pytest.mark.parametrize("rate", [1.0, 100.0, 20.0, 50.0])
def test_whole_rates_are_used_fully_and_never_exceeded(rate: float) -> None:
    sends = _continuous(rate, [1] * 2000)
    _assert_within_rate(sends, rate)
    assert _busiest_window(sends)[0] == rate
    assert _utilisation(sends, rate) >= 0.95


def test_fractional_rate_paces_at_the_whole_part() -> None:
    # 3.5 a second in every one-second window allows 3 sends per window: 3 a second is the most.
    sends = _continuous(3.5, [1] * 1500)
    _assert_within_rate(sends, 3.5)
    assert _busiest_window(sends)[0] == 3
    assert _utilisation(sends, 3.0) >= 0.95
    gaps = {round(b[0] - a[0], 9) for a, b in zip(sends, sends[1:], strict=False)}
    assert gaps == {round(1 / 3, 9)}  # evenly spread, no bursts


def _whole_message_bound(rate: float, largest: int) -> float:
    """The share of floor(rate) any in-order schedule can promise with messages of up to `largest`
    units: a window can be left up to largest - 1 units short when the next message does not fit."""
    per_window = math.floor(rate)
    if largest >= per_window:
        return 1.0 / per_window if per_window else 1.0
    return (per_window - largest + 1) / per_window


def test_multi_part_messages_stay_within_the_rate() -> None:
    rng = random.Random(5)
    for rate in (100.0, 3.5, 10.0, 20.0):
        sizes = [rng.choice([1, 1, 1, 2, 3]) for _ in range(2000)]
        sends = _continuous(rate, sizes)
        _assert_within_rate(sends, rate)
        assert _utilisation(sends, math.floor(rate)) >= _whole_message_bound(rate, 3) - 0.01, rate
    sizes = [rng.choice([1, 1, 1, 2, 3]) for _ in range(3000)]
    assert _utilisation(_continuous(100.0, sizes), 100.0) >= 0.95  # small messages, high rate


def test_three_part_messages_at_one_per_second() -> None:
    sends = _continuous(1.0, [3] * 200)
    _assert_within_rate(sends, 1.0)
    assert _busiest_window(sends) == (3, 1)  # bigger than the rate: allowed, but alone
    assert {b[0] - a[0] for a, b in zip(sends, sends[1:], strict=False)} == {3.0}
    assert _utilisation(sends, 1.0) >= 0.95


def test_all_three_part_at_a_hundred() -> None:
    sends = _continuous(100.0, [3] * 2000)
    _assert_within_rate(sends, 100.0)
    assert _utilisation(sends, 100.0) >= 0.95


def test_a_big_message_waits_for_the_window_to_clear_and_clears_it() -> None:
    pacer = Pacer(2.0)
    assert pacer.reserve(10.0) == 10.0
    assert pacer.reserve(10.0) == 10.5
    assert pacer.reserve(10.5, units=5) == 11.5  # alone: one second after the last send
    assert pacer.reserve(11.5) == 14.0  # 5 units at 2 a second


def test_rate_below_one_spaces_by_units_over_rate() -> None:
    sends = _continuous(0.5, [1] * 50)
    assert {b[0] - a[0] for a, b in zip(sends, sends[1:], strict=False)} == {2.0}
    _assert_within_rate(sends, 0.5)
    assert _utilisation(sends, 0.5) >= 0.95


def test_idle_pacer_sends_at_once_and_never_earlier_than_asked() -> None:
    pacer = Pacer(1.0)
    assert pacer.reserve(5.0) == 5.0
    assert pacer.reserve(100.0) == 100.0
    assert pacer.reserve(100.2) == 101.0
    assert pacer.reserve(50.0) == 102.0  # a clock going back still waits its turn


@pytest.mark.parametrize("rate", [0.0, -1.0, math.inf])
def test_no_limit(rate: float) -> None:
    pacer = Pacer(rate)
    assert [pacer.reserve(7.25, 3) for _ in range(1000)] == [7.25] * 1000


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one unit"):
        Pacer(1.0).reserve(0.0, 0)
    with pytest.raises(ValueError, match="NaN"):
        Pacer(math.nan)
    with pytest.raises(ValueError, match=r"send_rates\['smtp'\]"):
        Pacers({"smtp": math.nan})


def test_large_clock_values_keep_the_guarantee() -> None:
    sends = _continuous(100.0, [1] * 2000, start=1.0e9 + 0.123)
    _assert_within_rate(sends, 100.0)
    assert _utilisation(sends, 100.0) >= 0.95


def test_pacers_pick_the_most_specific_rate_per_sender() -> None:
    pacers = Pacers({"twilio": 1.0, "twilio:+15550001111": 10.0, "smtp": 20.0})
    assert pacers.rate_for("twilio", "+15550001111") == 10.0
    assert pacers.rate_for("twilio", "+15550002222") == 1.0
    assert pacers.rate_for("smtp", "mail.example") == 20.0
    assert pacers.rate_for("webpush", "fcm.googleapis.com") == 0.0
    assert pacers.pacer_for("twilio", "a") is pacers.pacer_for("twilio", "a")
    # Each sender has its own pace, even when the rate comes from the provider's entry.
    assert pacers.reserve("twilio", "a", 0.0) == 0.0
    assert pacers.reserve("twilio", "b", 0.0) == 0.0
    assert pacers.reserve("twilio", "a", 0.0) == 1.0
    assert pacers.reserve("webpush", "x", 0.0) == 0.0
    assert pacers.reserve("webpush", "x", 0.0) == 0.0


@settings(max_examples=100, deadline=None)
@given(
    rate=st.sampled_from([1.0, 2.0, 3.5, 7.0, 100.0, 0.5, 1.5]),
    arrivals=st.lists(
        st.tuples(st.floats(0.0, 2.0, allow_nan=False), st.integers(1, 5)), min_size=1, max_size=200
    ),
    start=st.floats(0.0, 1.0e7, allow_nan=False),
)
def test_any_arrival_pattern_stays_within_the_rate(
    rate: float, arrivals: list[tuple[float, int]], start: float
) -> None:
    pacer = Pacer(rate)
    now = start
    sends: list[Send] = []
    for gap, units in arrivals:
        now += gap
        at = pacer.reserve(now, units)
        assert at >= now
        assert not sends or at >= sends[-1][0]
        sends.append((at, units))
    _assert_within_rate(sends, rate)


@settings(max_examples=25, deadline=None)
@given(rate=st.sampled_from([1.0, 3.5, 10.0, 100.0]), seed=st.integers(0, 2**32 - 1))
def test_backlog_is_drained_near_the_rate(rate: float, seed: int) -> None:
    rng = random.Random(seed)
    sizes = [rng.choice([1, 1, 2, 3]) for _ in range(500)]
    sends = _continuous(rate, sizes, start=rng.uniform(0, 1e6))
    _assert_within_rate(sends, rate)
    expected = 1.0 if rate < 2 else _whole_message_bound(rate, 3)  # at 1/s every send goes alone
    assert _utilisation(sends, math.floor(rate)) >= min(expected, 0.95) - 0.01
