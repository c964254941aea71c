"""Signed, URL-safe tokens for the links shoppers follow: the open pixel and unsubscribe pages.

A token is `<payload>.<mac>`, both unpadded base64url: the payload is the parts joined by a unit
separator, the MAC is HMAC-SHA256 over the kind and the payload, keyed with the "link-signing"
secret (`winback.messaging.secrets.link_signing_key`) and truncated to 128 bits — plenty against
forgery online, and short enough for an SMS. The kind ("open", "unsubscribe", …) is signed but
not written, so a token made for one purpose is refused for another.

Pure: no I/O. The key is passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Final

MAC_BYTES: Final = 16
SEPARATOR: Final = "\x1f"  # ASCII unit separator: never part of an id or a channel name

OPEN: Final = "open"
UNSUBSCRIBE: Final = "unsubscribe"


class InvalidToken(ValueError):
    """The token was not made by this server for this purpose (tampered, truncated or foreign)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if not text or any(
        c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in text
    ):
        raise InvalidToken("the token contains characters a winback token never has")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("the token is not valid base64url") from None


def _mac(key: bytes, kind: str, payload: bytes) -> bytes:
    message = kind.encode("utf-8") + b"\x00" + payload
    return hmac.new(key, message, hashlib.sha256).digest()[:MAC_BYTES]


def make_token(key: bytes, kind: str, *parts: str | int) -> str:
    """A token standing for `parts` (ids, a channel) for one `kind` of use."""
    if not key:
        raise ValueError("a signing key is required")
    texts = [str(part) for part in parts]
    if any(SEPARATOR in text for text in texts):
        raise ValueError("token parts cannot contain the unit separator")
    payload = SEPARATOR.join(texts).encode("utf-8")
    return f"{_b64(payload)}.{_b64(_mac(key, kind, payload))}"


def read_token(key: bytes, kind: str, token: str) -> tuple[str, ...]:
    """The parts a token was made from; `InvalidToken` when it was altered or made for another kind."""
    encoded_payload, dot, encoded_mac = token.partition(".")
    if not dot or not encoded_mac:
        raise InvalidToken("the token is incomplete (was the link cut short?)")
    payload = _unb64(encoded_payload)
    given = _unb64(encoded_mac)
    if not hmac.compare_digest(given, _mac(key, kind, payload)):
        raise InvalidToken(f"the token's signature does not match: it was altered or is not a {kind} token")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:  # pragma: no cover - only a signed payload gets here
        raise InvalidToken("the token's payload is not text") from None
    return tuple(text.split(SEPARATOR))
