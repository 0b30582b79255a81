"""Time in one place: the clock, the units, their conversions, and the one way a time is written.

Times are kept as UTC epoch milliseconds (ints) everywhere; ledger units are milliseconds of AI
time, so the same constants convert amounts. Code that needs "now" takes a `Clock` (default
`now_ms`) so tests can inject one at time boundaries.

The one way a time is written on every API surface — balances, events and their metadata,
the live stream, the 402, usage, admin and auto top-up replies: RFC 3339 in UTC with a `Z`,
whole seconds (`2027-02-27T06:13:42Z`), rendered only here (`iso_utc`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

MS_PER_SECOND = 1_000
MS_PER_MINUTE = 60 * MS_PER_SECOND  # 60_000
MS_PER_HOUR = 60 * MS_PER_MINUTE  # 3_600_000
MS_PER_DAY = 24 * MS_PER_HOUR  # 86_400_000
SECONDS_PER_DAY = 86_400

RFC3339_UTC = "%Y-%m-%dT%H:%M:%SZ"

Clock = Callable[[], int]
"""A source of the current time in UTC epoch milliseconds (`now_ms`, or a test's fixed clock)."""


def now_ms() -> int:
    """Current UTC time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def to_datetime(ms: int) -> datetime:
    """Aware UTC datetime of epoch milliseconds."""
    return datetime.fromtimestamp(ms / MS_PER_SECOND, tz=UTC)


def to_ms(dt: datetime) -> int:
    """Epoch milliseconds of an aware datetime (sub-millisecond parts dropped)."""
    return int(dt.timestamp() * MS_PER_SECOND)


def day_start_ms(ms: int) -> int:
    """Epoch milliseconds of the start (00:00 UTC) of the UTC day `ms` falls in."""
    return ms // MS_PER_DAY * MS_PER_DAY


def ceil_seconds(units: int) -> int:
    """Ledger units (ms) → whole seconds, rounded up (what a call *needs*)."""
    return -(-units // MS_PER_SECOND)


def floor_seconds(units: int) -> int:
    """Ledger units (ms) → whole seconds, rounded down, never negative (what is *available*)."""
    return max(0, units) // MS_PER_SECOND


def iso_utc(ms: int) -> str:
    """Epoch milliseconds → `YYYY-MM-DDTHH:MM:SSZ`. The milliseconds are dropped (the second
    the instant falls in), so one instant always renders as one string."""
    return time.strftime(RFC3339_UTC, time.gmtime(ms // MS_PER_SECOND))
