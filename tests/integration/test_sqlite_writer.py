"""SQLite store work runs on the writer thread (storage/sql/sqlite_writer.py), off the event
loop, and the jobs waiting at one moment commit together (group commit) with each job's outcome
exactly what it would have been alone: admissions that fit, 402 shortfalls and a job that fails
on its own mixed in one batch.

The batch is made deterministic without sleeping: a first job holds the writer thread until the
others are queued.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Connection, make_url

from policies.compiled import Plan
from storage.engine.buckets import Source
from storage.ports import Admission, Shortfall, UnknownAccount
from storage.sql import hot_path
from storage.sql.ledger import SqlLedger
from tests.integration.conftest import fresh_database

PLAN = Plan(key="it", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)
ESTIMATE = 6_000


@pytest.fixture
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    with fresh_database("sqlite", request, tmp_path) as url:
        lg = SqlLedger(url)
        try:
            yield lg
        finally:
            await lg.close()


async def _hold_writer(ledger: SqlLedger) -> tuple[asyncio.Future[Any], threading.Event]:
    """Occupy the writer thread with a job that waits for the returned event; returns once
    that job is running (so whatever is submitted next queues behind it)."""
    started, release = threading.Event(), threading.Event()

    def blocker(_conn: Connection) -> None:
        started.set()
        release.wait()

    running = asyncio.ensure_future(ledger.runner.run(blocker))
    await asyncio.to_thread(started.wait)
    return running, release


async def test_waiting_admits_and_refusals_commit_as_one_batch_each_as_if_alone(
        ledger: SqlLedger) -> None:
    acct = await ledger.create_account(PLAN)
    await ledger.grant(acct, Source.GIFT, 3 * ESTIMATE, "fund", None, "funds")
    writer = ledger.runner.writer
    assert writer is not None
    running, release = await _hold_writer(ledger)
    transactions = writer.transactions

    admits = [asyncio.ensure_future(ledger.admit(acct, ESTIMATE, "it.op", 60, PLAN))
              for _ in range(3)]
    unknown = asyncio.ensure_future(ledger.admit("acct_missing", ESTIMATE, "it.op", 60, PLAN))
    admits += [asyncio.ensure_future(ledger.admit(acct, ESTIMATE, "it.op", 60, PLAN))
               for _ in range(3)]
    await asyncio.sleep(0)  # every task has queued its job behind the blocker
    release.set()
    await running
    results = await asyncio.gather(*admits)
    with pytest.raises(UnknownAccount):
        await unknown

    assert writer.transactions == transactions + 1  # the seven jobs shared one commit
    assert [type(r) for r in results] == [Admission] * 3 + [Shortfall] * 3
    assert [r.available_after for r in results[:3]] == [2 * ESTIMATE, ESTIMATE, 0]
    assert all(r.available == 0 and r.required == ESTIMATE for r in results[3:])
    snap = await ledger.balance(acct)
    assert snap.held == 3 * ESTIMATE
    totals = await ledger.totals(acct)
    assert totals["holds"] == 3 and totals["remaining"] - totals["debt"] == totals["deltas"]


async def test_calls_gathered_in_one_loop_turn_share_one_commit_on_the_loop(
        ledger: SqlLedger) -> None:
    acct = await ledger.create_account(PLAN)
    await ledger.grant(acct, Source.GIFT, 3 * ESTIMATE, "fund", None, "funds")
    writer = ledger.runner.writer
    assert writer is not None
    transactions, inline = writer.transactions, writer.inline
    at = ledger.clock()

    def admit(account: str) -> Any:
        return ledger.runner.run_raw(hot_path.admit, account, ESTIMATE, "it.op", 60_000, at,
                                     gather=True)

    outcomes = await asyncio.gather(*(admit(acct) for _ in range(3)), admit("acct_missing"),
                                    *(admit(acct) for _ in range(3)), return_exceptions=True)

    assert (writer.transactions, writer.inline) == (transactions + 1, inline + 1)
    assert [type(r) for r in outcomes] == [Admission] * 3 + [UnknownAccount] + [Shortfall] * 3
    assert [r.available_after for r in outcomes[:3]] == [2 * ESTIMATE, ESTIMATE, 0]
    totals = await ledger.totals(acct)
    assert totals["holds"] == 3 and totals["remaining"] - totals["debt"] == totals["deltas"]


async def test_a_write_lock_held_by_another_process_does_not_block_the_event_loop(
        ledger: SqlLedger) -> None:
    acct = await ledger.create_account(PLAN)
    await ledger.grant(acct, Source.GIFT, ESTIMATE, "fund", None, "funds")
    other = sqlite3.connect(make_url(ledger.runner.url).database or "", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's write transaction
        admit = asyncio.ensure_future(ledger.admit(acct, ESTIMATE, "it.op", 60, PLAN))
        ticks = 0
        while ticks < 100:  # the loop keeps running while the admission waits for the lock
            await asyncio.sleep(0)
            ticks += 1
        assert not admit.done()
        other.execute("COMMIT")
        assert isinstance(await admit, Admission)
    finally:
        other.close()


async def test_a_lone_call_finding_the_lock_free_runs_at_once_without_a_thread_hop(
        ledger: SqlLedger) -> None:
    acct = await ledger.create_account(PLAN)
    await ledger.grant(acct, Source.GIFT, ESTIMATE, "fund", None, "funds")
    writer = ledger.runner.writer
    assert writer is not None
    transactions, inline = writer.transactions, writer.inline
    assert isinstance(await ledger.admit(acct, ESTIMATE, "it.op", 60, PLAN), Admission)
    assert (writer.transactions, writer.inline) == (transactions + 1, inline + 1)
