"""What the merchant asks of the channels: are they set up (`winback channels status`,
`GET /api/v1/channels`), and does a real message get through (`winback channels test sms +1555…`,
`POST /api/v1/channels/{channel}/test`).

A test send is a real message through the real pipeline — suppressions and pacing apply, and it
is recorded like any other (`GET /api/v1/messages/{id}` tells what happened) — but it is addressed
by the merchant rather than to a profile, so it is transactional: no consent, quiet hours or caps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from winback.db.engine import transaction
from winback.db.models import Message
from winback.kernel.errors import InvalidInput
from winback.messaging import records
from winback.messaging.channels.base import ChannelStatus
from winback.messaging.pipeline import Sender
from winback.messaging.registry import CHANNELS, Registry
from winback.profiles import contact
from winback.runtime import Runtime

TEST_CHANNELS: Final = ("sms", "mms", "email", "push", "slack", "webhook")
DEFAULT_TEST_TEXT: Final = "A test message from winback: this channel works."


@dataclass(frozen=True, slots=True)
class TestResult:
    message_id: int
    status: str
    reason: str | None
    provider: str | None
    provider_message_id: str | None


def channel_statuses(runtime: Runtime) -> dict[str, ChannelStatus]:
    """Each channel's provider and whether its configuration and credentials work."""
    registry = Registry.for_runtime(runtime)
    try:
        statuses: dict[str, ChannelStatus] = {}
        for channel in CHANNELS:
            if channel == "mms":
                continue  # shares the SMS adapter
            try:
                statuses[channel] = registry.channel(channel).check()
            except Exception as exc:  # a misconfiguration must be reported, not crash the report
                statuses[channel] = ChannelStatus(False, registry.provider(channel), str(exc))
        return statuses
    finally:
        registry.close()


def test_send(
    runtime: Runtime, channel: str, to: str, *, text: str | None = None, subject: str | None = None
) -> TestResult:
    """Send one test message to `to` through `channel`'s configured provider."""
    if channel not in TEST_CHANNELS:
        raise InvalidInput(
            f"channel must be one of {', '.join(TEST_CHANNELS)}, got {channel!r}", field="channel"
        )
    address = _test_address(runtime, channel, to)
    body = text or DEFAULT_TEST_TEXT
    now = runtime.clock.now()
    with transaction(runtime.engine) as session:
        message = Message(
            channel=channel,
            transactional=True,
            category="test",
            priority=100,
            status="queued",
            attempts=0,
            to_address=address,
            subject=subject or ("winback test" if channel in ("email", "push") else None),
            body=body,
            html=None,
            media_urls=[],
            next_attempt_at=None,
            created_at=now,
            updated_at=now,
        )
        session.add(message)
        session.flush()
        records.record(session, message, "queued", now, reason="test send")
        message_id = message.id
    sender = Sender(runtime)
    try:
        sender.send_now(message_id)
    finally:
        sender.close()
    with transaction(runtime.engine) as session:
        message = session.get(Message, message_id)
        assert message is not None
        return TestResult(
            message_id, message.status, message.status_reason, message.provider, message.provider_message_id
        )


def _test_address(runtime: Runtime, channel: str, to: str) -> str:
    to = to.strip()
    if channel in ("sms", "mms"):
        phone = contact.normalise_phone(to)
        if phone is None:
            raise InvalidInput(f"{to!r} is not a phone number (use E.164, e.g. +15551234567)", field="to")
        return phone
    if channel == "email":
        email = contact.normalise_email(to)
        if email is None:
            raise InvalidInput(f"{to!r} is not an email address", field="to")
        return email
    if channel == "webhook":
        if not to.startswith(("http://", "https://")):
            raise InvalidInput(f"{to!r} is not an http(s) URL", field="to")
        return to
    if channel == "push":
        if not to.startswith("https://") and not to.startswith("http://"):
            raise InvalidInput("a push test goes to a subscription endpoint URL", field="to")
        return to
    return to  # slack: the configured incoming webhook


def describe(status: ChannelStatus) -> dict[str, Any]:
    return {"ok": status.ok, "provider": status.provider, "detail": status.detail}
