"""The pure burn-down rules: which bucket pays first, and how a debit is split (SPEC §4).

Rules, in sentences:
- An expired bucket is never debited, whether or not a sweep has run.
- Daily buckets burn first (they expire soonest and are free; seeds: "to prevent waste").
- Then buckets by earliest expiry; never-expiring buckets burn last.
- Ties: smallest remaining first (reduces fragmentation), then creation time, then id.
  The order is therefore total: two distinct buckets never compare equal.
- A debit is greedy: it never takes from a later bucket while an earlier one has balance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from storage.engine.buckets import Allocation, Bucket, DebitPlan, Source

_NEVER = float("inf")


def priority_key(bucket: Bucket) -> tuple[int, float, int, float, str]:
    """Sort key of the total consumption order (SPEC §4); smaller burns first."""
    expiry = bucket.expires_at.timestamp() if bucket.expires_at is not None else _NEVER
    return (
        0 if bucket.source is Source.DAILY else 1,
        expiry,
        bucket.remaining,
        bucket.created_at.timestamp(),
        bucket.id,
    )


def burn_order(buckets: Iterable[Bucket], now: datetime) -> list[Bucket]:
    """Live buckets with a positive balance at `now`, in the order they are consumed."""
    live = [b for b in buckets if b.remaining > 0 and b.is_live(now)]
    live.sort(key=priority_key)
    return live


def spendable(buckets: Iterable[Bucket], now: datetime) -> int:
    """Σ remaining of live buckets at `now` (ledger units), before holds are subtracted."""
    return sum(b.remaining for b in buckets if b.remaining > 0 and b.is_live(now))


def plan_debit(buckets: Iterable[Bucket], amount: int, now: datetime) -> DebitPlan:
    """Split a debit of `amount` units (>= 0) over the live buckets, greedily in burn order.

    Raises ValueError for a negative amount. Pure: the buckets are not modified.
    """
    if amount < 0:
        raise ValueError(f"debit amount must be >= 0, got {amount}")
    allocations: list[Allocation] = []
    left = amount
    for bucket in burn_order(buckets, now):
        if left == 0:
            break
        take = min(left, bucket.remaining)
        allocations.append(Allocation(bucket.id, take))
        left -= take
    return DebitPlan(requested=amount, allocations=tuple(allocations), shortfall=left)


def apply_debit(buckets: Iterable[Bucket], plan: DebitPlan) -> list[Bucket]:
    """The buckets after `plan` is applied (pure). Raises ValueError if a slice overdraws."""
    taken = {a.bucket_id: a.amount for a in plan.allocations}
    out: list[Bucket] = []
    for b in buckets:
        t = taken.get(b.id, 0)
        if t > b.remaining:
            raise ValueError(f"allocation {t} exceeds bucket {b.id} remaining {b.remaining}")
        out.append(b if t == 0 else _with_remaining(b, b.remaining - t))
    return out


def _with_remaining(b: Bucket, remaining: int) -> Bucket:
    return Bucket(b.id, b.source, remaining, b.expires_at, b.created_at)


ShortfallRule = Literal["clamp", "overdraft"]


@dataclass(frozen=True, slots=True)
class Settled:
    """A settlement decided: burn `plan`, write a ledger delta of −`charged`, keep `unbilled`
    visible, and set the account's debt to `debt` (ledger units)."""

    plan: DebitPlan
    charged: int
    unbilled: int
    debt: int


def settle_debit(
    buckets: Iterable[Bucket], amount: int, debt: int, now: datetime, rule: ShortfallRule
) -> Settled:
    """Decide a settlement of `amount` units (SPEC §4, shortfall at settlement): the buckets
    burn greedily; what they cannot cover is `unbilled` under `clamp` (charged = covered) or
    added to `debt` under `overdraft` (charged = amount). Raises ValueError for a negative amount
    or an unknown rule."""
    if rule not in ("clamp", "overdraft"):
        raise ValueError(f"shortfall rule must be 'clamp' or 'overdraft', got {rule!r}")
    plan = plan_debit(buckets, amount, now)
    if rule == "clamp":
        return Settled(plan, plan.covered, plan.shortfall, debt)
    return Settled(plan, amount, 0, debt + plan.shortfall)


def net_credit(amount: int, debt: int) -> tuple[int, int]:
    """(what the new bucket holds, what pays off debt) for a credit of `amount` units while
    `debt` is owed: debt is paid first (SPEC §4, "netted against the next credit")."""
    netted = min(debt, amount)
    return amount - netted, netted
