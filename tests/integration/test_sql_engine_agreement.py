"""The one place SQL keeps a money expression for speed: admission sums an account's live
buckets, live holds and live daily buckets in one statement (storage/sql/hot_path.py `_FUNDS`),
and the engine (storage.engine.availability) decides on those sums. This holds the SQL sums to
the engine's own rules on generated bucket and hold sets, on SQLite and PostgreSQL: expiry is
exclusive (a bucket or hold expiring at the instant no longer counts), empty buckets never
count, holds burn the daily bonus first in a refusal's split.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, update
from sqlalchemy.engine import Connection

from policies.compiled import Plan
from storage.clock import to_datetime
from storage.engine.availability import Hold, funds
from storage.engine.buckets import Bucket, Source
from storage.ports import Admission, Shortfall
from storage.sql import hot_path
from storage.sql.ledger import SqlLedger
from storage.sql.tables import accounts, buckets, holds

PLAN = Plan(key="t", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)
AT = 1_750_000_000_000  # the admission instant (epoch ms)
NEAR = st.integers(-3, 3).map(lambda k: AT + k * 1_000)  # expiries around AT, AT itself too


@dataclass(frozen=True)
class Case:
    """An account's buckets (source, remaining, expires_at_ms), holds (amount, expires_at_ms),
    debt, and the amount asked for at AT."""

    buckets: list[tuple[Source, int, int | None]]
    holds: list[tuple[int, int]]
    debt: int
    amount: int


def _bucket() -> st.SearchStrategy[tuple[Source, int, int | None]]:
    remaining = st.integers(0, 50_000)
    daily = st.tuples(st.just(Source.DAILY), remaining, NEAR)  # a daily bucket always expires
    paid = st.tuples(st.sampled_from([s for s in Source if s is not Source.DAILY]), remaining,
                     st.none() | NEAR)
    return daily | paid


CASES = st.builds(Case, buckets=st.lists(_bucket(), max_size=6),
                  holds=st.lists(st.tuples(st.integers(0, 40_000), NEAR), max_size=4),
                  debt=st.integers(0, 30_000), amount=st.integers(0, 150_000))


def _arrange(conn: Connection, account_id: str, case: Case) -> None:
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(debt=case.debt))
    for i, (source, remaining, expires) in enumerate(case.buckets):
        conn.execute(insert(buckets).values(
            id=f"{account_id}_b{i}", account_id=account_id, source=source.value,
            amount=max(1, remaining), remaining=remaining, expires_at_ms=expires,
            created_at_ms=AT - 10_000 + i))
    for i, (amount, expires) in enumerate(case.holds):
        conn.execute(insert(holds).values(
            id=f"{account_id}_h{i}", account_id=account_id, amount=amount, operation="t.op",
            created_at_ms=AT - 10_000, expires_at_ms=expires))


def _expected(account_id: str, case: Case) -> Admission | Shortfall:
    """What the engine decides for this account at AT (the hold id aside)."""
    f = funds([Bucket(f"b{i}", source, remaining,
                      None if expires is None else to_datetime(expires), to_datetime(AT - 10_000))
               for i, (source, remaining, expires) in enumerate(case.buckets)],
              [Hold(f"h{i}", amount, expires) for i, (amount, expires) in enumerate(case.holds)],
              case.debt, AT)
    if f.covers(case.amount):
        return Admission(hold_id="", amount=case.amount, available_after=f.available - case.amount)
    shown, daily, paid = f.shortfall()
    return Shortfall(required=case.amount, available=shown, daily=daily, paid=paid)


async def _admit(ledger: SqlLedger, case: Case) -> tuple[Any, Any]:
    account_id = await ledger.create_account(PLAN)
    await ledger.runner.run(_arrange, account_id, case)
    got = await ledger.runner.run_raw(hot_path.admit, account_id, case.amount, "t.op", 60_000,
                                      AT)
    if isinstance(got, Admission):
        got = Admission(hold_id="", amount=got.amount, available_after=got.available_after)
    return got, _expected(account_id, case)


def test_admission_sums_in_sql_agree_with_the_engine(ledger_url: str) -> None:
    with asyncio.Runner() as loop:
        ledger = SqlLedger(ledger_url)
        try:
            @settings(max_examples=150, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])
            @given(case=CASES)
            def agree(case: Case) -> None:
                got, expected = loop.run(_admit(ledger, case))
                assert got == expected, case

            agree()
        finally:
            loop.run(ledger.close())
