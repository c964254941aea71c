"""Sending pace: never more than a provider allows, and close to it under load.

The guarantee, per pacer: in every half-open one-second window `[t, t + 1)` the units sent (a
message is one unit; an SMS counts its parts) are at most `floor(rate)` — the largest whole number
of units that is ≤ `rate` — with one exception: a single message bigger than that is sent alone
(no other send within one second of it), since it cannot be split.

How: strict spacing (the generic cell rate algorithm with room for one unit, no burst): after a
send of `u` units the next may start `u / floor(rate)` seconds later, so under continuous load
sends are evenly spread and the pace is exactly `floor(rate)` units a second. A burst allowance
of a second's worth is deliberately absent: with it, a sliding window straddling two bursts
could see twice the rate. Spacing alone keeps single-unit sends within the limit; multi-part
messages can still pile up at the end of a window (a 3-part SMS right after 98 single ones at
100/s), so each reservation also checks the sends of the last second and waits for the oldest to
leave when needed.

Whole messages cost some of the rate when they are big compared with it: a window can end up to
`largest message − 1` units short because the next message does not fit in it (at 5/s, 3-part
SMS go one per second: 3 units/s). With small messages at a high rate (1-3 parts at 100/s) the
pace stays above 95 % of the rate; at 1/s every message goes alone and the pace is exactly 1/s.

Rates that are not whole numbers: "3.5 per second" in every one-second window means at most 3
sends in any window, hence at most 3 a second over time; such a rate is paced at `floor(rate)`
(86 % of 3.5, and all that can be had). A rate below 1 (0.5/s) spaces sends by `units / rate`
(one unit every 2 s); every send is then "bigger than the rate" and goes alone.
`rate <= 0` means no limit.

Jitter: a send rarely starts exactly at its slot (sleep overshoot, the adapter's own work, the
network on the way to the provider), and a later send that is on time can then share a provider's
one-second window with an earlier one that was late. Two guards, both chosen by the caller:
`margin_s` makes every window the pacer keeps `1 + margin_s` seconds long (the pace is then
`floor(rate) / (1 + margin_s)`: with 30 ms, 97 % of the rate), absorbing that much lateness;
`started(booked, actual)` tells the pacer when a send really began, so the windows after a late
one are measured from its real time (a send later than the margin delays the one a window after
it; lateness within the margin costs nothing).

Times are the caller's monotonic clock in seconds (`time.monotonic()`), never read here.
Internally they are exact fractions and every returned time is a float whose exact value keeps
the guarantee, so rounding cannot squeeze an extra send into a window. A pacer's state lives in
this process only: one process (or one lease holder) must own a sender's pacer.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping
from fractions import Fraction

__all__ = ["Pacer", "Pacers"]


def _round_up(value: Fraction) -> tuple[float, Fraction]:
    """The smallest float ≥ value, and its exact value."""
    approximate = float(value)
    if Fraction(approximate) < value:
        approximate = math.nextafter(approximate, math.inf)
    return approximate, Fraction(approximate)


class Pacer:
    """Spaces the sends of one provider/sender. Thread-safe; state is in memory."""

    def __init__(self, rate_per_s: float, *, margin_s: float = 0.0) -> None:
        if math.isnan(rate_per_s):
            raise ValueError("a send rate must be a number of units per second, got NaN")
        if not 0 <= margin_s < 1:
            raise ValueError(f"a pacing margin is between 0 and 1 second, got {margin_s!r}")
        self.rate_per_s = rate_per_s
        self.unlimited = rate_per_s <= 0 or math.isinf(rate_per_s)
        # Units allowed in one second (0 when the rate is below one: every send goes alone).
        self.per_window = 0 if self.unlimited else math.floor(rate_per_s)
        self._window = 1 + Fraction(margin_s)  # the window the pacer keeps: a second and the margin
        spacing_rate = self.per_window if self.per_window >= 1 else rate_per_s
        self._spacing_rate = Fraction(1) if self.unlimited else Fraction(spacing_rate) / self._window
        self._next_start: Fraction | None = None  # the theoretical arrival time of the next send
        self._recent: deque[tuple[Fraction, int]] = deque()  # (start, units) of the last second
        self._recent_units = 0
        self._lock = threading.Lock()

    def reserve(self, now: float, units: int = 1) -> float:
        """Book a send of `units` and return when it may start (≥ now, monotonic seconds).

        Reservations are served in call order: each one starts no earlier than the previous.
        """
        if units < 1:
            raise ValueError(f"a send is at least one unit, got {units}")
        if math.isnan(now):
            raise ValueError("now must be a time in seconds, got NaN")
        if self.unlimited:
            return now
        with self._lock:
            start = Fraction(now)
            if self._next_start is not None and self._next_start > start:
                start = self._next_start
            start = self._after_recent(start, units)
            returned, exact = _round_up(start)
            self._forget_before(exact - self._window)
            self._recent.append((exact, units))
            self._recent_units += units
            self._next_start = exact + Fraction(units) / self._spacing_rate
            return returned

    def started(self, booked: float, actual: float) -> None:
        """The send booked for `booked` really started at `actual`: when later, the windows after
        it are measured from then. The spacing keeps to the booked schedule (a late send does not
        push the ones after it back): the windows alone decide whether lateness costs a slot."""
        if self.unlimited or actual <= booked:
            return
        with self._lock:
            exact_booked, exact_actual = Fraction(booked), Fraction(actual)
            entries = list(self._recent)
            for index in range(len(entries) - 1, -1, -1):
                at, units = entries[index]
                if at == exact_booked:
                    entries[index] = (exact_actual, units)
                    self._recent = deque(sorted(entries))
                    return

    def _forget_before(self, cutoff: Fraction) -> None:
        while self._recent and self._recent[0][0] <= cutoff:
            self._recent_units -= self._recent.popleft()[1]

    def _after_recent(self, start: Fraction, units: int) -> Fraction:
        """The earliest time ≥ start at which the sends of the second before leave room."""
        self._forget_before(start - self._window)
        if units > self.per_window:
            # Too big to share a window: wait until the last send is a full window old.
            if self._recent:
                start = max(start, self._recent[-1][0] + self._window)
            return start
        in_window = self._recent_units
        for sent_at, sent_units in self._recent:
            if in_window + units <= self.per_window:
                break
            start = max(start, sent_at + self._window)  # this one must leave the window first
            in_window -= sent_units
        return start


class Pacers:
    """One pacer per (provider, sender), at the most specific configured rate.

    Rates come from the `send_rates` setting: `"provider:sender"` (e.g. "twilio:+15550001111"),
    else `"provider"` (which then applies to each of its senders separately — providers limit per
    sending number or host), else no limit.
    """

    def __init__(self, rates: Mapping[str, float], *, margin_s: float = 0.0) -> None:
        for key, rate in rates.items():
            if not isinstance(rate, int | float) or math.isnan(rate):
                raise ValueError(f"send_rates[{key!r}] must be a number of units per second, got {rate!r}")
        self.rates = dict(rates)
        self.margin_s = margin_s
        self._pacers: dict[tuple[str, str], Pacer] = {}
        self._lock = threading.Lock()

    def rate_for(self, provider: str, sender: str) -> float:
        specific = self.rates.get(f"{provider}:{sender}")
        if specific is not None:
            return specific
        return self.rates.get(provider, 0.0)

    def pacer_for(self, provider: str, sender: str) -> Pacer:
        with self._lock:
            pacer = self._pacers.get((provider, sender))
            if pacer is None:
                pacer = self._pacers[(provider, sender)] = Pacer(
                    self.rate_for(provider, sender), margin_s=self.margin_s
                )
            return pacer

    def reserve(self, provider: str, sender: str, now: float, units: int = 1) -> float:
        return self.pacer_for(provider, sender).reserve(now, units)

    def started(self, provider: str, sender: str, booked: float, actual: float) -> None:
        self.pacer_for(provider, sender).started(booked, actual)
