"""Database engines and the transaction runner: one place that knows SQLite from PostgreSQL.

Ledger operations are plain synchronous functions on a SQLAlchemy `Connection`. The runner
executes each one as a single transaction:
- SQLite (embedded default): inline on the event loop, `BEGIN IMMEDIATE` so the write lock is
  taken up front (no lock upgrades, correct with several processes on one file); WAL mode.
  Each transaction is a few short statements, far cheaper than a hop to a thread.
- PostgreSQL (`postgresql+asyncpg://`): on the async engine via `AsyncConnection.run_sync`;
  per-account serialization comes from `SELECT … FOR UPDATE` on the account row.
Driver errors become `StoreUnavailable` here, at the adapter edge (`_store_failed` says which),
and a connection that failed is dropped rather than returned to the pool (with the pooled ones
opened before it when the connection was lost), so the next call works.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, ExceptionContext, make_url
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    PendingRollbackError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from storage.drivers import require_for_database
from storage.ports import StoreUnavailable
from storage.sql.executor import Statement

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

    Raises StoreUnavailable when the database cannot be reached or the driver fails; the
    constructor raises storage.drivers.MissingDriver for PostgreSQL without asyncpg installed.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        self._sync: Engine | None = None
        self._async: AsyncEngine | None = None
        self._raw: sqlite3.Connection | None = None
        self._pool: Any = None  # asyncpg pool of the request path (PostgreSQL)
        self._pool_lock: asyncio.Lock | None = None
        # Called with the account events (storage.sql.events) of each committed transaction.
        self.on_commit: Callable[[list[Any]], None] | None = None
        # The policy's low-balance alert rules (storage.engine.alerts.AlertRules), seen by every
        # transaction as `conn.info["gw_alert_rules"]` (storage.sql.events.alerts_tx).
        self.alert_rules: Any = None
        if self.sqlite:
            self._sync = make_sqlite_engine(url)
        else:
            require_for_database(url)  # MissingDriver names the extra, before SQLAlchemy fails
            # No pre-ping (a round trip per checkout on the hot path): a connection that fails
            # is invalidated where the failure is seen, and the next checkout gets a new one.
            self._async = create_async_engine(url, pool_size=10, max_overflow=10)
            event.listen(self._async.sync_engine, "handle_error", _lost_connection)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` as one transaction. Raises StoreUnavailable when the database
        is unreachable or the driver fails (see `_store_failed`); a connection that failed is
        never reused, so the next call gets a fresh one. IntegrityError (a constraint the
        caller may expect) and SQL bugs (ProgrammingError, DataError) pass through."""
        sink: list[Any] = []
        try:
            if self._sync is not None:
                with self._sync.begin() as conn:
                    result = _collecting(fn, sink, self.alert_rules)(conn, *args)
            else:
                result = await self._run_async(fn, sink, args)
        except Exception as exc:
            if _store_failed(exc):
                raise StoreUnavailable(_first_line(exc)) from exc
            raise
        self._committed(sink)
        return result

    async def _run_async(self, fn: Callable[..., T], sink: list[Any], args: tuple[Any, ...]) -> T:
        assert self._async is not None
        async with self._async.connect() as aconn:
            try:
                async with aconn.begin():
                    return await aconn.run_sync(_collecting(fn, sink, self.alert_rules), *args)
            except Exception as exc:
                if _store_failed(exc):
                    # Whatever broke it, a connection that failed is not handed back to the
                    # pool (the pooled ones opened before it are recycled too when the driver
                    # error was a lost connection: see _lost_connection).
                    with contextlib.suppress(Exception):
                        await aconn.invalidate(exc)
                raise

    def _committed(self, events: list[Any]) -> None:
        """Hand a committed transaction's account events to `on_commit` (the live fan-out)."""
        if events and self.on_commit is not None:
            self.on_commit(events)

    async def run_raw(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `await fn(db, *args)` as one transaction, `db` being a statement executor
        (storage.sql.executor.Executor; see storage/sql/hot_path.py): sqlite3 inline, or native
        asyncpg.
        Raises StoreUnavailable when the store is unreachable.

        On PostgreSQL a transaction whose very first statement failed — a dead pooled
        connection, e.g. after a server restart — is retried once on a fresh connection, so a
        restarted store does not cost one failed call per pooled connection.
        """
        if self.sqlite:
            try:
                return await self._run_sqlite_raw(fn, args)
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                self._drop_raw()
                raise StoreUnavailable(_first_line(exc)) from exc
        import asyncpg

        unavailable = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                       asyncpg.exceptions.InternalClientError,
                       asyncpg.exceptions.OperatorInterventionError,
                       asyncpg.exceptions.InsufficientResourcesError,
                       OSError, ConnectionError, asyncio.TimeoutError)
        db = _PgExecutor()
        try:
            result = await self._run_pg_raw(fn, args, db)
        except unavailable as exc:
            if db.statements:
                raise StoreUnavailable(_first_line(exc)) from exc
            db = _PgExecutor()
            try:
                result = await self._run_pg_raw(fn, args, db)
            except unavailable as exc:
                raise StoreUnavailable(_first_line(exc)) from exc
        self._committed(db.events)
        return result

    async def _run_pg_raw(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], db: _PgExecutor
    ) -> T:
        pool = await self._asyncpg_pool()
        async with pool.acquire() as conn:
            db.conn = conn
            async with conn.transaction():
                return await fn(db, *args)

    async def _asyncpg_pool(self) -> Any:
        if self._pool is not None:
            return self._pool
        if self._pool_lock is None:
            self._pool_lock = asyncio.Lock()
        async with self._pool_lock:  # concurrent first calls must not each open a pool
            if self._pool is None:
                import asyncpg

                dsn = make_url(self.url).set(drivername="postgresql").render_as_string(
                    hide_password=False)
                # No per-release RESET round trip: the request path sets no session state.
                self._pool = await asyncpg.create_pool(dsn, min_size=1, max_size=10,
                                                       timeout=5, command_timeout=30,
                                                       reset=_keep_session)
        return self._pool

    async def _run_sqlite_raw(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        if self._raw is None:
            self._raw = _connect_sqlite(self.url)
        cur = self._raw.cursor()
        cur.execute("BEGIN IMMEDIATE")
        db = _SqliteExecutor(cur)
        try:
            # Nothing in `fn` suspends on SQLite: the transaction runs without yielding.
            result = await fn(db, *args)
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")
        self._committed(db.events)
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
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._sync is not None:
            self._sync.dispose()
        if self._async is not None:
            await self._async.dispose()


async def _keep_session(_conn: Any) -> None:
    """asyncpg pool `reset` hook that does nothing (see _asyncpg_pool)."""


class _SqliteExecutor:
    """Statement executor over a sqlite3 cursor (`Sql.lite` text). `events` collects the
    account events the transaction emits (published after commit)."""

    __slots__ = ("cur", "events")
    postgres = False

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self.cur = cur
        self.events: list[Any] = []

    async def one(self, q: Statement, params: tuple[Any, ...]) -> Any:
        return self.cur.execute(q.lite, params).fetchone()

    async def all(self, q: Statement, params: tuple[Any, ...]) -> list[Any]:
        return self.cur.execute(q.lite, params).fetchall()

    async def run(self, q: Statement, params: tuple[Any, ...]) -> int:
        return int(self.cur.execute(q.lite, params).rowcount)


class _PgExecutor:
    """Statement executor over a native asyncpg connection (`Sql.pg` text; prepared and cached
    by asyncpg). Counts completed statements for run_raw's retry rule; `events` as above."""

    __slots__ = ("conn", "events", "statements")
    postgres = True

    def __init__(self) -> None:
        self.conn: Any = None
        self.statements = 0
        self.events: list[Any] = []

    async def one(self, q: Statement, params: tuple[Any, ...]) -> Any:
        row = await self.conn.fetchrow(q.pg, *params)
        self.statements += 1
        return row

    async def all(self, q: Statement, params: tuple[Any, ...]) -> list[Any]:
        rows = await self.conn.fetch(q.pg, *params)
        self.statements += 1
        return list(rows)

    async def run(self, q: Statement, params: tuple[Any, ...]) -> int:
        return await self.run_text(q.pg, params)

    async def run_text(self, text: str, params: tuple[Any, ...]) -> int:
        """Run PostgreSQL-only SQL text (`$n` placeholders); returns the row count."""
        status = await self.conn.execute(text, *params)  # e.g. "UPDATE 1", "INSERT 0 1"
        self.statements += 1
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0


def _collecting(fn: Callable[..., T], sink: list[Any], alert_rules: Any = None) -> Callable[..., T]:
    """`fn` with the transaction's event sink (and the alert rules) installed on its connection
    (see storage.sql.events.emit_tx, alerts_tx)."""

    def call(conn: Connection, *args: Any) -> T:
        # Kept from before the call: reading `conn.info` of a connection invalidated by `fn`
        # raises PendingRollbackError, which would hide the driver error that invalidated it.
        info = conn.info
        info["gw_events"] = sink
        info["gw_alert_rules"] = alert_rules
        try:
            return fn(conn, *args)
        finally:
            info.pop("gw_events", None)
            info.pop("gw_alert_rules", None)

    return call


def _lost_connection(context: ExceptionContext) -> None:
    """SQLAlchemy `handle_error` hook: a driver error caused by a lost connection counts as a
    disconnect even when the driver has not noticed yet (asyncpg: "cannot switch to state …;
    another operation is in progress" on a terminated backend). SQLAlchemy then invalidates
    that connection and recycles every pooled one opened before it — a server restart killed
    them all — so one failed call, not one per pooled connection, reports the outage."""
    if context.is_disconnect:
        return
    import asyncpg

    broken = (asyncpg.exceptions.InternalClientError, asyncpg.InterfaceError,
              asyncpg.PostgresConnectionError, OSError, ConnectionError)
    cause: BaseException | None = context.original_exception
    while cause is not None:
        if isinstance(cause, broken):
            context.is_disconnect = True
            return
        cause = cause.__cause__


def _store_failed(exc: BaseException) -> bool:
    """True when `exc` means the store is unreachable or its connection broke: any driver
    error (DBAPIError: OperationalError, InterfaceError, InternalError…) except a constraint
    violation or an SQL bug, a transaction SQLAlchemy can no longer use (PendingRollbackError),
    a pool timeout, or a socket error."""
    if isinstance(exc, (IntegrityError, ProgrammingError, DataError)):
        return False
    return isinstance(exc, (DBAPIError, PendingRollbackError, DisconnectionError, PoolTimeout,
                            OSError, ConnectionError, asyncio.TimeoutError))


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
