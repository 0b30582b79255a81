"""Subscriptions, period ends, rollover and expiry in the SQL ledger (SPEC §4, §8).

- A paid subscription invoice credits a `subscription` bucket that expires at the period end
  (idempotency key: the invoice id).
- At a bucket's expiry its unused balance leaves the ledger (`close_expired_tx`): plain buckets
  with an `expiry` entry; a subscription bucket rolls its unused minutes into a `rollover`
  bucket (expiring `rollover_days` after the period end) up to the plan's rollover cap — the
  cap bounds the account's live rollover balance — and the rest is `rollover_discard`.
  Rollover buckets never roll over again (they just expire).
- A scheduled downgrade records `rollover_discard_pending` (with the minutes it will discard,
  as the seeds' downgrade warning shows) and, when it takes effect, discards every live
  rollover bucket; a period that ends at or after a pending downgrade does not roll over.
- Stripe delivers events out of order: status and plan change only for an event newer (Stripe
  `created`) than the newest one applied; money effects are idempotent by their own keys.

Amounts are ledger units (ms); times UTC epoch ms. Callers hold no lock: each `*_tx` locks the
account row itself.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from storage.clock import MS_PER_SECOND, iso_utc
from storage.engine import expiry
from storage.engine.buckets import EventType, Source
from storage.engine.events import BUCKET_EXPIRED, bucket_expired, rollover_discarded
from storage.engine.webhooks import SUBSCRIPTION_UPDATED, subscription_updated
from storage.ports import Invoice, PlanRules
from storage.sql.events import emit_balance_tx, emit_tx
from storage.sql.ledger import _entry_exists, _insert_entry, _lock, credit_tx, take_tx
from storage.sql.purchases import event_seen_tx
from storage.sql.tables import accounts, buckets, stripe_events

log = logging.getLogger("storage.stripe")


def _done(conn: Connection, event_id: str, event_type: str, outcome: str, at_ms: int) -> str:
    conn.execute(insert(stripe_events).values(event_id=event_id, event_type=event_type,
                                              outcome=outcome, processed_at_ms=at_ms))
    return outcome


def _newer(conn: Connection, account_id: str, event_ms: int) -> bool:
    """True (and remembered) if an event created at `event_ms` is not older than the newest
    subscription event applied to the account."""
    result = conn.execute(update(accounts).where(
        accounts.c.id == account_id, accounts.c.subscription_event_at_ms <= event_ms)
        .values(subscription_event_at_ms=event_ms))
    return bool(result.rowcount)


def invoice_paid_tx(conn: Connection, event_id: str, event_type: str, event_ms: int,
                    account_id: str, inv: Invoice, rules: PlanRules, at_ms: int) -> str:
    """Apply `invoice.paid` once: credit the period's subscription bucket, link the Stripe
    customer and subscription, and (when the event is the newest) set the plan and status
    `active`. A plan change that completes a pending downgrade discards rollover. Period ends
    already due are closed first. Returns `credited` or `duplicate`."""
    if event_seen_tx(conn, event_id):
        return "duplicate"
    account = _lock(conn, account_id)
    if event_seen_tx(conn, event_id):
        return "duplicate"
    close_expired_tx(conn, account_id, rules, at_ms, locked=True)
    grant = credit_tx(
        conn, account_id, Source.SUBSCRIPTION, inv.units, f"stripe_invoice:{inv.invoice_id}",
        inv.period_end_ms, f"subscription {inv.subscription_key}", at_ms,
        {"invoice_id": inv.invoice_id, "subscription_id": inv.subscription_id,
         "plan_key": inv.plan_key, "period_start": iso_utc(inv.period_start_ms),
         "period_end": iso_utc(inv.period_end_ms)}, locked=True)
    _link(conn, account_id, inv.customer_id, inv.subscription_id)
    if _newer(conn, account_id, event_ms):
        _set_plan(conn, account_id, account, inv.plan_key, "active", inv.subscription_key,
                  rules, at_ms)
    if not grant.replayed:
        emit_balance_tx(conn, account_id, at_ms, EventType.SUBSCRIPTION_CREDIT.value)
    return _done(conn, event_id, event_type, "duplicate" if grant.replayed else "credited",
                 at_ms)


def subscription_changed_tx(
    conn: Connection, event_id: str, event_type: str, event_ms: int, account_id: str,
    status: str, plan_key: str | None, subscription_key: str | None,
    pending: tuple[str, int] | None, rules: PlanRules, at_ms: int,
    stripe_ids: tuple[str | None, str | None] = (None, None),
) -> str:
    """Apply `customer.subscription.updated/deleted` or a schedule change once, if newer than
    the last applied: set `status`; a new current `plan_key` (completing a downgrade: rollover
    discarded); `pending` = (plan key, effective ms) records a scheduled downgrade
    (`rollover_discard_pending`), None clears one. Returns `applied`, `stale` or `duplicate`."""
    if event_seen_tx(conn, event_id):
        return "duplicate"
    account = _lock(conn, account_id)
    if event_seen_tx(conn, event_id):
        return "duplicate"
    _link(conn, account_id, *stripe_ids)
    if not _newer(conn, account_id, event_ms):
        return _done(conn, event_id, event_type, "stale", at_ms)
    if status == "canceled":
        plan_key, subscription_key, pending = rules.default_plan, None, None
    _set_plan(conn, account_id, account, plan_key or account.plan_key, status,
              subscription_key, rules, at_ms)
    if pending is not None:
        schedule_downgrade_tx(conn, account_id, pending[0], pending[1], at_ms)
    else:
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(
            pending_plan_key=None, pending_effective_at_ms=None))
    now = conn.execute(select(accounts.c.subscription_status, accounts.c.plan_key,
                              accounts.c.subscription_key).where(
        accounts.c.id == account_id)).one()
    emit_tx(conn, account_id, SUBSCRIPTION_UPDATED, subscription_updated(
        now.subscription_status, now.plan_key, now.subscription_key, pending), at_ms)
    return _done(conn, event_id, event_type, "applied", at_ms)


def pending_change_tx(conn: Connection, event_id: str, event_type: str, event_ms: int,
                      account_id: str, pending: tuple[str, int] | None, at_ms: int) -> str:
    """Apply a subscription schedule event once: record (or, with None, clear) a scheduled
    downgrade. Returns `applied`, `stale` or `duplicate`."""
    if event_seen_tx(conn, event_id):
        return "duplicate"
    _lock(conn, account_id)
    if event_seen_tx(conn, event_id):
        return "duplicate"
    if not _newer(conn, account_id, event_ms):
        return _done(conn, event_id, event_type, "stale", at_ms)
    if pending is not None:
        schedule_downgrade_tx(conn, account_id, pending[0], pending[1], at_ms)
    else:
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(
            pending_plan_key=None, pending_effective_at_ms=None))
    now = conn.execute(select(accounts.c.subscription_status, accounts.c.plan_key,
                              accounts.c.subscription_key).where(
        accounts.c.id == account_id)).one()
    emit_tx(conn, account_id, SUBSCRIPTION_UPDATED, subscription_updated(
        now.subscription_status, now.plan_key, now.subscription_key, pending), at_ms)
    return _done(conn, event_id, event_type, "applied", at_ms)


def account_for_customer_tx(conn: Connection, customer_id: str) -> str | None:
    """The account linked to a Stripe customer id, or None."""
    row = conn.execute(select(accounts.c.id).where(
        accounts.c.stripe_customer_id == customer_id)).first()
    return None if row is None else row[0]


def _link(conn: Connection, account_id: str, customer_id: str | None,
          subscription_id: str | None) -> None:
    """Remember the account's Stripe customer and subscription ids (when given). The customer
    link is the first one (Payments.link_customer's rule): a different customer in a later
    event is logged and not linked, so an account's cards and invoices stay on one customer."""
    linked = conn.execute(select(accounts.c.stripe_customer_id).where(
        accounts.c.id == account_id)).scalar()
    if customer_id and linked and linked != customer_id:
        log.warning("stripe customer not relinked", extra={
            "account_id": account_id, "linked": linked, "customer": customer_id})
    values = {k: v for k, v in (("stripe_customer_id", None if linked else customer_id),
                                ("stripe_subscription_id", subscription_id)) if v}
    if values:
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(**values))


def _set_plan(conn: Connection, account_id: str, account: Any, plan_key: str, status: str,
              subscription_key: str | None, rules: PlanRules, at_ms: int) -> None:
    """Set plan and status; moving to the pending downgrade's plan (or to a plan with a smaller
    rollover cap) completes the downgrade: live rollover is discarded."""
    row = conn.execute(select(accounts.c.pending_plan_key).where(
        accounts.c.id == account_id)).first()
    pending_plan = row.pending_plan_key if row is not None else None
    if expiry.completes_downgrade(account.plan_key, plan_key, pending_plan, rules.rollover_caps):
        discard_rollover_tx(conn, account_id, f"downgrade to {plan_key}", at_ms)
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(
            pending_plan_key=None, pending_effective_at_ms=None))
    values: dict[str, Any] = {"plan_key": plan_key, "subscription_status": status}
    if subscription_key is not None or status == "canceled":
        values["subscription_key"] = subscription_key
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(**values))


def schedule_downgrade_tx(conn: Connection, account_id: str, plan_key: str, effective_ms: int,
                          at_ms: int) -> None:
    """Record a scheduled downgrade to `plan_key` at `effective_ms` and a
    `rollover_discard_pending` entry (delta 0) saying how many rollover minutes it will discard.
    Repeating the same schedule writes nothing new. Caller holds the lock."""
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(
        pending_plan_key=plan_key, pending_effective_at_ms=effective_ms))
    key = f"downgrade:{plan_key}:{effective_ms}"
    if _entry_exists(conn, account_id, key):
        return
    at_risk = _live_rollover(conn, account_id, at_ms)
    _insert_entry(conn, account_id, EventType.ROLLOVER_DISCARD_PENDING, 0, key,
                  f"downgrade to {plan_key} scheduled", at_ms,
                  expiry.downgrade_warning(plan_key, effective_ms, at_risk))


def discard_rollover_tx(conn: Connection, account_id: str, reason: str, at_ms: int) -> int:
    """Discard every live rollover bucket (`rollover_discard` entries, bucket.expired events).
    Returns the units discarded. Caller holds the lock."""
    rows = conn.execute(select(buckets.c.id, buckets.c.remaining).where(
        buckets.c.account_id == account_id, buckets.c.source == Source.ROLLOVER.value,
        buckets.c.remaining > 0, buckets.c.expires_at_ms > at_ms)).all()
    for bucket_id, remaining in rows:
        take_tx(conn, account_id, bucket_id, int(remaining), EventType.ROLLOVER_DISCARD,
              f"rollover_discard:{bucket_id}", reason, at_ms)
        emit_tx(conn, account_id, BUCKET_EXPIRED,
                rollover_discarded(bucket_id, int(remaining), reason), at_ms)
    total = sum(int(r[1]) for r in rows)
    if total:
        emit_balance_tx(conn, account_id, at_ms, EventType.ROLLOVER_DISCARD.value)
    return total


def _live_rollover(conn: Connection, account_id: str, at_ms: int) -> int:
    return int(conn.execute(select(func.coalesce(func.sum(buckets.c.remaining), 0)).where(
        buckets.c.account_id == account_id, buckets.c.source == Source.ROLLOVER.value,
        buckets.c.remaining > 0, buckets.c.expires_at_ms > at_ms)).scalar_one())


def expired_accounts_tx(conn: Connection, at_ms: int, limit: int) -> list[str]:
    """Up to `limit` accounts that own an expired bucket with balance left (through the
    partial index on live expiring buckets)."""
    rows = conn.execute(select(buckets.c.account_id).where(
        buckets.c.remaining > 0, buckets.c.expires_at_ms <= at_ms).distinct().limit(limit))
    return [r[0] for r in rows]


def close_expired_tx(conn: Connection, account_id: str, rules: PlanRules, at_ms: int,
                     locked: bool = False) -> int:
    """Close every expired bucket of the account that still has balance: `expiry` entries,
    subscription period ends rolled over (see module doc), bucket.expired events. Idempotent
    (a closed bucket has nothing left). Returns how many buckets were closed."""
    if not locked:
        _lock(conn, account_id)
    full = conn.execute(select(accounts).where(accounts.c.id == account_id)).first()
    rows = conn.execute(select(buckets.c.id, buckets.c.source, buckets.c.remaining,
                               buckets.c.expires_at_ms).where(
        buckets.c.account_id == account_id, buckets.c.remaining > 0,
        buckets.c.expires_at_ms <= at_ms).order_by(buckets.c.expires_at_ms, buckets.c.id)).all()
    for bucket_id, source, remaining, expires_ms in rows:
        unused, rolled = int(remaining), 0
        if source == Source.SUBSCRIPTION.value:
            rolled = _roll_over(conn, account_id, full, bucket_id, unused, int(expires_ms), rules,
                                at_ms)
        else:
            take_tx(conn, account_id, bucket_id, unused, EventType.EXPIRY, f"expiry:{bucket_id}",
                    expiry.expiry_reason(source), at_ms)
        emit_tx(conn, account_id, BUCKET_EXPIRED,
                bucket_expired(bucket_id, source, unused, int(expires_ms), rolled), at_ms)
    if rows:
        emit_balance_tx(conn, account_id, at_ms, EventType.EXPIRY.value)
    return len(rows)


def _roll_over(conn: Connection, account_id: str, account: Any, bucket_id: str, unused: int,
               period_end_ms: int, rules: PlanRules, at_ms: int) -> int:
    """Period end of one subscription bucket: roll over up to the cap, discard the rest.
    Returns the units rolled over."""
    live = int(conn.execute(select(func.coalesce(func.sum(buckets.c.remaining), 0)).where(
        buckets.c.account_id == account_id, buckets.c.source == Source.ROLLOVER.value,
        buckets.c.remaining > 0, buckets.c.expires_at_ms > period_end_ms)).scalar_one())
    pending_ms = account.pending_effective_at_ms
    decided = expiry.period_end(unused, rules.rollover_caps.get(account.plan_key, 0), live,
                                account.subscription_status,
                                None if pending_ms is None else int(pending_ms), period_end_ms)
    if decided.discarded:
        take_tx(conn, account_id, bucket_id, decided.discarded, EventType.ROLLOVER_DISCARD,
                f"rollover_discard:{bucket_id}", expiry.discard_reason(decided.why), at_ms,
                {"seconds": decided.discarded // MS_PER_SECOND})
    if decided.rolled:
        take_tx(conn, account_id, bucket_id, decided.rolled, EventType.EXPIRY,
                f"expiry:{bucket_id}", expiry.ROLLED_REASON, at_ms)
        credit_tx(conn, account_id, Source.ROLLOVER, decided.rolled, f"rollover:{bucket_id}",
                  period_end_ms + rules.rollover_ms, expiry.ROLLOVER_CREDIT_REASON,
                  at_ms, {"from_bucket": bucket_id}, locked=True)
    return decided.rolled
