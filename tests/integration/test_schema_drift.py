"""The migrations and the schema definition (storage/sql/tables.py) state the same schema.

Production databases are built by the Alembic revisions (storage/migrations/versions/); the
adapters' SQLAlchemy statements are built on `storage.sql.tables.metadata`. A fresh SQLite file
and a fresh PostgreSQL database are migrated to head, and Alembic's autogenerate comparison of
the result against the metadata must find nothing: a column, type, nullability, server default,
index, unique or foreign key added to one and not the other fails here, naming the difference.
"""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, create_engine, pool
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from storage.sql.tables import metadata
from tests.integration.conftest import run_in_thread
from tests.integration.stores import SQL_STORES

pytestmark = pytest.mark.parametrize("ledger_url", SQL_STORES, indirect=True)

_OPTS = {"compare_type": True, "compare_server_default": True}


def _spurious(conn: Connection, diff: Any) -> bool:
    """A difference autogenerate reports although the schemas agree. Only one is known:
    on SQLite an empty-string server default (tables.py `server_default=""`, created by the
    migration as `DEFAULT ''`) comes back from alembic's SQLite reflection as the SQL text
    `('')` and is compared with "" without unquoting (its normalisation unquotes only a
    non-empty value). The reflected text must be exactly `''` or `('')` and the wanted default
    exactly "", so any other default difference still counts.
    """
    if conn.dialect.name != "sqlite" or not isinstance(diff, list) or len(diff) != 1:
        return False
    op = diff[0]
    if op[0] != "modify_default":
        return False
    reflected, wanted = op[5], op[6]
    reflected_text = str(getattr(reflected, "arg", reflected)).strip()
    wanted_arg = getattr(wanted, "arg", wanted)
    return reflected_text in ("''", "('')") and wanted_arg == ""


def _differences(url: str, target: MetaData) -> list[Any]:
    """Autogenerate's diff of the migrated database at `url` against `target`, minus the
    known-spurious entries (see `_spurious`)."""

    def compare(conn: Connection) -> list[Any]:
        diffs = compare_metadata(MigrationContext.configure(conn, opts=_OPTS), target)
        return [d for d in diffs if not _spurious(conn, d)]

    if make_url(url).get_dialect().is_async:
        async def run() -> list[Any]:
            engine = create_async_engine(url, poolclass=pool.NullPool)
            try:
                async with engine.connect() as aconn:
                    return await aconn.run_sync(compare)
            finally:
                await engine.dispose()

        return run_in_thread(run)
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return compare(conn)
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_table_definitions(ledger_url: str) -> None:
    diffs = _differences(ledger_url, metadata)
    assert diffs == [], "migrations at head and storage/sql/tables.py disagree:\n" + "\n".join(
        f"  {d!r}" for d in diffs)


def test_a_column_missing_from_the_migrations_is_reported(ledger_url: str) -> None:
    # The check itself can fail: a column only the table definitions have is a difference.
    drifted = MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(drifted)
    drifted.tables["accounts"].append_column(Column("not_migrated", Integer, nullable=True))
    diffs = _differences(ledger_url, drifted)
    assert [(d[0], d[2], d[3].name) for d in diffs if isinstance(d, tuple)] == [
        ("add_column", "accounts", "not_migrated")]
