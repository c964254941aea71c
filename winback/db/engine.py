"""Engines and transactions, with the differences between SQLite and PostgreSQL kept here.

SQLite: WAL journal, NORMAL sync, a busy timeout, and write transactions that start with
`BEGIN IMMEDIATE` so two writers queue for the lock instead of failing half-way (SQLite's
single-writer path). PostgreSQL: psycopg 3.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalise_url(url: str) -> str:
    """Accept plain `postgresql://` / `postgres://` URLs and use the psycopg 3 driver for them."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _json_dumps(value: Any) -> str:
    """JSON columns through orjson (fast; Decimals and dates written as strings)."""
    return orjson.dumps(value, default=str).decode()


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, json_serializer=_json_dumps, json_deserializer=orjson.loads, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 10)
    return create_engine(url, json_serializer=_json_dumps, json_deserializer=orjson.loads, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()
        # SQLite's own lower() folds ASCII only; PostgreSQL and Python fold every letter ("MÜNCHEN").
        dbapi_connection.create_function("lower", 1, _lower, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def read_only(engine: Engine) -> Engine:
    """An engine view whose transactions only read: on SQLite they do not take the write lock."""
    return engine.execution_options(sqlite_begin="DEFERRED")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session inside one transaction: committed on success, rolled back on any error."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


@contextmanager
def reading(engine: Engine) -> Iterator[Session]:
    """A session for reads only (never commits)."""
    with Session(read_only(engine), expire_on_commit=False) as session:
        yield session


# A queue claim (`WHERE <pending> ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED`) is planned from the
# table's statistics. Until the table has been analyzed (a new database, a bulk load, autovacuum
# off) PostgreSQL expects a handful of pending rows and reads and sorts all of them on every claim
# (a bitmap scan, then a sort that may spill to disk): 116 ms per 1,000 events at a 50,000-event
# backlog, growing with it, against 17–21 ms by walking the index in claim order and stopping at
# the limit. Inside this block the planner may only walk an index in order.
_INDEX_ORDER_ONLY = ("enable_bitmapscan", "enable_sort")


@contextmanager
def index_order_only(session: Session) -> Iterator[None]:
    """Plan the statements inside without bitmap scans or sorts (PostgreSQL; elsewhere nothing):
    for queue claims whose index holds the claim order."""
    if session.get_bind().dialect.name != "postgresql":
        yield
        return
    for setting in _INDEX_ORDER_ONLY:
        session.execute(text(f"SET LOCAL {setting} = off"))
    yield  # on an error the transaction is rolled back, and SET LOCAL with it
    for setting in _INDEX_ORDER_ONLY:
        session.execute(text(f"RESET {setting}"))
