"""A Web Push service on 127.0.0.1 that checks what a real one checks, and plays the browser too.

    with PushService() as service:
        browser = service.subscribe()                      # a P-256 key pair + 16-byte auth secret
        channel.send(OutgoingMessage(..., data={"subscription": browser.subscription_json()}))
        push = service.received[0]
        push.json()                                        # the decrypted payload
        push.claims                                        # the verified VAPID JWT claims

For every POST to a subscription's endpoint the service verifies the VAPID authorization
(RFC 8292: an ES256 JWT signed by the `k` key, `aud` = this service's origin, `exp` in the future
and at most 24 hours away, `sub` a mailto: or https: contact), requires `Content-Encoding:
aes128gcm` and a TTL, and decrypts the body (RFC 8291) with the browser's private key and auth
secret. A request that fails a check is answered 400/403 and its reason kept in `rejections`.

`service.gone(browser)` makes an endpoint answer 410 from then on; `service.http.fail_next(1,
status=429, retry_after=30)` scripts the next answers (tests/peers/http_server.py).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import http_ece  # type: ignore[import-untyped,unused-ignore]
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.peers.http_server import HTTPPeer, RecordedRequest, Reply

MAX_BODY = 4096  # RFC 8030 7.2


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Browser:
    """The browser side of one subscription: what `pushManager.subscribe()` creates."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    @property
    def p256dh(self) -> str:
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return _b64url(point)

    def subscription_json(self) -> dict[str, Any]:
        """What `PushSubscription.toJSON()` gives the page."""
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": self.p256dh, "auth": _b64url(self.auth)},
        }

    def decrypt(self, body: bytes) -> bytes:
        plaintext: bytes = http_ece.decrypt(
            body, private_key=self.private_key, auth_secret=self.auth, version="aes128gcm"
        )
        return plaintext


@dataclass(frozen=True)
class ReceivedPush:
    endpoint: str
    payload: bytes  # decrypted
    claims: dict[str, Any]  # the verified JWT claims
    vapid_public_key: str  # the `k` parameter
    headers: dict[str, str]
    body: bytes  # as sent (encrypted)

    def json(self) -> Any:
        return json.loads(self.payload)


class VapidError(Exception):
    pass


def verify_vapid(authorization: str | None, *, origin: str, now: float) -> tuple[dict[str, Any], str]:
    """The claims and public key of a valid `vapid t=…, k=…` header; raises VapidError."""
    if not authorization or not authorization.lower().startswith("vapid "):
        raise VapidError(f"Authorization is not the vapid scheme: {authorization!r}")
    params: dict[str, str] = {}
    for item in authorization[len("vapid ") :].split(","):
        name, _, value = item.strip().partition("=")
        params[name.strip().lower()] = value.strip()
    token, key_text = params.get("t"), params.get("k")
    if not token or not key_text:
        raise VapidError("vapid authorization needs t= and k=")
    try:
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _unb64url(key_text))
    except ValueError as exc:
        raise VapidError(f"k is not a P-256 public key: {exc}") from None
    parts = token.split(".")
    if len(parts) != 3:
        raise VapidError("t is not a compact JWS")
    header, claims = json.loads(_unb64url(parts[0])), json.loads(_unb64url(parts[1]))
    if header.get("alg") != "ES256":
        raise VapidError(f"JWT alg must be ES256, got {header.get('alg')!r}")
    signature = _unb64url(parts[2])
    if len(signature) != 64:
        raise VapidError("an ES256 signature is 64 octets (r ‖ s)")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public_key.verify(der, f"{parts[0]}.{parts[1]}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise VapidError("JWT signature does not verify with k") from None
    if claims.get("aud") != origin:
        raise VapidError(f"JWT aud {claims.get('aud')!r} is not this push service ({origin})")
    expires = claims.get("exp")
    if not isinstance(expires, int) or expires <= now:
        raise VapidError(f"JWT exp {expires!r} is not in the future")
    if expires > now + 24 * 60 * 60 + 60:
        raise VapidError("JWT exp is more than 24 hours away")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.startswith(("mailto:", "https:")):
        raise VapidError(f"JWT sub {subject!r} must be a mailto: or https: contact")
    return claims, key_text


@dataclass
class PushService:
    http: HTTPPeer = field(init=False)
    received: list[ReceivedPush] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)
    _browsers: dict[str, Browser] = field(default_factory=dict)
    _gone: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.http = HTTPPeer(self._handle, name="push-service")

    def start(self) -> PushService:
        self.http.start()
        return self

    def stop(self) -> None:
        self.http.stop()

    def __enter__(self) -> PushService:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        return self.http.url

    def subscribe(self) -> Browser:
        """A new browser subscription with its own endpoint on this service."""
        path = f"/wpush/v2/{secrets.token_urlsafe(24)}"
        browser = Browser(
            endpoint=self.origin + path,
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth=secrets.token_bytes(16),
        )
        with self._lock:
            self._browsers[path] = browser
        return browser

    def gone(self, browser: Browser) -> None:
        """The browser unsubscribed: its endpoint answers 410 Gone from now on."""
        with self._lock:
            self._gone.add(browser.endpoint.removeprefix(self.origin))

    def _reject(self, status: int, reason: str) -> Reply:
        with self._lock:
            self.rejections.append(reason)
        return Reply(status, {"code": status, "message": reason})

    def _handle(self, request: RecordedRequest) -> Reply:
        with self._lock:
            browser = self._browsers.get(request.path)
            gone = request.path in self._gone
        if request.method != "POST":
            return Reply(405, "POST only")
        if browser is None:
            return Reply(404, {"code": 404, "message": "no such subscription"})
        if gone:
            return Reply(410, {"code": 410, "message": "subscription expired or unsubscribed"})
        try:
            claims, key = verify_vapid(request.header("authorization"), origin=self.origin, now=time.time())
        except VapidError as exc:
            return self._reject(403, f"VAPID: {exc}")
        if request.header("content-encoding") != "aes128gcm":
            return self._reject(
                400, f"Content-Encoding must be aes128gcm, got {request.header('content-encoding')!r}"
            )
        ttl = request.header("ttl")
        if ttl is None or not ttl.isdigit():
            return self._reject(400, f"TTL header missing or not a number: {ttl!r}")
        if len(request.body) > MAX_BODY:
            return self._reject(413, f"body of {len(request.body)} bytes, at most {MAX_BODY}")
        try:
            payload = browser.decrypt(request.body)
        except Exception as exc:  # http_ece raises several kinds
            return self._reject(400, f"cannot decrypt the payload: {exc!r}")
        push = ReceivedPush(
            endpoint=browser.endpoint,
            payload=payload,
            claims=claims,
            vapid_public_key=key,
            headers=dict(request.headers),
            body=request.body,
        )
        with self._lock:
            self.received.append(push)
        return Reply(201, b"", {"Location": f"{self.origin}/m/{secrets.token_urlsafe(12)}"})
