"""Alembic environment: runs against the engine winback hands over (or the configured URL)."""

from __future__ import annotations

from alembic import context

from winback.db.engine import make_engine
from winback.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    engine = config.attributes.get("engine") or make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("winback migrations run online only: use `winback db upgrade`")
run_migrations()
