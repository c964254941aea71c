"""`winback demo`: winback plus a simulated store sending shopper traffic through the tracking API.

The app (with its embedded worker) runs under uvicorn on loopback in a thread; simulated shoppers
browse, search, identify, fill carts, start checkouts, order, abandon and get refunds, each call
made over HTTP with a write key the demo creates — exactly what a real storefront does. Journeys
are planned by a seeded random generator (same seed, same shoppers); abandonment windows are
shortened to seconds for the demo only, unless set explicitly.

The demo also makes sure a few demo flows are live (`DEMO_FLOWS`: an SMS with a discount code on an
abandoned checkout, an email on abandoned browsing, a welcome email on sign-up), so the worker's
sending pipeline sends real messages through the default `outbox` providers — they stay in
winback, nothing leaves the machine. Consent and quiet hours apply as they would for a store:
shoppers live in cities around the world, most where it is daytime now and a few where it is night
(their SMS waits for the morning); some opted in to SMS, some did not. A few shoppers who got an SMS
click its tracked link and come back to order with the code, so a conversion is attributed. Every
number in the summary is read from the database.
"""

from __future__ import annotations

import random
import re
import socket
import threading
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from rich.console import Console
from rich.live import Live
from rich.table import Table
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from winback import apikeys
from winback import demo_catalog as shop
from winback.db import migrate
from winback.db.engine import reading, transaction
from winback.db.models import (
    Checkout,
    Customer,
    DiscountCode,
    Event,
    Flow,
    FlowRun,
    FlowVersion,
    IntentSession,
    Message,
    Order,
    OutboxEntry,
)
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


# Where shoppers live: the demo picks cities where it is daytime now for most of them (SMS are
# sent at once) and cities where it is night for a few (their SMS waits for the morning there).
NIGHT_SHARE = 0.35  # of shoppers, living where it is night now
COMEBACK_SHARE = 0.7  # of checkout abandoners who get the SMS, who click it and order with the code
DAYLIGHT_MARGIN = timedelta(minutes=30)  # a city must stay day (or night) this long to count as such
COMEBACK_PATIENCE = timedelta(minutes=5)  # live mode: a shopper whose SMS has not come by then stays away


@dataclass(frozen=True, slots=True)
class City:
    name: str
    region: str | None
    country: str
    timezone: str
    phone_prefix: str  # plus `phone_digits` random digits make a number phonenumbers takes as valid
    phone_digits: int

    def phone(self, draw: float) -> str:
        return f"{self.phone_prefix}{int(draw * 10**self.phone_digits):0{self.phone_digits}d}"

    def address(self) -> dict[str, str]:
        return {"city": self.name, **({"state": self.region} if self.region else {}), "country": self.country}


CITIES: tuple[City, ...] = (
    City("San Francisco", "CA", "US", "America/Los_Angeles", "+1415555", 4),
    City("Chicago", "IL", "US", "America/Chicago", "+1312555", 4),
    City("New York", "NY", "US", "America/New_York", "+1212555", 4),
    City("Honolulu", "HI", "US", "Pacific/Honolulu", "+1808555", 4),
    City("São Paulo", "SP", "BR", "America/Sao_Paulo", "+55119", 8),
    City("London", None, "GB", "Europe/London", "+4474", 8),
    City("Paris", None, "FR", "Europe/Paris", "+3361", 7),
    City("Berlin", None, "DE", "Europe/Berlin", "+49151", 8),
    City("Mumbai", "MH", "IN", "Asia/Kolkata", "+9198", 8),
    City("Singapore", None, "SG", "Asia/Singapore", "+6581", 6),
    City("Tokyo", None, "JP", "Asia/Tokyo", "+81901", 7),
    City("Sydney", "NSW", "AU", "Australia/Sydney", "+61491570", 3),
    City("Auckland", None, "NZ", "Pacific/Auckland", "+6421", 7),
)


@dataclass(frozen=True, slots=True)
class Places:
    """Cities where marketing SMS may arrive now (`day`) and where they may not (`night`)."""

    day: tuple[City, ...]
    night: tuple[City, ...]


def places_at(now: datetime, settings: Settings) -> Places:
    """Split CITIES by the quiet-hours window in force (the settings'), with a margin either side so
    a city does not change sides during a run. Either side falls back to all cities when empty."""
    from winback.messaging.quiet_hours import QuietHours, is_inside

    quiet = QuietHours.from_settings(settings.quiet_hours_window, settings.quiet_hours_overrides)
    day: list[City] = []
    night: list[City] = []
    for city in CITIES:
        window = quiet.window_for(city.country, city.region)
        zone = ZoneInfo(city.timezone)
        inside = [is_inside(moment, zone, window) for moment in (now, now + DAYLIGHT_MARGIN)]
        if all(inside):
            day.append(city)
        elif not any(inside):
            night.append(city)
    return Places(tuple(day) or CITIES, tuple(night) or CITIES)


# --- the demo flows -----------------------------------------------------------------------------

SMS_FLOW = "Demo: abandoned checkout SMS"
BROWSE_FLOW = "Demo: browse abandonment email"
WELCOME_FLOW = "Demo: welcome email"
DISCOUNT_PERCENT = 10
_FIRST_NAME = '{{ customer.first_name | default: "there" }}'
_SIGNATURE = "\n\nThe {{ shop.name }} team\n\nNo more emails like this: {{ unsubscribe_url }}"

# name → (description, definition); the first step of each fits the demo's seconds-long windows.
DEMO_FLOWS: dict[str, tuple[str, dict[str, Any]]] = {
    SMS_FLOW: (
        "winback demo: a discount code by SMS as soon as a checkout is abandoned; stops on an order.",
        {
            "trigger": {"type": "event", "event": "Checkout Abandoned"},
            "entry": {"reentry": {"mode": "every_time"}, "one_run_per": "checkout"},
            "exit_when": [{"type": "event_since_entry", "event": "Order Completed"}],
            "priority": 60,
            "start": "code",
            "nodes": [
                {
                    "id": "code",
                    "type": "action",
                    "action": {
                        "type": "create_discount",
                        "kind": "percent",
                        "value": DISCOUNT_PERCENT,
                        "expires_after": {"amount": 2, "unit": "days"},
                    },
                    "next": "sms",
                },
                {
                    "id": "sms",
                    "type": "action",
                    "action": {
                        "type": "send_sms",
                        "body": "{{ shop.name }}: " + _FIRST_NAME + ", your cart is saved. "
                        f"{DISCOUNT_PERCENT}% off with code {{{{ discount.code }}}}: "
                        "{{ checkout.recovery_url }} Reply STOP to opt out",
                    },
                },
            ],
        },
    ),
    BROWSE_FLOW: (
        "winback demo: an email when someone with an email address stops browsing without buying.",
        {
            "trigger": {"type": "event", "event": "Browse Abandoned"},
            "entry": {
                "filter": {"type": "has_contact", "channel": "email"},
                "reentry": {"mode": "once_per_days", "days": 1},
            },
            "exit_when": [{"type": "event_since_entry", "event": "Order Completed"}],
            "start": "email",
            "nodes": [
                {
                    "id": "email",
                    "type": "action",
                    "action": {
                        "type": "send_email",
                        "subject": "Still thinking it over, " + _FIRST_NAME + "?",
                        "text": "Hi " + _FIRST_NAME + ",\n\nthe coffee you were looking at is still here, "
                        "freshly roasted: {{ shop.url }}" + _SIGNATURE,
                    },
                },
            ],
        },
    ),
    WELCOME_FLOW: (
        "winback demo: a welcome email when someone signs up for the newsletter.",
        {
            "trigger": {"type": "event", "event": "Signed Up"},
            "entry": {"reentry": {"mode": "once"}},
            "exit_when": [{"type": "unsubscribed", "channel": "email"}],
            "start": "welcome",
            "nodes": [
                {
                    "id": "welcome",
                    "type": "action",
                    "action": {
                        "type": "send_email",
                        "subject": "Welcome to {{ shop.name }}, " + _FIRST_NAME,
                        "text": "Hi " + _FIRST_NAME + ",\n\nthanks for signing up! New roasts every week "
                        "at {{ shop.url }}" + _SIGNATURE,
                    },
                },
            ],
        },
    ),
}


def ensure_demo_flows(engine: Engine, now: datetime) -> dict[str, int]:
    """Make sure every demo flow exists with the demo's definition and is live (found by name:
    restarts never duplicate them); returns their ids by name."""
    from winback.flows import definition as flow_definition
    from winback.flows import service

    ids: dict[str, int] = {}
    with transaction(engine) as session:
        for name, (description, data) in DEMO_FLOWS.items():
            wanted = flow_definition.parse_flow(data).model_dump(mode="json")
            flow = session.scalar(select(Flow).where(Flow.name == name))
            if flow is None:
                flow = service.create_flow(
                    session, name=name, definition=wanted, now=now, description=description
                )
            else:
                current = (
                    session.get(FlowVersion, flow.current_version_id) if flow.current_version_id else None
                )
                if current is None or current.definition != wanted:
                    service.update_definition(session, flow.id, wanted, now)
            if flow.status != "live":
                service.set_status(session, flow.id, "live", now)
            ids[name] = flow.id
    return ids


class DemoFailed(Exception):
    """The demo could not run or did not reach the expected state; `message` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- settings -----------------------------------------------------------------------------------


def demo_settings(settings: Settings, *, once: bool, store_url: str) -> Settings:
    """The user's settings with seconds-long abandonment windows (those not set explicitly), and the
    demo's own address as the store's and winback's public URL."""
    update: dict[str, Any] = {
        name: windows[0] if once else windows[1]
        for name, windows in DEMO_WINDOWS.items()
        if name not in settings.model_fields_set
    }
    if "store_url" not in settings.model_fields_set:
        update["store_url"] = store_url
    if "public_url" not in settings.model_fields_set:
        update["public_url"] = store_url  # tracked links and unsubscribe pages work on the demo's port
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
    city: City
    night: bool = False  # lives where it is night now (their marketing SMS waits for the morning)
    phone: str | None = None  # E.164, when the shopper gave one
    sms_opt_in: bool = False
    signs_up: bool = False  # a bouncer who signed up for the newsletter (and gave an email)
    # A checkout abandoner who, once the SMS arrives, clicks its link and orders with the code: the
    # order (`coupon` is filled in with the code the flow made for them).
    comeback: tuple[Call, ...] = ()


PERSONAS = (
    ("bouncer", 0.22),
    ("searcher", 0.13),
    ("cart_abandoner", 0.15),
    ("checkout_abandoner", 0.20),
    ("buyer", 0.22),
    ("refunded_buyer", 0.08),
)


def _pick(options: tuple[City, ...], draw: float) -> City:
    return options[min(int(draw * len(options)), len(options) - 1)]


def plan_journey(
    rng: random.Random, shopper: int, *, run_tag: str, store_url: str, pace: float, places: Places
) -> Journey:
    """What one shopper does, as Segment calls. `pace` scales the pauses (seconds). The draws do
    not depend on `places`: the same seed plans the same shoppers whatever the time of day, only
    their cities differ."""
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
    night = rng.random() < NIGHT_SHARE
    city = _pick(places.night if night else places.day, rng.random())
    calls: list[Call] = []
    ids: dict[str, str | None] = {"anonymousId": anonymous_id, "userId": None}

    def message(number: int, path: str, **fields: Any) -> dict[str, Any]:
        context = {
            "ip": ip,
            "userAgent": agent,
            "timezone": city.timezone,  # as analytics.js sends it: the browser's zone
            "page": {"url": f"{store_url}{path}", "path": path},
            "library": {"name": "winback-demo", "version": "1"},
        }
        return {
            "messageId": f"{MESSAGE_PREFIX}{run_tag}-{shopper}-{number}",
            **{key: value for key, value in ids.items() if value},
            "context": context,
            **fields,
        }

    def call(kind: str, path: str, **fields: Any) -> None:
        number = len(calls)
        pause = round(rng.uniform(0.3, 1.0) * pace, 3) if number else 0.0
        calls.append(Call(kind, message(number, path, **fields), pause=pause))

    def view(product: shop.DemoProduct) -> None:
        path = f"/products/{product.slug()}"
        call("page", path, name=product.name, category="Product")
        call("track", path, event="Product Viewed", properties=product.properties(store_url))

    def done(**attributes: Any) -> Journey:
        return Journey(shopper, persona, tuple(calls), city, night, **attributes)

    first, last = rng.choice(shop.FIRST_NAMES), rng.choice(shop.LAST_NAMES)
    # Contacts are the run's own, like its ids: another run on the database meets new people (the
    # same ones again would be merged with their past selves, and capped or not welcomed twice).
    email = f"{first}.{last}.{shopper}.{run_tag}@example.com".lower().replace(" ", "").replace("'", "")
    phone_offset = zlib.crc32(run_tag.encode()) / 2**32
    collection = rng.choice(shop.COLLECTIONS)
    in_collection = [p for p in shop.CATALOG if collection in p.collections]
    call("page", "/", name="Home")
    if persona == "searcher":
        query = rng.choice(shop.SEARCH_TERMS)
        call("track", f"/search?q={query}", event="Products Searched", properties={"query": query})
        if rng.random() < 0.5:
            view(rng.choice(shop.CATALOG))
        return done()

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
        signs_up = rng.random() < 0.5
        if signs_up:  # the newsletter pop-up: an email address and an email opt-in
            call(
                "identify",
                "/",
                traits={"email": email, "first_name": first, "email_consent": "subscribed",
                        "consent_source": "demo:newsletter-popup",
                        "consent_evidence": {"form": "newsletter-popup"}},
            )  # fmt: skip
            call("track", "/", event="Signed Up", properties={"method": "newsletter-popup"})
        if rng.random() < 0.7:
            view(favourite)  # came back to it: enough interest for browse abandonment
        return done(signs_up=signs_up)

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
        return done()

    phone_draw = (rng.random() + phone_offset) % 1.0
    phone = city.phone(phone_draw) if rng.random() < 0.6 else None
    registered = rng.random() < 0.5
    if registered:
        ids["userId"] = f"demo-customer-{run_tag}-{shopper}"
    traits: dict[str, Any] = {"email": email, "first_name": first, "last_name": last}
    if phone:
        traits["phone"] = phone
    traits["address"] = city.address()
    if rng.random() < 0.55:
        traits["email_consent"] = "subscribed"
    sms_opt_in = phone is not None and rng.random() < 0.5
    if sms_opt_in:
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
    order_id = f"NW-{run_tag}-{1000 + shopper}"

    def order(number: int, pause: float, discount: Decimal) -> Call:
        shipping = Decimal("0") if value - discount >= 50 else Decimal("4.90")
        total = value - discount + shipping
        return Call(
            "track",
            message(
                number,
                "/checkout/thank-you",
                event="Order Completed",
                properties={**checkout, "order_id": order_id, "total": float(total),
                            "subtotal": float(value), "discount": float(discount), "shipping": float(shipping),
                            "products": products, "shipping_address": city.address()},
            ),
            pause=pause,
        )  # fmt: skip

    if persona == "checkout_abandoner":
        comeback: tuple[Call, ...] = ()
        comes_back = rng.random() < COMEBACK_SHARE  # drawn for all: the plan stays the same otherwise
        if sms_opt_in and not night and comes_back:
            discount = (value * DISCOUNT_PERCENT / 100).quantize(Decimal("0.01"))
            comeback = (order(len(calls), round(rng.uniform(0.3, 1.0) * pace, 3), discount),)
        return done(phone=phone, sms_opt_in=sms_opt_in, comeback=comeback)

    call(
        "track",
        "/checkout/payment",
        event="Payment Info Entered",
        properties={"checkout_id": checkout_id, "step": 2},
    )
    calls.append(order(len(calls), round(rng.uniform(0.3, 1.0) * pace, 3), Decimal("0")))
    if persona == "refunded_buyer":
        refund = basket[0].price * quantities[basket[0].product_id]
        call(
            "track",
            "/admin/refunds",
            event="Order Refunded",
            properties={"order_id": order_id, "refund_id": f"rf-{order_id}", "total": float(refund),
                        "currency": shop.CURRENCY},
        )  # fmt: skip
    return done(phone=phone, sms_opt_in=sms_opt_in)


def plan_scenario(
    seed: int, shoppers: int, *, run_tag: str, store_url: str, pace: float, places: Places
) -> list[Journey]:
    rng = random.Random(seed)
    return [
        plan_journey(rng, n, run_tag=run_tag, store_url=store_url, pace=pace, places=places)
        for n in range(1, shoppers + 1)
    ]


# --- the HTTP side ------------------------------------------------------------------------------


def add_demo_routes(app: FastAPI) -> None:
    """Placeholder product images at /demo/images/<product_id>.svg (the catalog's image_url), and
    the page checkout recovery links lead to."""

    def image(name: str) -> Response:
        product_id = name.removesuffix(".svg")
        svg = shop.placeholder_svg(shop.BY_ID.get(product_id), product_id)
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})

    app.add_api_route("/demo/images/{name}", image, methods=["GET"], include_in_schema=False)

    def recover(checkout_id: str) -> HTMLResponse:
        """Where a recovery link (after winback's tracked link) lands: the store's checkout page."""
        return HTMLResponse(
            f"<!doctype html><title>{shop.STORE_NAME}</title><h1>{shop.STORE_NAME}</h1>"
            f"<p>Your cart is back (checkout {checkout_id[:80]}). This is the demo store: nothing to buy here.</p>"
        )

    app.add_api_route("/checkout/{checkout_id}/recover", recover, methods=["GET"], include_in_schema=False)


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
            self.send(call.kind, call.message)

    def send(self, kind: str, message: dict[str, Any]) -> None:
        now = self.runtime.clock.now().isoformat()
        response = self.client.post(f"/v1/{kind}", json={**message, "timestamp": now, "sentAt": now})
        if response.status_code != 200:
            raise DemoFailed(
                f"the tracking API refused a {kind} call ({response.status_code}): {response.text}"
            )
        with self._lock:
            self.sent += 1

    def come_back(self, journey: Journey, link_code: str, discount_code: str) -> None:
        """Click the message's tracked link (as the shopper's phone would) and order with the code."""
        agent = journey.calls[0].message["context"]["userAgent"]
        response = self.client.get(
            f"/l/{link_code}", headers={"User-Agent": agent}, auth=None, follow_redirects=False
        )
        if response.status_code != 302:
            raise DemoFailed(
                f"the tracked link /l/{link_code} answered {response.status_code}: {response.text}"
            )
        for call in journey.comeback:
            if self.stop.wait(call.pause):
                return
            properties = {**call.message.get("properties", {}), "coupon": discount_code}
            self.send(call.kind, {**call.message, "properties": properties})

    def close(self) -> None:
        self.client.close()


LINK = re.compile(r"/l/([A-Za-z0-9_-]+)")


def comebacks_due(engine: Engine, waiting: list[Journey], sms_flow_id: int) -> list[tuple[Journey, str, str]]:
    """Those of `waiting` whose SMS has gone out, with its first tracked link's code and the
    discount code the flow made for them (read from the database, as the shopper's phone shows it)."""
    due: list[tuple[Journey, str, str]] = []
    phones = [journey.phone for journey in waiting if journey.phone]
    if not phones:
        return due
    with reading(engine) as session:
        sent = {
            message.to_address: message
            for message in session.scalars(
                select(Message).where(
                    Message.flow_id == sms_flow_id,
                    Message.to_address.in_(phones),
                    Message.sent_at.is_not(None),
                )
            )
        }
        for journey in waiting:
            message = sent.get(journey.phone)
            link = LINK.search(message.body or "") if message is not None else None
            if message is None or link is None:
                continue
            code = session.scalar(select(DiscountCode.code).where(DiscountCode.run_id == message.run_id))
            if code is not None:
                due.append((journey, link.group(1), code))
    return due


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
    active_runs: int = 0  # flow runs the worker has yet to step
    outbox_pending: int = 0  # messages flows queued that the pipeline has yet to take
    messages: Counter[tuple[str, str]] = field(default_factory=Counter)  # (channel, status) → count
    sent: Counter[str] = field(default_factory=Counter)  # channel → messages that went out
    skipped: Counter[str] = field(default_factory=Counter)  # why → count
    deferred: Counter[str] = field(default_factory=Counter)  # why → count
    discount_codes: int = 0
    discount_codes_used: int = 0
    flows: list[FlowFigures] = field(default_factory=list)

    @property
    def in_flight(self) -> int:
        """Messages queued, being sent or waiting for a retry (deferred ones wait for a time)."""
        return sum(
            n for (_, status), n in self.messages.items() if status in ("queued", "sending", "retrying")
        )

    @property
    def settled(self) -> bool:
        """Everything applied, and nothing left open that the worker still has to close or send."""
        return (
            self.pending_events == 0
            and self.checkouts["open"] == 0
            and self.open_carts_with_items == 0
            and self.open_sessions == 0
            and self.active_runs == 0
            and self.outbox_pending == 0
            and self.in_flight == 0
        )


@dataclass(frozen=True, slots=True)
class FlowFigures:
    """One flow's messages (messaging.reporting.flow_report)."""

    name: str
    status: str
    sent: int
    clicked: int
    converted: int
    revenue: Decimal


# Short words for the reasons the sending pipeline gives (messaging.policy); others are shown as given.
SKIP_REASONS = {
    "no SMS opt-in recorded": "no SMS opt-in",
    "no phone number on the profile": "no phone number",
    "no email address on the profile": "no email address",
}


def _reason(status: str, reason: str | None) -> str:
    if status == "deferred":
        return "quiet hours" if (reason or "").startswith("quiet hours") else "frequency cap"
    text = reason or "no reason given"
    if text.startswith("over the cap"):
        return "frequency cap"
    return SKIP_REASONS.get(text, text if len(text) <= 40 else f"{text[:39]}…")


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
        _summarise_messages(session, summary)
    return summary


def _summarise_messages(session: Session, summary: Summary) -> None:
    from winback.messaging.reporting import flow_report

    summary.active_runs = (
        session.scalar(select(func.count()).select_from(FlowRun).where(FlowRun.status == "active")) or 0
    )
    summary.outbox_pending = (
        session.scalar(select(func.count()).select_from(OutboxEntry).where(OutboxEntry.status == "pending"))
        or 0
    )
    for channel, status, reason, sent, count in session.execute(
        select(Message.channel, Message.status, Message.status_reason, Message.sent_at.is_not(None), func.count())
        .group_by(Message.channel, Message.status, Message.status_reason, Message.sent_at.is_not(None))
    ):  # fmt: skip
        summary.messages[(channel, status)] += count
        if sent:
            summary.sent[channel] += count
        elif status in ("skipped", "deferred"):
            (summary.skipped if status == "skipped" else summary.deferred)[_reason(status, reason)] += count
    summary.discount_codes = session.scalar(select(func.count()).select_from(DiscountCode)) or 0
    summary.discount_codes_used = (
        session.scalar(
            select(func.count()).select_from(DiscountCode).where(DiscountCode.used_at.is_not(None))
        )
        or 0
    )
    for flow in session.scalars(select(Flow).order_by(Flow.id)):
        totals = flow_report(session, flow.id)["totals"]
        summary.flows.append(
            FlowFigures(
                flow.name,
                flow.status,
                totals["sent"],
                totals["clicked"],
                totals["converted"],
                Decimal(totals["revenue"].get(shop.CURRENCY, "0")),
            )
        )


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
    lifecycle = {name: n for name, n in summary.derived.items() if not name.startswith("Message ")}
    derived = " · ".join(f"{count} {name}" for name, count in sorted(lifecycle.items())) or "none yet"
    table.add_row("derived events", derived)
    table.add_row("messages", _messages_line(summary))
    table.add_row("discount codes", f"{summary.discount_codes} made, {summary.discount_codes_used} used")
    for flow in summary.flows:
        paused = "" if flow.status == "live" else f" ({flow.status})"
        table.add_row(
            f"{flow.name}{paused}",
            f"{flow.sent} sent · {flow.clicked} clicked · {flow.converted} converted, "
            f"revenue {_money({shop.CURRENCY: flow.revenue})}",
        )
    return table


def _messages_line(summary: Summary) -> str:
    """e.g. "12 sent (8 sms, 4 email) · 3 skipped (2 no SMS opt-in, 1 no phone number) · 1 deferred
    (quiet hours)": sent by channel, skipped and deferred by why (the count left out when one why)."""

    def counted(counter: Counter[str], *, always: bool = False) -> str:
        if len(counter) == 1 and not always:
            return next(iter(counter))
        return ", ".join(
            f"{n} {what}" for what, n in sorted(counter.items(), key=lambda item: (-item[1], item[0]))
        )

    sent = sum(summary.sent.values())
    parts = [f"{sent} sent" + (f" ({counted(summary.sent, always=True)})" if sent else "")]
    for word, counter in (("skipped", summary.skipped), ("deferred", summary.deferred)):
        if counter:
            parts.append(f"{sum(counter.values())} {word} ({counted(counter)})")
    failed = sum(n for (_, status), n in summary.messages.items() if status == "failed")
    if failed:
        parts.append(f"{failed} failed")
    if summary.in_flight or summary.outbox_pending:
        parts.append(f"{summary.in_flight + summary.outbox_pending} on their way")
    return " · ".join(parts)


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
    flows = ensure_demo_flows(runtime.engine, now)
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
            console.print(
                f"live flows: {', '.join(flows)}; messages stay in winback (providers: SMS "
                f"{settings.sms_provider}, email {settings.email_provider}) — `winback messages list` shows them"
            )
            storefront = Storefront(base_url, key.secret, runtime, stop)
            scene = Scene(runtime, storefront, options, run_tag, base_url, flows[SMS_FLOW], console, stop)
            try:
                if options.once:
                    return _run_once(scene, out)
                _run_live(scene)
                return summarise(runtime.engine)
            finally:
                stop.set()
                storefront.close()
    finally:
        if options.once:
            apikeys.revoke_key(runtime.engine, key.id, runtime.clock.now())


@dataclass(frozen=True, slots=True)
class Scene:
    """What a demo run works with."""

    runtime: Runtime
    storefront: Storefront
    options: Options
    run_tag: str
    base_url: str
    sms_flow_id: int
    console: Console
    stop: threading.Event

    def places(self) -> Places:
        return places_at(self.runtime.clock.now(), self.runtime.settings)


def _settle(scene: Scene, out: Console, deadline: datetime) -> Summary:
    """Wait until the worker has applied, closed and sent everything (DemoFailed at the deadline)."""
    summary = summarise(scene.runtime.engine)
    while not summary.settled:
        if scene.runtime.clock.now() > deadline:
            out.print(render(summary, "winback demo (did not settle)"))
            raise DemoFailed(
                f"the worker did not settle within {ONCE_SETTLE_TIMEOUT:g} s: {summary.pending_events} events "
                f"unapplied, {summary.checkouts['open']} checkouts, {summary.open_carts_with_items} carts and "
                f"{summary.open_sessions} browse/search sessions still open, {summary.active_runs} flow runs "
                f"to step, {summary.outbox_pending + summary.in_flight} messages to send"
            )
        scene.stop.wait(0.25)
        summary = summarise(scene.runtime.engine)
    return summary


def _run_once(scene: Scene, out: Console) -> Summary:
    runtime, storefront, options, console = scene.runtime, scene.storefront, scene.options, scene.console
    places = scene.places()
    journeys = plan_scenario(
        options.seed,
        options.shoppers,
        run_tag=scene.run_tag,
        store_url=scene.base_url,
        pace=0.15,
        places=places,
    )
    personas = Counter(j.persona for j in journeys)
    console.print(
        f"{len(journeys)} shoppers: "
        + ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in sorted(personas.items()))
    )
    console.print(
        f"shoppers live where it is day ({', '.join(c.name for c in places.day)}) "
        f"or night ({', '.join(c.name for c in places.night)})"
    )
    with ThreadPoolExecutor(SENDER_THREADS, thread_name_prefix="shopper") as pool:
        for future in [pool.submit(storefront.walk, journey) for journey in journeys]:
            future.result()  # re-raises a refused call
    console.print(f"sent {storefront.sent} tracking calls; waiting for the worker, abandonment and messages…")
    deadline = runtime.clock.now() + timedelta(seconds=ONCE_SETTLE_TIMEOUT)
    summary = _settle(scene, out, deadline)
    due = comebacks_due(runtime.engine, [j for j in journeys if j.comeback], scene.sms_flow_id)
    if due:
        who = (
            "1 shopper clicks the link in their SMS and orders"
            if len(due) == 1
            else (f"{len(due)} shoppers click the link in their SMS and order")
        )
        console.print(f"{who} with the code…")
        with ThreadPoolExecutor(SENDER_THREADS, thread_name_prefix="shopper") as pool:
            for future in [pool.submit(storefront.come_back, *item) for item in due]:
                future.result()
        summary = _settle(scene, out, deadline)
    out.print(render(summary, f"{shop.STORE_NAME} — winback demo summary"))
    expected_abandoned = personas["checkout_abandoner"]
    if summary.orders == 0 or (
        expected_abandoned and summary.checkouts["abandoned"] + summary.checkouts["recovered"] == 0
    ):
        raise DemoFailed(
            f"the simulated traffic did not show up as expected: {summary.orders} orders and "
            f"{summary.checkouts['abandoned']} abandoned checkouts in the database"
        )
    expected_sms = sum(
        1 for j in journeys if j.persona == "checkout_abandoner" and j.sms_opt_in and not j.night
    )
    if expected_sms and not summary.sent["sms"]:
        raise DemoFailed(
            f"{expected_sms} shoppers who opted in to SMS abandoned a checkout, but no SMS was sent; "
            "`winback messages list` shows why"
        )
    return summary


def _run_live(scene: Scene) -> None:
    """New shoppers at `rate` per minute, a live summary every few seconds, until Ctrl-C."""
    runtime, storefront, options, console, stop = (
        scene.runtime, scene.storefront, scene.options, scene.console, scene.stop
    )  # fmt: skip
    rng = random.Random(options.seed)
    interval = 60.0 / max(options.rate, 0.1)
    failures: list[BaseException] = []
    waiting: dict[int, tuple[Journey, datetime]] = {}  # shopper → (journey with a comeback, when planned)

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
                    journey = plan_journey(
                        rng,
                        shopper,
                        run_tag=scene.run_tag,
                        store_url=scene.base_url,
                        pace=4.0,
                        places=scene.places(),
                    )
                    pool.submit(storefront.walk, journey).add_done_callback(done)
                    if journey.comeback:
                        waiting[shopper] = (journey, now)
                    next_shopper_at = now + timedelta(seconds=rng.expovariate(1 / interval))
                if now >= next_summary_at:
                    journeys = [journey for journey, _ in waiting.values()]
                    for journey, link, code in comebacks_due(runtime.engine, journeys, scene.sms_flow_id):
                        del waiting[journey.shopper]
                        pool.submit(storefront.come_back, journey, link, code).add_done_callback(done)
                    for number, (_, planned_at) in list(waiting.items()):
                        if now - planned_at > COMEBACK_PATIENCE:
                            del waiting[number]  # no SMS came (a cap, say): they do not come back
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
