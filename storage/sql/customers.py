"""An account's Stripe customer and default payment method in the SQL ledger (issue 11).

The customer is linked once: `link_customer_tx` sets it only while none is linked, under the
account row lock, so of any number of racing first links (replicas, concurrent requests) exactly
one wins and every caller learns the same id.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from storage.ports import BillingProfile, UnknownAccount
from storage.sql.ledger import _lock
from storage.sql.tables import accounts


def billing_profile_tx(conn: Connection, account_id: str) -> BillingProfile:
    """The account's customer, default payment method and creation time. Raises
    UnknownAccount."""
    row = conn.execute(select(accounts.c.stripe_customer_id,
                              accounts.c.default_payment_method_id,
                              accounts.c.created_at_ms, accounts.c.stripe_subscription_id,
                              accounts.c.subscription_key).where(
        accounts.c.id == account_id)).first()
    if row is None:
        raise UnknownAccount(account_id)
    return BillingProfile(row.stripe_customer_id, row.default_payment_method_id,
                          int(row.created_at_ms), row.stripe_subscription_id,
                          row.subscription_key)


def link_customer_tx(conn: Connection, account_id: str, customer_id: str) -> str:
    """Link `customer_id` unless a customer is linked already; returns the linked one.
    Raises UnknownAccount."""
    _lock(conn, account_id)
    conn.execute(update(accounts).where(accounts.c.id == account_id,
                                        accounts.c.stripe_customer_id.is_(None))
                 .values(stripe_customer_id=customer_id))
    linked = conn.execute(select(accounts.c.stripe_customer_id).where(
        accounts.c.id == account_id)).scalar_one()
    return str(linked)


def set_default_payment_method_tx(conn: Connection, account_id: str,
                                  payment_method_id: str | None, only_if: str | None) -> bool:
    """Set (None: clear) the default payment method; with `only_if`, only while the current
    default is that one. Returns whether a row changed. Raises UnknownAccount."""
    _lock(conn, account_id)
    where = [accounts.c.id == account_id]
    if only_if is not None:
        where.append(accounts.c.default_payment_method_id == only_if)
    changed = conn.execute(update(accounts).where(*where)
                           .values(default_payment_method_id=payment_method_id)).rowcount
    return bool(changed)
