"""What an account can spend now, and how a refusal is explained (SPEC §3, §7).

Rules, in sentences:
- Spendable is the sum of the live buckets' remaining (expired buckets never count, swept or
  not); a hold counts until its lease expires (`expires_at_ms` exclusive, like buckets).
- Available = spendable − live holds − debt. It may be negative after an overdraft.
- A hold of `amount` is placed only when amount ≤ available (a zero amount always fits an
  account that owes nothing beyond its balance).
- A refusal shows available clamped at 0, split into the daily bonus and the rest; holds burn
  the daily bucket first (burn order), so the daily share is what holds left of it.
- Auto top-up is wanted when, after a change, available is below the account's threshold.

Amounts are ledger units (ms of AI time); times UTC epoch ms.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from storage.clock import to_datetime
from storage.engine.buckets import Bucket, Source
from storage.engine.burn_down import spendable as _spendable


@dataclass(frozen=True, slots=True)
class Hold:
    """Balance reserved by one call in flight: `amount` units until `expires_at_ms` (its
    lease; exclusive)."""

    id: str
    amount: int
    expires_at_ms: int

    def is_live(self, at_ms: int) -> bool:
        """True while the lease runs: `at_ms` < `expires_at_ms`."""
        return at_ms < self.expires_at_ms


def available(spendable: int, held: int, debt: int) -> int:
    """Units a new hold may take: spendable − held − debt (negative after an overdraft)."""
    return spendable - held - debt


@dataclass(frozen=True, slots=True)
class Funds:
    """An account's money at one instant: `spendable` (Σ live remaining), `held` (Σ live
    holds), `daily` (Σ live daily-bonus remaining, part of spendable) and `debt`."""

    spendable: int
    held: int
    daily: int
    debt: int

    @property
    def available(self) -> int:
        """spendable − held − debt; negative after an overdraft."""
        return self.spendable - self.held - self.debt

    def covers(self, amount: int) -> bool:
        """True when a hold of `amount` units may be placed (amount ≤ available)."""
        return amount <= self.spendable - self.held - self.debt

    def shortfall(self) -> tuple[int, int, int]:
        """(available shown, its daily part, its paid part) of a refusal: available clamped at
        0; holds are taken from the daily bonus first, so daily = min(shown, daily − held)."""
        shown = max(0, self.available)
        daily = min(shown, max(0, self.daily - self.held))
        return shown, daily, shown - daily


def held(holds: Iterable[Hold], at_ms: int) -> int:
    """Σ amount of the holds whose lease runs at `at_ms`."""
    return sum(h.amount for h in holds if at_ms < h.expires_at_ms)


def funds(buckets: Iterable[Bucket], holds: Iterable[Hold], debt: int, at_ms: int) -> Funds:
    """The Funds of an account with these buckets, holds and debt at `at_ms`."""
    now = to_datetime(at_ms)
    live = [b for b in buckets if b.remaining > 0 and b.is_live(now)]
    daily = sum(b.remaining for b in live if b.source is Source.DAILY)
    return Funds(_spendable(live, now), held(holds, at_ms), daily, debt)


def wants_top_up(available: int, threshold: int | None) -> bool:
    """True when auto top-up is on (`threshold` not None) and `available` fell below it."""
    return threshold is not None and available < threshold
