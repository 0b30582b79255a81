"""Purchases and Stripe webhook application in the SQL ledger.

A checkout's credit is applied in the same transaction that records its Stripe event as
processed, under the account lock; the package credit's idempotency key is the Checkout Session
id, so a redelivered event, a second event about the same session, or two deliveries racing on
two processes all credit once (SPEC §8: "each event applied exactly once").
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from storage.engine.buckets import EventType, Source
from storage.engine.events import fulfilment_events
from storage.engine.refunds import clawback, refund_status
from storage.engine.webhooks import REFUND_APPLIED, refund_applied
from storage.ports import GrantResult, Purchase, SessionConflict
from storage.sql.events import ALERT_RULES_KEY, emit_balance_tx, emit_tx
from storage.sql.ledger import _lock, credit_tx, take_tx
from storage.sql.tables import buckets, pending_refunds, purchases, stripe_events


def record_purchase_tx(conn: Connection, p: Purchase, at_ms: int) -> bool:
    """Remember a created Checkout Session (status `open`). Returns False when this very
    purchase is already recorded under its session id — Stripe answered a repeated create with
    the existing session — and nothing changed. Raises SessionConflict when the id is recorded
    for a different purchase."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    inserted = conn.execute(dialect_insert(purchases).values(
        session_id=p.session_id, account_id=p.account_id, package_key=p.package_key,
        minutes=p.minutes, currency=p.currency, unit_amount_cents=p.unit_amount_cents,
        operation_id=p.operation_id, status="open", created_at_ms=at_ms, units=p.units,
    ).on_conflict_do_nothing(index_elements=["session_id"])).rowcount
    if inserted:
        return True
    row = conn.execute(select(purchases).where(purchases.c.session_id == p.session_id)).one()
    if _purchase(row) != p:
        raise SessionConflict(p.session_id)
    return False


def event_seen_tx(conn: Connection, event_id: str) -> bool:
    """True if this Stripe event was already processed."""
    return conn.execute(select(stripe_events.c.event_id).where(
        stripe_events.c.event_id == event_id)).first() is not None


def fulfil_checkout_tx(
    conn: Connection, event_id: str, event_type: str, session_id: str, expires_at_ms: int,
    at_ms: int, payment_intent_id: str | None = None,
) -> tuple[str, GrantResult | None, Purchase | None]:
    """Apply `checkout.session.completed` once: credit the purchase's package bucket (expiring
    at `expires_at_ms`) and mark the event and purchase done; emit package.fulfilled and, when
    the purchase names a blocked operation, resume.ready. A refund that arrived before this
    event (pending_refunds) is clawed back in the same transaction. Returns (outcome, grant,
    purchase) with outcome `credited`, `duplicate` (event or session already applied) or
    `unknown_session`.
    """
    if event_seen_tx(conn, event_id):
        return "duplicate", None, None
    row = conn.execute(select(purchases).where(purchases.c.session_id == session_id)).first()
    if row is None:
        conn.execute(insert(stripe_events).values(event_id=event_id, event_type=event_type,
                                                  outcome="unknown_session",
                                                  processed_at_ms=at_ms))
        return "unknown_session", None, None
    p = _purchase(row)
    _lock(conn, p.account_id)
    if event_seen_tx(conn, event_id):  # a racing delivery won while we waited for the lock
        return "duplicate", None, p
    grant = credit_tx(conn, p.account_id, Source.PACKAGE, p.credit_units,
                      f"stripe_checkout:{p.session_id}", expires_at_ms,
                      f"package {p.package_key}", at_ms,
                      {"session_id": p.session_id, "operation_id": p.operation_id,
                       "currency": p.currency, "unit_amount_cents": p.unit_amount_cents},
                      locked=True)
    outcome = "duplicate" if grant.replayed else "credited"
    if not grant.replayed:
        conn.execute(update(purchases).where(purchases.c.session_id == session_id).values(
            status="paid", bucket_id=grant.bucket_id, payment_intent_id=payment_intent_id))
        announce_fulfilment_tx(conn, p, at_ms)
        if payment_intent_id:
            apply_pending_refund_tx(conn, payment_intent_id, at_ms)
        emit_balance_tx(conn, p.account_id, at_ms, "package_credit")
    conn.execute(insert(stripe_events).values(event_id=event_id, event_type=event_type,
                                              outcome=outcome, processed_at_ms=at_ms))
    return outcome, grant, p


def announce_fulfilment_tx(conn: Connection, p: Purchase, at_ms: int) -> None:
    """Emit package.fulfilled and, for a purchase made to unblock an operation, resume.ready
    (naming the operation id of the 402's `instance`, never a resume token)."""
    for name, data in fulfilment_events(p.package_key, p.minutes, p.session_id,
                                        p.operation_id, p.units, conn.info.get(ALERT_RULES_KEY)):
        emit_tx(conn, p.account_id, name, data, at_ms)


def _purchase(row: Any) -> Purchase:
    return Purchase(row.session_id, row.account_id, row.package_key, int(row.minutes),
                    row.currency, int(row.unit_amount_cents), row.operation_id,
                    None if row.units is None else int(row.units))


def refund_tx(conn: Connection, event_id: str, event_type: str, payment_intent_id: str,
              charge_id: str, amount_cents: int, refunded_cents: int, at_ms: int) -> str:
    """Apply `charge.refunded` once: claw back the refunded share of the purchase paid by
    `payment_intent_id`, limited to what remains of its bucket (`clawback_tx`). A refund for a
    payment whose purchase is not credited yet is kept in pending_refunds and applied when the
    credit arrives (events may come out of order). Returns the outcome: `clawed_back`,
    `pending`, `duplicate` or `nothing_to_claw_back`."""
    if event_seen_tx(conn, event_id):
        return "duplicate"
    row = conn.execute(select(purchases.c.account_id).where(
        purchases.c.payment_intent_id == payment_intent_id)).first()
    if row is None:
        existing = conn.execute(select(pending_refunds.c.refunded_cents).where(
            pending_refunds.c.payment_intent_id == payment_intent_id)).first()
        if existing is None:
            conn.execute(insert(pending_refunds).values(
                payment_intent_id=payment_intent_id, charge_id=charge_id,
                amount_cents=amount_cents, refunded_cents=refunded_cents, received_at_ms=at_ms))
        elif refunded_cents > existing[0]:  # refunds are cumulative: keep the largest
            conn.execute(update(pending_refunds).where(
                pending_refunds.c.payment_intent_id == payment_intent_id).values(
                refunded_cents=refunded_cents))
        outcome = "pending"
    else:
        _lock(conn, row.account_id)
        if event_seen_tx(conn, event_id):
            return "duplicate"
        taken = clawback_tx(conn, payment_intent_id, charge_id, amount_cents, refunded_cents,
                            at_ms)
        outcome = "clawed_back" if taken else "nothing_to_claw_back"
        if taken:
            emit_balance_tx(conn, row.account_id, at_ms, EventType.ADJUSTMENT.value)
        emit_tx(conn, row.account_id, REFUND_APPLIED, refund_applied(
            payment_intent_id, charge_id, amount_cents, refunded_cents, bool(taken)), at_ms)
    conn.execute(insert(stripe_events).values(event_id=event_id, event_type=event_type,
                                              outcome=outcome, processed_at_ms=at_ms))
    return outcome


def clawback_tx(conn: Connection, payment_intent_id: str, charge_id: str, amount_cents: int,
                refunded_cents: int, at_ms: int) -> int:
    """Take back from the purchase's own bucket its refunded share: minutes × refunded /
    amount (cumulative; what earlier refunds took is subtracted), never more than the bucket
    still holds — spent time is not recovered, and the ledger never goes below zero. Writes
    an `adjustment` entry (idempotency key `stripe_refund:<pi>:<refunded cents>`). Returns the
    ledger units taken. Caller holds the account lock."""
    row = conn.execute(select(purchases).where(
        purchases.c.payment_intent_id == payment_intent_id)).first()
    if row is None or row.bucket_id is None:
        return 0
    bucket = conn.execute(select(buckets.c.remaining, buckets.c.expires_at_ms).where(
        buckets.c.id == row.bucket_id)).first()
    live = bucket is not None and (bucket.expires_at_ms is None or bucket.expires_at_ms > at_ms)
    decided = clawback(_purchase(row).credit_units, amount_cents, refunded_cents,
                       int(row.clawed_back),
                       int(bucket.remaining) if live and bucket is not None else 0, live)
    if decided is None:
        return 0
    if decided.taken > 0:
        take_tx(conn, row.account_id, row.bucket_id, decided.taken, EventType.ADJUSTMENT,
                f"stripe_refund:{payment_intent_id}:{refunded_cents}",
                f"refund of package {row.package_key}", at_ms,
                {"charge_id": charge_id, "payment_intent_id": payment_intent_id,
                 "refunded_cents": refunded_cents, "amount_cents": amount_cents,
                 "unrecovered_ms": decided.unrecovered})
    # What was spent is forgiven, not owed later: the purchase's refund is settled in full.
    conn.execute(update(purchases).where(purchases.c.session_id == row.session_id).values(
        clawed_back=decided.share, refunded_cents=refunded_cents,
        status=refund_status(refunded_cents, amount_cents)))
    return decided.taken


def record_event_tx(conn: Connection, event_id: str, event_type: str, outcome: str,
                    at_ms: int) -> bool:
    """Record a processed event that moves no money; False if it was already recorded."""
    if event_seen_tx(conn, event_id):
        return False
    conn.execute(insert(stripe_events).values(event_id=event_id, event_type=event_type,
                                              outcome=outcome, processed_at_ms=at_ms))
    return True


def purchase_tx(conn: Connection, session_id: str) -> dict[str, Any] | None:
    """The purchase row of a Checkout Session, or None."""
    row = conn.execute(select(purchases).where(purchases.c.session_id == session_id)).first()
    return None if row is None else dict(row._mapping)


def apply_pending_refund_tx(conn: Connection, payment_intent_id: str, at_ms: int) -> bool:
    """Claw back a refund kept in pending_refunds for this payment, now that its purchase is
    credited, and drop it. False when none was pending. Caller holds the account lock."""
    pending = conn.execute(select(pending_refunds).where(
        pending_refunds.c.payment_intent_id == payment_intent_id)).first()
    if pending is None:
        return False
    clawback_tx(conn, payment_intent_id, pending.charge_id, pending.amount_cents,
                pending.refunded_cents, at_ms)
    conn.execute(pending_refunds.delete().where(
        pending_refunds.c.payment_intent_id == payment_intent_id))
    return True


def settle_orphan_refunds_tx(conn: Connection, at_ms: int) -> int:
    """Apply pending refunds whose purchase has been credited since (a refund and its credit
    racing on two processes can leave one behind). Returns how many were applied."""
    rows = conn.execute(
        select(pending_refunds.c.payment_intent_id, purchases.c.account_id)
        .join(purchases, purchases.c.payment_intent_id == pending_refunds.c.payment_intent_id)
        .limit(100)).all()
    for payment_intent_id, account_id in rows:
        _lock(conn, account_id)
        apply_pending_refund_tx(conn, payment_intent_id, at_ms)
        emit_balance_tx(conn, account_id, at_ms, EventType.ADJUSTMENT.value)
    return len(rows)
