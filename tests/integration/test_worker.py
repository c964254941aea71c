"""Leases and the worker loop on both databases."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from winback.commerce import abandonment
from winback.db.engine import transaction
from winback.db.models import Checkout, Customer, Event, Lease
from winback.ingest import store
from winback.ingest.segment import EventRow
from winback.kernel.clock import VirtualClock
from winback.messaging.pipeline import SendReport
from winback.processing import processor
from winback.runtime import Runtime
from winback.web.app import create_app
from winback.worker import leases, runner

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


def test_racing_holders_never_both_win(engine: sa.Engine, clock: VirtualClock) -> None:
    # given eight workers asking for the same free lease at the same moment
    holders = [f"w{n}" for n in range(8)]
    barrier = threading.Barrier(len(holders))
    results: dict[str, bool] = {}

    def contend(holder: str) -> None:
        barrier.wait()
        results[holder] = leases.acquire(engine, "job", holder, clock.now(), TTL)

    threads = [threading.Thread(target=contend, args=(holder,)) for holder in holders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    # then exactly one of them holds it, and it is the one the table names
    winners = [holder for holder, won in results.items() if won]
    assert len(results) == len(holders)
    assert len(winners) == 1
    assert _lease_rows(engine) == [("job", winners[0])]


# --- the worker loop ------------------------------------------------------------------------------

HOUR = 3600  # seconds: the default abandonment windows


def _with_settings(runtime: Runtime, **overrides: object) -> Runtime:
    return dataclasses.replace(runtime, settings=runtime.settings.model_copy(update=overrides))


def _store_identifies(runtime: Runtime, count: int) -> None:
    now = runtime.clock.now()
    rows = [
        EventRow(
            message_id=f"m-{n}",
            source="segment",
            type="identify",
            user_id=f"u-{n}",
            traits={"first_name": f"Shopper {n}"},
            timestamp=now,
            received_at=now,
        )
        for n in range(count)
    ]
    store.store_events(runtime.engine, rows)


def _unprocessed(runtime: Runtime) -> list[str]:
    with sa.orm.Session(runtime.engine) as session:
        return list(
            session.scalars(
                sa.select(Event.message_id).where(Event.processed_at.is_(None)).order_by(Event.id)
            )
        )


def _due_checkout(runtime: Runtime, external_id: str = "co-1") -> int:
    """An open checkout of a known customer, last active one hour before now."""
    last_activity = runtime.clock.now() - timedelta(seconds=HOUR)
    with transaction(runtime.engine) as session:
        customer = Customer(
            user_id=f"owner-{external_id}",
            first_seen_at=last_activity,
            last_seen_at=last_activity,
            created_at=last_activity,
            updated_at=last_activity,
        )
        session.add(customer)
        session.flush()
        checkout = Checkout(
            kind="checkout",
            external_id=external_id,
            customer_id=customer.id,
            status="open",
            value=Decimal("10.00"),
            currency="USD",
            items=[{"product_id": "p-1", "price": "10.00", "quantity": 1}],
            created_at=last_activity,
            updated_at=last_activity,
            last_activity_at=last_activity,
        )
        session.add(checkout)
        session.flush()
        return checkout.id


def _derived_message_ids(runtime: Runtime) -> list[str]:
    with sa.orm.Session(runtime.engine) as session:
        return list(
            session.scalars(sa.select(Event.message_id).where(Event.source == "derived").order_by(Event.id))
        )


def test_run_once_applies_pending_events_in_full_batches(runtime: Runtime, clock: VirtualClock) -> None:
    # given five stored events, batches of two
    runtime = _with_settings(runtime, process_batch_size=2)
    _store_identifies(runtime, 5)
    worker = runner.Worker(runtime, holder="w1")
    # when one pass runs
    done = worker.run_once()
    # then all five are applied (2 + 2 + 1), under the processor lease, and the next pass is idle
    assert done == 5
    assert _unprocessed(runtime) == []
    assert leases.current_holder(runtime.engine, runner.PROCESSOR_LEASE, clock.now()) == "w1"
    assert worker.run_once() == 0


def test_a_pass_is_capped_and_the_rest_waits_for_the_next(
    runtime: Runtime, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given five events, batches of two and at most two batches per pass
    runtime = _with_settings(runtime, process_batch_size=2)
    monkeypatch.setattr(runner, "MAX_BATCHES_PER_PASS", 2)
    _store_identifies(runtime, 5)
    worker = runner.Worker(runtime, holder="w1")
    # when two passes run
    first, second = worker.run_once(), worker.run_once()
    # then the first applies four and the second the last one
    assert (first, second) == (4, 1)
    assert _unprocessed(runtime) == []


def test_only_the_lease_holder_processes_and_a_silent_holder_is_taken_over(
    runtime: Runtime, clock: VirtualClock
) -> None:
    # given worker w1 holds the processor lease, and an event arrives afterwards
    w1, w2 = runner.Worker(runtime, holder="w1"), runner.Worker(runtime, holder="w2")
    assert w1.run_once() == 0
    _store_identifies(runtime, 1)
    # when w2 runs a pass before w1's lease expires
    clock.advance(runtime.settings.worker_lease_s)
    assert w2.run_once() == 0
    # then the event is still waiting; once the lease has expired, w2 takes over and applies it
    assert _unprocessed(runtime) == ["m-0"]
    clock.advance(1)
    assert w2.run_once() == 1
    assert _unprocessed(runtime) == []
    assert leases.current_holder(runtime.engine, runner.PROCESSOR_LEASE, clock.now()) == "w2"


def test_passes_sweep_abandoned_checkouts_at_most_every_interval(
    runtime: Runtime, clock: VirtualClock
) -> None:
    # given a due checkout
    first = _due_checkout(runtime, "co-1")
    worker = runner.Worker(runtime, holder="w1")
    # when a pass runs, it abandons it and applies the derived event in the same pass
    report = worker.run_pass()
    assert (report.events_applied, report.sweep) == (
        1,
        abandonment.SweepResult(clock.now(), checkouts_abandoned=1),
    )
    assert report.total == 2
    assert _derived_message_ids(runtime) == [f"derived:checkout_abandoned:{first}"]
    assert _unprocessed(runtime) == []
    # and as the sweep did work, the next pass sweeps again (finding nothing)
    report = worker.run_pass()
    assert (report.events_applied, report.sweep) == (0, abandonment.SweepResult(clock.now()))
    # when another checkout falls due just after that idle sweep
    second = _due_checkout(runtime, "co-2")
    # then passes within the sweep interval leave it for later
    clock.advance(runner.SWEEP_INTERVAL - 0.5)
    assert worker.run_pass() == runner.PassReport(events_applied=0, sweep=None, sending=SendReport())
    # and the first pass after the interval abandons it (and applies its event)
    clock.advance(0.5)
    assert worker.run_once() == 2
    assert _derived_message_ids(runtime) == [
        f"derived:checkout_abandoned:{first}",
        f"derived:checkout_abandoned:{second}",
    ]


def test_a_failing_processor_is_logged_and_the_sweep_still_runs(
    runtime: Runtime, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # given the processor fails on every call, and a checkout is due
    def broken(_runtime: Runtime, limit: int | None = None) -> int:
        raise RuntimeError("processor exploded")

    monkeypatch.setattr(processor, "process_pending", broken)
    checkout_id = _due_checkout(runtime)
    worker = runner.Worker(runtime, holder="w1")
    # when a pass runs
    with caplog.at_level(logging.ERROR, logger=runner.__name__):
        done = worker.run_once()
    # then the checkout is still abandoned, and the failure is logged with its traceback
    assert done == 1
    assert _derived_message_ids(runtime) == [f"derived:checkout_abandoned:{checkout_id}"]
    # (twice: before the sweep, and again for the event the sweep emitted)
    assert len(caplog.records) == 2
    for record in caplog.records:
        assert record.getMessage() == "event processing failed; the worker carries on"
        assert record.exc_info is not None and str(record.exc_info[1]) == "processor exploded"


def test_a_failing_sweep_is_logged_and_events_are_still_applied(
    runtime: Runtime, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # given the sweep fails on every call, and two events are pending
    calls: list[object] = []

    def broken(_runtime: Runtime, limit: int = 0) -> abandonment.SweepResult:
        calls.append(clock.now())
        raise RuntimeError("sweep exploded")

    monkeypatch.setattr(abandonment, "sweep", broken)
    _store_identifies(runtime, 2)
    worker = runner.Worker(runtime, holder="w1")
    # when a pass runs
    with caplog.at_level(logging.ERROR, logger=runner.__name__):
        done = worker.run_once()
    # then both events are applied, and the failure is logged with its traceback
    assert done == 2
    assert _unprocessed(runtime) == []
    [record] = caplog.records
    assert record.getMessage() == "abandonment sweep failed; the worker carries on"
    assert record.exc_info is not None and str(record.exc_info[1]) == "sweep exploded"
    # and the failing sweep is retried once per sweep interval, not on every pass
    assert (worker.run_once(), len(calls)) == (0, 1)
    clock.advance(runner.SWEEP_INTERVAL)
    assert (worker.run_once(), len(calls)) == (0, 2)


def test_background_worker_applies_events_and_stops_promptly(runtime: Runtime, clock: VirtualClock) -> None:
    # given a background worker polling every 10 ms, and one stored event
    runtime = _with_settings(runtime, worker_poll_s=0.01)
    _store_identifies(runtime, 1)
    background = runner.BackgroundWorker(runtime, holder="bg")
    # when it runs until the event is applied
    background.start()
    try:
        _wait_for(lambda: _unprocessed(runtime) == [])
    finally:
        stopped = background.stop()
    # then it stopped within the timeout and gave its leases back
    assert stopped is True
    assert background.is_running is False
    assert _lease_rows(runtime.engine) == []


def test_run_forever_stops_on_sigterm_and_releases_its_leases(runtime: Runtime, clock: VirtualClock) -> None:
    # given the loop runs in the main thread, and SIGTERM arrives once an event has been applied
    runtime = _with_settings(runtime, worker_poll_s=0.01)
    _store_identifies(runtime, 1)
    previous = signal.getsignal(signal.SIGTERM)

    def terminate_when_done() -> None:
        _wait_for(lambda: _unprocessed(runtime) == [])
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_when_done, daemon=True)
    killer.start()
    # when the loop runs
    runner.run_forever(runtime)
    killer.join(5)
    # then it returned cleanly, the leases are free and the previous handler is back
    assert _unprocessed(runtime) == []
    assert _lease_rows(runtime.engine) == []
    assert signal.getsignal(signal.SIGTERM) is previous


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_serve_with_embedded_worker_applies_tracked_events(runtime: Runtime, write_key: str) -> None:
    # given the app started with its embedded worker polling every 10 ms
    runtime = _with_settings(runtime, worker_poll_s=0.01)
    with TestClient(create_app(runtime, embedded_worker=True)) as client:
        # when a store identifies a shopper
        response = client.post(
            "/v1/identify", json={"userId": "u-1", "messageId": "m-1"}, auth=(write_key, "")
        )
        assert response.status_code == 200
        # then the worker applies it while the app runs
        _wait_for(lambda: _unprocessed(runtime) == [])
    # and on shutdown the worker gave its leases back
    assert _lease_rows(runtime.engine) == []
