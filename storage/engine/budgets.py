"""Spending limits of an API key and of an end user (issue 10 item 4).

Rules, in sentences:
- A key may have a limit per UTC calendar day and/or per UTC calendar month; an end user (the
  `user` a call is made for, within one account) may have a daily limit (the policy's
  `end_user_limits.day`). A limit of None is no limit.
- What counts toward a limit is what was charged in the period plus the live holds of calls
  made with that key (or for that end user): a limit is never exceeded by calls in flight.
- A hold of `amount` is placed only when every limit that applies has `amount` of headroom
  left (headroom = limit − spent − held), and the account's balance covers it (the account
  rule of storage.engine.availability). When both refuse, the key's refusal is reported
  (`limit_source` "key"): topping up the account would not help.
- Settlement clamps the charge at the headroom left once the call's own hold is released:
  what a call would charge beyond its key's (or end user's) limit is not collected (unbilled).

Amounts are ledger units; days and months are UTC (storage.clock); times UTC epoch ms.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from storage.clock import to_datetime, to_ms

KEY_SCOPE = "key"
END_USER_SCOPE = "user"


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits in ledger units per UTC day and per UTC month (None: none)."""

    day: int | None = None
    month: int | None = None

    @property
    def any(self) -> bool:
        """True when at least one limit is set."""
        return self.day is not None or self.month is not None


@dataclass(frozen=True, slots=True)
class Spend:
    """What counts toward limits now: charged today, charged this month (today included), and
    held by live holds."""

    day: int = 0
    month: int = 0
    held: int = 0


def headroom(limits: Limits, spend: Spend) -> int | None:
    """Units a new hold may still take under `limits` (may be negative after a limit was
    lowered), or None when no limit is set."""
    room: list[int] = []
    if limits.day is not None:
        room.append(limits.day - spend.day - spend.held)
    if limits.month is not None:
        room.append(limits.month - spend.month - spend.held)
    return min(room) if room else None


def admits(limits: Limits, spend: Spend, amount: int) -> bool:
    """True when a hold of `amount` fits every limit (always, with no limits)."""
    room = headroom(limits, spend)
    return room is None or amount <= room


def clamp(charge: int, limits: Limits, spend: Spend) -> int:
    """The part of `charge` that fits the limits, `spend` excluding the call's own (released)
    hold; never negative, never more than `charge`."""
    room = headroom(limits, spend)
    return charge if room is None else max(0, min(charge, room))


def month_start_ms(at_ms: int) -> int:
    """UTC epoch ms of the first instant of `at_ms`'s UTC calendar month."""
    d = to_datetime(at_ms)
    return to_ms(datetime(d.year, d.month, 1, tzinfo=UTC))


def end_user_scope_id(account_id: str, end_user: str) -> str:
    """The `spend_daily` scope id of an end user: end users are per account."""
    return f"{account_id}/{end_user}"
