"""Developer tool: write a new Alembic revision from the difference between models and migrations.

    python scripts/autogenerate_migration.py "add flows"

Runs against a scratch SQLite database brought to the current head first.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

from winback.db.engine import make_engine
from winback.db.migrate import alembic_config, upgrade

if len(sys.argv) != 2:
    raise SystemExit("usage: python scripts/autogenerate_migration.py MESSAGE")
with tempfile.TemporaryDirectory() as scratch:
    engine = make_engine(f"sqlite:///{Path(scratch) / 'scratch.db'}")
    upgrade(engine)
    command.revision(alembic_config(engine), message=sys.argv[1], autogenerate=True)
