"""Flows' messages through each real channel on loopback — email to an SMTP server, web push to a
push service that decrypts it, Slack, a signed webhook and a Meta audience — and the messaging
API and command line (preview, report, channels, messages), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from tests.peers.push_service import PushService
from tests.peers.receivers import FakeMetaGraph, SlackReceiver, WebhookReceiver
from tests.peers.smtp import SmtpPeer
from winback import apikeys
from winback.cli import app as cli_app
from winback.db.engine import transaction
from winback.db.models import Customer, Message, PushSubscription, SecretValue, Suppression
from winback.flows import engine as flow_engine
from winback.flows import service
from winback.kernel.clock import VirtualClock
from winback.messaging.pipeline import Sender
from winback.messaging.secrets import LINK_SIGNING
from winback.processing.processor import process_pending
from winback.runtime import Runtime
from winback.settings import Settings
from winback.web.app import create_app

START = datetime.fromisoformat("2026-03-02T17:00:00+00:00")


@pytest.fixture
def make_runtime(database_url: str) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(**settings: Any) -> Runtime:
        runtime = Runtime.from_settings(
            Settings(database_url=database_url, public_url="https://wb.example", **settings),
            clock=VirtualClock(START),
        )
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.engine.dispose()


def _flow_with(runtime: Runtime, *actions: dict[str, Any]) -> int:
    nodes = [
        {
            "id": f"a{i}",
            "type": "action",
            "action": action,
            **({"next": f"a{i + 1}"} if i < len(actions) - 1 else {}),
        }
        for i, action in enumerate(actions)
    ]
    definition = {
        "trigger": {"type": "event", "event": "Signed Up"},
        "entry": {"reentry": {"mode": "every_time"}},
        "start": "a0",
        "nodes": nodes,
    }
    with transaction(runtime.engine) as session:
        flow = service.create_flow(session, name="flow", definition=definition, now=runtime.clock.now())
        service.set_status(session, flow.id, "live", runtime.clock.now())
        return flow.id


def _client(runtime: Runtime) -> tuple[TestClient, str, str]:
    now = runtime.clock.now()
    write = apikeys.create_key(runtime.engine, name="store", scope="write", now=now).secret
    admin = apikeys.create_key(runtime.engine, name="admin", scope="admin", now=now).secret
    return TestClient(create_app(runtime)), write, admin


def _sign_up(runtime: Runtime, client: TestClient, write: str, **traits: Any) -> int:
    traits = {"firstName": "Zoë", "email": "zoe@example.com", "phone": "+14155550123", **traits}
    client.post("/v1/identify", json={"userId": "u1", "traits": traits}, auth=(write, ""))
    client.post("/v1/track", json={"userId": "u1", "event": "Signed Up"}, auth=(write, ""))
    process_pending(runtime)
    flow_engine.step_due_runs(runtime)
    with Session(runtime.engine) as session:
        return session.scalars(sa.select(Customer.id).where(Customer.user_id == "u1")).one()


def _again(runtime: Runtime, client: TestClient, write: str) -> None:
    """A day later, the shopper does it again (and the flow runs again)."""
    runtime.clock.advance(timedelta(days=1))  # type: ignore[attr-defined]
    client.post("/v1/track", json={"userId": "u1", "event": "Signed Up"}, auth=(write, ""))
    process_pending(runtime)
    flow_engine.step_due_runs(runtime)


def _messages(runtime: Runtime) -> list[Message]:
    with Session(runtime.engine) as session:
        return list(session.scalars(sa.select(Message).order_by(Message.id)))


EMAIL = {
    "type": "send_email",
    "subject": "Welcome to {{ shop.name }}, {{ customer.first_name }}",
    "text": "Hi {{ customer.first_name }},\n\nSee what's new: https://shop.example/new\n\n"
    "Unsubscribe: {{ unsubscribe_url }}",
}


def test_marketing_email_over_smtp_with_one_click_unsubscribe(make_runtime: Callable[..., Runtime]) -> None:
    with SmtpPeer() as smtp:
        runtime = make_runtime(
            email_provider="smtp",
            smtp_host=smtp.host,
            smtp_port=smtp.port,
            email_from="Boot Barn <hi@boots.example>",
        )
        _flow_with(runtime, EMAIL)
        client, write, _ = _client(runtime)
        _sign_up(runtime, client, write)
        sender = Sender(runtime)
        assert sender.run().sent == 1

        [mail] = smtp.messages
        parsed = mail.message
        assert mail.rcpt_tos == ["zoe@example.com"]
        assert str(parsed["Subject"]) == "Welcome to My Store, Zoë"
        assert parsed["From"] == "Boot Barn <hi@boots.example>"
        unsubscribe = parsed["List-Unsubscribe"].strip("<>")
        assert unsubscribe.startswith("https://wb.example/u/")
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        text = parsed.get_body(("plain",)).get_content()
        html = parsed.get_body(("html",)).get_content()
        assert "Hi Zoë," in text and "https://wb.example/l/" in text and "shop.example/new" not in text
        assert unsubscribe in text  # the unsubscribe link is never rewritten
        assert 'src="https://wb.example/o/' in html  # the open pixel
        [message] = _messages(runtime)
        assert message.status == "delivered"  # accepted by the receiving server

        # the mail client's one-click POST unsubscribes at once
        path = unsubscribe.removeprefix("https://wb.example")
        response = client.post(path, content=b"List-Unsubscribe=One-Click",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert response.status_code == 200
        with Session(runtime.engine) as session:
            assert session.scalars(sa.select(Suppression.reason)).one() == "unsubscribed"
        # so the next marketing email is skipped, with the reason
        _again(runtime, client, write)
        report = sender.run()
        assert report.skipped == 1 and len(smtp.messages) == 1
        assert "suppression list (unsubscribed)" in (_messages(runtime)[-1].status_reason or "")
        sender.close()


def test_transactional_email_has_no_unsubscribe_header_and_goes_to_the_unsubscribed(
    make_runtime: Callable[..., Runtime],
) -> None:
    with SmtpPeer() as smtp:
        runtime = make_runtime(email_provider="smtp", smtp_host=smtp.host, smtp_port=smtp.port)
        _flow_with(runtime, {**EMAIL, "transactional": True, "text": "Your order is confirmed."})
        client, write, _ = _client(runtime)
        _sign_up(runtime, client, write, email_consent="unsubscribed")
        assert Sender(runtime).run().sent == 1
        [mail] = smtp.messages
        assert mail.message["List-Unsubscribe"] is None
        assert mail.message.get_body(("plain",)).get_content().strip() == "Your order is confirmed."


def test_web_push_is_encrypted_for_the_browser_and_a_gone_subscription_removed(
    make_runtime: Callable[..., Runtime],
) -> None:
    with PushService() as push:
        runtime = make_runtime(push_provider="webpush", vapid_subject="mailto:ops@boots.example")
        _flow_with(runtime, {"type": "send_push", "title": "Hi {{ customer.first_name }}", "body": "New boots",
                             "url": "https://shop.example/new"})  # fmt: skip
        client, write, _ = _client(runtime)
        customer_id = _sign_up(runtime, client, write)
        browser = push.subscribe()
        sender = Sender(runtime)
        # the first push finds no subscription: skipped, with the reason
        assert sender.run().skipped == 1
        assert _messages(runtime)[0].status_reason == "no push subscription for this customer"
        keys = browser.subscription_json()["keys"]
        with transaction(runtime.engine) as session:  # (the subscribe API takes https endpoints only)
            session.add(
                PushSubscription(
                    customer_id=customer_id,
                    endpoint=browser.endpoint,
                    p256dh=keys["p256dh"],
                    auth=keys["auth"],
                    created_at=runtime.clock.now(),
                )
            )
        _again(runtime, client, write)
        assert sender.run().sent == 1
        [received] = push.received
        payload = received.json()
        assert payload["title"] == "Hi Zoë" and payload["body"] == "New boots"
        assert payload["url"].startswith("https://wb.example/l/")
        assert received.claims["sub"] == "mailto:ops@boots.example"

        push.gone(browser)
        _again(runtime, client, write)
        assert sender.run().failed == 1
        with Session(runtime.engine) as session:
            assert session.scalars(sa.select(PushSubscription)).all() == []
        sender.close()


def test_merchant_channels_slack_webhook_and_meta(make_runtime: Callable[..., Runtime]) -> None:
    with SlackReceiver() as slack, WebhookReceiver(secret="whsec") as hook, FakeMetaGraph() as meta:
        runtime = make_runtime(
            slack_provider="slack",
            slack_webhook_url=slack.webhook_url,
            webhook_signing_secret="whsec",
            meta_provider="meta",
            meta_access_token=meta.access_token,
            meta_base_url=meta.base_url,
        )
        _flow_with(
            runtime,
            {"type": "notify_slack", "text": "New sign-up: {{ customer.email }}"},
            {"type": "webhook", "url": hook.url, "payload": {"source": "winback"}},
            {"type": "meta_audience_add", "audience_id": meta.audience_id},
        )
        client, write, _ = _client(runtime)
        customer_id = _sign_up(runtime, client, write)  # no SMS or email consent needed for these

        report = Sender(runtime).run()

        assert report.sent == 3
        assert [m["text"] for m in slack.messages] == ["New sign-up: zoe@example.com"]
        [delivery] = hook.deliveries
        assert delivery.signature_valid and delivery.payload["data"] == {"source": "winback"}
        assert delivery.payload["customer"]["id"] == customer_id
        assert {key for key, _ in meta.members[meta.audience_id]} == {"EMAIL", "PHONE"}
        assert {m.status for m in _messages(runtime)} == {"sent"}


def test_preview_report_channels_and_messages_over_the_api(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    flow_id = _flow_with(
        runtime, {"type": "send_sms", "body": "Hi {{ customer.first_name }} 👢 Reply STOP to opt out"}
    )
    client, write, admin = _client(runtime)
    customer_id = _sign_up(runtime, client, write, sms_consent="subscribed", timezone="America/Los_Angeles")
    client.headers["Authorization"] = f"Bearer {admin}"

    preview = client.post("/api/v1/messages/preview", json={"customer_id": customer_id, "flow_id": flow_id,
                                                            "node_id": "a0"})  # fmt: skip
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["body"] == "Hi Zoë 👢 Reply STOP to opt out"
    assert body["sms"]["encoding"] == "UCS-2" and body["sms"]["parts"] == 1
    assert body["sms"]["non_gsm_characters"] == ["ë", "👢"]  # ë is not in GSM 03.38 either
    # the key behind the preview's unsubscribe link was stored, so that link works
    with Session(runtime.engine) as session:
        assert session.get(SecretValue, LINK_SIGNING) is not None
    bad = client.post("/api/v1/messages/preview", json={"customer_id": customer_id, "channel": "sms",
                                                        "body": "Hi {{ customer.first_name"})  # fmt: skip
    assert bad.status_code == 400 and "line 1" in bad.text.lower()

    Sender(runtime).run()
    listed = client.get("/api/v1/messages", params={"flow_id": flow_id}).json()
    assert [m["status"] for m in listed["items"]] == ["delivered"]
    report = client.get("/api/v1/reports/messages", params={"flow_id": flow_id}).json()
    assert report["totals"]["sent"] == 1 and report["totals"]["delivered"] == 1
    channels = client.get("/api/v1/channels").json()["channels"]
    assert channels["sms"] == {"ok": True, "provider": "outbox", "detail": channels["sms"]["detail"]}
    test = client.post("/api/v1/channels/email/test", json={"to": "not-an-address"})
    assert test.status_code == 400 and test.json()["error"]["field"] == "to"


def test_command_line_channels_and_messages(database_url: str) -> None:
    runner = CliRunner()
    env = {"WINBACK_DATABASE_URL": database_url}
    sent = runner.invoke(cli_app, ["channels", "test", "sms", "+14155550123", "--text", "ping"], env=env)
    assert sent.exit_code == 0, sent.output
    assert "via outbox: delivered" in sent.output
    bad = runner.invoke(cli_app, ["channels", "test", "sms", "call me"], env=env)
    assert bad.exit_code == 1 and "not a phone number" in bad.output
    listed = runner.invoke(cli_app, ["messages", "list"], env=env)
    assert listed.exit_code == 0 and "+14155550123" in listed.output
    message_id = listed.output.split()[0]
    shown = runner.invoke(cli_app, ["messages", "show", message_id], env=env)
    assert shown.exit_code == 0 and "ping" in shown.output and "delivered" in shown.output
    status = runner.invoke(cli_app, ["channels", "status"], env=env)
    assert status.exit_code == 0, status.output
