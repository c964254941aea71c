"""Write keys (ingest only) and admin keys: generated once, stored as SHA-256, checked in O(1)."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select

from winback.db.engine import reading, transaction
from winback.db.models import ApiKey
from winback.kernel.errors import InvalidInput

SCOPES = ("write", "admin")
KEY_PREFIXES = {"write": "wk_", "admin": "ak_"}
CACHE_TTL = 5.0  # seconds a verified key is trusted before the database is asked again


@dataclass(frozen=True, slots=True)
class IssuedKey:
    id: int
    name: str
    scope: str
    secret: str  # shown once, never stored


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(engine: Engine, *, name: str, scope: str, now: datetime) -> IssuedKey:
    if scope not in SCOPES:
        raise InvalidInput(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}", field="scope")
    if not name.strip():
        raise InvalidInput("a key needs a non-empty name", field="name")
    secret = KEY_PREFIXES[scope] + secrets.token_urlsafe(24)
    with transaction(engine) as session:
        row = ApiKey(
            name=name.strip(), scope=scope, key_hash=hash_key(secret), prefix=secret[:8], created_at=now
        )
        session.add(row)
        session.flush()
        return IssuedKey(id=row.id, name=row.name, scope=scope, secret=secret)


def list_keys(engine: Engine) -> list[ApiKey]:
    with reading(engine) as session:
        return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_key(engine: Engine, key_id: int, now: datetime) -> bool:
    with transaction(engine) as session:
        row = session.get(ApiKey, key_id)
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = now
        return True


class KeyVerifier:
    """Answers "which scope does this secret have?" with a short-lived in-memory cache."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._cache: dict[str, tuple[str | None, float]] = {}
        self._lock = threading.Lock()

    def scope_of(self, secret: str) -> str | None:
        digest = hash_key(secret)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and now - cached[1] < CACHE_TTL:
            return cached[0]
        with reading(self._engine) as session:
            row = session.scalar(
                select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
            )
        scope = row.scope if row else None
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (scope, now)
        return scope
