"""Purchases and Stripe webhook application in the SQL ledger.

A checkout's credit is applied in the same transaction that records its Stripe event as
processed, under the account lock; the package credit's idempotency key is the Checkout Session
id, so a redelivered event, a second event about the same session, or two deliveries racing on
two processes all credit once (SPEC §8: "each event applied exactly once").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from storage.buckets import Source
from storage.ports import GrantResult
from storage.sql.ledger import _lock, credit_tx
from storage.sql.tables import purchases, stripe_events


@dataclass(frozen=True)
class Purchase:
    """A Checkout Session the gateway created: what it sells to whom, at what price."""

    session_id: str
    account_id: str
    package_key: str
    minutes: int
    currency: str
    unit_amount_cents: int
    operation_id: str | None


def record_purchase_tx(conn: Connection, p: Purchase, at_ms: int) -> None:
    """Remember a created Checkout Session (status `open`)."""
    conn.execute(insert(purchases).values(
        session_id=p.session_id, account_id=p.account_id, package_key=p.package_key,
        minutes=p.minutes, currency=p.currency, unit_amount_cents=p.unit_amount_cents,
        operation_id=p.operation_id, status="open", created_at_ms=at_ms))


def event_seen_tx(conn: Connection, event_id: str) -> bool:
    """True if this Stripe event was already processed."""
    return conn.execute(select(stripe_events.c.event_id).where(
        stripe_events.c.event_id == event_id)).first() is not None


def fulfil_checkout_tx(
    conn: Connection, event_id: str, event_type: str, session_id: str, expires_at_ms: int,
    at_ms: int,
) -> tuple[str, GrantResult | None, Purchase | None]:
    """Apply `checkout.session.completed` once: credit the purchase's package bucket (expiring
    at `expires_at_ms`) and mark the event and purchase done. Returns (outcome, grant, purchase)
    with outcome `credited`, `duplicate` (event or session already applied) or `unknown_session`.
    """
    if event_seen_tx(conn, event_id):
        return "duplicate", None, None
    row = conn.execute(select(purchases).where(purchases.c.session_id == session_id)).first()
    if row is None:
        conn.execute(insert(stripe_events).values(event_id=event_id, event_type=event_type,
                                                  outcome="unknown_session",
                                                  processed_at_ms=at_ms))
        return "unknown_session", None, None
    p = Purchase(row.session_id, row.account_id, row.package_key, int(row.minutes), row.currency,
                 int(row.unit_amount_cents), row.operation_id)
    _lock(conn, p.account_id)
    if event_seen_tx(conn, event_id):  # a racing delivery won while we waited for the lock
        return "duplicate", None, p
    grant = credit_tx(conn, p.account_id, Source.PACKAGE, p.minutes * 60_000,
                      f"stripe_checkout:{p.session_id}", expires_at_ms,
                      f"package {p.package_key}", at_ms,
                      {"session_id": p.session_id, "operation_id": p.operation_id,
                       "currency": p.currency, "unit_amount_cents": p.unit_amount_cents},
                      locked=True)
    conn.execute(update(purchases).where(purchases.c.session_id == session_id)
                 .values(status="paid"))
    outcome = "duplicate" if grant.replayed else "credited"
    conn.execute(insert(stripe_events).values(event_id=event_id, event_type=event_type,
                                              outcome=outcome, processed_at_ms=at_ms))
    return outcome, grant, p


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
