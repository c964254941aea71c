"""Segment evaluation at a million customers: the compiled query against hand-written SQL, and the
incremental membership update after one event.

    python bench/segments.py [--backend sqlite|postgresql|both] [--customers N] [--events M] [--quick]
                             [--cache DIR] [--seed S]

For each backend, in one run and on the same database:

1. load: a seeded synthetic store — customers with skewed buying (most never order, some once, a
   long tail of repeat buyers; aggregates consistent with their orders), orders with lines, a
   catalog with collections, and ~M events over the last 18 months (pages, Product List Viewed
   with a `category` naming a collection, Product Viewed, Products Searched, Product Added, Order
   Completed), in time order. Tables come from the migrations; the non-unique indexes of the bulk
   tables are dropped for the load and re-created from the models afterwards (faster than keeping
   them; the unique keys are generated in order, so they stay). PostgreSQL: `COPY`, then
   `VACUUM ANALYZE`. SQLite: executemany in big transactions with `synchronous=OFF` and
   `journal_mode=OFF` for the load only, then `ANALYZE` and back to WAL;
2. full: the composite segment — spent >= 500 AND orders >= 5 AND viewed the collection in the
   last 30 days AND NOT ordered in the last 90 days — compiled by `winback.segments.compiler`
   (`members_query` executed, ids fetched) against the best hand-written SQL for the same set;
   both must return the identical set; each is warmed up once, then the best of 3 runs is kept
   (the two alternate, so a busy moment on the machine hits both);
3. incremental: five active segments are saved (the composite among them) with their members;
   for each of 500 random customers one event is appended, then
   `winback.segments.membership.refresh_customers(session, [id], now, timezone)` and its commit
   are timed; the p95 is reported.

Progress goes to stderr. stdout gets one line per backend,
`segment_full_s=… baseline_s=… ratio=… incremental_p95_ms=…` (ratio = segment_full_s /
baseline_s); with `--backend both` the PostgreSQL line comes first and the SQLite line is the very
last line.

Touches only loopback. Without `--cache` the SQLite file lives in a temporary directory and the
PostgreSQL database (`winback_bench_segments_<pid>` on --postgres-url) is created and dropped.
With `--cache DIR` the loaded SQLite file (in DIR) and PostgreSQL database
(`winback_bench_segments_<key>`) are kept, keyed by the generation parameters, and reused by the
next run with the same parameters; what the bench adds to them is removed before it ends.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/segments.py` from a checkout

import orjson  # noqa: E402
from sqlalchemy import Engine, create_engine, event, insert, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from winback.db import engine as db_engine  # noqa: E402
from winback.db import migrate  # noqa: E402
from winback.db.models import Base  # noqa: E402
from winback.segments import rules  # noqa: E402

DEFAULT_CUSTOMERS = 1_000_000
DEFAULT_EVENTS = 10_000_000
QUICK_CUSTOMERS = 20_000
QUICK_EVENTS = 200_000
SEED = 20261123
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
GENERATOR_VERSION = 1  # bump when the generated data changes, so cached databases are rebuilt

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # the injected clock of the whole bench
TIMEZONE = "UTC"
HISTORY_DAYS = 548  # ~18 months of events
TARGET_COLLECTION = "Running Shoes"
FULL_RUNS = 3  # timed runs after one warm-up; the best is kept
INCREMENTAL_SAMPLES = 500
LOAD_CHUNK_ROWS = 200_000  # rows per COPY / executemany transaction

TARGET_FULL_S = 2.0
TARGET_RATIO = 3.0
TARGET_INCREMENTAL_P95_MS = 5.0

BULK_TABLES = (
    "customers",
    "events",
    "orders",
    "order_lines",
    "products",
    "product_collections",
    "customer_products",
    "customer_collections",
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the synthetic store ------------------------------------------------------------------------

COLLECTIONS = [
    "Running Shoes", "Trail Shoes", "Sneakers", "Boots", "Sandals", "Dresses", "Jeans", "T-Shirts",
    "Shirts", "Knitwear", "Jackets", "Coats", "Rainwear", "Activewear", "Yoga", "Swimwear",
    "Underwear", "Socks", "Bags", "Backpacks", "Wallets", "Belts", "Hats", "Scarves", "Gloves",
    "Sunglasses", "Watches", "Jewellery", "Kids", "Baby", "Home", "Bedding", "Kitchen", "Candles",
    "Beauty", "Skincare", "Fragrance", "Gift Cards", "Sale", "New Arrivals",
]  # fmt: skip
SEARCHES = [
    "black dress", "running shoes", "wool scarf", "leather bag", "rain jacket", "linen shirt", "sale",
    "trail runners", "yoga mat", "gift card", "kids boots", "swim shorts", "candle", "sunglasses",
]  # fmt: skip
PAGES = [("Home", None, "/"), ("About", None, "/pages/about"), ("Cart", None, "/cart"),
         ("Account", None, "/account"), ("Shipping", None, "/pages/shipping")]  # fmt: skip
FIRST_NAMES = ["Ava", "Liam", "Mia", "Noah", "Zoe", "Lucas", "Emma", "Leo", "Chloe", "Ethan", "Ines", "Omar"]
COUNTRIES = ["US", "US", "US", "US", "CA", "GB", "DE", "FR", "AU", "NL"]
CATALOG_SIZE = 2_000

# Event kinds, packed into the sort key (see Plan.events).
PAGE, LIST_VIEWED, PRODUCT_VIEWED, SEARCHED, PRODUCT_ADDED, ORDER_COMPLETED = range(6)
BROWSE_KINDS = [PAGE, LIST_VIEWED, PRODUCT_VIEWED, SEARCHED, PRODUCT_ADDED]
BROWSE_WEIGHTS = [25, 20, 35, 12, 8]
ORDER_SESSION_EVENTS = 4.0  # mean events an order brings (views, adds, the order itself)
RECENT_VISITOR_SHARE = 0.25  # customers who came back in the last 30 days
RECENT_EVENT_SHARE = 0.3  # share of a returning customer's browsing that falls in those 30 days

DAY = 86_400
EPOCH = int(NOW.timestamp()) - HISTORY_DAYS * DAY  # second 0 of the generated history


def _day_strings() -> list[str]:
    return [
        (datetime.fromtimestamp(EPOCH + day * DAY, UTC)).strftime("%Y-%m-%d")
        for day in range(HISTORY_DAYS + 2)
    ]


_DAYS = _day_strings()


def stamp(second: int) -> str:
    """`YYYY-MM-DD HH:MM:SS.000000` (UTC) for a second of the history: the text SQLAlchemy stores
    for a DateTime on SQLite, and what a UTC session of PostgreSQL reads as a timestamptz."""
    day, rest = divmod(second, DAY)
    hour, rest = divmod(rest, 3600)
    minute, sec = divmod(rest, 60)
    return f"{_DAYS[day]} {hour:02d}:{minute:02d}:{sec:02d}.000000"


def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


@dataclass
class Catalog:
    product_ids: list[str]
    prices: list[int]  # cents
    names: list[str]
    primary: list[int]  # collection index
    view_properties: list[str]  # Product Viewed properties, as JSON text
    list_properties: list[str]  # Product List Viewed properties per collection
    search_properties: list[str]
    page_properties: list[str]
    collection_weights: list[float]
    products_of: list[list[int]]  # products per collection


def make_catalog(rng: random.Random) -> Catalog:
    # Collections are visited with a Zipf-like skew; the target is the most visited one.
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(COLLECTIONS))]
    product_ids, prices, names, primary = [], [], [], []
    products_of: list[list[int]] = [[] for _ in COLLECTIONS]
    for number in range(CATALOG_SIZE):
        collection = rng.choices(range(len(COLLECTIONS)), weights)[0]
        product_ids.append(f"prod_{number:05d}")
        prices.append(int(rng.lognormvariate(3.6, 0.7) * 100) + 500)
        names.append(f"{COLLECTIONS[collection]} item {number}")
        primary.append(collection)
        products_of[collection].append(number)
    for index, members in enumerate(products_of):
        if not members:  # every collection lists something
            members.append(rng.randrange(CATALOG_SIZE))
            primary[members[0]] = index
    view_properties = [
        _json(
            {
                "product_id": product_ids[n],
                "name": names[n],
                "category": COLLECTIONS[primary[n]],
                "price": prices[n] / 100,
                "currency": "USD",
            }
        )
        for n in range(CATALOG_SIZE)
    ]
    list_properties = [
        _json({"list_id": name.lower().replace(" ", "-"), "category": name}) for name in COLLECTIONS
    ]
    search_properties = [_json({"query": query}) for query in SEARCHES]
    page_properties = [_json({"path": path, "title": title}) for title, _, path in PAGES]
    return Catalog(
        product_ids, prices, names, primary, view_properties, list_properties, search_properties,
        page_properties, weights, products_of,
    )  # fmt: skip


@dataclass
class Plan:
    """Everything to load, as rows of text/ints that both backends accept.

    Events are kept as packed ints `second << 64 | customer << 32 | kind << 28 | payload` so that
    10 million of them sort into time order cheaply; rows are built from them while loading."""

    catalog: Catalog
    customers: list[tuple[Any, ...]] = field(default_factory=list)
    orders: list[tuple[Any, ...]] = field(default_factory=list)
    order_lines: list[tuple[Any, ...]] = field(default_factory=list)
    customer_products: list[tuple[Any, ...]] = field(default_factory=list)
    customer_collections: list[tuple[Any, ...]] = field(default_factory=list)
    order_properties: list[str] = field(default_factory=list)  # Order Completed properties per order
    events: list[int] = field(default_factory=list)
    event_mix: dict[str, int] = field(default_factory=dict)
    buyers: dict[str, int] = field(default_factory=dict)


CUSTOMER_COLUMNS = (
    "id", "user_id", "email", "first_name", "country", "email_consent", "tags", "properties",
    "orders_count", "total_spent", "total_refunded", "average_order_value", "first_order_at",
    "last_order_at", "first_seen_at", "last_seen_at", "created_at", "updated_at",
)  # fmt: skip
ORDER_COLUMNS = (
    "id", "order_id", "customer_id", "status", "total", "subtotal", "revenue", "shipping", "tax",
    "discount", "refunded_total", "currency", "coupons", "shipping_country", "properties", "placed_at",
    "updated_at",
)  # fmt: skip
ORDER_LINE_COLUMNS = ("id", "order_pk", "customer_id", "product_id", "name", "category", "price", "quantity")
CUSTOMER_PRODUCT_COLUMNS = ("customer_id", "product_id", "quantity", "first_bought_at", "last_bought_at")
CUSTOMER_COLLECTION_COLUMNS = ("customer_id", "collection", "first_bought_at", "last_bought_at")
PRODUCT_COLUMNS = ("id", "product_id", "name", "category", "price", "currency", "collections", "properties",
                   "created_at", "updated_at")  # fmt: skip
PRODUCT_COLLECTION_COLUMNS = ("product_id", "collection")
EVENT_COLUMNS = (
    "id", "message_id", "source", "type", "event", "name", "category", "user_id", "properties", "traits",
    "context", "timestamp", "received_at", "customer_id", "processed_at",
)  # fmt: skip

SHIPPING_CENTS = 495
TAX_RATE_PERCENT = 8


def make_plan(customers: int, events: int, seed: int) -> Plan:
    """The whole store, deterministic for (customers, events, seed)."""
    rng = random.Random(seed)
    catalog = make_catalog(rng)
    plan = Plan(catalog)
    horizon = HISTORY_DAYS * DAY
    recent_start = horizon - 30 * DAY
    expected_orders_per_customer = 0.18 * 1 + 0.12 * (2 + 3)
    browse_mean = max(1.0, events / customers - expected_orders_per_customer * ORDER_SESSION_EVENTS)
    collection_range = range(len(COLLECTIONS))
    order_pk = line_pk = 0
    buyers = {"never": 0, "once": 0, "repeat": 0, "5+": 0}
    started = time.perf_counter()
    for customer_id in range(1, customers + 1):
        roll = rng.random()
        order_count = 0 if roll < 0.70 else 1 if roll < 0.88 else 2 + int(rng.expovariate(1 / 3))
        buyers["never" if order_count == 0 else "once" if order_count == 1 else "repeat"] += 1
        buyers["5+"] += order_count >= 5
        first_seen = rng.randrange(horizon)
        mean_span = (300 if order_count > 1 else 120) * DAY
        span = min(horizon - 1 - first_seen, int(rng.expovariate(1 / mean_span)))
        is_returning = rng.random() < RECENT_VISITOR_SHARE
        favourite = rng.choices(collection_range, catalog.collection_weights)[0]
        seconds: list[int] = [first_seen]
        key = customer_id << 32

        browse = int(rng.expovariate(1 / browse_mean)) + (1 if rng.random() < 0.5 else 0)
        for _ in range(browse):
            kind = rng.choices(BROWSE_KINDS, BROWSE_WEIGHTS)[0]
            if kind == PAGE:
                payload = rng.randrange(len(PAGES))
            elif kind == LIST_VIEWED:
                payload = (
                    favourite
                    if rng.random() < 0.5
                    else rng.choices(collection_range, catalog.collection_weights)[0]
                )
            elif kind == SEARCHED:
                payload = rng.randrange(len(SEARCHES))
            else:
                pool = catalog.products_of[favourite]
                payload = rng.choice(pool) if rng.random() < 0.6 else rng.randrange(CATALOG_SIZE)
            if is_returning and rng.random() < RECENT_EVENT_SHARE:
                second = max(first_seen, recent_start + rng.randrange(30 * DAY))
            else:
                second = first_seen + rng.randrange(span + 1)
            seconds.append(second)
            plan.events.append(second << 64 | key | kind << 28 | payload)

        spent = 0
        placed_seconds: list[int] = []
        bought: dict[int, list[int]] = {}  # product -> [quantity, first, last]
        for _ in range(order_count):
            placed = first_seen + rng.randrange(span + 1)
            placed_seconds.append(placed)
            order_pk += 1
            lines = []
            subtotal = 0
            for _ in range(1 if rng.random() < 0.6 else rng.randint(2, 3)):
                pool = catalog.products_of[favourite]
                product = rng.choice(pool) if rng.random() < 0.5 else rng.randrange(CATALOG_SIZE)
                quantity = 1 if rng.random() < 0.8 else 2
                lines.append((product, quantity))
                subtotal += catalog.prices[product] * quantity
                line_pk += 1
                plan.order_lines.append(
                    (line_pk, order_pk, customer_id, catalog.product_ids[product], catalog.names[product],
                     COLLECTIONS[catalog.primary[product]], money(catalog.prices[product]), quantity)
                )  # fmt: skip
                entry = bought.setdefault(product, [0, placed, placed])
                entry[0] += quantity
                entry[1], entry[2] = min(entry[1], placed), max(entry[2], placed)
                viewed = max(first_seen, placed - rng.randrange(60, 1800))
                added = max(first_seen, placed - rng.randrange(30, 600))
                plan.events.append(viewed << 64 | key | PRODUCT_VIEWED << 28 | product)
                plan.events.append(added << 64 | key | PRODUCT_ADDED << 28 | product)
            tax = subtotal * TAX_RATE_PERCENT // 100
            total = subtotal + SHIPPING_CENTS + tax
            spent += total
            order_id = f"ord_{order_pk:09d}"
            when = stamp(placed)
            country = COUNTRIES[customer_id % len(COUNTRIES)]
            plan.orders.append(
                (order_pk, order_id, customer_id, "paid", money(total), money(subtotal), money(subtotal),
                 money(SHIPPING_CENTS), money(tax), "0.00", "0.00", "USD", "[]", country, "{}", when, when)
            )  # fmt: skip
            plan.order_properties.append(
                _json(
                    {
                        "order_id": order_id,
                        "total": total / 100,
                        "subtotal": subtotal / 100,
                        "currency": "USD",
                        "products": [
                            {
                                "product_id": catalog.product_ids[p],
                                "quantity": q,
                                "price": catalog.prices[p] / 100,
                            }
                            for p, q in lines
                        ],
                    }
                )
            )
            plan.events.append(placed << 64 | key | ORDER_COMPLETED << 28 | (order_pk - 1))

        for product, (quantity, first, last) in bought.items():
            plan.customer_products.append(
                (customer_id, catalog.product_ids[product], quantity, stamp(first), stamp(last))
            )
        collections: dict[int, list[int]] = {}
        for product, (_, first, last) in bought.items():
            entry = collections.setdefault(catalog.primary[product], [first, last])
            entry[0], entry[1] = min(entry[0], first), max(entry[1], last)
        for collection, (first, last) in collections.items():
            plan.customer_collections.append(
                (customer_id, COLLECTIONS[collection], stamp(first), stamp(last))
            )

        last_seen = max(seconds + placed_seconds)
        first_order = stamp(min(placed_seconds)) if placed_seconds else None
        last_order = stamp(max(placed_seconds)) if placed_seconds else None
        average = money(round(spent / order_count)) if order_count else None
        has_email = rng.random() < 0.85
        plan.customers.append(
            (customer_id, f"u{customer_id:08d}", f"c{customer_id}@example.com" if has_email else None,
             FIRST_NAMES[customer_id % len(FIRST_NAMES)], COUNTRIES[customer_id % len(COUNTRIES)],
             ("subscribed" if rng.random() < 0.6 else "unsubscribed") if has_email else None, "[]", "{}",
             order_count, money(spent), "0.00", average, first_order, last_order, stamp(first_seen),
             stamp(last_seen), stamp(first_seen), stamp(last_seen))
        )  # fmt: skip
        if customer_id % 100_000 == 0:
            rate = customer_id / (time.perf_counter() - started)
            log(
                f"  generated {customer_id:,} customers, {len(plan.events):,} events ({rate:,.0f} customers/s)"
            )
    log(f"  sorting {len(plan.events):,} events into time order")
    plan.events.sort()
    plan.buyers = buyers
    return plan


def catalog_rows(catalog: Catalog) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    created = stamp(0)
    products: list[tuple[Any, ...]] = []
    links: list[tuple[Any, ...]] = []
    for n, product_id in enumerate(catalog.product_ids):
        collection = COLLECTIONS[catalog.primary[n]]
        extra = COLLECTIONS[(catalog.primary[n] + 7) % len(COLLECTIONS)] if n % 3 == 0 else None
        names = [collection] + ([extra] if extra else [])
        products.append(
            (n + 1, product_id, catalog.names[n], collection, money(catalog.prices[n]), "USD", _json(names),
             "{}", created, created)
        )  # fmt: skip
        links.extend((product_id, name) for name in names)
    return products, links


EVENT_NAMES = {
    LIST_VIEWED: "Product List Viewed",
    PRODUCT_VIEWED: "Product Viewed",
    SEARCHED: "Products Searched",
    PRODUCT_ADDED: "Product Added",
    ORDER_COMPLETED: "Order Completed",
}


def event_rows(plan: Plan, start: int, stop: int) -> list[tuple[Any, ...]]:
    """Rows of events[start:stop]; ids follow time order, message ids are in id order."""
    catalog = plan.catalog
    rows = []
    mix = plan.event_mix
    for index in range(start, stop):
        packed = plan.events[index]
        second = packed >> 64
        customer_id = (packed >> 32) & 0xFFFFFFFF
        kind = (packed >> 28) & 0xF
        payload = packed & 0x0FFFFFFF
        event_id = index + 1
        when = stamp(second)
        if kind == PAGE:
            title, category, _ = PAGES[payload]
            row_type, event, name, properties = "page", None, title, catalog.page_properties[payload]
        else:
            row_type, event, name, category = "track", EVENT_NAMES[kind], None, None
            if kind == LIST_VIEWED:
                properties = catalog.list_properties[payload]
            elif kind == SEARCHED:
                properties = catalog.search_properties[payload]
            elif kind == ORDER_COMPLETED:
                properties = plan.order_properties[payload]
            else:
                properties = catalog.view_properties[payload]
        label = event or "page"
        mix[label] = mix.get(label, 0) + 1
        rows.append(
            (event_id, f"bench-{event_id:010d}", "segment", row_type, event, name, category,
             f"u{customer_id:08d}", properties, "{}", "{}", when, when, customer_id, when)
        )  # fmt: skip
    return rows


# --- loading ------------------------------------------------------------------------------------


def _secondary_indexes(table_names: Iterable[str]) -> list[Any]:
    """The non-unique indexes the models declare on the bulk tables (dropped for the load)."""
    return [index for name in table_names for index in Base.metadata.tables[name].indexes if not index.unique]


class Loader:
    """Writes row tuples into one table; one implementation per backend."""

    def write(self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError


class PostgresLoader(Loader):
    def __init__(self, url: str) -> None:
        import psycopg

        self.connection = psycopg.connect(_psycopg_dsn(url), autocommit=False)
        with self.connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
            cursor.execute("SET synchronous_commit = off")
            cursor.execute("SET maintenance_work_mem = '1GB'")

    def write(self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with self.connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
        self.connection.commit()

    def execute(self, statement: str) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(statement)
        self.connection.commit()

    def finish(self) -> None:
        self.connection.close()


class SqliteLoader(Loader):
    def __init__(self, path: str) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None)
        self.connection.execute("PRAGMA journal_mode = OFF")
        self.connection.execute("PRAGMA synchronous = OFF")
        self.connection.execute("PRAGMA cache_size = -1000000")  # 1 GB, for the index builds

    def write(self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" for _ in columns)
        self.connection.execute("BEGIN")
        self.connection.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
        self.connection.execute("COMMIT")

    def execute(self, statement: str) -> None:
        self.connection.execute(statement)

    def finish(self) -> None:
        self.connection.execute("PRAGMA journal_mode = WAL")
        self.connection.execute("PRAGMA synchronous = NORMAL")
        self.connection.close()


def _psycopg_dsn(url: str) -> str:
    return (
        make_url(db_engine.normalise_url(url))
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


def _chunks(
    rows: Sequence[tuple[Any, ...]], size: int = LOAD_CHUNK_ROWS
) -> Iterator[Sequence[tuple[Any, ...]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def load(url: str, plan: Plan) -> None:
    """Migrate, drop the secondary indexes of the bulk tables, load everything, re-create them."""
    engine = db_engine.make_engine(url)
    try:
        migrate.upgrade(engine)
        secondary = _secondary_indexes(BULK_TABLES)
        with engine.begin() as connection:
            for index in secondary:
                index.drop(connection)
    finally:
        engine.dispose()
    backend = "postgresql" if url.startswith("postgresql") else "sqlite"
    loader: PostgresLoader | SqliteLoader = (
        PostgresLoader(url) if backend == "postgresql" else SqliteLoader(make_url(url).database or "")
    )
    started = time.perf_counter()
    try:
        products, links = catalog_rows(plan.catalog)
        loader.write("products", PRODUCT_COLUMNS, products)
        loader.write("product_collections", PRODUCT_COLLECTION_COLUMNS, links)
        for table, columns, rows in (
            ("customers", CUSTOMER_COLUMNS, plan.customers),
            ("orders", ORDER_COLUMNS, plan.orders),
            ("order_lines", ORDER_LINE_COLUMNS, plan.order_lines),
            ("customer_products", CUSTOMER_PRODUCT_COLUMNS, plan.customer_products),
            ("customer_collections", CUSTOMER_COLLECTION_COLUMNS, plan.customer_collections),
        ):
            table_started = time.perf_counter()
            for chunk in _chunks(rows):
                loader.write(table, columns, chunk)
            seconds = time.perf_counter() - table_started
            log(
                f"  {table}: {len(rows):,} rows in {seconds:.1f} s ({len(rows) / max(seconds, 1e-9):,.0f} rows/s)"
            )
        table_started = time.perf_counter()
        plan.event_mix.clear()
        total = len(plan.events)
        for start in range(0, total, LOAD_CHUNK_ROWS):
            loader.write(
                "events", EVENT_COLUMNS, event_rows(plan, start, min(total, start + LOAD_CHUNK_ROWS))
            )
            done = min(total, start + LOAD_CHUNK_ROWS)
            if done % 2_000_000 < LOAD_CHUNK_ROWS or done == total:
                seconds = time.perf_counter() - table_started
                log(f"  events: {done:,} of {total:,} ({done / seconds:,.0f} rows/s)")
        if backend == "postgresql":
            for table in ("events", "orders", "order_lines", "products"):
                loader.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
                )
        log(f"  rows loaded in {time.perf_counter() - started:.1f} s; creating {len(secondary)} indexes")
        index_started = time.perf_counter()
        for index in secondary:
            one = time.perf_counter()
            loader.execute(str(_create_index_sql(index, backend)))
            log(f"    {index.name}: {time.perf_counter() - one:.1f} s")
        log(f"  indexes in {time.perf_counter() - index_started:.1f} s")
        analyse_started = time.perf_counter()
        if backend == "postgresql":
            loader.connection.autocommit = True  # type: ignore[union-attr]
            for table in BULK_TABLES:
                loader.execute(f"VACUUM ANALYZE {table}")
            log(f"  VACUUM ANALYZE in {time.perf_counter() - analyse_started:.1f} s")
        else:
            loader.execute("ANALYZE")
            log(f"  ANALYZE in {time.perf_counter() - analyse_started:.1f} s")
    finally:
        loader.finish()
    log(f"  loaded in {time.perf_counter() - started:.1f} s")


def _create_index_sql(index: Any, backend: str) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.schema import CreateIndex

    dialect = postgresql.dialect() if backend == "postgresql" else sqlite.dialect()  # type: ignore[no-untyped-call]
    return CreateIndex(index).compile(dialect=dialect)


# --- databases ----------------------------------------------------------------------------------


def cache_key(customers: int, events: int, seed: int) -> str:
    """The generation parameters and the schema (tables, columns, indexes as the models declare
    them): a cached database made before an index was added is not reused."""
    schema = sorted(
        (
            table.name,
            sorted((column.name, str(column.type)) for column in table.columns),
            sorted(
                (index.name or "", [c.name for c in index.columns], index.unique) for index in table.indexes
            ),
        )
        for table in Base.metadata.tables.values()
    )
    raw = f"v{GENERATOR_VERSION}-{customers}-{events}-{seed}-{NOW.isoformat()}-{schema}"
    return hashlib.sha256(raw.encode()).hexdigest()[:10]


# url; the number of events loaded when the database is a complete cached one, else None; and a
# callable recording a completed load (with its number of events).
Database = tuple[str, int | None, Callable[[int], None]]


@contextmanager
def sqlite_database(cache: Path | None, key: str) -> Iterator[Database]:
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        path = cache / f"segments-{key}.db"
        marker = path.with_suffix(".complete")
        if not marker.exists():
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)  # an interrupted load
        loaded = int(marker.read_text()) if marker.exists() else None

        def mark(events: int) -> None:
            marker.write_text(str(events))

        yield f"sqlite:///{path}", loaded, mark
        return
    with tempfile.TemporaryDirectory(prefix="winback-bench-segments-") as directory:
        yield f"sqlite:///{directory}/segments.db", None, lambda events: None


@contextmanager
def postgres_database(admin_url: str, cache: Path | None, key: str) -> Iterator[Database]:
    admin = create_engine(db_engine.normalise_url(admin_url), isolation_level="AUTOCOMMIT")
    name = f"winback_bench_segments_{key}" if cache is not None else f"winback_bench_segments_{os.getpid()}"
    base = make_url(db_engine.normalise_url(admin_url))
    url = base.set(database=name).render_as_string(hide_password=False)
    loaded: int | None = None
    try:
        with admin.connect() as connection:
            comment = connection.scalar(
                text("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :name"),
                {"name": name},
            )
            if cache is not None and comment and comment.startswith("complete:"):
                loaded = int(comment.removeprefix("complete:"))
            else:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                connection.execute(text(f'CREATE DATABASE "{name}"'))

        def mark(events: int) -> None:
            if cache is not None:
                with admin.connect() as connection:
                    connection.execute(text(f"COMMENT ON DATABASE \"{name}\" IS 'complete:{events:d}'"))

        yield url, loaded, mark
    finally:
        if cache is None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            log(f"  dropped PostgreSQL database {name}")
        admin.dispose()


# --- the segments -------------------------------------------------------------------------------

COMPOSITE = {
    "type": "all",
    "rules": [
        {"type": "money_spent", "compare": {"op": "gte", "value": 500}},
        {"type": "order_count", "compare": {"op": "gte", "value": 5}},
        {
            "type": "event",
            "event": "Product List Viewed",
            "where": [{"property": "category", "op": "eq", "value": TARGET_COLLECTION}],
            "period": {"type": "last", "amount": 30, "unit": "days"},
        },
        {
            "type": "not",
            "rule": {"type": "placed_order", "period": {"type": "last", "amount": 90, "unit": "days"}},
        },
    ],
}
OTHER_SEGMENTS = {
    "High value": {"type": "money_spent", "compare": {"op": "gte", "value": 1000}},
    "Lapsed 90 days": {"type": "not_ordered_for", "days": 90},
    "Viewed a product twice this week": {
        "type": "event",
        "event": "Product Viewed",
        "where": [{"property": "product_id", "op": "eq", "value": "prod_00001"}],
        "count": {"op": "gte", "value": 2},
        "period": {"type": "last", "amount": 7, "unit": "days"},
    },
    "US searchers this month": {
        "type": "all",
        "rules": [
            {"type": "location", "field": "country", "op": "eq", "value": "US"},
            {
                "type": "event",
                "event": "Products Searched",
                "period": {"type": "last", "amount": 30, "unit": "days"},
            },
        ],
    },
}

# The hand-written query for COMPOSITE: customers' running aggregates for spent/orders (they are
# the definition: net of refunds, cancelled orders excluded), a semi-join on the events of the
# window, and an anti-join on the orders of the last 90 days (not cancelled).
BASELINE_SQL = {
    "postgresql": """
SELECT c.id FROM customers c
WHERE c.total_spent >= :min_spent AND c.orders_count >= :min_orders
  AND c.merged_into_id IS NULL AND c.erased_at IS NULL
  AND EXISTS (
    SELECT 1 FROM events e
    WHERE e.customer_id = c.id AND e.event = :event AND e.timestamp >= :viewed_since
      AND e.timestamp < :now AND e.properties ->> 'category' = :collection)
  AND NOT EXISTS (
    SELECT 1 FROM orders o
    WHERE o.customer_id = c.id AND o.placed_at >= :ordered_since AND o.placed_at < :now
      AND o.status <> 'cancelled')
""",
    "sqlite": """
SELECT c.id FROM customers c
WHERE c.total_spent >= :min_spent AND c.orders_count >= :min_orders
  AND c.merged_into_id IS NULL AND c.erased_at IS NULL
  AND EXISTS (
    SELECT 1 FROM events e
    WHERE e.customer_id = c.id AND e.event = :event AND e.timestamp >= :viewed_since
      AND e.timestamp < :now AND json_extract(e.properties, '$.category') = :collection)
  AND NOT EXISTS (
    SELECT 1 FROM orders o
    WHERE o.customer_id = c.id AND o.placed_at >= :ordered_since AND o.placed_at < :now
      AND o.status <> 'cancelled')
""",
}


def baseline_parameters(backend: str) -> dict[str, Any]:
    def moment(value: datetime) -> Any:
        # SQLite compares the stored text; bind the same text SQLAlchemy stores.
        return value.strftime("%Y-%m-%d %H:%M:%S.%f") if backend == "sqlite" else value

    return {
        "min_spent": 500,
        "min_orders": 5,
        "event": "Product List Viewed",
        "collection": TARGET_COLLECTION,
        "viewed_since": moment(NOW - timedelta(days=30)),
        "ordered_since": moment(NOW - timedelta(days=90)),
        "now": moment(NOW),
    }


# --- the measurements ---------------------------------------------------------------------------


def best_of_interleaved(
    first: Callable[[], set[int]], second: Callable[[], set[int]], runs: int = FULL_RUNS
) -> tuple[tuple[float, set[int]], tuple[float, set[int]]]:
    """One warm-up of each, then `runs` rounds of first-then-second; the best wall time of each
    (ids fetched into a set). Interleaving makes a busy moment on the machine hit both alike."""
    results = [first(), second()]
    best = [float("inf"), float("inf")]
    for _ in range(runs):
        for index, run in enumerate((first, second)):
            started = time.perf_counter()
            results[index] = run()
            best[index] = min(best[index], time.perf_counter() - started)
    return (best[0], results[0]), (best[1], results[1])


def explain(engine: Engine, statement: Any, parameters: dict[str, Any] | None = None) -> str:
    """The plan of `statement` (EXPLAIN ANALYZE on PostgreSQL, EXPLAIN QUERY PLAN on SQLite), with
    its parameters bound exactly as when it runs."""
    backend = engine.dialect.name
    prefix = "EXPLAIN QUERY PLAN " if backend == "sqlite" else "EXPLAIN (ANALYZE, BUFFERS) "

    def add_prefix(_conn: Any, _cursor: Any, sql: str, params: Any, context: Any, _many: bool) -> Any:
        if context is not None and context.execution_options.get("bench_explain"):
            sql = prefix + sql
        return sql, params

    event.listen(engine, "before_cursor_execute", add_prefix, retval=True)
    try:
        with engine.connect() as connection:
            connection = connection.execution_options(bench_explain=True)
            if isinstance(statement, str):
                result = connection.execute(text(statement), parameters or {})
            else:
                result = connection.execute(statement)
            rows = result.cursor.fetchall() if result.cursor is not None else []
    finally:
        event.remove(engine, "before_cursor_execute", add_prefix)
    if backend == "sqlite":
        return "\n".join(f"    {row[-1]}" for row in rows)
    return "\n".join(f"    {row[0]}" for row in rows)


@dataclass
class FullResult:
    segment_full_s: float
    baseline_s: float
    members: int
    compiled_sql: str


def measure_full(engine: Engine) -> FullResult:
    from winback.segments import compiler

    backend = engine.dialect.name
    definition = rules.parse_definition({"schema_version": 1, "rule": COMPOSITE})
    context = compiler.CompileContext(now=NOW, timezone=TIMEZONE, dialect=backend)
    reader = db_engine.read_only(engine)

    def compiled() -> set[int]:
        query = compiler.members_query(definition.rule, context)
        with reader.connect() as connection:
            return set(connection.execute(query).scalars().all())

    baseline_sql = text(BASELINE_SQL[backend])
    parameters = baseline_parameters(backend)

    def baseline() -> set[int]:
        with reader.connect() as connection:
            return set(connection.execute(baseline_sql, parameters).scalars().all())

    log(
        f"[{backend}] full evaluation of the composite segment (warm-up, then best of {FULL_RUNS}, interleaved)"
    )
    (baseline_s, expected), (full_s, got) = best_of_interleaved(baseline, compiled)
    log(f"  baseline (hand-written SQL): {baseline_s:.3f} s, {len(expected):,} members")
    log(f"  compiler (members_query):    {full_s:.3f} s, {len(got):,} members")
    if got != expected:
        raise SystemExit(
            f"the compiled query and the hand-written one disagree: {len(got - expected)} only in the "
            f"compiled set (e.g. {sorted(got - expected)[:5]}), {len(expected - got)} only in the baseline "
            f"(e.g. {sorted(expected - got)[:5]})"
        )
    query = compiler.members_query(definition.rule, context)
    sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": False}))
    log("  compiled SQL:\n" + "\n".join(f"    {line}" for line in sql.splitlines()))
    try:
        log("  plan of the compiled query:\n" + explain(engine, query))
        log("  plan of the baseline:\n" + explain(engine, BASELINE_SQL[backend], parameters))
    except Exception as exc:  # the plan is a diagnostic; never fail the bench on it
        log(f"  (no plan: {exc})")
    return FullResult(full_s, baseline_s, len(got), sql)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass
class IncrementalResult:
    p95_ms: float
    p50_ms: float
    max_ms: float
    samples: int


def measure_incremental(engine: Engine, seed: int, customers: int) -> IncrementalResult:
    from winback.db.models import Event
    from winback.segments import membership, service

    backend = engine.dialect.name
    log(f"[{backend}] incremental: saving {1 + len(OTHER_SEGMENTS)} active segments (full evaluation each)")
    for name, rule in {
        "Lapsed runners (bench)": COMPOSITE,
        **{f"{k} (bench)": v for k, v in OTHER_SEGMENTS.items()},
    }.items():
        started = time.perf_counter()
        with db_engine.transaction(engine) as session:
            segment = service.create_segment(
                session, name=name, definition={"schema_version": 1, "rule": rule}, now=NOW, timezone=TIMEZONE
            )
            count = segment.member_count
        log(f"  {name}: {count:,} members, saved in {time.perf_counter() - started:.2f} s")

    rng = random.Random(seed + 1)
    sample = rng.sample(range(1, customers + 1), min(INCREMENTAL_SAMPLES, customers))
    timings: list[float] = []
    log(f"  appending one event for each of {len(sample)} random customers and timing refresh_customers")
    for number, customer_id in enumerate(sample):
        at = NOW - timedelta(seconds=rng.randrange(1, 3600))
        with db_engine.transaction(engine) as session:
            session.execute(
                insert(Event).values(
                    message_id=f"bench-incremental-{number}",
                    source="segment",
                    type="track",
                    event="Product List Viewed",
                    user_id=f"u{customer_id:08d}",
                    properties={"list_id": "running-shoes", "category": TARGET_COLLECTION},
                    traits={},
                    context={},
                    timestamp=at,
                    received_at=at,
                    customer_id=customer_id,
                    processed_at=at,
                )
            )
        started = time.perf_counter()
        with db_engine.transaction(engine) as session:
            membership.refresh_customers(session, [customer_id], NOW, TIMEZONE)
        timings.append(time.perf_counter() - started)
        if (number + 1) % 100 == 0:
            log(f"    {number + 1} done, p95 so far {_percentile(timings, 0.95) * 1000:.2f} ms")
    return IncrementalResult(
        _percentile(timings, 0.95) * 1000,
        statistics.median(timings) * 1000,
        max(timings) * 1000,
        len(timings),
    )


def clean_up_bench_writes(engine: Engine, event_count: int) -> None:
    """Remove what the measurements added, so a cached database stays as loaded."""
    with db_engine.transaction(engine) as session:
        session.execute(text("DELETE FROM events WHERE id > :last"), {"last": event_count})
        session.execute(text("DELETE FROM segment_memberships"))
        session.execute(text("DELETE FROM segments"))  # derived Segment Entered/Exited events went above


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Figures:
    backend: str
    full: FullResult
    incremental: IncrementalResult

    @property
    def ratio(self) -> float:
        return self.full.segment_full_s / self.full.baseline_s

    def line(self) -> str:
        return (
            f"segment_full_s={self.full.segment_full_s:.3f} baseline_s={self.full.baseline_s:.3f} "
            f"ratio={self.ratio:.2f} incremental_p95_ms={self.incremental.p95_ms:.2f}"
        )


def _verdict(figures: Figures) -> str:
    checks = [
        (f"full <= {TARGET_FULL_S} s", figures.full.segment_full_s <= TARGET_FULL_S),
        (f"full <= {TARGET_RATIO} x hand-written", figures.ratio <= TARGET_RATIO),
        (
            f"incremental p95 <= {TARGET_INCREMENTAL_P95_MS} ms",
            figures.incremental.p95_ms <= TARGET_INCREMENTAL_P95_MS,
        ),
    ]
    return ", ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks)


def bench_backend(backend: str, args: argparse.Namespace, get_plan: Callable[[], Plan]) -> Figures:
    key = cache_key(args.customers, args.events, args.seed)
    databases = (
        sqlite_database(args.cache, key)
        if backend == "sqlite"
        else postgres_database(args.postgres_url, args.cache, key)
    )
    with databases as (url, loaded, mark_loaded):
        if loaded is not None:
            log(f"[{backend}] using the cached database {make_url(url).database}")
            event_count = loaded
        else:
            plan = get_plan()
            log(f"[{backend}] loading {len(plan.customers):,} customers, {len(plan.events):,} events")
            load(url, plan)
            event_count = len(plan.events)
            mark_loaded(event_count)
        engine = db_engine.make_engine(url)
        try:
            with engine.connect() as connection:
                customers = int(connection.scalar(text("SELECT count(*) FROM customers")) or 0)
            clean_up_bench_writes(engine, event_count)  # a previous run that was interrupted
            full = measure_full(engine)
            incremental = measure_incremental(engine, args.seed, customers)
            log(
                f"  incremental p50={incremental.p50_ms:.2f} ms p95={incremental.p95_ms:.2f} ms "
                f"max={incremental.max_ms:.2f} ms over {incremental.samples} updates"
            )
            clean_up_bench_writes(engine, event_count)
        finally:
            engine.dispose()
    log(f"  load average after {backend}: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    figures = Figures(backend, full, incremental)
    log(f"[{backend}] {figures.line()}")
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--customers", type=int, default=None, help=f"default {DEFAULT_CUSTOMERS:,}")
    parser.add_argument(
        "--events", type=int, default=None, help=f"about this many events (default {DEFAULT_EVENTS:,})"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_CUSTOMERS:,} customers, {QUICK_EVENTS:,} events"
    )
    parser.add_argument(
        "--cache", type=Path, default=None, help="keep and reuse loaded databases (SQLite files here)"
    )
    parser.add_argument("--postgres-url", default=POSTGRES_ADMIN_URL, help="an admin URL on loopback")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    args.customers = args.customers or (QUICK_CUSTOMERS if args.quick else DEFAULT_CUSTOMERS)
    args.events = args.events or (QUICK_EVENTS if args.quick else args.customers * 10)
    host = make_url(db_engine.normalise_url(args.postgres_url)).host
    if args.backend != "sqlite" and host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"--postgres-url must point at loopback, not {host!r}")

    plans: list[Plan] = []

    def get_plan() -> Plan:
        if not plans:
            log(f"generating {args.customers:,} customers and ~{args.events:,} events (seed {args.seed})")
            started = time.perf_counter()
            plan = make_plan(args.customers, args.events, args.seed)
            log(
                f"  {len(plan.customers):,} customers ({', '.join(f'{k}={v:,}' for k, v in plan.buyers.items())}), "
                f"{len(plan.orders):,} orders, {len(plan.order_lines):,} lines, {len(plan.events):,} events "
                f"in {time.perf_counter() - started:.1f} s"
            )
            plans.append(plan)
        return plans[0]

    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    results = [bench_backend(backend, args, get_plan) for backend in backends]
    if plans and plans[0].event_mix:
        log(
            "event mix: "
            + ", ".join(f"{k}={v:,}" for k, v in sorted(plans[0].event_mix.items(), key=lambda kv: -kv[1]))
        )
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
