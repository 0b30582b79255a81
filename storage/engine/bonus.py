"""Bonus rules: the lazy daily bonus with its monthly cap, and bucket lifetimes (SPEC §4).

All amounts are ledger units (ms of AI time); all times are UTC.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


def day_start(now: datetime) -> datetime:
    """00:00 UTC of `now`'s UTC day."""
    now = now.astimezone(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


def day_end(now: datetime) -> datetime:
    """The exclusive end of `now`'s UTC day (next midnight UTC): the daily bucket's expiry."""
    return day_start(now) + timedelta(days=1)


def month_start(now: datetime) -> datetime:
    """00:00 UTC on the first day of `now`'s UTC calendar month."""
    now = now.astimezone(UTC)
    return datetime(now.year, now.month, 1, tzinfo=UTC)


def daily_bonus_amount(daily: int, monthly_cap: int | None, granted_this_month: int) -> int:
    """Units of today's daily bonus: `daily`, cut so the month's bonus never passes the cap.

    `monthly_cap` None means uncapped. Returns 0 when nothing may be granted (seeds: "Daily
    bonus: never >15m; cap stops at 300m").
    """
    if daily <= 0:
        return 0
    if monthly_cap is None:
        return daily
    return max(0, min(daily, monthly_cap - granted_this_month))


def daily_idempotency_key(now: datetime) -> str:
    """Idempotency key of the daily bonus entry of `now`'s UTC day: one grant per day."""
    return "daily_bonus:" + day_start(now).date().isoformat()


@dataclass(frozen=True, slots=True)
class DailyGrant:
    """Today's daily bonus to credit: `amount` units (> 0) into a `daily` bucket expiring at
    `expires_at` (next UTC midnight), applied once under idempotency `key`."""

    key: str
    amount: int
    expires_at: datetime


def daily_grant(
    now: datetime, daily: int, monthly_cap: int | None, granted_this_month: int
) -> DailyGrant | None:
    """The daily bonus due at `now` for a plan granting `daily` units a day, capped at
    `monthly_cap` a month (None = uncapped), when `granted_this_month` units were credited as
    daily bonus since `month_start(now)`. None when nothing may be granted (the caller also
    skips it when `key` was already applied today: one grant per UTC day)."""
    amount = daily_bonus_amount(daily, monthly_cap, granted_this_month)
    if amount <= 0:
        return None
    return DailyGrant(daily_idempotency_key(now), amount, day_end(now))


def granted_in_month(grants: Iterable[tuple[datetime, int]], now: datetime) -> int:
    """Σ daily-bonus credits (at, units) made since `month_start(now)`: the monthly cap's
    running total (the SQL adapter sums the same window in its query)."""
    since = month_start(now)
    return sum(units for at, units in grants if at >= since)
