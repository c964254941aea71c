"""What the acceptance tests share besides fixtures: the live server handle and its request log."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from winback.db.models import Event

NODE_DIR = Path(__file__).parent / "node"  # package.json + lock of the JavaScript clients
NODE_MODULES = NODE_DIR / "node_modules"
EVENTS_WAIT_TIMEOUT = 15.0  # seconds
POLL_INTERVAL = 0.05  # seconds
# The columns a client decides (not ids or times): compared whole, exactly.
FACT_COLUMNS = (
    "source",
    "type",
    "event",
    "name",
    "category",
    "user_id",
    "anonymous_id",
    "group_id",
    "previous_id",
    "properties",
    "traits",
)
NO_RESPONSE = 0  # the status logged for a request the app failed without answering
CLIENT_CLOCK_PRECISION = timedelta(milliseconds=1)  # the clients send millisecond timestamps


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true")


def require_tool(available: bool, reason: str) -> None:
    """Skip locally when a client or its runtime is missing; in CI that is a failure."""
    if available:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI installs it in .ci/run)")
    pytest.skip(reason)


@dataclass(frozen=True)
class ServedRequest:
    method: str
    path: str
    content_encoding: str | None
    content_type: str | None
    origin: str | None
    status: int


class RequestLog:
    """ASGI middleware keeping one `ServedRequest` per HTTP request the app answered.

    A request is logged as its response starts, before the client can see the response: once a
    client call has returned, the log already holds the requests it made.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[ServedRequest] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
        }
        logged = False

        def log(status: int) -> None:
            nonlocal logged
            logged = True
            self.requests.append(
                ServedRequest(
                    method=scope["method"],
                    path=scope["path"],
                    content_encoding=headers.get("content-encoding"),
                    content_type=headers.get("content-type"),
                    origin=headers.get("origin"),
                    status=status,
                )
            )

        async def log_then_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                log(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, log_then_send)
        finally:
            if not logged:
                log(NO_RESPONSE)


@dataclass
class LiveServer:
    url: str
    write_key: str
    engine: sa.Engine
    log: RequestLog

    @property
    def requests(self) -> list[ServedRequest]:
        return list(self.log.requests)

    def events(self) -> list[dict[str, Any]]:
        """Every stored event row, oldest first, as column -> value."""
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(Event.__table__).order_by(Event.id)).mappings().all()
        return [dict(row) for row in rows]

    def wait_for_events(self, count: int, timeout: float = EVENTS_WAIT_TIMEOUT) -> list[dict[str, Any]]:
        """Poll the database until at least `count` events are stored; fail at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if len(events) >= count:
                return events
            if time.monotonic() > deadline:
                pytest.fail(
                    f"expected {count} events within {timeout}s, got {len(events)}: "
                    f"{[(e['type'], e['event']) for e in events]}; requests served: {self.requests}"
                )
            time.sleep(POLL_INTERVAL)


def event_facts(row: dict[str, Any]) -> dict[str, Any]:
    """The columns a client decides (not ids or times), for comparing whole rows exactly."""
    return {key: row[key] for key in FACT_COLUMNS}


def assert_stamped_in_real_time(rows: list[dict[str, Any]], *, since: datetime, until: datetime) -> None:
    """Each event was made and received inside [since, until], and its `timestamp` is the client's
    time shifted by the delay between the client's `sentAt` and the server's receipt (skew correction)."""
    for row in rows:
        assert since <= row["received_at"] <= until, row
        assert (
            since - CLIENT_CLOCK_PRECISION
            <= row["original_timestamp"]
            <= row["sent_at"]
            <= row["received_at"]
        ), row
        assert row["timestamp"] == row["received_at"] - (row["sent_at"] - row["original_timestamp"]), row
