"""Reconciliation's comparison (gateway.invoicing.compare) on Stripe objects and ledger
credits: matches, payments never credited, credits never paid, amount and refund mismatches."""

from __future__ import annotations

from typing import Any

from gateway.invoicing.compare import (
    StripePeriod,
    charge_payment_intents,
    credited_not_paid,
    match,
)
from storage.ports import StripeCredit

FROM, TO = 1_000_000, 2_000_000
PRO = 72_000_000


def credit(kind: str, object_id: str, amount: int = 3_600_000, pi: str | None = None,
           cents: int | None = 500, refunded: int = 0, at: int = FROM + 1,
           key: bool = True) -> StripeCredit:
    prefix = {"checkout": "stripe_checkout:", "invoice": "stripe_invoice:", "topup": "stripe_pi:"}
    return StripeCredit("acct_1", kind, object_id, prefix[kind] + object_id if key else None,
                        amount if key else 0, at, pi, cents, "USD" if cents else None, refunded)


def charge(cid: str, pi: str, amount: int = 500, refunded: int = 0,
           invoice: str | None = None) -> dict[str, Any]:
    return {"id": cid, "status": "succeeded", "payment_intent": pi, "amount": amount,
            "amount_refunded": refunded, "currency": "usd", "invoice": invoice}


def units(inv: dict[str, Any]) -> int | None:
    return PRO if inv.get("subscription") else None


def test_everything_matches() -> None:
    period = StripePeriod(
        invoices=[{"id": "in_1", "status": "paid", "subscription": "sub_1", "amount_paid": 2900},
                  {"id": "in_co", "status": "paid", "amount_paid": 500}],  # a checkout's
        charges=[charge("ch_1", "pi_1"), charge("ch_2", "pi_2"),
                 charge("ch_inv", "pi_inv", 2900, invoice="in_1")])
    credits = [credit("invoice", "in_1", PRO, cents=None), credit("checkout", "cs_1", pi="pi_1"),
               credit("topup", "pi_2", pi="pi_2")]
    found = match(period, credits, FROM, TO, units)
    assert (found.matched, found.paid_not_credited, found.amount_mismatches,
            found.unmatched) == (3, [], [], [])
    assert charge_payment_intents(period) == ["pi_1", "pi_2"]


def test_payments_never_credited_name_their_stripe_object() -> None:
    period = StripePeriod(
        invoices=[{"id": "in_1", "status": "paid", "subscription": "sub_1", "amount_paid": 2900,
                   "currency": "usd"}],
        charges=[charge("ch_1", "pi_1"), charge("ch_2", "pi_2"), charge("ch_3", "pi_3")],
        sessions={"pi_1": {"id": "cs_1", "payment_status": "paid"}},
        intents={"pi_2": {"id": "pi_2", "metadata": {"auto_topup_attempt": "att_1"}},
                 "pi_3": {"id": "pi_3", "metadata": {}}})
    # cs_1 was recorded as a purchase but never credited
    found = match(period, [credit("checkout", "cs_1", key=False)], FROM, TO, units)
    assert [(x["kind"], x["object_id"], x["amount_cents"]) for x in found.paid_not_credited] == [
        ("invoice", "in_1", 2900), ("checkout", "cs_1", 500), ("topup", "pi_2", 500),
        ("unknown", "pi_3", 500)]
    assert found.paid_not_credited[1]["account_id"] == "acct_1"


def test_amount_and_refund_mismatches() -> None:
    period = StripePeriod(
        invoices=[{"id": "in_1", "status": "paid", "subscription": "sub_1"}],
        charges=[charge("ch_1", "pi_1", amount=700), charge("ch_2", "pi_2", refunded=250)],
        refunds=[{"id": "re_1", "status": "succeeded", "charge": "ch_2"},
                 {"id": "re_2", "status": "succeeded", "charge": "ch_old"}],
        charges_of_refunds={"ch_old": charge("ch_old", "pi_old", refunded=500)})
    credits = [credit("invoice", "in_1", PRO // 2, cents=None),
               credit("checkout", "cs_1", pi="pi_1"), credit("checkout", "cs_2", pi="pi_2"),
               credit("checkout", "cs_old", pi="pi_old", at=FROM - 10, refunded=500)]
    found = match(period, credits, FROM, TO, units)
    assert [(x["kind"], x["what"], x["stripe"], x["ledger"]) for x in found.amount_mismatches] \
        == [("invoice", "credited_units", PRO, PRO // 2), ("checkout", "amount_cents", 700, 500),
            ("refund", "refunded_cents", 250, 0)]
    assert found.unmatched == []  # cs_old is outside the period


def test_credits_of_the_period_without_a_paid_object_are_credited_not_paid() -> None:
    lone = [credit("checkout", "cs_9", pi="pi_9"), credit("invoice", "in_9", PRO, cents=None),
            credit("topup", "pi_8", pi="pi_8")]
    found = match(StripePeriod(), lone, FROM, TO, units)
    assert [c.object_id for c in found.unmatched] == ["cs_9", "in_9", "pi_8"]
    retrieved = {"cs_9": {"id": "cs_9", "payment_status": "unpaid"},
                 "in_9": {"id": "in_9", "status": "paid"},  # paid before the period
                 "pi_8": None}  # unknown to Stripe
    assert [(x["object_id"], x["stripe_status"]) for x in
            credited_not_paid(found.unmatched, retrieved)] == [("cs_9", "unpaid"),
                                                               ("pi_8", None)]
