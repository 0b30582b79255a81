"""The billing read queries on every store: keyset-paged events, usage grouped by operation/day."""

from __future__ import annotations

from typing import Any

from policies.compiled import Plan
from storage.clock import now_ms
from storage.engine.buckets import Source
from storage.ports import Admission, CallRecord, Purchase
from tests.integration.stores import Ledger, nonces_of, payments_of

PLAN = Plan(key="it", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)


async def _calls(ledger: Ledger, acct: str, ops: list[tuple[str, int]]) -> None:
    for i, (op, charge) in enumerate(ops):
        hold = await ledger.admit(acct, charge, op, 60, PLAN)
        assert isinstance(hold, Admission)
        await ledger.settle(hold.hold_id, CallRecord(f"req_q_{acct}_{i}", acct, op, None, 200, 5),
                            charge, "clamp")


async def test_events_page_newest_first_without_gaps(ledger: Ledger) -> None:
    acct = await ledger.create_account(PLAN)
    await ledger.grant(acct, Source.GIFT, 100_000, "g", None, "gift")
    await _calls(ledger, acct, [("chat", 100 + i) for i in range(7)])
    seen, before = [], None
    while True:
        page = await ledger.events(acct, 3, before)
        seen += page
        if len(page) < 3:
            break
        before = page[-1]["id"]
    assert [e["delta"] for e in seen] == [-106, -105, -104, -103, -102, -101, -100, 100_000]
    assert [e["id"] for e in seen] == sorted((e["id"] for e in seen), reverse=True)


async def test_usage_summary_sums_charges_and_counts_calls_by_operation_and_utc_day(
    ledger: Ledger,
) -> None:
    acct = await ledger.create_account(PLAN)
    await ledger.grant(acct, Source.GIFT, 100_000, "g", None, "gift")
    await _calls(ledger, acct, [("chat", 300), ("chat", 200), ("embeddings", 50)])
    now = now_ms()
    day = now // 86_400_000 * 86_400_000
    rows = sorted(await ledger.usage_summary(acct, day, day + 86_400_000))
    assert rows == [("chat", day, 500, 2), ("embeddings", day, 50, 1)]  # charged, calls
    assert await ledger.usage_summary(acct, day + 86_400_000, day + 2 * 86_400_000) == []


async def test_a_nonce_is_accepted_once_across_stores_on_one_database(
        ledger: Ledger, open_ledger: Any) -> None:
    import asyncio

    others = [open_ledger() for _ in range(3)]
    stores = [nonces_of(lg) for lg in [ledger, *others]]
    results = await asyncio.gather(*(s.remember("k1:nonce-abcdefghijklmnop", 600)
                                     for s in stores for _ in range(3)))
    assert results.count(True) == 1
    assert await stores[0].remember("k1:another-nonce-abcdef", 600) is True


async def test_admin_queries_on_both_stores(ledger: Ledger) -> None:
    acct = await ledger.create_account(PLAN)
    await ledger.grant(acct, Source.GIFT, 10_000, "g", None, "gift")
    await _calls(ledger, acct, [("chat", 1_000), ("embeddings", 500)])
    down = await ledger.adjust_down(acct, 9_000, "adj-1", "clawback")
    assert down.amount == 8_500 and down.metadata == {"unrecovered": 500}
    assert (await ledger.adjust_down(acct, 9_000, "adj-1", "clawback")).replayed
    totals = await ledger.totals(acct)
    assert totals["remaining"] == 0 and totals["deltas"] == 0
    now = now_ms()
    stats = {r["key"]: r for r in await ledger.usage_stats(now - 60_000, now + 60_000,
                                                            "operation")}
    assert stats["chat"]["charged_ms"] >= 1_000 and stats["embeddings"]["calls"] >= 1
    listed = await ledger.list_accounts(1000, None, "it")
    assert acct in {a["id"] for a in listed}


async def test_a_checkout_raced_by_many_deliveries_is_credited_once(
        ledger: Ledger, open_ledger: Any) -> None:
    import asyncio

    acct = await ledger.create_account(PLAN)
    await payments_of(ledger).record_purchase(Purchase(
        "cs_race", acct, "mini", 60, "USD", 500, None), now_ms())
    stores = [payments_of(lg) for lg in [ledger, *(open_ledger() for _ in range(3))]]
    expires = now_ms() + 86_400_000
    outcomes = await asyncio.gather(*(
        p.fulfil_checkout(f"evt_{i % 2}", "checkout.session.completed", "cs_race", expires,
                          None, now_ms())
        for i, p in enumerate(stores * 2)))
    assert [o[0] for o in outcomes].count("credited") == 1
    totals = await ledger.totals(acct)
    assert totals["remaining"] == totals["deltas"] == 3_600_000
