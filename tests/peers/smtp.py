"""A real SMTP server on 127.0.0.1 for the email channel's tests (aiosmtpd in a thread).

    cert = make_self_signed_cert(tmp_path)            # only for "starttls" / "tls"
    with SmtpPeer(security="starttls", cert=cert, users={"shop": "s3cret"}) as server:
        channel = SmtpChannel(host=server.host, port=server.port, security="starttls",
                              username="shop", password="s3cret", sender="Shop <shop@example.com>",
                              ssl_context=server.client_context())
        channel.send(...)
        server.messages[0].message["Subject"]         # parsed with email.policy.default

Behaviour switches: `refuse={"gone@example.com": "550 5.1.1 No such user"}` answers RCPT TO
with that reply (a 451 greylists); `after_data="drop"` closes the connection instead of answering
the message data, `"hang"` answers nothing for `hang_s` (both still record the message, as a real
server might have queued it); `idle_timeout_s` closes sessions that stay idle that long.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import warnings
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"


@dataclass(frozen=True)
class SelfSignedCert:
    cert_path: Path
    key_path: Path


def make_self_signed_cert(directory: Path, host: str = HOST) -> SelfSignedCert:
    """A P-256 certificate for `host` (IP address and "localhost"), valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "winback test SMTP")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return SelfSignedCert(cert_path=cert_path, key_path=key_path)


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # exactly what came after DATA (dot-unstuffed, CRLF line ends)
    message: EmailMessage  # `data` parsed with email.policy.default
    mail_options: list[str]
    login: str | None  # the authenticated user
    tls: bool  # whether the session was encrypted (STARTTLS or implicit TLS)


class _Handler:
    def __init__(self, peer: SmtpPeer) -> None:
        self.peer = peer

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self.peer.refuse.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.content if isinstance(envelope.content, bytes) else b""
        transport: Any = server.transport
        tls = session.ssl is not None or transport.get_extra_info("ssl_object") is not None
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        self.peer.messages.append(
            ReceivedMail(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                data=data,
                message=BytesParser(policy=policy.default).parsebytes(data),
                mail_options=list(envelope.mail_options),
                login=login,
                tls=tls,
            )
        )
        if self.peer.after_data == "drop":
            transport.abort()
            return "421 closing"  # never reaches the client
        if self.peer.after_data == "hang":
            await asyncio.sleep(self.peer.hang_s)
        return "250 2.0.0 Queued"


class _Controller(Controller):
    """Listens on a free port (port 0) and learns which one before aiosmtpd's start-up probe."""

    def _trigger_server(self) -> None:
        server: Any = self.server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]

    def factory(self) -> SMTP:
        with warnings.catch_warnings():  # "AUTH without TLS": wanted here, for security="none"
            warnings.simplefilter("ignore", UserWarning)
            server: SMTP = super().factory()  # type: ignore[no-untyped-call]
        return server


class SmtpPeer:
    def __init__(
        self,
        *,
        security: Literal["none", "starttls", "tls"] = "none",
        cert: SelfSignedCert | None = None,
        users: dict[str, str] | None = None,
        refuse: dict[str, str] | None = None,
        after_data: Literal["accept", "drop", "hang"] = "accept",
        hang_s: float = 2.0,
        idle_timeout_s: float = 60.0,
    ) -> None:
        if security != "none" and cert is None:
            raise ValueError("a TLS server needs a certificate: make_self_signed_cert(tmp_path)")
        self.security = security
        self.cert = cert
        self.users = dict(users or {})
        self.refuse = {k.lower(): v for k, v in (refuse or {}).items()}
        self.after_data = after_data
        self.hang_s = hang_s
        self.idle_timeout_s = idle_timeout_s
        self.messages: list[ReceivedMail] = []
        self.failed_logins: list[str] = []
        self.host = HOST
        self._controller: _Controller | None = None
        self._port: int | None = None  # kept after stop(): tests name it in assertions

    @property
    def port(self) -> int:
        assert self._port is not None, "start() the server first"
        return self._port

    def client_context(self) -> ssl.SSLContext:
        """An SSL context that trusts this server's certificate (and verifies the host name)."""
        assert self.cert is not None
        return ssl.create_default_context(cafile=str(self.cert.cert_path))

    def _server_context(self) -> ssl.SSLContext:
        assert self.cert is not None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert.cert_path, self.cert.key_path)
        return context

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            if self.users.get(login) == password:
                return AuthResult(success=True, auth_data=auth_data)
            self.failed_logins.append(login)
        return AuthResult(success=False, handled=False)

    def start(self) -> SmtpPeer:
        kwargs: dict[str, Any] = {
            "hostname": self.host,
            "port": 0,
            "server_hostname": "smtp.test",  # spares aiosmtpd a getfqdn() lookup
            "ready_timeout": 5.0,
            "timeout": self.idle_timeout_s,  # an idle session is closed with "421 timeout"
        }
        if self.users:
            kwargs.update(
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=self.security == "starttls",  # implicit TLS is encrypted already
            )
        if self.security == "starttls":
            kwargs.update(tls_context=self._server_context(), require_starttls=True)
        elif self.security == "tls":
            kwargs.update(ssl_context=self._server_context())
        self._controller = _Controller(_Handler(self), **kwargs)
        self._controller.start()
        self._port = int(self._controller.port)
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpPeer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
