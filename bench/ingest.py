"""Events per second through POST /v1/batch and through one worker, against a raw executemany baseline.

    python bench/ingest.py [--backend sqlite|postgresql|both] [--events N] [--clients C] [--quick]

For each backend, in one run and each on a fresh, migrated database:

1. baseline: the same event rows (already-built dicts) written with a plain
   `connection.execute(insert(events), rows)` executemany, one commit per 100 rows, one thread,
   through an engine made by `winback.db.engine.make_engine` (same table, indexes and settings);
2. ingest: the real app (`create_app(runtime)`, no embedded worker) under uvicorn in a separate
   process on 127.0.0.1, fed Segment batch bodies of 100 messages by C concurrent keep-alive
   clients; timed from the first send to the last response, then every event is counted;
3. process: `process_pending(runtime)` in this process (one worker) over everything ingested,
   then every event is checked to be processed.

Progress goes to stderr. stdout gets one line per backend,
`ingest_events_per_s=… process_events_per_s=… baseline_rows_per_s=… ratio=…` where
ratio = ingest_events_per_s / baseline_rows_per_s; with `--backend both` the PostgreSQL line comes
first and the SQLite line is the very last line.

Touches only loopback; the SQLite files live in a temporary directory and the PostgreSQL databases
(`winback_bench_<pid>_…` on --postgres-url) are created and dropped by the bench.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/ingest.py` from a checkout

import httpx  # noqa: E402
import orjson  # noqa: E402
from sqlalchemy import Engine, func, insert, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench import scratch  # noqa: E402
from winback import apikeys  # noqa: E402
from winback.db import engine as db_engine  # noqa: E402
from winback.db import migrate  # noqa: E402
from winback.db.models import Customer, Event, Order  # noqa: E402
from winback.ingest import segment  # noqa: E402
from winback.kernel.clock import SystemClock  # noqa: E402
from winback.processing import processor  # noqa: E402
from winback.runtime import Runtime  # noqa: E402
from winback.settings import Settings  # noqa: E402

DEFAULT_EVENTS = 100_000
QUICK_EVENTS = 3_000
DEFAULT_CLIENTS = 4
BATCH_MESSAGES = 100  # messages per POST /v1/batch, and rows per commit in the baseline
SEED = 20260105
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SERVER_START_TIMEOUT = 30.0  # seconds
SERVER_STOP_TIMEOUT = 10.0  # seconds
REQUEST_TIMEOUT = 120.0  # seconds

TARGET_SQLITE_INGEST_EVENTS_PER_S = 10_000
TARGET_INGEST_RATIO = 0.5
TARGET_PROCESS_EVENTS_PER_S = 5_000


log = scratch.log


# --- a synthetic store and its traffic ----------------------------------------------------------

CATEGORIES = ["Dresses", "Shoes", "Bags", "Jackets", "Knitwear", "Jeans", "Accessories", "Sportswear"]
BRANDS = ["Northwind", "Fjord & Pine", "Lumen", "Atelier 9", "Kestrel", "Oakline"]
ADJECTIVES = ["Classic", "Organic", "Relaxed", "Slim", "Vintage", "Merino", "Linen", "Recycled"]
FIRST_NAMES = ["Ava", "Liam", "Mia", "Noah", "Zoe", "Lucas", "Emma", "Leo", "Chloe", "Ethan", "Ines", "Omar"]
LAST_NAMES = [
    "Garcia",
    "Smith",
    "Nguyen",
    "Müller",
    "Rossi",
    "Dubois",
    "Kowalski",
    "Silva",
    "Tanaka",
    "Brown",
]
SEARCHES = ["black dress", "running shoes", "wool scarf", "leather bag", "rain jacket", "linen shirt", "sale"]
AREA_CODES = [212, 312, 415, 503, 617, 646, 720, 773, 818, 917]
COUNTRIES = ["US", "US", "US", "CA", "GB", "DE", "FR"]
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
]
LIBRARY = {"name": "analytics.js", "version": "npm:next-1.70.0"}
SHOP = "https://shop.example.com"
START = datetime(2026, 1, 5, tzinfo=UTC)
KNOWN_VISITOR_SHARE = 0.25  # visitors who are logged-in returning customers
ADD_TO_CART = {"known": 0.18, "anonymous": 0.10}  # share of visitors who add to cart
CHECKOUT_AFTER_ADD = 0.55
ORDER_AFTER_CHECKOUT = 0.5
GUEST_WITH_KNOWN_EMAIL = 0.3  # converting guests who turn out to be known customers (a merge)


@dataclass(frozen=True)
class Product:
    product_id: str
    sku: str
    name: str
    brand: str
    category: str
    price: float

    def properties(self, **extra: Any) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "sku": self.sku,
            "name": self.name,
            "brand": self.brand,
            "category": self.category,
            "price": self.price,
            "currency": "USD",
            "url": f"{SHOP}/products/{self.product_id}",
            "image_url": f"{SHOP}/cdn/{self.product_id}.jpg",
            **extra,
        }


@dataclass(frozen=True)
class KnownCustomer:
    user_id: str
    email: str
    first_name: str
    last_name: str
    phone: str | None
    country: str


def make_catalog(rng: random.Random, size: int = 400) -> list[Product]:
    products = []
    for number in range(size):
        category = rng.choice(CATEGORIES)
        products.append(
            Product(
                product_id=f"prod_{number:05d}",
                sku=f"SKU-{number:05d}",
                name=f"{rng.choice(ADJECTIVES)} {category[:-1] if category.endswith('s') else category} {number}",
                brand=rng.choice(BRANDS),
                category=category,
                price=round(rng.uniform(9, 240), 2),
            )
        )
    return products


def make_known_customers(rng: random.Random, count: int) -> list[KnownCustomer]:
    customers = []
    for number in range(count):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        phone = None
        if rng.random() < 0.4:
            phone = f"({rng.choice(AREA_CODES)}) {rng.randint(201, 989)}-{number % 10_000:04d}"
        customers.append(
            KnownCustomer(
                user_id=f"cus_{number:06d}",
                email=f"{first.lower()}.{last.lower()}{number}@example.com",
                first_name=first,
                last_name=last,
                phone=phone,
                country=rng.choice(COUNTRIES),
            )
        )
    return customers


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Journey:
    """One visitor's session: Segment messages in the order the browser sends them."""

    def __init__(self, rng: random.Random, number: int, known: KnownCustomer | None) -> None:
        self.rng = rng
        self.number = number
        self.known = known
        self.anonymous_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.at = START + timedelta(seconds=rng.uniform(0, 24 * 3600))
        self.context = {
            "ip": f"{rng.choice(['203.0.113', '198.51.100', '192.0.2'])}.{rng.randint(1, 254)}",
            "userAgent": rng.choice(USER_AGENTS),
            "library": LIBRARY,
            "locale": "en-US",
        }
        self.referrer = rng.choice(
            ["", "https://www.google.com/", "https://www.instagram.com/", "https://news.example.org/"]
        )
        self.messages: list[tuple[datetime, dict[str, Any]]] = []

    def _send(self, message: dict[str, Any], path: str, title: str) -> None:
        self.at += timedelta(seconds=self.rng.uniform(2, 75))
        message["anonymousId"] = self.anonymous_id
        if self.known is not None:
            message["userId"] = self.known.user_id
        message["messageId"] = f"ajs-next-{self.rng.getrandbits(128):032x}"
        message["timestamp"] = _iso(self.at)
        message["context"] = {
            **self.context,
            "page": {
                "path": path,
                "referrer": self.referrer,
                "search": "",
                "title": title,
                "url": f"{SHOP}{path}",
            },
        }
        message["integrations"] = {}
        self.messages.append((self.at, message))
        self.referrer = f"{SHOP}{path}"

    def page(self, path: str, title: str, category: str | None = None) -> None:
        message: dict[str, Any] = {
            "type": "page",
            "name": title,
            "properties": {"path": path, "title": title},
        }
        if category:
            message["category"] = category
        self._send(message, path, title)

    def track(self, event: str, properties: dict[str, Any], path: str, title: str) -> None:
        self._send({"type": "track", "event": event, "properties": properties}, path, title)

    def identify(self, traits: dict[str, Any], path: str, title: str) -> None:
        self._send({"type": "identify", "traits": traits}, path, title)


def _traits(customer: KnownCustomer) -> dict[str, Any]:
    traits: dict[str, Any] = {
        "email": customer.email,
        "firstName": customer.first_name,
        "lastName": customer.last_name,
        "address": {"country": customer.country, "city": "Springfield"},
    }
    if customer.phone:
        traits["phone"] = customer.phone
    return traits


def make_journey(
    rng: random.Random, number: int, catalog: list[Product], known_pool: list[KnownCustomer]
) -> Journey:
    known = rng.choice(known_pool) if rng.random() < KNOWN_VISITOR_SHARE else None
    journey = Journey(rng, number, known)
    journey.page("/", "Home")
    if known is not None:
        journey.identify(_traits(known), "/account", "Your account")
    viewed: list[Product] = []
    for _ in range(rng.randint(3, 9)):
        roll = rng.random()
        if roll < 0.4:
            category = rng.choice(CATEGORIES)
            path = f"/collections/{category.lower()}"
            journey.page(path, category, category="Collection")
            journey.track(
                "Product List Viewed",
                {
                    "list_id": category.lower(),
                    "category": category,
                    "products": [
                        {"product_id": p.product_id, "price": p.price, "position": i + 1}
                        for i, p in enumerate(rng.sample(catalog, 4))
                    ],
                },
                path,
                category,
            )
        elif roll < 0.55:
            query = rng.choice(SEARCHES)
            path = f"/search?q={query.replace(' ', '+')}"
            journey.page(path, f"Search: {query}", category="Search")
            journey.track("Products Searched", {"query": query}, path, f"Search: {query}")
        product = rng.choice(catalog)
        viewed.append(product)
        path = f"/products/{product.product_id}"
        journey.page(path, product.name, category="Product")
        journey.track("Product Viewed", product.properties(), path, product.name)

    if rng.random() >= ADD_TO_CART["known" if known else "anonymous"]:
        return journey
    cart_id = f"cart_{number:07d}"
    lines = []
    for product in rng.sample(viewed, min(len(viewed), rng.randint(1, 2))):
        quantity = rng.randint(1, 2)
        lines.append((product, quantity))
        journey.track(
            "Product Added",
            product.properties(cart_id=cart_id, quantity=quantity),
            f"/products/{product.product_id}",
            product.name,
        )
    if rng.random() >= CHECKOUT_AFTER_ADD:
        return journey
    subtotal = round(sum(p.price * q for p, q in lines), 2)
    products = [p.properties(quantity=q) for p, q in lines]
    checkout_id = f"chk_{number:07d}"
    journey.track(
        "Checkout Started",
        {
            "checkout_id": checkout_id,
            "cart_id": cart_id,
            "value": subtotal,
            "revenue": subtotal,
            "currency": "USD",
            "products": products,
        },
        "/checkout",
        "Checkout",
    )
    buyer = known
    if buyer is None:
        if rng.random() < GUEST_WITH_KNOWN_EMAIL:
            buyer = rng.choice(known_pool)  # a known customer on a new device: merges into them
        else:
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            buyer = KnownCustomer(
                user_id="",
                email=f"{first.lower()}.{last.lower()}.guest{number}@example.com",
                first_name=first,
                last_name=last,
                phone=None,
                country=rng.choice(COUNTRIES),
            )
        journey.identify(_traits(buyer), "/checkout/information", "Checkout – information")
    if rng.random() >= ORDER_AFTER_CHECKOUT:
        return journey
    shipping, tax = 4.95, round(subtotal * 0.08, 2)
    journey.track(
        "Order Completed",
        {
            "order_id": f"ord_{number:07d}",
            "checkout_id": checkout_id,
            "cart_id": cart_id,
            "total": round(subtotal + shipping + tax, 2),
            "subtotal": subtotal,
            "revenue": subtotal,
            "shipping": shipping,
            "tax": tax,
            "discount": 0,
            "coupon": rng.choice(["", "", "WELCOME10"]) or None,
            "currency": "USD",
            "email": buyer.email,
            "products": products,
            "shipping_address": {"country": buyer.country, "city": "Springfield"},
        },
        "/checkout/thank-you",
        "Thank you",
    )
    return journey


@dataclass
class Traffic:
    """Pre-built request bodies, one list per client, and the event rows they hold."""

    bodies_per_client: list[list[bytes]]
    event_count: int
    mix: dict[str, int]


def make_traffic(event_count: int, clients: int, seed: int = SEED) -> Traffic:
    """~20 events per visitor; visitors are spread over the clients (a client is like a relay
    forwarding many browsers), and each client sends its visitors' messages in time order."""
    rng = random.Random(seed)
    catalog = make_catalog(rng)
    known_pool = make_known_customers(rng, max(20, event_count // 100))
    journeys: list[Journey] = []
    total = 0
    while total < event_count:
        journey = make_journey(rng, len(journeys), catalog, known_pool)
        journey.messages = journey.messages[: event_count - total]
        journeys.append(journey)
        total += len(journey.messages)
    mix: dict[str, int] = {}
    streams: list[list[tuple[datetime, dict[str, Any]]]] = [[] for _ in range(clients)]
    for journey in journeys:
        streams[journey.number % clients].extend(journey.messages)
        for _, message in journey.messages:
            kind = message.get("event") or message["type"]
            mix[kind] = mix.get(kind, 0) + 1
    bodies_per_client = []
    for stream in streams:
        stream.sort(key=lambda item: item[0])
        bodies = []
        for start in range(0, len(stream), BATCH_MESSAGES):
            chunk = stream[start : start + BATCH_MESSAGES]
            sent_at = chunk[-1][0] + timedelta(seconds=rng.uniform(0.5, 5))
            bodies.append(orjson.dumps({"batch": [message for _, message in chunk], "sentAt": _iso(sent_at)}))
        bodies_per_client.append(bodies)
    return Traffic(bodies_per_client=bodies_per_client, event_count=total, mix=mix)


def rows_of(traffic: Traffic) -> list[dict[str, Any]]:
    """The `events` rows the app builds from these bodies (for the raw baseline)."""
    received_at = datetime.now(UTC)
    rows = []
    for bodies in traffic.bodies_per_client:
        for body in bodies:
            parsed = segment.parse_batch(
                segment.decode_json(body), received_at=received_at, max_event_bytes=32 * 1024
            )
            rows.extend(row.as_insert() for row in parsed)
    return rows


# --- databases ----------------------------------------------------------------------------------


@contextmanager
def sqlite_databases() -> Iterator[tuple[str, str]]:
    with tempfile.TemporaryDirectory(prefix="winback-bench-") as directory:
        yield f"sqlite:///{directory}/ingest.db", f"sqlite:///{directory}/baseline.db"


@contextmanager
def postgres_databases(admin_url: str) -> Iterator[tuple[str, str]]:
    with scratch.postgres_databases(admin_url, ["ingest", "baseline"]) as urls:
        yield urls[0], urls[1]


def migrated_engine(url: str) -> Engine:
    engine = db_engine.make_engine(url)
    migrate.upgrade(engine)
    return engine


def count_events(engine: Engine, *, unprocessed: bool = False) -> int:
    query = select(func.count()).select_from(Event.__table__)
    if unprocessed:
        query = query.where(Event.__table__.c.processed_at.is_(None))
    with engine.connect() as connection:
        return int(connection.scalar(query) or 0)


# --- the three measurements ---------------------------------------------------------------------


def run_baseline(url: str, rows: list[dict[str, Any]]) -> float:
    """Plain executemany of the same rows, one commit per BATCH_MESSAGES rows; rows per second."""
    engine = migrated_engine(url)
    statement = insert(Event.__table__)
    try:
        with engine.connect() as connection:
            started = time.perf_counter()
            for start in range(0, len(rows), BATCH_MESSAGES):
                connection.execute(statement, rows[start : start + BATCH_MESSAGES])
                connection.commit()
            elapsed = time.perf_counter() - started
        stored = count_events(engine)
        if stored != len(rows):
            raise SystemExit(f"baseline stored {stored} rows, expected {len(rows)}")
    finally:
        engine.dispose()
    return len(rows) / elapsed


def _serve(url: str, port_pipe: Any) -> None:
    """Child process: the app without its embedded worker, under uvicorn on a loopback port."""
    import uvicorn

    from winback.web.app import create_app

    runtime = Runtime(
        settings=Settings(database_url=url), engine=db_engine.make_engine(url), clock=SystemClock()
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port_pipe.send(sock.getsockname()[1])
    port_pipe.close()
    config = uvicorn.Config(
        create_app(runtime), log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2
    )
    uvicorn.Server(config).run(sockets=[sock])


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc); None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def server(url: str) -> Iterator[tuple[str, int]]:
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_serve, args=(url, sender), name="winback-bench-server", daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(SERVER_START_TIMEOUT):
            raise SystemExit("the server process did not report its port")
        base_url = f"http://127.0.0.1:{receiver.recv()}"
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            try:
                if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if not process.is_alive() or time.monotonic() > deadline:
                raise SystemExit(f"winback did not start on {base_url}")
            time.sleep(0.05)
        yield base_url, process.pid
    finally:
        process.terminate()
        process.join(SERVER_STOP_TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join()
        receiver.close()


@dataclass
class IngestResult:
    events_per_s: float
    seconds: float
    latencies: list[float]
    server_cpu_s: float | None
    client_cpu_s: float


def run_ingest(url: str, traffic: Traffic) -> IngestResult:
    engine = migrated_engine(url)
    key = apikeys.create_key(engine, name="bench", scope="write", now=datetime.now(UTC)).secret
    clients = len(traffic.bodies_per_client)
    barrier = threading.Barrier(clients + 1)
    first_sends: list[float] = []
    last_responses: list[float] = []
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(base_url: str, bodies: list[bytes]) -> None:
        with httpx.Client(
            base_url=base_url,
            auth=(key, ""),
            timeout=REQUEST_TIMEOUT,
            headers={"content-type": "application/json"},
        ) as http:
            http.get("/health")  # open the keep-alive connection before the clock starts
            barrier.wait()
            mine: list[float] = []
            first = time.perf_counter()
            for body in bodies:
                sent = time.perf_counter()
                response = http.post("/v1/batch", content=body)
                mine.append(time.perf_counter() - sent)
                if response.status_code != 200:
                    with lock:
                        errors.append(f"{response.status_code} {response.text[:300]}")
                    return
            last = time.perf_counter()
        with lock:
            first_sends.append(first)
            last_responses.append(last)
            latencies.extend(mine)

    try:
        with server(url) as (base_url, pid):
            log(f"  server up at {base_url}; {clients} clients sending {traffic.event_count} events")
            server_cpu_before, client_cpu_before = cpu_seconds(pid), own_cpu_seconds()
            threads = [
                threading.Thread(target=client, args=(base_url, bodies), name=f"client-{n}")
                for n, bodies in enumerate(traffic.bodies_per_client)
            ]
            for thread in threads:
                thread.start()
            barrier.wait()
            for thread in threads:
                thread.join()
            server_cpu_after, client_cpu = cpu_seconds(pid), own_cpu_seconds() - client_cpu_before
        if errors:
            raise SystemExit(f"ingest failed: {errors[0]}")
        seconds = max(last_responses) - min(first_sends)
        stored = count_events(engine)
        if stored != traffic.event_count:
            raise SystemExit(f"ingest stored {stored} events, expected {traffic.event_count}")
    finally:
        engine.dispose()
    server_cpu = None
    if server_cpu_before is not None and server_cpu_after is not None:
        server_cpu = server_cpu_after - server_cpu_before
    return IngestResult(traffic.event_count / seconds, seconds, latencies, server_cpu, client_cpu)


def run_process(url: str, expected: int) -> tuple[float, float]:
    runtime = Runtime(
        settings=Settings(database_url=url), engine=db_engine.make_engine(url), clock=SystemClock()
    )
    try:
        started = time.perf_counter()
        applied = processor.process_pending(runtime)
        seconds = time.perf_counter() - started
        left = count_events(runtime.engine, unprocessed=True)
        if applied != expected or left != 0:
            raise SystemExit(f"processing applied {applied} of {expected} events; {left} left unprocessed")
        with runtime.engine.connect() as connection:
            customers = connection.scalar(
                select(func.count()).select_from(Customer).where(Customer.merged_into_id.is_(None))
            )
            merged = connection.scalar(
                select(func.count()).select_from(Customer).where(Customer.merged_into_id.is_not(None))
            )
            orders = connection.scalar(select(func.count()).select_from(Order))
        log(f"  processed into {customers} profiles ({merged} merged away) and {orders} orders")
    finally:
        runtime.engine.dispose()
    return expected / seconds, seconds


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Figures:
    backend: str
    ingest_events_per_s: float
    process_events_per_s: float
    baseline_rows_per_s: float

    @property
    def ratio(self) -> float:
        return self.ingest_events_per_s / self.baseline_rows_per_s

    def line(self) -> str:
        return (
            f"ingest_events_per_s={self.ingest_events_per_s:.0f} "
            f"process_events_per_s={self.process_events_per_s:.0f} "
            f"baseline_rows_per_s={self.baseline_rows_per_s:.0f} ratio={self.ratio:.2f}"
        )


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def bench_backend(backend: str, traffic: Traffic, rows: list[dict[str, Any]], postgres_url: str) -> Figures:
    databases = sqlite_databases() if backend == "sqlite" else postgres_databases(postgres_url)
    with databases as (ingest_url, baseline_url):
        log(f"[{backend}] baseline: executemany of {len(rows)} rows, one commit per {BATCH_MESSAGES}")
        baseline = run_baseline(baseline_url, rows)
        log(f"  baseline_rows_per_s={baseline:.0f}")
        log(f"[{backend}] ingest: POST /v1/batch")
        ingest = run_ingest(ingest_url, traffic)
        log(
            f"  ingest_events_per_s={ingest.events_per_s:.0f} ({ingest.seconds:.2f} s; per request "
            f"p50={_percentile(ingest.latencies, 0.5) * 1000:.1f} ms "
            f"p99={_percentile(ingest.latencies, 0.99) * 1000:.1f} ms "
            f"mean={statistics.fmean(ingest.latencies) * 1000:.1f} ms)"
        )
        server_cpu = f"{ingest.server_cpu_s:.1f} s" if ingest.server_cpu_s is not None else "unknown"
        log(f"  CPU while ingesting: server process {server_cpu}, bench clients {ingest.client_cpu_s:.1f} s")
        log(f"[{backend}] process: process_pending, one worker")
        process, seconds = run_process(ingest_url, traffic.event_count)
        log(f"  process_events_per_s={process:.0f} ({seconds:.2f} s)")
    log(
        f"  load average after {backend}: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other work on the machine skews figures)"
    )
    figures = Figures(backend, ingest.events_per_s, process, baseline)
    log(f"[{backend}] {figures.line()}")
    return figures


def _verdict(figures: Figures) -> str:
    checks = [
        (f"ingest >= {TARGET_INGEST_RATIO} x baseline", figures.ratio >= TARGET_INGEST_RATIO),
        (
            f"process >= {TARGET_PROCESS_EVENTS_PER_S}/s",
            figures.process_events_per_s >= TARGET_PROCESS_EVENTS_PER_S,
        ),
    ]
    if figures.backend == "sqlite":
        checks.insert(
            1,
            (
                f"ingest >= {TARGET_SQLITE_INGEST_EVENTS_PER_S}/s",
                figures.ingest_events_per_s >= TARGET_SQLITE_INGEST_EVENTS_PER_S,
            ),
        )
    return ", ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--events", type=int, default=None, help=f"events to send (default {DEFAULT_EVENTS})")
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS, help="concurrent HTTP clients")
    parser.add_argument("--quick", action="store_true", help=f"a smoke test with {QUICK_EVENTS} events")
    parser.add_argument("--postgres-url", default=POSTGRES_ADMIN_URL, help="an admin URL on loopback")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    events = args.events or (QUICK_EVENTS if args.quick else DEFAULT_EVENTS)
    host = make_url(db_engine.normalise_url(args.postgres_url)).host
    if args.backend != "sqlite" and host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"--postgres-url must point at loopback, not {host!r}")

    log(f"generating {events} events for {args.clients} clients (seed {args.seed}) on {os.cpu_count()} cores")
    traffic = make_traffic(events, args.clients, args.seed)
    rows = rows_of(traffic)
    log(
        "  mix: "
        + ", ".join(f"{kind}={count}" for kind, count in sorted(traffic.mix.items(), key=lambda kv: -kv[1]))
    )
    log(
        f"  {sum(len(b) for b in traffic.bodies_per_client)} requests, "
        f"{sum(len(body) for bodies in traffic.bodies_per_client for body in bodies) / 1e6:.1f} MB of JSON"
    )

    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    results = [bench_backend(backend, traffic, rows, args.postgres_url) for backend in backends]
    log("")
    for figures in results:
        log(f"{figures.backend:>10}: {figures.line()}")
        log(f"{'':>10}  {_verdict(figures)}")
    if args.backend == "both":
        log("(stdout: the PostgreSQL line, then the SQLite line last)")
    for figures in results:
        print(figures.line(), flush=True)


if __name__ == "__main__":
    main()
