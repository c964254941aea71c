"""Local receivers for winback's outgoing HTTP: a Slack incoming webhook, a generic webhook endpoint
that checks X-Winback-Signature, and Meta's custom-audience users endpoint.

    with SlackReceiver() as slack:
        SlackChannel(slack.webhook_url).send(message)
        slack.messages            # the JSON payloads Slack accepted

    with WebhookReceiver(secret="s3cret") as hook:
        WebhookChannel("s3cret").send(replace(message, to=hook.url))
        hook.deliveries[0].signature_valid

    with FakeMetaGraph() as meta:
        MetaAudienceChannel(meta.access_token, base_url=meta.base_url).send(message)
        meta.members[meta.audience_id]

Each wraps an `HTTPPeer` (`.server`): `fail_next`, `hang_next`, `drop_next` and `requests` come from it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs

from tests.peers.http_server import HTTPPeer, RecordedRequest, Reply


class _Wrapped:
    server: HTTPPeer

    def start(self) -> Self:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.server.requests

    def fail_next(
        self, count: int = 1, status: int = 500, *, retry_after: float | None = None, body: Any = None
    ) -> None:
        self.server.fail_next(count, status, retry_after=retry_after, body=body)

    def hang_next(self, count: int = 1, seconds: float = 2.0) -> None:
        self.server.hang_next(count, seconds)

    def drop_next(self, count: int = 1) -> None:
        self.server.drop_next(count)


# --- Slack ---------------------------------------------------------------------------------------


class SlackReceiver(_Wrapped):
    """Answers like a Slack incoming webhook: 200 "ok", or a plain-text error name.

    Only `webhook_url` exists (another path → 404 `no_service`); the body must be JSON
    (else 400 `invalid_payload`) with `text` or `blocks` (else 400 `no_text`). `archive()` makes the
    channel archived (410 `channel_is_archived`); `revoke()` the hook (403 `invalid_token`).
    """

    def __init__(self, hook_path: str = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX") -> None:
        self.hook_path = hook_path
        self.messages: list[dict[str, Any]] = []
        self.state = "live"
        self.server = HTTPPeer(self._handle, name="slack")

    @property
    def webhook_url(self) -> str:
        return self.server.url + self.hook_path

    def archive(self) -> None:
        self.state = "archived"

    def revoke(self) -> None:
        self.state = "revoked"

    def _handle(self, request: RecordedRequest) -> Reply:
        if request.method != "POST" or request.path != self.hook_path:
            return Reply(404, "no_service")
        if self.state == "revoked":
            return Reply(403, "invalid_token")
        if self.state == "archived":
            return Reply(410, "channel_is_archived")
        if not (request.header("Content-Type") or "").startswith("application/json"):
            return Reply(400, "invalid_payload")
        try:
            payload = request.json()
        except ValueError:
            return Reply(400, "invalid_payload")
        if not isinstance(payload, dict):
            return Reply(400, "invalid_payload")
        if not payload.get("text") and not payload.get("blocks"):
            return Reply(400, "no_text")
        self.messages.append(payload)
        return Reply(200, "ok")


# --- generic webhooks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    payload: Any
    body: bytes
    timestamp: str | None
    signature: str | None
    signature_valid: bool | None  # None when the receiver has no secret
    idempotency_key: str | None
    user_agent: str | None
    duplicate: bool


def expected_signature(body: bytes, timestamp: str, secret: str) -> str:
    """The receiver's own computation of X-Winback-Signature (independent of winback's code)."""
    signed = timestamp.encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


class WebhookReceiver(_Wrapped):
    """Accepts winback webhooks at `url`. With a `secret`, refuses (401) a bad or stale signature.

    Every POST is recorded in `deliveries` (valid or not); a repeated X-Winback-Idempotency-Key is
    marked `duplicate` and answered 200 without counting it again in `accepted`.
    """

    def __init__(
        self,
        secret: str | None = None,
        *,
        path: str = "/hooks/winback",
        tolerance_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        status: int = 200,
    ) -> None:
        self.secret = secret
        self.path = path
        self.tolerance_s = tolerance_s
        self.clock = clock
        self.status = status  # what a valid delivery is answered with
        self.deliveries: list[Delivery] = []
        self.accepted: list[Any] = []
        self._keys: set[str] = set()
        self._lock = threading.Lock()
        self.server = HTTPPeer(self._handle, name="webhook-receiver")

    @property
    def url(self) -> str:
        return self.server.url + self.path

    def _valid(self, body: bytes, timestamp: str | None, signature: str | None) -> bool | None:
        if self.secret is None:
            return None
        if not timestamp or not signature or not timestamp.isdigit():
            return False
        if abs(self.clock() - int(timestamp)) > self.tolerance_s:
            return False
        return hmac.compare_digest(expected_signature(body, timestamp, self.secret), signature)

    def _handle(self, request: RecordedRequest) -> Reply:
        if request.path != self.path:
            return Reply(404, "not found")
        if request.method != "POST":
            return Reply(405, "POST only")
        timestamp = request.header("X-Winback-Timestamp")
        signature = request.header("X-Winback-Signature")
        key = request.header("X-Winback-Idempotency-Key")
        valid = self._valid(request.body, timestamp, signature)
        try:
            payload = request.json()
        except ValueError:
            payload = None
        with self._lock:
            duplicate = key is not None and key in self._keys
            self.deliveries.append(
                Delivery(
                    payload,
                    request.body,
                    timestamp,
                    signature,
                    valid,
                    key,
                    request.header("User-Agent"),
                    duplicate,
                )
            )
            if valid is False:
                return Reply(401, {"error": "bad signature"})
            if payload is None:
                return Reply(400, {"error": "body is not JSON"})
            if key is not None:
                self._keys.add(key)
            if not duplicate:
                self.accepted.append(payload)
        return Reply(self.status, {"received": True, "duplicate": duplicate})


# --- Meta ----------------------------------------------------------------------------------------


def _graph_error(
    code: int, message: str, kind: str = "OAuthException", *, subcode: int | None = None
) -> Reply:
    error: dict[str, Any] = {"message": message, "type": kind, "code": code, "fbtrace_id": "AbCdEfGhIjK"}
    if subcode is not None:
        error["error_subcode"] = subcode
    return Reply(400, {"error": error})


class FakeMetaGraph(_Wrapped):
    """`/{version}/{audience_id}/users` (POST adds, DELETE removes) and `/{version}/me`.

    Checks the access token (code 190), the audience (code 100), the payload (schema a list of
    EMAIL/PHONE, each data row as long as the schema, every value a 64-hex SHA-256). `members` maps
    an audience to the set of (schema key, hash) pairs it holds. `rate_limit_next()` answers code 80003.
    """

    def __init__(
        self,
        access_token: str = "fake-meta-token",
        audience_id: str = "23850000000000001",
        version: str = "v21.0",
    ) -> None:
        self.access_token = access_token
        self.audience_id = audience_id
        self.version = version
        self.members: dict[str, set[tuple[str, str]]] = {audience_id: set()}
        self.payloads: list[tuple[str, dict[str, Any]]] = []  # (method, payload) accepted
        self._sessions = 0
        self._lock = threading.Lock()
        self.server = HTTPPeer(self._handle, name="meta-graph")

    @property
    def base_url(self) -> str:
        return f"{self.server.url}/{self.version}"

    def rate_limit_next(self, count: int = 1) -> None:
        reply = _graph_error(80003, "There have been too many calls to this ad-account.", subcode=2446079)
        self.server.enqueue(*(reply for _ in range(count)))

    def _token(self, request: RecordedRequest, form: dict[str, list[str]]) -> str | None:
        header = request.header("Authorization") or ""
        if header.lower().startswith(("bearer ", "oauth ")):
            return header.split(" ", 1)[1].strip()
        values = form.get("access_token") or request.query_params().get("access_token")
        return values[0] if values else None

    def _handle(self, request: RecordedRequest) -> Reply:
        prefix = f"/{self.version}/"
        if not request.path.startswith(prefix):
            return _graph_error(2500, "Unknown path components", "OAuthException")
        rest = request.path[len(prefix) :]
        form = parse_qs(request.body.decode(), keep_blank_values=True) if request.body else {}
        token = self._token(request, form)
        if token is None:
            return _graph_error(104, "An access token is required to request this resource.")
        if not hmac.compare_digest(token, self.access_token):
            return _graph_error(190, "Invalid OAuth access token - Cannot parse access token")
        if rest == "me" and request.method == "GET":
            return Reply(200, {"id": "10000000000001", "name": "Winback Test System User"})
        audience, _, tail = rest.partition("/")
        if tail != "users" or request.method not in ("POST", "DELETE"):
            return _graph_error(100, f"Unsupported {request.method.lower()} request.", "GraphMethodException")
        if audience not in self.members:
            return _graph_error(
                100,
                f"Unsupported request. Object with ID '{audience}' does not exist.",
                "GraphMethodException",
                subcode=33,
            )
        raw = (form.get("payload") or [""])[0]
        try:
            payload = json.loads(raw)
            schema, rows = payload["schema"], payload["data"]
        except (ValueError, KeyError, TypeError):
            return _graph_error(100, "Invalid parameter: payload", "OAuthException")
        schema = [schema] if isinstance(schema, str) else schema
        known = {"EMAIL", "PHONE", "EMAIL_SHA256", "PHONE_SHA256"}
        if not isinstance(schema, list) or not schema or any(key not in known for key in schema):
            return _graph_error(100, "Invalid parameter: schema", "OAuthException", subcode=1870053)
        invalid = 0
        pairs: set[tuple[str, str]] = set()
        for row in rows:
            values = row if isinstance(row, list) else [row]
            if len(values) != len(schema):
                invalid += 1
                continue
            for key, value in zip(schema, values, strict=True):
                if value == "":
                    continue
                if (
                    not isinstance(value, str)
                    or len(value) != 64
                    or any(c not in "0123456789abcdef" for c in value)
                ):
                    invalid += 1
                    break
                pairs.add((key.removesuffix("_SHA256"), value))
        with self._lock:
            if request.method == "POST":
                self.members[audience] |= pairs
            else:
                self.members[audience] -= pairs
            self.payloads.append((request.method, payload))
            self._sessions += 1
            session = 7000000000000000000 + self._sessions
        return Reply(
            200,
            {
                "audience_id": audience,
                "session_id": session,
                "num_received": len(rows),
                "num_invalid_entries": invalid,
                "invalid_entry_samples": {},
            },
        )
