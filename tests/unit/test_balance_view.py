"""The EnhancedBalance view (gateway.balance_view): every bucket is `daily` or `paid` (seed 000's
BucketWithDisplay), each total is the sum of the seconds it lists, and the snapshot's clock
decides each bucket's status."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.balance_view import enhanced_balance
from policies.compiled import Plan
from storage.engine.buckets import Source
from storage.engine.events import balance_data
from storage.ports import BalanceSnapshot, BucketView

NOW = 1_803_000_000_000  # the snapshot's clock (epoch ms), injected
HOUR = 3_600_000
FREE = Plan("free", daily_bonus=900_000, monthly_bonus_cap=18_000_000, welcome_bonus=1_800_000,
            included=0, rollover_cap=0)


def _bucket(i: int, source: Source, remaining: int, expires_at_ms: int | None) -> BucketView:
    return BucketView(f"bkt_{i}", source.value, remaining, remaining, expires_at_ms, NOW - 1)


def _snapshot(buckets: list[BucketView], held: int = 0, debt: int = 0,
              now_ms: int = NOW) -> BalanceSnapshot:
    return BalanceSnapshot("acct_1", 7, "free", "inactive", buckets, held, debt, 0, now_ms)


def test_welcome_and_gift_buckets_are_paid_and_paid_seconds_counts_them():
    snap = _snapshot([_bucket(1, Source.DAILY, 900_500, NOW + 10 * HOUR),
                      _bucket(2, Source.PACKAGE, 60_999, NOW + 90 * 24 * HOUR),
                      _bucket(3, Source.WELCOME, 1_800_000, None),
                      _bucket(4, Source.GIFT, 30_000, None)])
    doc = enhanced_balance(snap, FREE, "2025-09-01")
    assert [b["source"] for b in doc["buckets"]["paid"]] == ["package", "welcome", "gift"]
    assert [b["source"] for b in doc["buckets"]["daily"]] == ["daily"]
    totals = doc["totals"]
    assert totals["paid_seconds"] == 60 + 1_800 + 30
    assert totals["bonus_seconds"] == 900
    assert totals["total_seconds"] == 900 + 60 + 1_800 + 30
    assert totals["next_expiry_at"] == doc["buckets"]["daily"][0]["expires_at"]


def test_buckets_carry_id_source_type_priority_in_burn_order_and_null_for_never():
    snap = _snapshot([_bucket(1, Source.DAILY, 1_000, NOW + HOUR),
                      _bucket(2, Source.SUBSCRIPTION, 2_000, NOW + 30 * 24 * HOUR),
                      _bucket(3, Source.GIFT, 3_000, None)])
    doc = enhanced_balance(snap, FREE, "v")
    [daily] = doc["buckets"]["daily"]
    sub, gift = doc["buckets"]["paid"]
    assert daily == {"id": "bkt_1", "source": "daily", "type": "daily", "seconds": 1,
                     "expires_at": "2027-02-19T02:20:00Z", "priority": 1, "status": "expiring"}
    assert (sub["id"], sub["type"], sub["priority"]) == ("bkt_2", "paid", 2)
    assert (gift["expires_at"], gift["priority"], gift["status"]) == (None, 3, "active")


def test_a_bucket_is_expiring_under_24_hours_by_the_snapshots_clock():
    day = 24 * HOUR
    snap = _snapshot([_bucket(1, Source.PACKAGE, 1_000, NOW + day - 1),
                      _bucket(2, Source.PACKAGE, 1_000, NOW + day),
                      _bucket(3, Source.PACKAGE, 1_000, NOW)])
    statuses = [b["status"] for b in enhanced_balance(snap, FREE, "v")["buckets"]["paid"]]
    assert statuses == ["expiring", "active", "expired"]
    later = _snapshot(snap.buckets, now_ms=NOW + 2)  # the same buckets, a later clock
    assert [b["status"] for b in enhanced_balance(later, FREE, "v")["buckets"]["paid"]] == [
        "expiring", "expiring", "expired"]


def test_the_stream_splits_totals_as_the_balance_does():
    snap = _snapshot([_bucket(1, Source.DAILY, 1_500, NOW + HOUR),
                      _bucket(2, Source.WELCOME, 1_500, None),
                      _bucket(3, Source.GIFT, 1_500, None)])
    totals = enhanced_balance(snap, FREE, "v")["totals"]
    data = balance_data([(b.source, b.remaining) for b in snap.buckets], 0, 0, "snapshot")
    assert data == {"total_seconds": 3, "paid_seconds": 2, "bonus_seconds": 1,
                    "available_seconds": 3, "reason": "snapshot",
                    "ledger": {"total": 4_500, "paid": 3_000, "bonus": 1_500,
                               "available": 4_500, "held": 0, "debt": 0}}
    assert {k: totals[k] for k in data if k not in ("reason", "ledger")} == {
        k: v for k, v in data.items() if k not in ("reason", "ledger")}


_buckets = st.lists(
    st.tuples(st.sampled_from(list(Source)), st.integers(0, 10_000_000),
              st.one_of(st.none(), st.integers(NOW - HOUR, NOW + 100 * 24 * HOUR))),
    max_size=12)


@settings(max_examples=300, deadline=None)
@given(rows=_buckets, held=st.integers(0, 5_000_000), debt=st.integers(0, 5_000_000))
def test_each_total_equals_the_sum_of_its_listed_seconds(rows, held, debt):
    buckets = [_bucket(i, source, remaining,
                       NOW + HOUR if source is Source.DAILY else expires)
               for i, (source, remaining, expires) in enumerate(rows)]
    doc = enhanced_balance(_snapshot(buckets, held, debt), FREE, "v")
    daily, paid, totals = doc["buckets"]["daily"], doc["buckets"]["paid"], doc["totals"]
    assert totals["bonus_seconds"] == sum(b["seconds"] for b in daily)
    assert totals["paid_seconds"] == sum(b["seconds"] for b in paid)
    assert totals["total_seconds"] == totals["paid_seconds"] + totals["bonus_seconds"]
    assert 0 <= totals["available_seconds"] <= totals["total_seconds"]
    assert all(b["source"] == "daily" for b in daily)
    assert all(b["source"] != "daily" for b in paid)
    assert sorted(b["priority"] for b in daily + paid) == list(range(1, len(buckets) + 1))
    assert all((b["expires_at"] is None) == (buckets[b["priority"] - 1].expires_at_ms is None)
               for b in paid)
    stream = balance_data([(b.source, b.remaining) for b in buckets], held, debt, "x")
    assert all(stream[k] == totals[k] for k in ("total_seconds", "paid_seconds",
                                                "bonus_seconds", "available_seconds"))
