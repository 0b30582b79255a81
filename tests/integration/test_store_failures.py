"""A PostgreSQL connection lost before the first statement of a request-path transaction completed
is retried once on a fresh connection and takes effect exactly once (a failure after that point
surfaces as StoreUnavailable, which the gateway maps to 503 or fail mode `allow`).

PostgreSQL only: the backend serving the transaction is terminated with pg_terminate_backend while
it waits for the account row lock held by another session.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from policies.compiled import Plan
from storage.engine.buckets import Source
from storage.ports import Admission
from storage.sql.ledger import SqlLedger

pytestmark = pytest.mark.postgres

PLAN = Plan(key="it", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)

async def _lock_waiters(blocker: Any, database: str, but: frozenset[int] = frozenset(),
                        timeout_s: float = 15.0) -> list[int]:
    """The backends of `database` (other than `but`) waiting on a lock, polled until there is
    one (or the deadline: then an empty list). `blocker` is inside its transaction, where
    pg_stat_activity is a snapshot taken at first use: each poll clears it to see changes."""
    deadline = time.monotonic() + timeout_s
    while True:
        await blocker.execute("SELECT pg_stat_clear_snapshot()")
        rows = await blocker.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
            " AND wait_event_type = 'Lock'", database)
        pids = [row["pid"] for row in rows if row["pid"] not in but]
        if pids or time.monotonic() > deadline:
            return pids
        await asyncio.sleep(0.02)


async def _terminate_lock_waiters(blocker: Any, database: str) -> list[int]:
    pids = await _lock_waiters(blocker, database)
    for pid in pids:
        await blocker.fetchval("SELECT pg_terminate_backend($1)", pid)
    return pids


async def _start_blocked(ledger: SqlLedger, operation: str, acct: str, held: Admission):
    if operation == "admit":
        return asyncio.ensure_future(ledger.admit(acct, 1_000, "it.op", 60, PLAN))
    from storage.ports import CallRecord

    return asyncio.ensure_future(ledger.settle(
        held.hold_id, CallRecord(request_id="req_lost", account_id=acct, operation="it.op",
                                 model=None, upstream_status=200, duration_ms=5), 500, "clamp"))


async def _blocker(ledger: SqlLedger, acct: str) -> tuple[Any, Any, str]:
    import asyncpg

    url = make_url(ledger.runner.url)
    conn = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(
        hide_password=False))
    tx = conn.transaction()
    await tx.start()
    await conn.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", acct)
    return conn, tx, str(url.database)


@pytest.mark.parametrize("ledger_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("operation", ["admit", "settle"])
async def test_a_connection_lost_before_any_statement_completed_is_retried_once(
    ledger_url: str, operation: str
) -> None:
    """The first statement (the account lock) fails on a killed backend: nothing ran, so the
    request-path operation is retried on a fresh connection and takes effect exactly once."""
    ledger = SqlLedger(ledger_url)
    try:
        await _retried_once(ledger, operation)
    finally:
        await ledger.close()


async def _retried_once(ledger: SqlLedger, operation: str) -> None:
    acct = await ledger.create_account(PLAN)
    await ledger.grant(acct, Source.GIFT, 10_000, "g1", None, "gift")
    held = await ledger.admit(acct, 1_000, "it.op", 60, PLAN)
    assert isinstance(held, Admission)
    before = await ledger.totals(acct)
    conn, tx, database = await _blocker(ledger, acct)
    try:
        pending = await _start_blocked(ledger, operation, acct, held)
        killed = await _terminate_lock_waiters(conn, database)
        assert len(killed) == 1
        retry = await _lock_waiters(conn, database, but=frozenset(killed))  # a fresh connection
        assert len(retry) == 1, "the operation was not retried"
        await tx.rollback()
    finally:
        await conn.close()
    result = await pending
    after = await ledger.totals(acct)
    if operation == "admit":
        assert isinstance(result, Admission)
        assert after["holds"] == before["holds"] + 1
    else:
        assert not result.replayed and result.charged == 500
        assert after["holds"] == before["holds"] - 1
        assert after["deltas"] == before["deltas"] - 500
    assert after["remaining"] - after["debt"] == after["deltas"]


@pytest.mark.parametrize("ledger_url", ["postgres"], indirect=True)
async def test_dead_pooled_connections_cost_one_store_unavailable_then_the_engine_recovers(
    ledger_url: str,
) -> None:
    """Every pooled connection of the Core engine is killed (a server restart): the next
    transaction fails as StoreUnavailable — not SQLAlchemy's PendingRollbackError or a driver
    error — and the ones after it run on fresh connections."""
    from storage.ports import StoreUnavailable

    ledger = SqlLedger(ledger_url)
    admin = None
    try:
        acct = await ledger.create_account(PLAN)
        await asyncio.gather(*(ledger.balance(acct) for _ in range(4)))  # several pooled
        import asyncpg

        url = make_url(ledger_url)
        admin = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(
            hide_password=False))
        killed = await admin.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) "
            "FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            url.database)
        assert killed >= 1
        with pytest.raises(StoreUnavailable):
            await ledger.balance(acct)
        for _ in range(5):
            assert (await ledger.balance(acct)).account_id == acct
    finally:
        if admin is not None:
            await admin.close()
        await ledger.close()
