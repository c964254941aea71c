"""The one interface every provider adapter implements, and what goes in and out of it.

An adapter turns an `OutgoingMessage` (already rendered, already allowed by the policies) into one
provider call and reports a `SendOutcome`. It never raises for a provider's answer: refusals,
rate limits and timeouts are outcomes, so the pipeline decides what to retry. Adapters hold no
database state; they are built from `Settings` by `registry.channel_for`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

ChannelName = Literal["sms", "mms", "email", "push", "slack", "webhook", "meta"]
OutcomeStatus = Literal["sent", "retry", "failed", "unknown"]


def family(channel: str) -> str:
    """The channel a message counts under for consent, suppressions, frequency caps and
    engagement events: MMS is SMS; every other channel is its own."""
    return "sms" if channel == "mms" else channel


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A rendered message, addressed.

    `to` is the address on the channel: an E.164 phone number (sms, mms), an email address, a push
    subscription endpoint, a webhook URL, a Meta custom audience id; empty for Slack (the incoming
    webhook URL is configuration). `data` carries what only one channel needs:
    - push: `subscription` ({"endpoint", "keys": {"p256dh", "auth"}}), `url` to open on click;
    - webhook: `payload` (the JSON body);
    - meta: `operation` ("add" | "remove"), `email`, `phone` (raw; the adapter normalises and hashes).
    """

    message_id: int
    channel: ChannelName
    to: str
    body: str = ""  # SMS/MMS text, the email's plain-text part, the push body, the Slack text
    subject: str | None = None  # email subject, push title
    html: str | None = None  # email HTML part
    media_urls: tuple[str, ...] = ()  # MMS images (public URLs)
    headers: Mapping[str, str] = field(default_factory=dict)  # extra email headers (List-Unsubscribe…)
    data: Mapping[str, Any] = field(default_factory=dict)
    idempotency_key: str = ""  # stable across retries of the same message
    status_callback_url: str | None = None  # where the provider reports delivery (Twilio)


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What a provider said.

    - `sent`: accepted; `provider_message_id` identifies it for status callbacks.
    - `retry`: not accepted, try again later (429, 5xx, connection refused before sending);
      `retry_after_s` when the provider said how long to wait.
    - `failed`: refused for good (bad number, bad credentials, 4xx); `address_invalid` when the
      address itself is the problem (the pipeline suppresses it; a push endpoint answering 404/410
      is removed).
    - `unknown`: the request may have reached the provider (a timeout after sending): never sent
      again blindly.
    """

    status: OutcomeStatus
    provider_message_id: str | None = None
    provider_status: str | None = None  # e.g. Twilio's "queued"
    error: str | None = None
    retry_after_s: float | None = None
    address_invalid: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    """The answer to "is this channel set up?" (`winback channels status`)."""

    ok: bool
    provider: str
    detail: str


class Channel(Protocol):
    """A provider adapter. `provider` names it in message rows and pacing keys."""

    provider: str

    def sender(self, message: OutgoingMessage) -> str:
        """The sending identity the pace applies to (a phone number, an address, a host)."""
        ...

    def send(self, message: OutgoingMessage) -> SendOutcome: ...

    def check(self) -> ChannelStatus:
        """Whether the configuration is complete and the credentials work, without sending."""
        ...

    def close(self) -> None: ...
