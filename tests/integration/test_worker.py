"""Leases and the worker loop on both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from winback.db.models import Lease
from winback.kernel.clock import VirtualClock
from winback.worker import leases

TTL = 30.0  # seconds


def _lease_rows(engine: sa.Engine) -> list[tuple[str, str]]:
    with sa.orm.Session(engine) as session:
        return [(row.name, row.holder) for row in session.scalars(sa.select(Lease).order_by(Lease.name))]


# --- leases ---------------------------------------------------------------------------------------


def test_first_holder_takes_a_free_lease_and_a_second_is_refused(
    engine: sa.Engine, clock: VirtualClock
) -> None:
    # given nobody holds "job"
    # when worker A asks for it, then worker B
    first = leases.acquire(engine, "job", "A", clock.now(), TTL)
    second = leases.acquire(engine, "job", "B", clock.now(), TTL)
    # then only A holds it
    assert (first, second) == (True, False)
    assert leases.current_holder(engine, "job", clock.now()) == "A"
    assert _lease_rows(engine) == [("job", "A")]


def test_holder_renews_and_renewal_pushes_expiry(engine: sa.Engine, clock: VirtualClock) -> None:
    # given A took the lease at t0
    assert leases.acquire(engine, "job", "A", clock.now(), TTL)
    # when A renews 20 s later and B tries 20 s after that (40 s after t0, 20 s after renewal)
    clock.advance(20)
    assert leases.acquire(engine, "job", "A", clock.now(), TTL)
    clock.advance(20)
    # then B is still refused: the renewal moved expiry to t0 + 50 s
    assert leases.acquire(engine, "job", "B", clock.now(), TTL) is False
    with sa.orm.Session(engine) as session:
        assert session.get(Lease, "job").expires_at == clock.now() + timedelta(seconds=10)


def test_expired_lease_is_taken_over(engine: sa.Engine, clock: VirtualClock) -> None:
    # given A took the lease and then went silent
    assert leases.acquire(engine, "job", "A", clock.now(), TTL)
    # when exactly the ttl has passed, the lease is still A's (expiry is inclusive)
    clock.advance(TTL)
    assert leases.acquire(engine, "job", "B", clock.now(), TTL) is False
    # and when one more second passes, B takes it over and A can no longer renew
    clock.advance(1)
    assert leases.acquire(engine, "job", "B", clock.now(), TTL) is True
    assert leases.acquire(engine, "job", "A", clock.now(), TTL) is False
    assert leases.current_holder(engine, "job", clock.now()) == "B"


def test_release_frees_the_lease_only_for_its_holder(engine: sa.Engine, clock: VirtualClock) -> None:
    # given A holds "job" and "other"
    assert leases.acquire(engine, "job", "A", clock.now(), TTL)
    assert leases.acquire(engine, "other", "A", clock.now(), TTL)
    # when B releases "job", nothing changes; when A releases it, it is free for B at once
    assert leases.release(engine, "job", "B") is False
    assert leases.release(engine, "job", "A") is True
    assert leases.release(engine, "job", "A") is False
    assert leases.acquire(engine, "job", "B", clock.now(), TTL) is True
    # then the other lease is untouched
    assert _lease_rows(engine) == [("job", "B"), ("other", "A")]


def test_lease_needs_a_positive_ttl(engine: sa.Engine, clock: VirtualClock) -> None:
    with pytest.raises(ValueError, match="positive ttl"):
        leases.acquire(engine, "job", "A", clock.now(), 0)
