"""Plain data of the bucket engine: sources, buckets, debits (SPEC §4).

Amounts are integers of the ledger unit (milliseconds of AI time); times are timezone-aware UTC.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Source(enum.StrEnum):
    """Where a bucket's balance came from; decides its lifetime (SPEC §4 table). Balances count
    `daily` buckets as bonus time and every other source as paid (seeds: BucketWithDisplay
    `type: 'daily' | 'paid'`; storage.engine.events.balance_totals)."""

    DAILY = "daily"
    SUBSCRIPTION = "subscription"
    ROLLOVER = "rollover"
    PACKAGE = "package"
    WELCOME = "welcome"
    GIFT = "gift"


class EventType(enum.StrEnum):
    """Ledger entry types (SPEC §4; the seeds' BillingEventType plus welcome/gift/expiry)."""

    SUBSCRIPTION_CREDIT = "subscription_credit"
    PACKAGE_CREDIT = "package_credit"
    DAILY_BONUS = "daily_bonus"
    WELCOME_BONUS = "welcome_bonus"
    GIFT_CREDIT = "gift_credit"
    CONSUMPTION = "consumption"
    ROLLOVER_CREATED = "rollover_created"
    ROLLOVER_DISCARD = "rollover_discard"
    ROLLOVER_DISCARD_PENDING = "rollover_discard_pending"
    AUTO_TOPUP_TRIGGERED = "auto_topup_triggered"
    ADJUSTMENT = "adjustment"
    EXPIRY = "expiry"


CREDIT_EVENT_FOR_SOURCE: dict[Source, EventType] = {
    Source.DAILY: EventType.DAILY_BONUS,
    Source.SUBSCRIPTION: EventType.SUBSCRIPTION_CREDIT,
    Source.ROLLOVER: EventType.ROLLOVER_CREATED,
    Source.PACKAGE: EventType.PACKAGE_CREDIT,
    Source.WELCOME: EventType.WELCOME_BONUS,
    Source.GIFT: EventType.GIFT_CREDIT,
}


@dataclass(frozen=True, slots=True)
class Bucket:
    """One slice of credit.

    `remaining` is in ledger units (ms, >= 0); `expires_at` is UTC or None for never;
    `created_at` is UTC. `id` is unique and breaks every remaining tie in burn order.
    """

    id: str
    source: Source
    remaining: int
    expires_at: datetime | None
    created_at: datetime

    def is_live(self, now: datetime) -> bool:
        """True when the bucket may be debited at `now`: not expired (expiry is exclusive)."""
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, slots=True)
class Allocation:
    """The slice of one debit taken from one bucket (`amount` > 0, ledger units)."""

    bucket_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class DebitPlan:
    """How a debit of `requested` units burns down buckets.

    `allocations` are in burn order and sum to `requested - shortfall`; `shortfall` > 0 means the
    live buckets could not cover the request (the settlement policy decides what that means).
    """

    requested: int
    allocations: tuple[Allocation, ...]
    shortfall: int

    @property
    def covered(self) -> int:
        """Units actually taken from buckets."""
        return self.requested - self.shortfall
