"""kill -9 of a `winback worker` mid-run: two real worker processes on the real clock share hundreds
of runs of a four-message flow; workers are killed while they hold claimed runs and replaced, and
afterwards every run has passed every node once, every message is in the outbox exactly once, none
came early, and nothing is left due.

On PostgreSQL each kill lands inside a step transaction that has already written messages: the test
waits until the victim's session holds a `RowExclusiveLock` on `outbox` (it claimed runs with
`FOR UPDATE SKIP LOCKED` and inserted their outbox rows, uncommitted), then kills it.
SQLite shows no such thing from outside, so there the kills land while runs are being stepped (the
outbox growing), which on a busy single-writer worker is mostly inside its `BEGIN IMMEDIATE`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from winback.db.engine import make_engine, reading, transaction
from winback.db.models import Customer, FlowRun, OutboxEntry
from winback.flows import engine as flow_engine
from winback.flows import service
from winback.kernel.clock import SystemClock
from winback.settings import Settings

RUNS = 1_000
DELAY_S = 1  # between consecutive messages of a run
ACTIONS = ("a1", "a2", "a3", "a4")
KILLS = 3
WORKER_POLL_S = 0.05  # seconds an idle worker sleeps between passes
STARTUP_TIMEOUT = 20.0  # seconds for a worker process to start claiming runs
KILL_TIMEOUT = 20.0  # seconds to wait for a worker to be caught mid-claim
FINISH_TIMEOUT = 40.0  # seconds for every run to reach its end after the last kill
POLL_S = 0.002  # seconds between looks at the victim's locks

FLOW = {
    "trigger": {"type": "event", "event": "Checkout Abandoned"},
    "entry": {"reentry": {"mode": "every_time"}},
    "start": "a1",
    "nodes": [
        {"id": "a1", "type": "action", "action": {"type": "send_sms", "body": "1/4"}, "next": "d1"},
        {"id": "d1", "type": "delay", "duration": {"amount": DELAY_S, "unit": "seconds"}, "next": "a2"},
        {"id": "a2", "type": "action", "action": {"type": "send_sms", "body": "2/4"}, "next": "d2"},
        {"id": "d2", "type": "delay", "duration": {"amount": DELAY_S, "unit": "seconds"}, "next": "a3"},
        {"id": "a3", "type": "action", "action": {"type": "send_sms", "body": "3/4"}, "next": "d3"},
        {"id": "d3", "type": "delay", "duration": {"amount": DELAY_S, "unit": "seconds"}, "next": "a4"},
        {"id": "a4", "type": "action", "action": {"type": "send_sms", "body": "4/4"}},
    ],
}
# Every node entered and passed once, in order: nothing skipped, nothing repeated.
EXPECTED_PATH = [
    (node, outcome)
    for node in ("a1", "d1", "a2", "d2", "a3", "d3", "a4")
    for outcome in ("entered", "passed")
]

MAX_AGE = timedelta(hours=Settings().flow_trigger_max_age_h)  # as the processor passes it


@dataclass
class Workers:
    """`winback worker` processes started by the test, each with its own log file."""

    database_url: str
    directory: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    started: int = 0

    def start(self) -> str:
        self.started += 1
        name = f"crash-worker-{self.started}"
        url = self.database_url
        if url.startswith("postgresql"):  # names the session, so the test can see its locks
            url = sa.make_url(url).update_query_dict({"application_name": name}).render_as_string(False)
        env = {**os.environ, "WINBACK_DATABASE_URL": url, "WINBACK_WORKER_POLL_S": str(WORKER_POLL_S),
               "WINBACK_LOG_LEVEL": "warning"}  # fmt: skip
        env.pop("WINBACK_SETTINGS_FILE", None)
        log = (self.directory / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "winback.cli", "worker"],
            env=env,
            cwd=self.directory,
            stdout=log,
            stderr=log,
        )
        log.close()
        return name

    def kill(self, name: str) -> int:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        return process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text()}" for path in sorted(self.directory.glob("*.log"))
        )


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[Workers]:
    started = Workers(database_url, tmp_path)
    yield started
    started.stop_all()


def _enrol(engine: sa.Engine, runs: int) -> None:
    """A live flow and `runs` customers who each just abandoned a checkout (enrolled, due now)."""
    now = SystemClock().now()
    with transaction(engine) as session:
        flow = service.create_flow(session, name="four messages", definition=FLOW, now=now)
        service.set_status(session, flow.id, "live", now)
        customers = [
            Customer(tags=[], properties={}, orders_count=0, total_spent=Decimal(0), total_refunded=Decimal(0),
                     first_seen_at=now, last_seen_at=now, created_at=now, updated_at=now)
            for _ in range(runs)
        ]  # fmt: skip
        session.add_all(customers)
        session.flush()
        events = [
            flow_engine.AppliedEvent(
                customer_id=customer.id,
                event="Checkout Abandoned",
                type="track",
                properties={"checkout_id": f"k{customer.id}"},
                traits={},
                timestamp=now,
                message_id=f"derived:checkout_abandoned:k{customer.id}",
            )  # fmt: skip
            for customer in customers
        ]
        assert flow_engine.enrol_for_events(session, events, now, "UTC", MAX_AGE) == runs


def _outbox_count(engine: sa.Engine) -> int:
    with reading(engine) as session:  # a reader: never queues behind the workers' writes on SQLite
        return session.scalar(sa.select(sa.func.count()).select_from(OutboxEntry)) or 0


def _unfinished(engine: sa.Engine) -> int:
    with reading(engine) as session:
        query = sa.select(sa.func.count()).select_from(FlowRun).where(FlowRun.finished_at.is_(None))
        return session.scalar(query) or 0


def _writing_messages(engine: sa.Engine, application_name: str) -> bool:
    """Whether that worker is inside a step transaction that has claimed runs and written outbox
    rows it has not committed yet (its session holds a RowExclusiveLock on `outbox`)."""
    query = sa.text(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE a.application_name = :name AND l.relation = 'outbox'::regclass AND l.mode = 'RowExclusiveLock'"
    )
    with engine.connect() as connection:
        return bool(connection.execute(query, {"name": application_name}).scalar())


def _wait_for(condition: Callable[[], bool], timeout: float, what: str, workers: Workers) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{workers.logs()}")
        time.sleep(POLL_S)


def test_killed_workers_lose_nothing_and_do_nothing_twice(database_url: str, workers: Workers) -> None:
    engine = make_engine(database_url, poolclass=sa.NullPool)
    is_postgres = engine.dialect.name == "postgresql"
    started_at = time.monotonic()
    # given two workers, and 1,000 runs of a flow of four messages one second apart, all due now
    names = [workers.start(), workers.start()]
    _enrol(engine, RUNS)
    total = RUNS * len(ACTIONS)
    # when a worker is killed with SIGKILL while it is stepping runs, three times, each time
    # replaced by a fresh one (the other worker carries on throughout)
    kill_statuses: list[int] = []
    for kill in range(KILLS):
        victim = names[kill % 2]
        threshold = total * (kill + 1) // (KILLS + 2)  # kills spread over the whole drain
        _wait_for(
            lambda n=threshold: _outbox_count(engine) >= n, KILL_TIMEOUT, f"{threshold} messages", workers
        )
        if is_postgres:
            _wait_for(
                lambda name=victim: _writing_messages(engine, name),
                KILL_TIMEOUT,
                f"{victim} mid-step",
                workers,
            )
        kill_statuses.append(workers.kill(victim))
        names[kill % 2] = workers.start()
    # then, once the survivors have finished, every run reached its end
    _wait_for(lambda: _unfinished(engine) == 0, FINISH_TIMEOUT, "every run finished", workers)
    assert kill_statuses == [-signal.SIGKILL] * KILLS
    with Session(engine) as session:
        runs = session.scalars(sa.select(FlowRun).order_by(FlowRun.id)).all()
        assert len(runs) == RUNS
        assert Counter(
            (run.status, run.exit_reason, run.due_at, run.active_key, run.attempts) for run in runs
        ) == {("completed", "completed", None, None, 0): RUNS}
        assert Counter(
            tuple((visit["node_id"], visit["outcome"]) for visit in run.history) for run in runs
        ) == {tuple(EXPECTED_PATH): RUNS}
        # and each (run, node) message is in the outbox exactly once, under its idempotency key
        entries = session.execute(
            sa.select(OutboxEntry.run_id, OutboxEntry.node_id, OutboxEntry.idempotency_key,
                      OutboxEntry.kind, OutboxEntry.status, OutboxEntry.created_at)
        ).all()  # fmt: skip
        assert len(entries) == total
        by_run_node = Counter((entry.run_id, entry.node_id) for entry in entries)
        assert by_run_node == {(run.id, node): 1 for run in runs for node in ACTIONS}
        assert all(entry.idempotency_key == f"{entry.run_id}:{entry.node_id}" for entry in entries)
        # (written `pending`; the workers' sending pipeline may have taken them further since)
        assert Counter(entry.kind for entry in entries) == {"send_sms": total}
        assert not any(entry.status == "applied" for entry in entries)
        # and no message came before its delay was over
        written = {(entry.run_id, entry.node_id): entry.created_at for entry in entries}
        gaps = [
            written[(run.id, later)] - written[(run.id, earlier)]
            for run in runs
            for earlier, later in zip(ACTIONS, ACTIONS[1:], strict=False)
        ]
        assert min(gaps) >= timedelta(seconds=DELAY_S)
        # and nothing is left due
        assert (
            session.scalar(sa.select(sa.func.count()).select_from(FlowRun).where(FlowRun.due_at.is_not(None)))
            == 0
        )
    # and the whole exercise stayed well inside a minute
    engine.dispose()
    assert time.monotonic() - started_at < 60
