"""The migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from winback.db import migrate
from winback.db.models import Base


def test_migrated_database_matches_the_models(engine: sa.Engine) -> None:
    # given a database brought to head by the migrations (the fixture did that)
    assert migrate.current_revision(engine) == migrate.head_revision(engine)
    # then autogenerate finds nothing left to do
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_upgrade_is_idempotent(engine: sa.Engine) -> None:
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision(engine)
