"""The in-memory store (storage/memory) as the reference model of the ledger: keyed entries
applied with the engine (SPEC §4), checked against the rules by a Hypothesis state machine.

The same adapter runs the integration contract suite next to SQLite and PostgreSQL
(tests/integration), so what is proven here of the model holds of every store the suite passes.
Nothing in the memory adapter awaits (`run` below fails if a method ever suspends): each
operation is atomic, as a SQL transaction under its account lock is.
Amounts are ledger units (ms of AI time); times are UTC.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from policies.compiled import Plan
from storage.clock import to_datetime, to_ms
from storage.engine.bonus import day_end, day_start, month_start
from storage.engine.buckets import Source
from storage.engine.burn_down import burn_order, spendable
from storage.memory.ledger import MemoryLedger
from storage.memory.store import as_bucket
from storage.ports import Admission, CallRecord, IdempotencyConflict, Shortfall
from tests.support import ManualClock

T = TypeVar("T")

START = datetime(2025, 1, 28, 9, 30, tzinfo=UTC)  # a few days before a month boundary
DAILY = 15 * 60_000  # 15 minutes
CAP = 50 * 60_000  # small enough that the machine hits it within a month
LEASE_MS = 30_000  # MemoryLedger's default lease

PAID_SOURCES = [Source.SUBSCRIPTION, Source.ROLLOVER, Source.PACKAGE, Source.WELCOME, Source.GIFT]


def plan(daily: int = 0, cap: int | None = None) -> Plan:
    return Plan(key="t", daily_bonus=daily, monthly_bonus_cap=cap, welcome_bonus=0, included=0,
                rollover_cap=0)


NO_BONUS = plan()
BONUS = plan(DAILY, CAP)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one memory-adapter call to completion without an event loop; it must not suspend."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("a memory-adapter operation suspended: it would not be atomic")


class Book:
    """One account on a fresh MemoryLedger whose clock starts at `start`."""

    def __init__(self, start: datetime = START) -> None:
        self.clock = ManualClock(to_ms(start))
        self.ledger = MemoryLedger(clock=self.clock)
        self.account = run(self.ledger.create_account(NO_BONUS))
        self._calls = 0

    @property
    def now(self) -> datetime:
        return to_datetime(self.clock())

    def at(self, when: datetime) -> Book:
        self.clock.now_ms = to_ms(when)
        return self

    def credit(self, key: str, source: Source, amount: int, expires: datetime | None,
               reason: str = "credit") -> Any:
        return run(self.ledger.grant(self.account, source, amount, key,
                                     None if expires is None else to_ms(expires), reason))

    def debit(self, request_id: str, amount: int, rule: str) -> Any:
        record = CallRecord(request_id, self.account, "t.op", None, 200, 1)
        return run(self.ledger.settle(None, record, amount, rule))  # type: ignore[arg-type]

    def daily(self, daily: int = DAILY, cap: int | None = CAP) -> dict[str, Any] | None:
        """Ensure today's daily bonus; the entry it wrote, or None when it wrote none."""
        before = len(self.entries())
        assert run(self.ledger.ensure_daily_bonus(self.account, plan(daily, cap))) is True
        new = self.entries()[before:]
        assert len(new) <= 1
        return new[0] if new else None

    def entries(self) -> list[dict[str, Any]]:
        return run(self.ledger.entry_rows(self.account))

    def buckets(self) -> dict[str, dict[str, Any]]:
        return {b["id"]: b for b in run(self.ledger.bucket_rows(self.account))}

    def allocations(self, key: str) -> list[tuple[str, str, int]]:
        return run(self.ledger.allocation_rows(self.account, key))

    def balance(self) -> Any:
        return run(self.ledger.balance(self.account))

    def snapshot(self) -> tuple[Any, ...]:
        return (self.buckets(), self.entries(), self.balance().debt,
                run(self.ledger.totals(self.account)))


# --- the state machine ---------------------------------------------------------------------------


class BookMachine(RuleBasedStateMachine):
    """Random credits, debits, holds, replays and daily bonuses while time only moves forward."""

    def __init__(self) -> None:
        super().__init__()
        self.book = Book()
        self.credits: list[tuple[str, Source, int, str]] = []  # key, source, amount, reason
        self.calls: list[str] = []  # settled request ids
        self.holds: dict[str, tuple[int, int]] = {}  # hold id -> (amount, lease end ms)
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
        self.book.clock.advance(int(step.total_seconds() * 1000))

    @rule(
        source=st.sampled_from(PAID_SOURCES),
        amount=st.integers(1, 200_000),
        lifetime=st.sampled_from([None, timedelta(seconds=1), timedelta(hours=2),
                                  timedelta(days=2), timedelta(days=90)]),
    )
    def credit(self, source: Source, amount: int, lifetime: timedelta | None) -> None:
        debt_before = self.book.balance().debt
        key = self._fresh("credit")
        expires = None if lifetime is None else self.book.now + lifetime
        result = self.book.credit(key, source, amount, expires)
        assert not result.replayed
        self.credits.append((key, source, amount, "credit"))
        entry = self.book.entries()[-1]
        assert (entry["idempotency_key"], entry["delta"]) == (key, amount)
        netted = min(debt_before, amount)
        assert self.book.balance().debt == debt_before - netted
        assert self.book.buckets()[result.bucket_id]["remaining"] == amount - netted

    @rule(amount=st.integers(0, 400_000), on_shortfall=st.sampled_from(["clamp", "overdraft"]))
    def debit(self, amount: int, on_shortfall: str) -> None:
        now = self.book.now
        before = self.book.buckets()
        order = burn_order([as_bucket(b) for b in before.values()], now)
        available = spendable([as_bucket(b) for b in before.values()], now)
        debt_before = self.book.balance().debt
        request_id = self._fresh("debit")
        done = self.book.debit(request_id, amount, on_shortfall)
        assert not done.replayed
        self.calls.append(request_id)
        covered = min(amount, available)
        shortfall = amount - covered
        allocations = self.book.allocations("call:" + request_id)
        entries = [e for e in self.book.entries()
                   if e["idempotency_key"] == "call:" + request_id]
        assert sum(a for _, _, a in allocations) == covered
        debt = self.book.balance().debt
        if on_shortfall == "clamp":
            assert (done.charged, done.unbilled, debt) == (covered, shortfall, debt_before)
        else:
            assert (done.charged, done.unbilled, debt) == (amount, 0, debt_before + shortfall)
        # the entry is the charge (no entry when nothing was charged)
        assert [(e["event_type"], e["delta"]) for e in entries] == (
            [("consumption", -done.charged)] if done.charged else [])
        after = self.book.buckets()
        # no expired bucket debited: every slice comes from a bucket live at the debit's `now`
        for bucket_id, _source, taken in allocations:
            assert as_bucket(before[bucket_id]).is_live(now)
            assert after[bucket_id]["remaining"] == before[bucket_id]["remaining"] - taken
        # greedy: all allocated but the last are drained; nothing earlier in burn order kept
        # balance
        ids = [b.id for b in order]
        assert [a[0] for a in allocations] == ids[: len(allocations)]
        for bucket_id, _source, _taken in allocations[:-1]:
            assert after[bucket_id]["remaining"] == 0
        untouched = set(before) - {a[0] for a in allocations}
        for bucket_id in untouched:
            assert after[bucket_id] == before[bucket_id]

    @rule(amount=st.integers(0, 100_000))
    def hold(self, amount: int) -> None:
        at = self.book.clock()
        balance = self.book.balance()
        result = run(self.book.ledger.admit(self.book.account, amount, "t.op", 60, NO_BONUS))
        if isinstance(result, Admission):
            assert amount <= balance.available
            assert result.available_after == balance.available - amount
            self.holds[result.hold_id] = (amount, at + LEASE_MS)
        else:
            assert isinstance(result, Shortfall) and amount > balance.available
            assert result.available == max(0, balance.available)

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        hold_id = data.draw(st.sampled_from(sorted(self.holds)))
        run(self.book.ledger.release(hold_id))
        del self.holds[hold_id]

    @precondition(lambda self: self.credits or self.calls)
    @rule(data=st.data(), kind=st.sampled_from(["credit", "conflict", "debit", "cross", "daily"]))
    def replay(self, data: st.DataObject, kind: str) -> None:
        before = self.book.snapshot()
        if kind in ("credit", "conflict") and self.credits:
            key, source, amount, reason = data.draw(st.sampled_from(self.credits))
            if kind == "credit":  # the same request again: its original result, nothing new
                assert self.book.credit(key, source, amount, None, reason).replayed
            else:  # the key reused for another credit: refused
                with pytest.raises(IdempotencyConflict):
                    self.book.credit(key, Source.GIFT, amount + 12_345, None, reason)
        elif kind in ("debit", "cross") and self.calls:
            request_id = data.draw(st.sampled_from(self.calls))
            if kind == "debit":
                assert self.book.debit(request_id, 777, "overdraft").replayed
            else:  # keys are shared by every entry kind: a call's key cannot credit
                entry_key = "call:" + request_id
                if any(e["idempotency_key"] == entry_key for e in self.book.entries()):
                    with pytest.raises(IdempotencyConflict):
                        self.book.credit(entry_key, Source.GIFT, 12_345, None)
        elif kind == "daily" and self.book.daily() is not None:
            return  # today's bonus was not granted yet: a first application
        assert self.book.snapshot() == before

    @rule()
    def daily_bonus(self) -> None:
        granted_before = self.book.balance().daily_granted_this_month
        entry = self.book.daily()
        if entry is None:
            return
        assert entry["event_type"] == "daily_bonus"
        assert 0 < entry["delta"] <= DAILY
        assert entry["delta"] == min(DAILY, CAP - granted_before)
        ((bucket_id, source, _amount),) = self.book.allocations(entry["idempotency_key"])
        bucket = self.book.buckets()[bucket_id]
        assert source == "daily"
        assert bucket["expires_at_ms"] == to_ms(day_end(self.book.now))
        # replaying the same day grants nothing more
        assert self.book.daily() is None

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def balance_equals_the_sum_of_ledger_deltas(self) -> None:
        t = run(self.book.ledger.totals(self.book.account))
        assert t["remaining"] - t["debt"] == t["deltas"]
        remaining = sum(b["remaining"] for b in self.book.buckets().values())
        assert remaining - self.book.balance().debt == sum(
            e["delta"] for e in self.book.entries())

    @invariant()
    def no_bucket_below_zero_and_no_negative_debt(self) -> None:
        assert all(b["remaining"] >= 0 for b in self.book.buckets().values())
        assert self.book.balance().debt >= 0

    @invariant()
    def available_is_live_balance_minus_holds_and_debt(self) -> None:
        now_ms = self.book.clock()
        live = sum(b["remaining"] for b in self.book.buckets().values()
                   if as_bucket(b).is_live(self.book.now))
        held = sum(amount for amount, lease_end in self.holds.values() if lease_end > now_ms)
        snap = self.book.balance()
        assert (snap.spendable, snap.held) == (live, held)
        assert snap.available == live - snap.debt - held

    @invariant()
    def keys_are_unique(self) -> None:
        keys = [e["idempotency_key"] for e in self.book.entries()]
        assert len(keys) == len(set(keys))

    @invariant()
    def daily_bonus_never_exceeds_the_daily_amount_nor_the_monthly_cap(self) -> None:
        daily = [e for e in self.book.entries() if e["event_type"] == "daily_bonus"]
        assert all(0 < e["delta"] <= DAILY for e in daily)
        per_day = Counter(day_start(to_datetime(e["created_at_ms"])) for e in daily)
        assert all(n == 1 for n in per_day.values())
        per_month: Counter[datetime] = Counter()
        for e in daily:
            per_month[month_start(to_datetime(e["created_at_ms"]))] += e["delta"]
        assert all(total <= CAP for total in per_month.values())


BookMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
TestBookMachine = BookMachine.TestCase


# --- named examples ----------------------------------------------------------------------------


def test_a_credit_creates_a_bucket_and_an_entry() -> None:
    book = Book()
    expires = START + timedelta(days=90)
    result = book.credit("k1", Source.PACKAGE, 3_600_000, expires)
    (entry,) = book.entries()
    assert (entry["idempotency_key"], entry["event_type"], entry["delta"],
            entry["created_at_ms"]) == ("k1", "package_credit", 3_600_000, to_ms(START))
    assert book.allocations("k1") == [(result.bucket_id, "package", 3_600_000)]
    bucket = book.buckets()[result.bucket_id]
    assert (bucket["source"], bucket["remaining"], bucket["expires_at_ms"],
            bucket["created_at_ms"]) == ("package", 3_600_000, to_ms(expires), to_ms(START))
    assert book.balance().available == 3_600_000


@pytest.mark.parametrize("amount", [0, -1])
def test_a_credit_must_be_positive(amount: int) -> None:
    book = Book()
    with pytest.raises(ValueError):
        book.credit("k", Source.GIFT, amount, None)
    assert book.entries() == [] and book.buckets() == {}


def test_a_bucket_id_is_never_reused() -> None:
    book = Book()
    first = book.credit("k1", Source.GIFT, 10, None)
    second = book.credit("k2", Source.GIFT, 10, None)
    assert first.bucket_id != second.bucket_id
    assert len(book.buckets()) == 2 and len(book.entries()) == 2


def test_replaying_a_keyed_entry_changes_nothing() -> None:
    book = Book()
    assert not book.credit("c", Source.GIFT, 100, None).replayed
    assert not book.debit("d", 30, "clamp").replayed
    before = book.snapshot()
    assert book.credit("c", Source.GIFT, 100, None).replayed
    assert book.debit("d", 30, "clamp").replayed
    assert book.debit("d", 5, "overdraft").replayed  # the call is settled, whatever it says now
    with pytest.raises(IdempotencyConflict):  # keys are shared by every entry kind
        book.credit("call:d", Source.GIFT, 5, None)
    assert book.snapshot() == before


def test_clamp_debits_what_exists_and_records_the_unbilled_remainder() -> None:
    book = Book()
    pkg = book.credit("c", Source.PACKAGE, 100, START + timedelta(days=1))
    done = book.debit("d", 150, "clamp")
    assert (done.charged, done.unbilled, book.balance().debt) == (100, 50, 0)
    assert book.entries()[-1]["delta"] == -100
    assert book.allocations("call:d") == [(pkg.bucket_id, "package", 100)]
    assert book.balance().available == 0


def test_overdraft_records_debt_netted_against_the_next_credit() -> None:
    book = Book()
    book.credit("c1", Source.PACKAGE, 100, None)
    done = book.debit("d", 150, "overdraft")
    assert (done.charged, done.unbilled, book.balance().debt) == (150, 0, 50)
    assert book.entries()[-1]["delta"] == -150
    assert book.balance().available == -50
    credit = book.credit("c2", Source.PACKAGE, 80, None)
    assert book.entries()[-1]["delta"] == 80
    assert (book.balance().debt, book.buckets()[credit.bucket_id]["remaining"]) == (0, 30)
    assert book.balance().available == 30


def test_a_credit_smaller_than_the_debt_only_pays_part_of_it() -> None:
    book = Book()
    book.debit("d", 500, "overdraft")
    credit = book.credit("c", Source.GIFT, 200, None)
    assert (book.balance().debt, book.buckets()[credit.bucket_id]["remaining"]) == (300, 0)
    remaining = sum(b["remaining"] for b in book.buckets().values())
    assert remaining - book.balance().debt == sum(e["delta"] for e in book.entries())


def test_an_expired_bucket_is_never_debited_even_without_a_sweep() -> None:
    book = Book()
    soon = book.credit("c1", Source.PACKAGE, 100, START + timedelta(hours=1))
    gift = book.credit("c2", Source.GIFT, 100, None)
    book.at(START + timedelta(hours=1))  # expiry is exclusive: expired at this instant
    book.debit("d", 50, "clamp")
    assert book.allocations("call:d") == [(gift.bucket_id, "gift", 50)]
    assert book.buckets()[soon.bucket_id]["remaining"] == 100
    assert book.balance().available == 50


def test_available_subtracts_holds_and_may_be_negative() -> None:
    book = Book()
    book.credit("c", Source.GIFT, 100, None)
    hold = run(book.ledger.admit(book.account, 30, "t.op", 60, NO_BONUS))
    assert isinstance(hold, Admission) and book.balance().available == 70
    book.debit("d", 100, "overdraft")  # the hold still reserves 30 the buckets no longer have
    assert book.balance().available == -30


def test_daily_bucket_burns_before_package_in_the_book() -> None:
    book = Book()
    pkg = book.credit("c", Source.PACKAGE, 1_000_000, START + timedelta(hours=2))
    book.daily()
    book.debit("d", DAILY + 10, "clamp")
    allocations = book.allocations("call:d")
    assert [a[0] for a in allocations][1:] == [pkg.bucket_id]
    assert allocations[0][1:] == ("daily", DAILY)


def test_the_daily_bonus_is_granted_lazily_once_per_utc_day() -> None:
    book = Book()
    first = book.daily()
    assert first is not None and first["delta"] == DAILY
    assert first["idempotency_key"] == "daily_bonus:2025-01-28"
    assert book.at(START + timedelta(hours=5)).daily() is None
    ((bucket_id, _source, _amount),) = book.allocations(first["idempotency_key"])
    assert book.buckets()[bucket_id]["expires_at_ms"] == to_ms(datetime(2025, 1, 29, tzinfo=UTC))
    book.at(START + timedelta(days=1))
    assert book.balance().available == 0  # yesterday's bonus has expired
    assert book.daily() is not None
    assert book.balance().available == DAILY


def test_admission_grants_the_daily_bonus_lazily() -> None:
    book = Book()
    admitted = run(book.ledger.admit(book.account, 1_000, "t.op", 60, BONUS))
    assert isinstance(admitted, Admission) and admitted.available_after == DAILY - 1_000
    assert [e["event_type"] for e in book.entries()] == ["daily_bonus"]


def test_the_monthly_cap_cuts_the_last_daily_bonus_and_then_stops_it() -> None:
    book = Book()
    day = datetime(2025, 3, 1, 8, tzinfo=UTC)
    grants = []
    for i in range(6):
        entry = book.at(day + timedelta(days=i)).daily(DAILY, 40 * 60_000)
        grants.append(None if entry is None else entry["delta"])
    assert grants == [DAILY, DAILY, 10 * 60_000, None, None, None]
    # a new calendar month starts a new allowance
    entry = book.at(datetime(2025, 4, 1, tzinfo=UTC)).daily(DAILY, 40 * 60_000)
    assert entry is not None and entry["delta"] == DAILY


def test_free_plan_daily_bonus_never_passes_300_minutes_a_month() -> None:
    book = Book()
    for i in range(31):
        book.at(datetime(2025, 1, 1, 12, tzinfo=UTC) + timedelta(days=i)).daily(DAILY,
                                                                               300 * 60_000)
    book.at(datetime(2025, 1, 31, 23, tzinfo=UTC))
    assert book.balance().daily_granted_this_month == 300 * 60_000
    assert len(book.entries()) == 20


def test_an_uncapped_or_zero_daily_bonus() -> None:
    book = Book()
    assert book.daily(0, None) is None
    assert book.entries() == []
    entry = book.daily(DAILY, None)
    assert entry is not None and entry["delta"] == DAILY


def test_the_daily_bonus_pays_debt_first() -> None:
    book = Book()
    book.debit("d", 1000, "overdraft")
    entry = book.daily()
    assert entry is not None and entry["delta"] == DAILY
    assert book.balance().debt == 0
    assert book.balance().available == DAILY - 1000


def test_a_negative_debit_is_refused() -> None:
    book = Book()
    with pytest.raises(ValueError):
        book.debit("d", -1, "clamp")
    assert book.entries() == []
    assert run(book.ledger.usage(book.account)) == []
