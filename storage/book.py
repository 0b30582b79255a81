"""A pure, in-memory account book: keyed ledger entries applied with the bucket engine (SPEC §4).

This is the reference model the SQL adapter mirrors. Amounts are integers of the ledger unit
(milliseconds of AI time); times are timezone-aware UTC datetimes.

Rules, in sentences:
- Every entry has an idempotency `key`; applying a key that was already applied returns None
  and changes nothing (replays are free and safe).
- A credit creates one bucket. Outstanding debt is paid first out of the new credit; the bucket
  holds the rest. The entry's delta is the full credited amount.
- A debit burns live buckets greedily in burn order (storage.engine.burn_down). Expired buckets are never
  debited. A shortfall is either clamped (recorded as `unbilled`, not charged) or overdrawn
  (charged in full; the uncovered part becomes `debt`).
- Invariant at all times: Σ bucket.remaining − debt == Σ entry.delta, and no bucket.remaining < 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from storage.engine.bonus import daily_bonus_amount, daily_idempotency_key, day_end, month_start
from storage.engine.buckets import CREDIT_EVENT_FOR_SOURCE, Allocation, Bucket, EventType, Source
from storage.engine.burn_down import ShortfallRule, apply_debit, net_credit, settle_debit, spendable

Shortfall = ShortfallRule


@dataclass(frozen=True, slots=True)
class Entry:
    """One applied ledger entry.

    `delta` is signed ledger units: +amount for a credit, −charged for a debit.
    `allocations`: for a debit, the slices taken from each bucket in burn order; for a credit,
    one Allocation naming the bucket created and the credited amount.
    `unbilled` is the part of a clamped debit no bucket could cover (never charged, kept visible).
    """

    key: str
    event_type: EventType
    delta: int
    allocations: tuple[Allocation, ...]
    at: datetime
    unbilled: int = 0


@dataclass
class Book:
    """One account's buckets, ledger entries and debt (units owed after an overdraft)."""

    buckets: dict[str, Bucket] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    debt: int = 0
    _keys: set[str] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        self._keys = {e.key for e in self.entries}

    def applied(self, key: str) -> bool:
        """True when an entry with idempotency `key` has been applied."""
        return key in self._keys

    def credit(
        self,
        key: str,
        source: Source,
        amount: int,
        now: datetime,
        expires_at: datetime | None,
        bucket_id: str,
    ) -> Entry | None:
        """Credit `amount` (> 0) units from `source` into a new bucket `bucket_id`.

        Debt is netted first: the bucket holds `amount − min(debt, amount)` and debt drops by
        that much; the entry's delta is +amount. Returns None (no change) when `key` was already
        applied. Raises ValueError for amount <= 0 or a bucket id already in the book.
        """
        if key in self._keys:
            return None
        if amount <= 0:
            raise ValueError(f"credit amount must be > 0, got {amount}")
        if bucket_id in self.buckets:
            raise ValueError(f"bucket {bucket_id!r} already exists")
        held, netted = net_credit(amount, self.debt)
        self.debt -= netted
        self.buckets[bucket_id] = Bucket(bucket_id, source, held, expires_at, now)
        entry = Entry(
            key=key,
            event_type=CREDIT_EVENT_FOR_SOURCE[source],
            delta=amount,
            allocations=(Allocation(bucket_id, amount),),
            at=now,
        )
        return self._record(entry)

    def debit(self, key: str, amount: int, now: datetime, on_shortfall: Shortfall) -> Entry | None:
        """Consume `amount` (>= 0) units from the buckets live at `now`, greedily in burn order.

        On a shortfall, `clamp` charges only what was covered (delta = −covered, `unbilled` =
        shortfall); `overdraft` charges everything (delta = −amount) and adds the shortfall to
        `debt`. Returns None (no change) when `key` was already applied. Raises ValueError for a
        negative amount or an unknown `on_shortfall`.
        """
        if key in self._keys:
            return None
        settled = settle_debit(self.buckets.values(), amount, self.debt, now, on_shortfall)
        for bucket in apply_debit(self.buckets.values(), settled.plan):
            self.buckets[bucket.id] = bucket
        self.debt = settled.debt
        entry = Entry(key, EventType.CONSUMPTION, -settled.charged, settled.plan.allocations, now,
                      settled.unbilled)
        return self._record(entry)

    def available(self, now: datetime, held: int = 0) -> int:
        """Spendable units at `now`: Σ live remaining − debt − `held` (active holds).

        Returned raw: it is negative when debt and holds exceed the live balance.
        """
        return spendable(self.buckets.values(), now) - self.debt - held

    def daily_bonus_granted(self, now: datetime) -> int:
        """Σ daily-bonus credits (units) in `now`'s UTC calendar month."""
        month = month_start(now)
        return sum(
            e.delta
            for e in self.entries
            if e.event_type is EventType.DAILY_BONUS and month_start(e.at) == month
        )

    def ensure_daily_bonus(
        self, now: datetime, daily: int, monthly_cap: int | None
    ) -> Entry | None:
        """Lazily grant today's daily bonus bucket (source daily, expires at the next UTC midnight).

        Amount = `daily` units cut so the month's daily grants never pass `monthly_cap` (None =
        uncapped). Keyed by the UTC day: returns None when already granted today or when the
        amount is 0.
        """
        key = daily_idempotency_key(now)
        if key in self._keys:
            return None
        amount = daily_bonus_amount(daily, monthly_cap, self.daily_bonus_granted(now))
        if amount <= 0:
            return None
        return self.credit(key, Source.DAILY, amount, now, day_end(now), bucket_id=key)

    def _record(self, entry: Entry) -> Entry:
        self._keys.add(entry.key)
        self.entries.append(entry)
        return entry
