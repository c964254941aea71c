"""FakeTwilio: a local stand-in for Twilio's Messages API, and the callbacks Twilio sends back.

    with FakeTwilio() as twilio:
        channel = TwilioChannel.from_settings(Settings(**twilio.settings()))
        outcome = channel.send(message)                     # POST …/Messages.json
        twilio.messages[0].media_urls                       # what arrived
        twilio.deliver(outcome.provider_message_id)         # signed status callback → StatusCallback
        twilio.send_inbound(app_url, from_="+1…", to=twilio.from_number, body="STOP")

It checks HTTP Basic auth (401, code 20003 "Authenticate"), the required parameters (21604 To,
21603 From/MessagingServiceSid, 21602 Body or MediaUrl) and answers 201 with a `SM…` sid and
status "queued" ("accepted" through a messaging service). Like Twilio's test credentials it has
magic recipient numbers (`MAGIC_TO`): +15005550001 invalid (21211), +15005550002 cannot route
(21612), +15005550003 no geo permission (21408), +15005550004 replied STOP (21610),
+15005550009 not a mobile (21614); and magic senders (`MAGIC_FROM`). `fail_next` answers 429/500,
`hang_next` accepts a message but holds the answer back (the client times out; the message exists:
why a timeout is "unknown").

Callbacks are signed with X-Twilio-Signature by this module's own implementation of the
algorithm, independent of winback's, so the two check each other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import httpx

from tests.peers.http_server import HTTPPeer, RecordedRequest, Reply

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "fake-twilio-auth-token"
FROM_NUMBER = "+15005550006"
API = "/2010-04-01"

MAGIC_TO: Mapping[str, tuple[int, str]] = {
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550002": (
        21612,
        "The 'To' phone number: +15005550002, is not currently reachable using the 'From' phone number via SMS.",
    ),
    "+15005550003": (
        21408,
        "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: +15005550003.",
    ),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}
MAGIC_FROM: Mapping[str, tuple[int, str]] = {
    "+15005550001": (
        21212,
        "The 'From' number +15005550001 is not a valid phone number, shortcode, or alphanumeric sender ID.",
    ),
    "+15005550007": (
        21606,
        "The 'From' phone number provided is not a valid message-capable Twilio phone number for this destination/account.",
    ),
    "+15005550008": (21611, "This 'From' number has exceeded the maximum number of queued messages."),
}


def twilio_signature(url: str, params: Mapping[str, str | Sequence[str]], auth_token: str) -> str:
    """X-Twilio-Signature, written independently of winback's (base64 HMAC-SHA1 of URL + sorted params)."""
    pieces = [url]
    for name, value in sorted(params.items()):
        values = [value] if isinstance(value, str) else list(value)
        pieces.extend(name + item for item in sorted(values))
    digest = hmac.new(auth_token.encode(), "".join(pieces).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass
class FakeMessage:
    sid: str
    account_sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    media_urls: list[str]
    status_callback: str | None
    status: str
    callbacks: list[httpx.Response] = field(default_factory=list)


def _error(status: int, code: int, message: str) -> Reply:
    return Reply(
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
    )


class FakeTwilio:
    """The Messages API on 127.0.0.1; `base_url` goes into `WINBACK_TWILIO_BASE_URL`."""

    def __init__(
        self,
        account_sid: str = ACCOUNT_SID,
        auth_token: str = AUTH_TOKEN,
        *,
        from_number: str = FROM_NUMBER,
        friendly_name: str = "Winback test account",
        account_status: str = "active",
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.from_number = from_number
        self.friendly_name = friendly_name
        self.account_status = account_status
        self.messages: list[FakeMessage] = []
        self.server = HTTPPeer(self._handle, name="fake-twilio")
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self._hang: list[float] = []

    # -- lifecycle

    def start(self) -> FakeTwilio:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return self.server.url

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for `Settings(...)` that point the Twilio adapter here."""
        values: dict[str, Any] = {
            "sms_provider": "twilio",
            "twilio_account_sid": self.account_sid,
            "twilio_auth_token": self.auth_token,
            "twilio_from_number": self.from_number,
            "twilio_base_url": self.base_url,
        }
        values.update(overrides)
        return values

    # -- what arrived

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.server.requests

    def message(self, sid: str) -> FakeMessage:
        with self._lock:
            for message in self.messages:
                if message.sid == sid:
                    return message
        raise KeyError(sid)

    # -- misbehaving on purpose

    def fail_next(self, count: int = 1, status: int = 500, *, retry_after: float | None = None) -> None:
        """Answer the next requests with `status` (429 carries Twilio's code 20429) before looking at them."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        code, text = (20429, "Too Many Requests") if status == 429 else (20500, "Internal Server Error")
        reply = _error(status, code, text)
        self.server.enqueue(*(Reply(status, reply.body, headers) for _ in range(count)))

    def hang_next(self, count: int = 1, seconds: float = 2.0) -> None:
        """Accept the next messages but hold the answers back `seconds` (cut short on stop)."""
        with self._lock:
            self._hang.extend([seconds] * count)

    # -- the API

    def _handle(self, request: RecordedRequest) -> Reply:
        prefix = f"{API}/Accounts/"
        if not request.path.startswith(prefix):
            return _error(404, 20404, "The requested resource was not found")
        if not self._authorised(request):
            return _error(401, 20003, "Authenticate")
        rest = request.path[len(prefix) :]
        if rest == f"{self.account_sid}.json" and request.method == "GET":
            return Reply(
                200,
                {
                    "sid": self.account_sid,
                    "friendly_name": self.friendly_name,
                    "status": self.account_status,
                    "type": "Full",
                },
            )
        if rest == f"{self.account_sid}/Messages.json" and request.method == "POST":
            return self._create_message(request)
        return _error(404, 20404, f"The requested resource {request.path} was not found")

    def _authorised(self, request: RecordedRequest) -> bool:
        header = request.header("Authorization") or ""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return hmac.compare_digest(user, self.account_sid) and hmac.compare_digest(password, self.auth_token)

    def _create_message(self, request: RecordedRequest) -> Reply:
        if not (request.header("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
            return _error(400, 20001, "Content-Type must be application/x-www-form-urlencoded")
        form = request.form()
        to = (form.get("To") or [""])[0]
        from_ = next(iter(form.get("From", [])), None)
        service = next(iter(form.get("MessagingServiceSid", [])), None)
        body = (form.get("Body") or [""])[0]
        media = form.get("MediaUrl", [])
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not from_ and not service:
            return _error(
                400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message."
            )
        if not body and not media:
            return _error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return _error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        if from_ is not None and from_ in MAGIC_FROM:
            return _error(400, *MAGIC_FROM[from_])
        if to in MAGIC_TO:
            return _error(400, *MAGIC_TO[to])
        with self._lock:
            sid = "SM" + f"{next(self._counter):032x}"
            message = FakeMessage(
                sid=sid,
                account_sid=self.account_sid,
                to=to,
                from_=from_,
                messaging_service_sid=service,
                body=body,
                media_urls=list(media),
                status_callback=next(iter(form.get("StatusCallback", [])), None),
                status="accepted" if service else "queued",
            )
            self.messages.append(message)
            delay = self._hang.pop(0) if self._hang else 0.0
        resource = {
            "sid": sid,
            "account_sid": self.account_sid,
            "to": to,
            "from": from_,
            "messaging_service_sid": service,
            "body": body,
            "status": message.status,
            "num_segments": "1",
            "num_media": str(len(media)),
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "price": None,
            "price_unit": "USD",
            "error_code": None,
            "error_message": None,
            "uri": f"{API}/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        return Reply(201, resource, delay_s=delay)

    # -- calling back

    def post_signed(self, url: str, params: Mapping[str, str], *, timeout: float = 5.0) -> httpx.Response:
        """POST form `params` to `url` the way Twilio does: X-Twilio-Signature over URL and params."""
        headers = {
            "X-Twilio-Signature": twilio_signature(url, params, self.auth_token),
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
        }
        return httpx.post(
            url, content=urlencode(list(params.items())).encode(), headers=headers, timeout=timeout
        )

    def deliver(
        self,
        sid: str,
        status: str = "delivered",
        *,
        error_code: int | None = None,
        url: str | None = None,
    ) -> httpx.Response:
        """Move a message to `status` (sent, delivered, undelivered, failed, read…) and report it to
        its StatusCallback (or `url`), signed. Returns the receiver's answer."""
        message = self.message(sid)
        target = url or message.status_callback
        if not target:
            raise ValueError(f"message {sid} has no StatusCallback")
        message.status = status
        params = {
            "AccountSid": message.account_sid,
            "ApiVersion": "2010-04-01",
            "From": message.from_ or self.from_number,
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": message.to,
        }
        if message.messaging_service_sid:
            params["MessagingServiceSid"] = message.messaging_service_sid
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        response = self.post_signed(target, params)
        message.callbacks.append(response)
        return response

    def send_inbound(
        self,
        to_url: str,
        from_: str,
        to: str,
        body: str,
        *,
        media_urls: Sequence[str] = (),
        message_sid: str | None = None,
    ) -> httpx.Response:
        """A shopper's text arriving at `to` (our number): POSTed, signed, to `to_url`."""
        with self._lock:
            sid = message_sid or "SM" + f"{next(self._counter) + 0xF00000:032x}"
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "Body": body,
            "From": from_,
            "MessageSid": sid,
            "NumMedia": str(len(media_urls)),
            "NumSegments": "1",
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "SmsStatus": "received",
            "To": to,
        }
        for index, media_url in enumerate(media_urls):
            params[f"MediaUrl{index}"] = media_url
            params[f"MediaContentType{index}"] = "image/jpeg"
        return self.post_signed(to_url, params)
