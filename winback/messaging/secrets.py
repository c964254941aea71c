"""Keys winback makes for itself once and keeps: the link-signing key, the VAPID key pair.

`get_or_create_secret` is race-safe across processes: every caller inserts its candidate with
`INSERT … ON CONFLICT (name) DO NOTHING` and then reads the row back, so whoever committed first
wins and everyone uses that value. Values are cached per database (engine pool) for the life of the process.

With an engine the secret is written in its own short transaction. With a session it is written
in the caller's transaction; it is then cached only once it was read as already stored (a value
this call inserted could still be rolled back with the caller's transaction).
"""

from __future__ import annotations

import base64
import json
import secrets as _random
import threading
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import Connection, Engine, Table, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import Pool

from winback.db.engine import reading, transaction
from winback.db.expressions import insert_or_ignore
from winback.db.models import SecretValue

LINK_SIGNING: Final = "link-signing"
VAPID: Final = "vapid"

SECRETS: Table = SecretValue.__table__  # type: ignore[assignment]

# Keyed by the engine's connection pool: an engine and its option views (`read_only(engine)`) share
# one pool, and each database (each test's) has its own.
_cache: weakref.WeakKeyDictionary[Pool, dict[str, str]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _pool_of(bind: Engine | Connection) -> Pool:
    return (bind if isinstance(bind, Engine) else bind.engine).pool


def _cached(pool: Pool, name: str) -> str | None:
    with _lock:
        return _cache.get(pool, {}).get(name)


def _remember(pool: Pool, name: str, value: str) -> None:
    with _lock:
        _cache.setdefault(pool, {})[name] = value


def forget_cached() -> None:
    """Drop every cached secret (tests that empty the database between runs)."""
    with _lock:
        _cache.clear()


def _insert_then_read(session: Session, name: str, make: Callable[[], str]) -> tuple[str, bool]:
    """The stored value and whether this call stored it."""
    existing = session.scalar(select(SecretValue.value).where(SecretValue.name == name))
    if existing is not None:
        return existing, False
    connection = session.connection()
    # RETURNING says whether this call inserted (rowcount is unreliable for ON CONFLICT on psycopg).
    statement = insert_or_ignore(connection.dialect.name, SECRETS, ["name"]).returning(SECRETS.c.name)
    inserted = connection.execute(statement, {"name": name, "value": make(), "created_at": datetime.now(UTC)})
    ours = inserted.first() is not None
    stored = session.scalar(select(SecretValue.value).where(SecretValue.name == name))
    if stored is None:  # pragma: no cover - the row was just inserted or already there
        raise RuntimeError(f"secret {name!r} could not be stored")
    return stored, ours


def get_or_create_secret(engine_or_session: Engine | Session, name: str, make: Callable[[], str]) -> str:
    """The secret stored under `name`, made with `make()` and stored first if there is none."""
    if isinstance(engine_or_session, Session):
        session = engine_or_session
        pool = _pool_of(session.get_bind())
        cached = _cached(pool, name)
        if cached is not None:
            return cached
        value, inserted = _insert_then_read(session, name, make)
        if not inserted:
            _remember(pool, name, value)
        return value
    engine = engine_or_session
    pool = _pool_of(engine)
    cached = _cached(pool, name)
    if cached is not None:
        return cached
    # Read first without the write lock (SQLite's BEGIN IMMEDIATE would wait for any writer,
    # including a caller that holds a transaction of its own); write only when it is missing.
    with reading(engine) as reader:
        stored = reader.scalar(select(SecretValue.value).where(SecretValue.name == name))
    if stored is not None:
        _remember(pool, name, stored)
        return stored
    with transaction(engine) as own:
        value, _inserted = _insert_then_read(own, name, make)
    _remember(pool, name, value)
    return value


def _new_signing_key() -> str:
    return base64.urlsafe_b64encode(_random.token_bytes(32)).decode("ascii").rstrip("=")


def link_signing_key(engine_or_session: Engine | Session) -> bytes:
    """The HMAC key for open-pixel and unsubscribe tokens (winback/messaging/tokens.py)."""
    text = get_or_create_secret(engine_or_session, LINK_SIGNING, _new_signing_key)
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def vapid_keys(engine_or_session: Engine | Session) -> tuple[str, str]:
    """The VAPID key pair for web push: (private key PEM, public key base64url), made on first use."""

    def make() -> str:
        from winback.messaging.channels.webpush import generate_vapid_keys

        keys = generate_vapid_keys()
        return json.dumps(
            {"private_key_pem": keys.private_key_pem, "public_key_b64url": keys.public_key_b64url}
        )

    stored = json.loads(get_or_create_secret(engine_or_session, VAPID, make))
    return str(stored["private_key_pem"]), str(stored["public_key_b64url"])
