"""Message engagement over HTTP on both databases: the admin message views, tracked links, the open
pixel, unsubscribe pages (and RFC 8058 one-click), Twilio status and inbound callbacks, bounces,
web push subscriptions and MMS media.

Messages are inserted directly (status "sent"), as the sending pipeline would have left them.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tests.conftest import START
from winback.db.engine import reading, transaction
from winback.db.models import (
    ConsentRecord,
    Customer,
    CustomerIdentity,
    Event,
    MediaAsset,
    Message,
    MessageEvent,
    PushSubscription,
    SecretValue,
    Suppression,
    TrackedLink,
)
from winback.kernel.clock import VirtualClock
from winback.messaging import engagement, links, secrets, tokens
from winback.messaging.channels import twilio
from winback.processing import processor
from winback.runtime import Runtime
from winback.settings import Settings

PUBLIC_URL = "https://shop.example/winback"
AUTH_TOKEN = "twilio-test-auth-token"
SHOP_NUMBER = "+15005550006"
SHOP_SHORT_CODE = "48737"  # Twilio leaves keyword replies on short codes to us
ANN_PHONE = "+14155550123"
CHANNELS_DIR = Path(engagement.__file__).parent / "channels"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        public_url=PUBLIC_URL,
        twilio_auth_token=AUTH_TOKEN,
        store_name="Tea & Co",
        store_support_email="help@tea.example",
    )


# --- helpers -------------------------------------------------------------------------------------


def add_customer(engine: Engine, **fields: Any) -> int:
    with transaction(engine) as session:
        customer = Customer(
            **{
                "first_seen_at": START,
                "last_seen_at": START,
                "created_at": START,
                "updated_at": START,
                "tags": [],
                "properties": {},
                **fields,
            }
        )
        session.add(customer)
        session.flush()
        for kind in ("user_id", "email", "phone"):
            if fields.get(kind):
                session.add(
                    CustomerIdentity(customer_id=customer.id, kind=kind, value=fields[kind], created_at=START)
                )
        return customer.id


def add_message(engine: Engine, **fields: Any) -> int:
    with transaction(engine) as session:
        message = Message(
            **{
                "channel": "email",
                "status": "sent",
                "transactional": False,
                "priority": 50,
                "attempts": 1,
                "media_urls": [],
                "created_at": START,
                "updated_at": START,
                "sent_at": START,
                **fields,
            }
        )
        session.add(message)
        session.flush()
        session.add(MessageEvent(message_id=message.id, status="sent", details={}, at=START))
        return message.id


def message_events(engine: Engine, message_id: int) -> list[tuple[str, str | None, dict[str, Any]]]:
    with Session(engine) as session:
        rows = session.scalars(
            sa.select(MessageEvent).where(MessageEvent.message_id == message_id).order_by(MessageEvent.id)
        )
        return [(row.status, row.reason, row.details) for row in rows]


def stream(engine: Engine, name: str) -> list[Event]:
    with Session(engine) as session:
        return list(session.scalars(sa.select(Event).where(Event.event == name).order_by(Event.id)))


def suppressions(engine: Engine) -> dict[tuple[str, str], str]:
    with Session(engine) as session:
        return {(s.channel, s.address): s.reason for s in session.scalars(sa.select(Suppression))}


def customer(engine: Engine, customer_id: int) -> Customer:
    with Session(engine) as session:
        row = session.get(Customer, customer_id)
        assert row is not None
        return row


def consent_records(engine: Engine, customer_id: int) -> list[ConsentRecord]:
    with Session(engine) as session:
        return list(
            session.scalars(
                sa.select(ConsentRecord)
                .where(ConsentRecord.customer_id == customer_id)
                .order_by(ConsentRecord.id)
            )
        )


def signing_key(engine: Engine) -> bytes:
    return secrets.link_signing_key(engine)


def twilio_post(client: TestClient, path: str, params: dict[str, str], *, token: str = AUTH_TOKEN) -> Any:
    signature = twilio.signature(PUBLIC_URL + path, params, token)
    return client.post(path, data=params, headers={"X-Twilio-Signature": signature})


def inbound(
    client: TestClient, body: str, *, sid: str, from_: str = ANN_PHONE, to: str = SHOP_SHORT_CODE
) -> Any:
    return twilio_post(
        client,
        "/webhooks/twilio/inbound",
        {
            "MessageSid": sid,
            "SmsSid": sid,
            "AccountSid": "AC123",
            "From": from_,
            "To": to,
            "Body": body,
        },
    )


def wait_for(path: Path, timeout_s: float = 0.0) -> bool:
    """Whether a file another engineer is writing has appeared."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)
    return True


# --- tokens and secrets (pure / small) -----------------------------------------------------------


def test_tokens_round_trip_and_refuse_tampering() -> None:
    key = b"k" * 32
    token = tokens.make_token(key, tokens.UNSUBSCRIBE, "c", 42, "sms")
    assert tokens.read_token(key, tokens.UNSUBSCRIBE, token) == ("c", "42", "sms")
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    with pytest.raises(tokens.InvalidToken, match="not a open token"):
        tokens.read_token(key, tokens.OPEN, token)  # made for another purpose
    with pytest.raises(tokens.InvalidToken, match="signature"):
        tokens.read_token(b"other key" * 4, tokens.UNSUBSCRIBE, token)
    payload, _, mac = token.partition(".")
    forged_payload = tokens.make_token(b"attacker", tokens.UNSUBSCRIBE, "c", 43, "sms").partition(".")[0]
    with pytest.raises(tokens.InvalidToken):
        tokens.read_token(key, tokens.UNSUBSCRIBE, f"{forged_payload}.{mac}")
    for broken in (
        "",
        "abc",
        f"{payload}.",
        f"{payload}.{mac[:-2]}",
        f"{payload}.{mac}!",
        f"{payload}%.{mac}",
    ):
        with pytest.raises(tokens.InvalidToken):
            tokens.read_token(key, tokens.UNSUBSCRIBE, broken)


def test_secrets_are_made_once_and_shared(engine: Engine) -> None:
    made: list[str] = []

    def make() -> str:
        value = f"secret-{len(made)}"
        made.append(value)
        return value

    results: list[str] = []

    def fetch() -> None:
        with transaction(engine) as session:
            results.append(secrets.get_or_create_secret(session, "test-secret", make))

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1  # whoever stored first, everyone uses that value
    assert secrets.get_or_create_secret(engine, "test-secret", make) == results[0]
    with Session(engine) as session:
        assert session.get(SecretValue, "test-secret").value == results[0]  # type: ignore[union-attr]
    # a rolled-back first store is not cached: the next caller stores (and sees) its own value
    with pytest.raises(RuntimeError), transaction(engine) as session:
        secrets.get_or_create_secret(session, "rolled-back", lambda: "first")
        raise RuntimeError
    assert secrets.get_or_create_secret(engine, "rolled-back", lambda: "second") == "second"
    assert signing_key(engine) == signing_key(engine) and len(signing_key(engine)) == 32


# --- admin: messages -----------------------------------------------------------------------------


def test_admin_lists_messages_with_filters_and_pages(admin_client: TestClient, engine: Engine) -> None:
    ann = add_customer(engine, email="ann@example.com")
    bob = add_customer(engine, email="bob@example.com")
    ids = [
        add_message(engine, customer_id=ann, flow_id=7, channel="email", to_address="ann@example.com"),
        add_message(engine, customer_id=ann, flow_id=8, channel="sms", to_address=ANN_PHONE),
        add_message(
            engine, customer_id=bob, flow_id=7, channel="email", status="failed", status_reason="bounced"
        ),
    ]
    everything = admin_client.get("/api/v1/messages").json()
    assert [m["id"] for m in everything["items"]] == ids[::-1] and everything["next_cursor"] is None
    assert "html" not in everything["items"][0]

    def listed(**params: Any) -> list[int]:
        response = admin_client.get("/api/v1/messages", params=params)
        assert response.status_code == 200, response.text
        return [m["id"] for m in response.json()["items"]]

    assert listed(customer_id=ann) == [ids[1], ids[0]]
    assert listed(flow_id=7) == [ids[2], ids[0]]
    assert listed(channel="sms") == [ids[1]]
    assert listed(status="failed") == [ids[2]]
    assert listed(flow_id=7, customer_id=ann) == [ids[0]]

    first = admin_client.get("/api/v1/messages", params={"limit": 2}).json()
    assert [m["id"] for m in first["items"]] == [ids[2], ids[1]]
    second = admin_client.get("/api/v1/messages", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert ([m["id"] for m in second["items"]], second["next_cursor"]) == ([ids[0]], None)

    bad = admin_client.get("/api/v1/messages", params={"channel": "pigeon"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "query.channel"
    assert (
        admin_client.get("/api/v1/messages", params={"cursor": "nope"}).json()["error"]["field"] == "cursor"
    )
    del admin_client.headers["Authorization"]
    assert admin_client.get("/api/v1/messages").status_code == 401


def test_admin_message_detail_says_why(admin_client: TestClient, engine: Engine) -> None:
    message_id = add_message(engine, channel="sms", status="sent", to_address=ANN_PHONE, body="Hi")
    with transaction(engine) as session:
        session.add_all(
            [
                MessageEvent(
                    message_id=message_id,
                    status="deferred",
                    reason="quiet hours",
                    details={"until": "09:00"},
                    at=START - timedelta(hours=1),
                ),
                MessageEvent(
                    message_id=message_id, status="delivered", details={}, at=START + timedelta(minutes=1)
                ),
            ]
        )
    detail = admin_client.get(f"/api/v1/messages/{message_id}").json()
    assert (detail["id"], detail["status"], detail["body"], detail["to_address"]) == (
        message_id,
        "sent",
        "Hi",
        ANN_PHONE,
    )
    assert [(e["status"], e["reason"], e["details"]) for e in detail["events"]] == [
        ("deferred", "quiet hours", {"until": "09:00"}),
        ("sent", None, {}),
        ("delivered", None, {}),
    ]
    missing = admin_client.get("/api/v1/messages/999999")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


# --- links and opens ----------------------------------------------------------------------------


def test_click_redirects_and_streams_one_event_per_link(client: TestClient, engine: Engine) -> None:
    ann = add_customer(engine, user_id="u-ann", email="ann@example.com")
    message_id = add_message(
        engine, customer_id=ann, flow_id=12, node_id="email-1", to_address="ann@example.com"
    )
    code = links.new_code(random.Random(5))
    with transaction(engine) as session:
        session.add(
            TrackedLink(
                code=code, message_id=message_id, url="https://tea.example/cart?x=1", created_at=START
            )
        )

    for _ in range(2):
        response = client.get(f"/l/{code}", headers={"User-Agent": "Phone"}, follow_redirects=False)
        assert response.status_code == 302
        assert response.headers["location"] == "https://tea.example/cart?x=1"

    # an email clicked without its pixel loading (images off) counts as opened, once
    assert [status for status, _, _ in message_events(engine, message_id)] == [
        "sent", "opened", "clicked", "clicked",
    ]  # fmt: skip
    assert message_events(engine, message_id)[1][2] == {"inferred_from": "click", "user_agent": "Phone"}
    assert message_events(engine, message_id)[2][2]["url"] == "https://tea.example/cart?x=1"
    with Session(engine) as session:
        message = session.get(Message, message_id)
        assert message is not None and (message.opened_at, message.clicked_at) == (START, START)
        assert session.scalar(sa.select(TrackedLink.clicks).where(TrackedLink.code == code)) == 2
    [opened] = stream(engine, "Message Opened")
    assert opened.properties["channel"] == "email"
    [clicked] = stream(engine, "Message Clicked")
    assert (clicked.user_id, clicked.customer_id, clicked.source) == ("u-ann", ann, "derived")
    assert clicked.properties["flow_id"] == "12"
    assert (clicked.properties["channel"], clicked.properties["url"]) == (
        "email",
        "https://tea.example/cart?x=1",
    )

    unknown = client.get("/l/zzzzzzzz", follow_redirects=False)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"


def test_a_click_infers_an_open_only_for_an_email_not_yet_opened(client: TestClient, engine: Engine) -> None:
    ann = add_customer(engine, user_id="u-ann", email="ann@example.com", phone=ANN_PHONE)
    opened_email = add_message(engine, customer_id=ann, to_address="ann@example.com", opened_at=START)
    sms = add_message(engine, customer_id=ann, channel="sms", to_address=ANN_PHONE)
    codes = {}
    with transaction(engine) as session:
        for number, message_id in enumerate((opened_email, sms)):
            codes[message_id] = links.new_code(random.Random(number))
            session.add(TrackedLink(code=codes[message_id], message_id=message_id, url="https://tea.example/",
                                    created_at=START))  # fmt: skip
    for code in codes.values():
        assert client.get(f"/l/{code}", follow_redirects=False).status_code == 302
    # an email already opened and a text message (which has no opens) get the click alone
    assert [s for s, _, _ in message_events(engine, opened_email)] == ["sent", "clicked"]
    assert [s for s, _, _ in message_events(engine, sms)] == ["sent", "clicked"]
    assert stream(engine, "Message Opened") == []


def test_open_pixel_records_opens_and_ignores_bad_tokens(client: TestClient, engine: Engine) -> None:
    ann = add_customer(engine, email="ann@example.com")
    message_id = add_message(engine, customer_id=ann, flow_id=3, to_address="ann@example.com")
    url = engagement.open_pixel_url(PUBLIC_URL, signing_key(engine), message_id)
    assert url.startswith(f"{PUBLIC_URL}/o/") and url.endswith(".gif")
    path = urlsplit(url).path.removeprefix("/winback")

    for _ in range(2):
        response = client.get(path, headers={"User-Agent": "Mail"})
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/gif"
        assert "no-store" in response.headers["cache-control"]
        assert response.content.startswith(b"GIF89a") and len(response.content) == 43

    assert [s for s, _, _ in message_events(engine, message_id)] == ["sent", "opened", "opened"]
    [opened] = stream(engine, "Message Opened")  # only the first open counts for segments
    assert (opened.anonymous_id, opened.properties["flow_id"]) == (f"winback-customer:{ann}", "3")
    with Session(engine) as session:
        assert session.get(Message, message_id).opened_at == START  # type: ignore[union-attr]

    token = path.removeprefix("/o/").removesuffix(".gif")
    other = tokens.make_token(signing_key(engine), tokens.OPEN, message_id + 1)
    for bad in (token[:-3] + "AAA", "garbage", other.partition(".")[0] + "." + token.partition(".")[2]):
        response = client.get(f"/o/{bad}.gif")
        assert response.status_code == 200 and response.headers["content-type"] == "image/gif"
    unsubscribe_token = engagement.unsubscribe_token(signing_key(engine), message_id=message_id)
    assert client.get(f"/o/{unsubscribe_token}.gif").status_code == 200  # another kind: nothing recorded
    assert len(message_events(engine, message_id)) == 3


# --- unsubscribe ---------------------------------------------------------------------------------


def test_one_click_unsubscribe_takes_effect_at_once(
    client: TestClient, engine: Engine, runtime: Runtime, clock: VirtualClock
) -> None:
    ann = add_customer(engine, user_id="u-ann", email="Ann@Example.com".lower(), email_consent="subscribed")
    message_id = add_message(engine, customer_id=ann, flow_id=4, to_address="ann@example.com")
    url = engagement.unsubscribe_url(PUBLIC_URL, signing_key(engine), message_id=message_id)
    path = urlsplit(url).path.removeprefix("/winback")

    # A link scanner (or the shopper) opening the page unsubscribes nobody
    page = client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Unsubscribe from Tea &amp; Co email messages?" in page.text
    assert '<form method="post">' in page.text  # posts back to the page's own URL
    assert suppressions(engine) == {}

    # The mail client's RFC 8058 one-click POST
    clock.advance(timedelta(minutes=5))
    response = client.post(
        path,
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "Gmail"},
    )
    assert (response.status_code, response.content) == (200, b"")
    # Then the address is suppressed right away, before any worker runs
    assert suppressions(engine) == {("email", "ann@example.com"): "unsubscribed"}
    assert message_events(engine, message_id)[-1][:2] == ("unsubscribed", "email:one-click")
    [unsubscribed] = stream(engine, "Message Unsubscribed")
    assert unsubscribed.properties["flow_id"] == "4"

    # And once the processor ran, the profile's consent is off, with its proof
    processor.process_pending(runtime)
    assert customer(engine, ann).email_consent == "unsubscribed"
    [record] = consent_records(engine, ann)
    assert (record.channel, record.status, record.source) == ("email", "unsubscribed", "email:one-click")
    assert record.evidence["method"] == "one-click"
    assert record.evidence["user_agent"] == "Gmail"
    assert record.evidence["sent_message_id"] == str(message_id)

    # A second POST (a retrying mail client) changes nothing more
    assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert len(stream(engine, "Message Unsubscribed")) == 1
    processor.process_pending(runtime)
    assert len(consent_records(engine, ann)) == 1


def test_unsubscribe_page_form_for_a_customer_and_channel(
    client: TestClient, engine: Engine, runtime: Runtime
) -> None:
    ann = add_customer(engine, phone=ANN_PHONE, sms_consent="subscribed")
    path = urlsplit(
        engagement.unsubscribe_url(PUBLIC_URL, signing_key(engine), customer_id=ann, channel="mms")
    ).path.removeprefix("/winback")
    assert "Tea &amp; Co SMS messages?" in client.get(path).text
    confirmation = client.post(path, data={"confirm": "yes"}, headers={"User-Agent": "Firefox"})
    assert confirmation.status_code == 200 and "You have been unsubscribed" in confirmation.text
    assert suppressions(engine) == {("sms", ANN_PHONE): "unsubscribed"}
    processor.process_pending(runtime)
    assert customer(engine, ann).sms_consent == "unsubscribed"
    [record] = consent_records(engine, ann)
    assert (record.source, record.evidence["method"]) == ("sms:unsubscribe-page", "unsubscribe-page")


def test_tampered_unsubscribe_links_are_refused(client: TestClient, engine: Engine) -> None:
    ann = add_customer(engine, email="ann@example.com")
    message_id = add_message(engine, customer_id=ann, to_address="ann@example.com")
    token = engagement.unsubscribe_token(signing_key(engine), message_id=message_id)
    forged = engagement.unsubscribe_token(b"x" * 32, message_id=message_id)
    for bad in (token[:-2] + ("AA" if not token.endswith("AA") else "BB"), forged, "nothing-here"):
        page = client.get(f"/u/{bad}")
        assert page.status_code == 400 and "This link is not valid" in page.text
        form = client.post(f"/u/{bad}", data={"confirm": "yes"})
        assert form.status_code == 400 and "not valid" in form.text
        one_click = client.post(f"/u/{bad}", data={"List-Unsubscribe": "One-Click"})
        assert one_click.status_code == 400
        assert one_click.json()["error"] == {
            "code": "invalid_input",
            "message": one_click.json()["error"]["message"],
            "field": "token",
        }
        assert "unsubscribe link is not valid" in one_click.json()["error"]["message"]
    pixel = tokens.make_token(signing_key(engine), tokens.OPEN, message_id)
    assert client.get(f"/u/{pixel}").status_code == 400  # an open token is not an unsubscribe token
    assert suppressions(engine) == {}


# --- Twilio --------------------------------------------------------------------------------------


def test_an_unreachable_handset_is_suppressed_only_after_three_failures_in_a_row(
    client: TestClient, engine: Engine
) -> None:
    ann = add_customer(engine, phone=ANN_PHONE)
    sids = [f"SM{number}" for number in range(6)]
    for sid in sids:
        add_message(engine, customer_id=ann, channel="sms", to_address=ANN_PHONE, provider_message_id=sid)

    def answer(sid: str, value: str, **extra: str) -> None:
        response = twilio_post(
            client, "/webhooks/twilio/status", {"MessageSid": sid, "MessageStatus": value, **extra}
        )
        assert response.status_code == 200

    # two unreachable failures, a delivery, two more: the phone was off for a while, no suppression
    for sid, value in zip(sids[:5], ["undelivered", "undelivered", "delivered", "undelivered", "undelivered"],
                          strict=True):  # fmt: skip
        answer(sid, value, **({"ErrorCode": "30003"} if value == "undelivered" else {}))
    assert suppressions(engine) == {}
    # a third unreachable failure in a row: the number is suppressed as invalid
    answer(sids[5], "undelivered", ErrorCode="30003")
    assert suppressions(engine) == {("sms", ANN_PHONE): "invalid"}


def test_twilio_status_callbacks(client: TestClient, engine: Engine) -> None:
    ann = add_customer(engine, phone=ANN_PHONE)
    delivered = add_message(
        engine,
        customer_id=ann,
        channel="sms",
        to_address=ANN_PHONE,
        provider="twilio",
        provider_message_id="SM1",
    )
    failing = add_message(
        engine, customer_id=ann, channel="sms", to_address="+14155550999", provider_message_id="SM2"
    )

    def status(sid: str, value: str, **extra: str) -> Any:
        return twilio_post(
            client, "/webhooks/twilio/status", {"MessageSid": sid, "MessageStatus": value, **extra}
        )

    assert status("SM1", "sent").json() == {"success": True, "known": True}  # already sent: no repeat
    assert status("SM1", "delivered").status_code == 200
    assert status("SM1", "sent").status_code == 200  # late and out of order: no regression
    assert status("SM1", "delivered").status_code == 200  # repeated
    with Session(engine) as session:
        row = session.get(Message, delivered)
        assert (row.status, row.delivered_at) == ("delivered", START)  # type: ignore[union-attr]
    assert [s for s, _, _ in message_events(engine, delivered)] == ["sent", "delivered"]
    assert len(stream(engine, "Message Delivered")) == 1

    assert status("SM2", "undelivered", ErrorCode="30006").status_code == 200
    with Session(engine) as session:
        row = session.get(Message, failing)
        assert (row.status, row.status_reason) == ("failed", "twilio undelivered (error 30006)")  # type: ignore[union-attr]
    assert suppressions(engine) == {("sms", "+14155550999"): "invalid"}

    assert status("SM-unknown", "delivered").json() == {"success": True, "known": False}

    # Unsigned, wrongly signed or signed for another URL: refused
    params = {"MessageSid": "SM1", "MessageStatus": "failed"}
    assert client.post("/webhooks/twilio/status", data=params).status_code == 403
    wrong = twilio.signature(PUBLIC_URL + "/webhooks/twilio/status", params, "another-token")
    refused = client.post("/webhooks/twilio/status", data=params, headers={"X-Twilio-Signature": wrong})
    assert refused.status_code == 403 and refused.json()["error"]["field"] == "X-Twilio-Signature"
    local = twilio.signature("http://testserver/webhooks/twilio/status", params, AUTH_TOKEN)
    assert (
        client.post("/webhooks/twilio/status", data=params, headers={"X-Twilio-Signature": local}).status_code
        == 403
    )
    tampered = twilio.signature(PUBLIC_URL + "/webhooks/twilio/status", params, AUTH_TOKEN)
    changed = {**params, "MessageStatus": "delivered"}
    assert (
        client.post(
            "/webhooks/twilio/status", data=changed, headers={"X-Twilio-Signature": tampered}
        ).status_code
        == 403
    )
    assert status("", "sent").status_code == 400


def test_keywords_to_a_long_code_are_answered_by_twilio_alone(
    client: TestClient, engine: Engine, runtime: Runtime
) -> None:
    add_customer(engine, user_id="u-ann", phone=ANN_PHONE, sms_consent="subscribed")
    # a STOP to our long code: Twilio replies itself, so winback records it and stays silent
    stop = inbound(client, "STOP", sid="SMlc1", to=SHOP_NUMBER)
    assert stop.text == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    assert suppressions(engine) == {("sms", ANN_PHONE): "unsubscribed"}
    assert inbound(client, "HELP", sid="SMlc2", to=SHOP_NUMBER).text.endswith("<Response/>")
    # with replies set to always, winback answers there too; with never, not even on a short code
    runtime.settings = runtime.settings.model_copy(update={"sms_keyword_replies": "always"})
    assert "<Message>" in inbound(client, "START", sid="SMlc3", to=SHOP_NUMBER).text
    runtime.settings = runtime.settings.model_copy(update={"sms_keyword_replies": "never"})
    assert inbound(client, "HELP", sid="SMlc4").text.endswith("<Response/>")


def test_inbound_stop_start_help_and_other_texts(
    client: TestClient, engine: Engine, runtime: Runtime
) -> None:
    ann = add_customer(engine, user_id="u-ann", phone=ANN_PHONE, sms_consent="subscribed")

    stop = inbound(client, "  Stop. ", sid="SMin1")
    assert stop.status_code == 200 and stop.headers["content-type"].startswith("application/xml")
    assert stop.text == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Message>You have been unsubscribed from Tea &amp; Co '
        "messages. Reply START to resubscribe.</Message></Response>"
    )
    assert suppressions(engine) == {("sms", ANN_PHONE): "unsubscribed"}
    processor.process_pending(runtime)
    assert customer(engine, ann).sms_consent == "unsubscribed"
    [record] = consent_records(engine, ann)
    assert (record.status, record.source) == ("unsubscribed", "sms:keyword")
    assert (record.evidence["inbound_message_sid"], record.evidence["body"]) == ("SMin1", "  Stop. ")
    assert (record.evidence["from"], record.evidence["to"]) == (ANN_PHONE, SHOP_SHORT_CODE)

    start = inbound(client, "START", sid="SMin2")
    assert "resubscribed to Tea &amp; Co messages. Reply STOP to opt out." in start.text
    assert suppressions(engine) == {}
    processor.process_pending(runtime)
    assert customer(engine, ann).sms_consent == "subscribed"
    assert [(r.status, r.evidence["inbound_message_sid"]) for r in consent_records(engine, ann)] == [
        ("unsubscribed", "SMin1"),
        ("subscribed", "SMin2"),
    ]

    help_reply = inbound(client, "help", sid="SMin3")
    assert (
        "<Message>Tea &amp; Co: help at help@tea.example. Reply STOP to opt out.</Message>" in help_reply.text
    )

    other = inbound(client, "Is the green tea back in stock? <3", sid="SMin4")
    assert other.text == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    [received] = stream(engine, "SMS Received")
    assert (received.customer_id, received.user_id) == (ann, "u-ann")
    assert received.properties["body"] == "Is the green tea back in stock? <3"

    # A number we do not know: STOP still suppresses it; anything else is not stored
    unknown = inbound(client, "STOP", sid="SMin5", from_="+14155550777")
    assert "unsubscribed" in unknown.text
    assert suppressions(engine) == {("sms", "+14155550777"): "unsubscribed"}
    assert inbound(client, "hello?", sid="SMin6", from_="+14155550777").text.endswith("<Response/>")
    assert len(stream(engine, "SMS Received")) == 1

    # A bounce-like suppression is not lifted by START
    with transaction(engine) as session:
        engagement.suppress(session, channel="sms", address="+14155550777", reason="invalid", now=START)
    inbound(client, "start", sid="SMin7", from_="+14155550777")
    assert suppressions(engine) == {("sms", "+14155550777"): "invalid"}

    unsigned = client.post(
        "/webhooks/twilio/inbound", data={"MessageSid": "SMx", "From": ANN_PHONE, "Body": "STOP"}
    )
    assert unsigned.status_code == 403 and unsigned.json()["error"]["code"] == "forbidden"


def test_inbound_help_text_from_settings(runtime: Runtime, engine: Engine) -> None:
    configured = runtime.settings.model_copy(
        update={"sms_help_text": "Tea & Co: call 555-0100. STOP to end."}
    )
    with TestClient(
        __import__("winback.web.app", fromlist=["create_app"]).create_app(
            Runtime(settings=configured, engine=engine, clock=runtime.clock)
        )
    ) as client:
        reply = inbound(client, "INFO", sid="SMh1")
    assert "<Message>Tea &amp; Co: call 555-0100. STOP to end.</Message>" in reply.text


def test_twilio_callbacks_refused_without_an_auth_token(runtime: Runtime, engine: Engine) -> None:
    from winback.web.app import create_app

    unconfigured = runtime.settings.model_copy(update={"twilio_auth_token": None})
    with TestClient(create_app(Runtime(settings=unconfigured, engine=engine, clock=runtime.clock))) as client:
        response = twilio_post(
            client, "/webhooks/twilio/status", {"MessageSid": "SM1", "MessageStatus": "sent"}
        )
    assert response.status_code == 403
    assert "WINBACK_TWILIO_AUTH_TOKEN" in response.json()["error"]["message"]


# --- bounces -------------------------------------------------------------------------------------


def test_bounces_and_complaints(admin_client: TestClient, engine: Engine, runtime: Runtime) -> None:
    ann = add_customer(engine, email="ann@example.com", email_consent="subscribed")
    bob = add_customer(engine, email="bob@example.com", email_consent="subscribed")
    to_ann = add_message(engine, customer_id=ann, to_address="ann@example.com")
    older_to_bob = add_message(engine, customer_id=bob, to_address="bob@example.com")
    to_bob = add_message(engine, customer_id=bob, to_address="bob@example.com")

    bounce = admin_client.post(
        "/api/v1/messages/bounces",
        json={"email": "Ann@Example.com", "type": "bounce", "reason": "550 no such user"},
    )
    assert bounce.status_code == 200, bounce.text
    assert bounce.json() == {"email": "ann@example.com", "suppression": "bounced", "message_id": to_ann}
    with Session(engine) as session:
        row = session.get(Message, to_ann)
        assert (row.status, row.status_reason) == ("failed", "550 no such user")  # type: ignore[union-attr]

    complaint = admin_client.post(
        "/api/v1/messages/bounces",
        json={"email": "bob@example.com", "type": "complaint", "message_id": older_to_bob},
    )
    assert complaint.json()["message_id"] == older_to_bob
    assert message_events(engine, older_to_bob)[-1][:2] == ("complained", "spam complaint")
    assert message_events(engine, to_bob)[-1][0] == "sent"
    assert suppressions(engine) == {
        ("email", "ann@example.com"): "bounced",
        ("email", "bob@example.com"): "complained",
    }
    processor.process_pending(runtime)
    assert (customer(engine, bob).email_consent, customer(engine, ann).email_consent) == (
        "unsubscribed",
        "subscribed",
    )
    [record] = consent_records(engine, bob)
    assert record.source == "email:complaint"

    # a bounce for an address never messaged still suppresses it
    assert admin_client.post(
        "/api/v1/messages/bounces", json={"email": "new@example.com", "type": "bounce"}
    ).json() == {"email": "new@example.com", "suppression": "bounced", "message_id": None}

    def error(body: dict[str, Any]) -> tuple[int, str]:
        response = admin_client.post("/api/v1/messages/bounces", json=body)
        return response.status_code, response.json()["error"]["field"]

    assert error({"email": "ann@example.com", "type": "soft"}) == (422, "type")
    assert error({"type": "bounce"}) == (422, "email")
    assert error({"email": "not-an-address", "type": "bounce"}) == (400, "email")
    assert error({"email": "ann@example.com", "type": "bounce", "message_id": 99999}) == (404, "message_id")
    assert error({"email": "ann@example.com", "type": "bounce", "colour": "red"}) == (422, "colour")


# --- web push -------------------------------------------------------------------------------------


def subscription(n: int = 1) -> dict[str, Any]:
    return {
        "endpoint": f"https://push.example/send/abc{n}",
        "expirationTime": None,
        "keys": {
            "p256dh": f"BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM{n}",
            "auth": "tBHItJI5svbpez7KI4CCXg",
        },
    }


def test_push_subscribe_links_profile_and_records_consent(
    client: TestClient, engine: Engine, runtime: Runtime, write_key: str
) -> None:
    known = add_customer(engine, user_id="u-ann")

    response = client.post(
        "/v1/push/subscribe",
        json={"subscription": subscription(1), "userId": "u-ann"},
        auth=(write_key, ""),
        headers={"User-Agent": "Chrome"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["customer_id"] == known

    # a visitor the processor has not seen yet: stored now, linked once the processor resolved them
    anonymous = client.post(
        "/v1/push/subscribe",
        json={"subscription": subscription(2), "anonymousId": "anon-7", "writeKey": write_key},
    )
    assert anonymous.status_code == 200 and anonymous.json()["customer_id"] is None
    # the same browser subscribing again updates its row
    again = client.post(
        "/v1/push/subscribe",
        json={"subscription": subscription(2), "anonymousId": "anon-7"},
        auth=(write_key, ""),
    )
    assert again.json()["subscription_id"] == anonymous.json()["subscription_id"]
    with Session(engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(PushSubscription)) == 2

    processor.process_pending(runtime)
    assert customer(engine, known).push_consent == "subscribed"
    [record] = consent_records(engine, known)
    assert (record.source, record.evidence["endpoint"]) == (
        "web:push-subscribe",
        "https://push.example/send/abc1",
    )
    with Session(engine) as session:
        visitor = session.scalar(
            sa.select(CustomerIdentity.customer_id).where(CustomerIdentity.value == "anon-7")
        )
        assert visitor is not None and session.get(Customer, visitor).push_consent == "subscribed"  # type: ignore[union-attr]
    with transaction(engine) as session:
        assert [s.endpoint for s in engagement.push_subscriptions_for(session, visitor)] == [
            "https://push.example/send/abc2"
        ]
        assert [s.endpoint for s in engagement.push_subscriptions_for(session, known)] == [
            "https://push.example/send/abc1"
        ]
    with Session(engine) as session:
        assert (
            session.scalar(
                sa.select(PushSubscription.customer_id).where(PushSubscription.endpoint.endswith("abc2"))
            )
            == visitor
        )

    removed = client.post(
        "/v1/push/unsubscribe", json={"endpoint": "https://push.example/send/abc2"}, auth=(write_key, "")
    )
    assert removed.json() == {"success": True, "removed": True}
    assert client.post(
        "/v1/push/unsubscribe", json={"endpoint": "https://push.example/send/abc2"}, auth=(write_key, "")
    ).json() == {"success": True, "removed": False}


def test_push_subscribe_refuses_bad_requests(client: TestClient, write_key: str, engine: Engine) -> None:
    no_key = client.post("/v1/push/subscribe", json={"subscription": subscription(), "userId": "u"})
    assert no_key.status_code == 401 and no_key.json()["error"]["field"] == "writeKey"

    def field(body: dict[str, Any]) -> tuple[int, str]:
        response = client.post("/v1/push/subscribe", json=body, auth=(write_key, ""))
        return response.status_code, response.json()["error"]["field"]

    assert field({"subscription": subscription()}) == (400, "userId")
    assert field({"userId": "u"}) == (400, "subscription")
    assert field({"userId": "u", "subscription": {**subscription(), "endpoint": "http://x"}}) == (
        400,
        "subscription.endpoint",
    )
    assert field(
        {"userId": "u", "subscription": {"endpoint": "https://p.example/1", "keys": {"p256dh": "x"}}}
    ) == (
        400,
        "subscription.keys.auth",
    )
    assert field({"userId": ["u"], "subscription": subscription()}) == (400, "userId")
    assert (
        client.post("/v1/push/unsubscribe", json={}, auth=(write_key, "")).json()["error"]["field"]
        == "endpoint"
    )
    with Session(engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(PushSubscription)) == 0


def test_vapid_public_key_and_service_worker(client: TestClient, engine: Engine) -> None:
    if not wait_for(CHANNELS_DIR / "webpush.py", 0):
        pytest.skip("winback/messaging/channels/webpush.py is not written yet")
    first = client.get("/api/v1/push/vapid-public-key")
    assert first.status_code == 200
    key = first.json()["public_key"]
    assert isinstance(key, str) and len(key) >= 80 and "=" not in key
    assert client.get("/api/v1/push/vapid-public-key").json() == {"public_key": key}
    assert client.get("/v1/push/vapid-public-key").json() == {"public_key": key}
    with reading(engine) as session:
        assert session.get(SecretValue, "vapid") is not None
    assert secrets.vapid_keys(engine)[1] == key

    if not wait_for(CHANNELS_DIR / "push_service_worker.js", 0):
        pytest.skip("push_service_worker.js is not written yet")
    script = client.get("/push/sw.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("application/javascript")
    assert script.headers["service-worker-allowed"] == "/"
    assert script.text == (CHANNELS_DIR / "push_service_worker.js").read_text(encoding="utf-8")


# --- media ---------------------------------------------------------------------------------------


def test_media_is_served_with_long_cache(client: TestClient, engine: Engine) -> None:
    with transaction(engine) as session:
        session.add(
            MediaAsset(token="grid-abc", content_type="image/png", data=b"\x89PNG fake", created_at=START)
        )
    response = client.get("/media/grid-abc")
    assert (response.status_code, response.content) == (200, b"\x89PNG fake")
    assert response.headers["content-type"] == "image/png"
    assert "max-age=31536000" in response.headers["cache-control"]
    missing = client.get("/media/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


@pytest.fixture(autouse=True)
def _fresh_secret_cache() -> Iterator[None]:
    yield
    secrets.forget_cached()
