"""Contract of the issue 10 store operations on every adapter (memory, SQLite, PostgreSQL):
key and end-user limits at admission (one step with the balance; live holds count; UTC days and
months), settlement clamped at the limits, key limits changed later, the provider-cost columns
of usage records, cost records by keyset pages and cost summaries (rollup and filtered), and
usage summaries filtered by key and end user."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from policies.compiled import Plan
from storage.engine.buckets import Source
from storage.engine.budgets import Limits
from storage.ports import (
    Admission,
    CallBudget,
    CallRecord,
    CostDay,
    CostGroup,
    CostQuery,
    Shortfall,
)
from tests.integration.stores import Ledger
from tests.support import ManualClock

NewAccount = Callable[[Plan], Awaitable[str]]
DAY_MS = 86_400_000
PLAIN = Plan(key="it", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
             rollover_cap=0)


async def funded(ledger: Ledger, new_account: NewAccount, amount: int = 1_000_000) -> str:
    acct = await new_account(PLAIN)
    await ledger.grant(acct, Source.GIFT, amount, f"fund:{acct}", None, "test funds")
    return acct


def record(acct: str, rid: str, *, key_id: str | None = None, end_user: str | None = None,
           model: str = "gpt-4o-mini", cost: int | None = 435,
           tokens: tuple[int, int] = (1000, 500)) -> CallRecord:
    return CallRecord(
        request_id=rid, account_id=acct, operation="chat", model=model, upstream_status=200,
        duration_ms=10, input_tokens=tokens[0], output_tokens=tokens[1], provider="openai",
        key_id=key_id, end_user=end_user, cache_write_tokens=0,
        prompt_cost=None if cost is None else cost // 3,
        completion_cost=None if cost is None else cost - cost // 3, total_cost=cost,
        cost_reason="unknown-model" if cost is None else None, price_version="0.2.3")


async def test_a_key_limit_refuses_with_limit_source_key_while_the_account_has_balance(
        ledger: Ledger, new_account: NewAccount, clock: ManualClock) -> None:
    ledger.clock = clock
    acct = await funded(ledger, new_account)
    key_id, _ = await ledger.create_api_key(acct, Limits(day=100, month=150))
    budget = CallBudget(key_id=key_id, key_limits=Limits(day=100, month=150))

    first = await ledger.admit(acct, 60, "chat", 60, PLAIN, request_id="r1", budget=budget)
    assert isinstance(first, Admission)
    # the live hold counts: 60 held, 40 of headroom left today
    refused = await ledger.admit(acct, 50, "chat", 60, PLAIN, request_id="r2", budget=budget)
    assert refused == Shortfall(required=50, available=40, daily=0, paid=40, limit_source="key")
    # settlement charges more than the hold: clamped at the day limit, the rest unbilled
    settled = await ledger.settle(first.hold_id, record(acct, "r1", key_id=key_id), 120,
                                  "clamp", budget)
    assert (settled.charged, settled.unbilled) == (100, 20)
    row = await ledger.usage_row("r1")
    assert row is not None and (row["charged"], row["unbilled"]) == (100, 20)
    assert (row["key_id"], row["provider"], row["total_cost"]) == (key_id, "openai", 435)

    # next UTC day: the day limit renews, the month limit (150) leaves 50
    clock.advance(DAY_MS)
    refused = await ledger.admit(acct, 60, "chat", 60, PLAIN, request_id="r3", budget=budget)
    assert isinstance(refused, Shortfall) and refused.limit_source == "key"
    assert refused.available == 50
    ok = await ledger.admit(acct, 50, "chat", 60, PLAIN, request_id="r4", budget=budget)
    assert isinstance(ok, Admission)

    # an account out of balance says so, whatever its key allows
    poor = await new_account(PLAIN)
    refused = await ledger.admit(poor, 1, "chat", 60, PLAIN, budget=CallBudget(key_id="key_x"))
    assert isinstance(refused, Shortfall) and refused.limit_source == "account"


async def test_key_limits_change_later_and_are_listed(ledger: Ledger,
                                                      new_account: NewAccount) -> None:
    acct = await funded(ledger, new_account)
    key_id, key = await ledger.create_api_key(acct)
    resolved = await ledger.resolve_key(key)
    assert resolved is not None and resolved.limits == Limits()
    assert await ledger.set_key_limits(key_id, Limits(day=5, month=None)) == acct
    resolved = await ledger.resolve_key(key)
    assert resolved is not None and resolved.limits == Limits(day=5)
    keys = await ledger.account_keys(acct)
    assert [(k["limit_day"], k["limit_month"]) for k in keys] == [(5, None)]
    assert await ledger.set_key_limits("key_nope", Limits()) is None
    await ledger.revoke_api_key(key_id)
    assert await ledger.set_key_limits(key_id, Limits(day=1)) is None


async def test_an_end_user_daily_limit_counts_only_that_end_user(
        ledger: Ledger, new_account: NewAccount, clock: ManualClock) -> None:
    ledger.clock = clock
    acct = await funded(ledger, new_account)
    alice = CallBudget(end_user="alice", end_user_day=30)
    bob = CallBudget(end_user="bob", end_user_day=30)
    a1 = await ledger.admit(acct, 30, "chat", 60, PLAIN, request_id="a1", budget=alice)
    assert isinstance(a1, Admission)
    refused = await ledger.admit(acct, 1, "chat", 60, PLAIN, request_id="a2", budget=alice)
    assert isinstance(refused, Shortfall) and refused.limit_source == "end_user"
    assert isinstance(await ledger.admit(acct, 30, "chat", 60, PLAIN, request_id="b1",
                                         budget=bob), Admission)
    settled = await ledger.settle(a1.hold_id, record(acct, "a1", end_user="alice"), 10,
                                  "clamp", alice)
    assert settled.charged == 10
    assert isinstance(await ledger.admit(acct, 20, "chat", 60, PLAIN, request_id="a3",
                                         budget=alice), Admission)


async def test_concurrent_admissions_never_exceed_a_key_limit(
        ledger: Ledger, new_account: NewAccount, open_ledger: Callable[..., Ledger]) -> None:
    acct = await funded(ledger, new_account)
    key_id, _ = await ledger.create_api_key(acct, Limits(day=100))
    budget = CallBudget(key_id=key_id, key_limits=Limits(day=100))
    other = open_ledger()  # another gateway process on the same store

    async def one(i: int) -> int:
        lg = ledger if i % 2 else other
        got = await lg.admit(acct, 7, "chat", 60, PLAIN, request_id=f"c{i}", budget=budget)
        if not isinstance(got, Admission):
            return 0
        done = await lg.settle(got.hold_id, record(acct, f"c{i}", key_id=key_id), 9, "clamp",
                               budget)
        return done.charged

    charged = await asyncio.gather(*(one(i) for i in range(30)))
    assert sum(charged) <= 100
    assert sum(1 for c in charged if c) >= 10  # 100 // 9 calls at least fit


async def test_cost_records_page_newest_first_and_summaries_add_up(
        ledger: Ledger, new_account: NewAccount, clock: ManualClock) -> None:
    ledger.clock = clock
    acct = await funded(ledger, new_account)
    key_a, _ = await ledger.create_api_key(acct)
    for i in range(5):
        got = await ledger.admit(acct, 10, "chat", 60, PLAIN, request_id=f"k{i}",
                                 budget=CallBudget(key_id=key_a, end_user="u1" if i < 2 else None))
        assert isinstance(got, Admission)
        rec = record(acct, f"k{i}", key_id=key_a, end_user="u1" if i < 2 else None,
                     model="gpt-4o" if i == 4 else "gpt-4o-mini", cost=None if i == 3 else 100)
        await ledger.settle(got.hold_id, rec, 10, "clamp")
        clock.advance(1000)
    window = CostQuery(acct, clock() - DAY_MS, clock() + 1)
    first = await ledger.cost_records(window, 2, None)
    assert [r["id"] for r in first] == ["k4", "k3"]
    after = (first[-1]["created_at_ms"], first[-1]["id"])
    assert [r["id"] for r in await ledger.cost_records(window, 10, after)] == ["k2", "k1", "k0"]

    groups = await ledger.cost_summary(window)
    assert groups == [
        CostGroup("openai", "gpt-4o", 1, 0, 1000, 500, 100, 10),
        CostGroup("openai", "gpt-4o-mini", 4, 1, 4000, 2000, 300, 40)]
    by_user = await ledger.cost_summary(CostQuery(acct, window.from_ms, window.to_ms,
                                                  end_user="u1"))
    assert by_user == [CostGroup("openai", "gpt-4o-mini", 2, 0, 2000, 1000, 200, 20)]
    assert await ledger.cost_summary(CostQuery(None, window.from_ms, window.to_ms,
                                               key_id="key_other")) == []
    everyone = await ledger.cost_summary(CostQuery(None, window.from_ms, window.to_ms))
    assert sum(g.calls for g in everyone) >= 5

    usage = await ledger.usage_summary(acct, window.from_ms, window.to_ms, end_user="u1")
    assert [(op, charged, calls) for op, _day, charged, calls in usage] == [("chat", 20, 2)]
    stats = await ledger.usage_stats(window.from_ms, window.to_ms, "end_user")
    assert {(g["key"], g["calls"]) for g in stats} >= {("u1", 2), (None, 3)}
    by_key = await ledger.usage_stats(window.from_ms, window.to_ms, "key_id")
    assert {(g["key"], g["charged_ms"]) for g in by_key} >= {(key_a, 50)}


async def test_cost_by_day_totals_each_utc_day_of_the_rollup(
        ledger: Ledger, new_account: NewAccount, clock: ManualClock) -> None:
    ledger.clock = clock
    acct = await funded(ledger, new_account)
    first_day = clock() // DAY_MS * DAY_MS
    for i, cost in enumerate((100, 250, None)):
        if i == 2:
            clock.advance(DAY_MS)
        got = await ledger.admit(acct, 10, "chat", 60, PLAIN, request_id=f"d{i}")
        assert isinstance(got, Admission)
        await ledger.settle(got.hold_id, record(acct, f"d{i}", cost=cost), 7 + i, "clamp")
    days = await ledger.cost_by_day(acct, first_day + 1, first_day + 2 * DAY_MS)
    assert days == [CostDay(first_day, 2, 350, 15), CostDay(first_day + DAY_MS, 1, 0, 9)]
    assert await ledger.cost_by_day(acct, first_day + DAY_MS, first_day + 2 * DAY_MS) == [
        CostDay(first_day + DAY_MS, 1, 0, 9)]
    everyone = await ledger.cost_by_day(None, first_day, first_day + 2 * DAY_MS)
    assert sum(d.calls for d in everyone) >= 3


async def test_a_late_settlement_counts_once_in_usage_and_costs_and_charges_its_key(
        ledger: Ledger, new_account: NewAccount, clock: ManualClock,
        open_ledger: Callable[..., Ledger]) -> None:
    """The lease sweep counts an interrupted call on its day (no provider known then); the
    call's settlement a day later adds its charge, tokens and cost to that day: usage and cost
    summaries count the call once, and its key's spend has the charge."""
    ledger.clock = clock
    acct = await funded(ledger, new_account)
    key_id, _ = await ledger.create_api_key(acct)
    budget = CallBudget(key_id=key_id)  # no limits: PostgreSQL settles it in gw_settle
    got = await ledger.admit(acct, 100, "chat", 60, PLAIN, request_id="late1",
                             model="gpt-4o-mini", budget=budget)
    assert isinstance(got, Admission)
    first_day = clock() // DAY_MS * DAY_MS
    await open_ledger().renew_leases(at_ms=clock() + 61_000)  # the hold lapsed: interrupted
    clock.advance(DAY_MS)
    done = await ledger.settle(got.hold_id, record(acct, "late1", key_id=key_id, cost=90), 70,
                               "clamp", budget)
    assert done.charged == 70 and not done.replayed

    window = CostQuery(acct, first_day, first_day + 2 * DAY_MS)
    assert await ledger.cost_summary(window) == [
        CostGroup("openai", "gpt-4o-mini", 1, 0, 1000, 500, 90, 70)]
    assert await ledger.cost_by_day(acct, first_day, first_day + 2 * DAY_MS) == [
        CostDay(first_day + DAY_MS, 1, 90, 70)]
    assert sorted(await ledger.usage_summary(acct, first_day, first_day + 2 * DAY_MS)) == [
        ("chat", first_day, 0, 1), ("chat", first_day + DAY_MS, 70, 0)]
    limited = CallBudget(key_id=key_id, key_limits=Limits(day=100, month=100))
    refused = await ledger.admit(acct, 50, "chat", 60, PLAIN, request_id="late2",
                                 budget=limited)
    assert isinstance(refused, Shortfall)
    assert (refused.limit_source, refused.available) == ("key", 30)
