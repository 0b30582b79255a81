"""Alembic migrations of the SQL ledger (applied by `gateway serve` and `gateway migrate`)."""
