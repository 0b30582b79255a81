"""The seeds' EnhancedBalance document, built by a pure function from a balance snapshot.

Shape (seeds/001, `EnhancedBalance`): version, plan_key, subscription_status, catalog_version,
totals {total_seconds, paid_seconds, bonus_seconds, next_expiry_at}, buckets {daily[], paid[]},
bonus {daily_minutes, used_this_month_minutes, monthly_cap_minutes}. Added here:
totals.available_seconds (after holds and debt), held_seconds, debt_seconds.

Every bucket is `daily` or `paid` (seeds 000 `BucketWithDisplay.type`; seed 001's migration
helper counts welcome time as paid): `buckets.daily` lists the daily buckets, `buckets.paid`
every other one — subscription, rollover, package, welcome and gift, each with its `source`.
`bonus_seconds` is the sum of the daily buckets' seconds, `paid_seconds` of the paid ones',
`total_seconds` of both (storage.engine.events.balance_totals, shared with the stream). Seconds
are whole seconds rounded down per bucket. Each bucket carries `id`, `source`, `type`,
`seconds`, `expires_at` (null: never expires), `priority` (1-based burn order across both
lists) and `status` (`active`; `expiring` when it expires within 24 h; `expired`).
`scheduled_change` is the seeds' downgrade warning (new_plan, effective_date,
will_discard_rollover, minutes_to_discard) or null.
"""

from __future__ import annotations

from typing import Any

from policies.compiled import Plan
from policies.units import UnitKind, UnitOfAccount
from storage.clock import MS_PER_HOUR, MS_PER_MINUTE, MS_PER_SECOND, iso_utc
from storage.clock import floor_seconds as _s
from storage.engine.buckets import Source
from storage.engine.events import balance_totals
from storage.ports import BalanceSnapshot, BucketView

EXPIRING_WITHIN_MS = 24 * MS_PER_HOUR


def bucket_status(expires_at_ms: int | None, now_ms: int) -> str:
    """`expired` at or after its expiry (expiry is exclusive), `expiring` when it expires within
    24 h of `now_ms`, else `active` (also for buckets that never expire)."""
    if expires_at_ms is None:
        return "active"
    if expires_at_ms <= now_ms:
        return "expired"
    return "expiring" if expires_at_ms - now_ms < EXPIRING_WITHIN_MS else "active"


def _bucket(b: BucketView, priority: int, now_ms: int) -> dict[str, Any]:
    return {"id": b.id, "source": b.source,
            "type": "daily" if b.source == Source.DAILY else "paid",
            "seconds": _s(b.remaining),
            "expires_at": iso_utc(b.expires_at_ms) if b.expires_at_ms is not None else None,
            "priority": priority, "status": bucket_status(b.expires_at_ms, now_ms)}


def enhanced_balance(
    snap: BalanceSnapshot, plan: Plan | None, catalog_version: str
) -> dict[str, Any]:
    """EnhancedBalance of `snap` (buckets in burn order; times RFC 3339 UTC or null). The
    snapshot's own clock, `snap.now_ms`, decides each bucket's `status`."""
    listed = [_bucket(b, i, snap.now_ms) for i, b in enumerate(snap.buckets, 1)]
    totals = balance_totals([(b.source, b.remaining) for b in snap.buckets], snap.held,
                            snap.debt)
    expiries = [b.expires_at_ms for b in snap.buckets if b.expires_at_ms is not None]
    return {
        "version": str(snap.version),
        "plan_key": snap.plan_key,
        "subscription_status": snap.subscription_status,
        "catalog_version": catalog_version,
        "totals": {
            **totals,
            "held_seconds": _s(snap.held),
            "debt_seconds": -(-snap.debt // MS_PER_SECOND),
            "next_expiry_at": iso_utc(min(expiries)) if expiries else None,
        },
        "buckets": {
            "daily": [b for b in listed if b["type"] == "daily"],
            "paid": [b for b in listed if b["type"] == "paid"],
        },
        "scheduled_change": _scheduled_change(snap),
        "bonus": {
            "daily_minutes": (plan.daily_bonus // MS_PER_MINUTE) if plan else 0,
            "used_this_month_minutes": snap.daily_granted_this_month // MS_PER_MINUTE,
            "monthly_cap_minutes": (plan.monthly_bonus_cap // MS_PER_MINUTE)
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
            "will_discard_rollover": rollover > 0, "minutes_to_discard": rollover // MS_PER_MINUTE}


def _unit_bucket(b: BucketView, priority: int, now_ms: int, unit: UnitOfAccount) -> dict[str, Any]:
    return {"id": b.id, "source": b.source,
            "type": "daily" if b.source == Source.DAILY else "paid",
            **unit.json_fields("amount", b.remaining),
            "expires_at": iso_utc(b.expires_at_ms) if b.expires_at_ms is not None else None,
            "priority": priority, "status": bucket_status(b.expires_at_ms, now_ms)}


def balance_document(
    snap: BalanceSnapshot, plan: Plan | None, catalog_version: str, unit: UnitOfAccount
) -> dict[str, Any]:
    """The balance document of `snap` in the deployment's unit: `enhanced_balance` for time
    (unchanged); for a currency or tokens unit the same document with exact amounts instead of
    seconds and minutes (issue 10): `unit` (`USD`, `tokens`); totals `total`, `paid`, `bonus`,
    `available` (after holds and debt, never below 0), `held`, `debt`; each bucket's `amount`;
    bonus `daily`, `used_this_month`, `monthly_cap`; `scheduled_change.amount_to_discard` —
    numbers in the unit, with `*_micros` integer twins for a currency."""
    if unit.kind is UnitKind.TIME:
        return enhanced_balance(snap, plan, catalog_version)
    listed = [_unit_bucket(b, i, snap.now_ms, unit) for i, b in enumerate(snap.buckets, 1)]
    bonus = sum(b.remaining for b in snap.buckets if b.source == Source.DAILY)
    total = sum(b.remaining for b in snap.buckets)
    expiries = [b.expires_at_ms for b in snap.buckets if b.expires_at_ms is not None]
    change = _scheduled_change(snap)
    if change is not None:
        discard = sum(b.remaining for b in snap.buckets if b.source == Source.ROLLOVER.value)
        del change["minutes_to_discard"]
        change.update(unit.json_fields("amount_to_discard", discard))
    cap = plan.monthly_bonus_cap if plan and plan.monthly_bonus_cap is not None else 0
    return {
        "version": str(snap.version),
        "plan_key": snap.plan_key,
        "subscription_status": snap.subscription_status,
        "catalog_version": catalog_version,
        "unit": unit.api_name,
        "totals": {
            **unit.json_fields("total", total),
            **unit.json_fields("paid", total - bonus),
            **unit.json_fields("bonus", bonus),
            **unit.json_fields("available", max(0, min(total, total - snap.held - snap.debt))),
            **unit.json_fields("held", snap.held),
            **unit.json_fields("debt", snap.debt),
            "next_expiry_at": iso_utc(min(expiries)) if expiries else None,
        },
        "buckets": {
            "daily": [b for b in listed if b["type"] == "daily"],
            "paid": [b for b in listed if b["type"] == "paid"],
        },
        "scheduled_change": change,
        "bonus": {
            **unit.json_fields("daily", plan.daily_bonus if plan else 0),
            **unit.json_fields("used_this_month", snap.daily_granted_this_month),
            **unit.json_fields("monthly_cap", cap),
        },
    }
