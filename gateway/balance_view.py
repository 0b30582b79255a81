"""The seeds' EnhancedBalance document, built by a pure function from a balance snapshot.

Shape (seeds/001, `EnhancedBalance`): version, plan_key, subscription_status, catalog_version,
totals {total_seconds, paid_seconds, bonus_seconds, next_expiry_at}, buckets {daily[], paid[]},
bonus {daily_minutes, used_this_month_minutes, monthly_cap_minutes}. Added here:
totals.available_seconds (after holds and debt), held_seconds, debt_seconds. Seconds are whole
seconds rounded down; `buckets.paid` lists every non-daily bucket with its `source`;
`scheduled_change` is the seeds' downgrade warning (new_plan, effective_date,
will_discard_rollover, minutes_to_discard) or null.
"""

from __future__ import annotations

from typing import Any

from gateway.payment_required import iso_utc
from policies.compiled import Plan
from storage.buckets import Source
from storage.ports import BalanceSnapshot
from storage.sql.events import seconds as _s


def enhanced_balance(snap: BalanceSnapshot, plan: Plan | None, catalog_version: str) -> dict[str, Any]:
    """EnhancedBalance of `snap` (buckets in burn order; expiry times RFC 3339 UTC or null)."""
    daily = [b for b in snap.buckets if b.source == Source.DAILY.value]
    others = [b for b in snap.buckets if b.source != Source.DAILY.value]
    bonus_ms = sum(b.remaining for b in snap.buckets if Source(b.source).is_bonus)
    expiries = [b.expires_at_ms for b in snap.buckets if b.expires_at_ms is not None]
    return {
        "version": str(snap.version),
        "plan_key": snap.plan_key,
        "subscription_status": snap.subscription_status,
        "catalog_version": catalog_version,
        "totals": {
            "total_seconds": _s(snap.spendable - snap.debt),
            "paid_seconds": _s(snap.spendable - bonus_ms),
            "bonus_seconds": _s(bonus_ms),
            "available_seconds": _s(snap.available),
            "held_seconds": _s(snap.held),
            "debt_seconds": -(-snap.debt // 1000),
            "next_expiry_at": iso_utc(min(expiries)) if expiries else None,
        },
        "buckets": {
            "daily": [{"seconds": _s(b.remaining), "expires_at": iso_utc(b.expires_at_ms)}
                      for b in daily if b.expires_at_ms is not None],
            "paid": [{"seconds": _s(b.remaining),
                      "expires_at": iso_utc(b.expires_at_ms) if b.expires_at_ms else None,
                      "source": b.source} for b in others],
        },
        "scheduled_change": _scheduled_change(snap),
        "bonus": {
            "daily_minutes": (plan.daily_bonus // 60_000) if plan else 0,
            "used_this_month_minutes": snap.daily_granted_this_month // 60_000,
            "monthly_cap_minutes": (plan.monthly_bonus_cap // 60_000)
            if plan and plan.monthly_bonus_cap is not None else 0,
        },
    }


def _scheduled_change(snap: BalanceSnapshot) -> dict[str, Any] | None:
    """A scheduled downgrade and the rollover minutes it will discard (seeds 000:
    DowngradeRolloverWarning), or None."""
    if snap.pending_plan_key is None or snap.pending_effective_at_ms is None:
        return None
    rollover = sum(b.remaining for b in snap.buckets if b.source == Source.ROLLOVER.value)
    return {"new_plan": snap.pending_plan_key,
            "effective_date": iso_utc(snap.pending_effective_at_ms),
            "will_discard_rollover": rollover > 0, "minutes_to_discard": rollover // 60_000}
