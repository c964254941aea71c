"""The SMTP channel against a real SMTP server on loopback (tests/peers/smtp.py)."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest

from tests.peers.smtp import SelfSignedCert, SmtpPeer, make_self_signed_cert
from winback.messaging.channels.base import OutgoingMessage
from winback.messaging.channels.email import SmtpChannel, build_mime
from winback.settings import Settings

SENDER = "Größenwahn Shop <hello@shop.example>"
UNSUBSCRIBE = (
    "<https://winback.shop.example/u/eyJtIjo0MiwicCI6MTcsImMiOiJlbWFpbCJ9.Q2hhbmdlZC1ieS1hLXRlc3QtdG9rZW4>, "
    "<mailto:unsubscribe@shop.example?subject=unsubscribe%20eyJtIjo0MiwicCI6MTd9>"
)
HEADERS = {
    "List-Unsubscribe": UNSUBSCRIBE,
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    "X-Winback-Message-Id": "42",
}
TEXT = "Hallo Jürgen,\n\nIhr Warenkorb wartet – 10 % Rabatt.\n.\n..two dots\nBis bald 👋\n"
HTML = "<p>Hallo <b>Jürgen</b>,</p><p>Ihr Warenkorb wartet – 10&nbsp;% Rabatt. 👋</p>"


def message(to: str = "juergen@customer.example", message_id: int = 42, **changes: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "message_id": message_id,
        "channel": "email",
        "to": to,
        "subject": "Dein Warenkorb wartet – Größe 42 ✨",
        "body": TEXT,
        "html": HTML,
        "headers": HEADERS,
        "idempotency_key": f"run-7:node-{message_id}",
    }
    fields.update(changes)
    return OutgoingMessage(**fields)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> SelfSignedCert:
    return make_self_signed_cert(tmp_path_factory.mktemp("smtp-tls"))


def channel_for(server: SmtpPeer, **changes: Any) -> SmtpChannel:
    options: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "security": server.security,
        "sender": SENDER,
        "reply_to": "Kundendienst <help@shop.example>",
        "timeout_s": 2.0,
        "local_hostname": "winback.test",
    }
    if server.users:
        options.update(username="shop", password=server.users["shop"])
    if server.security != "none":
        options["ssl_context"] = server.client_context()
    options.update(changes)
    return SmtpChannel(**options)


@pytest.fixture
def plain() -> Iterator[SmtpPeer]:
    with SmtpPeer() as server:
        yield server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the MIME message (pure) ---


def test_build_mime_is_multipart_alternative_with_every_header() -> None:
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    mime = build_mime(message(), sender=SENDER, reply_to="help@shop.example", now=now)

    assert mime.get_content_type() == "multipart/alternative"
    text, html = mime.iter_parts()
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert str(mime["From"]) == SENDER
    assert str(mime["To"]) == "juergen@customer.example"
    assert str(mime["Reply-To"]) == "help@shop.example"
    assert str(mime["Date"]) == "Mon, 02 Mar 2026 09:00:00 +0000"
    assert str(mime["Message-ID"]).startswith("<winback.42.") and str(mime["Message-ID"]).endswith(
        "@shop.example>"
    )
    raw = mime.as_bytes()
    assert raw.isascii()  # 7-bit clean: any server takes it
    assert b"\r\nList-Unsubscribe: <https://winback.shop.example/u/" in raw  # never an encoded word
    # folded at the space after the comma: the first URL alone is longer than 78, so that line may be
    assert b"dG9rZW4>,\r\n <mailto:unsubscribe@shop.example" in raw
    assert all(len(line) <= 78 or b"List-Unsubscribe: <https" in line for line in raw.split(b"\r\n"))


def test_build_mime_text_only_message_has_one_part() -> None:
    mime = build_mime(message(html=None, headers={}), sender="shop@shop.example")
    assert mime.get_content_type() == "text/plain"
    assert mime.get_content() == TEXT
    assert "Reply-To" not in mime


def test_message_id_is_stable_per_message_and_unique_across_messages() -> None:
    first = build_mime(message(), sender=SENDER)["Message-ID"]
    assert build_mime(message(), sender=SENDER)["Message-ID"] == first
    assert build_mime(message(message_id=43), sender=SENDER)["Message-ID"] != first
    assert build_mime(message(idempotency_key="other"), sender=SENDER)["Message-ID"] != first


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"headers": {"X-Evil": "a\r\nBcc: everyone@example.com"}}, "line break"),
        ({"headers": {"From": "someone@else.example"}}, "written by the email channel"),
        ({"to": "not-an-address"}, "not an email address"),
        ({"to": "a@b.example, c@d.example"}, "not an email address"),
    ],
)
def test_build_mime_refuses_unsafe_input(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        build_mime(message(**changes), sender=SENDER)


# --- sending ---


def assert_is_the_message(received: EmailMessage, message_id: str) -> None:
    assert str(received["From"]) == SENDER
    assert str(received["To"]) == "juergen@customer.example"
    assert str(received["Subject"]) == "Dein Warenkorb wartet – Größe 42 ✨"
    assert str(received["Reply-To"]) == "Kundendienst <help@shop.example>"
    assert str(received["Message-ID"]) == message_id
    assert str(received["List-Unsubscribe"]) == UNSUBSCRIBE
    assert str(received["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert str(received["X-Winback-Message-Id"]) == "42"
    assert received["Date"] is not None
    assert received.get_content_type() == "multipart/alternative"
    text, html = received.iter_parts()
    assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
    assert text.get_content().replace("\r\n", "\n") == TEXT
    assert html.get_content().rstrip("\r\n") == HTML


@pytest.mark.parametrize("security", ["none", "starttls", "tls"])
def test_sends_a_multipart_email_in_each_security_mode(security: str, cert: SelfSignedCert) -> None:
    users = {"shop": "correct horse"} if security != "none" else {}
    with SmtpPeer(security=security, cert=cert, users=users) as server:  # type: ignore[arg-type]
        channel = channel_for(server)
        outcome = channel.send(message())
        channel.close()

    assert outcome.status == "sent", outcome.error
    assert outcome.provider_message_id == str(build_mime(message(), sender=SENDER)["Message-ID"])
    (received,) = server.messages
    assert received.mail_from == "hello@shop.example"
    assert received.rcpt_tos == ["juergen@customer.example"]
    assert received.tls is (security != "none")
    assert received.login == ("shop" if users else None)
    assert_is_the_message(received.message, outcome.provider_message_id or "")


def test_from_settings_sends_through_the_configured_server(cert: SelfSignedCert) -> None:
    with SmtpPeer(security="starttls", cert=cert, users={"shop": "pw"}) as server:
        settings = Settings(
            smtp_host=server.host,
            smtp_port=server.port,
            smtp_security="starttls",
            smtp_username="shop",
            smtp_password="pw",
            smtp_timeout_s=2.0,
            email_from=SENDER,
            email_reply_to="Kundendienst <help@shop.example>",
        )
        channel = SmtpChannel.from_settings(settings, ssl_context=server.client_context())
        assert channel.sender(message()) == "hello@shop.example"
        outcome = channel.send(message())
        channel.close()
    assert outcome.status == "sent", outcome.error
    assert_is_the_message(server.messages[0].message, outcome.provider_message_id or "")


def test_one_connection_serves_many_messages_and_reconnects_when_dropped() -> None:
    with SmtpPeer(idle_timeout_s=0.3) as server:
        channel = channel_for(server)
        first = channel.send(message(message_id=1))
        second = channel.send(message(message_id=2))
        connection = channel._connection
        time.sleep(0.6)  # the server closes the idle session
        third = channel.send(message(message_id=3))
        assert channel._connection is not connection
        channel.close()
    assert [o.status for o in (first, second, third)] == ["sent", "sent", "sent"]
    assert [m.message["X-Winback-Message-Id"] for m in server.messages] == ["42", "42", "42"]
    assert len({str(m.message["Message-ID"]) for m in server.messages}) == 3


def test_non_ascii_mailbox_is_sent_with_smtputf8(plain: SmtpPeer) -> None:
    channel = channel_for(plain)
    outcome = channel.send(message(to="jürgen@customer.example"))
    channel.close()
    assert outcome.status == "sent", outcome.error
    (received,) = plain.messages
    assert "SMTPUTF8" in received.mail_options
    assert received.rcpt_tos == ["jürgen@customer.example"]
    assert str(received.message["To"]) == "jürgen@customer.example"


def test_internationalised_domain_is_sent_in_its_ascii_form(plain: SmtpPeer) -> None:
    channel = channel_for(plain)
    outcome = channel.send(message(to="anna@bücher.example"))
    channel.close()
    assert outcome.status == "sent", outcome.error
    assert plain.messages[0].rcpt_tos == ["anna@xn--bcher-kva.example"]
    assert "SMTPUTF8" not in plain.messages[0].mail_options


# --- outcomes ---


def test_unknown_recipient_fails_as_an_invalid_address_and_the_connection_goes_on() -> None:
    with SmtpPeer(refuse={"gone@customer.example": "550 5.1.1 No such user here"}) as server:
        channel = channel_for(server)
        refused = channel.send(message(to="gone@customer.example"))
        after = channel.send(message())
        channel.close()
    assert refused.status == "failed" and refused.address_invalid
    assert refused.error == "RCPT TO refused: 550 5.1.1 No such user here"
    assert after.status == "sent"
    assert len(server.messages) == 1


def test_policy_refusal_at_rcpt_fails_without_blaming_the_address() -> None:
    with SmtpPeer(refuse={"juergen@customer.example": "554 5.7.1 Sender blocked"}) as server:
        outcome = channel_for(server).send(message())
    assert outcome.status == "failed" and not outcome.address_invalid


def test_greylisting_is_retried_and_the_retry_keeps_the_message_id() -> None:
    with SmtpPeer(refuse={"juergen@customer.example": "451 4.7.1 Greylisted, try again later"}) as server:
        channel = channel_for(server)
        first = channel.send(message())
        server.refuse.clear()
        second = channel.send(message())
        channel.close()
    assert first.status == "retry" and first.provider_status == "451"
    assert "Greylisted" in (first.error or "")
    assert second.status == "sent"
    (received,) = server.messages
    assert str(received.message["Message-ID"]) == second.provider_message_id
    assert second.provider_message_id == str(build_mime(message(), sender=SENDER)["Message-ID"])


def test_server_closing_the_session_at_rcpt_is_retried() -> None:
    with SmtpPeer(refuse={"juergen@customer.example": "421 4.3.2 Too busy, closing"}) as server:
        channel = channel_for(server)
        outcome = channel.send(message())
        assert channel._connection is None  # not reused after 421
        channel.close()
    assert outcome.status == "retry" and "421 4.3.2 Too busy" in (outcome.error or "")


def test_wrong_password_fails_with_a_clear_message(cert: SelfSignedCert) -> None:
    with SmtpPeer(security="starttls", cert=cert, users={"shop": "right"}) as server:
        channel = channel_for(server, password="wrong")
        outcome = channel.send(message())
        status = channel.check()
    assert outcome.status == "failed"
    assert (outcome.error or "").startswith("SMTP refused the login (535): ")
    assert not status.ok and "535" in status.detail
    assert server.messages == [] and "shop" in server.failed_logins


def test_server_down_is_retried() -> None:
    channel = SmtpChannel(host="127.0.0.1", port=free_port(), sender=SENDER, timeout_s=1.0)
    outcome = channel.send(message())
    assert outcome.status == "retry"
    assert "cannot connect to SMTP server 127.0.0.1" in (outcome.error or "")
    assert not channel.check().ok


def test_starttls_not_offered_is_refused_rather_than_sent_in_clear(plain: SmtpPeer) -> None:
    outcome = channel_for(plain, security="starttls").send(message())
    assert outcome.status == "failed"
    assert "does not offer STARTTLS" in (outcome.error or "")
    assert plain.messages == []


def test_untrusted_certificate_is_a_retry_and_nothing_is_sent(cert: SelfSignedCert) -> None:
    with SmtpPeer(security="tls", cert=cert) as server:
        outcome = channel_for(server, ssl_context=ssl.create_default_context()).send(message())
    assert outcome.status == "retry"
    assert "TLS handshake" in (outcome.error or "")
    assert server.messages == []


@pytest.mark.parametrize("after_data", ["drop", "hang"])
def test_no_answer_after_the_data_is_unknown(after_data: str) -> None:
    with SmtpPeer(after_data=after_data, hang_s=1.0) as server:  # type: ignore[arg-type]
        outcome = channel_for(server, timeout_s=0.3).send(message())
    assert outcome.status == "unknown"
    assert "may have been queued" in (outcome.error or "")
    assert outcome.provider_message_id == str(server.messages[0].message["Message-ID"])


def test_check_reports_a_working_server(cert: SelfSignedCert) -> None:
    with SmtpPeer(security="tls", cert=cert, users={"shop": "pw"}) as server:
        status = channel_for(server).check()
    assert status.ok, status.detail
    assert status.provider == "smtp"
    assert f"127.0.0.1:{server.port} (tls), logged in as shop" in status.detail
    assert server.messages == []


def test_check_reports_a_bad_sender_without_connecting() -> None:
    status = SmtpChannel(host="127.0.0.1", port=free_port(), sender="not an address").check()
    assert not status.ok and "WINBACK_EMAIL_FROM" in status.detail
