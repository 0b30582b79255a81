"""The in-memory adapter of the `Payments` port (storage.ports): purchases and Stripe events,
subscriptions and period ends, auto top-up — on the `MemoryStore` of a MemoryLedger, with the
money rules of storage.engine (expiry, refunds, topup, availability). It answers as
storage.sql.payments.SqlPayments does (the contract suite holds them to it).
Amounts are ledger units (ms); prices minor units (cents); times UTC epoch ms."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from storage.clock import MS_PER_SECOND, iso_utc
from storage.engine import expiry, topup
from storage.engine.availability import available, wants_top_up
from storage.engine.buckets import EventType, Source
from storage.engine.events import (
    BUCKET_EXPIRED,
    bucket_expired,
    fulfilment_events,
    rollover_discarded,
)
from storage.engine.refunds import clawback, refund_status
from storage.engine.webhooks import (
    PAYMENT_FAILED,
    REFUND_APPLIED,
    SUBSCRIPTION_UPDATED,
    payment_failed,
    refund_applied,
    subscription_updated,
)
from storage.memory.ledger import MemoryLedger
from storage.memory.store import MemoryStore, Row, as_bucket
from storage.ports import (
    Attempt,
    BillingProfile,
    GrantResult,
    Invoice,
    PlanRules,
    Purchase,
    SessionConflict,
)

log = logging.getLogger("storage.stripe")

T = TypeVar("T")
_PURCHASE_FIELDS = ("session_id", "account_id", "package_key", "minutes", "currency",
                    "unit_amount_cents", "operation_id", "units")


class MemoryPayments:
    """Payments on the store of `ledger` (its clock stamps every operation unless `at_ms`)."""

    def __init__(self, ledger: MemoryLedger) -> None:
        self._ledger = ledger
        self._s: MemoryStore = ledger.store

    def _at(self, at_ms: int | None) -> int:
        return self._ledger.clock() if at_ms is None else at_ms

    def _done(self, result: T) -> T:
        self._s.commit()
        return result

    # ---- purchases and Stripe events ---------------------------------------------------------

    async def record_purchase(self, purchase: Purchase, at_ms: int | None = None) -> bool:
        existing = self._s.purchases.get(purchase.session_id)
        if existing is not None:
            if _purchase(existing) != purchase:
                raise SessionConflict(purchase.session_id)
            return False
        self._s.account(purchase.account_id)
        self._s.purchases[purchase.session_id] = {
            **{f: getattr(purchase, f) for f in _PURCHASE_FIELDS}, "status": "open",
            "created_at_ms": self._at(at_ms), "kind": "checkout", "payment_intent_id": None,
            "bucket_id": None, "refunded_cents": 0, "clawed_back": 0}
        return True

    async def fulfil_checkout(
        self, event_id: str, event_type: str, session_id: str, expires_at_ms: int,
        payment_intent_id: str | None = None, at_ms: int | None = None,
    ) -> tuple[str, GrantResult | None, Purchase | None]:
        s, at = self._s, self._at(at_ms)
        if event_id in s.stripe_events:
            return "duplicate", None, None
        row = s.purchases.get(session_id)
        if row is None:
            s.record_stripe_event(event_id, event_type, "unknown_session", at)
            return "unknown_session", None, None
        p = _purchase(row)
        grant = s.credit(p.account_id, Source.PACKAGE, p.credit_units,
                         f"stripe_checkout:{p.session_id}", expires_at_ms,
                         f"package {p.package_key}", at,
                         {"session_id": p.session_id, "operation_id": p.operation_id,
                          "currency": p.currency, "unit_amount_cents": p.unit_amount_cents})
        outcome = "duplicate" if grant.replayed else "credited"
        if not grant.replayed:
            row.update(status="paid", bucket_id=grant.bucket_id,
                       payment_intent_id=payment_intent_id)
            self._announce(p, at)
            if payment_intent_id:
                self._apply_pending_refund(payment_intent_id, at)
            s.emit_balance(p.account_id, at, "package_credit")
        s.record_stripe_event(event_id, event_type, outcome, at)
        return self._done((outcome, grant, p))

    def _announce(self, p: Purchase, at_ms: int) -> None:
        for name, data in fulfilment_events(p.package_key, p.minutes, p.session_id,
                                            p.operation_id, p.units, self._s.alert_rules):
            self._s.emit(p.account_id, name, data, at_ms)

    async def refund(self, event_id: str, event_type: str, payment_intent_id: str,
                     charge_id: str, amount_cents: int, refunded_cents: int,
                     at_ms: int | None = None) -> str:
        s, at = self._s, self._at(at_ms)
        if event_id in s.stripe_events:
            return "duplicate"
        row = self._purchase_paid_by(payment_intent_id)
        if row is None:
            pending = s.pending_refunds.get(payment_intent_id)
            if pending is None:
                s.pending_refunds[payment_intent_id] = {
                    "payment_intent_id": payment_intent_id, "charge_id": charge_id,
                    "amount_cents": amount_cents, "refunded_cents": refunded_cents,
                    "received_at_ms": at}
            elif refunded_cents > pending["refunded_cents"]:  # cumulative: keep the largest
                pending["refunded_cents"] = refunded_cents
            outcome = "pending"
        else:
            taken = self._claw_back(payment_intent_id, charge_id, amount_cents, refunded_cents,
                                    at)
            outcome = "clawed_back" if taken else "nothing_to_claw_back"
            if taken:
                s.emit_balance(row["account_id"], at, EventType.ADJUSTMENT.value)
            s.emit(row["account_id"], REFUND_APPLIED, refund_applied(
                payment_intent_id, charge_id, amount_cents, refunded_cents, bool(taken)), at)
        s.record_stripe_event(event_id, event_type, outcome, at)
        return self._done(outcome)

    def _purchase_paid_by(self, payment_intent_id: str) -> Row | None:
        return next((p for p in self._s.purchases.values()
                     if p["payment_intent_id"] == payment_intent_id), None)

    def _claw_back(self, payment_intent_id: str, charge_id: str, amount_cents: int,
                   refunded_cents: int, at_ms: int) -> int:
        s = self._s
        row = self._purchase_paid_by(payment_intent_id)
        if row is None or row["bucket_id"] is None:
            return 0
        bucket = s.buckets.get(row["bucket_id"])
        live = bucket is not None and (bucket["expires_at_ms"] is None
                                       or bucket["expires_at_ms"] > at_ms)
        decided = clawback(_purchase(row).credit_units, amount_cents, refunded_cents,
                           row["clawed_back"], bucket["remaining"] if bucket and live else 0,
                           live)
        if decided is None:
            return 0
        if decided.taken > 0:
            s.take(row["account_id"], row["bucket_id"], decided.taken, EventType.ADJUSTMENT,
                   f"stripe_refund:{payment_intent_id}:{refunded_cents}",
                   f"refund of package {row['package_key']}", at_ms,
                   {"charge_id": charge_id, "payment_intent_id": payment_intent_id,
                    "refunded_cents": refunded_cents, "amount_cents": amount_cents,
                    "unrecovered_ms": decided.unrecovered})
        row.update(clawed_back=decided.share, refunded_cents=refunded_cents,
                   status=refund_status(refunded_cents, amount_cents))
        return decided.taken

    def _apply_pending_refund(self, payment_intent_id: str, at_ms: int) -> bool:
        pending = self._s.pending_refunds.pop(payment_intent_id, None)
        if pending is None:
            return False
        self._claw_back(payment_intent_id, pending["charge_id"], pending["amount_cents"],
                        pending["refunded_cents"], at_ms)
        return True

    async def record_event(self, event_id: str, event_type: str, outcome: str,
                           at_ms: int | None = None) -> bool:
        if event_id in self._s.stripe_events:
            return False
        self._s.record_stripe_event(event_id, event_type, outcome, self._at(at_ms))
        return True

    async def settle_orphan_refunds(self, at_ms: int | None = None) -> int:
        s, at = self._s, self._at(at_ms)
        orphans = [(pi, row["account_id"]) for pi in list(s.pending_refunds)
                   if (row := self._purchase_paid_by(pi)) is not None][:100]
        for payment_intent_id, account_id in orphans:
            self._apply_pending_refund(payment_intent_id, at)
            s.emit_balance(account_id, at, EventType.ADJUSTMENT.value)
        return self._done(len(orphans))

    # ---- subscriptions and period ends -------------------------------------------------------

    async def account_for_customer(self, customer_id: str) -> str | None:
        return next((a["id"] for a in self._s.accounts.values()
                     if a["stripe_customer_id"] == customer_id), None)

    async def billing_profile(self, account_id: str) -> BillingProfile:
        account = self._s.account(account_id)
        return BillingProfile(account["stripe_customer_id"],
                              account["default_payment_method_id"], account["created_at_ms"],
                              account["stripe_subscription_id"], account["subscription_key"])

    async def link_customer(self, account_id: str, customer_id: str) -> str:
        account = self._s.account(account_id)
        if account["stripe_customer_id"] is None:
            account["stripe_customer_id"] = customer_id
        return str(account["stripe_customer_id"])

    async def set_default_payment_method(self, account_id: str, payment_method_id: str | None,
                                         *, only_if: str | None = None) -> bool:
        account = self._s.account(account_id)
        if only_if is not None and account["default_payment_method_id"] != only_if:
            return False
        account["default_payment_method_id"] = payment_method_id
        return True

    def _newer(self, account: Row, event_ms: int) -> bool:
        if account["subscription_event_at_ms"] > event_ms:
            return False
        account["subscription_event_at_ms"] = event_ms
        return True

    @staticmethod
    def _link(account: Row, customer_id: str | None, subscription_id: str | None) -> None:
        linked = account["stripe_customer_id"]
        if customer_id and linked and linked != customer_id:  # the first link wins
            log.warning("stripe customer not relinked", extra={
                "account_id": account["id"], "linked": linked, "customer": customer_id})
        elif customer_id:
            account["stripe_customer_id"] = customer_id
        if subscription_id:
            account["stripe_subscription_id"] = subscription_id

    async def invoice_paid(self, event_id: str, event_type: str, event_ms: int,
                           account_id: str, invoice: Invoice, rules: PlanRules,
                           at_ms: int | None = None) -> str:
        s, at, inv = self._s, self._at(at_ms), invoice
        if event_id in s.stripe_events:
            return "duplicate"
        account = s.account(account_id)
        self._close_expired(account_id, rules, at)
        grant = s.credit(
            account_id, Source.SUBSCRIPTION, inv.units, f"stripe_invoice:{inv.invoice_id}",
            inv.period_end_ms, f"subscription {inv.subscription_key}", at,
            {"invoice_id": inv.invoice_id, "subscription_id": inv.subscription_id,
             "plan_key": inv.plan_key, "period_start": iso_utc(inv.period_start_ms),
             "period_end": iso_utc(inv.period_end_ms)})
        self._link(account, inv.customer_id, inv.subscription_id)
        if self._newer(account, event_ms):
            self._set_plan(account, inv.plan_key, "active", inv.subscription_key, rules, at)
        if not grant.replayed:
            s.emit_balance(account_id, at, EventType.SUBSCRIPTION_CREDIT.value)
        outcome = "duplicate" if grant.replayed else "credited"
        return self._done(s.record_stripe_event(event_id, event_type, outcome, at))

    async def subscription_changed(
        self, event_id: str, event_type: str, event_ms: int, account_id: str, status: str,
        plan_key: str | None, subscription_key: str | None, pending: tuple[str, int] | None,
        rules: PlanRules, *, stripe_ids: tuple[str | None, str | None] = (None, None),
        at_ms: int | None = None,
    ) -> str:
        s, at = self._s, self._at(at_ms)
        if event_id in s.stripe_events:
            return "duplicate"
        account = s.account(account_id)
        self._link(account, *stripe_ids)
        if not self._newer(account, event_ms):
            return self._done(s.record_stripe_event(event_id, event_type, "stale", at))
        if status == "canceled":
            plan_key, subscription_key, pending = rules.default_plan, None, None
        self._set_plan(account, plan_key or account["plan_key"], status, subscription_key,
                       rules, at)
        self._pending_downgrade(account, pending, at)
        s.emit(account_id, SUBSCRIPTION_UPDATED, subscription_updated(
            account["subscription_status"], account["plan_key"], account["subscription_key"],
            pending), at)
        return self._done(s.record_stripe_event(event_id, event_type, "applied", at))

    async def pending_change(self, event_id: str, event_type: str, event_ms: int,
                             account_id: str, pending: tuple[str, int] | None,
                             at_ms: int | None = None) -> str:
        s, at = self._s, self._at(at_ms)
        if event_id in s.stripe_events:
            return "duplicate"
        account = s.account(account_id)
        if not self._newer(account, event_ms):
            return self._done(s.record_stripe_event(event_id, event_type, "stale", at))
        self._pending_downgrade(account, pending, at)
        s.emit(account_id, SUBSCRIPTION_UPDATED, subscription_updated(
            account["subscription_status"], account["plan_key"], account["subscription_key"],
            pending), at)
        return self._done(s.record_stripe_event(event_id, event_type, "applied", at))

    def _pending_downgrade(self, account: Row, pending: tuple[str, int] | None,
                           at_ms: int) -> None:
        if pending is None:
            account.update(pending_plan_key=None, pending_effective_at_ms=None)
            return
        plan_key, effective_ms = pending
        account.update(pending_plan_key=plan_key, pending_effective_at_ms=effective_ms)
        key = f"downgrade:{plan_key}:{effective_ms}"
        if self._s.entry_under(account["id"], key) is not None:
            return
        at_risk = expiry.live_rollover(
            [as_bucket(b) for b in self._s.bucket_rows(account["id"])], at_ms)
        self._s.add_entry(account["id"], EventType.ROLLOVER_DISCARD_PENDING, 0, key,
                          f"downgrade to {plan_key} scheduled", at_ms,
                          expiry.downgrade_warning(plan_key, effective_ms, at_risk))

    def _set_plan(self, account: Row, plan_key: str, status: str,
                  subscription_key: str | None, rules: PlanRules, at_ms: int) -> None:
        if expiry.completes_downgrade(account["plan_key"], plan_key, account["pending_plan_key"],
                                      rules.rollover_caps):
            self._discard_rollover(account["id"], f"downgrade to {plan_key}", at_ms)
            account.update(pending_plan_key=None, pending_effective_at_ms=None)
        account.update(plan_key=plan_key, subscription_status=status)
        if subscription_key is not None or status == "canceled":
            account["subscription_key"] = subscription_key

    def _discard_rollover(self, account_id: str, reason: str, at_ms: int) -> int:
        s = self._s
        doomed = [b for b in s.bucket_rows(account_id)
                  if b["source"] == Source.ROLLOVER.value and b["remaining"] > 0
                  and b["expires_at_ms"] is not None and b["expires_at_ms"] > at_ms]
        total = 0
        for b in doomed:
            unused = b["remaining"]
            total += unused
            s.take(account_id, b["id"], unused, EventType.ROLLOVER_DISCARD,
                   f"rollover_discard:{b['id']}", reason, at_ms)
            s.emit(account_id, BUCKET_EXPIRED, rollover_discarded(b["id"], unused, reason),
                   at_ms)
        if total:
            s.emit_balance(account_id, at_ms, EventType.ROLLOVER_DISCARD.value)
        return total

    async def expired_accounts(self, limit: int, at_ms: int | None = None) -> list[str]:
        at = self._at(at_ms)
        found: list[str] = []
        for b in self._s.buckets.values():
            if (b["remaining"] > 0 and b["expires_at_ms"] is not None
                    and b["expires_at_ms"] <= at and b["account_id"] not in found):
                found.append(b["account_id"])
                if len(found) == limit:
                    break
        return found

    async def close_expired(self, account_id: str, rules: PlanRules,
                            at_ms: int | None = None) -> int:
        closed = self._close_expired(account_id, rules, self._at(at_ms))
        return self._done(closed)

    def _close_expired(self, account_id: str, rules: PlanRules, at_ms: int) -> int:
        s = self._s
        account = s.account(account_id)
        expired = sorted((b for b in s.bucket_rows(account_id)
                          if expiry.is_expired(as_bucket(b), at_ms)),
                         key=lambda b: (b["expires_at_ms"], b["id"]))
        for b in expired:
            bucket_id, source, unused = b["id"], b["source"], b["remaining"]
            rolled = 0
            if source == Source.SUBSCRIPTION.value:
                rolled = self._period_end(account, b, rules, at_ms)
            else:
                s.take(account_id, bucket_id, unused, EventType.EXPIRY, f"expiry:{bucket_id}",
                       expiry.expiry_reason(source), at_ms)
            s.emit(account_id, BUCKET_EXPIRED,
                   bucket_expired(bucket_id, source, unused, b["expires_at_ms"], rolled), at_ms)
        if expired:
            s.emit_balance(account_id, at_ms, EventType.EXPIRY.value)
        return len(expired)

    def _period_end(self, account: Row, bucket: Row, rules: PlanRules, at_ms: int) -> int:
        s, account_id, bucket_id = self._s, account["id"], bucket["id"]
        period_end_ms = bucket["expires_at_ms"]
        live = expiry.live_rollover([as_bucket(b) for b in s.bucket_rows(account_id)],
                                    period_end_ms)
        decided = expiry.period_end(bucket["remaining"],
                                    rules.rollover_caps.get(account["plan_key"], 0), live,
                                    account["subscription_status"],
                                    account["pending_effective_at_ms"], period_end_ms)
        if decided.discarded:
            s.take(account_id, bucket_id, decided.discarded, EventType.ROLLOVER_DISCARD,
                   f"rollover_discard:{bucket_id}", expiry.discard_reason(decided.why), at_ms,
                   {"seconds": decided.discarded // MS_PER_SECOND})
        if decided.rolled:
            s.take(account_id, bucket_id, decided.rolled, EventType.EXPIRY,
                   f"expiry:{bucket_id}", expiry.ROLLED_REASON, at_ms)
            s.credit(account_id, Source.ROLLOVER, decided.rolled, f"rollover:{bucket_id}",
                     period_end_ms + rules.rollover_ms, expiry.ROLLOVER_CREDIT_REASON, at_ms,
                     {"from_bucket": bucket_id})
        return decided.rolled

    # ---- auto top-up -------------------------------------------------------------------------

    async def topup_settings(self, account_id: str) -> dict[str, Any] | None:
        self._s.account(account_id)
        row = self._s.auto_topups.get(account_id)
        return None if row is None else dict(row)

    async def configure_topup(self, account_id: str, enabled: bool, threshold: int,
                              package_key: str, currency: str, customer_id: str | None,
                              payment_method_id: str | None,
                              at_ms: int | None = None) -> dict[str, Any]:
        s, at = self._s, self._at(at_ms)
        account = s.account(account_id)
        row = s.auto_topups.get(account_id)
        values: dict[str, Any] = {"enabled": enabled, "threshold": threshold,
                                  "package_key": package_key, "currency": currency,
                                  "updated_at_ms": at}
        if customer_id is not None:
            values["stripe_customer_id"] = customer_id
        if payment_method_id is not None:
            values["payment_method_id"] = payment_method_id
        if row is None:
            row = s.auto_topups[account_id] = {
                "account_id": account_id, "stripe_customer_id": None, "payment_method_id": None,
                "pending_attempt": None, "pending_since_ms": None, "attempts": 0, "failures": 0,
                "next_attempt_at_ms": 0, "last_error": None}
        elif payment_method_id is not None or (enabled and not row["enabled"]):
            values.update(failures=0, next_attempt_at_ms=0, last_error=None)
        row.update(values)
        account["auto_topup_threshold"] = threshold if enabled else None
        return dict(row)

    async def claim_topup(self, account_id: str, at_ms: int | None = None) -> Attempt | None:
        s, at = self._s, self._at(at_ms)
        account = s.account(account_id)
        row = s.auto_topups.get(account_id)
        if row is None:
            return None
        customer, method = topup.charge_target(
            row["stripe_customer_id"], row["payment_method_id"], account["stripe_customer_id"],
            account["default_payment_method_id"])
        state = _state(row, customer is not None and method is not None)
        if not topup.claimable(state, at):
            return None
        spendable = sum(b["remaining"] for b in s.live_buckets(account_id, at))
        funds = available(spendable, s.held(account_id, at), account["debt"])
        if not wants_top_up(funds, row["threshold"]):
            return None
        stale = topup.is_stale(state, at)
        attempt_id = topup.claim_id(account_id, state, at)
        row.update(pending_attempt=attempt_id, pending_since_ms=at,
                   attempts=row["attempts"] + (0 if stale else 1))
        key = f"auto_topup:{attempt_id}"
        if s.entry_under(account_id, key) is None:
            s.add_entry(account_id, EventType.AUTO_TOPUP_TRIGGERED, 0, key,
                        f"auto top-up: package {row['package_key']}", at,
                        {"package_key": row["package_key"],
                         "threshold_seconds": row["threshold"] // MS_PER_SECOND,
                         "available_seconds": max(0, funds) // MS_PER_SECOND,
                         "attempt_id": attempt_id})
        assert customer is not None and method is not None  # claimable() checked it
        return Attempt(account_id, attempt_id, row["package_key"], row["currency"], customer,
                       method)

    async def topup_failed(self, account_id: str, attempt_id: str, error: str,
                           at_ms: int | None = None) -> bool:
        at = self._at(at_ms)
        self._s.account(account_id)
        row = self._s.auto_topups.get(account_id)
        if row is None or row["pending_attempt"] != attempt_id:
            return False
        failures = row["failures"] + 1
        row.update(pending_attempt=None, pending_since_ms=None, failures=failures,
                   next_attempt_at_ms=at + topup.backoff_ms(failures), last_error=error[:500])
        self._s.emit(account_id, PAYMENT_FAILED, payment_failed("auto_topup", attempt_id, error),
                     at)
        return self._done(True)

    async def due_topups(self, limit: int, at_ms: int | None = None) -> list[str]:
        at = self._at(at_ms)
        accounts = self._s.accounts
        return [row["account_id"] for row in self._s.auto_topups.values()
                if topup.due(_state(row, True), (
                    row["payment_method_id"]
                    or accounts[row["account_id"]]["default_payment_method_id"]) is not None,
                    at)][:limit]

    async def credit_topup(self, event_id: str, event_type: str, payment_intent_id: str,
                           account_id: str, attempt_id: str | None, package_key: str,
                           minutes: int, currency: str, cents: int, expires_at_ms: int,
                           at_ms: int | None = None, units: int | None = None) -> str:
        s, at = self._s, self._at(at_ms)
        if event_id in s.stripe_events:
            return "duplicate"
        s.account(account_id)
        p = Purchase(payment_intent_id, account_id, package_key, minutes, currency, cents,
                     None, units)
        grant = s.credit(account_id, Source.PACKAGE, p.credit_units,
                         f"stripe_pi:{payment_intent_id}", expires_at_ms,
                         f"auto top-up: package {package_key}", at,
                         {"payment_intent_id": payment_intent_id, "attempt_id": attempt_id,
                          "currency": currency, "unit_amount_cents": cents})
        outcome = "duplicate" if grant.replayed else "credited"
        if not grant.replayed:
            s.purchases[payment_intent_id] = {
                **{f: getattr(p, f) for f in _PURCHASE_FIELDS}, "status": "paid",
                "created_at_ms": at, "kind": "auto_topup",
                "payment_intent_id": payment_intent_id, "bucket_id": grant.bucket_id,
                "refunded_cents": 0, "clawed_back": 0}
            self._announce(p, at)
            self._apply_pending_refund(payment_intent_id, at)
            s.emit_balance(account_id, at, EventType.PACKAGE_CREDIT.value)
        row = s.auto_topups.get(account_id)
        if attempt_id and row is not None and row["pending_attempt"] == attempt_id:
            row.update(pending_attempt=None, pending_since_ms=None, failures=0,
                       next_attempt_at_ms=0, last_error=None)
        s.record_stripe_event(event_id, event_type, outcome, at)
        return self._done(outcome)


def _purchase(row: Row) -> Purchase:
    return Purchase(*(row[f] for f in _PURCHASE_FIELDS))


def _state(row: Row, has_payment_method: bool) -> topup.TopUpState:
    return topup.TopUpState(
        enabled=bool(row["enabled"]), threshold=row["threshold"],
        has_payment_method=has_payment_method,
        next_attempt_at_ms=row["next_attempt_at_ms"], pending_attempt=row["pending_attempt"],
        pending_since_ms=row["pending_since_ms"], attempts=row["attempts"])

