"""The one way a time is written on every API surface — balances, events and their metadata,
the live stream, the 402, usage, admin and auto top-up replies: RFC 3339 in UTC with a `Z`,
whole seconds (`2027-02-27T06:13:42Z`). Times are kept as UTC epoch milliseconds and rendered
only here."""

from __future__ import annotations

import time

RFC3339_UTC = "%Y-%m-%dT%H:%M:%SZ"


def iso_utc(ms: int) -> str:
    """Epoch milliseconds → `YYYY-MM-DDTHH:MM:SSZ`. The milliseconds are dropped (the second
    the instant falls in), so one instant always renders as one string."""
    return time.strftime(RFC3339_UTC, time.gmtime(ms // 1000))
