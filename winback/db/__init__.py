"""Storage: engine and sessions, table models, and the Alembic migrations that create them."""
