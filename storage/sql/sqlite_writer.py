"""The SQLite store's one connection, off the event loop: a writer thread with group commit.

Every SQLite transaction of the process (request-path SQL and SQLAlchemy Core alike) is a job
on one queue, run by one thread on the one pooled connection of the runner's SQLAlchemy engine
(storage/sql/engine.py). The event loop only enqueues and awaits a future, so a write lock
held by another process (SQLite's `busy_timeout`, up to 10 s) stalls that thread, never the
loop.

Group commit: the thread takes every job waiting when it wakes (up to `MAX_BATCH`) and runs
them in one `BEGIN IMMEDIATE … COMMIT`, one savepoint per job, in arrival order. A job that
raises is rolled back to its savepoint and gets its exception; the others commit. Each job sees
exactly what it would have seen alone after the jobs before it, so its outcome is the one it
would have had alone (admission of a hot account stays serialized; SPEC §3). When the store
itself fails (a driver error: locked past the timeout, I/O error, full disk), the whole
transaction is rolled back and every job of the batch gets the error; nothing of it is kept.
A batch of one job runs without a savepoint.

Results go back with one `call_soon_threadsafe` per batch; on the loop, each job's future is
resolved and its account events are published (`on_commit`), in commit order. A job whose
caller was cancelled before the thread took it is skipped; once taken it runs to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

MAX_BATCH = 64  # jobs per transaction: bounds how long one commit keeps the callers waiting

# A job: (work, future, loop). `work(conn, sink)` runs inside the open transaction on the
# writer thread, appends the events it emits to `sink` and returns the result (or raises).
Work = Callable[[Connection, list[Any]], Any]
_Job = tuple[Work, "asyncio.Future[Any]", asyncio.AbstractEventLoop]
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
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self.transactions = 0
        self.jobs = 0

    async def submit(self, work: Work) -> Any:
        """Run `work(conn, sink)` in the writer's next transaction; its result, or its
        exception. Raises whatever `work` raised, or the store's driver error."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if self._thread is None:
            self._start()
        self._queue.put((work, fut, loop))
        return await fut

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
            self._engine.dispose()
            return
        self._queue.put(None)
        await asyncio.to_thread(thread.join)
        self._thread = None
        self._engine.dispose()

    # ---- the writer thread ---------------------------------------------------------------

    def _serve(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            self._run_batch([j for j in batch if not j[1].cancelled()])
        self._drop()

    def _run_batch(self, batch: list[_Job]) -> None:
        if not batch:
            return
        self.transactions += 1
        self.jobs += len(batch)
        try:
            outcomes = self._transaction(batch)
        except _Refused as refused:  # a lone job's own error, its transaction rolled back
            outcomes = [(batch[0][1], None, refused.__cause__, [])]
        except BaseException as exc:  # noqa: BLE001 - the store failed: every job gets it
            self._drop()
            outcomes = [(fut, None, exc, []) for _work, fut, _loop in batch]
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for (_work, _fut, loop), outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append(outcome)
        for loop, done in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(self._deliver, done)

    def _transaction(self, batch: list[_Job]) -> list[_Outcome]:
        """Run the batch as one transaction; raises (after rolling back) when the store
        failed, else returns each job's outcome."""
        if self._conn is None:
            self._conn = self._engine.connect()
        conn = self._conn
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        alone = len(batch) == 1
        outcomes: list[_Outcome] = []
        with conn.begin():  # BEGIN IMMEDIATE (engine "begin" hook); COMMIT, or ROLLBACK on raise
            for work, fut, _loop in batch:
                sink: list[Any] = []
                if not alone:
                    cur.execute("SAVEPOINT job")
                try:
                    result = work(conn, sink)
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
        return outcomes

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()
                self._conn.close()
            self._conn = None

    # ---- back on the loop ----------------------------------------------------------------

    def _deliver(self, done: list[_Outcome]) -> None:
        for fut, result, exc, events in done:
            if exc is None and events:
                self._on_commit(events)
            if fut.cancelled():
                continue
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)


class _Refused(Exception):
    """A lone job's own error (not a store failure): its transaction is rolled back and the
    cause delivered to its caller; the connection stays."""
