"""Slack through an incoming webhook (`WINBACK_SLACK_WEBHOOK_URL`): internal alerts from flows.

One `POST` of `{"text": …, "unfurl_links": false}` (plus `blocks` when a message carries them in
`data["blocks"]`) to the webhook URL. Slack answers 200 with the body `ok`; its refusals are
plain-text error names: 400 `invalid_payload`/`no_text`, 403 `invalid_token`/`action_prohibited`,
404 `no_service`/`channel_not_found`, 410 `channel_is_archived` → failed with that name as the
error; 429 → retry after `Retry-After`; 5xx and connection refused → retry; a read timeout → unknown.

The webhook URL is a credential: it is never put in errors, details or the `sender` pacing key
(that is a short digest of it). Note that httpx logs request URLs at INFO level on the `httpx`
logger; keep that logger at WARNING in production.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlsplit

import httpx

from winback.messaging.channels.base import ChannelStatus, OutgoingMessage, SendOutcome
from winback.messaging.channels.webhook import (
    DEFAULT_TIMEOUT_S,
    new_client,
    parse_retry_after,
    response_excerpt,
    transport_outcome,
)
from winback.settings import Settings

SETTING = "SLACK_WEBHOOK_URL is not set (WINBACK_SLACK_WEBHOOK_URL)"


class SlackChannel:
    """Posts each message's text to one Slack incoming webhook."""

    provider = "slack"

    def __init__(
        self,
        webhook_url: str | None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client: httpx.Client | None = None,
    ) -> None:
        self.webhook_url = (webhook_url or "").strip() or None
        self._client = client or new_client(timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> SlackChannel:
        """Built from `slack_webhook_url`; HTTP timeouts follow `webhook_timeout_s`."""
        options: dict[str, Any] = {"timeout_s": settings.webhook_timeout_s}
        options.update(kwargs)
        return cls(settings.slack_webhook_url, **options)

    def missing_config(self) -> str | None:
        if not self.webhook_url:
            return SETTING
        parts = urlsplit(self.webhook_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "SLACK_WEBHOOK_URL must be an https:// URL (WINBACK_SLACK_WEBHOOK_URL)"
        return None

    def sender(self, message: OutgoingMessage) -> str:
        """Slack paces each incoming webhook on its own (about one message a second)."""
        if not self.webhook_url:
            return ""
        return "hook-" + hashlib.sha256(self.webhook_url.encode("utf-8")).hexdigest()[:12]

    def payload_for(self, message: OutgoingMessage) -> dict[str, Any]:
        payload: dict[str, Any] = {"text": message.body, "unfurl_links": False}
        blocks = message.data.get("blocks")
        if isinstance(blocks, list) and blocks:
            payload["blocks"] = blocks
        return payload

    def send(self, message: OutgoingMessage) -> SendOutcome:
        problem = self.missing_config()
        if problem:
            return SendOutcome(status="failed", error=f"Slack is not configured: {problem}")
        if not message.body.strip() and "blocks" not in message.data:
            return SendOutcome(status="failed", error="the Slack message has no text")
        try:
            response = self._client.post(self.webhook_url or "", json=self.payload_for(message))
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return transport_outcome(exc, "Slack")
        return self.classify(response)

    @staticmethod
    def classify(response: httpx.Response) -> SendOutcome:
        status = response.status_code
        answer = response_excerpt(response) or response.reason_phrase
        details = {"http_status": status}
        if 200 <= status < 300:
            return SendOutcome(status="sent", provider_status=answer[:40] or "ok", details=details)
        error = f"Slack {status}: {answer}"
        if status == 429 or status >= 500:
            return SendOutcome(
                status="retry",
                error=error,
                retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
                details=details,
            )
        return SendOutcome(status="failed", error=error, details=details)

    def check(self) -> ChannelStatus:
        """Probes the hook with an empty payload, which Slack refuses without posting anything.

        A live hook answers 400 (`invalid_payload`/`no_text`: it exists, the payload was empty);
        a revoked or deleted one answers 403/404/410 (`invalid_token`, `no_service`,
        `channel_is_archived`).
        """
        problem = self.missing_config()
        if problem:
            return ChannelStatus(ok=False, provider=self.provider, detail=problem)
        try:
            response = self._client.post(self.webhook_url or "", json={})
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return ChannelStatus(
                ok=False, provider=self.provider, detail=f"Slack could not be reached: {type(exc).__name__}"
            )
        answer = response_excerpt(response) or response.reason_phrase
        if response.status_code == 400 or 200 <= response.status_code < 300:
            return ChannelStatus(ok=True, provider=self.provider, detail="the Slack webhook exists")
        if response.status_code in (403, 404, 410):
            return ChannelStatus(
                ok=False,
                provider=self.provider,
                detail=f"Slack refused the webhook ({response.status_code}): {answer}",
            )
        return ChannelStatus(
            ok=False, provider=self.provider, detail=f"Slack answered {response.status_code}: {answer}"
        )

    def close(self) -> None:
        self._client.close()
