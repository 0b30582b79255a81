"""Group commit for a hot account on PostgreSQL (issue 13 item 2): admissions (`gw_admit`) and
settlements (`gw_settle`).

The calls of one account serialize on its row lock, so concurrent calls of a hot account in one
process would each wait for the previous commit. Here the first call of an account runs alone
(one statement); the ones that arrive while it is in flight wait, and then go together in ONE
statement (one lock, one commit), in arrival order, each seeing what the earlier ones wrote —
so every call's outcome is the one it would have had alone in that order, and nothing is
overspent. If the batch statement fails (one call's error fails them all: e.g. a reused
request id), its calls are retried one by one, so only the failing call sees its error. A store
outage fails the whole batch with StoreUnavailable.

A caller cancelled while waiting in a batch still has its call run: an admitted hold then lapses
with its lease (storage.sql.hot_path.sweep_holds), as a crashed process's holds do; a
settlement is simply committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from storage.ports import StoreUnavailable
from storage.sql.engine import Runner

C = TypeVar("C")  # one call's input
R = TypeVar("R")  # one call's result

_Waiting = list[tuple[Any, "asyncio.Future[Any]"]]


class AccountBatches(Generic[C, R]):
    """Per-account batching of one kind of single-statement call, in one process.

    `one(db, call)` runs one call as ONE statement and returns its result; `many(db, calls)`
    runs several calls of one account as ONE statement, in order, and returns their results in
    that order (a failure of any call must fail the whole statement, writing nothing). Both are
    run with Runner.run_single (autocommit), so the events they put on `db.events` reach
    `on_commit` after the commit. `batches` and `batched` count the batch statements that
    succeeded and the calls they carried (for tests and benchmarks)."""

    def __init__(self, runner: Runner, one: Callable[[Any, C], Awaitable[R]],
                 many: Callable[[Any, list[C]], Awaitable[list[R]]]) -> None:
        self.runner = runner
        self._one = one
        self._many = many
        # account id -> calls waiting for the statement in flight (call, its future)
        self._waiting: dict[str, _Waiting] = {}
        self._drains: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.batched = 0

    async def run(self, account_id: str, call: C) -> R:
        """The result of `call` of `account_id`: run alone when no call of the account is in
        flight in this process (through this batcher), else in the next batch. Raises what
        `one` raises for it (e.g. UnknownAccount, the call's own driver error) or
        StoreUnavailable."""
        waiting = self._waiting.get(account_id)
        if waiting is not None:
            done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
            waiting.append((call, done))
            return await done
        self._waiting[account_id] = []
        try:
            return await self.runner.run_single(self._one, call)
        finally:
            if self._waiting[account_id]:
                task = asyncio.create_task(self._drain(account_id))
                self._drains.add(task)
                task.add_done_callback(self._drains.discard)
            else:
                del self._waiting[account_id]

    async def _drain(self, account_id: str) -> None:
        """Run the waiting calls of `account_id` as batches until none are left."""
        try:
            while batch := self._waiting[account_id]:
                self._waiting[account_id] = []
                try:
                    await self._run(batch)
                except BaseException:  # cancelled (loop shutting down): no caller left hanging
                    for _, done in batch:
                        done.cancel()
                    raise
        finally:
            for _, done in self._waiting.pop(account_id):
                done.cancel()

    async def _run(self, batch: _Waiting) -> None:
        if len(batch) == 1:
            call, done = batch[0]
            await _resolve(done, self.runner.run_single(self._one, call))
            return
        try:
            results = await self.runner.run_single(self._many, [c for c, _ in batch])
        except StoreUnavailable as exc:
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        except Exception:  # noqa: BLE001 - any error of one call fails the batch: retry alone
            for call, done in batch:  # the statement wrote nothing: each call alone now
                await _resolve(done, self.runner.run_single(self._one, call))
            return
        self.batches += 1
        self.batched += len(batch)
        for (_, done), result in zip(batch, results, strict=True):
            if not done.done():
                done.set_result(result)


async def _resolve(done: asyncio.Future[Any], work: Awaitable[Any]) -> None:
    """Resolve `done` with the outcome of awaiting `work` (its result or its exception)."""
    try:
        result = await work
    except Exception as exc:  # noqa: BLE001 - handed to the waiting caller, not swallowed
        if not done.done():
            done.set_exception(exc)
        return
    if not done.done():
        done.set_result(result)
