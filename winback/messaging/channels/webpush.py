"""Web Push (provider "webpush"): browser notifications through the browser vendors' push services.

One push is one HTTP POST to the subscription's endpoint (RFC 8030), its body encrypted for that
browser with aes128gcm (RFC 8291, through `http_ece`), signed off with a VAPID token (RFC 8292): a
JWT (ES256) naming the push service's origin (`aud`), an expiry under 24 hours (`exp`) and a
contact for the shop (`sub`, mailto: or https:), plus the application server's public key (`k`).
The VAPID key pair is made once by `generate_vapid_keys()` and kept in the database; the public
half is the `applicationServerKey` browsers subscribe with, so it must not change afterwards
(subscriptions made with the old key stop working).

What the service worker receives is the JSON `{"title", "body", "url", "message_id"}`;
`push_service_worker.js`, served at /push/sw.js, shows it and opens `url` on a click.

How a store page subscribes a shopper (the endpoints are winback's; WRITE_KEY is the tracking
write key, as for the Segment-compatible tracking API):

    // base64url → Uint8Array, the form pushManager.subscribe() takes
    function urlBase64ToUint8Array(text) {
      const padded = (text + '='.repeat((4 - (text.length % 4)) % 4)).replace(/-/g, '+').replace(/_/g, '/');
      return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    }

    async function subscribeToOffers(winbackUrl, writeKey, anonymousId) {
      if (!('serviceWorker' in navigator) || !('PushManager' in window)) return null;
      const keyResponse = await fetch(`${winbackUrl}/api/v1/push/vapid-public-key`);
      const { public_key: publicKey } = await keyResponse.json();
      const registration = await navigator.serviceWorker.register('/push/sw.js');
      const subscription = await registration.pushManager.subscribe({
        userVisibleOnly: true,                       // every push shows a notification
        applicationServerKey: urlBase64ToUint8Array(publicKey),
      });
      await fetch(`${winbackUrl}/v1/push/subscribe`, {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          Authorization: 'Basic ' + btoa(writeKey + ':'),
        },
        body: JSON.stringify({ anonymousId, subscription: subscription.toJSON() }),
      });
      return subscription;
    }

Call it from a user gesture (a "Notify me" button): browsers refuse the permission prompt
otherwise. A service worker only controls pages of the origin it is served from, so /push/sw.js
must reach the shop's pages from the shop's own origin (winback on that origin, or a proxy path).

Outcomes of a send:

| push service answer             | outcome                                              |
|---------------------------------|------------------------------------------------------|
| 201 / 202 Created, Accepted     | sent (provider id: the Location header)              |
| 404 / 410 Not Found, Gone       | failed, address_invalid (the subscription is gone)   |
| 413 Payload Too Large           | failed                                               |
| 429, 5xx                        | retry (Retry-After honoured)                         |
| 400 / 401 / 403                 | failed (VAPID token or key refused)                  |
| connection refused, DNS, TLS    | retry (nothing was sent)                             |
| timeout or drop after sending   | unknown                                              |
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import http_ece  # type: ignore[import-untyped,unused-ignore]
import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from winback.messaging.channels.base import ChannelStatus, OutgoingMessage, SendOutcome

Urgency = Literal["very-low", "low", "normal", "high"]

# RFC 8030 7.2: push services accept at least 4096 octets of body. An aes128gcm body is a header
# (16-octet salt, 4-octet record size, 1-octet key id length, the 65-octet sender key) and one
# record: the plaintext, a 1-octet delimiter and a 16-octet tag.
MAX_BODY = 4096
MAX_PLAINTEXT = MAX_BODY - (16 + 4 + 1 + 65) - 1 - 16  # 3993
JWT_LIFETIME_S = 12 * 60 * 60  # RFC 8292 allows up to 24 hours; half leaves room for clock skew
_JWT_RENEW_BEFORE_S = 60 * 60  # a cached token is renewed when less than this is left


# --- base64url ---


def b64url_encode(data: bytes) -> str:
    """Base64url without padding, as Web Push, VAPID and JWT write it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Base64url with or without padding (browsers leave it off); raises ValueError."""
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("not base64url text")
    cleaned = text.strip().rstrip("=")
    try:
        return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not base64url text: {exc}") from None


# --- VAPID keys ---


@dataclass(frozen=True, slots=True)
class VapidKeys:
    """A VAPID key pair: the private key as PKCS#8 PEM, the public key as browsers want it.

    `public_key_b64url` is the uncompressed P-256 point (65 octets, 0x04 ‖ X ‖ Y) in base64url,
    the `applicationServerKey` of `pushManager.subscribe()` and the `k` of every request.
    """

    private_key_pem: str
    public_key_b64url: str


def generate_vapid_keys() -> VapidKeys:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    return VapidKeys(private_key_pem=pem, public_key_b64url=public_key_b64url(key.public_key()))


def load_vapid_private_key(private_key_pem: str) -> ec.EllipticCurvePrivateKey:
    """The private key from PEM; ValueError unless it is an unencrypted P-256 key."""
    try:
        key = serialization.load_pem_private_key(private_key_pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise ValueError(f"the VAPID private key is not a readable PEM key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the VAPID private key must be an elliptic-curve P-256 (prime256v1) key")
    return key


def public_key_b64url(key: ec.EllipticCurvePublicKey) -> str:
    return b64url_encode(
        key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )


def vapid_public_key(private_key_pem: str) -> str:
    """The `applicationServerKey` that belongs to a stored private key."""
    return public_key_b64url(load_vapid_private_key(private_key_pem).public_key())


def subject_problem(subject: str | None) -> str | None:
    """Why `subject` cannot be a VAPID `sub` claim, or None when it can."""
    if not subject:
        return "no VAPID subject: set WINBACK_VAPID_SUBJECT (mailto:you@shop.example) or the store's support email"
    if subject.startswith("mailto:"):
        address = subject.removeprefix("mailto:")
        local, _, domain = address.partition("@")
        if not local or not domain or any(c.isspace() for c in address):
            return f"VAPID subject {subject!r} is not a mailto: address"
        return None
    if subject.startswith("https://"):
        parts = urlsplit(subject)
        return None if parts.hostname else f"VAPID subject {subject!r} has no host"
    return f"VAPID subject {subject!r} must start with mailto: or https://"


def endpoint_origin(endpoint: str) -> str:
    """The JWT audience for an endpoint: scheme://host[:port]."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"push endpoint {endpoint!r} is not an http(s) URL")
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def vapid_jwt(key: ec.EllipticCurvePrivateKey, *, audience: str, subject: str, expires_at: int) -> str:
    """A compact JWS (ES256) carrying {aud, exp, sub}."""

    def segment(value: Mapping[str, Any]) -> str:
        return b64url_encode(json.dumps(value, separators=(",", ":")).encode("utf-8"))

    signing_input = f"{segment({'typ': 'JWT', 'alg': 'ES256'})}.{segment({'aud': audience, 'exp': expires_at, 'sub': subject})}"
    r, s = decode_dss_signature(key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256())))
    # JWS wants the raw r ‖ s (32 octets each), not the DER structure cryptography returns.
    return f"{signing_input}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


# --- subscriptions and payload encryption ---


@dataclass(frozen=True, slots=True)
class Subscription:
    endpoint: str
    p256dh: bytes  # the browser's P-256 public key, uncompressed point
    auth: bytes  # the browser's 16-octet authentication secret


def parse_subscription(value: Any) -> Subscription:
    """A `PushSubscription.toJSON()` object; ValueError when it cannot be pushed to."""
    if not isinstance(value, Mapping):
        raise ValueError("no push subscription in the message (data['subscription'])")
    endpoint, keys = value.get("endpoint"), value.get("keys")
    if not isinstance(endpoint, str) or not endpoint:
        raise ValueError("the push subscription has no endpoint")
    endpoint_origin(endpoint)
    if not isinstance(keys, Mapping):
        raise ValueError("the push subscription has no keys")
    p256dh, auth = b64url_decode(str(keys.get("p256dh", ""))), b64url_decode(str(keys.get("auth", "")))
    if len(p256dh) != 65 or p256dh[0] != 0x04:
        raise ValueError("the push subscription's p256dh is not an uncompressed P-256 public key")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    except ValueError:
        raise ValueError("the push subscription's p256dh is not a point on P-256") from None
    if len(auth) != 16:
        raise ValueError("the push subscription's auth secret is not 16 octets")
    return Subscription(endpoint=endpoint, p256dh=p256dh, auth=auth)


def encrypt_payload(plaintext: bytes, subscription: Subscription) -> bytes:
    """The aes128gcm body (RFC 8291): a fresh sender key and salt for every message."""
    sender_key = ec.generate_private_key(ec.SECP256R1())
    body: bytes = http_ece.encrypt(
        plaintext,
        salt=os.urandom(16),
        private_key=sender_key,
        dh=subscription.p256dh,
        auth_secret=subscription.auth,
        version="aes128gcm",
    )
    return body


def push_payload(message: OutgoingMessage) -> bytes:
    """What the service worker receives, as UTF-8 JSON."""
    payload = {
        "title": message.subject or "",
        "body": message.body,
        "url": message.data.get("url"),
        "message_id": message.message_id,
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


class WebPushChannel:
    """Sends Web Push messages with one VAPID key pair.

    `ttl_s` is how long a push service keeps a message for a browser that is offline (the TTL
    header; 0 means deliver now or never); `urgency` lets the browser save battery. Time for the
    JWT comes from `now` (wall-clock seconds: push services check `exp` against real time).
    """

    provider = "webpush"

    def __init__(
        self,
        vapid_private_key_pem: str,
        vapid_subject: str | None,
        *,
        ttl_s: int = 24 * 60 * 60,
        timeout_s: float = 10.0,
        urgency: Urgency = "normal",
        client: httpx.Client | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.vapid_subject = vapid_subject
        self.ttl_s = max(0, int(ttl_s))
        self.urgency: Urgency = urgency
        self._now = now
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._public_key = ""
        self._problem: str | None = None
        try:
            self._key = load_vapid_private_key(vapid_private_key_pem)
            self._public_key = public_key_b64url(self._key.public_key())
        except ValueError as exc:
            self._problem = str(exc)
        self._problem = self._problem or subject_problem(vapid_subject)
        self._timeout_s = timeout_s
        self._own_client = client is None
        self._client = client  # made on the first send: check() needs no network and no TLS setup
        self._tokens: dict[str, tuple[str, int]] = {}  # audience → (JWT, exp)

    @property
    def public_key(self) -> str:
        """The `applicationServerKey` (empty when the private key could not be read)."""
        return self._public_key

    def authorization(self, endpoint: str) -> str:
        """The Authorization header for a request to `endpoint` (RFC 8292 "vapid" scheme)."""
        assert self._key is not None and self.vapid_subject, self._problem
        audience = endpoint_origin(endpoint)
        now = int(self._now())
        cached = self._tokens.get(audience)
        if cached is None or cached[1] - now < _JWT_RENEW_BEFORE_S:
            expires_at = now + JWT_LIFETIME_S
            cached = (
                vapid_jwt(self._key, audience=audience, subject=self.vapid_subject, expires_at=expires_at),
                expires_at,
            )
            self._tokens[audience] = cached
        return f"vapid t={cached[0]}, k={self._public_key}"

    # --- Channel ---

    def sender(self, message: OutgoingMessage) -> str:
        """The push service's host: each vendor paces separately."""
        subscription = message.data.get("subscription")
        endpoint = subscription.get("endpoint") if isinstance(subscription, Mapping) else None
        return urlsplit(str(endpoint or message.to)).hostname or "webpush"

    def send(self, message: OutgoingMessage) -> SendOutcome:
        if self._problem is not None:
            return SendOutcome(status="failed", error=self._problem)
        try:
            subscription = parse_subscription(message.data.get("subscription"))
        except ValueError as exc:
            return SendOutcome(
                status="failed", error=f"invalid push subscription: {exc}", address_invalid=True
            )
        plaintext = push_payload(message)
        if len(plaintext) > MAX_PLAINTEXT:
            return SendOutcome(
                status="failed",
                error=f"push payload too large: {len(plaintext)} bytes of JSON, at most {MAX_PLAINTEXT}",
            )
        headers = {
            "TTL": str(self.ttl_s),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Urgency": self.urgency,
            "Authorization": self.authorization(subscription.endpoint),
        }
        body = encrypt_payload(plaintext, subscription)
        try:
            response = self._http().post(subscription.endpoint, content=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return SendOutcome(
                status="retry", error=f"cannot reach the push service: {exc or type(exc).__name__}"
            )
        except httpx.TimeoutException as exc:
            return SendOutcome(
                status="unknown",
                error=f"the push service did not answer in time ({type(exc).__name__}); it may have the message",
            )
        except httpx.TransportError as exc:
            return SendOutcome(
                status="unknown",
                error=f"the connection to the push service broke after sending ({type(exc).__name__}: {exc})",
            )
        return self._outcome(response)

    def check(self) -> ChannelStatus:
        if self._problem is not None:
            return ChannelStatus(ok=False, provider=self.provider, detail=self._problem)
        return ChannelStatus(
            ok=True,
            provider=self.provider,
            detail=f"VAPID key pair ready (public key {self._public_key[:12]}…), subject {self.vapid_subject}",
        )

    def close(self) -> None:
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None

    # --- internals ---

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=httpx.Timeout(self._timeout_s), follow_redirects=False)
        return self._client

    def _outcome(self, response: httpx.Response) -> SendOutcome:
        code = response.status_code
        text = " ".join(response.text.split())[:300]
        answer = f"{code} {text}".strip()
        details = {"status_code": code}
        if code in (200, 201, 202):
            return SendOutcome(
                status="sent",
                provider_message_id=response.headers.get("Location"),
                provider_status=str(code),
                details=details,
            )
        if code in (404, 410):
            return SendOutcome(
                status="failed",
                error=f"the push subscription is gone ({answer})",
                provider_status=str(code),
                address_invalid=True,
                details=details,
            )
        if code == 413:
            return SendOutcome(
                status="failed",
                error=f"the push service refused the payload size ({answer})",
                provider_status="413",
            )
        if code == 429 or code >= 500:
            return SendOutcome(
                status="retry",
                error=f"the push service asked to retry later ({answer})",
                provider_status=str(code),
                retry_after_s=_retry_after(response.headers.get("Retry-After"), self._now()),
                details=details,
            )
        if code in (400, 401, 403):
            return SendOutcome(
                status="failed",
                error=f"the push service refused the request or its VAPID authorization ({answer})",
                provider_status=str(code),
                details=details,
            )
        return SendOutcome(
            status="failed",
            error=f"unexpected push service answer ({answer})",
            provider_status=str(code),
            details=details,
        )
