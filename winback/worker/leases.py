"""Named, expiring leases: at most one holder at a time runs a singleton piece of work.

A lease is a row in `leases` (name, holder, expires_at). Taking it is one upsert that inserts the
row, takes it over when it has expired, or renews it when the caller already holds it — so two
workers racing for the same name can never both win, on SQLite or on PostgreSQL. A crashed
holder's lease simply runs out and the next caller takes it over.

Expiry is compared with the caller's clock: holders on different machines should keep their clocks
in sync to well within the lease length.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from winback.db.engine import read_only
from winback.db.models import Lease


def acquire(engine: Engine, name: str, holder: str, now: datetime, ttl: timedelta | float) -> bool:
    """Take, take over (expired) or renew (ours) the lease `name` until `now + ttl`.

    Returns whether `holder` holds the lease afterwards. `ttl` is a timedelta or seconds.
    """
    if not isinstance(ttl, timedelta):
        ttl = timedelta(seconds=ttl)
    if ttl <= timedelta(0):
        raise ValueError(f"a lease needs a positive ttl, got {ttl}")
    with engine.begin() as connection:
        taken = connection.execute(_upsert(connection, name, holder, now, now + ttl)).scalar_one_or_none()
    return taken == holder


def _upsert(connection: Connection, name: str, holder: str, now: datetime, expires_at: datetime):  # type: ignore[no-untyped-def]
    """INSERT … ON CONFLICT (name) DO UPDATE … WHERE expired-or-ours RETURNING holder.

    The conflict branch only writes when the current lease has expired or is already ours; when it
    does not write, RETURNING yields no row — the lease belongs to someone else.
    """
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    if connection.dialect.name not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"leases need PostgreSQL or SQLite, not {connection.dialect.name}")
    table = Lease.__table__
    statement = dialect.insert(table).values(name=name, holder=holder, expires_at=expires_at)
    return statement.on_conflict_do_update(
        index_elements=[table.c.name],
        set_={"holder": statement.excluded.holder, "expires_at": statement.excluded.expires_at},
        where=or_(table.c.expires_at < now, table.c.holder == holder),
    ).returning(table.c.holder)


def release(engine: Engine, name: str, holder: str) -> bool:
    """Give the lease up if `holder` holds it; returns whether there was one to give up."""
    with engine.begin() as connection:
        result = connection.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))
    return result.rowcount == 1


def current_holder(engine: Engine, name: str, now: datetime) -> str | None:
    """Who holds the lease `name` at `now` (None when nobody does or it has expired)."""
    with read_only(engine).connect() as connection:
        return connection.execute(
            select(Lease.holder).where(Lease.name == name, Lease.expires_at >= now)
        ).scalar_one_or_none()
