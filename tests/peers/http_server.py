"""A small threaded HTTP server on 127.0.0.1 for tests: records every request, answers through a handler.

    with HTTPPeer(lambda request: Reply(200, {"ok": True})) as peer:
        httpx.post(peer.url + "/hook", json={"a": 1})
        assert peer.requests[0].json() == {"a": 1}

Scripted answers go before the handler: `peer.fail_next(2, status=429, retry_after=3)` answers the
next two requests with 429, `peer.hang_next(seconds=1)` holds the next answer back (for client
timeouts), `peer.drop_next()` closes the connection without answering. Starting and stopping take
milliseconds (the standard library's ThreadingHTTPServer in a daemon thread; a hanging answer is
released as soon as the peer stops).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the peer received it (header names lower-cased)."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    received_at: float

    @property
    def target(self) -> str:
        return self.path + (f"?{self.query}" if self.query else "")

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, list[str]]:
        """The form-encoded body, every value of a repeated field kept in order."""
        return parse_qs(self.body.decode("utf-8"), keep_blank_values=True)

    def form_value(self, name: str) -> str | None:
        values = self.form().get(name)
        return values[0] if values else None

    def query_params(self) -> dict[str, list[str]]:
        return parse_qs(self.query, keep_blank_values=True)


@dataclass
class Reply:
    """An answer: `body` bytes or str as is, anything else as JSON."""

    status: int = 200
    body: Any = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # hold the answer back this long (cut short when the peer stops)
    drop: bool = False  # close the connection without answering

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, bytes):
            body = self.body
        elif isinstance(self.body, str):
            body = self.body.encode("utf-8")
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        else:
            body = json.dumps(self.body).encode("utf-8")
            headers.setdefault("Content-Type", "application/json")
        return body, headers


Handler = Callable[[RecordedRequest], Reply]


def unused_port() -> int:
    """A loopback port nothing listens on (for "connection refused" tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def refused_url(path: str = "/") -> str:
    return f"http://127.0.0.1:{unused_port()}{path}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    peer: HTTPPeer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout tests) leaves a broken pipe behind: that is expected.
        pass


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after stop()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request = RecordedRequest(
            method=self.command,
            path=parts.path,
            query=parts.query,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            received_at=time.time(),
        )
        reply = self.server.peer._reply_to(request)
        if reply.delay_s:
            self.server.peer._stopping.wait(reply.delay_s)
        if reply.drop:
            self.close_connection = True
            return
        payload, headers = reply.encoded()
        try:
            self.send_response(reply.status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class HTTPPeer:
    """A recording HTTP server on 127.0.0.1 (a free port), answering through `handler`."""

    def __init__(self, handler: Handler | None = None, *, name: str = "peer") -> None:
        self.name = name
        self.handler: Handler = handler or (lambda request: Reply(200, b"ok"))
        self.errors: list[str] = []  # tracebacks of handler exceptions (answered 500)
        self._requests: list[RecordedRequest] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> HTTPPeer:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _RequestHandler)
        server.peer = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"{self.name}-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HTTPPeer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.name} is not running")
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        """The base URL, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    # -- what arrived

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._script.clear()

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self._requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.name}: {len(self._requests)} of {count} requests arrived")
                self._arrived.wait(remaining)
            return list(self._requests)

    def __iter__(self) -> Iterator[RecordedRequest]:
        return iter(self.requests)

    # -- scripted answers

    def enqueue(self, *replies: Reply) -> None:
        """Answer the next requests with these, in order, before the handler is asked again."""
        with self._lock:
            self._script.extend(replies)

    def fail_next(
        self, count: int = 1, status: int = 500, *, retry_after: float | str | None = None, body: Any = None
    ) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self.enqueue(
            *(Reply(status, body if body is not None else f"{status}", headers) for _ in range(count))
        )

    def hang_next(self, count: int = 1, seconds: float = 2.0) -> None:
        """Hold the next answers back (then answer 200): a client with a shorter timeout gives up."""
        self.enqueue(*(Reply(200, b"late", delay_s=seconds) for _ in range(count)))

    def drop_next(self, count: int = 1) -> None:
        self.enqueue(*(Reply(drop=True) for _ in range(count)))

    def _reply_to(self, request: RecordedRequest) -> Reply:
        with self._arrived:
            self._requests.append(request)
            self._arrived.notify_all()
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            return scripted
        try:
            return self.handler(request)
        except Exception:
            text = traceback.format_exc()
            self.errors.append(text)
            return Reply(500, text)
