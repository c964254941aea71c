"""The abandoned-cart flow end to end, over real HTTP on loopback, on SQLite and PostgreSQL:
Shopify webhooks in → the checkout abandoned → the flow's codes and MMS with the cart grid out
through a Twilio-speaking server → the carrier's delivery callback → the shopper's click → their
order → the conversion and revenue credited to the message, and the flow ended."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
import uvicorn
from PIL import Image
from sqlalchemy.orm import Session

from tests.peers.http_server import HTTPPeer, RecordedRequest, Reply
from tests.peers.twilio import FakeTwilio
from winback.commerce import abandonment
from winback.db import migrate
from winback.db.engine import transaction
from winback.db.models import DiscountCode, Event, FlowRun, Message, MessageEvent
from winback.flows import engine as flow_engine
from winback.flows import library, service
from winback.kernel.clock import VirtualClock
from winback.messaging import reporting
from winback.messaging.pipeline import Sender
from winback.processing.processor import process_pending
from winback.runtime import Runtime
from winback.settings import Settings
from winback.web.app import create_app

SECRET = "shpss_e2e_secret"
START = datetime.fromisoformat("2026-03-02T17:00:00+00:00")  # 09:00 in San Francisco


def _png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (400, 400), colour).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class Store:
    runtime: Runtime
    clock: VirtualClock
    url: str  # where winback listens (its public URL)
    twilio: FakeTwilio
    images: HTTPPeer

    def webhook(self, topic: str, payload: dict[str, Any], webhook_id: str) -> None:
        body = orjson.dumps(payload)
        signature = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
        response = httpx.post(
            f"{self.url}/webhooks/shopify",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Shopify-Topic": topic,
                "X-Shopify-Webhook-Id": webhook_id,
                "X-Shopify-Shop-Domain": "shop.myshopify.com",
                "X-Shopify-Hmac-Sha256": signature,
            },
        )
        assert response.status_code == 200, response.text


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    images = {"/boots.png": _png("brown"), "/hat.png": _png("navy")}
    with (
        FakeTwilio() as twilio,
        HTTPPeer(lambda request: _image(images, request), name="cdn") as cdn,
        socket.socket() as sock,
    ):
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        clock = VirtualClock(START)
        settings = Settings(
            database_url=database_url,
            shopify_webhook_secret=SECRET,
            public_url=url,
            store_name="Boot Barn",
            store_url="https://shop.example.com",
            **twilio.settings(),
        )
        runtime = Runtime.from_settings(settings, clock=clock)
        migrate.upgrade(runtime.engine)
        server = uvicorn.Server(uvicorn.Config(create_app(runtime), log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "winback did not start"
        try:
            yield Store(runtime, clock, url, twilio, cdn)
        finally:
            server.should_exit = True
            thread.join(10)
            runtime.engine.dispose()


def _image(images: dict[str, bytes], request: RecordedRequest) -> Reply:
    data = images.get(request.path)
    return Reply(200, data, {"Content-Type": "image/png"}) if data else Reply(404, b"no such image")


def _product(product_id: int, variant_id: int, title: str, price: str, image_url: str) -> dict[str, Any]:
    return {
        "id": product_id,
        "title": title,
        "handle": title.lower(),
        "status": "active",
        "product_type": "Shoes",
        "updated_at": "2026-03-01T10:00:00Z",
        "variants": [{"id": variant_id, "title": "Default", "price": price, "sku": f"SKU-{variant_id}"}],
        "image": {"id": product_id, "src": image_url},
        "images": [{"id": product_id, "src": image_url}],
    }


CUSTOMER = {
    "id": 555,
    "email": "ann@example.com",
    "first_name": "Ann",
    "last_name": "Lee",
    "phone": "+14155550123",
}
LINES = [
    {"product_id": 11, "variant_id": 111, "title": "Boots", "quantity": 1, "price": "180.00"},
    {"product_id": 12, "variant_id": 121, "title": "Hat", "quantity": 1, "price": "40.00"},
]


def _checkout(updated_at: str) -> dict[str, Any]:
    return {
        "id": 9001,
        "token": "ck-1",
        "cart_token": "cart-1",
        "email": "ann@example.com",
        "phone": "+14155550123",
        "buyer_accepts_marketing": True,
        "buyer_accepts_sms_marketing": True,
        "created_at": "2026-03-02T16:55:00Z",
        "updated_at": updated_at,
        "completed_at": None,
        "currency": "USD",
        "subtotal_price": "220.00",
        "total_price": "220.00",
        "total_tax": "0.00",
        "total_discounts": "0.00",
        "discount_codes": [],
        "abandoned_checkout_url": "https://shop.example.com/checkouts/ck-1/recover",
        "line_items": LINES,
        "billing_address": {"city": "San Francisco", "country_code": "US", "province_code": "CA"},
        "customer": CUSTOMER,
    }


def _order(
    order_id: int, *, created_at: str, checkout_token: str | None, total: str, codes: list[str]
) -> dict[str, Any]:
    return {
        "id": order_id,
        "name": f"#{order_id}",
        "email": "ann@example.com",
        "checkout_token": checkout_token,
        "created_at": created_at,
        "processed_at": created_at,
        "updated_at": created_at,
        "currency": "USD",
        "financial_status": "paid",
        "subtotal_price": total,
        "total_price": total,
        "total_tax": "0.00",
        "total_discounts": "0.00",
        "discount_codes": [{"code": code, "amount": "5.00", "type": "fixed_amount"} for code in codes],
        "line_items": LINES,
        "customer": CUSTOMER,
    }


def _work(store: Store, sender: Sender) -> None:
    """What a worker pass does, in order."""
    process_pending(store.runtime)
    flow_engine.step_due_runs(store.runtime)
    sender.run()
    process_pending(store.runtime)


def test_abandoned_checkout_to_mms_click_order_and_revenue(store: Store) -> None:
    runtime, clock = store.runtime, store.clock
    # the merchant's catalog (with images) and a returning customer's first order
    store.webhook(
        "products/create", _product(11, 111, "Boots", "180.00", f"{store.images.url}/boots.png"), "w-p1"
    )
    store.webhook("products/create", _product(12, 121, "Hat", "40.00", f"{store.images.url}/hat.png"), "w-p2")
    store.webhook(
        "orders/create",
        _order(7001, created_at="2026-02-01T12:00:00Z", checkout_token=None, total="90.00", codes=[]),
        "w-o0",
    )
    # the ready abandoned-cart flow: high value from one order (so this customer gets the MMS)
    definition = library.render("abandoned-cart", high_value_min_spent=50, high_value_min_orders=1)
    with transaction(runtime.engine) as session:
        flow = service.create_flow(
            session, name="cart", definition=definition.model_dump(mode="json"), now=clock.now()
        )
        service.set_status(session, flow.id, "live", clock.now())
        flow_id = flow.id
    sender = Sender(runtime)

    # given a checkout the shopper leaves
    store.webhook("checkouts/create", _checkout("2026-03-02T16:58:00Z"), "w-c1")
    _work(store, sender)
    clock.advance(timedelta(minutes=61))
    assert abandonment.sweep(runtime).total >= 1
    _work(store, sender)
    # when the hour's delay has passed, the codes are made and the MMS goes out through Twilio
    clock.advance(timedelta(hours=1))
    _work(store, sender)

    [mms] = store.twilio.messages
    assert mms.to == "+14155550123"
    assert len(mms.media_urls) == 1 and mms.media_urls[0].startswith(f"{store.url}/media/")
    grid = httpx.get(mms.media_urls[0])  # what the carrier fetches
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(grid.content)).size[0] > 300  # a grid of the two product images
    assert {request.path for request in store.images.requests} == {"/boots.png", "/hat.png"}
    with Session(runtime.engine) as session:
        codes = {code.node_id: code.code for code in session.scalars(sa.select(DiscountCode))}
        message = session.scalars(sa.select(Message)).one()
    assert set(codes) == {"free_shipping", "percent_off"}
    assert codes["free_shipping"] in mms.body and codes["percent_off"] in mms.body
    assert mms.body.startswith("Ann, your cart at Boot Barn is waiting.")
    assert message.status == "sent" and message.provider_message_id == mms.sid
    assert message.channel == "mms" and message.flow_id == flow_id

    # the carrier reports delivery (a signed callback to winback's public URL)
    assert store.twilio.deliver(mms.sid, "delivered").status_code == 200
    # and the shopper taps the link: it leads back to their saved checkout
    link = next(word for word in mms.body.split() if word.startswith(f"{store.url}/l/"))
    click = httpx.get(link, follow_redirects=False)
    assert click.status_code in (302, 307)
    assert click.headers["location"] == "https://shop.example.com/checkouts/ck-1/recover"
    clock.advance(timedelta(minutes=30))
    # then they order with the code
    store.webhook(
        "orders/create",
        _order(
            7002,
            created_at="2026-03-02T19:31:00Z",
            checkout_token="ck-1",
            total="209.00",
            codes=[codes["percent_off"]],
        ),
        "w-o1",
    )
    _work(store, sender)

    with Session(runtime.engine) as session:
        message, thanks = session.scalars(sa.select(Message).order_by(Message.id)).all()
        history = [
            e.status
            for e in session.scalars(
                sa.select(MessageEvent).where(MessageEvent.message_id == message.id).order_by(MessageEvent.id)
            )
        ]
        run = session.scalars(sa.select(FlowRun)).one()
        streamed = {e.event for e in session.scalars(sa.select(Event).where(Event.event.like("Message %")))}
        used = session.scalars(sa.select(DiscountCode).where(DiscountCode.code == codes["percent_off"])).one()
        report = reporting.flow_report(session, flow_id)
    assert message.status == "delivered" and message.clicked_at is not None
    assert history == ["queued", "sending", "sent", "delivered", "clicked", "converted"]
    assert streamed >= {"Message Sent", "Message Delivered", "Message Clicked", "Message Converted"}
    assert used.used_at is not None
    # the order answered the flow's wait: a thank-you instead of the stronger reminder, and the end
    assert (thanks.node_id, thanks.channel, thanks.status) == ("thanks", "sms", "sent")
    assert thanks.body is not None and thanks.body.startswith("Thank you for your order, Ann!")
    assert run.status == "completed"
    assert [m.body for m in store.twilio.messages][1] == thanks.body
    totals = report["totals"]
    assert (totals["sent"], totals["delivered"], totals["clicked"], totals["converted"]) == (2, 1, 1, 1)
    assert totals["revenue"] == {"USD": "209.00"}
    [node] = [row for row in report["nodes"] if row["node_id"] == "mms"]
    assert node["converted"] == 1 and node["revenue"] == {"USD": "209.00"}
    sender.close()
