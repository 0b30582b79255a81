"""Rows of the `invoices` and `reconciliation_reports` tables (storage/sql/tables.py) ↔ the
port's data (storage.ports), shared by the SQL and in-memory adapters so both store and answer
alike; and the keys of Stripe-keyed ledger credits."""

from __future__ import annotations

import json
from typing import Any

from storage.ports import InvoiceLine, MirroredInvoice, StripeCredit

# ledger idempotency key prefix → StripeCredit.kind (refund adjustments are not credits)
CREDIT_KINDS = {"stripe_checkout:": "checkout", "stripe_invoice:": "invoice",
                "stripe_pi:": "topup"}
# the SQL predicate of the ledger's partial indexes on Stripe-keyed entries (tables.py)
STRIPE_KEYED_SQL = "substr(idempotency_key, 1, 7) = 'stripe_'"


def credit_keys(object_id: str) -> list[str]:
    """The ledger keys a credit for the Stripe object `object_id` may carry."""
    return [prefix + object_id for prefix in CREDIT_KINDS]


def credit_kind(key: str) -> tuple[str, str] | None:
    """(kind, Stripe object id) of a Stripe-keyed credit's ledger key; None for another key."""
    for prefix, kind in CREDIT_KINDS.items():
        if key.startswith(prefix):
            return kind, key[len(prefix):]
    return None


def purchase_key(row: dict[str, Any]) -> str:
    """The ledger key that credits a purchase row: its Checkout Session, or for an auto top-up
    its payment intent."""
    if row["kind"] == "auto_topup":
        return f"stripe_pi:{row['payment_intent_id'] or row['session_id']}"
    return f"stripe_checkout:{row['session_id']}"


def credits_of(entries: list[dict[str, Any]], purchases: list[dict[str, Any]],
               ) -> list[StripeCredit]:
    """The StripeCredits of ledger entry rows (Stripe-keyed credits) and purchase rows: one
    per entry (with its purchase's price when there is one), and one uncredited (`key` None)
    per purchase no entry credited. Ordered by creation time, then object id."""
    by_key = {purchase_key(p): p for p in purchases}
    out: list[StripeCredit] = []
    seen: set[str] = set()
    for e in entries:
        kind = credit_kind(e["idempotency_key"])
        if kind is None or e["idempotency_key"] in seen:
            continue
        seen.add(e["idempotency_key"])
        p = by_key.get(e["idempotency_key"])
        out.append(StripeCredit(
            account_id=e["account_id"], kind=kind[0], object_id=kind[1],
            key=e["idempotency_key"], amount=int(e["delta"]),
            created_at_ms=int(e["created_at_ms"]),
            payment_intent_id=(p["payment_intent_id"] if p else None)
            or (kind[1] if kind[0] == "topup" else None),
            cents=int(p["unit_amount_cents"]) if p else None,
            currency=p["currency"] if p else None,
            refunded_cents=int(p["refunded_cents"]) if p else 0))
    for key, p in by_key.items():
        if key in seen:
            continue
        out.append(StripeCredit(
            account_id=p["account_id"], kind="topup" if p["kind"] == "auto_topup" else "checkout",
            object_id=p["session_id"], key=None, amount=0, created_at_ms=int(p["created_at_ms"]),
            payment_intent_id=p["payment_intent_id"], cents=int(p["unit_amount_cents"]),
            currency=p["currency"], refunded_cents=int(p["refunded_cents"])))
    return sorted(out, key=lambda c: (c.created_at_ms, c.object_id))


def invoice_row(inv: MirroredInvoice) -> dict[str, Any]:
    """The `invoices` row of a mirrored invoice."""
    rank, at, attempts, event = inv.version
    return {
        "invoice_id": inv.invoice_id, "account_id": inv.account_id, "number": inv.number,
        "status": inv.status, "stripe_status": inv.stripe_status, "currency": inv.currency,
        "subtotal_cents": inv.subtotal_cents, "tax_cents": inv.tax_cents,
        "discount_cents": inv.discount_cents, "total_cents": inv.total_cents,
        "credits_applied_cents": inv.credits_applied_cents,
        "amount_due_cents": inv.amount_due_cents, "amount_paid_cents": inv.amount_paid_cents,
        "period_start_ms": inv.period_start_ms, "period_end_ms": inv.period_end_ms,
        "description": inv.description, "due_date_ms": inv.due_date_ms,
        "finalized_at_ms": inv.finalized_at_ms, "paid_at_ms": inv.paid_at_ms,
        "hosted_invoice_url": inv.hosted_invoice_url, "invoice_pdf": inv.invoice_pdf,
        "subscription_id": inv.subscription_id, "billing_reason": inv.billing_reason,
        "lines_json": json.dumps([_line_doc(line) for line in inv.lines],
                                 separators=(",", ":")),
        "created_at_ms": inv.created_at_ms, "version_rank": rank, "version_at_ms": at,
        "version_attempts": attempts, "version_event_ms": event,
    }


def invoice_from_row(row: dict[str, Any]) -> MirroredInvoice:
    """The mirrored invoice of an `invoices` row."""
    lines = tuple(InvoiceLine(**doc) for doc in json.loads(row["lines_json"]))
    return MirroredInvoice(
        invoice_id=row["invoice_id"], account_id=row["account_id"], number=row["number"],
        status=row["status"], stripe_status=row["stripe_status"], currency=row["currency"],
        subtotal_cents=int(row["subtotal_cents"]), tax_cents=int(row["tax_cents"]),
        discount_cents=int(row["discount_cents"]), total_cents=int(row["total_cents"]),
        credits_applied_cents=int(row["credits_applied_cents"]),
        amount_due_cents=int(row["amount_due_cents"]),
        amount_paid_cents=int(row["amount_paid_cents"]),
        created_at_ms=int(row["created_at_ms"]), version=version_of_row(row), lines=lines,
        period_start_ms=row["period_start_ms"], period_end_ms=row["period_end_ms"],
        description=row["description"], due_date_ms=row["due_date_ms"],
        finalized_at_ms=row["finalized_at_ms"], paid_at_ms=row["paid_at_ms"],
        hosted_invoice_url=row["hosted_invoice_url"], invoice_pdf=row["invoice_pdf"],
        subscription_id=row["subscription_id"], billing_reason=row["billing_reason"])


def version_of_row(row: dict[str, Any]) -> tuple[int, int, int, int]:
    """The stored version of an `invoices` row."""
    return (int(row["version_rank"]), int(row["version_at_ms"]), int(row["version_attempts"]),
            int(row["version_event_ms"]))


def _line_doc(line: InvoiceLine) -> dict[str, Any]:
    return {"description": line.description, "amount_cents": line.amount_cents,
            "quantity": line.quantity, "kind": line.kind, "credited": line.credited,
            "period_start_ms": line.period_start_ms, "period_end_ms": line.period_end_ms}


def report_row(report_id: str, from_ms: int, to_ms_: int, created_at_ms: int, applied: bool,
               document: dict[str, Any]) -> dict[str, Any]:
    """The `reconciliation_reports` row of a report."""
    return {"id": report_id, "from_ms": from_ms, "to_ms": to_ms_,
            "created_at_ms": created_at_ms, "applied": applied,
            "document_json": json.dumps(document, separators=(",", ":"), sort_keys=True)}


def report_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """A stored report: id, from_ms, to_ms, created_at_ms, applied, document."""
    return {"id": row["id"], "from_ms": int(row["from_ms"]), "to_ms": int(row["to_ms"]),
            "created_at_ms": int(row["created_at_ms"]), "applied": bool(row["applied"]),
            "document": json.loads(row["document_json"])}
