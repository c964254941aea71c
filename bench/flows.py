"""Flow runs drained per second by one and two workers against a raw claim-and-update baseline, and
the time from an abandoned checkout to its outbox message under background traffic.

    python bench/flows.py [--backend sqlite|postgresql|both] [--runs N] [--due N] [--probes N] [--quick]

For each backend, in one run and on fresh, migrated databases:

1. drain: N runs (default 1,000,000) wait at a one-day delay whose next node sends an SMS, one
   customer each, seeded with COPY (PostgreSQL) or 100,000-row executemany transactions (SQLite).
   Three disjoint samples of `--due` runs (default 100,000) are made due in turn (their `wake_at`
   and `due_at` moved into the past); a step is then "resume from the delay, write one outbox row,
   complete the run":
   - baseline: one process runs a bare claim-and-update loop on the raw driver — `SELECT … ORDER BY
     due_at, id LIMIT 200 FOR UPDATE SKIP LOCKED` (PostgreSQL) or under `BEGIN IMMEDIATE`
     (SQLite); an executemany UPDATE of the same columns with the same values the engine writes;
     an executemany INSERT of one outbox row each (same payload shape); commit;
   - one worker, then two workers: separate processes, each calling `engine.step_due_runs` (200
     runs a transaction, the real worker's call) until it claims nothing;
   each timed from a common start signal to the last process's end, then every run of the sample is
   checked to be completed with exactly one outbox row.
2. trigger → outbox: `winback serve` (API and embedded worker, default settings except
   WINBACK_CHECKOUT_ABANDONED_AFTER_S=1) on a loopback port with a live flow "Checkout Abandoned →
   send_sms". One thread sends ~1,000 background events/s (page views and `Product Viewed` of 2,000
   anonymous visitors, batches of 50 every 50 ms) through POST /v1/batch; another sends probes
   (identify with a phone, then `Checkout Started`) for `--probes` customers (default 300), 20 a
   second. The interval measured is from the `Checkout Abandoned` event's timestamp (the moment the
   worker's abandonment sweep fired it) to the `created_at` of the run's outbox row: applying the
   derived event, enrolling, stepping and writing the message. It excludes the abandonment window
   itself and the wait for the next sweep (every 5 s), which are reported separately on stderr.

Progress goes to stderr. stdout gets one line per backend, `flow_steps_per_s=… baseline_steps_per_s=…
ratio=… trigger_to_outbox_p95_ms=…` with flow_steps_per_s the one-worker rate and ratio =
flow_steps_per_s / baseline_steps_per_s; with `--backend both` the PostgreSQL line comes first and
the SQLite line is the very last line.

Touches only loopback; SQLite files live in a temporary directory and the PostgreSQL databases
(`winback_bench_<pid>_flows…` on --postgres-url) are created and dropped by the bench.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/flows.py` from a checkout

import httpx  # noqa: E402
import orjson  # noqa: E402
from sqlalchemy import Engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench import scratch  # noqa: E402
from winback import apikeys  # noqa: E402
from winback.db import engine as db_engine  # noqa: E402
from winback.db import migrate  # noqa: E402
from winback.db.engine import transaction  # noqa: E402
from winback.flows import engine as flow_engine  # noqa: E402
from winback.flows import service  # noqa: E402
from winback.kernel.clock import SystemClock  # noqa: E402
from winback.runtime import Runtime  # noqa: E402
from winback.settings import Settings  # noqa: E402

DEFAULT_RUNS = 1_000_000
DEFAULT_DUE = 100_000
DEFAULT_PROBES = 300
QUICK_RUNS, QUICK_DUE, QUICK_PROBES = 30_000, 5_000, 40
SEED_CHUNK = 100_000  # rows per SQLite seeding transaction
BASELINE_BATCH = flow_engine.STEP_BATCH  # runs claimed per baseline transaction, as the engine does
BACKGROUND_EVENTS_PER_S = 1_000
BACKGROUND_BATCH = 50  # messages per background request (20 requests a second)
BACKGROUND_VISITORS = 2_000
PROBES_PER_S = 20
ABANDON_AFTER_S = 1.0  # WINBACK_CHECKOUT_ABANDONED_AFTER_S for the latency part
PROGRESS_EVERY = 2.0  # seconds between progress lines
DRAIN_TIMEOUT = 3_600.0  # seconds
SERVER_START_TIMEOUT = 60.0  # seconds
LATENCY_TIMEOUT = 90.0  # seconds after the last probe for every probe's message to appear
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

TARGET_STEPS_PER_S = 5_000  # per worker
TARGET_RATIO = 0.4
TARGET_P95_MS = 2_000

# The drained flow: runs wait a day at "wait", then "sms" sends and the run completes.
DRAIN_FLOW = {
    "trigger": {"type": "event", "event": "Checkout Abandoned"},
    "start": "wait",
    "nodes": [
        {"id": "wait", "type": "delay", "duration": {"amount": 1, "unit": "days"}, "next": "sms"},
        {"id": "sms", "type": "action", "action": {"type": "send_sms", "body": "Your cart misses you"}},
    ],
}
# The latency flow: no delay, the message is written in the run's first step.
LATENCY_FLOW = {
    "trigger": {"type": "event", "event": "Checkout Abandoned"},
    "start": "sms",
    "nodes": [
        {"id": "sms", "type": "action", "action": {"type": "send_sms", "body": "You left something behind"}}
    ],
}


log = scratch.log


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# --- databases ----------------------------------------------------------------------------------


@contextmanager
def databases(backend: str, admin_url: str, names: list[str]) -> Iterator[list[str]]:
    """Fresh database URLs, one per name; dropped (or deleted) afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="winback-bench-flows-") as directory:
            yield [f"sqlite:///{directory}/{name}.db" for name in names]
        return
    with scratch.postgres_databases(admin_url, names) as urls:
        yield urls


def _live_flow(engine: Engine, name: str, definition: dict[str, Any]) -> tuple[int, int]:
    now = datetime.now(UTC)
    with transaction(engine) as session:
        flow = service.create_flow(session, name=name, definition=definition, now=now)
        service.set_status(session, flow.id, "live", now)
        assert flow.current_version_id is not None
        return flow.id, flow.current_version_id


def _sqlite_time(moment: datetime) -> str:
    """How SQLAlchemy stores an aware UTC datetime in SQLite (UTCDateTime drops the zone)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


CUSTOMER_COLUMNS = (
    "id", "tags", "properties", "orders_count", "total_spent", "total_refunded",
    "first_seen_at", "last_seen_at", "created_at", "updated_at",
)  # fmt: skip
RUN_COLUMNS = (
    "id", "flow_id", "flow_version_id", "customer_id", "status", "node_id", "node_entered_at", "wake_at",
    "due_at", "entered_at", "trigger", "active_key", "history", "attempts", "updated_at",
)  # fmt: skip


def seed_runs(engine: Engine, runs: int, flow_id: int, version_id: int) -> float:
    """`runs` customers, each with a run waiting at the delay for another day; returns seconds."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    wake = now + timedelta(days=1)
    sqlite = db_engine.is_sqlite(engine)
    stamp = _sqlite_time if sqlite else (lambda moment: moment)
    history = orjson.dumps([{"node_id": "wait", "at": now.isoformat(), "outcome": "entered"}]).decode()

    def customer(number: int) -> tuple[Any, ...]:
        return (number, "[]", "{}", 0, 0, 0, stamp(now), stamp(now), stamp(now), stamp(now))

    def run(number: int) -> tuple[Any, ...]:
        trigger = orjson.dumps({
            "event": "Checkout Abandoned", "message_id": f"derived:checkout_abandoned:{number}",
            "timestamp": now.isoformat(), "properties": {"checkout_id": f"co-{number}", "value": 80},
        }).decode()  # fmt: skip
        return (number, flow_id, version_id, number, "waiting", "wait", stamp(now), stamp(wake), stamp(wake),
                stamp(now), trigger, f"{flow_id}:{number}", history, 0, stamp(now))  # fmt: skip

    raw = engine.raw_connection()
    try:
        if sqlite:
            cursor = raw.cursor()
            for table, columns, row in (
                ("customers", CUSTOMER_COLUMNS, customer),
                ("flow_runs", RUN_COLUMNS, run),
            ):
                statement = (
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
                )
                for start in range(1, runs + 1, SEED_CHUNK):
                    cursor.execute("BEGIN IMMEDIATE")
                    cursor.executemany(
                        statement, (row(n) for n in range(start, min(start + SEED_CHUNK, runs + 1)))
                    )
                    cursor.execute("COMMIT")
                    log(f"  seeded {min(start + SEED_CHUNK - 1, runs)}/{runs} {table}")
        else:
            with raw.cursor() as cursor:
                for table, columns, row in (
                    ("customers", CUSTOMER_COLUMNS, customer),
                    ("flow_runs", RUN_COLUMNS, run),
                ):
                    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                        for number in range(1, runs + 1):
                            copy.write_row(row(number))
                    log(f"  copied {runs} {table}")
                for sequence in ("customers", "flow_runs"):
                    cursor.execute(f"SELECT setval(pg_get_serial_sequence('{sequence}', 'id'), {runs})")
                cursor.execute("ANALYZE customers")
                cursor.execute("ANALYZE flow_runs")
            raw.commit()
    finally:
        raw.close()
    return time.perf_counter() - started


def make_due(engine: Engine, first: int, last: int) -> None:
    """The runs with ids first..last fall due: their delay ended a second ago."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    value = _sqlite_time(past) if db_engine.is_sqlite(engine) else past
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE flow_runs SET wake_at = :past, due_at = :past WHERE id BETWEEN :first AND :last"),
            {"past": value, "first": first, "last": last},
        )


def check_drained(engine: Engine, first: int, last: int) -> None:
    """Every run of the sample completed, with exactly one outbox row; else the bench stops."""
    with engine.connect() as connection:
        completed = connection.execute(
            text("SELECT count(*) FROM flow_runs WHERE id BETWEEN :a AND :b AND status = 'completed' "
                 "AND due_at IS NULL AND node_id = 'sms'"), {"a": first, "b": last},
        ).scalar()  # fmt: skip
        rows, runs = connection.execute(
            text("SELECT count(*), count(DISTINCT run_id) FROM outbox WHERE run_id BETWEEN :a AND :b"),
            {"a": first, "b": last},
        ).one()
    expected = last - first + 1
    if (completed, rows, runs) != (expected, expected, expected):
        raise SystemExit(
            f"runs {first}..{last}: {completed} completed, {rows} outbox rows for {runs} runs; expected {expected}"
        )


# --- the drain: engine workers and the raw baseline ---------------------------------------------


def _engine_worker(url: str, ready: Any, go: Any, results: Any) -> None:
    """Child process: `step_due_runs` until a claim comes back empty."""
    logging.basicConfig(level=logging.WARNING)
    runtime = Runtime(
        settings=Settings(database_url=url), engine=db_engine.make_engine(url), clock=SystemClock()
    )
    flow_engine.step_due_runs(runtime, limit=1)  # connect and import before the clock; nothing is due yet
    ready.put(True)
    go.wait()
    stepped = 0
    while (count := flow_engine.step_due_runs(runtime)) > 0:
        stepped += count
    results.put(stepped)
    runtime.engine.dispose()


def _baseline_worker(url: str, ready: Any, go: Any, results: Any) -> None:
    """Child process: the bare claim-and-update loop on the raw driver, same writes as the engine."""
    engine = db_engine.make_engine(url)
    sqlite = db_engine.is_sqlite(engine)
    raw = engine.raw_connection()
    cursor = raw.cursor()
    if sqlite:
        marks = "?"
        claim = ("SELECT id, flow_id, customer_id, trigger, history FROM flow_runs WHERE due_at <= ? "
                 "AND status IN ('active', 'waiting') ORDER BY due_at, id LIMIT ?")  # fmt: skip
        json_mark = "?"
    else:
        marks = "%s"
        claim = ("SELECT id, flow_id, customer_id, trigger, history FROM flow_runs WHERE due_at <= %s "
                 "AND status IN ('active', 'waiting') ORDER BY due_at, id LIMIT %s FOR UPDATE SKIP LOCKED")  # fmt: skip
        json_mark = "%s::jsonb"
    update = (
        f"UPDATE flow_runs SET status = 'completed', node_id = 'sms', node_entered_at = {marks}, wake_at = NULL, "
        f"due_at = NULL, finished_at = {marks}, exit_reason = 'completed', active_key = NULL, "
        f"history = {json_mark}, updated_at = {marks}, attempts = 0, last_error = NULL WHERE id = {marks}"
    )
    insert = (
        "INSERT INTO outbox (idempotency_key, run_id, flow_id, node_id, customer_id, kind, payload, status, "
        f"created_at, updated_at) VALUES ({marks}, {marks}, {marks}, 'sms', {marks}, 'send_sms', {json_mark}, "
        f"'pending', {marks}, {marks}) ON CONFLICT (idempotency_key) DO NOTHING"
    )
    action = {"type": "send_sms", "body": "Your cart misses you"}
    if not sqlite:
        raw.commit()
    ready.put(True)
    go.wait()
    stepped = 0
    while True:
        now = datetime.now(UTC)
        at = _sqlite_time(now) if sqlite else now
        if sqlite:
            cursor.execute("BEGIN IMMEDIATE")
        cursor.execute(claim, (at, BASELINE_BATCH))
        claimed = cursor.fetchall()
        if not claimed:
            cursor.execute("COMMIT") if sqlite else raw.commit()
            break
        visits = [{"node_id": node, "at": now.isoformat(), "outcome": outcome}
                  for node, outcome in (("wait", "passed"), ("sms", "entered"), ("sms", "passed"))]  # fmt: skip
        updates, inserts = [], []
        for run_id, flow_id, customer_id, trigger, history in claimed:
            if sqlite:
                trigger, history = orjson.loads(trigger), orjson.loads(history)
            payload = {"action": action, "trigger": trigger, "run_id": run_id, "flow_id": flow_id}
            updates.append((at, at, orjson.dumps([*history, *visits]).decode(), at, run_id))
            inserts.append(
                (f"{run_id}:sms", run_id, flow_id, customer_id, orjson.dumps(payload).decode(), at, at)
            )
        cursor.executemany(update, updates)
        cursor.executemany(insert, inserts)
        cursor.execute("COMMIT") if sqlite else raw.commit()
        stepped += len(claimed)
    results.put(stepped)
    raw.close()
    engine.dispose()


def drain(engine: Engine, url: str, target: Any, processes: int, first: int, last: int, label: str) -> float:
    """Make runs first..last due and time `processes` copies of `target` draining them; steps/s."""
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Queue(), context.Event(), context.Queue()
    children = [
        context.Process(target=target, args=(url, ready, go, results), daemon=True) for _ in range(processes)
    ]
    for child in children:
        child.start()
    for _ in children:  # each has imported and connected; only then does the sample fall due
        ready.get(timeout=SERVER_START_TIMEOUT)
    make_due(engine, first, last)
    expected = last - first + 1
    log(f"  {label}: {expected} runs due")
    started = time.perf_counter()
    go.set()
    deadline, next_progress = started + DRAIN_TIMEOUT, started + PROGRESS_EVERY
    stepped: list[int] = []
    while len(stepped) < processes:
        try:
            stepped.append(results.get(timeout=0.2))
        except Exception:  # queue.Empty: still draining
            if time.perf_counter() > deadline or not any(child.is_alive() for child in children):
                raise SystemExit(f"{label}: the drain did not finish") from None
        if time.perf_counter() >= next_progress:
            next_progress += PROGRESS_EVERY
            with engine.connect() as connection:
                done = connection.execute(
                    text("SELECT count(*) FROM outbox WHERE run_id BETWEEN :a AND :b"),
                    {"a": first, "b": last},
                ).scalar()
            log(f"    … {done}/{expected} after {time.perf_counter() - started:.0f} s")
    seconds = time.perf_counter() - started
    for child in children:
        child.join(10)
    check_drained(engine, first, last)
    rate = expected / seconds
    share = ", ".join(str(n) for n in stepped)
    log(f"  {label}: {rate:.0f} steps/s ({expected} in {seconds:.2f} s; per process {share})")
    return rate


@dataclass
class DrainFigures:
    baseline: float
    one_worker: float
    two_workers: float


def run_drain(url: str, runs: int, due: int) -> DrainFigures:
    engine = db_engine.make_engine(url)
    migrate.upgrade(engine)
    try:
        flow_id, version_id = _live_flow(engine, "drain", DRAIN_FLOW)
        log(f"  seeding {runs} waiting runs")
        log(f"  seeded in {seed_runs(engine, runs, flow_id, version_id):.1f} s")
        baseline = drain(
            engine, url, _baseline_worker, 1, 1, due, "baseline (raw claim-and-update, 1 process)"
        )
        one = drain(engine, url, _engine_worker, 1, due + 1, 2 * due, "engine, 1 worker")
        two = drain(engine, url, _engine_worker, 2, 2 * due + 1, 3 * due, "engine, 2 workers")
        with engine.connect() as connection:
            waiting = connection.execute(
                text("SELECT count(*) FROM flow_runs WHERE status = 'waiting'")
            ).scalar()
        log(f"  {waiting} runs still waiting at the end (not due)")
    finally:
        engine.dispose()
    return DrainFigures(baseline, one, two)


# --- trigger → outbox under background traffic --------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def winback_serve(url: str, directory: Path) -> Iterator[str]:
    """`winback serve` (API and embedded worker) in a child process on a loopback port."""
    port = _free_port()
    env = {**os.environ, "WINBACK_DATABASE_URL": url, "WINBACK_LOG_LEVEL": "warning",
           "WINBACK_CHECKOUT_ABANDONED_AFTER_S": str(ABANDON_AFTER_S)}  # fmt: skip
    env.pop("WINBACK_SETTINGS_FILE", None)
    output = (directory / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "winback.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, cwd=directory, stdout=output, stderr=output,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            try:
                if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"winback serve did not start:\n{(directory / 'serve.log').read_text()}")
            time.sleep(0.05)
        yield base_url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        output.close()


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _background(base_url: str, key: str, stop: threading.Event, sent: list[int], errors: list[str]) -> None:
    """~1,000 events/s of page views and product views from anonymous visitors, paced."""
    rng = random.Random(20260501)
    interval = BACKGROUND_BATCH / BACKGROUND_EVENTS_PER_S
    with httpx.Client(base_url=base_url, auth=(key, ""), timeout=30.0) as http:
        next_send = time.monotonic()
        number = 0
        while not stop.is_set():
            now = _iso(datetime.now(UTC))
            batch = []
            for _ in range(BACKGROUND_BATCH):
                number += 1
                visitor = f"visitor-{rng.randrange(BACKGROUND_VISITORS)}"
                product = f"prod_{rng.randrange(400):05d}"
                if rng.random() < 0.5:
                    batch.append({"type": "page", "anonymousId": visitor, "name": "Product", "messageId": f"bg-{number}",
                                  "timestamp": now, "properties": {"path": f"/products/{product}"}})  # fmt: skip
                else:
                    batch.append({"type": "track", "anonymousId": visitor, "event": "Product Viewed",
                                  "messageId": f"bg-{number}", "timestamp": now,
                                  "properties": {"product_id": product, "price": 49.0, "currency": "USD"}})  # fmt: skip
            response = http.post("/v1/batch", json={"batch": batch})
            if response.status_code != 200:
                errors.append(f"background: {response.status_code} {response.text[:200]}")
                return
            sent[0] += len(batch)
            next_send += interval
            stop.wait(max(0.0, next_send - time.monotonic()))


def _probes(base_url: str, key: str, count: int, sent_at: dict[str, datetime], errors: list[str]) -> None:
    """`count` customers who start a checkout and leave, PROBES_PER_S a second."""
    with httpx.Client(base_url=base_url, auth=(key, ""), timeout=30.0) as http:
        next_send = time.monotonic()
        for number in range(count):
            checkout_id = f"probe-{number}"
            user = f"probe-user-{number}"
            now = datetime.now(UTC)
            batch = [
                {"type": "identify", "userId": user, "messageId": f"probe-id-{number}", "timestamp": _iso(now),
                 "traits": {"phone": f"+1415555{number:04d}", "sms_consent": "subscribed"}},
                {"type": "track", "userId": user, "event": "Checkout Started", "messageId": f"probe-co-{number}",
                 "timestamp": _iso(now), "properties": {"checkout_id": checkout_id, "value": 80, "currency": "USD",
                 "products": [{"product_id": "prod_00001", "price": 80, "quantity": 1}]}},
            ]  # fmt: skip
            response = http.post("/v1/batch", json={"batch": batch})
            if response.status_code != 200:
                errors.append(f"probe: {response.status_code} {response.text[:200]}")
                return
            sent_at[checkout_id] = now
            next_send += 1 / PROBES_PER_S
            time.sleep(max(0.0, next_send - time.monotonic()))


@dataclass
class LatencyFigures:
    p50_ms: float
    p95_ms: float
    max_ms: float
    background_events_per_s: float
    end_to_end_p95_ms: float  # from sending Checkout Started to the outbox row


def _probe_messages(engine: Engine, flow_id: int) -> dict[str, tuple[datetime, datetime]]:
    """checkout id → (Checkout Abandoned timestamp, outbox created_at) for the probes' messages."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT payload, created_at FROM outbox WHERE flow_id = :flow"), {"flow": flow_id}
        ).all()
    found = {}
    for payload, created_at in rows:
        if isinstance(payload, str):
            payload = orjson.loads(payload)
        if isinstance(created_at, str):
            created_at = datetime.fromisoformat(created_at)
        created_at = created_at.replace(tzinfo=UTC) if created_at.tzinfo is None else created_at
        trigger = payload["trigger"]
        found[trigger["properties"]["checkout_id"]] = (
            datetime.fromisoformat(trigger["timestamp"]),
            created_at,
        )
    return found


def run_latency(url: str, probes: int, directory: Path) -> LatencyFigures:
    engine = db_engine.make_engine(url)
    migrate.upgrade(engine)
    try:
        key = apikeys.create_key(engine, name="bench", scope="write", now=datetime.now(UTC)).secret
        flow_id, _ = _live_flow(engine, "abandoned checkout, no delay", LATENCY_FLOW)
        stop = threading.Event()
        sent, errors = [0], []
        sent_at: dict[str, datetime] = {}
        with winback_serve(url, directory) as base_url:
            log(f"  winback serve at {base_url}; background traffic at {BACKGROUND_EVENTS_PER_S} events/s")
            background = threading.Thread(
                target=_background, args=(base_url, key, stop, sent, errors), daemon=True
            )
            started = time.perf_counter()
            background.start()
            time.sleep(2.0)  # the background load is steady before the first probe
            log(f"  {probes} probes at {PROBES_PER_S}/s")
            _probes(base_url, key, probes, sent_at, errors)
            deadline = time.monotonic() + LATENCY_TIMEOUT
            found: dict[str, tuple[datetime, datetime]] = {}
            while len(found) < len(sent_at) and not errors:
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {len(found)} of {len(sent_at)} probe messages appeared in time")
                time.sleep(PROGRESS_EVERY)
                found = _probe_messages(engine, flow_id)
                log(f"    … {len(found)}/{len(sent_at)} probe messages in the outbox")
            stop.set()
            background.join(10)
            background_rate = sent[0] / (time.perf_counter() - started)
        if errors:
            raise SystemExit(errors[0])
    finally:
        engine.dispose()
    latencies = [(written - fired).total_seconds() * 1000 for fired, written in found.values()]
    end_to_end = [(found[checkout][1] - sent_at[checkout]).total_seconds() * 1000 for checkout in found]
    waits = [(fired - sent_at[checkout]).total_seconds() for checkout, (fired, _) in found.items()]
    log(
        f"  abandonment fired {min(waits):.1f}–{max(waits):.1f} s after the checkout started "
        f"(window {ABANDON_AFTER_S} s, then the next sweep)"
    )
    figures = LatencyFigures(
        p50_ms=_percentile(latencies, 0.5), p95_ms=_percentile(latencies, 0.95), max_ms=max(latencies),
        background_events_per_s=background_rate, end_to_end_p95_ms=_percentile(end_to_end, 0.95),
    )  # fmt: skip
    log(
        f"  trigger→outbox over {len(latencies)} probes: p50 {figures.p50_ms:.0f} ms, p95 {figures.p95_ms:.0f} ms, "
        f"max {figures.max_ms:.0f} ms; background {background_rate:.0f} events/s; checkout started→outbox "
        f"p95 {figures.end_to_end_p95_ms:.0f} ms"
    )
    return figures


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Figures:
    backend: str
    drain: DrainFigures
    latency: LatencyFigures

    @property
    def ratio(self) -> float:
        return self.drain.one_worker / self.drain.baseline

    def line(self) -> str:
        return (
            f"flow_steps_per_s={self.drain.one_worker:.0f} baseline_steps_per_s={self.drain.baseline:.0f} "
            f"ratio={self.ratio:.2f} trigger_to_outbox_p95_ms={self.latency.p95_ms:.0f}"
        )

    def verdict(self) -> str:
        checks = [
            (f"1 worker >= {TARGET_STEPS_PER_S}/s", self.drain.one_worker >= TARGET_STEPS_PER_S),
            (f"2 workers >= {TARGET_STEPS_PER_S}/s each", self.drain.two_workers / 2 >= TARGET_STEPS_PER_S),
            (f"ratio >= {TARGET_RATIO}", self.ratio >= TARGET_RATIO),
            (f"p95 < {TARGET_P95_MS} ms", self.latency.p95_ms < TARGET_P95_MS),
        ]
        return ", ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks)


def bench_backend(backend: str, runs: int, due: int, probes: int, admin_url: str) -> Figures:
    with databases(backend, admin_url, ["flows", "flows_latency"]) as (drain_url, latency_url):
        log(f"[{backend}] drain: {runs} runs waiting, samples of {due} falling due")
        drained = run_drain(drain_url, runs, due)
        log(f"[{backend}] trigger → outbox under background traffic")
        with tempfile.TemporaryDirectory(prefix="winback-bench-serve-") as directory:
            latency = run_latency(latency_url, probes, Path(directory))
    log(f"  load average after {backend}: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    figures = Figures(backend, drained, latency)
    log(f"[{backend}] {figures.line()} two_workers_steps_per_s={drained.two_workers:.0f}")
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--runs", type=int, default=None, help=f"runs waiting (default {DEFAULT_RUNS})")
    parser.add_argument("--due", type=int, default=None, help=f"runs per due sample (default {DEFAULT_DUE})")
    parser.add_argument(
        "--probes", type=int, default=None, help=f"abandoned checkouts (default {DEFAULT_PROBES})"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_RUNS} runs, {QUICK_DUE} due, {QUICK_PROBES} probes"
    )
    parser.add_argument("--postgres-url", default=POSTGRES_ADMIN_URL, help="an admin URL on loopback")
    args = parser.parse_args(argv)
    runs = args.runs or (QUICK_RUNS if args.quick else DEFAULT_RUNS)
    due = args.due or (QUICK_DUE if args.quick else DEFAULT_DUE)
    probes = args.probes or (QUICK_PROBES if args.quick else DEFAULT_PROBES)
    if 3 * due > runs:
        raise SystemExit(f"--runs must hold three disjoint samples of --due: {runs} < 3 × {due}")
    host = make_url(db_engine.normalise_url(args.postgres_url)).host
    if args.backend != "sqlite" and host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"--postgres-url must point at loopback, not {host!r}")
    log(f"{os.cpu_count()} cores; runs={runs} due={due} probes={probes}")
    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    results = [bench_backend(backend, runs, due, probes, args.postgres_url) for backend in backends]
    log("")
    for figures in results:
        log(f"{figures.backend:>10}: {figures.line()} (2 workers: {figures.drain.two_workers:.0f} steps/s)")
        log(f"{'':>10}  {figures.verdict()}")
    if args.backend == "both":
        log("(stdout: the PostgreSQL line, then the SQLite line last)")
    for figures in results:
        print(figures.line(), flush=True)


if __name__ == "__main__":
    main()
