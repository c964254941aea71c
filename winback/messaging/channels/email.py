"""Email over SMTP: one MIME message per `OutgoingMessage`, sent on a reused connection.

`build_mime` is pure: it turns a rendered message into a `multipart/alternative` email (the text
part, and the HTML part when there is one) with From, To, Subject, Date, a Message-ID that is the
same on every attempt of the same message, Reply-To when configured, and the pipeline's extra
headers (List-Unsubscribe, List-Unsubscribe-Post, X-Winback-Message-Id). Bodies are written 7-bit
clean (quoted-printable or base64 for non-ASCII text), so no server extension is needed; headers
with non-ASCII text use RFC 2047 encoded words. Only a recipient whose mailbox name itself is
non-ASCII needs the server's SMTPUTF8 extension.

`SmtpChannel` speaks SMTP with `smtplib` and reports what the server said as a `SendOutcome`:

| what happened                                                  | outcome                     |
|----------------------------------------------------------------|-----------------------------|
| 250 after the message data                                     | sent (id = the Message-ID)  |
| RCPT refused with 5xx (550 user unknown, 553 bad mailbox …)    | failed, address_invalid     |
| any 4xx (greylisting 450/451, 452 full, 421 closing)           | retry                       |
| login refused (535)                                            | failed                      |
| STARTTLS required but not offered, AUTH not offered            | failed (a configuration fix)|
| connection refused, DNS, TLS handshake, greeting refused       | retry (nothing was sent)    |
| timeout or disconnect once the DATA command has gone out       | unknown (it may be queued)  |
| other 5xx (MAIL FROM, DATA)                                    | failed                      |

A reused connection the server has closed meanwhile (idle timeout, or 421 to MAIL/RCPT) is opened
again once for the same message: nothing had been sent on it.

A 5xx at RCPT with the enhanced status 5.7.x is a policy refusal about the sender or the content,
not about the mailbox: it is failed without address_invalid.
"""

from __future__ import annotations

import contextlib
import hashlib
import smtplib
import socket
import ssl
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Literal

from winback.messaging.channels.base import ChannelStatus, OutgoingMessage, SendOutcome
from winback.settings import Settings

Security = Literal["none", "starttls", "tls"]

# Headers are folded at 78 characters and non-ASCII header text becomes encoded words; bodies are
# encoded to 7-bit (quoted-printable or base64, whichever is shorter), lines end in CRLF.
MIME_POLICY = email_policy.SMTP.clone(cte_type="7bit")
# The same, but headers may carry raw UTF-8 (RFC 6531): used only when an address needs it.
MIME_POLICY_UTF8 = email_policy.SMTPUTF8.clone(cte_type="7bit")

# Headers the adapter writes itself; `OutgoingMessage.headers` may not replace them.
_OWN_HEADERS = frozenset(
    {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
)
_MAX_LINE = 998  # RFC 5322 2.1.1: the hard limit on a line, CRLF excluded


class _PreFoldedHeader(str):
    """An ASCII header value folded at its own ", " and space boundaries, never encoded.

    The email package folds an unstructured header whose single word is longer than a line (a
    long unsubscribe URL) into RFC 2047 encoded words, which receivers do not decode in URL
    headers such as List-Unsubscribe. Giving the policy an object with `name` and `fold` makes it
    use this folding instead (`email.policy.EmailPolicy.header_store_parse`).
    """

    name: str

    def __new__(cls, name: str, value: str) -> _PreFoldedHeader:
        header = super().__new__(cls, value)
        header.name = name
        return header

    def fold(self, *, policy: Any) -> str:
        """Fold at spaces only (a fold is CRLF before a space, so unfolding gives the value back)."""
        limit = 78
        line, has_word = f"{self.name}:", False
        lines: list[str] = []
        for word in str(self).split(" "):
            if has_word and len(line) + 1 + len(word) > limit:
                lines.append(line)
                line = ""
            line += " " + word
            has_word = has_word or bool(word)
        lines.append(line)
        if any(len(item) > _MAX_LINE for item in lines):
            raise ValueError(f"header {self.name} has a word longer than {_MAX_LINE} characters")
        return "\r\n".join(lines) + "\r\n"


def parse_sender(value: str) -> Address:
    """`email_from` ("shop@example.com" or "Shop Name <shop@example.com>") as an Address."""
    header = email_policy.default.header_factory("From", value)
    addresses: tuple[Address, ...] = tuple(getattr(header, "addresses", ()))
    if len(addresses) != 1 or header.defects or not addresses[0].username or not addresses[0].domain:
        raise ValueError(f"not an email address: {value!r} (expected 'Shop <shop@example.com>')")
    address: Address = addresses[0]
    return address


def _recipient(value: str) -> Address:
    username, at, domain = value.strip().rpartition("@")
    if not at or not username or not domain or any(c in value for c in "<>\r\n \t,"):
        raise ValueError(f"not an email address: {value!r}")
    if not domain.isascii():
        # An internationalised domain in its ASCII form needs nothing from the server; one the
        # idna codec cannot convert stays UTF-8 and needs SMTPUTF8.
        with contextlib.suppress(UnicodeError):
            domain = domain.encode("idna").decode("ascii")
    return Address(username=username, domain=domain)


def message_id_for(message: OutgoingMessage, domain: str) -> str:
    """The Message-ID header: the same for every attempt of one message, unique across messages."""
    digest = hashlib.sha256(f"{message.message_id}\0{message.idempotency_key}".encode()).hexdigest()[:20]
    return f"<winback.{message.message_id}.{digest}@{domain}>"


def needs_smtputf8(mime: EmailMessage) -> bool:
    """Whether an address in the message can only be written as UTF-8 (RFC 6531)."""
    for name in ("From", "To", "Reply-To"):
        header = mime.get(name)
        if header is None:
            continue
        for address in getattr(header, "addresses", ()):
            if not address.addr_spec.isascii():
                return True
    return False


def build_mime(
    message: OutgoingMessage,
    *,
    sender: str,
    reply_to: str | None = None,
    now: datetime | None = None,
) -> EmailMessage:
    """The MIME message for `message` (raises ValueError for an unusable address or header)."""
    from_address = parse_sender(sender)
    mime = EmailMessage(policy=MIME_POLICY)
    mime["From"] = from_address
    mime["To"] = _recipient(message.to)
    mime["Subject"] = message.subject or ""
    mime["Date"] = format_datetime(now or datetime.now(UTC))
    mime["Message-ID"] = message_id_for(message, from_address.domain)
    if reply_to:
        mime["Reply-To"] = parse_sender(reply_to)
    _add_headers(mime, message.headers)
    mime.set_content(message.body, subtype="plain", charset="utf-8")
    if message.html is not None:
        mime.add_alternative(message.html, subtype="html", charset="utf-8")
    return mime


def _add_headers(mime: EmailMessage, headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        if name.lower() in _OWN_HEADERS:
            raise ValueError(f"header {name} is written by the email channel and cannot be passed in")
        if any(c in name for c in ":\r\n \t") or not name.isascii() or not name:
            raise ValueError(f"invalid header name {name!r}")
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name} contains a line break")
        if name in mime:
            del mime[name]
        if value.isascii():
            mime[name] = _PreFoldedHeader(name, value)
        else:
            mime[name] = value


def _text(text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(text.split())


def _code_text(code: int, text: bytes | str) -> str:
    return f"{code} {_text(text)}".strip()


def _enhanced_status(text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    first = text.strip().split(" ", 1)[0]
    parts = first.split(".")
    return first if len(parts) == 3 and all(p.isdigit() for p in parts) else ""


class _ConnectFailed(Exception):
    """Opening a session failed; `outcome` says how to report it."""

    def __init__(self, outcome: SendOutcome) -> None:
        super().__init__(outcome.error)
        self.outcome = outcome


class SmtpChannel:
    """Sends email through one SMTP server (provider "smtp"), one connection reused across sends.

    `ssl_context` verifies the server's certificate for "starttls" and "tls"; the default is
    `ssl.create_default_context()` (system CAs, hostname checked). Tests pass a context that
    trusts their self-signed certificate.
    """

    provider = "smtp"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        security: Security = "none",
        username: str | None = None,
        password: str | None = None,
        reply_to: str | None = None,
        timeout_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        if security not in ("none", "starttls", "tls"):
            raise ValueError(f"smtp security must be none, starttls or tls, got {security!r}")
        self.host = host
        self.port = port
        self.security: Security = security
        self.username = username
        self.password = password
        self.sender_header = sender
        self.reply_to = reply_to
        self.timeout_s = timeout_s
        self.local_hostname = local_hostname
        self._ssl_context = ssl_context
        self._connection: smtplib.SMTP | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, ssl_context: ssl.SSLContext | None = None) -> SmtpChannel:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password,
            sender=settings.email_from,
            reply_to=settings.email_reply_to,
            timeout_s=settings.smtp_timeout_s,
            ssl_context=ssl_context,
        )

    # --- Channel ---

    def sender(self, message: OutgoingMessage) -> str:
        try:
            return parse_sender(self.sender_header).addr_spec
        except ValueError:
            return self.sender_header

    def send(self, message: OutgoingMessage) -> SendOutcome:
        try:
            mime = build_mime(message, sender=self.sender_header, reply_to=self.reply_to)
        except ValueError as exc:
            return SendOutcome(status="failed", error=f"cannot build the email: {exc}")
        with self._lock:
            return self._send_locked(mime)

    def check(self) -> ChannelStatus:
        try:
            address = parse_sender(self.sender_header)
            if self.reply_to:
                parse_sender(self.reply_to)
        except ValueError as exc:
            return ChannelStatus(
                ok=False, provider=self.provider, detail=f"WINBACK_EMAIL_FROM/REPLY_TO: {exc}"
            )
        if (self.username is None) != (self.password is None):
            return ChannelStatus(
                ok=False,
                provider=self.provider,
                detail="set both WINBACK_SMTP_USERNAME and WINBACK_SMTP_PASSWORD, or neither",
            )
        try:
            connection = self._open()
        except _ConnectFailed as exc:
            return ChannelStatus(
                ok=False, provider=self.provider, detail=exc.outcome.error or "cannot connect"
            )
        try:
            code, text = connection.noop()
            if code != 250:
                return ChannelStatus(
                    ok=False, provider=self.provider, detail=f"NOOP answered {_code_text(code, text)}"
                )
            with contextlib.suppress(smtplib.SMTPException, OSError):
                connection.quit()
        except (smtplib.SMTPException, OSError) as exc:
            return ChannelStatus(
                ok=False, provider=self.provider, detail=f"{self._where()}: connection lost ({exc})"
            )
        finally:
            connection.close()
        login = f", logged in as {self.username}" if self.username else ""
        return ChannelStatus(
            ok=True,
            provider=self.provider,
            detail=f"{self._where()} ({self.security}){login}; sending as {address.addr_spec}",
        )

    def close(self) -> None:
        with self._lock:
            self._drop(polite=True)

    # --- internals ---

    def _where(self) -> str:
        return f"SMTP server {self.host}:{self.port}"

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def _open(self) -> smtplib.SMTP:
        """A connected, greeted, secured and logged-in session; raises _ConnectFailed."""
        connection: smtplib.SMTP | None = None
        where = self._where()
        try:
            # Connecting in the constructor also tells smtplib the host name TLS verifies.
            if self.security == "tls":
                connection = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    timeout=self.timeout_s,
                    local_hostname=self.local_hostname,
                    context=self._context(),
                )
            else:
                connection = smtplib.SMTP(
                    self.host, self.port, timeout=self.timeout_s, local_hostname=self.local_hostname
                )
            connection.ehlo()
            if self.security == "starttls":
                if not connection.has_extn("starttls"):
                    raise _ConnectFailed(
                        SendOutcome(
                            status="failed",
                            error=f"{where} does not offer STARTTLS (WINBACK_SMTP_SECURITY=starttls); "
                            "refusing to send in clear text",
                        )
                    )
                connection.starttls(context=self._context())
                connection.ehlo()
            if self.username is not None:
                if not connection.has_extn("auth"):
                    raise _ConnectFailed(
                        SendOutcome(status="failed", error=f"{where} does not offer AUTH (login configured)")
                    )
                connection.login(self.username, self.password or "")
            return connection
        except _ConnectFailed:
            self._discard(connection)
            raise
        except smtplib.SMTPAuthenticationError as exc:
            self._discard(connection)
            raise _ConnectFailed(
                SendOutcome(
                    status="failed",
                    error=f"SMTP refused the login ({exc.smtp_code}): {_text(exc.smtp_error)}",
                    provider_status=str(exc.smtp_code),
                )
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            self._discard(connection)
            raise _ConnectFailed(SendOutcome(status="failed", error=f"{where}: {exc}")) from None
        except smtplib.SMTPResponseException as exc:  # greeting, EHLO or STARTTLS refused
            self._discard(connection)
            # A refused greeting is the server turning connections away for now (busy, a temporary
            # block): retry. A 5xx to EHLO or STARTTLS will not change by itself: failed.
            permanent = 500 <= exc.smtp_code < 600 and not isinstance(exc, smtplib.SMTPConnectError)
            status: Literal["retry", "failed"] = "failed" if permanent else "retry"
            raise _ConnectFailed(
                SendOutcome(
                    status=status,
                    error=f"{where} answered {_code_text(exc.smtp_code, exc.smtp_error)}",
                    provider_status=str(exc.smtp_code),
                )
            ) from None
        except ssl.SSLError as exc:
            self._discard(connection)
            raise _ConnectFailed(
                SendOutcome(status="retry", error=f"TLS handshake with {where} failed: {exc}")
            ) from None
        except socket.gaierror as exc:
            self._discard(connection)
            raise _ConnectFailed(
                SendOutcome(status="retry", error=f"cannot resolve {self.host}: {exc.strerror or exc}")
            ) from None
        except (smtplib.SMTPException, OSError) as exc:  # refused, timed out, reset, closed early
            self._discard(connection)
            reason = (
                exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            )
            raise _ConnectFailed(
                SendOutcome(status="retry", error=f"cannot connect to {where}: {reason}")
            ) from None

    @staticmethod
    def _discard(connection: smtplib.SMTP | None) -> None:
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.close()

    def _drop(self, *, polite: bool = False) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if polite:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                connection.quit()
        self._discard(connection)

    def _send_locked(self, mime: EmailMessage) -> SendOutcome:
        message_id = str(mime["Message-ID"])
        envelope_from = parse_sender(self.sender_header).addr_spec
        envelope_to = mime["To"].addresses[0].addr_spec
        utf8 = needs_smtputf8(mime)
        for attempt in (1, 2):
            reused = self._connection is not None
            if self._connection is None:
                try:
                    self._connection = self._open()
                except _ConnectFailed as exc:
                    return exc.outcome
            connection = self._connection
            try:
                before = self._envelope(connection, envelope_from, envelope_to, utf8)
            except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
                # A reused connection the server had closed (idle timeout): nothing was sent.
                self._drop()
                if reused and attempt == 1:
                    continue
                return SendOutcome(status="retry", error=f"{self._where()} closed the connection: {exc}")
            except (smtplib.SMTPException, OSError) as exc:
                self._drop()
                return SendOutcome(status="retry", error=f"{self._where()}: {exc or type(exc).__name__}")
            if before is not None:
                return before
            return self._data(connection, mime, message_id, utf8)
        raise AssertionError("unreachable")  # pragma: no cover

    def _envelope(
        self, connection: smtplib.SMTP, envelope_from: str, envelope_to: str, utf8: bool
    ) -> SendOutcome | None:
        """MAIL FROM and RCPT TO; an outcome when the transaction cannot go on, None to continue."""
        options: list[str] = []
        if utf8:
            if not connection.has_extn("smtputf8"):
                return SendOutcome(
                    status="failed",
                    error=f"{self._where()} does not support SMTPUTF8, needed for {envelope_to}",
                )
            options.append("SMTPUTF8")
        code, text = connection.mail(envelope_from, options)
        if code == 421:  # closing the session (e.g. too many messages on one connection)
            raise smtplib.SMTPServerDisconnected(f"MAIL FROM answered {_code_text(code, text)}")
        if code != 250:
            return self._refused("MAIL FROM", code, text, connection)
        code, text = connection.rcpt(envelope_to)
        if code == 421:
            raise smtplib.SMTPServerDisconnected(f"RCPT TO answered {_code_text(code, text)}")
        if code not in (250, 251):
            return self._refused("RCPT TO", code, text, connection, recipient=True)
        return None

    def _refused(
        self,
        stage: str,
        code: int,
        text: bytes | str,
        connection: smtplib.SMTP,
        *,
        recipient: bool = False,
    ) -> SendOutcome:
        detail = f"{stage} refused: {_code_text(code, text)}"
        if code == 421 or code < 400 or code >= 600:  # closing, or an answer SMTP does not have
            self._drop()
        else:
            try:
                connection.rset()
            except (smtplib.SMTPException, OSError):
                self._drop()
        if not 500 <= code < 600:  # 4xx, or a garbled answer: nothing was accepted, try later
            return SendOutcome(status="retry", error=detail, provider_status=str(code))
        address_invalid = recipient and 500 <= code < 600 and not _enhanced_status(text).startswith("5.7.")
        return SendOutcome(
            status="failed", error=detail, provider_status=str(code), address_invalid=address_invalid
        )

    def _data(self, connection: smtplib.SMTP, mime: EmailMessage, message_id: str, utf8: bool) -> SendOutcome:
        payload = mime.as_bytes(policy=MIME_POLICY_UTF8 if utf8 else MIME_POLICY)
        try:
            code, text = connection.data(payload)
        except smtplib.SMTPDataError as exc:  # DATA itself refused: nothing was sent
            return self._refused("DATA", exc.smtp_code, exc.smtp_error, connection)
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            what = "timed out" if isinstance(exc, TimeoutError) else f"failed ({exc})"
            return SendOutcome(
                status="unknown",
                error=f"{self._where()} {what} after the message data was sent; it may have been queued",
                provider_message_id=message_id,
            )
        if code == 250:
            return SendOutcome(
                status="sent",
                provider_message_id=message_id,
                provider_status=_code_text(code, text)[:200],
            )
        if not 400 <= code < 600:  # neither accepted nor refused: the server may still deliver it
            self._drop()
            return SendOutcome(
                status="unknown",
                error=f"{self._where()} gave an unreadable answer to the message data: {_code_text(code, text)}",
                provider_message_id=message_id,
            )
        return self._refused("message data", code, text, connection)
