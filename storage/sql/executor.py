"""The statement executor the request-path SQL runs on (storage/sql/hot_path.py, nonces,
resume tokens): what `Runner.run_raw` (storage/sql/engine.py) hands its function as `db`.

Two implementations exist, both in storage/sql/engine.py: one over a sqlite3 cursor and one over
a native asyncpg connection. Typing only: these Protocols are never checked at run time, so they
cost the hot path nothing.
"""

from __future__ import annotations

from typing import Any, Protocol

from storage.ports import AccountEvent


class Statement(Protocol):
    """One SQL statement in both paramstyles (storage.sql.hot_path.Sql): `lite` with `?`
    placeholders for sqlite3, `pg` with `$n` placeholders for asyncpg."""

    @property
    def lite(self) -> str: ...

    @property
    def pg(self) -> str: ...


class Sql:
    """One statement in both paramstyles: `lite` (`?`, sqlite3) and `pg` (`$n`, asyncpg, with
    `pg_suffix` such as FOR UPDATE). Implements `Statement`."""

    __slots__ = ("lite", "pg")

    def __init__(self, text: str, pg_suffix: str = "") -> None:
        self.lite = text
        parts = text.split("?")
        self.pg = parts[0] + "".join(f"${i}{p}" for i, p in enumerate(parts[1:], 1)) + pg_suffix


class Executor(Protocol):
    """Runs statements inside one open transaction (begun and committed by `Runner.run_raw`).

    Rows are driver rows (a sqlite3 tuple or an asyncpg Record): indexable by column position.
    Driver errors propagate; `Runner.run_raw` turns them into StoreUnavailable.
    """

    @property
    def postgres(self) -> bool:
        """True on PostgreSQL (asyncpg): the executor is then a `PgExecutor`."""
        ...

    @property
    def events(self) -> list[AccountEvent]:
        """The account events this transaction emits; published after it commits."""
        ...

    async def one(self, q: Statement, params: tuple[Any, ...]) -> Any:
        """The first row of `q` (positional `params`), or None when there is none."""
        ...

    async def all(self, q: Statement, params: tuple[Any, ...]) -> list[Any]:
        """All rows of `q`."""
        ...

    async def run(self, q: Statement, params: tuple[Any, ...]) -> int:
        """Run `q`; the number of rows it affected."""
        ...



class PgExecutor(Executor, Protocol):
    """The PostgreSQL executor (`postgres` is True), which can also run SQL that has no SQLite
    form (the request path's CTEs that fold several writes into one round trip)."""

    async def run_text(self, text: str, params: tuple[Any, ...]) -> int:
        """Run PostgreSQL-only SQL text (`$n` placeholders); the rows affected."""
        ...
