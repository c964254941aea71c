"""Generic webhook channel: POSTs a JSON payload to the URL a flow names, signed when a secret is set.

Each delivery is one `POST {message.to}` with the JSON body `message.data["payload"]` and these
headers:

- `Content-Type: application/json`
- `User-Agent: winback/<version>`
- `X-Winback-Idempotency-Key: <message.idempotency_key>` — the same on every retry of one message,
  so a receiver can drop a repeat;
- `X-Winback-Timestamp: <unix seconds>` — when this attempt was made;
- `X-Winback-Signature: sha256=<hex>` — only when `WINBACK_WEBHOOK_SIGNING_SECRET` is set.

**Signature scheme.** The signed bytes are the timestamp header's value, a full stop, then the raw
request body exactly as sent: `f"{timestamp}.".encode() + body`. The signature is the lower-case
hex HMAC-SHA256 of those bytes keyed with the signing secret (UTF-8), prefixed with `sha256=`.
A receiver recomputes it over the body it received (before parsing it), compares in constant time,
and refuses timestamps too far from its own clock (five minutes by default) so a captured request
cannot be replayed later. `verify()` below does exactly that.

Answers: 2xx → sent; 408, 429 and 5xx → retry (`Retry-After` honoured); any other status → failed
(redirects are not followed); nothing sent (connection refused) → retry; no answer after the request
went out (read timeout) → unknown. URLs that are not http(s) are refused without a call.

This module also holds the small HTTP helpers every HTTP adapter shares (`transport_outcome`,
`parse_retry_after`, `new_client`, `response_excerpt`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import ssl
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from winback import __version__
from winback.messaging.channels.base import ChannelStatus, OutgoingMessage, SendOutcome
from winback.settings import Settings

SIGNATURE_HEADER = "X-Winback-Signature"
TIMESTAMP_HEADER = "X-Winback-Timestamp"
IDEMPOTENCY_HEADER = "X-Winback-Idempotency-Key"
DEFAULT_TOLERANCE_S = 300.0
DEFAULT_TIMEOUT_S = 10.0


# --- helpers shared by the HTTP adapters -------------------------------------------------------


def user_agent() -> str:
    return f"winback/{__version__}"


def http_timeout(timeout_s: float) -> httpx.Timeout:
    """One overall limit; connecting gets at most 5 s of it (a host that does not answer a SYN is down)."""
    return httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # httpx's own default (certifi, or SSL_CERT_FILE/SSL_CERT_DIR), built once: loading the CA bundle
    # costs ~0.1 s, which every adapter would otherwise pay again. An SSLContext is safe to share.
    return httpx.create_ssl_context()


def new_client(timeout_s: float) -> httpx.Client:
    """The HTTP client an adapter holds: its timeout, the winback User-Agent, no redirects followed."""
    return httpx.Client(
        timeout=http_timeout(timeout_s),
        headers={"User-Agent": user_agent()},
        follow_redirects=False,
        verify=_tls_context(),
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` as seconds to wait: either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def transport_outcome(exc: Exception, what: str) -> SendOutcome:
    """Classify an exception raised while calling a provider (`what` names it in the error).

    Nothing went out → `retry` (connection refused or timed out while connecting, DNS failure, no
    free connection in the pool). A request that could not even be built (bad URL, bad header) →
    `failed`. Anything after the request may have been written (read/write timeout, the peer
    closing without an answer) → `unknown`: the provider may have acted on it.
    """
    name = type(exc).__name__
    detail = str(exc) or name
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.InvalidURL):
        return SendOutcome(
            status="failed", error=f"{what}: request refused before sending ({name}): {detail}"
        )
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.ProxyError):
        return SendOutcome(status="retry", error=f"{what} could not be reached ({name}): {detail}")
    return SendOutcome(
        status="unknown", error=f"{what}: no answer after the request was sent ({name}): {detail}"
    )


def response_excerpt(response: httpx.Response, limit: int = 300) -> str:
    text = response.text.strip()
    return text if len(text) <= limit else text[:limit] + "…"


# --- signing -------------------------------------------------------------------------------------


def sign(body: bytes, timestamp: str, secret: str) -> str:
    """The `X-Winback-Signature` value for a body sent at `timestamp` (unix seconds, as text)."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    body: bytes,
    timestamp: str,
    signature_header: str,
    secret: str,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether a received webhook was signed with `secret` and sent within `tolerance_s` of `now`."""
    try:
        sent_at = int(timestamp.strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_s:
        return False
    expected = sign(body, str(sent_at), secret)
    return hmac.compare_digest(expected.encode("ascii"), signature_header.strip().encode("utf-8", "replace"))


# --- the channel ---------------------------------------------------------------------------------


class WebhookChannel:
    """POST JSON to arbitrary http(s) URLs (the `http` webhook provider)."""

    provider = "http"

    def __init__(
        self,
        signing_secret: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
        client: httpx.Client | None = None,
    ) -> None:
        self.signing_secret = signing_secret or None
        self._clock = clock
        self._client = client or new_client(timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> WebhookChannel:
        return cls(settings.webhook_signing_secret, timeout_s=settings.webhook_timeout_s, **kwargs)

    def sender(self, message: OutgoingMessage) -> str:
        """The receiving host: the pace applies per destination."""
        return (urlsplit(message.to).hostname or "").lower()

    def body_for(self, message: OutgoingMessage) -> bytes:
        payload = message.data.get("payload", {})
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")

    def send(self, message: OutgoingMessage) -> SendOutcome:
        url = message.to.strip()
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            return SendOutcome(
                status="failed",
                error=f"webhook URL must be http(s) with a host, got {url[:200]!r}",
                address_invalid=True,
            )
        body = self.body_for(message)
        timestamp = str(int(self._clock()))
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp}
        if message.idempotency_key:
            headers[IDEMPOTENCY_HEADER] = message.idempotency_key
        if self.signing_secret:
            headers[SIGNATURE_HEADER] = sign(body, timestamp, self.signing_secret)
        try:
            response = self._client.post(url, content=body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return transport_outcome(exc, f"webhook {parts.hostname}")
        return self.classify(response)

    @staticmethod
    def classify(response: httpx.Response) -> SendOutcome:
        status = response.status_code
        details = {"http_status": status}
        if 200 <= status < 300:
            return SendOutcome(status="sent", provider_status=str(status), details=details)
        error = f"webhook answered {status}: {response_excerpt(response)}".rstrip(": ")
        if status in (408, 429) or status >= 500:
            return SendOutcome(
                status="retry",
                error=error,
                retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
                details=details,
            )
        if 300 <= status < 400:
            error += f" (redirect to {response.headers.get('Location', '?')} not followed)"
        return SendOutcome(status="failed", error=error, details=details)

    def check(self) -> ChannelStatus:
        if self.signing_secret:
            detail = f"webhooks are signed ({SIGNATURE_HEADER}, HMAC-SHA256)"
        else:
            detail = "webhooks are sent unsigned: WINBACK_WEBHOOK_SIGNING_SECRET is not set"
        return ChannelStatus(ok=True, provider=self.provider, detail=detail)

    def close(self) -> None:
        self._client.close()
