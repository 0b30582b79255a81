"""Reconciliation of the ledger's credits with Stripe (issue 11 item 6; seed 004):
`POST /v1/admin/reconcile` and `gateway reconcile --stripe`.

For a period [from, to) it lists Stripe's paid invoices, charges and refunds created in it
(Stripe's list APIs, every page: `limit=100`, `starting_after`), reads the ledger's credits for
those objects and the Stripe-keyed credits of the period (storage.ports.BillingRecords), and
compares them (gateway.invoicing.compare). Credits of the period that no listed object paid
are looked up one by one (an invoice paid before the period is still paid). The report is
stored. With `apply`, each payment Stripe took that the ledger never credited, and whose kind
the gateway knows (a subscription invoice, a Checkout purchase it created, an auto top-up), is
applied exactly as its webhook would have applied it — under the ledger's idempotency keys of
that Stripe object (`stripe_invoice:`, `stripe_checkout:`, `stripe_pi:`), recorded as the
Stripe event `reconcile:<object id>` — so applying twice, or the late webhook arriving after,
credits once. Everything else is only reported, for a person to decide.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

import stripe

from gateway.api.stripe_webhooks import apply_object
from gateway.invoicing.compare import (
    StripePeriod,
    charge_payment_intents,
    credited_not_paid,
    match,
)
from gateway.invoicing.mirror import invoice_account, subscription_units
from storage.clock import MS_PER_SECOND, iso_utc
from storage.ports import BillingRecords

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger("gateway.reconcile")

PAGE = 100  # Stripe's largest page
MAX_PAGES = 1_000  # 100,000 objects of one kind per period at most


class ReconcileError(Exception):
    """Stripe failed or refused a request; nothing was applied after it. The message says
    which request."""


def new_report_id(created_at_ms: int) -> str:
    """A report id that sorts by creation time (`rcn_<13 hex ms><8 hex>`)."""
    return f"rcn_{created_at_ms:013x}{secrets.token_hex(4)}"


async def _call(what: str, fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return await fn(*args, **kw)
    except stripe.StripeError as exc:
        raise ReconcileError(f"Stripe refused {what}: {exc.user_message or exc}") from None


async def list_all(what: str, lister: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object of a Stripe list call, page after page (`starting_after` the last id)."""
    out: list[dict[str, Any]] = []
    after = None
    for _ in range(MAX_PAGES):
        page = await _call(what, lister, params={
            **params, "limit": PAGE, **({"starting_after": after} if after else {})})
        data = [o.to_dict() for o in page.data]
        out += data
        if not page.has_more or not data:
            return out
        after = data[-1]["id"]
    raise ReconcileError(f"{what}: more than {MAX_PAGES * PAGE} objects; use a shorter period")


async def _retrieve(what: str, fn: Any, object_id: str) -> dict[str, Any] | None:
    """A Stripe object by id; None when Stripe does not know it (404)."""
    try:
        obj = await fn(object_id)
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            return None
        raise ReconcileError(f"Stripe refused {what} {object_id}: "
                             f"{exc.user_message or exc}") from None
    except stripe.StripeError as exc:
        raise ReconcileError(f"Stripe refused {what} {object_id}: "
                             f"{exc.user_message or exc}") from None
    result: dict[str, Any] = obj.to_dict()
    return result


async def stripe_period(client: Any, from_ms: int, to_ms_: int) -> StripePeriod:
    """Stripe's paid invoices, charges and refunds created in [from, to) (seconds, as Stripe's
    `created` filter takes them)."""
    created = {"gte": from_ms // MS_PER_SECOND, "lt": -(-to_ms_ // MS_PER_SECOND)}
    v1 = client.v1
    return StripePeriod(
        invoices=await list_all("listing invoices", v1.invoices.list_async,
                                {"status": "paid", "created": created}),
        charges=await list_all("listing charges", v1.charges.list_async, {"created": created}),
        refunds=await list_all("listing refunds", v1.refunds.list_async, {"created": created}))


async def reconcile(s: Services, records: BillingRecords, from_ms: int, to_ms_: int,
                    apply: bool, now: int) -> dict[str, Any]:
    """Compare, optionally apply, store and return the report (its document, with `id`).
    Raises ReconcileError (Stripe failed; nothing stored), StoreUnavailable."""
    client = s.stripe
    period = await stripe_period(client, from_ms, to_ms_)
    intents = charge_payment_intents(period)
    ids = [inv["id"] for inv in period.invoices] + intents
    credits = await records.stripe_credits(from_ms, to_ms_, ids)
    known = {c.payment_intent_id for c in credits if c.payment_intent_id}
    for pi in dict.fromkeys(p for p in intents if p not in known):
        sessions = await list_all("listing checkout sessions", client.v1.checkout.sessions
                                  .list_async, {"payment_intent": pi})
        if sessions:
            period.sessions[pi] = sessions[0]
        else:
            intent = await _retrieve("retrieving payment intent",
                                     client.v1.payment_intents.retrieve_async, pi)
            if intent is not None:
                period.intents[pi] = intent
    if period.sessions:
        extra = await records.stripe_credits(from_ms, from_ms,
                                             [x["id"] for x in period.sessions.values()])
        credits += [c for c in extra if c not in credits]
    listed = {ch["id"] for ch in period.charges}
    for charge_id in dict.fromkeys(r.get("charge") for r in period.refunds):
        if isinstance(charge_id, str) and charge_id not in listed:
            charge = await _retrieve("retrieving charge", client.v1.charges.retrieve_async,
                                     charge_id)
            if charge is not None:
                period.charges_of_refunds[charge_id] = charge
    found = match(period, credits, from_ms, to_ms_, lambda inv: subscription_units(s, inv))
    retrieve = {"invoice": client.v1.invoices.retrieve_async,
                "checkout": client.v1.checkout.sessions.retrieve_async,
                "topup": client.v1.payment_intents.retrieve_async}
    retrieved = {c.object_id: await _retrieve(f"retrieving {c.kind}", retrieve[c.kind],
                                              c.object_id) for c in found.unmatched}
    unpaid = credited_not_paid(found.unmatched, retrieved)
    invoices = {inv["id"]: inv for inv in period.invoices}
    sessions_by_id = {v["id"]: v for v in period.sessions.values()}
    for item in found.paid_not_credited:
        source = (invoices.get(item["object_id"]) if item["kind"] == "invoice" else
                  sessions_by_id.get(item["object_id"]) if item["kind"] == "checkout" else
                  period.intents.get(item["object_id"]))
        item["account_id"] = item["account_id"] or await _account_of(s, item["kind"], source)
        item["applied"] = (await _apply(s, item["kind"], source) if apply and source
                           else None)
    report_id = new_report_id(now)
    doc = {
        "id": report_id, "from": iso_utc(from_ms), "to": iso_utc(to_ms_),
        "created_at": iso_utc(now), "applied": apply,
        "stripe": {"paid_invoices": len(period.invoices), "charges": len(period.charges),
                   "refunds": len(period.refunds)},
        "ledger_credits": len([c for c in credits if c.key is not None]),
        "matched": found.matched,
        "paid_not_credited": found.paid_not_credited,
        "credited_not_paid": unpaid,
        "amount_mismatches": found.amount_mismatches,
    }
    await records.save_report(report_id, from_ms, to_ms_, now, apply, doc)
    log.info("reconciled with stripe", extra={
        "report": report_id, "matched": found.matched,
        "paid_not_credited": len(found.paid_not_credited), "credited_not_paid": len(unpaid),
        "amount_mismatches": len(found.amount_mismatches)})
    return doc


async def _account_of(s: Services, kind: str, obj: dict[str, Any] | None) -> str | None:
    if obj is None:
        return None
    if kind == "invoice":
        return await invoice_account(s, obj)
    meta = obj.get("metadata") or {}
    account = meta.get("account_id") or obj.get("client_reference_id")
    return account if isinstance(account, str) and account else None


_EVENT_OF = {"invoice": "invoice.paid", "checkout": "checkout.session.completed",
             "topup": "payment_intent.succeeded"}


async def _apply(s: Services, kind: str, obj: dict[str, Any]) -> str | None:
    """Apply what Stripe was paid for, as its webhook would; the outcome (`credited`,
    `duplicate`, `unknown_session`, …), or None for a payment of a kind the gateway cannot
    attribute (left for a person)."""
    event = _EVENT_OF.get(kind)
    if event is None:
        return None
    created = obj.get("created")
    created_ms = created * MS_PER_SECOND if isinstance(created, int) else 0
    return await apply_object(s, f"reconcile:{obj['id']}", event, created_ms, obj)
