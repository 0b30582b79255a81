"""What the account event stream says about a change (SPEC §8 `GET /v1/billing/stream`): the
event types and their data, built the same way by every adapter.

Event types (seeds 000: "SSE Balance Updates"): balance.updated, bucket.created,
bucket.expired, credit.applied, package.fulfilled, rollover.created, resume.ready.
Seconds in event data are whole seconds rounded down, as in the balance API; times are
RFC 3339 UTC, whole seconds (storage.clock).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from storage.clock import floor_seconds, iso_utc
from storage.engine.alerts import AlertRules
from storage.engine.buckets import Source

BALANCE_UPDATED = "balance.updated"
BUCKET_CREATED = "bucket.created"
BUCKET_EXPIRED = "bucket.expired"
CREDIT_APPLIED = "credit.applied"
PACKAGE_FULFILLED = "package.fulfilled"
ROLLOVER_CREATED = "rollover.created"
RESUME_READY = "resume.ready"


def balance_totals(buckets: Iterable[tuple[str, int]], held: int, debt: int) -> dict[str, int]:
    """Whole-second totals of live buckets given as (source, remaining units), the one rule of
    the balance, the stream and the 402: `bonus_seconds` is the daily buckets', `paid_seconds`
    every other bucket's (subscription, rollover, package, welcome, gift) — each bucket rounded
    down on its own, then summed, so a total always equals the sum of the buckets a client is
    shown; `total_seconds` = paid + bonus; `available_seconds` what a call can use after
    `held` and `debt` units, rounded down and never above `total_seconds`."""
    bonus = paid = spendable = 0
    for source, remaining in buckets:
        spendable += remaining
        if source == Source.DAILY:
            bonus += floor_seconds(remaining)
        else:
            paid += floor_seconds(remaining)
    total = bonus + paid
    return {"total_seconds": total, "paid_seconds": paid, "bonus_seconds": bonus,
            "available_seconds": min(total, floor_seconds(spendable - held - debt))}


def balance_data(buckets: Iterable[tuple[str, int]], held: int, debt: int,
                 reason: str) -> dict[str, Any]:
    """The data of a balance.updated event: `balance_totals` of the live buckets given as
    (source, remaining units) — the same numbers as EnhancedBalance's `totals` — `reason`, what
    changed it, and `ledger`: the exact integer totals (`total`, `paid`, `bonus`, `available`,
    `held`, `debt` in ledger units) from which the stream writes amounts in a currency or
    tokens unit (a time deployment's stream leaves `ledger` out)."""
    listed = list(buckets)
    bonus = sum(r for s, r in listed if s == Source.DAILY)
    total = sum(r for _, r in listed)
    exact = {"total": total, "paid": total - bonus, "bonus": bonus,
             "available": max(0, min(total, total - held - debt)), "held": held, "debt": debt}
    return {**balance_totals(listed, held, debt), "reason": reason, "ledger": exact}


def credit_events(source: Source, bucket_id: str, amount: int, expires_at_ms: int | None,
                  entry_type: str, reason: str, netted: int,
                  from_bucket: object = None) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) of the events announcing a credit of `amount` units into a new bucket:
    rollover.created (for a rollover bucket, naming `from_bucket`) or bucket.created, then
    credit.applied (with the debt it paid off, when `netted` > 0)."""
    expires = None if expires_at_ms is None else iso_utc(expires_at_ms)
    if source is Source.ROLLOVER:
        created = (ROLLOVER_CREATED, {"bucket_id": bucket_id, "seconds": floor_seconds(amount),
                                      "expires_at": expires, "from_bucket": from_bucket})
    else:
        created = (BUCKET_CREATED, {"bucket_id": bucket_id, "source": source.value,
                                    "seconds": floor_seconds(amount), "expires_at": expires})
    applied = {"type": entry_type, "seconds": floor_seconds(amount), "reason": reason,
               "bucket_id": bucket_id,
               **({"debt_netted_seconds": floor_seconds(netted)} if netted else {})}
    return [created, (CREDIT_APPLIED, applied)]


def bucket_expired(bucket_id: str, source: str, unused: int, expires_at_ms: int,
                   rolled: int) -> dict[str, Any]:
    """Data of bucket.expired for a bucket closed at its expiry (`rolled` of its `unused`
    units carried into rollover)."""
    return {"bucket_id": bucket_id, "source": source, "seconds": floor_seconds(unused),
            "expired_at": iso_utc(expires_at_ms), "rolled_over_seconds": floor_seconds(rolled)}


def rollover_discarded(bucket_id: str, unused: int, reason: str) -> dict[str, Any]:
    """Data of bucket.expired for a rollover bucket discarded by a downgrade."""
    return {"bucket_id": bucket_id, "source": Source.ROLLOVER.value,
            "seconds": floor_seconds(unused), "reason": reason}


def fulfilment_events(package_key: str, minutes: int, session_id: str,
                      operation_id: str | None, units: int | None = None,
                      rules: AlertRules | None = None) -> list[tuple[str, dict[str, Any]]]:
    """package.fulfilled and, for a purchase made to unblock an operation, resume.ready
    (naming the operation id of the 402's `instance`, never a resume token). The package's
    amount: `minutes` in a time deployment (seed field); for a purchase of `units` ledger units
    in a currency or tokens deployment (`rules.amount_fields` set), `amount` (+ `amount_micros`
    for a currency) and `unit` instead (issue 10: every surface speaks the unit)."""
    amount: dict[str, Any] = {"minutes": minutes}
    if units is not None and rules is not None and rules.amount_fields is not None:
        amount = {**rules.amount_fields("amount", units), "unit": rules.unit}
    out: list[tuple[str, dict[str, Any]]] = [(PACKAGE_FULFILLED, {
        "package_key": package_key, **amount, "session_id": session_id,
        "operation_id": operation_id})]
    if operation_id:
        out.append((RESUME_READY, {"operation_id": operation_id,
                                   "instance": f"urn:op:{operation_id}",
                                   "package_key": package_key}))
    return out
