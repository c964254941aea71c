"""Which adapter carries each channel, from the settings (`sms_provider`, `email_provider`, …).

Adapters are built on first use and kept for the life of the process (they hold HTTP and SMTP
connections); `close()` lets them go. Without configuration every channel goes to `outbox`: the
message is kept in winback (`GET /api/v1/messages`) and nothing leaves the machine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from winback.messaging.channels.base import Channel, ChannelName
from winback.settings import Settings

if TYPE_CHECKING:
    from winback.runtime import Runtime

CHANNELS: Final[tuple[ChannelName, ...]] = ("sms", "mms", "email", "push", "slack", "webhook", "meta")

# Outbox command kind → channel.
KIND_CHANNEL: Final[dict[str, ChannelName]] = {
    "send_sms": "sms",
    "send_mms": "mms",
    "send_email": "email",
    "send_push": "push",
    "notify_slack": "slack",
    "webhook": "webhook",
    "meta_audience_add": "meta",
    "meta_audience_remove": "meta",
}


def provider_setting(settings: Settings, channel: ChannelName) -> str:
    """The configured provider name of a channel (mms shares the SMS provider)."""
    return {
        "sms": settings.sms_provider,
        "mms": settings.sms_provider,
        "email": settings.email_provider,
        "push": settings.push_provider,
        "slack": settings.slack_provider,
        "webhook": settings.webhook_provider,
        "meta": settings.meta_provider,
    }[channel]


class Registry:
    """The adapters of one process, by channel."""

    def __init__(self, settings: Settings, *, vapid_private_key: Callable[[], str] | None = None) -> None:
        self.settings = settings
        self._vapid_private_key = vapid_private_key
        self._channels: dict[ChannelName, Channel] = {}

    @classmethod
    def for_runtime(cls, runtime: Runtime) -> Registry:
        """The adapters for this installation; web push reads its VAPID keys from the database."""

        def vapid_private_key() -> str:
            from winback.messaging import secrets

            private_key_pem, _public_key = secrets.vapid_keys(runtime.engine)
            return private_key_pem

        return cls(runtime.settings, vapid_private_key=vapid_private_key)

    def provider(self, channel: ChannelName) -> str:
        return provider_setting(self.settings, channel)

    def channel(self, channel: ChannelName) -> Channel:
        if channel not in self._channels:
            shared: ChannelName | None = "sms" if channel == "mms" else None
            if shared is not None and shared in self._channels:
                self._channels[channel] = self._channels[shared]
            else:
                self._channels[channel] = self._build(channel)
        return self._channels[channel]

    def close(self) -> None:
        for adapter in {id(a): a for a in self._channels.values()}.values():
            adapter.close()
        self._channels.clear()

    def _build(self, channel: ChannelName) -> Channel:
        from winback.messaging.channels import local

        provider = self.provider(channel)
        settings = self.settings
        if provider == "outbox":
            return local.OutboxChannel(channel)
        if provider == "console":
            return local.ConsoleChannel(channel)
        if provider == "twilio":
            from winback.messaging.channels.twilio import TwilioChannel

            return TwilioChannel.from_settings(settings)
        if provider == "smtp":
            from winback.messaging.channels.email import SmtpChannel

            return SmtpChannel.from_settings(settings)
        if provider == "webpush":
            from winback.messaging.channels.webpush import WebPushChannel

            if self._vapid_private_key is None:
                raise RuntimeError(
                    "web push needs the VAPID key pair: build the registry with vapid_private_key"
                )
            subject = settings.vapid_subject or _vapid_subject(settings)
            return WebPushChannel(self._vapid_private_key(), subject)
        if provider == "slack":
            from winback.messaging.channels.slack import SlackChannel

            return SlackChannel.from_settings(settings)
        if provider == "http":
            from winback.messaging.channels.webhook import WebhookChannel

            return WebhookChannel.from_settings(settings)
        if provider == "meta":
            from winback.messaging.channels.meta import MetaAudienceChannel

            return MetaAudienceChannel.from_settings(settings)
        raise ValueError(f"unknown provider {provider!r} for the {channel} channel")


def _vapid_subject(settings: Settings) -> str:
    """Who push services should contact about our pushes: the support address, else the sender
    address, else the shop's https URL."""
    from email.utils import parseaddr

    address = settings.store_support_email or parseaddr(settings.email_from)[1]
    if address and not address.endswith("@localhost"):
        return f"mailto:{address}"
    return settings.store_url if settings.store_url.startswith("https://") else f"mailto:{address}"
