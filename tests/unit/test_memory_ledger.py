"""The in-memory account book (storage/book.py): keyed entries applied with the engine (SPEC §4).

Amounts are ledger units (ms of AI time); times are UTC.
"""

from __future__ import annotations

import copy
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from storage.engine.bonus import day_end, day_start, month_start
from storage.book import Book, Entry
from storage.engine.buckets import Allocation, EventType, Source
from storage.engine.burn_down import burn_order, spendable

START = datetime(2025, 1, 28, 9, 30, tzinfo=UTC)  # a few days before a month boundary
DAILY = 15 * 60_000  # 15 minutes
CAP = 50 * 60_000  # small enough that the machine hits it within a month

PAID_SOURCES = [Source.SUBSCRIPTION, Source.ROLLOVER, Source.PACKAGE, Source.WELCOME, Source.GIFT]


def snapshot(book: Book) -> tuple:
    return (dict(book.buckets), list(book.entries), book.debt)


def ledger_total(book: Book) -> int:
    return sum(e.delta for e in book.entries)


class BookMachine(RuleBasedStateMachine):
    """Random credits, debits, replays and daily bonuses while time only moves forward."""

    def __init__(self) -> None:
        super().__init__()
        self.book = Book()
        self.now = START
        self.keys: list[str] = []
        self.counter = 0

    def _fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    # --- rules ---------------------------------------------------------------------------

    @rule(step=st.sampled_from([
        timedelta(0), timedelta(seconds=1), timedelta(hours=1), timedelta(hours=7),
        timedelta(days=1), timedelta(days=3), timedelta(days=31),
    ]))
    def time_passes(self, step: timedelta) -> None:
        self.now += step

    @rule(
        source=st.sampled_from(PAID_SOURCES),
        amount=st.integers(1, 200_000),
        lifetime=st.sampled_from([None, timedelta(seconds=1), timedelta(hours=2),
                                  timedelta(days=2), timedelta(days=90)]),
    )
    def credit(self, source: Source, amount: int, lifetime: timedelta | None) -> None:
        debt_before = self.book.debt
        key, bucket_id = self._fresh("credit"), self._fresh("bucket")
        expires = None if lifetime is None else self.now + lifetime
        entry = self.book.credit(key, source, amount, self.now, expires, bucket_id)
        assert entry is not None
        self.keys.append(key)
        assert entry.delta == amount
        netted = min(debt_before, amount)
        assert self.book.debt == debt_before - netted
        assert self.book.buckets[bucket_id].remaining == amount - netted

    @rule(amount=st.integers(0, 400_000), on_shortfall=st.sampled_from(["clamp", "overdraft"]))
    def debit(self, amount: int, on_shortfall: str) -> None:
        before = dict(self.book.buckets)
        order = burn_order(before.values(), self.now)
        available = spendable(before.values(), self.now)
        debt_before = self.book.debt
        key = self._fresh("debit")
        entry = self.book.debit(key, amount, self.now, on_shortfall)  # type: ignore[arg-type]
        assert entry is not None
        self.keys.append(key)
        covered = min(amount, available)
        shortfall = amount - covered
        assert entry.event_type is EventType.CONSUMPTION
        assert sum(a.amount for a in entry.allocations) == covered
        if on_shortfall == "clamp":
            assert (entry.delta, entry.unbilled, self.book.debt) == (-covered, shortfall,
                                                                     debt_before)
        else:
            assert (entry.delta, entry.unbilled, self.book.debt) == (-amount, 0,
                                                                     debt_before + shortfall)
        # no expired bucket debited: every slice comes from a bucket live at the debit's `now`
        for a in entry.allocations:
            assert before[a.bucket_id].is_live(self.now)
            after = self.book.buckets[a.bucket_id].remaining
            assert after == before[a.bucket_id].remaining - a.amount
        # greedy: all allocated but the last are drained; nothing earlier in burn order kept balance
        ids = [b.id for b in order]
        assert [a.bucket_id for a in entry.allocations] == ids[: len(entry.allocations)]
        for a in entry.allocations[:-1]:
            assert self.book.buckets[a.bucket_id].remaining == 0
        untouched = set(before) - {a.bucket_id for a in entry.allocations}
        for bucket_id in untouched:
            assert self.book.buckets[bucket_id] == before[bucket_id]

    @precondition(lambda self: self.keys)
    @rule(data=st.data(), kind=st.sampled_from(["credit", "debit", "daily"]))
    def replay(self, data: st.DataObject, kind: str) -> None:
        key = data.draw(st.sampled_from(self.keys))
        before = copy.deepcopy(snapshot(self.book))
        if kind == "credit":
            result = self.book.credit(key, Source.GIFT, 12_345, self.now, None, self._fresh("b"))
        elif kind == "debit":
            result = self.book.debit(key, 777, self.now, "overdraft")
        else:
            result = self.book.ensure_daily_bonus(self.now, DAILY, CAP)
            if result is not None:  # today's bonus was not granted yet: a first application
                self.keys.append(result.key)
                return
        assert result is None
        assert snapshot(self.book) == before

    @rule()
    def daily_bonus(self) -> None:
        granted_before = self.book.daily_bonus_granted(self.now)
        entry = self.book.ensure_daily_bonus(self.now, DAILY, CAP)
        if entry is None:
            return
        self.keys.append(entry.key)
        assert entry.event_type is EventType.DAILY_BONUS
        assert 0 < entry.delta <= DAILY
        assert entry.delta == min(DAILY, CAP - granted_before)
        (alloc,) = entry.allocations
        bucket = self.book.buckets[alloc.bucket_id]
        assert bucket.source is Source.DAILY
        assert bucket.expires_at == day_end(self.now)
        # replaying the same day grants nothing more
        assert self.book.ensure_daily_bonus(self.now, DAILY, CAP) is None

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def balance_equals_the_sum_of_ledger_deltas(self) -> None:
        remaining = sum(b.remaining for b in self.book.buckets.values())
        assert remaining - self.book.debt == ledger_total(self.book)

    @invariant()
    def no_bucket_below_zero_and_no_negative_debt(self) -> None:
        assert all(b.remaining >= 0 for b in self.book.buckets.values())
        assert self.book.debt >= 0

    @invariant()
    def available_is_live_balance_minus_debt(self) -> None:
        live = sum(b.remaining for b in self.book.buckets.values() if b.is_live(self.now))
        assert self.book.available(self.now) == live - self.book.debt
        assert self.book.available(self.now, held=10) == live - self.book.debt - 10

    @invariant()
    def keys_are_unique(self) -> None:
        keys = [e.key for e in self.book.entries]
        assert len(keys) == len(set(keys))

    @invariant()
    def daily_bonus_never_exceeds_the_daily_amount_nor_the_monthly_cap(self) -> None:
        daily = [e for e in self.book.entries if e.event_type is EventType.DAILY_BONUS]
        assert all(0 < e.delta <= DAILY for e in daily)
        per_day = Counter(day_start(e.at) for e in daily)
        assert all(n == 1 for n in per_day.values())
        per_month: Counter[datetime] = Counter()
        for e in daily:
            per_month[month_start(e.at)] += e.delta
        assert all(total <= CAP for total in per_month.values())


BookMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
TestBookMachine = BookMachine.TestCase


# --- named examples ----------------------------------------------------------------------------


def test_a_credit_creates_a_bucket_and_an_entry() -> None:
    book = Book()
    expires = START + timedelta(days=90)
    entry = book.credit("k1", Source.PACKAGE, 3_600_000, START, expires, "b1")
    assert entry == Entry("k1", EventType.PACKAGE_CREDIT, 3_600_000,
                          (Allocation("b1", 3_600_000),), START)
    bucket = book.buckets["b1"]
    assert (bucket.source, bucket.remaining, bucket.expires_at, bucket.created_at) == (
        Source.PACKAGE, 3_600_000, expires, START)
    assert book.available(START) == 3_600_000


@pytest.mark.parametrize("amount", [0, -1])
def test_a_credit_must_be_positive(amount: int) -> None:
    book = Book()
    with pytest.raises(ValueError):
        book.credit("k", Source.GIFT, amount, START, None, "b")
    assert book.entries == [] and book.buckets == {}


def test_a_bucket_id_is_never_reused() -> None:
    book = Book()
    book.credit("k1", Source.GIFT, 10, START, None, "b")
    with pytest.raises(ValueError):
        book.credit("k2", Source.GIFT, 10, START, None, "b")
    assert len(book.entries) == 1


def test_replaying_a_keyed_entry_changes_nothing() -> None:
    book = Book()
    assert book.credit("c", Source.GIFT, 100, START, None, "b") is not None
    assert book.debit("d", 30, START, "clamp") is not None
    before = copy.deepcopy(snapshot(book))
    assert book.credit("c", Source.GIFT, 100, START, None, "b2") is None
    assert book.debit("d", 30, START, "clamp") is None
    assert book.debit("c", 5, START, "overdraft") is None  # keys are shared by every entry kind
    assert snapshot(book) == before


def test_clamp_debits_what_exists_and_records_the_unbilled_remainder() -> None:
    book = Book()
    book.credit("c", Source.PACKAGE, 100, START, START + timedelta(days=1), "b")
    entry = book.debit("d", 150, START, "clamp")
    assert entry is not None
    assert (entry.delta, entry.unbilled, book.debt) == (-100, 50, 0)
    assert entry.allocations == (Allocation("b", 100),)
    assert book.available(START) == 0


def test_overdraft_records_debt_netted_against_the_next_credit() -> None:
    book = Book()
    book.credit("c1", Source.PACKAGE, 100, START, None, "b1")
    entry = book.debit("d", 150, START, "overdraft")
    assert entry is not None
    assert (entry.delta, entry.unbilled, book.debt) == (-150, 0, 50)
    assert book.available(START) == -50
    credit = book.credit("c2", Source.PACKAGE, 80, START, None, "b2")
    assert credit is not None and credit.delta == 80
    assert (book.debt, book.buckets["b2"].remaining) == (0, 30)
    assert book.available(START) == 30


def test_a_credit_smaller_than_the_debt_only_pays_part_of_it() -> None:
    book = Book()
    book.debit("d", 500, START, "overdraft")
    book.credit("c", Source.GIFT, 200, START, None, "b")
    assert (book.debt, book.buckets["b"].remaining) == (300, 0)
    assert sum(b.remaining for b in book.buckets.values()) - book.debt == ledger_total(book)


def test_an_expired_bucket_is_never_debited_even_without_a_sweep() -> None:
    book = Book()
    book.credit("c1", Source.PACKAGE, 100, START, START + timedelta(hours=1), "soon")
    book.credit("c2", Source.GIFT, 100, START, None, "gift")
    later = START + timedelta(hours=1)  # expiry is exclusive: expired at this instant
    entry = book.debit("d", 50, later, "clamp")
    assert entry is not None and entry.allocations == (Allocation("gift", 50),)
    assert book.buckets["soon"].remaining == 100
    assert book.available(later) == 50


def test_available_subtracts_holds_and_may_be_negative() -> None:
    book = Book()
    book.credit("c", Source.GIFT, 100, START, None, "b")
    assert book.available(START, held=30) == 70
    assert book.available(START, held=130) == -30


def test_daily_bucket_burns_before_package_in_the_book() -> None:
    book = Book()
    book.credit("c", Source.PACKAGE, 1_000_000, START, START + timedelta(hours=2), "pkg")
    book.ensure_daily_bonus(START, DAILY, CAP)
    entry = book.debit("d", DAILY + 10, START, "clamp")
    assert entry is not None
    assert [a.bucket_id for a in entry.allocations][1:] == ["pkg"]
    assert entry.allocations[0].amount == DAILY


def test_the_daily_bonus_is_granted_lazily_once_per_utc_day() -> None:
    book = Book()
    first = book.ensure_daily_bonus(START, DAILY, CAP)
    assert first is not None and first.delta == DAILY
    assert first.key == "daily_bonus:2025-01-28"
    assert book.ensure_daily_bonus(START + timedelta(hours=5), DAILY, CAP) is None
    bucket = book.buckets[first.allocations[0].bucket_id]
    assert bucket.expires_at == datetime(2025, 1, 29, tzinfo=UTC)
    tomorrow = START + timedelta(days=1)
    assert book.available(tomorrow) == 0  # yesterday's bonus has expired
    assert book.ensure_daily_bonus(tomorrow, DAILY, CAP) is not None
    assert book.available(tomorrow) == DAILY


def test_the_monthly_cap_cuts_the_last_daily_bonus_and_then_stops_it() -> None:
    book = Book()
    day = datetime(2025, 3, 1, 8, tzinfo=UTC)
    grants = []
    for i in range(6):
        entry = book.ensure_daily_bonus(day + timedelta(days=i), DAILY, 40 * 60_000)
        grants.append(None if entry is None else entry.delta)
    assert grants == [DAILY, DAILY, 10 * 60_000, None, None, None]
    # a new calendar month starts a new allowance
    entry = book.ensure_daily_bonus(datetime(2025, 4, 1, tzinfo=UTC), DAILY, 40 * 60_000)
    assert entry is not None and entry.delta == DAILY


def test_free_plan_daily_bonus_never_passes_300_minutes_a_month() -> None:
    book = Book()
    for i in range(31):
        book.ensure_daily_bonus(datetime(2025, 1, 1, 12, tzinfo=UTC) + timedelta(days=i),
                                DAILY, 300 * 60_000)
    assert book.daily_bonus_granted(datetime(2025, 1, 15, tzinfo=UTC)) == 300 * 60_000
    assert len(book.entries) == 20


def test_an_uncapped_or_zero_daily_bonus() -> None:
    book = Book()
    assert book.ensure_daily_bonus(START, 0, None) is None
    assert book.entries == []
    entry = book.ensure_daily_bonus(START, DAILY, None)
    assert entry is not None and entry.delta == DAILY


def test_the_daily_bonus_pays_debt_first() -> None:
    book = Book()
    book.debit("d", 1000, START, "overdraft")
    entry = book.ensure_daily_bonus(START, DAILY, CAP)
    assert entry is not None and entry.delta == DAILY
    assert book.debt == 0
    assert book.available(START) == DAILY - 1000


def test_a_negative_debit_is_refused() -> None:
    book = Book()
    with pytest.raises(ValueError):
        book.debit("d", -1, START, "clamp")
    assert book.entries == []
