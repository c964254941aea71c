"""Shared fixtures: a migrated database on each backend, a virtual clock, keys and clients.

Every test that takes `engine` (or anything built on it) runs twice: on a SQLite file and on
PostgreSQL. PostgreSQL comes from WINBACK_TEST_POSTGRES_URL (default: the local server, trust
auth); a fresh database is created for the test session and emptied after each test. When it
cannot be reached the PostgreSQL half is skipped locally, but fails in CI (CI=true).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from winback import apikeys
from winback.db.engine import make_engine
from winback.db.migrate import upgrade
from winback.db.models import Base
from winback.kernel.clock import VirtualClock
from winback.runtime import Runtime
from winback.settings import Settings
from winback.web.app import create_app

POSTGRES_SERVER_URL = os.environ.get(
    "WINBACK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday morning


def _postgres_required() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true") or bool(os.environ.get("WINBACK_REQUIRE_POSTGRES"))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with every migration applied, copied for each test."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # the last connection to close checkpoints the WAL into the file
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated to head."""
    server = make_engine(POSTGRES_SERVER_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    name = f"winback_test_{uuid.uuid4().hex[:10]}"
    try:
        with server.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        if _postgres_required():
            pytest.fail(f"PostgreSQL is required in CI but unreachable at {POSTGRES_SERVER_URL}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_SERVER_URL}")
    url = sa.engine.make_url(POSTGRES_SERVER_URL).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url, poolclass=sa.NullPool)
    upgrade(engine)
    engine.dispose()
    yield url
    with server.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    server.dispose()


def _truncate_postgres(engine: Engine) -> None:
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "winback.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("postgres_url")
        yield url
        engine = make_engine(url, poolclass=sa.NullPool)
        _truncate_postgres(engine)
        engine.dispose()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(START)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, shopify_webhook_secret="shpss_test_secret")


@pytest.fixture
def runtime(settings: Settings, clock: VirtualClock) -> Iterator[Runtime]:
    runtime = Runtime.from_settings(settings, clock=clock)
    yield runtime
    runtime.engine.dispose()


@pytest.fixture
def engine(runtime: Runtime) -> Engine:
    return runtime.engine


@pytest.fixture
def write_key(runtime: Runtime) -> str:
    return apikeys.create_key(runtime.engine, name="test store", scope="write", now=runtime.clock.now()).secret


@pytest.fixture
def admin_key(runtime: Runtime) -> str:
    return apikeys.create_key(runtime.engine, name="test admin", scope="admin", now=runtime.clock.now()).secret


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime)) as test_client:
        yield test_client


@pytest.fixture
def admin_client(client: TestClient, admin_key: str) -> TestClient:
    client.headers["Authorization"] = f"Bearer {admin_key}"
    return client


@pytest.fixture
def track(client: TestClient, write_key: str) -> Callable[..., object]:
    """POST one Segment call: track(kind, **message) -> response."""

    def send(kind: str, **message: object):  # type: ignore[no-untyped-def]
        return client.post(f"/v1/{kind}", json=message, auth=(write_key, ""))

    return send
