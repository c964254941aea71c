"""`winback demo`: winback plus a simulated store sending shopper traffic through the tracking API.

The app (with its embedded worker) runs under uvicorn on loopback in a thread; simulated shoppers
browse, search, identify, fill carts, start checkouts, order, abandon and get refunds, each call
made over HTTP with a write key the demo creates — exactly what a real storefront does. Journeys
are planned by a seeded random generator (same seed, same shoppers); abandonment windows are
shortened to seconds for the demo only, unless set explicitly. Every number in the summary is read
from the database.
"""

from __future__ import annotations

import random
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import Response
from rich.console import Console
from rich.live import Live
from rich.table import Table
from sqlalchemy import Engine, func, select

from winback import apikeys
from winback import demo_catalog as shop
from winback.db import migrate
from winback.db.engine import reading
from winback.db.models import Checkout, Customer, Event, IntentSession, Order
from winback.runtime import Runtime
from winback.settings import Settings

DEFAULT_SEED = 7
ONCE_SHOPPERS = 40
MESSAGE_PREFIX = "demo-"
STARTUP_TIMEOUT = 15.0  # seconds for the server to start listening
ONCE_SETTLE_TIMEOUT = 40.0  # seconds for the worker to apply everything and fire abandonment
SUMMARY_EVERY = 3.0  # seconds between live summaries
HTTP_TIMEOUT = 10.0  # seconds per tracking call
SENDER_THREADS = 8

# Windows shortened for the demo (seconds), unless the user set them: (--once, live).
DEMO_WINDOWS = {
    "checkout_abandoned_after_s": (3.0, 30.0),
    "browse_abandoned_after_s": (3.0, 30.0),
    "search_abandoned_after_s": (3.0, 30.0),
    "worker_poll_s": (0.2, 0.5),
}


class DemoFailed(Exception):
    """The demo could not run or did not reach the expected state; `message` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- settings -----------------------------------------------------------------------------------


def demo_settings(settings: Settings, *, once: bool, store_url: str) -> Settings:
    """The user's settings with seconds-long abandonment windows (those not set explicitly)."""
    update: dict[str, Any] = {
        name: windows[0] if once else windows[1]
        for name, windows in DEMO_WINDOWS.items()
        if name not in settings.model_fields_set
    }
    if "store_url" not in settings.model_fields_set:
        update["store_url"] = store_url
    if "store_name" not in settings.model_fields_set:
        update["store_name"] = shop.STORE_NAME
    return settings.model_copy(update=update)


# --- journeys (pure: planned from a seeded generator) ------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One tracking call a shopper makes, after `pause` seconds of thinking."""

    kind: str  # identify | track | page
    message: dict[str, Any]
    pause: float


@dataclass(frozen=True, slots=True)
class Journey:
    shopper: int
    persona: str  # bouncer | searcher | cart_abandoner | checkout_abandoner | buyer | refunded_buyer
    calls: tuple[Call, ...]


PERSONAS = (
    ("bouncer", 0.22),
    ("searcher", 0.13),
    ("cart_abandoner", 0.15),
    ("checkout_abandoner", 0.20),
    ("buyer", 0.22),
    ("refunded_buyer", 0.08),
)


def plan_journey(rng: random.Random, shopper: int, *, run_tag: str, store_url: str, pace: float) -> Journey:
    """What one shopper does, as Segment calls. `pace` scales the pauses (seconds)."""
    persona = rng.choices([p for p, _ in PERSONAS], weights=[w for _, w in PERSONAS])[0]
    anonymous_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    ip = f"203.0.113.{rng.randrange(1, 255)}"  # TEST-NET-3: documentation addresses
    agent = rng.choice(
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Safari/605.1.15",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
        )
    )
    calls: list[Call] = []
    ids: dict[str, str | None] = {"anonymousId": anonymous_id, "userId": None}

    def call(kind: str, path: str, **message: Any) -> None:
        number = len(calls)
        context = {
            "ip": ip,
            "userAgent": agent,
            "page": {"url": f"{store_url}{path}", "path": path},
            "library": {"name": "winback-demo", "version": "1"},
        }
        body = {
            "messageId": f"{MESSAGE_PREFIX}{run_tag}-{shopper}-{number}",
            **{key: value for key, value in ids.items() if value},
            "context": context,
            **message,
        }
        calls.append(Call(kind, body, pause=round(rng.uniform(0.3, 1.0) * pace, 3) if number else 0.0))

    def view(product: shop.DemoProduct) -> None:
        path = f"/products/{product.slug()}"
        call("page", path, name=product.name, category="Product")
        call("track", path, event="Product Viewed", properties=product.properties(store_url))

    collection = rng.choice(shop.COLLECTIONS)
    in_collection = [p for p in shop.CATALOG if collection in p.collections]
    call("page", "/", name="Home")
    if persona == "searcher":
        query = rng.choice(shop.SEARCH_TERMS)
        call("track", f"/search?q={query}", event="Products Searched", properties={"query": query})
        if rng.random() < 0.5:
            view(rng.choice(shop.CATALOG))
        return Journey(shopper, persona, tuple(calls))

    call(
        "track",
        f"/collections/{collection.lower()}",
        event="Product List Viewed",
        properties={"list_id": collection.lower(), "category": collection,
                    "products": [p.properties(store_url) for p in in_collection[:8]]},
    )  # fmt: skip
    favourite = rng.choice(in_collection)
    view(favourite)
    if persona == "bouncer":
        if rng.random() < 0.7:
            view(favourite)  # came back to it: enough interest for browse abandonment
        return Journey(shopper, persona, tuple(calls))

    cart_id = f"cart-{run_tag}-{shopper}"
    basket = [favourite, *rng.sample([p for p in shop.CATALOG if p is not favourite], rng.randint(0, 2))]
    quantities = {p.product_id: rng.choice((1, 1, 1, 2, 3)) for p in basket}
    for product in basket:
        if product is not favourite:
            view(product)
        call(
            "track",
            f"/products/{product.slug()}",
            event="Product Added",
            properties={
                "cart_id": cart_id,
                **product.properties(store_url),
                "quantity": quantities[product.product_id],
            },
        )
    if persona == "cart_abandoner":
        return Journey(shopper, persona, tuple(calls))

    first, last = rng.choice(shop.FIRST_NAMES), rng.choice(shop.LAST_NAMES)
    email = f"{first}.{last}.{shopper}@example.com".lower().replace(" ", "").replace("'", "")
    phone = f"+1415555{rng.randrange(0, 10_000):04d}" if rng.random() < 0.6 else None
    registered = rng.random() < 0.5
    if registered:
        ids["userId"] = f"demo-customer-{run_tag}-{shopper}"
    traits: dict[str, Any] = {"email": email, "first_name": first, "last_name": last}
    if phone:
        traits["phone"] = phone
    traits["address"] = {"city": "San Francisco", "state": "CA", "country": "US"}
    if rng.random() < 0.55:
        traits["email_consent"] = "subscribed"
    if phone and rng.random() < 0.5:
        traits["sms_consent"] = "subscribed"
    if "email_consent" in traits or "sms_consent" in traits:
        traits["consent_source"] = "demo:checkout-form"
        traits["consent_evidence"] = {"form": "checkout", "checkbox": "Send me offers"}
    call("identify", "/checkout", traits=traits)

    checkout_id = f"chk-{run_tag}-{shopper}"
    products = [{**p.properties(store_url), "quantity": quantities[p.product_id]} for p in basket]
    value = sum((p.price * quantities[p.product_id] for p in basket), Decimal("0"))
    checkout = {"checkout_id": checkout_id, "cart_id": cart_id, "currency": shop.CURRENCY, "email": email}
    call(
        "track",
        "/checkout",
        event="Checkout Started",
        properties={**checkout, "value": float(value), "products": products,
                    "recovery_url": f"{store_url}/checkout/{checkout_id}/recover"},
    )  # fmt: skip
    call(
        "track",
        "/checkout/shipping",
        event="Checkout Step Completed",
        properties={"checkout_id": checkout_id, "step": 1},
    )
    if persona == "checkout_abandoner":
        return Journey(shopper, persona, tuple(calls))

    shipping = Decimal("0") if value >= 50 else Decimal("4.90")
    order_id = f"NW-{run_tag}-{1000 + shopper}"
    call(
        "track",
        "/checkout/payment",
        event="Payment Info Entered",
        properties={"checkout_id": checkout_id, "step": 2},
    )
    call(
        "track",
        "/checkout/thank-you",
        event="Order Completed",
        properties={**checkout, "order_id": order_id, "total": float(value + shipping), "subtotal": float(value),
                    "shipping": float(shipping), "products": products,
                    "shipping_address": {"country": "US", "state": "CA", "city": "San Francisco"}},
    )  # fmt: skip
    if persona == "refunded_buyer":
        refund = basket[0].price * quantities[basket[0].product_id]
        call(
            "track",
            "/admin/refunds",
            event="Order Refunded",
            properties={"order_id": order_id, "refund_id": f"rf-{order_id}", "total": float(refund),
                        "currency": shop.CURRENCY},
        )  # fmt: skip
    return Journey(shopper, persona, tuple(calls))


def plan_scenario(seed: int, shoppers: int, *, run_tag: str, store_url: str, pace: float) -> list[Journey]:
    rng = random.Random(seed)
    return [
        plan_journey(rng, n, run_tag=run_tag, store_url=store_url, pace=pace) for n in range(1, shoppers + 1)
    ]


# --- the HTTP side ------------------------------------------------------------------------------


def add_demo_routes(app: FastAPI) -> None:
    """Placeholder product images at /demo/images/<product_id>.svg (the catalog's image_url)."""

    def image(name: str) -> Response:
        product_id = name.removesuffix(".svg")
        svg = shop.placeholder_svg(shop.BY_ID.get(product_id), product_id)
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})

    app.add_api_route("/demo/images/{name}", image, methods=["GET"], include_in_schema=False)


def bind(host: str, port: int) -> socket.socket:
    """Claim the listening socket before anything else starts, so a busy port fails clearly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DemoFailed(
            f"cannot listen on {host}:{port} ({exc.strerror}); is another winback running? "
            "Pass --port with a free port (or --port 0 for any)."
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@contextmanager
def running_server(runtime: Runtime, sock: socket.socket, wait: Callable[[float], bool]) -> Iterator[str]:
    """The app with its embedded worker under uvicorn in a thread; yields its base URL."""
    import uvicorn

    from winback.web.app import create_app

    app = create_app(runtime, embedded_worker=True)
    add_demo_routes(app)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="winback-demo-server", daemon=True
    )
    thread.start()
    deadline = runtime.clock.now() + timedelta(seconds=STARTUP_TIMEOUT)
    while not server.started:
        if not thread.is_alive() or runtime.clock.now() > deadline:
            raise DemoFailed("the winback server did not start; see the log above")
        wait(0.05)
    host, port = sock.getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT)
        sock.close()


class Storefront:
    """Sends a journey's calls to the tracking API, stamping each with the clock's time."""

    def __init__(self, base_url: str, write_key: str, runtime: Runtime, stop: threading.Event) -> None:
        self.client = httpx.Client(base_url=base_url, auth=(write_key, ""), timeout=HTTP_TIMEOUT)
        self.runtime = runtime
        self.stop = stop
        self.sent = 0
        self._lock = threading.Lock()

    def walk(self, journey: Journey) -> None:
        for call in journey.calls:
            if self.stop.wait(call.pause):
                return
            now = self.runtime.clock.now().isoformat()
            response = self.client.post(
                f"/v1/{call.kind}", json={**call.message, "timestamp": now, "sentAt": now}
            )
            if response.status_code != 200:
                raise DemoFailed(
                    f"the tracking API refused a {call.kind} call ({response.status_code}): {response.text}"
                )
            with self._lock:
                self.sent += 1

    def close(self) -> None:
        self.client.close()


# --- the summary (from the database) ------------------------------------------------------------


@dataclass(slots=True)
class Summary:
    customers: int = 0
    known: int = 0
    anonymous: int = 0
    events: int = 0
    pending_events: int = 0
    checkouts: Counter[str] = field(default_factory=Counter)  # status → count (kind checkout)
    carts: Counter[str] = field(default_factory=Counter)  # status → count (kind cart)
    open_carts_with_items: int = 0
    open_sessions: int = 0
    orders: int = 0
    revenue: dict[str, Decimal] = field(default_factory=dict)  # currency → net of refunds
    refunded: dict[str, Decimal] = field(default_factory=dict)
    derived: Counter[str] = field(default_factory=Counter)  # event name → count

    @property
    def settled(self) -> bool:
        """Everything applied and nothing left open that the worker still has to close."""
        return (
            self.pending_events == 0
            and self.checkouts["open"] == 0
            and self.open_carts_with_items == 0
            and self.open_sessions == 0
        )


def summarise(engine: Engine) -> Summary:
    summary = Summary()
    with reading(engine) as session:
        alive = (Customer.merged_into_id.is_(None), Customer.erased_at.is_(None))
        known = (
            (Customer.user_id.is_not(None)) | (Customer.email.is_not(None)) | (Customer.phone.is_not(None))
        )
        summary.customers = session.scalar(select(func.count()).select_from(Customer).where(*alive)) or 0
        summary.known = session.scalar(select(func.count()).select_from(Customer).where(*alive, known)) or 0
        summary.anonymous = summary.customers - summary.known
        summary.events = session.scalar(select(func.count()).select_from(Event)) or 0
        summary.pending_events = (
            session.scalar(select(func.count()).select_from(Event).where(Event.processed_at.is_(None))) or 0
        )
        for kind, status, count in session.execute(
            select(Checkout.kind, Checkout.status, func.count()).group_by(Checkout.kind, Checkout.status)
        ):
            (summary.checkouts if kind == "checkout" else summary.carts)[status] = count
        summary.open_carts_with_items = sum(
            1
            for items in session.scalars(
                select(Checkout.items).where(Checkout.kind == "cart", Checkout.status == "open")
            )
            if items
        )
        summary.open_sessions = (
            session.scalar(
                select(func.count()).select_from(IntentSession).where(IntentSession.status == "open")
            )
            or 0
        )
        placed = Order.status != "cancelled"
        summary.orders = session.scalar(select(func.count()).select_from(Order).where(placed)) or 0
        for currency, total, refunded in session.execute(
            select(Order.currency, func.sum(Order.total), func.sum(Order.refunded_total))
            .where(placed)
            .group_by(Order.currency)
        ):
            code = currency or "???"
            summary.revenue[code] = Decimal(total or 0) - Decimal(refunded or 0)
            summary.refunded[code] = Decimal(refunded or 0)
        for name, count in session.execute(
            select(Event.event, func.count()).where(Event.source == "derived").group_by(Event.event)
        ):
            summary.derived[name or "?"] = count
    return summary


def _money(amounts: dict[str, Decimal]) -> str:
    return ", ".join(f"{currency} {amount:,.2f}" for currency, amount in sorted(amounts.items())) or "0.00"


def render(summary: Summary, title: str) -> Table:
    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("customers", f"{summary.customers} ({summary.known} known, {summary.anonymous} anonymous)")
    table.add_row("events", f"{summary.events} ({summary.pending_events} waiting for the worker)")
    statuses = ("open", "abandoned", "recovered", "completed")
    table.add_row("checkouts", " · ".join(f"{summary.checkouts[s]} {s}" for s in statuses))
    table.add_row(
        "carts",
        " · ".join(f"{summary.carts[s]} {s}" for s in ("open", "abandoned", "checked_out", "completed")),
    )
    table.add_row(
        "orders", f"{summary.orders}, revenue {_money(summary.revenue)} (refunded {_money(summary.refunded)})"
    )
    derived = " · ".join(f"{count} {name}" for name, count in sorted(summary.derived.items())) or "none yet"
    table.add_row("derived events", derived)
    return table


# --- running it ---------------------------------------------------------------------------------


def check_database_is_for_demo(engine: Engine) -> None:
    """Refuse to mix simulated shoppers into a database holding real data."""
    with reading(engine) as session:
        foreign = session.scalar(
            select(func.count())
            .select_from(Event)
            .where(~Event.message_id.startswith(MESSAGE_PREFIX), Event.source != "derived")
        )
    if foreign:
        raise DemoFailed(
            f"the database at {engine.url.render_as_string()} already holds {foreign} events the demo did not "
            "send; run the demo on its own database, e.g. WINBACK_DATABASE_URL=sqlite:///./demo.db winback demo "
            "(or pass --force to add demo shoppers anyway)"
        )


@dataclass(frozen=True, slots=True)
class Options:
    once: bool = False
    host: str = "127.0.0.1"
    port: int = 8000
    rate: float = 20.0  # new shoppers per minute (live mode)
    shoppers: int = ONCE_SHOPPERS  # --once
    seed: int = DEFAULT_SEED
    force: bool = False


def run(base: Runtime, options: Options, console: Console, out: Console) -> Summary:
    """Run the demo; with `once`, returns the settled summary (raises DemoFailed when it does not settle)."""
    migrate.upgrade(base.engine)
    if not options.force:
        check_database_is_for_demo(base.engine)
    sock = bind(options.host, options.port)
    host, port = sock.getsockname()[:2]
    settings = demo_settings(base.settings, once=options.once, store_url=f"http://{host}:{port}")
    runtime = Runtime(settings=settings, engine=base.engine, clock=base.clock)
    stop = threading.Event()
    now = runtime.clock.now()
    run_tag = f"{int(now.timestamp()):x}"  # ids unique per run, so runs on one database don't collide
    key = apikeys.create_key(runtime.engine, name=f"winback demo {run_tag}", scope="write", now=now)
    try:
        with running_server(runtime, sock, stop.wait) as base_url:
            console.print(
                f"[bold]{shop.STORE_NAME}[/bold] demo: winback on {base_url} (database "
                f"{runtime.engine.url.render_as_string()}), write key {key.secret}"
            )
            console.print(
                f"abandonment after {settings.checkout_abandoned_after_s:g} s (checkouts/carts), "
                f"{settings.browse_abandoned_after_s:g} s (browsing), {settings.search_abandoned_after_s:g} s (searches)"
            )
            storefront = Storefront(base_url, key.secret, runtime, stop)
            try:
                if options.once:
                    return _run_once(runtime, storefront, options, run_tag, base_url, console, out, stop)
                _run_live(runtime, storefront, options, run_tag, base_url, console, stop)
                return summarise(runtime.engine)
            finally:
                stop.set()
                storefront.close()
    finally:
        if options.once:
            apikeys.revoke_key(runtime.engine, key.id, runtime.clock.now())


def _run_once(
    runtime: Runtime,
    storefront: Storefront,
    options: Options,
    run_tag: str,
    base_url: str,
    console: Console,
    out: Console,
    stop: threading.Event,
) -> Summary:
    journeys = plan_scenario(options.seed, options.shoppers, run_tag=run_tag, store_url=base_url, pace=0.15)
    personas = Counter(j.persona for j in journeys)
    console.print(
        f"{len(journeys)} shoppers: "
        + ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in sorted(personas.items()))
    )
    with ThreadPoolExecutor(SENDER_THREADS, thread_name_prefix="shopper") as pool:
        for future in [pool.submit(storefront.walk, journey) for journey in journeys]:
            future.result()  # re-raises a refused call
    console.print(f"sent {storefront.sent} tracking calls; waiting for the worker and abandonment…")
    deadline = runtime.clock.now() + timedelta(seconds=ONCE_SETTLE_TIMEOUT)
    summary = summarise(runtime.engine)
    while not summary.settled:
        if runtime.clock.now() > deadline:
            out.print(render(summary, "winback demo (did not settle)"))
            raise DemoFailed(
                f"the worker did not settle within {ONCE_SETTLE_TIMEOUT:g} s: {summary.pending_events} events "
                f"unapplied, {summary.checkouts['open']} checkouts, {summary.open_carts_with_items} carts and "
                f"{summary.open_sessions} browse/search sessions still open"
            )
        stop.wait(0.25)
        summary = summarise(runtime.engine)
    out.print(render(summary, f"{shop.STORE_NAME} — winback demo summary"))
    expected_abandoned = personas["checkout_abandoner"]
    if summary.orders == 0 or (expected_abandoned and summary.checkouts["abandoned"] == 0):
        raise DemoFailed(
            f"the simulated traffic did not show up as expected: {summary.orders} orders and "
            f"{summary.checkouts['abandoned']} abandoned checkouts in the database"
        )
    return summary


def _run_live(
    runtime: Runtime,
    storefront: Storefront,
    options: Options,
    run_tag: str,
    base_url: str,
    console: Console,
    stop: threading.Event,
) -> None:
    """New shoppers at `rate` per minute, a live summary every few seconds, until Ctrl-C."""
    rng = random.Random(options.seed)
    interval = 60.0 / max(options.rate, 0.1)
    failures: list[BaseException] = []

    def done(future: Future[None]) -> None:
        if future.exception() is not None and not stop.is_set():
            failures.append(future.exception())  # type: ignore[arg-type]

    console.print(f"{options.rate:g} new shoppers a minute; Ctrl-C to stop")
    pool = ThreadPoolExecutor(64, thread_name_prefix="shopper")
    shopper = 0
    next_shopper_at = runtime.clock.now()
    next_summary_at = runtime.clock.now()
    try:
        with Live(
            render(summarise(runtime.engine), "winback demo"), console=console, refresh_per_second=2
        ) as live:
            while not stop.is_set():
                now = runtime.clock.now()
                if now >= next_shopper_at:
                    shopper += 1
                    journey = plan_journey(rng, shopper, run_tag=run_tag, store_url=base_url, pace=4.0)
                    pool.submit(storefront.walk, journey).add_done_callback(done)
                    next_shopper_at = now + timedelta(seconds=rng.expovariate(1 / interval))
                if now >= next_summary_at:
                    title = f"{shop.STORE_NAME} — {shopper} shoppers so far ({_clock(now)})"
                    live.update(render(summarise(runtime.engine), title))
                    next_summary_at = now + timedelta(seconds=SUMMARY_EVERY)
                if failures:
                    raise DemoFailed(f"a simulated shopper failed: {failures[0]}")
                stop.wait(0.1)
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
    console.print(render(summarise(runtime.engine), f"{shop.STORE_NAME} — {shopper} shoppers, final"))


def _clock(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S")
