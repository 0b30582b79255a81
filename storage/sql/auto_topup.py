"""Auto top-up state in the SQL ledger (SPEC §8: threshold, saved payment method, one pending
at a time, credited only on payment success).

An attempt is *claimed* under the account lock before Stripe is called: at most one attempt is
pending per account across every gateway process. Its id is the PaymentIntent's idempotency
key, so a retried claim of a stale attempt (a process died between claim and answer) reuses the
same PaymentIntent instead of charging twice. A decline clears the attempt and backs off
exponentially (1 min, 2, 4, … capped at 24 h). The credit comes only from
`payment_intent.succeeded` (`credit_topup_tx`), idempotent by PaymentIntent id.

Amounts: ledger units (ms); prices: minor units (cents); times: UTC epoch ms.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from storage.clock import MS_PER_SECOND
from storage.engine import topup
from storage.engine.availability import available, wants_top_up
from storage.engine.buckets import EventType, Source
from storage.engine.topup import STALE_PENDING_MS, backoff_ms
from storage.engine.webhooks import PAYMENT_FAILED, payment_failed
from storage.ports import Attempt, Purchase, UnknownAccount
from storage.sql.events import emit_balance_tx, emit_tx
from storage.sql.ledger import (
    _entry_exists,
    _held,
    _insert_entry,
    _live_bucket_rows,
    _lock,
    credit_tx,
)
from storage.sql.purchases import (
    announce_fulfilment_tx,
    apply_pending_refund_tx,
    event_seen_tx,
)
from storage.sql.tables import accounts, auto_topups, purchases, stripe_events


def configure_tx(conn: Connection, account_id: str, enabled: bool, threshold: int,
                 package_key: str, currency: str, customer_id: str | None,
                 payment_method_id: str | None, at_ms: int) -> dict[str, Any]:
    """Create or replace the account's auto top-up settings; a new payment method or
    re-enabling clears the decline backoff. Returns the stored settings (`settings_tx`)."""
    _lock(conn, account_id)
    row = conn.execute(select(auto_topups).where(auto_topups.c.account_id == account_id)).first()
    values: dict[str, Any] = {"enabled": enabled, "threshold": threshold,
                              "package_key": package_key, "currency": currency,
                              "updated_at_ms": at_ms}
    if customer_id is not None:
        values["stripe_customer_id"] = customer_id
    if payment_method_id is not None:
        values["payment_method_id"] = payment_method_id
    if row is None:
        conn.execute(insert(auto_topups).values(account_id=account_id, **values))
    else:
        if payment_method_id is not None or (enabled and not row.enabled):
            values.update(failures=0, next_attempt_at_ms=0, last_error=None)
        conn.execute(update(auto_topups).where(auto_topups.c.account_id == account_id)
                     .values(**values))
    conn.execute(update(accounts).where(accounts.c.id == account_id)
                 .values(auto_topup_threshold=threshold if enabled else None))
    settings = settings_tx(conn, account_id)
    assert settings is not None
    return settings


def settings_tx(conn: Connection, account_id: str) -> dict[str, Any] | None:
    """The account's auto top-up row as a dict, or None when never configured.
    Raises UnknownAccount."""
    if conn.execute(select(accounts.c.id).where(accounts.c.id == account_id)).first() is None:
        raise UnknownAccount(account_id)
    row = conn.execute(select(auto_topups).where(auto_topups.c.account_id == account_id)).first()
    return None if row is None else dict(row._mapping)


def claim_tx(conn: Connection, account_id: str, at_ms: int) -> Attempt | None:
    """Claim a top-up when the account has it enabled with a payment method, nothing pending
    (or only a stale attempt, which is reused), no backoff running, and available balance
    below the threshold. Writes `auto_topup_triggered` (delta 0) for a new attempt."""
    account = _lock(conn, account_id)
    row = conn.execute(select(auto_topups).where(auto_topups.c.account_id == account_id)).first()
    if row is None:
        return None
    link = conn.execute(select(accounts.c.stripe_customer_id,
                               accounts.c.default_payment_method_id).where(
        accounts.c.id == account_id)).one()
    customer, method = topup.charge_target(row.stripe_customer_id, row.payment_method_id,
                                           link.stripe_customer_id,
                                           link.default_payment_method_id)
    state = _state(row, customer is not None and method is not None)
    if not topup.claimable(state, at_ms):
        return None
    spendable = sum(int(r.remaining) for r in _live_bucket_rows(conn, account_id, at_ms))
    funds = available(spendable, _held(conn, account_id, at_ms), int(account.debt))
    if not wants_top_up(funds, int(row.threshold)):
        return None
    stale = topup.is_stale(state, at_ms)
    attempt_id = topup.claim_id(account_id, state, at_ms)
    conn.execute(update(auto_topups).where(auto_topups.c.account_id == account_id).values(
        pending_attempt=attempt_id, pending_since_ms=at_ms,
        attempts=auto_topups.c.attempts + (0 if stale else 1)))
    key = f"auto_topup:{attempt_id}"
    if not _entry_exists(conn, account_id, key):
        _insert_entry(conn, account_id, EventType.AUTO_TOPUP_TRIGGERED, 0, key,
                      f"auto top-up: package {row.package_key}", at_ms,
                      {"package_key": row.package_key,
                       "threshold_seconds": row.threshold // MS_PER_SECOND,
                       "available_seconds": max(0, funds) // MS_PER_SECOND,
                       "attempt_id": attempt_id})
    assert customer is not None and method is not None  # claimable() checked it
    return Attempt(account_id, attempt_id, row.package_key, row.currency, customer, method)


def _state(row: Any, has_payment_method: bool) -> topup.TopUpState:
    return topup.TopUpState(
        enabled=bool(row.enabled), threshold=int(row.threshold),
        has_payment_method=has_payment_method,
        next_attempt_at_ms=int(row.next_attempt_at_ms), pending_attempt=row.pending_attempt,
        pending_since_ms=None if row.pending_since_ms is None else int(row.pending_since_ms),
        attempts=int(row.attempts))


def failed_tx(conn: Connection, account_id: str, attempt_id: str, error: str,
              at_ms: int) -> bool:
    """Record a declined or failed attempt: clear it and back off. False when `attempt_id` is
    no longer the pending one (already resolved)."""
    _lock(conn, account_id)
    row = conn.execute(select(auto_topups).where(auto_topups.c.account_id == account_id)).first()
    if row is None or row.pending_attempt != attempt_id:
        return False
    failures = int(row.failures) + 1
    conn.execute(update(auto_topups).where(auto_topups.c.account_id == account_id).values(
        pending_attempt=None, pending_since_ms=None, failures=failures,
        next_attempt_at_ms=at_ms + backoff_ms(failures), last_error=error[:500]))
    emit_tx(conn, account_id, PAYMENT_FAILED, payment_failed("auto_topup", attempt_id, error),
            at_ms)
    return True


def due_accounts_tx(conn: Connection, at_ms: int, limit: int) -> list[str]:
    """Accounts whose enabled auto top-up may be claimable now (no fresh pending attempt and
    no backoff running); `claim_tx` decides."""
    rows = conn.execute(select(auto_topups.c.account_id).join(
        accounts, accounts.c.id == auto_topups.c.account_id).where(
        auto_topups.c.enabled.is_(True), auto_topups.c.next_attempt_at_ms <= at_ms,
        auto_topups.c.payment_method_id.is_not(None)
        | accounts.c.default_payment_method_id.is_not(None),
        (auto_topups.c.pending_attempt.is_(None))
        | (auto_topups.c.pending_since_ms <= at_ms - STALE_PENDING_MS)).limit(limit))
    return [r[0] for r in rows]


def credit_topup_tx(conn: Connection, event_id: str, event_type: str, payment_intent_id: str,
                    account_id: str, attempt_id: str | None, package_key: str, minutes: int,
                    currency: str, cents: int, expires_at_ms: int, at_ms: int,
                    units: int | None = None) -> str:
    """Apply `payment_intent.succeeded` of an auto top-up once: record the purchase, credit
    the package bucket (key `stripe_pi:<id>`), clear the pending attempt and the backoff.
    Returns `credited` or `duplicate`."""
    if event_seen_tx(conn, event_id):
        return "duplicate"
    _lock(conn, account_id)
    if event_seen_tx(conn, event_id):
        return "duplicate"
    p = Purchase(payment_intent_id, account_id, package_key, minutes, currency, cents, None,
                 units)
    grant = credit_tx(conn, account_id, Source.PACKAGE, p.credit_units,
                      f"stripe_pi:{payment_intent_id}", expires_at_ms,
                      f"auto top-up: package {package_key}", at_ms,
                      {"payment_intent_id": payment_intent_id, "attempt_id": attempt_id,
                       "currency": currency, "unit_amount_cents": cents}, locked=True)
    outcome = "duplicate" if grant.replayed else "credited"
    if not grant.replayed:
        conn.execute(insert(purchases).values(
            session_id=payment_intent_id, account_id=account_id, package_key=package_key,
            minutes=minutes, currency=currency, unit_amount_cents=cents, operation_id=None,
            units=units,
            status="paid", created_at_ms=at_ms, kind="auto_topup",
            payment_intent_id=payment_intent_id, bucket_id=grant.bucket_id))
        announce_fulfilment_tx(conn, p, at_ms)
        apply_pending_refund_tx(conn, payment_intent_id, at_ms)
        emit_balance_tx(conn, account_id, at_ms, EventType.PACKAGE_CREDIT.value)
    if attempt_id:
        conn.execute(update(auto_topups).where(
            auto_topups.c.account_id == account_id,
            auto_topups.c.pending_attempt == attempt_id).values(
            pending_attempt=None, pending_since_ms=None, failures=0, next_attempt_at_ms=0,
            last_error=None))
    conn.execute(insert(stripe_events).values(event_id=event_id, event_type=event_type,
                                              outcome=outcome, processed_at_ms=at_ms))
    return outcome
