"""Messages rendered and handed to a local Twilio per second, and how much of a paced rate sending uses.

    python bench/send.py [--database-url URL] [--messages N] [--paced M] [--rate R] [--quick]

On a fresh, migrated database (default: a SQLite file in a temporary directory; a PostgreSQL URL
names the server, where the bench creates `winback_bench_<pid>_send` and drops it afterwards):

- N customers with a phone number and `sms_consent = subscribed` (Core inserts), and one pending
  `send_sms` outbox row each, as a flow writes it (no run): Liquid body naming the customer and
  the shop, with one link (tracked), single-part GSM-7 once rendered. Quiet hours are the whole day
  (`00:00-24:00`) and `frequency_caps` is empty, so every message may go.
- The provider: a small Twilio Messages API (`POST /2010-04-01/Accounts/{sid}/Messages.json`,
  Basic auth, To/From/Body checked, 201 with a sid) in a separate process on 127.0.0.1, HTTP/1.1
  keep-alive, recording `time.monotonic()` as each request has been read (the clock is
  system-wide, so the bench compares it with its own).

1. baseline: the same number of bare POSTs of the same forms (the bodies phase A sent) through one
   `httpx.Client`, no database: `baseline_per_s`.
2. phase A, pacing off (`send_rates={}`): `Sender.run(budget_s=2.0)` — the worker's pass: intake
   of outbox rows, then delivery (policies, Liquid, tracked link, pacing slot, `sending` commit,
   the HTTP call, the outcome commit) — in a loop until all N are sent:
   `send_per_s = N / seconds`; `ratio = send_per_s / baseline_per_s`.
3. phase B, pacing on (`send_rates={"twilio": R}`): M more outbox rows, taken into queued messages
   before the clock starts, then `Sender.run(budget_s=2.0)` in a loop (as the worker calls it,
   holding the `send:twilio` lease) until all M are sent. From the provider's arrival times:
   - `pacing_utilisation` = units sent / (R × (last arrival − first arrival + one slot)): 1.00 when
     every send came exactly 1/R after the one before, less for every slot left unused;
   - `pacing_violations` = the arrivals t for which the half-open window [t, t + 1) holds more than
     floor(R) units (SMS parts; the bodies here are single-part).
   The same figures from the bench's side (when the HTTP client started each request, after the
   pacer's wait) go to stderr, with the pacer's sleeps and the transit times, to tell the pacer's
   own spacing from what the trip to the provider adds.

Progress goes to stderr; the last stdout line is
`send_per_s=… pacing_utilisation=… pacing_violations=… baseline_per_s=… ratio=…`.
Every message of both phases must end `sent`, with its text, exactly once at the provider, else
the bench stops with an error.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hmac
import itertools
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/send.py` from a checkout

import httpx  # noqa: E402
import orjson  # noqa: E402
from sqlalchemy import Engine, func, insert, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench import scratch  # noqa: E402
from winback.db import engine as db_engine  # noqa: E402
from winback.db import migrate  # noqa: E402
from winback.db.models import Customer, Message, OutboxEntry  # noqa: E402
from winback.kernel.clock import SystemClock  # noqa: E402
from winback.messaging import sms_text  # noqa: E402
from winback.messaging.channels.base import Channel, ChannelName  # noqa: E402
from winback.messaging.channels.twilio import TwilioChannel  # noqa: E402
from winback.messaging.channels.webhook import new_client  # noqa: E402
from winback.messaging.pipeline import Sender, SendReport  # noqa: E402
from winback.messaging.registry import Registry  # noqa: E402
from winback.runtime import Runtime  # noqa: E402
from winback.settings import Settings  # noqa: E402
from winback.worker.runner import SEND_BUDGET_S  # noqa: E402

DEFAULT_MESSAGES = 2_000
DEFAULT_PACED = 600
DEFAULT_RATE = 20.0
QUICK_MESSAGES, QUICK_PACED = 300, 150
ACCOUNT_SID = "AC" + "5e4d" * 8
AUTH_TOKEN = "bench-auth-token"
FROM_NUMBER = "+15005550006"
PUBLIC_URL = "https://winback.example"
SHOP_NAME = "Northwind Outfitters"
BODY = (
    "Hi {{ customer.first_name }}, your cart at {{ shop.name }} is waiting: https://shop.example/cart "
    "Reply STOP to opt out"
)
FIRST_NAMES = ["Ava", "Liam", "Mia", "Noah", "Zoe", "Lucas", "Emma", "Leo", "Chloe", "Ethan", "Ines", "Omar"]
PROVIDER_START_TIMEOUT = 30.0  # seconds
PHASE_TIMEOUT_MARGIN = 120.0  # seconds beyond the expected duration before a phase is declared stuck

TARGET_UTILISATION = 0.95


log = scratch.log


# --- the provider: Twilio's Messages API in a child process -------------------------------------


def _provider_main(conn: Any, account_sid: str, auth_token: str) -> None:
    """Child process: serve until terminated; the port goes back through `conn`."""
    asyncio.run(_serve_provider(conn, account_sid, auth_token))


async def _serve_provider(conn: Any, account_sid: str, auth_token: str) -> None:
    expected_auth = "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
    messages_path = f"/2010-04-01/Accounts/{account_sid}/Messages.json"
    arrivals: list[tuple[float, str, str]] = []  # (time.monotonic(), To, Body)
    sids = itertools.count(1)

    def answer(method: str, target: str, headers: dict[str, str], body: bytes, at: float) -> tuple[int, Any]:
        if method == "POST" and target == messages_path:
            if not hmac.compare_digest(headers.get("authorization", ""), expected_auth):
                return 401, {"code": 20003, "message": "Authenticate", "status": 401}
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
            to = (form.get("To") or [""])[0]
            body_text = (form.get("Body") or [""])[0]
            if not to:
                return 400, {"code": 21604, "message": "A 'To' phone number is required.", "status": 400}
            if not form.get("From") and not form.get("MessagingServiceSid"):
                return 400, {"code": 21603, "message": "A 'From' parameter is required.", "status": 400}
            if not body_text:
                return 400, {"code": 21602, "message": "Message body is required.", "status": 400}
            arrivals.append((at, to, body_text))
            sid = f"SM{next(sids):032x}"
            return 201, {
                "sid": sid,
                "account_sid": account_sid,
                "to": to,
                "status": "queued",
                "num_segments": "1",
            }
        if method == "GET" and target == "/bench/arrivals":
            return 200, arrivals
        if method == "POST" and target == "/bench/reset":
            arrivals.clear()
            return 200, {"ok": True}
        return 404, {
            "code": 20404,
            "message": f"The requested resource {target} was not found",
            "status": 404,
        }

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                status, payload = answer(method, target, headers, body, time.monotonic())
                data = orjson.dumps(payload)
                reason = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized"}.get(
                    status, "Not Found"
                )
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n".encode("ascii")
                    + data
                )
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    conn.send(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


@dataclass
class Arrival:
    at: float  # time.monotonic() at the provider, the request read
    to: str
    body: str


class Provider:
    """The child process's handle: its URL, the arrivals it recorded."""

    def __init__(self) -> None:
        # Forked before the bench opens a database or starts a thread (spawn where fork is missing).
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        parent, child = context.Pipe()
        self.process = context.Process(
            target=_provider_main, args=(child, ACCOUNT_SID, AUTH_TOKEN), name="bench-twilio", daemon=True
        )
        self.process.start()
        if not parent.poll(PROVIDER_START_TIMEOUT):
            self.process.terminate()
            raise SystemExit("the local Twilio did not start")
        self.url = f"http://127.0.0.1:{parent.recv()}"
        self._control = httpx.Client(base_url=self.url, timeout=60.0)

    def arrivals(self) -> list[Arrival]:
        response = self._control.get("/bench/arrivals")
        response.raise_for_status()
        return [Arrival(at, to, body) for at, to, body in response.json()]

    def reset(self) -> None:
        self._control.post("/bench/reset").raise_for_status()

    def close(self) -> None:
        self._control.close()
        self.process.terminate()
        self.process.join(10)


# --- the database -------------------------------------------------------------------------------


@contextmanager
def database(url: str | None) -> Iterator[str]:
    """A fresh database: a temporary SQLite file, a new SQLite file at `url`, or a new PostgreSQL
    database on the server `url` names (dropped afterwards)."""
    if url is None:
        with tempfile.TemporaryDirectory(prefix="winback-bench-send-") as directory:
            yield f"sqlite:///{directory}/send.db"
        return
    parsed = make_url(db_engine.normalise_url(url))
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and Path(parsed.database).exists():
            raise SystemExit(f"{parsed.database} exists; the bench needs a new file")
        yield url
        return
    if parsed.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"--database-url must point at loopback, not {parsed.host!r}")
    with scratch.postgres_databases(url, ["send"]) as urls:
        yield urls[0]


def seed_customers(engine: Engine, count: int) -> None:
    now = datetime.now(UTC)
    rows = [
        {
            "phone": f"+1415{2_000_000 + number:07d}",
            "first_name": FIRST_NAMES[number % len(FIRST_NAMES)],
            "country": "US",
            "sms_consent": "subscribed",
            "tags": [],
            "properties": {},
            "orders_count": 0,
            "total_spent": 0,
            "total_refunded": 0,
            "first_seen_at": now,
            "last_seen_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for number in range(1, count + 1)
    ]
    with engine.begin() as connection:
        for start in range(0, len(rows), 5_000):
            connection.execute(insert(Customer), rows[start : start + 5_000])


def queue_outbox(engine: Engine, label: str, count: int, customers: int) -> None:
    """`count` pending `send_sms` rows as a flow writes them (no run), one per customer in turn."""
    now = datetime.now(UTC)
    rows = []
    for number in range(1, count + 1):
        customer_id = (number - 1) % customers + 1
        trigger = {
            "event": "Checkout Abandoned",
            "message_id": f"bench:{label}:{number}",
            "timestamp": now.isoformat(),
            "properties": {"checkout_id": f"co-{label}-{number}", "value": 80, "currency": "USD"},
        }
        rows.append(
            {
                "idempotency_key": f"bench-{label}:{number}",
                "run_id": None,
                "flow_id": None,
                "node_id": "sms",
                "customer_id": customer_id,
                "kind": "send_sms",
                "payload": {"action": {"type": "send_sms", "body": BODY}, "trigger": trigger},
                "status": "pending",
                "created_at": now,
                "updated_at": now,
            }
        )
    with engine.begin() as connection:
        for start in range(0, len(rows), 5_000):
            connection.execute(insert(OutboxEntry), rows[start : start + 5_000])


def check_sent(engine: Engine, label: str, expected: int, arrivals: list[Arrival]) -> None:
    """Every message of the phase is `sent`, and arrived once, rendered, single-part; else stop."""
    with engine.connect() as connection:
        statuses = dict(
            connection.execute(
                select(Message.status, func.count())
                .join(OutboxEntry, OutboxEntry.id == Message.outbox_id)
                .where(OutboxEntry.idempotency_key.like(f"bench-{label}:%"))
                .group_by(Message.status)
            ).all()
        )
    problems = []
    if statuses != {"sent": expected}:
        problems.append(f"message statuses {statuses}, expected {{'sent': {expected}}}")
    if len(arrivals) != expected:
        problems.append(f"{len(arrivals)} requests at the provider, expected {expected}")
    for arrival in arrivals:
        if "{{" in arrival.body or f"{PUBLIC_URL}/l/" not in arrival.body or SHOP_NAME not in arrival.body:
            problems.append(f"a body was not rendered as expected: {arrival.body!r}")
            break
        if sms_text.analyse(arrival.body).parts != 1:
            problems.append(f"a body is not single-part: {arrival.body!r}")
            break
    if problems:
        raise SystemExit(f"phase {label}: " + "; ".join(problems))


# --- the sender ---------------------------------------------------------------------------------


class BenchRegistry(Registry):
    """The real registry, except that the Twilio adapter's HTTP client notes when each request starts."""

    def __init__(self, settings: Settings, starts: list[float]) -> None:
        super().__init__(settings)
        self.starts = starts

    def _build(self, channel: ChannelName) -> Channel:
        if self.provider(channel) != "twilio":
            return super()._build(channel)
        client = new_client(self.settings.webhook_timeout_s)
        client.event_hooks = {"request": [lambda _request: self.starts.append(time.monotonic())]}
        return TwilioChannel.from_settings(self.settings, client=client)


@dataclass
class Sleeps:
    """The pacer's waits as the sender asked for them, and how long they really took."""

    asked: list[float] = field(default_factory=list)
    took: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        started = time.monotonic()
        time.sleep(seconds)
        self.asked.append(seconds)
        self.took.append(time.monotonic() - started)


def settings_for(url: str, provider_url: str, rates: dict[str, float]) -> Settings:
    return Settings(
        database_url=url,
        public_url=PUBLIC_URL,
        store_name=SHOP_NAME,
        sms_provider="twilio",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from_number=FROM_NUMBER,
        twilio_messaging_service_sid=None,
        twilio_base_url=provider_url,
        quiet_hours_window="00:00-24:00",
        quiet_hours_overrides={},
        frequency_caps={},
        send_rates=rates,
    )


def drain(
    sender: Sender, expected: int, label: str, timeout_s: float, on_pass: Callable[[int], None] | None = None
) -> tuple[float, SendReport]:
    """`sender.run()` passes until `expected` messages are sent; returns (seconds, totals)."""
    totals = SendReport()
    started = time.perf_counter()
    next_mark = 1
    while totals.sent < expected:
        report = sender.run(budget_s=SEND_BUDGET_S)
        for name in ("taken", "sent", "deferred", "skipped", "failed", "retrying", "unknown"):
            setattr(totals, name, getattr(totals, name) + getattr(report, name))
        if report.total == 0 or totals.failed or totals.skipped or totals.retrying or totals.unknown:
            raise SystemExit(
                f"{label}: stuck or not sendable after {totals.sent}/{expected}: {totals.describe()}"
            )
        if on_pass is not None:
            on_pass(totals.sent)
        if totals.sent * 10 >= next_mark * expected:  # a line per tenth reached (one per pass at most)
            elapsed = time.perf_counter() - started
            log(f"    … {totals.sent}/{expected} sent after {elapsed:.1f} s ({totals.sent / elapsed:.0f}/s)")
            next_mark = totals.sent * 10 // expected + 1
        if time.perf_counter() - started > timeout_s:
            raise SystemExit(f"{label}: only {totals.sent}/{expected} sent in {timeout_s:.0f} s")
    return time.perf_counter() - started, totals


# --- the figures --------------------------------------------------------------------------------


@dataclass
class Pace:
    units: int
    span_s: float  # first to last send, plus the last send's own slot
    utilisation: float
    violations: int
    busiest: int  # the most units in any one-second window
    full_windows: list[float]  # units / rate of each whole second from the first send


def pace_of(times: list[float], units: list[int], rate: float) -> Pace:
    order = sorted(range(len(times)), key=times.__getitem__)
    times = [times[i] for i in order]
    units = [units[i] for i in order]
    limit = int(rate)  # the pacer's promise: floor(rate) units in any [t, t + 1)
    total = sum(units)
    span = times[-1] - times[0] + units[-1] / rate
    violations = busiest = in_window = 0
    ahead = 0
    for index, start in enumerate(times):
        while ahead < len(times) and times[ahead] < start + 1.0:
            in_window += units[ahead]
            ahead += 1
        busiest = max(busiest, in_window)
        if in_window > limit:
            violations += 1
        in_window -= units[index]
    windows = []
    second = 0
    while times[0] + second + 1.0 <= times[-1]:
        low, high = times[0] + second, times[0] + second + 1.0
        windows.append(sum(u for t, u in zip(times, units, strict=True) if low <= t < high) / rate)
        second += 1
    return Pace(total, span, total / (rate * span), violations, busiest, windows)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def describe_pace(label: str, pace: Pace, rate: float) -> None:
    windows = pace.full_windows
    spread = (
        f"; whole seconds: mean {statistics.mean(windows):.3f}, min {min(windows):.3f}" if windows else ""
    )
    log(
        f"  {label}: {pace.units} units in {pace.span_s:.2f} s → utilisation {pace.utilisation:.4f} of {rate:g}/s; "
        f"violations {pace.violations}, busiest one-second window {pace.busiest} units{spread}"
    )


def gaps(times: list[float], rate: float) -> tuple[int, float, float]:
    """Gaps between consecutive sends longer than 1.5 slots: how many, the time they lost, the longest."""
    slot = 1.0 / rate
    long = [b - a for a, b in itertools.pairwise(sorted(times)) if b - a > 1.5 * slot]
    return len(long), sum(g - slot for g in long), max(long, default=0.0)


# --- the phases ---------------------------------------------------------------------------------


def run_baseline(provider: Provider, bodies: list[tuple[str, str]]) -> float:
    """The same POSTs, bare: one keep-alive httpx client, no database; returns requests/s."""
    provider.reset()
    path = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    callback = f"{PUBLIC_URL}/webhooks/twilio/status"
    forms = [
        urlencode([("To", to), ("From", FROM_NUMBER), ("Body", body), ("StatusCallback", callback)]).encode()
        for to, body in bodies
    ]
    headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
    with httpx.Client(base_url=provider.url, timeout=30.0) as client:
        client.get("/bench/arrivals")  # connect first, as the sender's client is warm after its first send
        started = time.perf_counter()
        for form in forms:
            response = client.post(path, content=form, auth=(ACCOUNT_SID, AUTH_TOKEN), headers=headers)
            if response.status_code != 201:
                raise SystemExit(f"baseline: the provider answered {response.status_code}: {response.text}")
        seconds = time.perf_counter() - started
    if len(provider.arrivals()) != len(forms):
        raise SystemExit("baseline: the provider did not record every request")
    return len(forms) / seconds


@dataclass
class Figures:
    send_per_s: float
    baseline_per_s: float
    utilisation: float
    violations: int

    def line(self) -> str:
        return (
            f"send_per_s={self.send_per_s:.0f} pacing_utilisation={self.utilisation:.2f} "
            f"pacing_violations={self.violations} baseline_per_s={self.baseline_per_s:.0f} "
            f"ratio={self.send_per_s / self.baseline_per_s:.2f}"
        )


def bench(url: str, provider: Provider, messages: int, paced: int, rate: float) -> Figures:
    engine = db_engine.make_engine(url)
    migrate.upgrade(engine)
    try:
        started = time.perf_counter()
        seed_customers(engine, messages)
        queue_outbox(engine, "A", messages, messages)
        log(
            f"  {messages} customers and {messages} pending send_sms outbox rows in {time.perf_counter() - started:.1f} s"
        )

        # Phase A: pacing off, the whole path from outbox row to provider.
        log(f"  phase A: pacing off, {messages} messages, Sender.run(budget_s={SEND_BUDGET_S:g}) passes")
        settings = settings_for(url, provider.url, {})
        runtime = Runtime(settings=settings, engine=engine, clock=SystemClock())
        starts_a: list[float] = []
        sender = Sender(runtime, registry=BenchRegistry(settings, starts_a))
        provider.reset()
        intake = 0.0
        real_take = sender.take_outbox

        def timed_take(limit: int | None = None) -> int:
            nonlocal intake
            began = time.perf_counter()
            taken = real_take(limit)
            intake += time.perf_counter() - began
            return taken

        sender.take_outbox = timed_take  # type: ignore[method-assign]
        seconds_a, totals_a = drain(sender, messages, "phase A", messages / 5 + PHASE_TIMEOUT_MARGIN)
        sender.close()
        arrivals_a = provider.arrivals()
        check_sent(engine, "A", messages, arrivals_a)
        send_per_s = messages / seconds_a
        log(
            f"  phase A: {messages} sent in {seconds_a:.2f} s = {send_per_s:.0f}/s "
            f"(intake {intake:.2f} s = {messages / intake:.0f} rows/s; delivery {seconds_a - intake:.2f} s "
            f"= {messages / (seconds_a - intake):.0f}/s)"
        )

        # Baseline: the same requests, bare.
        baseline = run_baseline(provider, [(a.to, a.body) for a in arrivals_a])
        log(f"  baseline: {messages} bare POSTs, one httpx client: {baseline:.0f}/s")

        # Phase B: pacing on.
        queue_outbox(engine, "B", paced, messages)
        settings_b = settings_for(url, provider.url, {"twilio": rate})
        runtime_b = Runtime(settings=settings_b, engine=engine, clock=SystemClock())
        starts_b: list[float] = []
        sleeps = Sleeps()
        sender_b = Sender(runtime_b, registry=BenchRegistry(settings_b, starts_b), sleep=sleeps)
        reserved: list[float] = []  # the start times the pacer handed out
        real_reserve = sender_b.pacers.reserve

        def noted_reserve(provider_name: str, sender_name: str, now: float, units: int = 1) -> float:
            start = real_reserve(provider_name, sender_name, now, units)
            reserved.append(start)
            return start

        sender_b.pacers.reserve = noted_reserve  # type: ignore[method-assign]
        while sender_b.take_outbox():  # queued before the clock starts: phase A measured intake
            pass
        provider.reset()
        log(f"  phase B: pacing at {rate:g}/s, {paced} messages (~{paced / rate:.0f} s)")
        seconds_b, _ = drain(sender_b, paced, "phase B", paced / rate + PHASE_TIMEOUT_MARGIN)
        sender_b.close()
        arrivals_b = provider.arrivals()
        check_sent(engine, "B", paced, arrivals_b)
        units_b = [sms_text.analyse(a.body).parts for a in arrivals_b]
        at_provider = pace_of([a.at for a in arrivals_b], units_b, rate)
        at_client = pace_of(starts_b, units_b, rate)
        by_pacer = pace_of(reserved, units_b, rate)
        log(f"  phase B: {paced} sent in {seconds_b:.2f} s")
        describe_pace("at the provider", at_provider, rate)
        describe_pace("at the client (request start)", at_client, rate)
        describe_pace("as the pacer reserved them", by_pacer, rate)
        late_start = [(start - slot) * 1000 for slot, start in zip(reserved, starts_b, strict=True)]
        log(
            f"  reserved slot → request start: p50 {_percentile(late_start, 0.5):.2f} ms, "
            f"p99 {_percentile(late_start, 0.99):.2f} ms, max {max(late_start):.2f} ms"
        )
        count, lost, longest = gaps([a.at for a in arrivals_b], rate)
        log(
            f"  gaps over 1.5 slots at the provider: {count}, {lost:.3f} s lost in all, longest {longest * 1000:.1f} ms"
        )
        transit = [(a.at - s) * 1000 for a, s in zip(arrivals_b, starts_b, strict=True)]
        log(
            f"  client start → provider read: p50 {_percentile(transit, 0.5):.2f} ms, "
            f"p99 {_percentile(transit, 0.99):.2f} ms, max {max(transit):.2f} ms"
        )
        late = [took - asked for asked, took in zip(sleeps.asked, sleeps.took, strict=True)]
        if late:
            log(
                f"  pacer waits: {len(late)} sleeps, {sum(sleeps.asked):.2f} s asked; overshoot p50 "
                f"{_percentile(late, 0.5) * 1000:.2f} ms, p99 {_percentile(late, 0.99) * 1000:.2f} ms, "
                f"max {max(late) * 1000:.2f} ms"
            )
        else:
            log("  pacer waits: none (the pipeline never got ahead of the rate)")
    finally:
        engine.dispose()
    return Figures(send_per_s, baseline, at_provider.utilisation, at_provider.violations)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=None,
        help="default: a SQLite file in a temporary directory; a PostgreSQL URL names the (loopback) "
        "server where a database is created and dropped",
    )
    parser.add_argument("--messages", type=int, default=None, help=f"phase A (default {DEFAULT_MESSAGES})")
    parser.add_argument("--paced", type=int, default=None, help=f"phase B (default {DEFAULT_PACED})")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="phase B's send rate, units/s")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_MESSAGES} and {QUICK_PACED} messages")
    args = parser.parse_args(argv)
    messages = args.messages or (QUICK_MESSAGES if args.quick else DEFAULT_MESSAGES)
    paced = args.paced or (QUICK_PACED if args.quick else DEFAULT_PACED)
    if messages < 1 or paced < 2 or args.rate < 1:
        raise SystemExit("--messages ≥ 1, --paced ≥ 2 and --rate ≥ 1 please")
    logging.basicConfig(level=logging.WARNING)
    log(f"{os.cpu_count()} cores; messages={messages} paced={paced} rate={args.rate:g}/s")
    provider = Provider()
    try:
        log(f"  local Twilio at {provider.url} (separate process)")
        with database(args.database_url) as url:
            log(f"  database {make_url(url).render_as_string(hide_password=True)}")
            figures = bench(url, provider, messages, paced, args.rate)
    finally:
        provider.close()
    log(f"  load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    verdict = "met" if figures.utilisation >= TARGET_UTILISATION and figures.violations == 0 else "NOT met"
    log(f"  pacing target (utilisation ≥ {TARGET_UTILISATION:.0%}, no violation): {verdict}")
    print(figures.line(), flush=True)


if __name__ == "__main__":
    main()
