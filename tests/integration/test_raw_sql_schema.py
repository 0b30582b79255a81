"""The request path's raw SQL (storage.sql.executor.Sql: hot_path, nonces, resume tokens) states
no schema of its own: every registered statement is prepared — parsed and resolved against the
catalogue, not run — on a freshly migrated SQLite file and PostgreSQL database (the migrations
are held to storage/sql/tables.py by test_schema_drift.py). A table or column a statement names
that the schema lacks, or an INSERT whose columns and values disagree, fails here, naming the
statement.
"""

from __future__ import annotations

import importlib
import pkgutil
import sqlite3

import pytest
from sqlalchemy.engine import make_url

import storage.sql
from storage.sql.executor import Sql
from tests.integration.conftest import run_in_thread
from tests.integration.stores import SQL_STORES

pytestmark = pytest.mark.parametrize("ledger_url", SQL_STORES, indirect=True)


def _registered() -> list[Sql]:
    """Every `Sql` statement of the storage.sql package (each module imported, so a new
    module's statements are covered without listing it here)."""
    for module in pkgutil.iter_modules(storage.sql.__path__, "storage.sql."):
        importlib.import_module(module.name)
    return list(Sql.registry)


def _problems(url: str, statements: list[Sql]) -> list[str]:
    """`statement: error` for each statement the migrated database at `url` cannot prepare."""
    if make_url(url).get_backend_name() == "sqlite":
        conn = sqlite3.connect(make_url(url).database or "")
        try:
            found = []
            for q in statements:
                if not q.sqlite:
                    continue
                try:  # EXPLAIN compiles the statement against the schema without running it
                    conn.execute("EXPLAIN " + q.lite, (None,) * q.lite.count("?"))
                except sqlite3.Error as exc:
                    found.append(f"{q.lite}: {exc}")
            return found
        finally:
            conn.close()

    async def prepare_all() -> list[str]:
        import asyncpg

        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn)
        try:
            found = []
            for q in statements:
                try:
                    await conn.prepare(q.pg)
                except asyncpg.PostgresError as exc:
                    found.append(f"{q.pg}: {exc}")
            return found
        finally:
            await conn.close()

    return run_in_thread(prepare_all)


def test_every_raw_statement_prepares_on_the_migrated_schema(ledger_url: str) -> None:
    statements = _registered()
    assert len(statements) >= 30  # hot_path, nonces and resume tokens were all found
    problems = _problems(ledger_url, statements)
    assert problems == [], "raw SQL disagrees with the schema:\n" + "\n".join(problems)


def test_a_statement_naming_a_column_the_schema_lacks_is_reported(ledger_url: str) -> None:
    # The check itself can fail: an unknown column and a short VALUES list are both caught.
    bad = [Sql("SELECT not_a_column FROM accounts WHERE id = ?", register=False),
           Sql("INSERT INTO hmac_nonces (nonce_key, expires_at_ms) VALUES (?)", register=False)]
    problems = _problems(ledger_url, bad)
    assert len(problems) == 2
    assert "not_a_column" in problems[0]
