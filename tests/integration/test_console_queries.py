"""The console's cross-account queries (storage port ConsoleQueries, issue 12) on the memory
store, SQLite and PostgreSQL: account search by id fragment with keyset pages (LIKE wildcards
taken literally), and usage per UTC day summed over accounts from the daily rollup."""

from __future__ import annotations

from storage.clock import MS_PER_DAY, day_start_ms
from storage.engine.buckets import Source
from storage.ports import CallRecord
from tests.integration.stores import Ledger, console_of
from tests.integration.test_ledger_contract import PLAIN

MIN = 60_000


async def test_search_accounts_by_fragment_with_pages(ledger: Ledger) -> None:
    for account_id in ("acct_Alpha1", "acct_alpha2", "acct_beta", "acct_al%x", "acct_al_y"):
        await ledger.create_account(PLAIN, account_id)
    console = console_of(ledger)

    first = await console.search_accounts("ALPHA", 1, None)
    assert [r["id"] for r in first] == ["acct_Alpha1"]
    assert set(first[0]) == {"id", "plan_key", "subscription_status", "created_at_ms"}
    rest = await console.search_accounts("alpha", 10, first[-1]["id"])
    assert [r["id"] for r in rest] == ["acct_alpha2"]
    assert [r["id"] for r in await console.search_accounts("al%", 10, None)] == ["acct_al%x"]
    assert [r["id"] for r in await console.search_accounts("al_", 10, None)] == ["acct_al_y"]
    assert await console.search_accounts("nothing-like-it", 10, None) == []


async def test_usage_by_day_sums_every_account(ledger: Ledger) -> None:
    accounts = [await ledger.create_account(PLAIN) for _ in range(2)]
    for n, account_id in enumerate(accounts):
        await ledger.grant(account_id, Source.GIFT, 60 * MIN, f"g-{n}", None, "it")
        for i in range(n + 1):
            record = CallRecord(request_id=f"req_day_{n}_{i}", account_id=account_id,
                                operation="it.op", model="m-1", upstream_status=200,
                                duration_ms=1000, input_tokens=1, output_tokens=1, estimated=0)
            await ledger.settle(None, record, 1000 * (i + 1), "clamp")
    today = day_start_ms(ledger.clock())
    days = await console_of(ledger).usage_by_day(today - 3 * MS_PER_DAY, today + MS_PER_DAY)
    # account 0: one call of 1 s; account 1: 1 s + 2 s
    assert days == [(today, "it.op", 3, 4000)]
    assert await console_of(ledger).usage_by_day(today - 3 * MS_PER_DAY, today) == []
