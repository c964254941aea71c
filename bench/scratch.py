"""What the benchmarks share: progress lines on stderr, and the scratch PostgreSQL databases they
create for a run and drop afterwards (never the database a URL names)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from winback.db import engine as db_engine

PREFIX = "winback_bench"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def postgres_databases(server_url: str, names: Sequence[str]) -> Iterator[list[str]]:
    """URLs of new, empty databases `winback_bench_<pid>_<name>` on the server `server_url`
    names, one per name, dropped (with their connections) afterwards."""
    base = make_url(db_engine.normalise_url(server_url))
    admin = create_engine(base.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
    full = [f"{PREFIX}_{os.getpid()}_{name}" for name in names]
    try:
        with admin.connect() as connection:
            for name in full:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield [base.set(database=name).render_as_string(hide_password=False) for name in full]
    finally:
        with admin.connect() as connection:
            for name in full:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        log(f"  dropped PostgreSQL database{'s' if len(full) > 1 else ''} {', '.join(full)}")
