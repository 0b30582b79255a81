"""Group commit of admissions for a hot account on PostgreSQL (issue 13 item 2).

Admissions of one account serialize on its row lock, so concurrent calls of a hot account in
one process each wait for the previous commit. Here the first admission of an account runs
alone (`gw_admit`, one statement); the ones that arrive while it is in flight wait, and then go
together in ONE statement (storage.sql.hot_path_pg.admit_many: one lock, one commit), in
arrival order, each deciding on the holds the earlier ones placed — so every call's outcome is
the one it would have had alone in that order, and nothing is overspent. If the batch statement
fails (one call's error fails them all: e.g. a reused request id), its calls are retried one by
one, so only the failing call sees its error. A store outage fails the whole batch with
StoreUnavailable.

A caller cancelled while waiting in a batch that then admits it leaves its hold to lapse with
its lease (storage.sql.hot_path.sweep_holds), as a crashed process's holds do.
"""

from __future__ import annotations

import asyncio
from typing import Any

from storage.ports import Admission, Shortfall, StoreUnavailable
from storage.sql import hot_path_pg
from storage.sql.engine import Runner


class AdmitBatches:
    """Per-account batching of `gw_admit` calls in one process. `batches` and `batched` count
    the batch statements run and the calls they carried (for tests and benchmarks)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        # account id -> calls waiting for the statement in flight (params, their future)
        self._waiting: dict[str, list[tuple[tuple[Any, ...], asyncio.Future[Any]]]] = {}
        self._drains: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.batched = 0

    async def admit(self, params: tuple[Any, ...]) -> Admission | Shortfall:
        """Admit the call of `params` (hot_path_pg.admit_params): alone when no admission of
        its account is in flight in this process, else in the next batch. Raises
        UnknownAccount, StoreUnavailable, or the call's own driver error."""
        account_id = params[0]
        waiting = self._waiting.get(account_id)
        if waiting is not None:
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            waiting.append((params, done))
            return hot_path_pg.admission_of(params, await done)
        self._waiting[account_id] = []
        try:
            row = await self.runner.run_single(_one, params)
        finally:
            if self._waiting[account_id]:
                task = asyncio.create_task(self._drain(account_id))
                self._drains.add(task)
                task.add_done_callback(self._drains.discard)
            else:
                del self._waiting[account_id]
        return hot_path_pg.admission_of(params, row)

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

    async def _run(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        if len(batch) == 1:
            params, done = batch[0]
            await _settle_future(done, self.runner.run_single(_one, params))
            return
        try:
            rows = await self.runner.run_single(hot_path_pg.admit_many, [p for p, _ in batch])
        except StoreUnavailable as exc:
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        except Exception:  # noqa: BLE001 - any error of one call fails the batch: retry alone
            for params, done in batch:  # one call failed them all: each alone now
                await _settle_future(done, self.runner.run_single(_one, params))
            return
        self.batches += 1
        self.batched += len(batch)
        for (_, done), row in zip(batch, rows, strict=True):
            if not done.done():
                done.set_result(row)


async def _one(db: Any, params: tuple[Any, ...]) -> Any:
    return await db.one(hot_path_pg.GW_ADMIT, params)


async def _settle_future(done: asyncio.Future[Any], work: Any) -> None:
    """Resolve `done` with the outcome of awaiting `work` (its result or its exception)."""
    try:
        row = await work
    except Exception as exc:  # noqa: BLE001 - handed to the waiting caller, not swallowed
        if not done.done():
            done.set_exception(exc)
        return
    if not done.done():
        done.set_result(row)
