"""SMS and MMS through Twilio's Programmable Messaging API, and Twilio's request signatures.

Sending is one `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json` with HTTP Basic auth
(Account SID, Auth Token) and a form body: `To`, `From` or `MessagingServiceSid`, `Body`, one
`MediaUrl` per image (MMS only) and `StatusCallback`. Twilio answers 201 with the message resource;
its `sid` (SM…) is what later status callbacks name.

How answers are classified (`classify`):

- 2xx → sent (`provider_message_id` = sid, `provider_status` = "queued"/"accepted"/…);
- 429 and 5xx → retry (`Retry-After` honoured);
- 400 with one of `ADDRESS_ERRORS` → failed with `address_invalid` (the pipeline suppresses the
  number); other 4xx (401/403 credentials, 404 account, other 400s) → failed;
- nothing sent (connection refused) → retry; read timeout after sending → unknown.

Request signatures (`signature`, `verify_signature`): Twilio signs the callbacks it sends us with
`X-Twilio-Signature` = base64(HMAC-SHA1(auth token, URL + the POST parameters)), where the URL is
the full URL Twilio called (scheme, host, port if any, path and query string, as configured) and
the parameters are appended as name immediately followed by value, no separators, sorted by name
(a repeated parameter contributes each of its values, in sorted order). Values are the decoded form
values, not their URL-encoded form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

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

API_VERSION = "2010-04-01"

# Twilio error codes (a 400's JSON `code`) that say the *recipient number* is the problem, so the
# pipeline suppresses it rather than trying again with the next message. Decided per code:
ADDRESS_ERRORS: Mapping[int, str] = {
    21211: "the 'To' number is not a valid phone number",
    21217: "the 'To' number does not appear to be valid",
    21614: "the 'To' number is not a mobile number (cannot receive SMS)",
    21610: "the recipient replied STOP: Twilio blocks messages to them until they reply START",
}
# Refusals that are *not* about the number itself — failed, but the address is kept:
# 21612 "cannot route to this number": usually the sender/recipient pairing or carrier support
#       (a From that cannot reach that country or carrier), so it is a configuration matter;
# 21408 "permission to send to this region is not enabled": the account's geo permissions;
# 21606/21212/21660 a bad or foreign From; 21602/21603/21604 a missing parameter; 20003 auth.
NOT_ADDRESS_ERRORS: Mapping[int, str] = {
    21612: "Twilio cannot route from this sender to that number (sender or carrier support)",
    21408: "the account has no permission to send to that region (Geo Permissions)",
}

ParamValue = str | Sequence[str]


# --- request signatures (pure) -------------------------------------------------------------------


def _values(value: ParamValue) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


def signature(url: str, params: Mapping[str, ParamValue], auth_token: str) -> str:
    """The `X-Twilio-Signature` Twilio sends with a request to `url` carrying these POST params."""
    data = url
    for name in sorted(params):
        for value in sorted(_values(params[name])):
            data += name + value
    mac = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def _url_variants(url: str) -> list[str]:
    """The URL as given, and with the default port added or removed (proxies differ on it)."""
    variants = [url]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return variants
    default = {"https": 443, "http": 80}.get(parts.scheme.lower())
    if default is None or parts.hostname is None:
        return variants
    userinfo, _, _ = parts.netloc.rpartition("@")
    prefix = userinfo + "@" if userinfo else ""
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is None:
        variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}")))
    elif port == default:
        variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}")))
    return variants


def verify_signature(url: str, params: Mapping[str, ParamValue], header_value: str, auth_token: str) -> bool:
    """Whether `header_value` (X-Twilio-Signature) is Twilio's signature of this request (constant time)."""
    if not header_value or not auth_token:
        return False
    given = header_value.strip().encode("utf-8", "replace")
    matched = False
    for candidate in _url_variants(url):
        expected = signature(candidate, params, auth_token).encode("ascii")
        matched |= hmac.compare_digest(expected, given)
    return matched


# --- the channel ---------------------------------------------------------------------------------


class TwilioChannel:
    """SMS/MMS through Twilio. One instance holds one HTTP client; `close()` releases it."""

    provider = "twilio"

    def __init__(
        self,
        account_sid: str | None,
        auth_token: str | None,
        *,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        base_url: str = "https://api.twilio.com",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client: httpx.Client | None = None,
    ) -> None:
        self.account_sid = (account_sid or "").strip() or None
        self.auth_token = auth_token or None
        self.from_number = (from_number or "").strip() or None
        self.messaging_service_sid = (messaging_service_sid or "").strip() or None
        self.base_url = base_url.rstrip("/")
        self._client = client or new_client(timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> TwilioChannel:
        """Built from the `twilio_*` settings; HTTP timeouts follow `webhook_timeout_s`."""
        options: dict[str, Any] = {
            "from_number": settings.twilio_from_number,
            "messaging_service_sid": settings.twilio_messaging_service_sid,
            "base_url": settings.twilio_base_url,
            "timeout_s": settings.webhook_timeout_s,
        }
        options.update(kwargs)
        return cls(settings.twilio_account_sid, settings.twilio_auth_token, **options)

    # -- configuration

    def missing_config(self) -> str | None:
        """What is missing or malformed in the configuration, or None when it is complete."""
        if not self.account_sid:
            return "TWILIO_ACCOUNT_SID is not set (WINBACK_TWILIO_ACCOUNT_SID)"
        if not self.account_sid.startswith("AC"):
            return f"TWILIO_ACCOUNT_SID must start with 'AC', got {self.account_sid[:6]!r}… (WINBACK_TWILIO_ACCOUNT_SID)"
        if not self.auth_token:
            return "TWILIO_AUTH_TOKEN is not set (WINBACK_TWILIO_AUTH_TOKEN)"
        if not self.from_number and not self.messaging_service_sid:
            return (
                "no sender: set TWILIO_FROM_NUMBER (WINBACK_TWILIO_FROM_NUMBER) or "
                "TWILIO_MESSAGING_SERVICE_SID (WINBACK_TWILIO_MESSAGING_SERVICE_SID)"
            )
        if self.messaging_service_sid and not self.messaging_service_sid.startswith("MG"):
            return "TWILIO_MESSAGING_SERVICE_SID must start with 'MG' (WINBACK_TWILIO_MESSAGING_SERVICE_SID)"
        return None

    def _url(self, suffix: str) -> str:
        return f"{self.base_url}/{API_VERSION}/Accounts/{self.account_sid}{suffix}"

    def _auth(self) -> tuple[str, str]:
        return (self.account_sid or "", self.auth_token or "")

    # -- Channel

    def sender(self, message: OutgoingMessage) -> str:
        """The messaging service SID when one is configured (Twilio then picks the number), else From."""
        return self.messaging_service_sid or self.from_number or ""

    def form_for(self, message: OutgoingMessage) -> list[tuple[str, str]]:
        """The Messages API form fields for `message` (repeated `MediaUrl` for each MMS image)."""
        form = [("To", message.to.strip())]
        if self.messaging_service_sid:
            form.append(("MessagingServiceSid", self.messaging_service_sid))
        else:
            form.append(("From", self.from_number or ""))
        if message.body:
            form.append(("Body", message.body))
        if message.channel != "sms":
            form.extend(("MediaUrl", url) for url in message.media_urls)
        if message.status_callback_url:
            form.append(("StatusCallback", message.status_callback_url))
        return form

    def send(self, message: OutgoingMessage) -> SendOutcome:
        problem = self.missing_config()
        if problem:
            return SendOutcome(status="failed", error=f"Twilio is not configured: {problem}")
        if not message.to.strip():
            return SendOutcome(status="failed", error="no recipient phone number", address_invalid=True)
        try:
            response = self._client.post(
                self._url("/Messages.json"),
                content=urlencode(self.form_for(message)).encode("ascii"),
                auth=self._auth(),
                headers={"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"},
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return transport_outcome(exc, "Twilio")
        return self.classify(response)

    @staticmethod
    def classify(response: httpx.Response) -> SendOutcome:
        status = response.status_code
        body: dict[str, Any] = {}
        try:
            parsed = response.json()
            if isinstance(parsed, dict):
                body = parsed
        except ValueError:
            pass
        if 200 <= status < 300:
            sid = body.get("sid")
            accepted: dict[str, Any] = {
                key: body[key] for key in ("num_segments", "num_media", "price", "price_unit") if key in body
            }
            return SendOutcome(
                status="sent",
                provider_message_id=str(sid) if sid else None,
                provider_status=str(body["status"]) if body.get("status") else None,
                details=accepted,
            )
        raw_code = body.get("code")
        code = raw_code if isinstance(raw_code, int) else 0
        text = str(body.get("message") or response_excerpt(response) or response.reason_phrase)
        error = f"Twilio {status}" + (f" ({code})" if code else "") + f": {text}"
        details: dict[str, Any] = {"http_status": status}
        if code:
            details["code"] = code
        if body.get("more_info"):
            details["more_info"] = body["more_info"]
        if status == 429 or status >= 500:
            return SendOutcome(
                status="retry",
                error=error,
                retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
                details=details,
            )
        if status == 400 and code in ADDRESS_ERRORS:
            return SendOutcome(
                status="failed",
                error=f"{error} — {ADDRESS_ERRORS[code]}",
                address_invalid=True,
                details=details,
            )
        if code in NOT_ADDRESS_ERRORS:
            error = f"{error} — {NOT_ADDRESS_ERRORS[code]}"
        return SendOutcome(status="failed", error=error, details=details)

    def check(self) -> ChannelStatus:
        problem = self.missing_config()
        if problem:
            return ChannelStatus(ok=False, provider=self.provider, detail=problem)
        try:
            response = self._client.get(
                self._url(".json"), auth=self._auth(), headers={"Accept": "application/json"}
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return ChannelStatus(
                ok=False,
                provider=self.provider,
                detail=f"Twilio could not be reached at {self.base_url}: {exc}",
            )
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        if response.status_code in (401, 403):
            return ChannelStatus(
                ok=False,
                provider=self.provider,
                detail=f"Twilio refused the credentials ({response.status_code}): {body.get('message') or response.reason_phrase}",
            )
        if response.status_code != 200:
            return ChannelStatus(
                ok=False,
                provider=self.provider,
                detail=f"Twilio answered {response.status_code}: {body.get('message') or response_excerpt(response)}",
            )
        account_status = body.get("status", "active")
        sending_as = (
            f"messaging service {self.messaging_service_sid}"
            if self.messaging_service_sid
            else f"from {self.from_number}"
        )
        if account_status != "active":
            return ChannelStatus(
                ok=False, provider=self.provider, detail=f"the Twilio account is {account_status}, not active"
            )
        name = body.get("friendly_name") or self.account_sid
        return ChannelStatus(
            ok=True, provider=self.provider, detail=f"Twilio account {name!s} is active; sending {sending_as}"
        )

    def close(self) -> None:
        self._client.close()
