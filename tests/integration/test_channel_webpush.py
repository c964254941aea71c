"""The Web Push channel against a local push service that verifies VAPID and decrypts (tests/peers)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import winback.messaging.channels.webpush as webpush
from tests.peers.http_server import refused_url
from tests.peers.push_service import Browser, PushService
from winback.messaging.channels.base import OutgoingMessage
from winback.messaging.channels.webpush import (
    MAX_PLAINTEXT,
    WebPushChannel,
    b64url_decode,
    generate_vapid_keys,
    vapid_public_key,
)

SUBJECT = "mailto:support@shop.example"


@pytest.fixture(scope="module")
def keys() -> webpush.VapidKeys:
    return generate_vapid_keys()


@pytest.fixture
def service() -> Iterator[PushService]:
    with PushService() as running:
        yield running


@pytest.fixture
def channel(keys: webpush.VapidKeys) -> Iterator[WebPushChannel]:
    sender = WebPushChannel(keys.private_key_pem, SUBJECT, ttl_s=3600, timeout_s=2.0)
    yield sender
    sender.close()


def push(browser: Browser | dict[str, Any], message_id: int = 42, **changes: Any) -> OutgoingMessage:
    subscription = browser.subscription_json() if isinstance(browser, Browser) else browser
    fields: dict[str, Any] = {
        "message_id": message_id,
        "channel": "push",
        "to": subscription.get("endpoint", ""),
        "subject": "Dein Warenkorb wartet 🛒",
        "body": "Größe 42 ist noch da – 10 % mit CODE10",
        "data": {"subscription": subscription, "url": "https://shop.example/cart?utm_source=winback"},
        "idempotency_key": f"run-1:node-{message_id}",
    }
    fields.update(changes)
    return OutgoingMessage(**fields)


# --- keys ---


def test_generated_vapid_keys_round_trip(keys: webpush.VapidKeys) -> None:
    private = serialization.load_pem_private_key(keys.private_key_pem.encode(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP256R1)
    point = b64url_decode(keys.public_key_b64url)
    assert len(point) == 65 and point[0] == 0x04  # uncompressed, as applicationServerKey needs
    assert "=" not in keys.public_key_b64url
    derived = private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert point == derived
    assert vapid_public_key(keys.private_key_pem) == keys.public_key_b64url
    assert generate_vapid_keys().public_key_b64url != keys.public_key_b64url


# --- sending ---


def test_push_arrives_decrypted_with_exactly_the_payload(
    service: PushService, channel: WebPushChannel, keys: webpush.VapidKeys
) -> None:
    browser = service.subscribe()
    before = time.time()
    outcome = channel.send(push(browser))

    assert outcome.status == "sent", (outcome.error, service.rejections)
    (received,) = service.received
    assert received.json() == {
        "title": "Dein Warenkorb wartet 🛒",
        "body": "Größe 42 ist noch da – 10 % mit CODE10",
        "url": "https://shop.example/cart?utm_source=winback",
        "message_id": 42,
    }
    assert outcome.provider_message_id is not None
    assert outcome.provider_message_id.startswith(service.origin + "/m/")
    assert received.headers["ttl"] == "3600"
    assert received.headers["urgency"] == "normal"
    assert received.headers["content-encoding"] == "aes128gcm"
    # VAPID: verified by the service; here its claims
    assert received.vapid_public_key == keys.public_key_b64url
    assert received.claims["aud"] == service.origin
    assert received.claims["sub"] == SUBJECT
    assert before < received.claims["exp"] <= time.time() + 24 * 3600


def test_every_push_is_encrypted_afresh_and_the_token_is_reused(
    service: PushService, channel: WebPushChannel
) -> None:
    browser = service.subscribe()
    assert channel.send(push(browser, message_id=1)).status == "sent"
    assert channel.send(push(browser, message_id=2)).status == "sent"
    first, second = service.received
    assert first.body[:16] != second.body[:16]  # a new salt (and sender key) each time
    assert [p.json()["message_id"] for p in service.received] == [1, 2]
    assert first.headers["authorization"] == second.headers["authorization"]
    assert channel.sender(push(browser)) == "127.0.0.1"


def test_a_push_without_url_or_title_still_has_every_key(
    service: PushService, channel: WebPushChannel
) -> None:
    browser = service.subscribe()
    message = push(browser, subject=None, data={"subscription": browser.subscription_json()})
    assert channel.send(message).status == "sent"
    assert service.received[0].json() == {
        "title": "",
        "body": "Größe 42 ist noch da – 10 % mit CODE10",
        "url": None,
        "message_id": 42,
    }


def test_gone_subscription_fails_as_an_invalid_address(service: PushService, channel: WebPushChannel) -> None:
    browser = service.subscribe()
    service.gone(browser)
    outcome = channel.send(push(browser))
    assert outcome.status == "failed" and outcome.address_invalid
    assert outcome.provider_status == "410"
    unknown = service.subscribe().subscription_json() | {"endpoint": service.origin + "/wpush/v2/never-was"}
    outcome = channel.send(push(unknown))
    assert outcome.status == "failed" and outcome.address_invalid and outcome.provider_status == "404"


def test_rate_limit_and_server_errors_are_retried(service: PushService, channel: WebPushChannel) -> None:
    browser = service.subscribe()
    service.http.fail_next(1, status=429, retry_after=30)
    limited = channel.send(push(browser))
    assert limited.status == "retry" and limited.retry_after_s == 30.0
    service.http.fail_next(1, status=503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    unavailable = channel.send(push(browser))
    assert unavailable.status == "retry" and unavailable.retry_after_s == 0.0
    assert channel.send(push(browser)).status == "sent"


def test_refused_vapid_token_fails(service: PushService, keys: webpush.VapidKeys) -> None:
    two_days_ago = time.time() - 2 * 24 * 3600
    stale = WebPushChannel(keys.private_key_pem, SUBJECT, timeout_s=2.0, now=lambda: two_days_ago)
    outcome = stale.send(push(service.subscribe()))
    stale.close()
    assert outcome.status == "failed" and not outcome.address_invalid
    assert outcome.provider_status == "403"
    assert "VAPID" in (outcome.error or "")
    assert service.rejections and "exp" in service.rejections[0]


def test_payload_too_large(service: PushService, channel: WebPushChannel) -> None:
    browser = service.subscribe()
    outcome = channel.send(push(browser, body="x" * MAX_PLAINTEXT))
    assert outcome.status == "failed" and "too large" in (outcome.error or "")
    assert service.http.requests == []  # refused before sending
    service.http.fail_next(1, status=413)
    outcome = channel.send(push(browser))
    assert outcome.status == "failed" and outcome.provider_status == "413" and not outcome.address_invalid


def test_largest_payload_that_fits_is_accepted(service: PushService, channel: WebPushChannel) -> None:
    browser = service.subscribe()
    overhead = len(webpush.push_payload(push(browser, body="")))
    outcome = channel.send(push(browser, body="x" * (MAX_PLAINTEXT - overhead)))
    assert outcome.status == "sent", service.rejections
    assert len(service.received[0].body) == 4096


def test_unreachable_push_service_is_retried(channel: WebPushChannel) -> None:
    subscription = {
        "endpoint": refused_url("/wpush/v2/abc"),
        "keys": {
            "p256dh": webpush.public_key_b64url(ec.generate_private_key(ec.SECP256R1()).public_key()),
            "auth": webpush.b64url_encode(b"0123456789abcdef"),
        },
    }
    outcome = channel.send(push(subscription))
    assert outcome.status == "retry" and "cannot reach" in (outcome.error or "")


@pytest.mark.parametrize("how", ["hang", "drop"])
def test_no_answer_after_sending_is_unknown(service: PushService, keys: webpush.VapidKeys, how: str) -> None:
    browser = service.subscribe()
    if how == "hang":
        service.http.hang_next(seconds=1.0)
    else:
        service.http.drop_next()
    impatient = WebPushChannel(keys.private_key_pem, SUBJECT, timeout_s=0.3)
    outcome = impatient.send(push(browser))
    impatient.close()
    assert outcome.status == "unknown", outcome.error


@pytest.mark.parametrize(
    "subscription",
    [
        None,
        {"endpoint": "https://push.example/x"},
        {"endpoint": "ftp://push.example/x", "keys": {"p256dh": "AAAA", "auth": "AAAA"}},
        {"endpoint": "https://push.example/x", "keys": {"p256dh": "BAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}},
    ],
)
def test_unusable_subscription_fails_as_an_invalid_address(
    channel: WebPushChannel, subscription: dict[str, Any] | None
) -> None:
    message = push({}, data={"subscription": subscription}, to="https://push.example/x")
    outcome = channel.send(message)
    assert outcome.status == "failed" and outcome.address_invalid
    assert "invalid push subscription" in (outcome.error or "")


# --- configuration ---


def test_check_validates_the_key_and_subject_without_network(keys: webpush.VapidKeys) -> None:
    good = WebPushChannel(keys.private_key_pem, SUBJECT).check()
    assert good.ok and good.provider == "webpush" and SUBJECT in good.detail

    https_subject = WebPushChannel(keys.private_key_pem, "https://shop.example/contact").check()
    assert https_subject.ok

    no_subject = WebPushChannel(keys.private_key_pem, None)
    assert not no_subject.check().ok and "WINBACK_VAPID_SUBJECT" in no_subject.check().detail
    assert no_subject.send(push({"endpoint": "https://push.example/x"})).status == "failed"

    assert not WebPushChannel(keys.private_key_pem, "support@shop.example").check().ok
    assert not WebPushChannel("not a key", SUBJECT).check().ok

    rsa_like = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    wrong_curve = WebPushChannel(rsa_like.decode(), SUBJECT).check()
    assert not wrong_curve.ok and "P-256" in wrong_curve.detail


# --- the service worker script ---

WORKER = Path(webpush.__file__).with_name("push_service_worker.js")

HARNESS = r"""
const fs = require('fs');
const [script, windowsJson, payloadJson] = process.argv.slice(1);
const listeners = {};
const calls = { shown: [], opened: [], focused: [], navigated: [] };
const windows = JSON.parse(windowsJson).map((url) => ({
  url,
  focus() { calls.focused.push(url); return Promise.resolve(this); },
  navigate(target) { calls.navigated.push(target); return Promise.resolve(this); },
}));
const self = {
  location: { origin: 'https://shop.example' },
  addEventListener: (name, fn) => { listeners[name] = fn; },
  skipWaiting: () => {},
  registration: {
    showNotification: (title, options) => { calls.shown.push({ title, options }); return Promise.resolve(); },
  },
  clients: {
    claim: () => Promise.resolve(),
    matchAll: () => Promise.resolve(windows),
    openWindow: (url) => { calls.opened.push(url); return Promise.resolve(null); },
  },
};
new Function('self', fs.readFileSync(script, 'utf8'))(self);
let pending = [];
const waitUntil = (promise) => pending.push(promise);
listeners.push({ data: { json: () => JSON.parse(payloadJson), text: () => payloadJson }, waitUntil });
Promise.all(pending).then(() => {
  pending = [];
  const notification = { data: calls.shown[0].options.data, close: () => {} };
  listeners.notificationclick({ notification, waitUntil });
  return Promise.all(pending);
}).then(() => console.log(JSON.stringify(calls)));
"""


def run_worker(windows: list[str], payload: str) -> dict[str, Any]:
    result = subprocess.run(
        ["node", "-e", HARNESS, "--", str(WORKER), json.dumps(windows), payload],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    calls: dict[str, Any] = json.loads(result.stdout)
    return calls


PAYLOAD = json.dumps({"title": "Dein Warenkorb", "body": "10 % mit CODE10", "url": "/cart", "message_id": 7})


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize(
    ("windows", "focused", "navigated", "opened"),
    [
        ([], [], [], ["https://shop.example/cart"]),
        (["https://shop.example/", "https://shop.example/cart"], ["https://shop.example/cart"], [], []),
        (
            ["https://other.example/", "https://shop.example/p/1"],
            ["https://shop.example/p/1"],
            ["https://shop.example/cart"],
            [],
        ),
    ],
)
def test_service_worker_shows_the_push_and_opens_its_url(
    windows: list[str], focused: list[str], navigated: list[str], opened: list[str]
) -> None:
    calls = run_worker(windows, PAYLOAD)
    assert calls["shown"] == [
        {
            "title": "Dein Warenkorb",
            "options": {"body": "10 % mit CODE10", "data": {"url": "/cart", "message_id": 7}},
        }
    ]
    assert (calls["focused"], calls["navigated"], calls["opened"]) == (focused, navigated, opened)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_service_worker_shows_something_for_an_unreadable_push() -> None:
    calls = run_worker([], "not json")
    assert calls["shown"] == [
        {"title": "New message", "options": {"body": "not json", "data": {"url": None, "message_id": None}}}
    ]
    assert calls["opened"] == ["https://shop.example/"]
