"""The adapters that keep messages inside winback: every channel's default until a provider is set.

- `OutboxChannel` (provider "outbox") accepts every message and reports it sent with the id
  `outbox-<message_id>`. Nothing leaves the machine: the message row (GET /api/v1/messages) is
  where a person or a test reads what would have gone out.
- `ConsoleChannel` (provider "console") does the same and also writes a readable rendering of the
  message — channel, recipient, subject, body, media, data — to a stream (stdout by default) or
  to a logger, for trying flows out on a laptop.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TextIO

from winback.messaging.channels.base import ChannelStatus, OutgoingMessage, SendOutcome

_HIDDEN_DATA = frozenset({"subscription"})  # push keys: long and useless on a console


class OutboxChannel:
    """Accepts everything; the stored message is the only trace."""

    provider = "outbox"

    def __init__(self, channel_name: str = "") -> None:
        self.channel_name = channel_name

    def sender(self, message: OutgoingMessage) -> str:
        return self.channel_name or message.channel

    def send(self, message: OutgoingMessage) -> SendOutcome:
        return SendOutcome(
            status="sent",
            provider_message_id=f"{self.provider}-{message.message_id}",
            provider_status="stored",
        )

    def check(self) -> ChannelStatus:
        what = f"{self.channel_name} messages" if self.channel_name else "messages"
        return ChannelStatus(
            ok=True,
            provider=self.provider,
            detail=f"{what} stay in winback (GET /api/v1/messages); nothing is sent",
        )

    def close(self) -> None:
        return None


def render(message: OutgoingMessage) -> str:
    """A plain-text picture of a message, one field a line."""
    lines = [f"--- {message.channel} message {message.message_id} ---", f"To: {message.to or '(none)'}"]
    if message.subject:
        lines.append(f"Subject: {message.subject}")
    for name, value in message.headers.items():
        lines.append(f"{name}: {value}")
    for url in message.media_urls:
        lines.append(f"Media: {url}")
    if message.status_callback_url:
        lines.append(f"Status callback: {message.status_callback_url}")
    shown = {key: value for key, value in message.data.items() if key not in _HIDDEN_DATA}
    if shown:
        lines.append("Data: " + json.dumps(shown, ensure_ascii=False, sort_keys=True, default=str))
    if message.body:
        lines.append("")
        lines.extend(message.body.splitlines() or [""])
    if message.html:
        lines.append(f"(HTML part: {len(message.html)} characters)")
    lines.append("---")
    return "\n".join(lines)


class ConsoleChannel(OutboxChannel):
    """Like the outbox, and prints each message (to `stream`, or through `logger` at INFO)."""

    provider = "console"

    def __init__(
        self, channel_name: str = "", *, stream: TextIO | None = None, logger: logging.Logger | None = None
    ) -> None:
        super().__init__(channel_name)
        self._stream = stream
        self._logger = logger

    def send(self, message: OutgoingMessage) -> SendOutcome:
        text = render(message)
        if self._logger is not None:
            self._logger.info("%s", text)
        else:
            stream = self._stream if self._stream is not None else sys.stdout  # looked up now: capture works
            try:
                stream.write(text + "\n")
                stream.flush()
            except (OSError, ValueError):  # a closed stream: the stored message is what counts
                logging.getLogger(__name__).warning("could not print message %s", message.message_id)
        return super().send(message)

    def check(self) -> ChannelStatus:
        where = f"the log ({self._logger.name})" if self._logger is not None else "the console"
        what = f"{self.channel_name} messages" if self.channel_name else "messages"
        return ChannelStatus(
            ok=True, provider=self.provider, detail=f"{what} stay in winback and are printed to {where}"
        )
