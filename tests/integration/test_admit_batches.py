"""Group commit of a hot account's admissions on PostgreSQL (storage/sql/account_batches.py): the
admissions arriving while one is in flight go in one statement, and each call's outcome is the
one it would have had alone, in arrival order — admits and 402s mixed, nothing overspent; a
batch that fails because of one call is retried one by one, so only that call fails.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from policies.compiled import Plan
from storage.engine.availability import Funds
from storage.engine.buckets import Source
from storage.ports import Admission, Shortfall
from storage.sql.ledger import SqlLedger

PLAN = Plan(key="it", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_kind(request: pytest.FixtureRequest) -> str:
    """PostgreSQL only: SQLite has its own group commit (storage/sql/sqlite_writer.py)."""
    return str(request.param)


NewAccount = Callable[[Plan], Awaitable[str]]


def _alone_in_order(balance: int, amounts: list[int]) -> list[Admission | Shortfall]:
    """What each admission gets when they run one at a time in this order (hold ids blank)."""
    held = 0
    out: list[Admission | Shortfall] = []
    for amount in amounts:
        funds = Funds(balance, held, 0, 0)
        if funds.covers(amount):
            out.append(Admission(hold_id="", amount=amount,
                                 available_after=funds.available - amount))
            held += amount
        else:
            shown, daily, paid = funds.shortfall()
            out.append(Shortfall(required=amount, available=shown, daily=daily, paid=paid))
    return out


def _blank(result: Any) -> Any:
    if isinstance(result, Admission):
        return Admission(hold_id="", amount=result.amount,
                         available_after=result.available_after)
    return result


async def test_a_batch_mixing_admits_and_402s_decides_each_as_if_alone(
    ledger: SqlLedger, new_account: NewAccount,
) -> None:
    assert ledger.admit_batches is not None
    acct = await new_account(PLAN)
    balance = 20_000
    await ledger.grant(acct, Source.GIFT, balance, "fund", None, "batch funds")
    amounts = [random.Random(i).choice([300, 700, 1_500, 10**9]) for i in range(60)]
    results = await asyncio.gather(*(
        ledger.admit(acct, amount, "it.batch", 120, PLAN, request_id=f"{acct[-8:]}_{i}")
        for i, amount in enumerate(amounts)))
    assert ledger.admit_batches.batches >= 1  # the calls did share statements
    assert ledger.admit_batches.batched >= 2
    assert [_blank(r) for r in results] == _alone_in_order(balance, amounts)
    held = sum(r.amount for r in results if isinstance(r, Admission))
    assert 0 < held <= balance
    assert any(isinstance(r, Shortfall) for r in results)
    totals = await ledger.totals(acct)
    assert totals["holds"] == sum(isinstance(r, Admission) for r in results)


async def test_a_batch_failed_by_one_call_is_retried_one_by_one(
    ledger: SqlLedger, new_account: NewAccount,
) -> None:
    assert ledger.admit_batches is not None
    acct = await new_account(PLAN)
    await ledger.grant(acct, Source.GIFT, 100_000, "fund", None, "batch funds")
    rid = acct[-8:]
    # The first runs alone; the next three wait for it and form a batch, which the reused
    # request id of the last one fails (its usage record exists): retried one by one.
    results = await asyncio.gather(*(
        ledger.admit(acct, 1_000, "it.batch", 120, PLAN, request_id=rid + suffix)
        for suffix in ("_a", "_b", "_c", "_a")), return_exceptions=True)
    assert [type(r) for r in results[:3]] == [Admission, Admission, Admission]
    assert isinstance(results[3], asyncpg.UniqueViolationError)
    assert ledger.admit_batches.batches == 0
    totals = await ledger.totals(acct)
    assert totals["holds"] == 3  # the failed batch wrote nothing; each retry once
