"""The HTTP channel adapters against local stand-ins of their providers (tests/peers), loopback only.

Adapters get a 2 s timeout (never reached when a peer answers; generous for a loaded CI machine);
the timeout cases use 0.3 s against a peer that holds its answer back 2 s (released at teardown).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from email.utils import formatdate

import httpx
import pytest

from tests.peers.http_server import HTTPPeer, Reply, refused_url
from tests.peers.receivers import FakeMetaGraph, SlackReceiver, WebhookReceiver, expected_signature
from tests.peers.twilio import FakeTwilio, twilio_signature
from winback.messaging.channels.base import Channel, OutgoingMessage
from winback.messaging.channels.local import ConsoleChannel, OutboxChannel
from winback.messaging.channels.meta import (
    MetaAudienceChannel,
    hashed_payload,
    normalise_email,
    normalise_phone,
)
from winback.messaging.channels.slack import SlackChannel
from winback.messaging.channels.twilio import TwilioChannel, signature, verify_signature
from winback.messaging.channels.webhook import WebhookChannel, parse_retry_after, sign, verify
from winback.settings import Settings

TIMEOUT = 2.0
SHORT = 0.3  # for the cases that must time out
HANG = 2.0
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z


def sms(to: str = "+14155550100", **changes: object) -> OutgoingMessage:
    message = OutgoingMessage(
        message_id=17,
        channel="sms",
        to=to,
        body="Your cart misses you: https://shop.example/c/abc",
        idempotency_key="msg-17",
        status_callback_url="https://winback.example/webhooks/twilio/status",
    )
    return replace(message, **changes)  # type: ignore[arg-type]


# --- Twilio --------------------------------------------------------------------------------------


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def twilio_channel(twilio: FakeTwilio) -> Iterator[TwilioChannel]:
    channel = TwilioChannel.from_settings(Settings(**twilio.settings()), timeout_s=TIMEOUT)
    yield channel
    channel.close()


def test_adapters_satisfy_the_channel_protocol(twilio_channel: TwilioChannel) -> None:
    adapters: list[Channel] = [
        twilio_channel,
        SlackChannel(None),
        WebhookChannel(),
        MetaAudienceChannel(None),
        OutboxChannel("sms"),
        ConsoleChannel("sms"),
    ]
    assert [adapter.provider for adapter in adapters] == [
        "twilio",
        "slack",
        "http",
        "meta",
        "outbox",
        "console",
    ]
    for adapter in adapters:
        adapter.close()


def test_twilio_sends_an_sms(twilio: FakeTwilio, twilio_channel: TwilioChannel) -> None:
    outcome = twilio_channel.send(sms(media_urls=("https://shop.example/ignored.jpg",)))

    assert outcome.status == "sent"
    assert outcome.provider_message_id is not None and outcome.provider_message_id.startswith("SM")
    assert outcome.provider_status == "queued"
    [message] = twilio.messages
    assert message.sid == outcome.provider_message_id
    assert (message.to, message.from_, message.body) == ("+14155550100", twilio.from_number, sms().body)
    assert message.status_callback == "https://winback.example/webhooks/twilio/status"
    assert message.media_urls == []  # an SMS carries no media even when the message has some
    assert twilio_channel.sender(sms()) == twilio.from_number
    request = twilio.requests[0]
    assert request.path == f"/2010-04-01/Accounts/{twilio.account_sid}/Messages.json"
    assert request.header("User-Agent") == "winback/0.1.0"


def test_twilio_mms_repeats_media_url(twilio: FakeTwilio, twilio_channel: TwilioChannel) -> None:
    images = ("https://winback.example/m/1.jpg", "https://winback.example/m/2.png")
    outcome = twilio_channel.send(sms(channel="mms", media_urls=images, body=""))

    assert outcome.status == "sent"
    assert twilio.requests[0].form()["MediaUrl"] == list(images)
    assert "Body" not in twilio.requests[0].form()
    assert twilio.messages[0].media_urls == list(images)


def test_twilio_messaging_service_is_the_sender(twilio: FakeTwilio) -> None:
    service = "MG" + "1" * 32
    channel = TwilioChannel.from_settings(
        Settings(**twilio.settings(twilio_from_number=None, twilio_messaging_service_sid=service)),
        timeout_s=TIMEOUT,
    )
    outcome = channel.send(sms())
    channel.close()

    assert (outcome.status, outcome.provider_status) == ("sent", "accepted")
    assert twilio.messages[0].messaging_service_sid == service and twilio.messages[0].from_ is None
    assert channel.sender(sms()) == service


@pytest.mark.parametrize(
    ("number", "code", "address_invalid"),
    [
        ("+15005550001", 21211, True),  # not a valid number
        ("+15005550004", 21610, True),  # replied STOP
        ("+15005550009", 21614, True),  # not a mobile
        ("+15005550002", 21612, False),  # cannot route from this sender: configuration, keep the number
        ("+15005550003", 21408, False),  # no permission for that region: the account's settings
    ],
)
def test_twilio_refusals_of_the_number(
    twilio: FakeTwilio, twilio_channel: TwilioChannel, number: str, code: int, address_invalid: bool
) -> None:
    outcome = twilio_channel.send(sms(to=number))

    assert outcome.status == "failed"
    assert outcome.address_invalid is address_invalid
    assert outcome.details["code"] == code and str(code) in (outcome.error or "")
    assert twilio.messages == []


def test_twilio_bad_credentials_fail(twilio: FakeTwilio) -> None:
    channel = TwilioChannel.from_settings(
        Settings(**twilio.settings(twilio_auth_token="wrong")), timeout_s=TIMEOUT
    )
    outcome = channel.send(sms())
    status = channel.check()
    channel.close()

    assert outcome.status == "failed" and not outcome.address_invalid
    assert outcome.error == "Twilio 401 (20003): Authenticate"
    assert not status.ok and status.detail == "Twilio refused the credentials (401): Authenticate"


def test_twilio_rate_limit_retries_after(twilio: FakeTwilio, twilio_channel: TwilioChannel) -> None:
    twilio.fail_next(1, status=429, retry_after=7)
    outcome = twilio_channel.send(sms())

    assert (outcome.status, outcome.retry_after_s) == ("retry", 7.0)
    assert outcome.details["code"] == 20429


def test_twilio_server_error_retries_then_sends(twilio: FakeTwilio, twilio_channel: TwilioChannel) -> None:
    twilio.fail_next(1, status=500)
    first = twilio_channel.send(sms())
    second = twilio_channel.send(sms())

    assert (first.status, first.retry_after_s) == ("retry", None)
    assert second.status == "sent" and len(twilio.messages) == 1


def test_twilio_timeout_after_sending_is_unknown(twilio: FakeTwilio) -> None:
    channel = TwilioChannel.from_settings(Settings(**twilio.settings()), timeout_s=SHORT)
    twilio.hang_next(seconds=HANG)
    outcome = channel.send(sms())
    channel.close()

    assert outcome.status == "unknown" and "ReadTimeout" in (outcome.error or "")
    assert len(twilio.messages) == 1  # Twilio had it: sending again blindly would text twice


def test_twilio_connection_refused_retries() -> None:
    channel = TwilioChannel(
        "AC" + "0" * 32, "token", from_number="+15005550006", base_url=refused_url(), timeout_s=TIMEOUT
    )
    outcome = channel.send(sms())
    status = channel.check()
    channel.close()

    assert outcome.status == "retry" and "could not be reached" in (outcome.error or "")
    assert not status.ok and "could not be reached" in status.detail


def test_twilio_check(twilio: FakeTwilio, twilio_channel: TwilioChannel) -> None:
    status = twilio_channel.check()

    assert status.ok and status.provider == "twilio"
    assert "Winback test account" in status.detail and twilio.from_number in status.detail
    assert twilio.requests[-1].method == "GET"
    assert twilio.requests[-1].path == f"/2010-04-01/Accounts/{twilio.account_sid}.json"


def test_twilio_check_refuses_a_suspended_account() -> None:
    with FakeTwilio(account_status="suspended") as fake:
        channel = TwilioChannel.from_settings(Settings(**fake.settings()), timeout_s=TIMEOUT)
        status = channel.check()
        channel.close()
    assert not status.ok and "suspended" in status.detail


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"twilio_account_sid": None}, "TWILIO_ACCOUNT_SID is not set (WINBACK_TWILIO_ACCOUNT_SID)"),
        ({"twilio_auth_token": None}, "TWILIO_AUTH_TOKEN is not set (WINBACK_TWILIO_AUTH_TOKEN)"),
        ({"twilio_from_number": None}, "no sender: set TWILIO_FROM_NUMBER"),
        ({"twilio_account_sid": "SK123"}, "TWILIO_ACCOUNT_SID must start with 'AC'"),
    ],
)
def test_twilio_incomplete_configuration(twilio: FakeTwilio, changes: dict[str, object], detail: str) -> None:
    channel = TwilioChannel.from_settings(Settings(**twilio.settings(**changes)), timeout_s=TIMEOUT)
    status = channel.check()
    outcome = channel.send(sms())
    channel.close()

    assert not status.ok and status.detail.startswith(detail)
    assert outcome.status == "failed" and detail in (outcome.error or "")
    assert twilio.requests == []


# --- Twilio request signatures -------------------------------------------------------------------

# The worked example from Twilio's security documentation.
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
DOC_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_twilio_signature_known_example() -> None:
    assert signature(DOC_URL, DOC_PARAMS, "12345") == DOC_SIGNATURE
    assert verify_signature(DOC_URL, DOC_PARAMS, DOC_SIGNATURE, "12345")
    assert twilio_signature(DOC_URL, DOC_PARAMS, "12345") == DOC_SIGNATURE  # the fake agrees


@pytest.mark.parametrize(
    ("url", "params", "token", "header"),
    [
        (DOC_URL, {**DOC_PARAMS, "Digits": "1235"}, "12345", DOC_SIGNATURE),  # a value changed
        (DOC_URL, {**DOC_PARAMS, "Extra": "1"}, "12345", DOC_SIGNATURE),  # a parameter added
        (DOC_URL.replace("foo=1", "foo=2"), DOC_PARAMS, "12345", DOC_SIGNATURE),  # the URL changed
        (DOC_URL, DOC_PARAMS, "54321", DOC_SIGNATURE),  # another token
        (DOC_URL, DOC_PARAMS, "12345", "1" + DOC_SIGNATURE[1:]),  # the signature changed
        (DOC_URL, DOC_PARAMS, "12345", ""),
    ],
)
def test_twilio_signature_tampered(url: str, params: dict[str, str], token: str, header: str) -> None:
    assert not verify_signature(url, params, header, token)


def test_twilio_signature_repeated_parameters_and_default_port() -> None:
    params = {"MediaUrl": ["https://b.example/2.jpg", "https://a.example/1.jpg"], "To": "+1415"}
    url = "https://winback.example/hooks/twilio"
    expected = twilio_signature(url, params, "tok")

    assert signature(url, params, "tok") == expected
    assert verify_signature("https://winback.example:443/hooks/twilio", params, expected, "tok")
    assert not verify_signature(url, {**params, "MediaUrl": ["https://a.example/1.jpg"]}, expected, "tok")


def _form_params(form: dict[str, list[str]]) -> dict[str, str | list[str]]:
    return {name: values[0] if len(values) == 1 else values for name, values in form.items()}


def test_status_callback_is_signed(twilio: FakeTwilio, twilio_channel: TwilioChannel) -> None:
    with HTTPPeer(lambda request: Reply(204)) as app:
        callback = app.url + "/webhooks/twilio/status?account=main"
        outcome = twilio_channel.send(sms(status_callback_url=callback))
        assert outcome.provider_message_id is not None
        answer = twilio.deliver(outcome.provider_message_id, "undelivered", error_code=30003)

        assert answer.status_code == 204
        [request] = app.requests
    params = _form_params(request.form())
    assert params["MessageSid"] == outcome.provider_message_id
    assert (params["MessageStatus"], params["ErrorCode"], params["To"]) == (
        "undelivered",
        "30003",
        "+14155550100",
    )
    header = request.header("X-Twilio-Signature") or ""
    assert verify_signature(callback, params, header, twilio.auth_token)
    assert not verify_signature(callback, {**params, "MessageStatus": "delivered"}, header, twilio.auth_token)
    assert twilio.message(outcome.provider_message_id).status == "undelivered"


def test_inbound_message_is_signed(twilio: FakeTwilio) -> None:
    with HTTPPeer(lambda request: Reply(200, "<Response/>")) as app:
        url = app.url + "/webhooks/twilio/inbound"
        twilio.send_inbound(
            url, from_="+14155550100", to=twilio.from_number, body="STOP", media_urls=["https://m/1"]
        )
        [request] = app.requests
    params = _form_params(request.form())
    assert (params["From"], params["To"], params["Body"], params["NumMedia"]) == (
        "+14155550100",
        twilio.from_number,
        "STOP",
        "1",
    )
    assert str(params["MessageSid"]).startswith("SM") and params["AccountSid"] == twilio.account_sid
    assert verify_signature(url, params, request.header("X-Twilio-Signature") or "", twilio.auth_token)


# --- Slack ---------------------------------------------------------------------------------------


@pytest.fixture
def slack() -> Iterator[SlackReceiver]:
    with SlackReceiver() as receiver:
        yield receiver


@pytest.fixture
def slack_channel(slack: SlackReceiver) -> Iterator[SlackChannel]:
    channel = SlackChannel.from_settings(Settings(slack_webhook_url=slack.webhook_url), timeout_s=TIMEOUT)
    yield channel
    channel.close()


def slack_message(text: str = "Order #1001 refunded: $80.00") -> OutgoingMessage:
    return OutgoingMessage(message_id=5, channel="slack", to="", body=text, idempotency_key="msg-5")


def test_slack_posts_text(slack: SlackReceiver, slack_channel: SlackChannel) -> None:
    outcome = slack_channel.send(slack_message())

    assert (outcome.status, outcome.provider_status) == ("sent", "ok")
    assert slack.messages == [{"text": "Order #1001 refunded: $80.00", "unfurl_links": False}]
    sender = slack_channel.sender(slack_message())
    assert sender.startswith("hook-") and "XXXX" not in sender  # the URL is a secret


@pytest.mark.parametrize(
    ("state", "status", "name"), [("revoked", 403, "invalid_token"), ("archived", 410, "channel_is_archived")]
)
def test_slack_refusals_fail(
    slack: SlackReceiver, slack_channel: SlackChannel, state: str, status: int, name: str
) -> None:
    slack.state = state
    outcome = slack_channel.send(slack_message())
    check = slack_channel.check()

    assert outcome.status == "failed" and outcome.error == f"Slack {status}: {name}"
    assert not check.ok and name in check.detail


def test_slack_unknown_hook_fails() -> None:
    with SlackReceiver() as receiver:
        channel = SlackChannel(receiver.server.url + "/services/T1/B1/gone", timeout_s=TIMEOUT)
        outcome = channel.send(slack_message())
        channel.close()
    assert outcome.status == "failed" and outcome.error == "Slack 404: no_service"


def test_slack_rate_limit_and_outages_retry(slack: SlackReceiver, slack_channel: SlackChannel) -> None:
    slack.fail_next(1, status=429, retry_after=30, body="rate_limited")
    slack.fail_next(1, status=503)
    limited = slack_channel.send(slack_message())
    down = slack_channel.send(slack_message())

    assert (limited.status, limited.retry_after_s, limited.error) == (
        "retry",
        30.0,
        "Slack 429: rate_limited",
    )
    assert down.status == "retry"
    assert slack.messages == []


def test_slack_timeout_is_unknown_and_refused_is_retry(slack: SlackReceiver) -> None:
    slack.hang_next(seconds=HANG)
    hung = SlackChannel(slack.webhook_url, timeout_s=SHORT)
    assert hung.send(slack_message()).status == "unknown"
    hung.close()
    refused = SlackChannel(refused_url("/services/T/B/X"), timeout_s=TIMEOUT)
    assert refused.send(slack_message()).status == "retry"
    refused.close()


def test_slack_check(slack: SlackReceiver, slack_channel: SlackChannel) -> None:
    status = slack_channel.check()

    assert status.ok and status.detail == "the Slack webhook exists"
    assert slack.messages == []  # the probe posts nothing
    missing = SlackChannel.from_settings(Settings(slack_webhook_url=None)).check()
    assert not missing.ok and missing.detail == "SLACK_WEBHOOK_URL is not set (WINBACK_SLACK_WEBHOOK_URL)"


# --- generic webhooks ----------------------------------------------------------------------------

PAYLOAD = {"event": "order.created", "id": 42}


def hook_message(url: str, **changes: object) -> OutgoingMessage:
    message = OutgoingMessage(
        message_id=9, channel="webhook", to=url, data={"payload": PAYLOAD}, idempotency_key="run-3:node-7"
    )
    return replace(message, **changes)  # type: ignore[arg-type]


def test_webhook_signature_known_example() -> None:
    body = json.dumps(PAYLOAD, separators=(",", ":")).encode()
    known = "sha256=6e39c3cf5aea2d5b78e2c0b4b4fbc6e191c725d2cb113472a36c3f7c40b65c3d"

    assert sign(body, str(NOW), "whsec_test") == known == expected_signature(body, str(NOW), "whsec_test")
    assert verify(body, str(NOW), known, "whsec_test", now=NOW + 10)
    assert not verify(body + b" ", str(NOW), known, "whsec_test", now=NOW)  # body tampered
    assert not verify(body, str(NOW + 1), known, "whsec_test", now=NOW)  # timestamp tampered
    assert not verify(body, str(NOW), known, "other", now=NOW)  # another secret
    assert not verify(body, str(NOW), known, "whsec_test", now=NOW + 301)  # too old: a replay
    assert verify(body, str(NOW), known, "whsec_test", now=NOW + 301, tolerance_s=600)
    assert not verify(body, "yesterday", known, "whsec_test", now=NOW)
    assert not verify(body, str(NOW), known.removeprefix("sha256="), "whsec_test", now=NOW)


def test_webhook_is_signed_and_verified_by_the_receiver() -> None:
    with WebhookReceiver(secret="whsec_test", clock=lambda: NOW + 5) as receiver:
        channel = WebhookChannel.from_settings(
            Settings(webhook_signing_secret="whsec_test", webhook_timeout_s=TIMEOUT), clock=lambda: NOW
        )
        first = channel.send(hook_message(receiver.url))
        again = channel.send(hook_message(receiver.url))  # a retry of the same message
        channel.close()

    assert first.status == "sent" and again.status == "sent"
    delivery = receiver.deliveries[0]
    assert delivery.signature_valid is True and delivery.payload == PAYLOAD
    assert (delivery.timestamp, delivery.idempotency_key, delivery.user_agent) == (
        str(NOW),
        "run-3:node-7",
        "winback/0.1.0",
    )
    assert verify(delivery.body, str(delivery.timestamp), str(delivery.signature), "whsec_test", now=NOW)
    assert receiver.deliveries[1].duplicate and receiver.accepted == [PAYLOAD]
    assert receiver.requests[0].header("Content-Type") == "application/json"


def test_webhook_without_secret_is_unsigned_and_a_signing_receiver_refuses_it() -> None:
    channel = WebhookChannel(timeout_s=TIMEOUT)
    with WebhookReceiver() as open_receiver, WebhookReceiver(secret="whsec_test") as strict:
        sent = channel.send(hook_message(open_receiver.url))
        refused = channel.send(hook_message(strict.url))
    status = channel.check()
    channel.close()

    assert sent.status == "sent" and open_receiver.requests[0].header("X-Winback-Signature") is None
    assert refused.status == "failed" and refused.error is not None and "401" in refused.error
    assert status.ok and "WINBACK_WEBHOOK_SIGNING_SECRET is not set" in status.detail


@pytest.mark.parametrize(
    ("reply", "status", "retry_after"),
    [
        (Reply(202, ""), "sent", None),
        (Reply(408, "slow"), "retry", None),
        (Reply(429, "slow down", {"Retry-After": "12"}), "retry", 12.0),
        (Reply(503, "maintenance"), "retry", None),
        (Reply(400, "bad"), "failed", None),
        (Reply(404, "gone"), "failed", None),
        (Reply(302, "", {"Location": "https://elsewhere.example/"}), "failed", None),
    ],
)
def test_webhook_answers(reply: Reply, status: str, retry_after: float | None) -> None:
    with HTTPPeer(lambda request: reply) as peer:
        channel = WebhookChannel(timeout_s=TIMEOUT)
        outcome = channel.send(hook_message(peer.url + "/hook"))
        channel.close()
    assert (outcome.status, outcome.retry_after_s) == (status, retry_after)
    assert outcome.details["http_status"] == reply.status
    assert not outcome.address_invalid


def test_webhook_transport_failures() -> None:
    channel = WebhookChannel(timeout_s=SHORT)
    with HTTPPeer() as peer:
        peer.hang_next(seconds=HANG)
        hung = channel.send(hook_message(peer.url + "/hook"))
        peer.drop_next()
        dropped = channel.send(hook_message(peer.url + "/hook"))
    refused = channel.send(hook_message(refused_url("/hook")))
    channel.close()

    assert hung.status == "unknown"
    assert dropped.status == "unknown"  # the peer may have acted on it before hanging up
    assert refused.status == "retry"


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "javascript:alert(1)", "", "http://"]
)
def test_webhook_refuses_non_http_urls(url: str) -> None:
    channel = WebhookChannel(timeout_s=TIMEOUT)
    outcome = channel.send(hook_message(url))
    channel.close()
    assert outcome.status == "failed" and outcome.address_invalid


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(formatdate(NOW + 90, usegmt=True), now=NOW) == 90.0
    assert parse_retry_after(formatdate(NOW - 90, usegmt=True), now=NOW) == 0.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None


# --- Meta ----------------------------------------------------------------------------------------

EMAIL_HASH = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"  # sha256("test@example.com")


def test_meta_normalisation_and_hashing() -> None:
    assert normalise_email("  Test@Example.COM \n") == "test@example.com"
    assert normalise_email(None) == ""
    assert normalise_phone("+1 (415) 555-0100") == "14155550100"
    assert normalise_phone("0044 20 7946 0958") == "442079460958"
    assert normalise_phone("") == normalise_phone(None) == ""
    phone_hash = hashlib.sha256(b"14155550100").hexdigest()

    assert hashed_payload(" TEST@example.com", "+1 415-555-0100") == {
        "schema": ["EMAIL", "PHONE"],
        "data": [[EMAIL_HASH, phone_hash]],
    }
    assert hashed_payload("test@example.com", None) == {"schema": ["EMAIL"], "data": [[EMAIL_HASH]]}
    assert hashed_payload(None, "+14155550100") == {"schema": ["PHONE"], "data": [[phone_hash]]}
    assert hashed_payload("  ", "+") is None


@pytest.fixture
def meta() -> Iterator[FakeMetaGraph]:
    with FakeMetaGraph() as fake:
        yield fake


@pytest.fixture
def meta_channel(meta: FakeMetaGraph) -> Iterator[MetaAudienceChannel]:
    settings = Settings(meta_access_token=meta.access_token, meta_base_url=meta.base_url)
    channel = MetaAudienceChannel.from_settings(settings, timeout_s=TIMEOUT)
    yield channel
    channel.close()


def audience_message(audience_id: str, operation: str = "add", **data: object) -> OutgoingMessage:
    values = {"operation": operation, "email": "Test@Example.com ", "phone": "+1 415 555 0100", **data}
    return OutgoingMessage(message_id=3, channel="meta", to=audience_id, data=values, idempotency_key="m-3")


def test_meta_adds_and_removes(meta: FakeMetaGraph, meta_channel: MetaAudienceChannel) -> None:
    added = meta_channel.send(audience_message(meta.audience_id))

    assert added.status == "sent" and added.provider_message_id is not None
    assert added.details["audience_id"] == meta.audience_id and added.details["num_received"] == 1
    assert ("EMAIL", EMAIL_HASH) in meta.members[meta.audience_id]
    request = meta.requests[0]
    assert (request.method, request.path) == ("POST", f"/v21.0/{meta.audience_id}/users")
    assert request.form_value("access_token") == meta.access_token
    assert json.loads(request.form_value("payload") or "")["schema"] == ["EMAIL", "PHONE"]
    assert meta.access_token not in request.target  # the token never goes into a URL

    removed = meta_channel.send(audience_message(meta.audience_id, "remove"))
    assert removed.status == "sent" and meta.requests[1].method == "DELETE"
    assert meta.members[meta.audience_id] == set()


def test_meta_refusals(meta: FakeMetaGraph, meta_channel: MetaAudienceChannel) -> None:
    nobody = meta_channel.send(audience_message(meta.audience_id, email=None, phone=""))
    unknown = meta_channel.send(audience_message("999"))
    bad_operation = meta_channel.send(audience_message(meta.audience_id, "replace"))

    assert nobody.status == "failed" and "neither an email nor a phone" in (nobody.error or "")
    assert unknown.status == "failed" and unknown.details["code"] == 100
    assert bad_operation.status == "failed"
    assert not any(outcome.address_invalid for outcome in (nobody, unknown, bad_operation))
    assert len(meta.requests) == 1  # only the unknown audience was asked


def test_meta_bad_token(meta: FakeMetaGraph) -> None:
    channel = MetaAudienceChannel("expired", base_url=meta.base_url, timeout_s=TIMEOUT)
    outcome = channel.send(audience_message(meta.audience_id))
    status = channel.check()
    channel.close()

    assert outcome.status == "failed" and outcome.details["code"] == 190
    assert "access token is invalid or expired" in (outcome.error or "")
    assert not status.ok and status.detail.startswith("Meta refused the access token (400)")


def test_meta_rate_limits_and_outages_retry(meta: FakeMetaGraph, meta_channel: MetaAudienceChannel) -> None:
    meta.rate_limit_next()
    meta.fail_next(1, status=429, retry_after=60)
    meta.fail_next(1, status=500)
    outcomes = [meta_channel.send(audience_message(meta.audience_id)) for _ in range(3)]
    meta.hang_next(seconds=HANG)
    hung = MetaAudienceChannel(meta.access_token, base_url=meta.base_url, timeout_s=SHORT)
    outcomes.append(hung.send(audience_message(meta.audience_id)))
    hung.close()

    assert [outcome.status for outcome in outcomes] == ["retry", "retry", "retry", "unknown"]
    assert outcomes[0].details["code"] == 80003 and outcomes[1].retry_after_s == 60.0


def test_meta_check(meta: FakeMetaGraph, meta_channel: MetaAudienceChannel) -> None:
    status = meta_channel.check()

    assert status.ok and "Winback Test System User" in status.detail
    assert meta.requests[0].header("Authorization") == f"Bearer {meta.access_token}"
    missing = MetaAudienceChannel(None).check()
    assert not missing.ok and missing.detail == "META_ACCESS_TOKEN is not set (WINBACK_META_ACCESS_TOKEN)"
    assert MetaAudienceChannel(None).send(audience_message("1")).status == "failed"


# --- outbox and console --------------------------------------------------------------------------


def test_outbox_accepts_everything() -> None:
    channel = OutboxChannel("sms")
    outcome = channel.send(sms())

    assert (outcome.status, outcome.provider_message_id) == ("sent", "outbox-17")
    assert channel.sender(sms()) == "sms" and channel.check().ok


def test_console_prints_the_message(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    mms = sms(channel="mms", subject="Hi", media_urls=("https://winback.example/m/1.jpg",))
    outcome = ConsoleChannel("mms", stream=stream).send(mms)

    assert (outcome.status, outcome.provider_message_id) == ("sent", "console-17")
    text = stream.getvalue()
    for part in (
        "mms message 17",
        "To: +14155550100",
        "Subject: Hi",
        "Media: https://winback.example/m/1.jpg",
        sms().body,
    ):
        assert part in text

    logger = logging.getLogger("winback.test.console")
    with caplog.at_level(logging.INFO, logger=logger.name):
        ConsoleChannel("webhook", logger=logger).send(hook_message("https://hooks.example/x"))
    assert '"payload": {"event": "order.created", "id": 42}' in caplog.text
    assert "the log (winback.test.console)" in ConsoleChannel("sms", logger=logger).check().detail


def test_console_survives_a_closed_stream() -> None:
    stream = io.StringIO()
    stream.close()
    assert ConsoleChannel("sms", stream=stream).send(sms()).status == "sent"


def test_httpx_client_is_reused(twilio: FakeTwilio) -> None:
    client = httpx.Client(timeout=TIMEOUT, verify=False)  # plain http on loopback: no CA bundle to load
    channel = TwilioChannel.from_settings(Settings(**twilio.settings()), client=client)
    assert channel.send(sms()).status == "sent"
    channel.close()
    assert client.is_closed
