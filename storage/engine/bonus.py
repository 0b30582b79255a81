"""Bonus rules: the lazy daily bonus with its monthly cap, and bucket lifetimes (SPEC §4).

All amounts are ledger units (ms of AI time); all times are UTC.
"""

from __future__ import annotations

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
