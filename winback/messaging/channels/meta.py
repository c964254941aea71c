"""Meta (Facebook/Instagram) custom audiences: add a customer to, or remove one from, an audience.

`message.to` is the custom audience id; `message.data` holds `operation` ("add" or "remove"),
`email` and `phone` (raw). Adding is `POST {meta_base_url}/{audience_id}/users`, removing is
`DELETE` on the same path, both with the form fields `access_token` and `payload`, a JSON object
in the Marketing API's multi-key format:

    {"schema": ["EMAIL", "PHONE"], "data": [["<sha256 of email>", "<sha256 of phone>"]]}

Values are normalised before hashing, as Meta requires: the email trimmed and lower-cased; the
phone reduced to its digits with the country code and without "+" or leading zeros
("+1 (415) 555-0100" → "14155550100"). Only the identifiers a customer has are put in the schema
(a customer with only an email is sent as `{"schema": ["EMAIL"], …}`), so an empty column is never
hashed; a customer with neither is refused without a call.

Answers: 2xx → sent (`audience_id`, `num_received`, `num_invalid_entries` in details; the
`session_id` as provider id); Graph errors are classified by their `error.code`, since Meta uses
400 for most of them: rate limits (4, 17, 32, 613, 80003) and transient errors (1, 2, or
`is_transient`) → retry; 190 (access token invalid or expired) and every other error → failed;
429/5xx → retry; nothing sent → retry; a read timeout → unknown.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

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

RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80003})  # app, user, page, hourly, custom-audience limits
TRANSIENT_CODES = frozenset({1, 2})  # unknown error, temporary service error
TOKEN_CODE = 190  # OAuthException: the access token is invalid, expired or revoked


# --- normalisation and hashing (pure) ------------------------------------------------------------


def normalise_email(email: str | None) -> str:
    return (email or "").strip().lower()


def normalise_phone(phone: str | None) -> str:
    """Digits only, country code included, no "+" and no leading zeros ("0044…" → "44…")."""
    digits = "".join(ch for ch in (phone or "") if ch.isascii() and ch.isdigit())
    return digits.lstrip("0")


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def hashed_payload(email: str | None, phone: str | None) -> dict[str, Any] | None:
    """The `payload` for one customer, or None when there is nothing to match them by."""
    schema: list[str] = []
    row: list[str] = []
    normal_email = normalise_email(email)
    if normal_email:
        schema.append("EMAIL")
        row.append(sha256_hex(normal_email))
    normal_phone = normalise_phone(phone)
    if normal_phone:
        schema.append("PHONE")
        row.append(sha256_hex(normal_phone))
    if not schema:
        return None
    return {"schema": schema, "data": [row]}


# --- the channel ---------------------------------------------------------------------------------


class MetaAudienceChannel:
    """Adds and removes customers in Meta custom audiences through the Marketing API."""

    provider = "meta"

    def __init__(
        self,
        access_token: str | None,
        *,
        base_url: str = "https://graph.facebook.com/v21.0",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client: httpx.Client | None = None,
    ) -> None:
        self.access_token = (access_token or "").strip() or None
        self.base_url = base_url.rstrip("/")
        self._client = client or new_client(timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> MetaAudienceChannel:
        """Built from `meta_access_token` and `meta_base_url`; HTTP timeouts follow `webhook_timeout_s`."""
        options: dict[str, Any] = {
            "base_url": settings.meta_base_url,
            "timeout_s": settings.webhook_timeout_s,
        }
        options.update(kwargs)
        return cls(settings.meta_access_token, **options)

    def missing_config(self) -> str | None:
        if not self.access_token:
            return "META_ACCESS_TOKEN is not set (WINBACK_META_ACCESS_TOKEN)"
        return None

    def sender(self, message: OutgoingMessage) -> str:
        """Meta limits audience updates per audience."""
        return message.to.strip()

    def send(self, message: OutgoingMessage) -> SendOutcome:
        problem = self.missing_config()
        if problem:
            return SendOutcome(status="failed", error=f"Meta is not configured: {problem}")
        audience_id = message.to.strip()
        if not audience_id.isdigit():
            return SendOutcome(
                status="failed", error=f"a Meta custom audience id is digits, got {audience_id[:40]!r}"
            )
        operation = str(message.data.get("operation") or "add")
        if operation not in ("add", "remove"):
            return SendOutcome(
                status="failed", error=f"unknown audience operation {operation!r} (add or remove)"
            )
        payload = hashed_payload(message.data.get("email"), message.data.get("phone"))
        if payload is None:
            return SendOutcome(
                status="failed", error="the customer has neither an email nor a phone to match"
            )
        form = {
            "access_token": self.access_token or "",
            "payload": json.dumps(payload, separators=(",", ":")),
        }
        try:
            response = self._client.request(
                "POST" if operation == "add" else "DELETE",
                f"{self.base_url}/{audience_id}/users",
                data=form,
                headers={"Accept": "application/json"},
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return transport_outcome(exc, "Meta")
        return self.classify(response)

    @staticmethod
    def _error(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            return {}
        error = body.get("error") if isinstance(body, dict) else None
        return error if isinstance(error, dict) else {}

    @classmethod
    def classify(cls, response: httpx.Response) -> SendOutcome:
        status = response.status_code
        if 200 <= status < 300:
            try:
                body = response.json()
            except ValueError:
                body = {}
            body = body if isinstance(body, dict) else {}
            received: dict[str, Any] = {
                key: body[key]
                for key in ("audience_id", "session_id", "num_received", "num_invalid_entries")
                if key in body
            }
            session = body.get("session_id")
            return SendOutcome(
                status="sent",
                provider_message_id=str(session) if session is not None else None,
                provider_status="received",
                details=received,
            )
        error = cls._error(response)
        code = error.get("code") if isinstance(error.get("code"), int) else None
        text = str(error.get("message") or response_excerpt(response) or response.reason_phrase)
        subcode = error.get("error_subcode")
        described = f"Meta {status}" + (
            f" (code {code}" + (f"/{subcode}" if subcode else "") + ")" if code else ""
        )
        details: dict[str, Any] = {"http_status": status}
        for key in ("code", "error_subcode", "type", "fbtrace_id"):
            if key in error:
                details[key] = error[key]
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status == 429 or status >= 500 or code in RATE_LIMIT_CODES or code in TRANSIENT_CODES:
            return SendOutcome(
                status="retry", error=f"{described}: {text}", retry_after_s=retry_after, details=details
            )
        if error.get("is_transient") is True:
            return SendOutcome(
                status="retry", error=f"{described}: {text}", retry_after_s=retry_after, details=details
            )
        if code == TOKEN_CODE:
            return SendOutcome(
                status="failed",
                error=f"{described}: the access token is invalid or expired: {text}",
                details=details,
            )
        return SendOutcome(status="failed", error=f"{described}: {text}", details=details)

    def check(self) -> ChannelStatus:
        """Asks the Graph API who the token belongs to (`GET /me`), which sends nothing."""
        problem = self.missing_config()
        if problem:
            return ChannelStatus(ok=False, provider=self.provider, detail=problem)
        try:
            response = self._client.get(
                f"{self.base_url}/me",
                params={"fields": "id,name"},
                headers={"Authorization": f"Bearer {self.access_token}", "Accept": "application/json"},
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return ChannelStatus(
                ok=False,
                provider=self.provider,
                detail=f"Meta could not be reached at {self.base_url}: {exc}",
            )
        if response.status_code == 200:
            try:
                body = response.json()
            except ValueError:
                body = {}
            who = body.get("name") or body.get("id") if isinstance(body, dict) else None
            return ChannelStatus(
                ok=True, provider=self.provider, detail=f"the Meta access token works ({who or 'ok'})"
            )
        error = self._error(response)
        text = str(error.get("message") or response_excerpt(response) or response.reason_phrase)
        if error.get("code") == TOKEN_CODE or response.status_code in (401, 403):
            return ChannelStatus(
                ok=False,
                provider=self.provider,
                detail=f"Meta refused the access token ({response.status_code}): {text}",
            )
        return ChannelStatus(
            ok=False, provider=self.provider, detail=f"Meta answered {response.status_code}: {text}"
        )

    def close(self) -> None:
        self._client.close()


MetaChannel = MetaAudienceChannel  # the name the other adapters' pattern suggests
