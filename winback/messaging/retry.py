"""When to try a failed send again, and when to stop.

`backoff` is exponential backoff with full jitter: after the n-th failed attempt the wait is drawn
uniformly from [0, min(cap, base · 2^(n-1))]. Full jitter spreads retries of many messages that
failed together (a provider outage) instead of sending them back in waves. A provider's
Retry-After is a floor: the wait is never shorter than what the provider asked for, even when
that is beyond the cap (the provider knows best when it will take messages again).

Pure: randomness comes from the `rng` passed in, so tests and replays are deterministic.
"""

from __future__ import annotations

import math
import random

__all__ = ["backoff", "give_up"]

DEFAULT_BASE_S = 30.0
DEFAULT_CAP_S = 6 * 3600.0


def backoff(
    attempt: int,
    *,
    base_s: float = DEFAULT_BASE_S,
    cap_s: float = DEFAULT_CAP_S,
    rng: random.Random,
    retry_after_s: float | None = None,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1 = the first send failed)."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    if not (0 < base_s < math.inf and 0 < cap_s < math.inf):
        raise ValueError(f"backoff needs a positive base and cap, got base_s={base_s!r}, cap_s={cap_s!r}")
    # base · 2^(attempt-1) would overflow a float after ~1,000 attempts; the cap comes long before.
    ceiling = min(cap_s, math.ldexp(base_s, min(attempt - 1, 1_000)))
    wait = rng.uniform(0.0, ceiling)
    if retry_after_s is not None and math.isfinite(retry_after_s) and retry_after_s > wait:
        wait = retry_after_s
    return wait


def give_up(attempt: int, max_attempts: int) -> bool:
    """Whether `attempt` attempts (the failed one included) are all a message gets."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    return attempt >= max_attempts
