"""Burn-down rules (SPEC §4): properties of priority_key / burn_order / plan_debit / apply_debit.

Amounts are ledger units (ms of AI time); times are UTC.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.engine.bonus import day_end
from storage.engine.buckets import Allocation, Bucket, DebitPlan, Source
from storage.engine.burn_down import apply_debit, burn_order, plan_debit, priority_key, spendable

NOW = datetime(2025, 9, 15, 12, 0, tzinfo=UTC)
FAST = settings(max_examples=200, deadline=None)

# Few distinct values so ties (same expiry, same remaining, same creation) are common.
_EXPIRY_OFFSETS = st.sampled_from([None, -3600, -1, 0, 1, 3600, 86_400, 90 * 86_400])
_CREATED_OFFSETS = st.sampled_from([0, 60, 3600, 86_400])


@st.composite
def bucket_lists(draw: st.DrawFn, max_size: int = 8) -> list[Bucket]:
    ids = draw(st.lists(st.text("abcdef", min_size=1, max_size=3), unique=True, max_size=max_size))
    out = []
    for bucket_id in ids:
        source = draw(st.sampled_from(list(Source)))
        offset = draw(_EXPIRY_OFFSETS)
        expires = None if offset is None else NOW + timedelta(seconds=offset)
        remaining = draw(st.one_of(st.sampled_from([0, 1, 5, 100]), st.integers(0, 10_000)))
        created = NOW - timedelta(seconds=draw(_CREATED_OFFSETS))
        out.append(Bucket(bucket_id, source, remaining, expires, created))
    return out


amounts = st.integers(0, 25_000)


# --- total order ---------------------------------------------------------------------------


@FAST
@given(bucket_lists())
def test_priority_key_is_distinct_for_distinct_ids(buckets: list[Bucket]) -> None:
    keys = [priority_key(b) for b in buckets]
    assert len(set(keys)) == len(keys)


@FAST
@given(bucket_lists(), st.randoms(use_true_random=False))
def test_burn_order_is_independent_of_input_order(buckets: list[Bucket], rnd) -> None:
    shuffled = list(buckets)
    rnd.shuffle(shuffled)
    assert burn_order(shuffled, NOW) == burn_order(buckets, NOW)


@FAST
@given(bucket_lists())
def test_burn_order_holds_only_live_buckets_with_balance(buckets: list[Bucket]) -> None:
    order = burn_order(buckets, NOW)
    assert all(b.remaining > 0 and b.is_live(NOW) for b in order)
    expected = {b.id for b in buckets if b.remaining > 0 and b.is_live(NOW)}
    assert {b.id for b in order} == expected
    assert sum(b.remaining for b in order) == spendable(buckets, NOW)


@FAST
@given(bucket_lists())
def test_daily_buckets_burn_first_and_never_expiring_buckets_burn_last(
    buckets: list[Bucket],
) -> None:
    order = burn_order(buckets, NOW)
    daily = [b.source is Source.DAILY for b in order]
    assert daily == sorted(daily, reverse=True)  # all daily buckets before any other
    non_daily = [b for b in order if b.source is not Source.DAILY]
    never = [b.expires_at is None for b in non_daily]
    assert never == sorted(never)  # expiring paid buckets before never-expiring ones
    expiring = [b.expires_at for b in non_daily if b.expires_at is not None]
    assert expiring == sorted(expiring)  # earliest expiry first


# --- plan_debit ----------------------------------------------------------------------------


@FAST
@given(bucket_lists(), amounts)
def test_a_debit_takes_what_exists_and_reports_the_rest_as_shortfall(
    buckets: list[Bucket], amount: int
) -> None:
    plan = plan_debit(buckets, amount, NOW)
    available = spendable(buckets, NOW)
    assert plan.requested == amount
    assert plan.shortfall == max(0, amount - available)
    assert sum(a.amount for a in plan.allocations) == plan.covered == min(amount, available)


@FAST
@given(bucket_lists(), amounts)
def test_an_expired_bucket_is_never_debited(buckets: list[Bucket], amount: int) -> None:
    by_id = {b.id: b for b in buckets}
    plan = plan_debit(buckets, amount, NOW)
    for a in plan.allocations:
        assert by_id[a.bucket_id].is_live(NOW)
        assert 0 < a.amount <= by_id[a.bucket_id].remaining


@FAST
@given(bucket_lists(), amounts)
def test_a_debit_is_greedy_in_burn_order(buckets: list[Bucket], amount: int) -> None:
    """No slice from a later bucket while an earlier one keeps balance: every allocated bucket
    but the last is drained, and every bucket earlier in burn order than one allocated is
    drained."""
    plan = plan_debit(buckets, amount, NOW)
    order = burn_order(buckets, NOW)
    taken = {a.bucket_id: a.amount for a in plan.allocations}
    # allocations follow burn order, as a prefix of it
    assert [a.bucket_id for a in plan.allocations] == [b.id for b in order[: len(taken)]]
    for a in plan.allocations[:-1]:
        assert a.amount == next(b.remaining for b in order if b.id == a.bucket_id)
    if plan.allocations:
        last = [b.id for b in order].index(plan.allocations[-1].bucket_id)
        for earlier in order[:last]:
            assert taken.get(earlier.id) == earlier.remaining


@FAST
@given(bucket_lists(), amounts)
def test_applying_a_debit_moves_exactly_the_covered_units_and_no_bucket_goes_negative(
    buckets: list[Bucket], amount: int
) -> None:
    plan = plan_debit(buckets, amount, NOW)
    after = apply_debit(buckets, plan)
    assert [b.id for b in after] == [b.id for b in buckets]
    assert all(b.remaining >= 0 for b in after)
    assert sum(b.remaining for b in buckets) - sum(b.remaining for b in after) == plan.covered
    # only allocated buckets changed, and only their balance
    taken = {a.bucket_id: a.amount for a in plan.allocations}
    for before, now in zip(buckets, after, strict=True):
        assert now.remaining == before.remaining - taken.get(before.id, 0)
        assert (now.source, now.expires_at, now.created_at) == (
            before.source, before.expires_at, before.created_at)


@FAST
@given(bucket_lists(), st.integers(0, 12_000), st.integers(0, 12_000))
def test_settling_in_two_debits_equals_settling_in_one(
    buckets: list[Bucket], a: int, b: int
) -> None:
    total = spendable(buckets, NOW)
    a = a % (total + 1)
    b = b % (total - a + 1)  # no shortfall: a + b <= what the live buckets hold
    in_two = apply_debit(buckets, plan_debit(buckets, a, NOW))
    in_two = apply_debit(in_two, plan_debit(in_two, b, NOW))
    in_one = apply_debit(buckets, plan_debit(buckets, a + b, NOW))
    assert [x.remaining for x in in_two] == [x.remaining for x in in_one]


@FAST
@given(bucket_lists(), amounts)
def test_planning_is_pure(buckets: list[Bucket], amount: int) -> None:
    snapshot = list(buckets)
    plan_debit(buckets, amount, NOW)
    assert buckets == snapshot


# --- named examples ------------------------------------------------------------------------


def _b(bid: str, source: Source, remaining: int, expires: datetime | None,
       created: datetime = NOW - timedelta(days=1)) -> Bucket:
    return Bucket(bid, source, remaining, expires, created)


def test_daily_bucket_burns_before_package() -> None:
    # Even a package that expires sooner than today's daily bucket waits for the daily one.
    package = _b("pkg", Source.PACKAGE, 10_000, NOW + timedelta(minutes=5))
    daily = _b("daily", Source.DAILY, 900_000, day_end(NOW))
    plan = plan_debit([package, daily], 1_000, NOW)
    assert plan.allocations == (Allocation("daily", 1_000),)
    plan = plan_debit([package, daily], 900_500, NOW)
    assert plan.allocations == (Allocation("daily", 900_000), Allocation("pkg", 500))


def test_paid_buckets_burn_by_earliest_expiry() -> None:
    sub = _b("sub", Source.SUBSCRIPTION, 100, NOW + timedelta(days=20))
    pkg = _b("pkg", Source.PACKAGE, 100, NOW + timedelta(days=80))
    roll = _b("roll", Source.ROLLOVER, 100, NOW + timedelta(days=3))
    assert [b.id for b in burn_order([pkg, sub, roll], NOW)] == ["roll", "sub", "pkg"]


def test_never_expiring_gift_burns_last() -> None:
    gift = _b("gift", Source.GIFT, 5, None)
    welcome = _b("welcome", Source.WELCOME, 5, None, NOW - timedelta(days=2))
    pkg = _b("pkg", Source.PACKAGE, 1_000_000, NOW + timedelta(days=89))
    order = [b.id for b in burn_order([gift, pkg, welcome], NOW)]
    assert order[0] == "pkg"
    assert set(order[1:]) == {"gift", "welcome"}


def test_ties_break_by_smallest_remaining_then_creation_time_then_id() -> None:
    expires = NOW + timedelta(days=30)
    big = _b("a-big", Source.PACKAGE, 500, expires)
    small = _b("z-small", Source.PACKAGE, 100, expires)
    assert [b.id for b in burn_order([big, small], NOW)] == ["z-small", "a-big"]
    older = _b("z-old", Source.PACKAGE, 100, expires, NOW - timedelta(days=5))
    newer = _b("a-new", Source.PACKAGE, 100, expires, NOW - timedelta(days=1))
    assert [b.id for b in burn_order([newer, older], NOW)] == ["z-old", "a-new"]
    x = _b("x", Source.PACKAGE, 100, expires)
    y = _b("y", Source.GIFT, 100, expires)
    assert [b.id for b in burn_order([y, x], NOW)] == ["x", "y"]


def test_a_bucket_is_expired_at_its_expiry_instant() -> None:
    daily = _b("daily", Source.DAILY, 900_000, NOW)
    assert not daily.is_live(NOW)
    assert daily.is_live(NOW - timedelta(microseconds=1))
    plan = plan_debit([daily], 10, NOW)
    assert plan.allocations == () and plan.shortfall == 10


def test_empty_buckets_are_skipped() -> None:
    empty = _b("empty", Source.DAILY, 0, day_end(NOW))
    pkg = _b("pkg", Source.PACKAGE, 50, NOW + timedelta(days=1))
    assert plan_debit([empty, pkg], 10, NOW) == DebitPlan(10, (Allocation("pkg", 10),), 0)


def test_a_zero_debit_takes_nothing() -> None:
    pkg = _b("pkg", Source.PACKAGE, 50, None)
    assert plan_debit([pkg], 0, NOW) == DebitPlan(0, (), 0)


def test_a_negative_debit_is_refused() -> None:
    with pytest.raises(ValueError):
        plan_debit([], -1, NOW)


def test_applying_a_slice_larger_than_the_bucket_is_refused() -> None:
    pkg = _b("pkg", Source.PACKAGE, 50, None)
    with pytest.raises(ValueError):
        apply_debit([pkg], DebitPlan(60, (Allocation("pkg", 60),), 0))


def test_burn_down_imports_in_any_local_timezone() -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TZ": "Asia/Tokyo", "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-c", "import storage.engine.burn_down"],
        env=env, cwd=root, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
