"""Database engines and the transaction runner: one place that knows SQLite from PostgreSQL.

One engine — one connection pool — per runner, serving both ways of writing a transaction:
ledger operations as plain synchronous functions on a SQLAlchemy `Connection` (`run`), and the
request path's fixed SQL on a small executor over the driver connection (`run_raw`, see
storage/sql/hot_path.py). Each call is one transaction:
- SQLite (embedded default): through the writer (storage/sql/sqlite_writer.py). Whatever can
  wait — Core work, and request-path work when the write lock is taken or other jobs are
  queued — runs on its thread, never on the event loop, the jobs waiting at that moment sharing
  one `BEGIN IMMEDIATE … COMMIT` (group commit, one savepoint per job); a lone request-path call
  finding the lock free runs at once on the loop (zero busy timeout: it never waits there).
  `BEGIN IMMEDIATE` takes the write lock up front (no lock upgrades, correct with several
  processes on one file); WAL mode.
- PostgreSQL (`postgresql+asyncpg://`): Core on the async engine via `AsyncConnection.run_sync`;
  the request path on the asyncpg connection of a connection checked out of the same pool
  (`driver_connection`: no SQLAlchemy statement layer, asyncpg's own prepared-statement cache),
  a few of them kept checked out between request-path statements (PG_SPARES).
  Per-account serialization comes from `SELECT … FOR UPDATE` on the account row.
Driver errors become `StoreUnavailable` here, at the adapter edge (`_store_failed` says which),
and a connection that failed is dropped rather than returned to the pool (with the pooled ones
opened before it when the connection was lost), so the next call works.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

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
from sqlalchemy.pool import PoolProxiedConnection, QueuePool
from sqlalchemy.util import greenlet_spawn

from storage.drivers import require_for_database
from storage.ports import StoreUnavailable
from storage.sql.executor import Statement
from storage.sql.sqlite_writer import SqliteWriter, Work

T = TypeVar("T")
PG_POOL_SIZE = 20  # default pooled PostgreSQL connections per process (GATEWAY_DB_POOL_SIZE)
# 20 kept open, none opened beyond (a caller waits for a free one): 10 + 10 overflow closed and
# reopened a connection per call with 16 concurrent calls on different accounts (bench/suite.sh,
# 100 accounts: 196 → 359 req/s, CPU per call 0.74× with 20 kept), and overflow on top of 20 let
# 4 busy processes exceed PostgreSQL's default max_connections (100).
PG_POOL_OVERFLOW = 0
# Request-path connections kept checked out between statements (Runner._checkout): a round
# through SQLAlchemy's pool (greenlet hop, fairy, reset) cost ~50 µs of CPU per statement,
# twice a call; never kept while anyone waits for the pool, handed back when it runs dry.
PG_SPARES = 4


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
    """A pysqlite engine with WAL, NORMAL sync, a busy timeout and temporary storage in
    memory; its pool holds the two connections of the writer (storage/sql/sqlite_writer.py:
    its thread's and the loop's), which opens every
    transaction itself with `BEGIN IMMEDIATE` (the driver is in autocommit mode, so SQLAlchemy's
    own begin emits nothing)."""
    engine = create_engine(
        sync_url(url),
        connect_args={"check_same_thread": False, "timeout": 10, "isolation_level": None},
        pool_size=2,  # the writer thread's connection and the loop's (SqliteWriter.submit_raw)
        max_overflow=0,
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=10000")
        # Statement journals (the undo of a savepoint: SqliteWriter's group commit takes one per
        # job) and temporary tables in memory, not in temporary files opened, written page by
        # page and unlinked in every batch: they are never needed after a crash. Issue 13:
        # ~49 → ~12 pwrite calls per proxied call, ~10% less gateway CPU per call.
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.close()

    return engine


class Runner:
    """Runs a ledger operation `fn(conn, *args)` as one transaction. `await runner.run(...)`.

    One engine, so one pool, per runner: SQLAlchemy's. The request path's SQL (`run_raw`) runs
    on the driver connections of that pool — the pysqlite connection held by the SQLite writer
    thread (storage/sql/sqlite_writer.py), or an asyncpg connection checked out of the async
    engine's pool — so a process opens one set of connections per database.

    `pool_size`: PostgreSQL connections kept open by the process (none opened beyond; a caller
    waits for a free one); ignored on SQLite.

    Raises StoreUnavailable when the database cannot be reached or the driver fails; the
    constructor raises storage.drivers.MissingDriver for PostgreSQL without asyncpg installed.
    """

    def __init__(self, url: str, pool_size: int = PG_POOL_SIZE) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        self.pool_size = pool_size  # PostgreSQL connections kept per process (SQLite: 2, fixed)
        self.writer: SqliteWriter | None = None  # SQLite: the thread every transaction runs on
        self._async: AsyncEngine | None = None
        # Called with the account events (storage.sql.events) of each committed transaction.
        self.on_commit: Callable[[list[Any]], None] | None = None
        # The policy's low-balance alert rules (storage.engine.alerts.AlertRules), seen by every
        # transaction as `conn.info["gw_alert_rules"]` (storage.sql.events.alerts_tx).
        self.alert_rules: Any = None
        if self.sqlite:
            self.writer = SqliteWriter(make_sqlite_engine(url), _store_failed, self._committed)
        else:
            require_for_database(url)  # MissingDriver names the extra, before SQLAlchemy fails
            # No pre-ping (a round trip per checkout on the hot path): a connection that fails
            # is invalidated where the failure is seen, and the next checkout gets a new one.
            self._async = create_async_engine(
                url, pool_size=pool_size, max_overflow=PG_POOL_OVERFLOW,
                connect_args={"timeout": 5, "command_timeout": 30})
            event.listen(self._async.sync_engine, "handle_error", _lost_connection)
        # Request-path connections out of the pool, idle (see PG_SPARES), the last used last.
        self._spares: list[PoolProxiedConnection] = []
        self._waiting = 0  # callers waiting for the pool: no connection is kept as a spare

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` as one transaction. Raises StoreUnavailable when the database
        is unreachable or the driver fails (see `_store_failed`); a connection that failed is
        never reused, so the next call gets a fresh one. IntegrityError (a constraint the
        caller may expect) and SQL bugs (ProgrammingError, DataError) pass through."""
        try:
            if self.writer is not None:
                result: T = await self.writer.submit(_core_work(fn, args, self.alert_rules))
                return result
            sink: list[Any] = []
            result = await self._run_async(fn, sink, args)
        except Exception as exc:
            if _store_failed(exc):
                raise StoreUnavailable(_first_line(exc)) from exc
            raise
        self._committed(sink)
        return result

    async def _run_async(self, fn: Callable[..., T], sink: list[Any], args: tuple[Any, ...]) -> T:
        assert self._async is not None
        if self._spares and self._pool_dry():
            await self._release_spares()  # the pool's last connections idle as spares
        aconn = self._async.connect()
        self._waiting += 1
        try:
            await aconn.start()
        finally:
            self._waiting -= 1
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
        finally:
            await aconn.close()

    def _committed(self, events: list[Any]) -> None:
        """Hand a committed transaction's account events to `on_commit` (the live fan-out)."""
        if events and self.on_commit is not None:
            self.on_commit(events)

    async def run_raw(self, fn: Callable[..., Awaitable[T]], *args: Any,
                      gather: bool = False) -> T:
        """Run `await fn(db, *args)` as one transaction, `db` being a statement executor
        (storage.sql.executor.Executor; see storage/sql/hot_path.py): on SQLite at once when
        the write lock is free and nothing is queued, else on the writer thread (`fn` never
        suspends there: SqliteWriter.submit_raw), or on a native asyncpg connection of the pool.
        Raises StoreUnavailable when the store is unreachable. `gather=True` when other calls
        are in flight: on SQLite the calls of one loop turn then share a transaction (group
        commit; see SqliteWriter.submit_raw); PostgreSQL ignores it.

        On PostgreSQL a transaction whose very first statement failed — a dead pooled
        connection, e.g. after a server restart — is retried once on a fresh connection, so a
        restarted store does not cost one failed call per pooled connection.
        """
        if self.writer is not None:
            try:
                return cast(T, await self.writer.submit_raw(_raw_work(fn, args), gather))
            except Exception as exc:
                if _store_failed(exc):
                    raise StoreUnavailable(_first_line(exc)) from exc
                raise
        return await self._pg_raw(fn, args, transaction=True)

    async def run_single(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """PostgreSQL only: run `await fn(db, *args)` where `fn` issues ONE statement, outside
        an explicit transaction — the statement commits on its own (autocommit), so the whole
        call is one round trip instead of BEGIN, statement, COMMIT (the request path's
        `gw_admit` / `gw_settle` functions, storage/sql/hot_path_pg.py). Same failure rules as
        `run_raw`: StoreUnavailable when the store is unreachable, and a statement that failed
        on a dead pooled connection is retried once on a fresh one. Unlike a transaction, a
        statement that failed that way may have committed before its reply was lost, so what
        runs here must be safe to run twice: `gw_admit` reports its hold id placed already as
        admitted (no second hold), `gw_settle` finds its request id settled and answers
        `replayed` (no second charge). The account events `fn` puts on `db.events` are handed
        to `on_commit` after it returns."""
        assert self.writer is None, "run_single is PostgreSQL-only"
        return await self._pg_raw(fn, args, transaction=False)

    async def _pg_raw(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...],
                      transaction: bool) -> T:
        import asyncpg

        unavailable = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                       asyncpg.exceptions.InternalClientError,
                       asyncpg.exceptions.OperatorInterventionError,
                       asyncpg.exceptions.InsufficientResourcesError,
                       OSError, ConnectionError, asyncio.TimeoutError, DBAPIError, PoolTimeout)
        db = _PgExecutor()
        try:
            result = await self._run_pg_raw(fn, args, db, transaction)
        except unavailable as exc:
            if db.statements:
                raise StoreUnavailable(_first_line(exc)) from exc
            db = _PgExecutor()
            try:
                result = await self._run_pg_raw(fn, args, db, transaction)
            except unavailable as exc:
                raise StoreUnavailable(_first_line(exc)) from exc
        self._committed(db.events)
        return result

    async def _run_pg_raw(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], db: _PgExecutor,
        transaction: bool = True,
    ) -> T:
        assert self._async is not None
        pooled = await self._checkout()
        try:
            db.conn = pooled.driver_connection
            if transaction:
                async with db.conn.transaction():
                    result = await fn(db, *args)
            else:
                result = await fn(db, *args)
        except BaseException as exc:
            # A connection that broke, or that a cancellation left inside its transaction, is
            # never handed out again (asyncpg's own pool would reset it; SQLAlchemy's reset on
            # return does not know this transaction).
            if db.conn.is_closed() or db.conn.is_in_transaction():
                with contextlib.suppress(Exception):
                    await asyncio.shield(greenlet_spawn(pooled.invalidate, exc))
            await self._checkin(pooled)
            raise
        await self._checkin(pooled)
        return result

    async def _checkout(self) -> PoolProxiedConnection:
        """A pooled connection whose asyncpg connection is open (asyncpg closes a connection
        whose server end went away as soon as the loop sees it: such ones are invalidated and
        the next is taken, as asyncpg's own pool does on acquire): the last spare put back
        (`_checkin`) when there is one, else one from the pool."""
        assert self._async is not None
        while self._spares:
            pooled = self._spares.pop()
            if await self._open(pooled):
                return pooled
        self._waiting += 1
        try:
            for _ in range(self.pool_size + PG_POOL_OVERFLOW):
                pooled = await self._async.raw_connection()
                if await self._open(pooled):
                    return pooled
            return await self._async.raw_connection()
        finally:
            self._waiting -= 1

    async def _open(self, pooled: PoolProxiedConnection) -> bool:
        """True when `pooled`'s asyncpg connection is open; else it is invalidated and handed
        back to the pool (which opens a new one on its next checkout), and False."""
        if not pooled.driver_connection.is_closed():  # type: ignore[union-attr]
            return True
        await greenlet_spawn(pooled.invalidate)
        await self._to_pool(pooled)
        return False

    async def _checkin(self, pooled: PoolProxiedConnection) -> None:
        """Keep `pooled` as a spare for the next `_checkout` — when it is sound (valid, open,
        outside a transaction), fewer than PG_SPARES are kept and nobody waits for the pool
        (a waiter gets it through the pool instead) — else return it to the pool."""
        conn: Any = pooled.driver_connection
        if (self._waiting == 0 and len(self._spares) < PG_SPARES and pooled.is_valid
                and not conn.is_closed() and not conn.is_in_transaction()):
            self._spares.append(pooled)
            return
        await self._to_pool(pooled)

    def _pool_dry(self) -> bool:
        """Every connection the pool may open is checked out (a spare counts as one)."""
        assert self._async is not None
        pool = self._async.sync_engine.pool
        return (isinstance(pool, QueuePool) and pool.checkedin() == 0
                and pool.checkedout() >= pool.size() + PG_POOL_OVERFLOW)

    async def _release_spares(self) -> None:
        """Return every spare to the pool."""
        spares, self._spares = self._spares, []
        for pooled in spares:
            await self._to_pool(pooled)

    async def _to_pool(self, pooled: PoolProxiedConnection) -> None:
        """Return `pooled` to the pool. Synchronous (no greenlet hop) unless the pool is over
        its size: then the connection may be closed on return, which awaits the driver."""
        assert self._async is not None
        pool = self._async.sync_engine.pool
        if isinstance(pool, QueuePool) and pool.overflow() <= 0:
            pooled.close()  # back to the pool's queue, which has room: nothing to await
        else:
            await greenlet_spawn(pooled.close)

    async def ping(self) -> None:
        """Round-trip `SELECT 1`. Raises StoreUnavailable."""
        from sqlalchemy import text

        await self.run(lambda conn: conn.execute(text("SELECT 1")).scalar())

    async def close(self) -> None:
        if self.writer is not None:
            await self.writer.close()
        if self._async is not None:
            await self._release_spares()
            await self._async.dispose()


def _core_work(fn: Callable[..., T], args: tuple[Any, ...], alert_rules: Any = None) -> Work:
    """`fn(conn, *args)` as a writer job, with the job's event sink and the policy's alert
    rules on the connection."""

    def work(conn: Connection, _cur: sqlite3.Cursor, sink: list[Any]) -> T:
        return _collecting(fn, sink, alert_rules)(conn, *args)

    return work


def _raw_work(fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> Work:
    """`await fn(db, *args)` as a writer job on the connection's sqlite3 cursor. Nothing in
    a request-path function suspends on SQLite (the executor's awaits complete at once), so
    one `send` runs it to its end on the writer thread."""

    def work(_conn: Connection, cur: sqlite3.Cursor, sink: list[Any]) -> Any:
        db = _SqliteExecutor(cur, sink)
        coro = fn(db, *args)
        try:
            coro.send(None)  # type: ignore[attr-defined]
        except StopIteration as done:
            return done.value
        coro.close()  # type: ignore[attr-defined]
        raise RuntimeError(f"{getattr(fn, '__name__', fn)} suspended on SQLite")

    return work


class _SqliteExecutor:
    """Statement executor over a sqlite3 cursor (`Sql.lite` text). `events` collects the
    account events the transaction emits (published after commit)."""

    __slots__ = ("cur", "events")
    postgres = False

    def __init__(self, cur: sqlite3.Cursor, events: list[Any]) -> None:
        self.cur = cur
        self.events = events

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
    a pool timeout, or a socket error; on the request path's raw sqlite3 connection, any
    sqlite3 error but those same three kinds."""
    if isinstance(exc, (IntegrityError, ProgrammingError, DataError, sqlite3.IntegrityError,
                        sqlite3.ProgrammingError, sqlite3.DataError)):
        return False
    return isinstance(exc, (DBAPIError, sqlite3.Error, PendingRollbackError, DisconnectionError,
                            PoolTimeout, OSError, ConnectionError, asyncio.TimeoutError))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
