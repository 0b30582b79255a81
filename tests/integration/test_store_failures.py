"""A PostgreSQL connection lost in the middle of a ledger transaction surfaces as StoreUnavailable
(the gateway maps that to 503 / fail-mode allow), nothing is committed, and the next call works.

PostgreSQL only: the backend serving the transaction is terminated with pg_terminate_backend while
it waits for the account row lock held by another session.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from policies.compiled import Plan
from storage.buckets import Source
from storage.ports import Admission, StoreUnavailable
from storage.sql.ledger import SqlLedger

pytestmark = pytest.mark.postgres

PLAN = Plan(key="it", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)

async def _terminate_lock_waiters(blocker: Any, database: str) -> int:
    for _ in range(200):
        pids = await blocker.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
            " AND wait_event_type = 'Lock'", database)
        if pids:
            for row in pids:
                await blocker.fetchval("SELECT pg_terminate_backend($1)", row["pid"])
            return len(pids)
        await asyncio.sleep(0.02)
    return 0


@pytest.mark.parametrize("ledger_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("operation", ["admit", "settle"])
async def test_connection_lost_mid_transaction_is_store_unavailable(
    ledger: SqlLedger, operation: str
) -> None:
    import asyncpg

    acct = await ledger.create_account(PLAN)
    await ledger.grant(acct, Source.GIFT, 10_000, "g1", None, "gift")
    held = await ledger.admit(acct, 1_000, "it.op", 60, PLAN)
    assert isinstance(held, Admission)
    before = await ledger.totals(acct)

    url = make_url(ledger.runner.url)
    blocker = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(
        hide_password=False))
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", acct)
        if operation == "admit":
            pending = asyncio.ensure_future(ledger.admit(acct, 1_000, "it.op", 60, PLAN))
        else:
            from storage.ports import CallRecord

            pending = asyncio.ensure_future(ledger.settle(
                held.hold_id, CallRecord(request_id="req_lost", account_id=acct,
                                         operation="it.op", model=None, upstream_status=200,
                                         duration_ms=5), 500, "clamp"))
        assert await _terminate_lock_waiters(blocker, str(url.database)) == 1
        await tx.rollback()
    finally:
        await blocker.close()

    with pytest.raises(StoreUnavailable):
        await pending

    # nothing was committed, and the ledger recovers on the next call
    assert await ledger.totals(acct) == before
    again = await ledger.admit(acct, 1_000, "it.op", 60, PLAN)
    assert isinstance(again, Admission)
