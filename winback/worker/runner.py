"""The worker loop: apply pending events, close abandoned carts, checkouts and sessions (and apply
the derived events that emits at once), re-check segments that change with time alone, enrol date
and schedule triggers, step flow runs that are due, and send the messages they queued.

A Checkout Abandoned is applied, enrols its flow runs and is stepped in the pass whose sweep emitted
it, not a pass later: the trigger → message time is what a shopper who just left feels.

Each pass runs its components one after the other. Singleton work (applying events in order, the
abandonment sweep) is guarded by a named lease; flow runs are shared out by row locks. Any number
of workers can run side by side, and a crashed worker's share is taken over once its lease expires
(or, for flow runs, as soon as its transaction is rolled back). A component that fails is logged
with its traceback and contained: the other components still run, and the loop carries on.
In `run`, sending has a thread of its own (paced providers' waits and slow provider calls never
hold up events, sweeps or flow runs); `run_pass` alone does everything in turn, for tests.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from winback.commerce import abandonment
from winback.runtime import Runtime
from winback.worker import leases

if TYPE_CHECKING:
    from winback.messaging.pipeline import Sender, SendReport

log = logging.getLogger(__name__)

T = TypeVar("T")

PROCESSOR_LEASE = "event-processor"
SWEEPER_LEASE = "abandonment-sweeper"
SEGMENT_RECHECK_LEASE = "segment-recheck"
FLOW_SCHEDULER_LEASE = "flow-scheduler"
MAX_BATCHES_PER_PASS = 20  # full event batches applied before a pass moves on to the sweep …
PROCESS_BUDGET_S = 2.0  # … or fewer, once this long has gone: a backlog must not hold up the sweep
SWEEP_INTERVAL = 5.0  # seconds between abandonment sweeps (windows are minutes to hours long)
SEGMENT_RECHECK_POLL = 60.0  # seconds between looks for due time-based segments (at most)
FLOW_SCHEDULE_POLL = 15.0  # seconds between looks for due date/schedule triggers (cron has minutes)
SEND_BUDGET_S = 2.0  # seconds a sending pass may spend (pacing waits included) before looking again
STOP_TIMEOUT = 5.0  # seconds BackgroundWorker.stop waits for the loop to finish its pass
RENEW_FRACTION = 0.5  # a held lease is renewed once less than this share of its ttl remains


def default_holder() -> str:
    """A lease holder name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class PassReport:
    """What one pass did."""

    events_applied: int = 0
    sweep: abandonment.SweepResult | None = None
    segments_rechecked: int = 0
    flow_runs_scheduled: int = 0
    flow_steps: int = 0
    sending: SendReport | None = None

    @property
    def total(self) -> int:
        return (
            self.events_applied
            + (self.sweep.total if self.sweep else 0)
            + self.segments_rechecked
            + self.flow_runs_scheduled
            + self.flow_steps
            + (self.sending.total if self.sending else 0)
        )

    def describe(self) -> str:
        parts = [f"applied {self.events_applied} events"]
        if self.sweep is not None and self.sweep.total:
            parts.append(self.sweep.describe())
        if self.segments_rechecked:
            parts.append(f"re-checked {self.segments_rechecked} time-based segments")
        if self.flow_runs_scheduled:
            parts.append(f"started {self.flow_runs_scheduled} scheduled flow runs")
        if self.flow_steps:
            parts.append(f"stepped {self.flow_steps} flow runs")
        if self.sending is not None and self.sending.total:
            parts.append(f"messages: {self.sending.describe()}")
        return "; ".join(parts)


class Worker:
    """One worker's passes over the background work; safe to run alongside other workers."""

    def __init__(self, runtime: Runtime, holder: str | None = None) -> None:
        self.runtime = runtime
        self.holder = holder or default_holder()
        self._lease_expiry: dict[str, datetime] = {}  # leases this worker believes it holds
        self._lease_lock = threading.Lock()  # the sending thread holds leases too
        self._next_sweep_at: datetime | None = None
        self._next_segment_recheck_at: datetime | None = None
        self._next_flow_schedule_at: datetime | None = None
        self._sender: Sender | None = None

    def run_once(self) -> int:
        """One pass; returns how much work it did (events applied plus rows closed)."""
        return self.run_pass().total

    def run_pass(self, *, sending: bool = True) -> PassReport:
        """One pass over every component; `sending=False` leaves sending out (the loop in `run`
        sends on a thread of its own, so provider calls and pacing waits never hold up events)."""
        events_applied = self._contained("event processing", self._process_events, default=0)
        sweep = self._contained("abandonment sweep", self._sweep, default=None)
        if sweep is not None and sweep.events:  # apply the derived events now, not next pass
            events_applied += self._contained("event processing", self._process_events, default=0)
        rechecked = self._contained("segment re-check", self._recheck_segments, default=0)
        scheduled = self._contained("flow scheduler", self._schedule_flows, default=0)
        flow_steps = self._contained("flow runs", self._step_flows, default=0)
        report = self._contained("sending", self._send, default=None) if sending else None
        return PassReport(
            events_applied=events_applied,
            sweep=sweep,
            segments_rechecked=rechecked,
            flow_runs_scheduled=scheduled,
            flow_steps=flow_steps,
            sending=report,
        )

    def close(self) -> None:
        """Let go of provider connections and leases."""
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        self.release_leases()

    def release_leases(self) -> None:
        """Give up every lease this worker holds, so another worker can take over at once."""
        for name in list(self._lease_expiry):
            self._lease_expiry.pop(name)
            try:
                leases.release(self.runtime.engine, name, self.holder)
            except Exception:
                log.exception("could not release lease %r; it will expire by itself", name)

    def holds(self, name: str) -> bool:
        """Hold the lease `name` (renewing it when it is past its prime); False if another has it."""
        with self._lease_lock:
            return self._holds(name)

    def _holds(self, name: str) -> bool:
        now = self.runtime.clock.now()
        ttl = timedelta(seconds=self.runtime.settings.worker_lease_s)
        expiry = self._lease_expiry.get(name)
        if expiry is not None and expiry - now > ttl * RENEW_FRACTION:
            return True
        if leases.acquire(self.runtime.engine, name, self.holder, now, ttl):
            if expiry is None:
                log.info("worker %s took the %r lease", self.holder, name)
            self._lease_expiry[name] = now + ttl
            return True
        if expiry is not None:
            log.warning("worker %s lost the %r lease to another worker", self.holder, name)
        self._lease_expiry.pop(name, None)
        return False

    def _process_events(self) -> int:
        from winback.processing import processor  # lazy: the processor pulls in the whole domain

        batch_size = self.runtime.settings.process_batch_size
        applied = 0
        deadline = time.monotonic() + PROCESS_BUDGET_S
        for _ in range(MAX_BATCHES_PER_PASS):
            # Checked before every batch: events of one customer must be applied by one worker.
            if not self.holds(PROCESSOR_LEASE) or (applied and time.monotonic() >= deadline):
                break
            count = processor.process_pending(self.runtime, limit=batch_size)
            applied += count
            if count < batch_size:
                break
        return applied

    def _sweep(self) -> abandonment.SweepResult | None:
        now = self.runtime.clock.now()
        if self._next_sweep_at is not None and now < self._next_sweep_at:
            return None
        if not self.holds(SWEEPER_LEASE):
            return None
        # Set before sweeping, so a sweep that keeps failing is retried once per interval.
        self._next_sweep_at = now + timedelta(seconds=SWEEP_INTERVAL)
        result = abandonment.sweep(self.runtime)
        if result.total:
            self._next_sweep_at = now  # it may have left more due rows: sweep again next pass
        return result

    def _recheck_segments(self) -> int:
        from winback.segments import membership  # lazy, like the processor

        now = self.runtime.clock.now()
        if self._next_segment_recheck_at is not None and now < self._next_segment_recheck_at:
            return 0
        if not self.holds(SEGMENT_RECHECK_LEASE):
            return 0
        # Set before the re-check, so one that keeps failing is retried once per interval.
        interval = min(SEGMENT_RECHECK_POLL, self.runtime.settings.segment_recheck_s)
        self._next_segment_recheck_at = now + timedelta(seconds=interval)
        return membership.recheck_time_based(self.runtime)

    def _schedule_flows(self) -> int:
        """Enrol the date and schedule triggers that fell due (before stepping, so the new runs are
        stepped in the same pass)."""
        from winback.flows import scheduler  # lazy, like the processor

        now = self.runtime.clock.now()
        if self._next_flow_schedule_at is not None and now < self._next_flow_schedule_at:
            return 0
        if not self.holds(FLOW_SCHEDULER_LEASE):
            return 0
        # Set before the run, so one that keeps failing is retried once per interval.
        self._next_flow_schedule_at = now + timedelta(seconds=FLOW_SCHEDULE_POLL)
        return scheduler.run_schedules(self.runtime)

    def _step_flows(self) -> int:
        """Step due flow runs. No lease: each batch claims its runs under row locks (SKIP LOCKED
        on PostgreSQL, the single-writer path on SQLite), so workers share the work."""
        from winback.flows import engine as flow_engine  # lazy, like the processor

        stepped = 0
        for _ in range(MAX_BATCHES_PER_PASS):
            count = flow_engine.step_due_runs(self.runtime)
            stepped += count
            if count < flow_engine.STEP_BATCH:
                break
        return stepped

    def _send(self) -> SendReport:
        """Turn new outbox rows into messages and send what is due. Paced providers are sent by
        the holder of their `send:{provider}` lease alone, so the pace holds across workers."""
        if self._sender is None:
            from winback.messaging.pipeline import Sender  # lazy, like the processor

            self._sender = Sender(self.runtime, holds=self.holds)
        return self._sender.run(budget_s=SEND_BUDGET_S)

    def _contained(self, what: str, component: Callable[[], T], *, default: T) -> T:
        try:
            return component()
        except Exception:
            log.exception("%s failed; the worker carries on", what)
            return default

    def run(self, stop: threading.Event) -> None:
        """Pass after pass until `stop` is set; sleeps `worker_poll_s` after a pass with no work.
        Messages are sent by a second loop on its own thread, alongside."""
        poll_s = self.runtime.settings.worker_poll_s
        log.info("worker %s started", self.holder)
        done = threading.Event()
        sending = threading.Thread(
            target=self._sending_loop, args=(stop, done), name="winback-send", daemon=True
        )
        sending.start()
        try:
            while not stop.is_set():
                try:
                    report = self.run_pass(sending=False)
                except Exception:  # the components are contained; this guards the loop itself
                    log.exception("worker pass failed; retrying after %s s", poll_s)
                    stop.wait(poll_s)
                    continue
                if report.total:
                    log.info("worker pass: %s", report.describe())
                else:
                    stop.wait(poll_s)
        finally:
            done.set()
            sending.join()
            self.close()
            log.info("worker %s stopped", self.holder)

    def _sending_loop(self, stop: threading.Event, done: threading.Event) -> None:
        poll_s = self.runtime.settings.worker_poll_s
        while not (stop.is_set() or done.is_set()):
            report = self._contained("sending", self._send, default=None)
            if report is not None and report.total:
                log.info("messages: %s", report.describe())
            else:
                done.wait(poll_s)  # set by `run` as soon as `stop` ends its loop


def run_forever(runtime: Runtime, stop: threading.Event | None = None) -> None:
    """Run the worker loop in this thread until SIGINT/SIGTERM (or `stop`), then release leases."""
    stop = stop or threading.Event()
    with _stop_on_signals(stop):
        Worker(runtime).run(stop)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into `stop.set()` while inside (main thread only: Python's rule)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("%s received: stopping after the current pass", signal.Signals(signum).name)
        stop.set()

    previous: dict[signal.Signals, Any] = {
        signum: signal.signal(signum, handle) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class BackgroundWorker:
    """The worker loop on a daemon thread, for `winback serve` (start at startup, stop at shutdown)."""

    def __init__(self, runtime: Runtime, holder: str | None = None) -> None:
        self.worker = Worker(runtime, holder)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("this background worker has already been started")
        self._thread = threading.Thread(
            target=self.worker.run, args=(self._stop,), name="winback-worker", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Ask the loop to stop and wait for it; returns whether it stopped within `timeout` seconds."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning(
                "worker thread still busy %s s after stop; leaving it to exit with the process", timeout
            )
            return False
        return True

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
