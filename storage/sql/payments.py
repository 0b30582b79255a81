"""The SQL adapter of the `Payments` port (storage.ports): purchases and Stripe events
(storage.sql.purchases), subscriptions and period ends (storage.sql.subscriptions), auto
top-up (storage.sql.auto_topup). Each method is one transaction on the ledger's runner, stamped
with the ledger's clock unless `at_ms` is given."""

from __future__ import annotations

from typing import Any

from storage.ports import Attempt, BillingProfile, GrantResult, Invoice, PlanRules, Purchase
from storage.sql import auto_topup, customers, purchases, subscriptions
from storage.sql.ledger import SqlLedger


class SqlPayments:
    """Payments on the database of `ledger` (its runner and its clock)."""

    def __init__(self, ledger: SqlLedger) -> None:
        self._ledger = ledger
        self._run = ledger.runner.run

    def _at(self, at_ms: int | None) -> int:
        return self._ledger.clock() if at_ms is None else at_ms

    async def record_purchase(self, purchase: Purchase, at_ms: int | None = None) -> bool:
        return await self._run(purchases.record_purchase_tx, purchase, self._at(at_ms))

    async def fulfil_checkout(
        self, event_id: str, event_type: str, session_id: str, expires_at_ms: int,
        payment_intent_id: str | None = None, at_ms: int | None = None,
    ) -> tuple[str, GrantResult | None, Purchase | None]:
        return await self._run(purchases.fulfil_checkout_tx, event_id, event_type, session_id,
                               expires_at_ms, self._at(at_ms), payment_intent_id)

    async def refund(self, event_id: str, event_type: str, payment_intent_id: str,
                     charge_id: str, amount_cents: int, refunded_cents: int,
                     at_ms: int | None = None) -> str:
        return await self._run(purchases.refund_tx, event_id, event_type, payment_intent_id,
                               charge_id, amount_cents, refunded_cents, self._at(at_ms))

    async def record_event(self, event_id: str, event_type: str, outcome: str,
                           at_ms: int | None = None) -> bool:
        return await self._run(purchases.record_event_tx, event_id, event_type, outcome,
                               self._at(at_ms))

    async def settle_orphan_refunds(self, at_ms: int | None = None) -> int:
        return await self._run(purchases.settle_orphan_refunds_tx, self._at(at_ms))

    async def account_for_customer(self, customer_id: str) -> str | None:
        return await self._run(subscriptions.account_for_customer_tx, customer_id)

    async def billing_profile(self, account_id: str) -> BillingProfile:
        return await self._run(customers.billing_profile_tx, account_id)

    async def link_customer(self, account_id: str, customer_id: str) -> str:
        return await self._run(customers.link_customer_tx, account_id, customer_id)

    async def set_default_payment_method(self, account_id: str, payment_method_id: str | None,
                                         *, only_if: str | None = None) -> bool:
        return await self._run(customers.set_default_payment_method_tx, account_id,
                               payment_method_id, only_if)

    async def invoice_paid(self, event_id: str, event_type: str, event_ms: int,
                           account_id: str, invoice: Invoice, rules: PlanRules,
                           at_ms: int | None = None) -> str:
        return await self._run(subscriptions.invoice_paid_tx, event_id, event_type, event_ms,
                               account_id, invoice, rules, self._at(at_ms))

    async def subscription_changed(
        self, event_id: str, event_type: str, event_ms: int, account_id: str, status: str,
        plan_key: str | None, subscription_key: str | None, pending: tuple[str, int] | None,
        rules: PlanRules, *, stripe_ids: tuple[str | None, str | None] = (None, None),
        at_ms: int | None = None,
    ) -> str:
        return await self._run(subscriptions.subscription_changed_tx, event_id, event_type,
                               event_ms, account_id, status, plan_key, subscription_key,
                               pending, rules, self._at(at_ms), stripe_ids)

    async def pending_change(self, event_id: str, event_type: str, event_ms: int,
                             account_id: str, pending: tuple[str, int] | None,
                             at_ms: int | None = None) -> str:
        return await self._run(subscriptions.pending_change_tx, event_id, event_type,
                               event_ms, account_id, pending, self._at(at_ms))

    async def expired_accounts(self, limit: int, at_ms: int | None = None) -> list[str]:
        return await self._run(subscriptions.expired_accounts_tx, self._at(at_ms), limit)

    async def close_expired(self, account_id: str, rules: PlanRules,
                            at_ms: int | None = None) -> int:
        return await self._run(subscriptions.close_expired_tx, account_id, rules,
                               self._at(at_ms))

    async def topup_settings(self, account_id: str) -> dict[str, Any] | None:
        return await self._run(auto_topup.settings_tx, account_id)

    async def configure_topup(self, account_id: str, enabled: bool, threshold: int,
                              package_key: str, currency: str, customer_id: str | None,
                              payment_method_id: str | None,
                              at_ms: int | None = None) -> dict[str, Any]:
        return await self._run(auto_topup.configure_tx, account_id, enabled, threshold,
                               package_key, currency, customer_id, payment_method_id,
                               self._at(at_ms))

    async def claim_topup(self, account_id: str, at_ms: int | None = None) -> Attempt | None:
        return await self._run(auto_topup.claim_tx, account_id, self._at(at_ms))

    async def topup_failed(self, account_id: str, attempt_id: str, error: str,
                           at_ms: int | None = None) -> bool:
        return await self._run(auto_topup.failed_tx, account_id, attempt_id, error,
                               self._at(at_ms))

    async def due_topups(self, limit: int, at_ms: int | None = None) -> list[str]:
        return await self._run(auto_topup.due_accounts_tx, self._at(at_ms), limit)

    async def credit_topup(self, event_id: str, event_type: str, payment_intent_id: str,
                           account_id: str, attempt_id: str | None, package_key: str,
                           minutes: int, currency: str, cents: int, expires_at_ms: int,
                           at_ms: int | None = None, units: int | None = None) -> str:
        return await self._run(auto_topup.credit_topup_tx, event_id, event_type,
                               payment_intent_id, account_id, attempt_id, package_key, minutes,
                               currency, cents, expires_at_ms, self._at(at_ms), units)
