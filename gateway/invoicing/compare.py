"""The comparison of the ledger's Stripe-keyed credits with Stripe's payments of a period
(issue 11 item 6; seed 004's reconciliation): pure functions on Stripe objects (plain dicts of
their documented fields) and storage.ports.StripeCredit rows.

What counts as a payment, and which credit pays for it:
- a paid subscription invoice that credits time (`subscription_create`/`subscription_cycle`)
  ↔ the credit keyed `stripe_invoice:<invoice id>`; its amount must be the subscription's;
- a succeeded charge outside an invoice ↔ the credit of its payment intent: a Checkout
  purchase's (`stripe_checkout:<session>`, found through the purchase, or through Stripe's
  session of that payment intent) or an auto top-up's (`stripe_pi:<payment intent>`); the
  amount charged must be the price recorded with the purchase;
- refunds ↔ the refunds the ledger applied to that purchase (cumulative cents per charge).

Findings: `paid_not_credited` (Stripe was paid, the ledger has no credit), `credited_not_paid`
(a credit of the period whose Stripe object is not paid, or unknown to Stripe), and
`amount_mismatches` (both exist but disagree). Amounts: Stripe's in minor units (cents) of
their currency, the ledger's in ledger units.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from storage.ports import StripeCredit


@dataclass
class StripePeriod:
    """What Stripe says about a period: paid invoices, charges and refunds created in it;
    `sessions` Checkout Sessions by payment intent (for charges the ledger does not know by
    their payment intent), `intents` payment intents by id (likewise, when no session has
    it), `charges_of_refunds` the charges of refunds whose charge is not in `charges`."""

    invoices: list[dict[str, Any]] = field(default_factory=list)
    charges: list[dict[str, Any]] = field(default_factory=list)
    refunds: list[dict[str, Any]] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges_of_refunds: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Matching:
    """The first pass: findings so far, and the period's credits no Stripe object of the
    period matched (`unmatched`: to be looked up one by one)."""

    paid_not_credited: list[dict[str, Any]] = field(default_factory=list)
    amount_mismatches: list[dict[str, Any]] = field(default_factory=list)
    matched: int = 0
    unmatched: list[StripeCredit] = field(default_factory=list)


def _ref(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def charge_payment_intents(period: StripePeriod) -> list[str]:
    """Payment intents of the period's succeeded charges that are not part of an invoice."""
    return [pi for ch in period.charges if _paid_charge(ch)
            and (pi := _ref(ch.get("payment_intent"))) is not None]


def _paid_charge(ch: dict[str, Any]) -> bool:
    return ch.get("status") == "succeeded" and _ref(ch.get("invoice")) is None


def match(period: StripePeriod, credits: Iterable[StripeCredit], from_ms: int, to_ms_: int,
          invoice_units: Callable[[dict[str, Any]], int | None]) -> Matching:
    """Match the period's Stripe payments with the ledger's credits. `invoice_units` gives the
    ledger units a paid invoice credits (None: the invoice credits nothing by itself, e.g. a
    Checkout purchase's invoice, whose charge is matched instead)."""
    credits = list(credits)
    by_object = {c.object_id: c for c in credits}
    by_intent = {c.payment_intent_id: c for c in credits if c.payment_intent_id}
    out = Matching()
    used: set[str] = set()
    for inv in period.invoices:
        units = invoice_units(inv)
        if inv.get("status") != "paid" or units is None:
            continue
        credit = by_object.get(inv["id"])
        if credit is None or credit.key is None:
            out.paid_not_credited.append({
                "kind": "invoice", "object_id": inv["id"], "account_id": None,
                "amount_cents": _int(inv.get("amount_paid")),
                "currency": str(inv.get("currency") or "").upper(), "expected_units": units})
            continue
        used.add(credit.object_id)
        out.matched += 1
        if credit.amount != units:
            out.amount_mismatches.append({
                "kind": "invoice", "object_id": inv["id"], "account_id": credit.account_id,
                "what": "credited_units", "stripe": units, "ledger": credit.amount})
    charges = {ch["id"]: ch for ch in period.charges if isinstance(ch.get("id"), str)}
    for ch in charges.values():
        if not _paid_charge(ch):
            continue
        pi = _ref(ch.get("payment_intent"))
        credit = by_intent.get(pi) if pi else None
        session = period.sessions.get(pi or "")
        if credit is None and session is not None:
            credit = by_object.get(session["id"])
        if credit is None or credit.key is None:
            intent = period.intents.get(pi or "") or {}
            kind = ("checkout" if session is not None else "topup"
                    if (intent.get("metadata") or {}).get("auto_topup_attempt") else "unknown")
            out.paid_not_credited.append({
                "kind": kind, "object_id": session["id"] if session else pi or ch["id"],
                "charge_id": ch["id"], "payment_intent_id": pi,
                "account_id": credit.account_id if credit else None,
                "amount_cents": _int(ch.get("amount")),
                "currency": str(ch.get("currency") or "").upper()})
            continue
        used.add(credit.object_id)
        out.matched += 1
        currency = str(ch.get("currency") or "").upper()
        if credit.cents is not None and (credit.cents != _int(ch.get("amount"))
                                         or (credit.currency or currency) != currency):
            out.amount_mismatches.append({
                "kind": credit.kind, "object_id": credit.object_id, "charge_id": ch["id"],
                "account_id": credit.account_id, "what": "amount_cents",
                "stripe": _int(ch.get("amount")), "ledger": credit.cents,
                "stripe_currency": currency, "ledger_currency": credit.currency})
    _refunds(period, charges, by_intent, out)
    out.unmatched = [c for c in credits if c.key is not None and c.object_id not in used
                     and from_ms <= c.created_at_ms < to_ms_]
    return out


def _refunds(period: StripePeriod, charges: dict[str, dict[str, Any]],
             by_intent: dict[str, StripeCredit], out: Matching) -> None:
    """Each refunded charge's cumulative refunds against the refunds the ledger applied."""
    refunded_charges = {_ref(r.get("charge")) for r in period.refunds
                        if r.get("status") == "succeeded"} - {None}
    for charge_id in sorted(c for c in refunded_charges if c):
        ch = charges.get(charge_id) or period.charges_of_refunds.get(charge_id)
        if ch is None:
            continue
        credit = by_intent.get(_ref(ch.get("payment_intent")) or "")
        if credit is None or credit.key is None:
            continue  # the payment itself is reported (or belongs to an invoice)
        if credit.refunded_cents != _int(ch.get("amount_refunded")):
            out.amount_mismatches.append({
                "kind": "refund", "object_id": credit.object_id, "charge_id": charge_id,
                "account_id": credit.account_id, "what": "refunded_cents",
                "stripe": _int(ch.get("amount_refunded")), "ledger": credit.refunded_cents})


PAID: dict[str, Callable[[dict[str, Any]], bool]] = {"invoice": lambda o: o.get("status") == "paid",
        "checkout": lambda o: o.get("payment_status") in ("paid", "no_payment_required"),
        "topup": lambda o: o.get("status") == "succeeded"}


def credited_not_paid(unmatched: Iterable[StripeCredit],
                      retrieved: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """The unmatched credits whose Stripe object — looked up one by one in `retrieved` (None:
    Stripe does not know it) — is not paid (a paid one was paid outside the period)."""
    out = []
    for credit in unmatched:
        obj = retrieved.get(credit.object_id)
        if obj is not None and PAID[credit.kind](obj):
            continue
        out.append({"kind": credit.kind, "object_id": credit.object_id,
                    "account_id": credit.account_id, "key": credit.key,
                    "ledger_units": credit.amount,
                    "stripe_status": None if obj is None else
                    obj.get("payment_status") or obj.get("status")})
    return out
