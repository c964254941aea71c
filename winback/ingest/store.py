"""Writing accepted events: one transaction per request, deduplicated by message id."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Engine, Insert, Table

from winback.db.expressions import insert_or_ignore
from winback.db.models import Event
from winback.ingest.segment import EventRow

EVENTS: Table = Event.__table__  # type: ignore[assignment]


def insert_statement(connection: Connection) -> Insert:
    """INSERT … ON CONFLICT (message_id) DO NOTHING for the connection's dialect."""
    return insert_or_ignore(connection.dialect.name, EVENTS, ["message_id"])


def append_events(connection: Connection, rows: Sequence[EventRow]) -> None:
    """Append events inside the caller's transaction; already-seen message ids are skipped."""
    if rows:
        connection.execute(insert_statement(connection), [row.as_insert() for row in rows])


def store_events(engine: Engine, rows: Sequence[EventRow]) -> None:
    """Append events in their own transaction: all of them or, on any error, none."""
    with engine.begin() as connection:
        append_events(connection, rows)
