"""The balance document and the live stream's balance.updated in each unit (issue 10): time
unchanged, currency and tokens exact amounts in the unit with integer twins."""

from __future__ import annotations

from gateway.api.shapes import BalanceDocument
from gateway.api.stream import in_unit
from gateway.balance_view import balance_document, enhanced_balance
from policies.compiled import Plan
from policies.units import TIME, UnitKind, UnitOfAccount
from storage.engine.buckets import Source
from storage.engine.events import BALANCE_UPDATED, balance_data
from storage.ports import BalanceSnapshot, BucketView

USD = UnitOfAccount(UnitKind.CURRENCY, "USD")
TOKENS = UnitOfAccount(UnitKind.TOKENS)
PLAN = Plan("free", daily_bonus=500_000, monthly_bonus_cap=5_000_000, welcome_bonus=0,
            included=0, rollover_cap=0)


def snapshot(held: int = 0, debt: int = 0) -> BalanceSnapshot:
    buckets = [BucketView("b1", Source.DAILY.value, 250_001, 500_000, 10**13, 0),
               BucketView("b2", Source.PACKAGE.value, 9_999_999, 9_999_999, None, 0)]
    return BalanceSnapshot(account_id="a", plan_key="free", subscription_status="none",
                           buckets=buckets, held=held, debt=debt, version=3, now_ms=0,
                           daily_granted_this_month=250_001)


def test_time_keeps_the_enhanced_balance() -> None:
    snap = snapshot()
    assert balance_document(snap, PLAN, "v", TIME) == enhanced_balance(snap, PLAN, "v")


def test_a_usd_balance_is_exact_with_micro_twins() -> None:
    doc = balance_document(snapshot(held=1_000_000, debt=1), PLAN, "v", USD)
    BalanceDocument.of(doc)  # valid against its published shape
    t = doc["totals"]
    assert doc["unit"] == "USD"
    assert (t["total_micros"], t["bonus_micros"], t["paid_micros"]) == (
        10_250_000, 250_001, 9_999_999)
    assert t["available_micros"] == 10_250_000 - 1_000_000 - 1 and t["total"] == 10.25
    assert [b["amount_micros"] for b in doc["buckets"]["daily"] + doc["buckets"]["paid"]] == [
        250_001, 9_999_999]
    assert doc["bonus"]["daily"] == 0.5 and doc["bonus"]["used_this_month_micros"] == 250_001
    assert "total_seconds" not in t


def test_a_tokens_balance_has_no_micro_twins() -> None:
    doc = balance_document(snapshot(), PLAN, "v", TOKENS)
    BalanceDocument.of(doc)
    assert doc["unit"] == "tokens" and doc["totals"]["total"] == 10_250_000
    assert not [k for k in doc["totals"] if k.endswith("_micros")]


def test_the_stream_speaks_the_unit_and_time_is_unchanged() -> None:
    data = {**balance_data([("daily", 250_001), ("package", 9_999_999)], 0, 0, "consumption"),
            "charged_ms": 1_234}
    timed = in_unit(BALANCE_UPDATED, data, TIME)
    assert timed == {k: v for k, v in data.items() if k != "ledger"}
    usd = in_unit(BALANCE_UPDATED, data, USD)
    assert usd["unit"] == "USD" and usd["available_micros"] == 10_250_000
    assert usd["charged_micros"] == 1_234 and usd["reason"] == "consumption"
    assert not [k for k in usd if k.endswith(("_seconds", "_ms"))]
    assert in_unit("package.fulfilled", {"minutes": 5}, USD) == {"minutes": 5}
