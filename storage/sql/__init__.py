"""The SQL ledger (SQLite embedded default, PostgreSQL in production) via SQLAlchemy Core."""
