"""Expiry, period ends, rollover and downgrades (SPEC §4).

Rules, in sentences:
- At its expiry a bucket's unused balance leaves the ledger. A plain bucket (daily, package,
  welcome, gift, rollover) writes one `expiry` entry for all of it.
- A subscription bucket's expiry is its period end: its unused minutes roll into a `rollover`
  bucket (expiring `rollover_ms` after the period end) up to the plan's rollover cap — the cap
  bounds the account's live rollover balance at the period end — and the rest is
  `rollover_discard`. Rollover buckets never roll over again.
- Nothing rolls over for a canceled subscription, nor at a period end at or after a scheduled
  downgrade's effective time.
- Moving to the pending downgrade's plan, or to any plan with a smaller rollover cap, completes
  a downgrade: every live rollover bucket is discarded.

Amounts are ledger units (ms); times UTC epoch ms.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from storage.clock import MS_PER_MINUTE, MS_PER_SECOND, iso_utc, to_datetime
from storage.engine.buckets import Bucket, Source


@dataclass(frozen=True, slots=True)
class PeriodEnd:
    """What a subscription bucket's `unused` units become at its period end: `rolled` into a
    rollover bucket, `discarded` (`why`: downgrade, canceled, over the rollover cap)."""

    rolled: int
    discarded: int
    why: str


def period_end(unused: int, cap: int, live_rollover: int, status: str,
               pending_effective_ms: int | None, period_end_ms: int) -> PeriodEnd:
    """Split `unused` units of a subscription bucket ending at `period_end_ms` for an account
    with subscription `status`, a rollover `cap` (units) and `live_rollover` units of rollover
    still live at the period end; `pending_effective_ms` is a scheduled downgrade's time."""
    downgrading = pending_effective_ms is not None and pending_effective_ms <= period_end_ms
    canceled = status == "canceled"
    room = 0 if downgrading or canceled else max(0, cap - live_rollover)
    rolled = min(unused, room)
    why = "downgrade" if downgrading else "canceled" if canceled else "over the rollover cap"
    return PeriodEnd(rolled, unused - rolled, why)


def live_rollover(buckets: Iterable[Bucket], at_ms: int) -> int:
    """Σ remaining of the rollover buckets live at `at_ms` (what a rollover cap bounds)."""
    now = to_datetime(at_ms)
    return sum(b.remaining for b in buckets
               if b.source is Source.ROLLOVER and b.remaining > 0 and b.is_live(now))


def is_expired(bucket: Bucket, at_ms: int) -> bool:
    """True when the bucket still holds balance but its expiry has passed at `at_ms` (it must
    be closed: an `expiry` entry, or a period end for a subscription bucket)."""
    return bucket.remaining > 0 and not bucket.is_live(to_datetime(at_ms))


def completes_downgrade(old_plan: str, new_plan: str, pending_plan: str | None,
                        caps: Mapping[str, int]) -> bool:
    """True when moving from `old_plan` to `new_plan` completes a downgrade (live rollover is
    then discarded): the new plan is the pending one, or its rollover cap is smaller."""
    if new_plan == old_plan:
        return False
    return new_plan == pending_plan or caps.get(new_plan, 0) < caps.get(old_plan, 0)


def downgrade_warning(plan_key: str, effective_ms: int, at_risk: int) -> dict[str, object]:
    """Metadata of a `rollover_discard_pending` entry: the downgrade to `plan_key` at
    `effective_ms` will discard `at_risk` units of live rollover (seeds' downgrade warning)."""
    return {"new_plan": plan_key, "effective_date": iso_utc(effective_ms),
            "will_discard_rollover": at_risk > 0,
            "minutes_to_discard": at_risk // MS_PER_MINUTE,
            "seconds_to_discard": at_risk // MS_PER_SECOND}


def expiry_reason(source: str) -> str:
    """Reason of the `expiry` entry closing a plain bucket of `source`."""
    return f"{source} bucket expired"


ROLLED_REASON = "subscription period ended; carried into a rollover bucket"
ROLLOVER_CREDIT_REASON = "rollover of unused subscription time"


def discard_reason(why: str) -> str:
    """Reason of the `rollover_discard` entry of a period end (`why` from PeriodEnd)."""
    return f"unused subscription time not rolled over ({why})"
