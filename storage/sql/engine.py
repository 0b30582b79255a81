"""Database engines and the transaction runner: one place that knows SQLite from PostgreSQL.

Ledger operations are plain synchronous functions on a SQLAlchemy `Connection`. The runner
executes each one as a single transaction:
- SQLite (embedded default): inline on the event loop, `BEGIN IMMEDIATE` so the write lock is
  taken up front (no lock upgrades, correct with several processes on one file); WAL mode.
  Each transaction is a few short statements, far cheaper than a hop to a thread.
- PostgreSQL (`postgresql+asyncpg://`): on the async engine via `AsyncConnection.run_sync`;
  per-account serialization comes from `SELECT … FOR UPDATE` on the account row.
Driver errors become `StoreUnavailable` here, at the adapter edge.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from storage.ports import StoreUnavailable, UnknownAccount

T = TypeVar("T")


def sync_url(url: str) -> str:
    """The URL with a synchronous driver (for Alembic): asyncpg → psycopg-free `postgresql`
    via asyncpg is kept for async; aiosqlite → pysqlite."""
    u = make_url(url)
    if u.drivername in ("sqlite+aiosqlite",):
        u = u.set(drivername="sqlite")
    return u.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    """True for any SQLite URL."""
    return make_url(url).get_backend_name() == "sqlite"


def make_sqlite_engine(url: str) -> Engine:
    """A pysqlite engine with WAL, NORMAL sync, a busy timeout and `BEGIN IMMEDIATE`."""
    engine = create_engine(
        sync_url(url),
        connect_args={"check_same_thread": False, "timeout": 10, "isolation_level": None},
        pool_size=2,
        max_overflow=2,
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Runner:
    """Runs a ledger operation `fn(conn, *args)` as one transaction. `await runner.run(...)`.

    Raises StoreUnavailable when the database cannot be reached or the driver fails.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        self._sync: Engine | None = None
        self._async: AsyncEngine | None = None
        self._raw: sqlite3.Connection | None = None
        if self.sqlite:
            self._sync = make_sqlite_engine(url)
        else:
            # No pre-ping (a round trip per checkout on the hot path): a connection that fails
            # is invalidated where the failure is seen, and the next checkout gets a new one.
            self._async = create_async_engine(url, pool_size=10, max_overflow=10)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            if self._sync is not None:
                with self._sync.begin() as conn:
                    return fn(conn, *args)
            assert self._async is not None
            async with self._async.begin() as aconn:
                return await aconn.run_sync(fn, *args)
        except IntegrityError:
            raise
        except (OperationalError, InterfaceError, OSError, ConnectionError) as exc:
            raise StoreUnavailable(_first_line(exc)) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise StoreUnavailable(_first_line(exc)) from exc
            raise

    async def run_raw(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(cursor, is_postgres, *args)` as one transaction on a bare DB-API cursor
        (the request path's statements; see storage/sql/hot_path.py). Raises StoreUnavailable.

        On PostgreSQL a transaction whose very first statement failed — a dead pooled
        connection, e.g. after a server restart — is retried once on a fresh connection, so a
        restarted store does not cost one failed call per pooled connection.
        """
        try:
            if self.sqlite:
                return self._run_sqlite_raw(fn, args)
            return await self._run_pg_raw(fn, args)
        except (sqlite3.IntegrityError, IntegrityError):
            raise
        except (sqlite3.OperationalError, sqlite3.DatabaseError, OperationalError,
                InterfaceError, OSError, ConnectionError) as exc:
            self._drop_raw()
            raise StoreUnavailable(_first_line(exc)) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise StoreUnavailable(_first_line(exc)) from exc
            raise
        except Exception as exc:
            # Errors raised on a bare asyncpg-adapter cursor are the adapter's own DB-API
            # classes, not SQLAlchemy's: map them here like the Core path does.
            dbapi = self._async.dialect.loaded_dbapi if self._async is not None else None
            if dbapi is None or not isinstance(exc, dbapi.Error):
                raise
            if isinstance(exc, dbapi.IntegrityError):
                raise
            raise StoreUnavailable(_first_line(exc)) from exc

    async def _run_pg_raw(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        assert self._async is not None
        dbapi = self._async.dialect.loaded_dbapi
        progress = _Progress()
        try:
            async with self._async.connect() as aconn:
                return await aconn.run_sync(_pg_raw, fn, args, progress)
        except (IntegrityError, dbapi.IntegrityError, UnknownAccount):
            raise
        except (DBAPIError, dbapi.Error, OSError, ConnectionError):
            if progress.statements:
                raise  # failed mid-transaction: report it, do not replay
        async with self._async.connect() as aconn:
            return await aconn.run_sync(_pg_raw, fn, args, _Progress())

    def _run_sqlite_raw(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._raw is None:
            self._raw = _connect_sqlite(self.url)
        cur = self._raw.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            result = fn(cur, False, *args)
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")
        return result

    def _drop_raw(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(sqlite3.Error):
                self._raw.close()
            self._raw = None

    async def ping(self) -> None:
        """Round-trip `SELECT 1`. Raises StoreUnavailable."""
        from sqlalchemy import text

        await self.run(lambda conn: conn.execute(text("SELECT 1")).scalar())

    async def close(self) -> None:
        self._drop_raw()
        if self._sync is not None:
            self._sync.dispose()
        if self._async is not None:
            await self._async.dispose()


class _Progress:
    """Counts statements that completed in one transaction attempt."""

    __slots__ = ("statements",)

    def __init__(self) -> None:
        self.statements = 0


class _CountingCursor:
    """A DB-API cursor that counts completed statements (for the retry rule of run_raw)."""

    __slots__ = ("_cur", "_progress")

    def __init__(self, cur: Any, progress: _Progress) -> None:
        self._cur = cur
        self._progress = progress

    def execute(self, sql: str, params: Any = ()) -> None:
        self._cur.execute(sql, params)
        self._progress.statements += 1

    def executemany(self, sql: str, params: Any) -> None:
        self._cur.executemany(sql, params)
        self._progress.statements += 1

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> Any:
        return self._cur.fetchall()

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)


def _pg_raw(
    sync_conn: Connection, fn: Callable[..., T], args: tuple[Any, ...], progress: _Progress
) -> T:
    try:
        with sync_conn.begin():
            dbapi = sync_conn.connection.dbapi_connection
            assert dbapi is not None
            return fn(_CountingCursor(dbapi.cursor(), progress), True, *args)
    except Exception as exc:
        # Errors on the bare adapter cursor bypass SQLAlchemy's disconnect detection: drop the
        # connection from the pool unless it is a plain constraint violation.
        if type(exc).__name__ != "IntegrityError" and not isinstance(exc, UnknownAccount):
            sync_conn.invalidate()
        raise


def _connect_sqlite(url: str) -> sqlite3.Connection:
    path = make_url(sync_url(url)).database or ":memory:"
    conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                   "busy_timeout=10000"):
        conn.execute("PRAGMA " + pragma)
    return conn


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
