"""The SQLite store's connections, kept from stalling the event loop: a writer thread with
group commit, and the loop's own connection for what cannot wait.

Every SQLite transaction of the process goes through one `SqliteWriter`, on the two pooled
connections of the runner's SQLAlchemy engine (storage/sql/engine.py):
- The writer thread runs what may wait: SQLAlchemy Core work (admin, payments, reads) and any
  request-path job that found the write lock taken (by another process or by this thread). It
  takes every job waiting when it wakes (up to MAX_BATCH) into one `BEGIN IMMEDIATE … COMMIT`,
  so `busy_timeout` (up to 10 s of another process's lock) stalls this thread, never the loop.
- The request path (storage.sql.hot_path: short, never suspends) runs on the loop's connection
  only when it cannot wait there: nothing of the thread queued or undelivered, and the write
  lock free at once (zero busy timeout). A lone call runs immediately, with no thread hop; calls
  made while others are in flight are gathered for one loop turn and share one commit. The
  loop's connection never checkpoints the WAL (an fsync); the thread does, every
  CHECKPOINT_EVERY loop transactions.

Group commit, on either side: one savepoint per job, in arrival order. A job that raises is
rolled back to its savepoint and gets its exception; the others commit. Each job sees exactly
what it would have seen alone after the jobs before it, so its outcome is the one it would have
had alone (admission of a hot account stays serialized; SPEC §3). When the store itself fails
(a driver error: locked past the timeout, I/O error, full disk), the whole transaction is rolled
back and every job of it gets the error; nothing of it is kept. A lone job runs without a
savepoint.

Results of the thread go back with one `call_soon_threadsafe` per batch; on the loop each job's
future is resolved and its account events are published (`on_commit`) in commit order (the loop
side commits only when nothing of the thread is undelivered, so the order holds across both).
A job whose caller was cancelled before it ran is skipped; once started it runs to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

log = logging.getLogger("storage.sql.sqlite_writer")
MAX_BATCH = 64  # jobs per transaction: bounds how long one commit keeps the callers waiting
CHECKPOINT_EVERY = 256  # inline commits between two WAL checkpoints run by the writer thread

# A job: (work, future, loop). `work(conn, cur, sink)` runs inside the open transaction on the
# writer thread — `conn` the SQLAlchemy connection, `cur` a sqlite3 cursor on its driver
# connection — appends the events it emits to `sink` and returns the result (or raises).
Work = Callable[[Connection, sqlite3.Cursor, list[Any]], Any]
_Job = tuple[Work, "asyncio.Future[Any]", asyncio.AbstractEventLoop]
_CHECKPOINT: Any = object()  # queued to ask the writer thread for a WAL checkpoint
# Per job: (future, result, exception, events) — what the loop side delivers.
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None, list[Any]]


class SqliteWriter:
    """One thread running SQLite jobs in batched transactions (see the module docstring).

    `store_failed(exc)` says which exceptions mean the store failed (the batch is rolled back
    and the connection dropped) rather than one job's own error; `on_commit(events)` is called
    on the loop with each committed job's account events. `transactions` counts the
    transactions run (batches), `jobs` the jobs in them: jobs / transactions is the mean batch.
    """

    def __init__(self, engine: Engine, store_failed: Callable[[BaseException], bool],
                 on_commit: Callable[[list[Any]], None]) -> None:
        self._engine = engine
        self._store_failed = store_failed
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()  # _Job, _CHECKPOINT, None
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None
        self._cur: sqlite3.Cursor | None = None  # reused by every transaction of `_conn`
        self._lock = threading.Lock()
        self._pending = 0  # jobs submitted and not yet delivered (loop side)
        self._gathering: list[_Job] = []  # request-path jobs of this loop turn (submit_raw)
        self._inline: Connection | None = None  # the loop's connection (submit_raw)
        self._inline_cur: sqlite3.Cursor | None = None
        self._inline_commits = 0
        self.transactions = 0
        self.jobs = 0
        self.inline = 0

    async def submit_raw(self, work: Work, gather: bool = False) -> Any:
        """Run a request-path job (short, never suspends: storage.sql.hot_path) on the loop
        when it cannot wait there, else on the writer thread. Returns the job's result; raises
        what it raised or the store's driver error.

        On the loop only while no job of the writer thread is queued, running or undelivered,
        and only when the write lock is free right now (`BEGIN IMMEDIATE` with a zero busy
        timeout): the loop never waits. When the lock is taken — by another process or the
        writer thread — the job goes to the thread, which does the waiting.
        `gather=False` (a lone call): run at once, no hop and no extra loop turn.
        `gather=True` (other calls are in flight, so more jobs are likely this turn): wait for
        the end of this loop turn and run every job gathered by then in one transaction on the
        loop's connection (group commit, a savepoint per job)."""
        loop = asyncio.get_running_loop()
        if self._pending or (self._gathering and self._gathering[0][2] is not loop):
            return await self._enqueue(work, loop)
        if not gather and not self._gathering:
            ran, result = self._run_now(work)
            return result if ran else await self._enqueue(work, loop)
        fut: asyncio.Future[Any] = loop.create_future()
        self._gathering.append((work, fut, loop))
        if len(self._gathering) == 1:
            loop.call_soon(self._flush)
        return await fut

    def _run_now(self, work: Work) -> tuple[bool, Any]:
        """(True, result) of `work` run alone on the loop's connection, or (False, None) when
        the write lock is taken. Raises what `work` raises."""
        conn, cur = self._inline_connection()
        try:
            cur.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                return False, None
            self._drop_inline()
            raise
        sink: list[Any] = []
        try:
            result = work(conn, cur, sink)
            cur.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(Exception):  # SQLite may have rolled back already
                cur.execute("ROLLBACK")
            if isinstance(exc, Exception) and self._store_failed(exc):
                self._drop_inline()
            raise
        self.transactions += 1
        self.jobs += 1
        self._inline_committed()
        if sink:
            self._on_commit(sink)
        return True, result

    def _inline_committed(self) -> None:
        self.inline += 1
        self._inline_commits += 1
        if self._inline_commits >= CHECKPOINT_EVERY:
            self._inline_commits = 0
            self._put(_CHECKPOINT)

    def _flush(self) -> None:
        """On the loop: run the gathered jobs in one transaction, or hand them to the thread."""
        batch, self._gathering = self._gathering, []
        if self._pending:  # the thread has work: keep commit (and event) order, queue behind
            self._hand_over(batch)
            return
        try:
            conn, cur = self._inline_connection()
            cur.execute("BEGIN IMMEDIATE")
        except Exception as exc:  # noqa: BLE001 - every gathered job gets it
            if isinstance(exc, sqlite3.OperationalError) and \
                    exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                self._hand_over(batch)
                return
            self._drop_inline()
            self._resolve([(fut, None, exc, []) for _work, fut, _loop in batch])
            return
        self._resolve(self._run(batch, conn, cur, self._drop_inline, begun=True))
        self._inline_committed()

    def _hand_over(self, batch: list[_Job]) -> None:
        for job in batch:
            self._pending += 1
            self._put(job)

    def _inline_connection(self) -> tuple[Connection, sqlite3.Cursor]:
        """The loop's connection: no busy wait, and no WAL checkpoint (that fsyncs) — the
        writer thread checkpoints every CHECKPOINT_EVERY inline transactions."""
        if self._inline is None or self._inline_cur is None:
            self._inline = self._engine.connect()
            raw = self._inline.connection.driver_connection
            raw.execute("PRAGMA busy_timeout=0")  # type: ignore[union-attr]
            raw.execute("PRAGMA wal_autocheckpoint=0")  # type: ignore[union-attr]
            self._inline_cur = raw.cursor()  # type: ignore[union-attr]
        return self._inline, self._inline_cur

    def _drop_inline(self) -> None:
        if self._inline is not None:
            with contextlib.suppress(Exception):
                self._inline.invalidate()
                self._inline.close()
            self._inline = self._inline_cur = None

    async def submit(self, work: Work) -> Any:
        """Run `work(conn, sink)` in the writer's next transaction; its result, or its
        exception. Raises whatever `work` raised, or the store's driver error."""
        return await self._enqueue(work, asyncio.get_running_loop())

    def _enqueue(self, work: Work, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending += 1
        self._put((work, fut, loop))
        return fut

    def _put(self, item: Any) -> None:
        if self._thread is None:
            self._start()
        self._queue.put(item)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="gw-sqlite-writer",
                                                daemon=True)
                self._thread.start()

    async def close(self) -> None:
        """Finish the queued jobs, stop the thread and close the connection."""
        thread = self._thread
        if thread is None:
            self._drop_inline()
            self._engine.dispose()
            return
        self._queue.put(None)
        await asyncio.to_thread(thread.join)
        self._thread = None
        self._drop_inline()
        self._engine.dispose()

    # ---- the writer thread ---------------------------------------------------------------

    def _serve(self) -> None:
        stop = checkpoint = False
        while not stop:
            batch: list[_Job] = []
            job = self._queue.get()
            while True:
                if job is None:
                    stop = True
                elif job is _CHECKPOINT:
                    checkpoint = True
                else:
                    batch.append(job)
                if stop or len(batch) >= MAX_BATCH or self._queue.empty():
                    break
                job = self._queue.get_nowait()
            if batch:
                self._run_batch(batch)
            if checkpoint:
                checkpoint = False
                self._checkpoint()
        self._drop()

    def _checkpoint(self) -> None:
        """A passive WAL checkpoint (waits for no lock), outside any transaction; requested
        every CHECKPOINT_EVERY inline commits, whose connection never checkpoints."""
        if self._cur is not None:
            with contextlib.suppress(sqlite3.Error):  # best effort: the next one catches up
                self._cur.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _run_batch(self, batch: list[_Job]) -> None:
        outcomes: list[_Outcome]
        if self._conn is None or self._cur is None:
            try:
                self._conn = self._engine.connect()
                self._cur = self._conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001 - the store failed: every job gets it
                self._drop()
                outcomes = [(fut, None, exc, []) for _work, fut, _loop in batch]
            else:
                outcomes = self._run(batch, self._conn, self._cur, self._drop, begun=False)
        else:
            outcomes = self._run(batch, self._conn, self._cur, self._drop, begun=False)
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for (_work, _fut, loop), outcome in zip(batch, outcomes, strict=True):
            done = by_loop.get(loop)
            if done is None:
                by_loop[loop] = [outcome]
            else:
                done.append(outcome)
        for loop, done in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(self._deliver, done)

    def _run(self, batch: list[_Job], conn: Connection, cur: sqlite3.Cursor,
             drop: Callable[[], None], *, begun: bool) -> list[_Outcome]:
        """Each job's outcome of running `batch` as one transaction on `conn`; when the store
        failed, the transaction is rolled back, `drop` drops the connection and every job gets
        the error."""
        self.transactions += 1
        self.jobs += len(batch)
        try:
            return self._transaction(batch, conn, cur, begun)
        except _Refused as refused:  # a lone job's own error, its transaction rolled back
            return [(batch[0][1], None, refused.__cause__, [])]
        except BaseException as exc:  # noqa: BLE001 - the store failed: every job gets it
            drop()
            return [(fut, None, exc, []) for _work, fut, _loop in batch]

    def _transaction(self, batch: list[_Job], conn: Connection, cur: sqlite3.Cursor,
                     begun: bool) -> list[_Outcome]:
        """Run the batch as one transaction (begun already when `begun`); raises (after
        rolling back) when the store failed, else returns each job's outcome."""
        alone = len(batch) == 1
        outcomes: list[_Outcome] = []
        # On the driver cursor, not through SQLAlchemy's transaction API: a batch of request-path
        # jobs never touches SQLAlchemy's statement layer. A Core job autobegins SQLAlchemy's
        # transaction (no statement: the driver is in autocommit mode), which `_end` closes.
        if not begun:
            cur.execute("BEGIN IMMEDIATE")
        try:
            for work, fut, _loop in batch:
                sink: list[Any] = []
                if fut.cancelled():  # its caller is gone and nothing of it ran: skip it
                    outcomes.append((fut, None, None, sink))
                    continue
                if not alone:
                    cur.execute("SAVEPOINT job")
                try:
                    result = work(conn, cur, sink)
                except Exception as exc:
                    if self._store_failed(exc):
                        raise
                    if alone:
                        raise _Refused(exc) from exc
                    cur.execute("ROLLBACK TO job")
                    cur.execute("RELEASE job")
                    outcomes.append((fut, None, exc, []))
                    continue
                if not alone:
                    cur.execute("RELEASE job")
                outcomes.append((fut, result, None, sink))
        except BaseException:
            with contextlib.suppress(Exception):  # SQLite may have rolled back already
                _end(conn, cur, commit=False)
            raise
        _end(conn, cur, commit=True)
        return outcomes

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()
                self._conn.close()
            self._conn = self._cur = None

    # ---- back on the loop ----------------------------------------------------------------

    def _deliver(self, done: list[_Outcome]) -> None:
        self._pending -= len(done)
        self._resolve(done)

    def _resolve(self, done: list[_Outcome]) -> None:
        """Publish each committed job's events and resolve the futures, in commit order."""
        for fut, result, exc, events in done:
            if exc is None and events:
                try:
                    self._on_commit(events)
                except Exception:  # the fan-out failing must not leave callers waiting
                    log.exception("publishing committed account events failed")
            if fut.cancelled():
                continue
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)


def _end(conn: Connection, cur: Any, *, commit: bool) -> None:
    """COMMIT or ROLLBACK the batch's transaction, through SQLAlchemy when a Core job began
    its transaction there (so its state ends too), else on the cursor."""
    if conn.in_transaction():
        conn.commit() if commit else conn.rollback()
    else:
        cur.execute("COMMIT" if commit else "ROLLBACK")


class _Refused(Exception):
    """A lone job's own error (not a store failure): its transaction is rolled back and the
    cause delivered to its caller; the connection stays."""
