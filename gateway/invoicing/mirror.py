"""Stripe invoice objects → the gateway's mirror (storage.ports.MirroredInvoice).

Stripe's invoice object (https://docs.stripe.com/api/invoices/object) is read as a plain dict
of its documented fields, across API versions: tax from `tax` (before 2025-03) or
`total_taxes`/`total_tax_amounts`, the subscription from `subscription` or
`parent.subscription_details`. Seed 002's status union maps Stripe's `uncollectible` to
`past_due`. `credits_applied` is the customer credit balance the invoice consumed
(`ending_balance − starting_balance` when positive). Each line says what it credits in ledger
units, by the rules the webhook applies (gateway.api.stripe_webhooks): a subscription line of a
`subscription_create`/`subscription_cycle` invoice its subscription's minutes, a line of a
Checkout purchase invoice (its `metadata.package_key`) the package's minutes; others nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from storage.clock import MS_PER_MINUTE, MS_PER_SECOND
from storage.engine.invoices import seed_status, version_of
from storage.ports import InvoiceLine, MirroredInvoice, UnknownAccount

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger("gateway.invoices")

MIRRORED_EVENTS = ("invoice.finalized", "invoice.paid", "invoice.payment_failed",
                   "invoice.voided", "invoice.marked_uncollectible")
_CREDITING_REASONS = (None, "subscription_create", "subscription_cycle")


def _dig(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _ms(seconds: Any) -> int | None:
    return seconds * MS_PER_SECOND if isinstance(seconds, int) and seconds > 0 else None


def _ref(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _text(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def subscription_id(obj: dict[str, Any]) -> str | None:
    """The subscription an invoice bills, whatever the API version."""
    details = _dig(obj, "parent", "subscription_details") or obj.get("subscription_details")
    return _ref(_dig(details, "subscription")) or _ref(obj.get("subscription"))


def invoice_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """The invoice's own metadata over its subscription's (where Stripe copies the
    subscription's metadata onto the invoice)."""
    details = _dig(obj, "parent", "subscription_details") or obj.get("subscription_details")
    merged = dict(_dig(details, "metadata") or {})
    merged.update(obj.get("metadata") or {})
    return merged


def _tax(obj: dict[str, Any]) -> int:
    if isinstance(obj.get("tax"), int):
        return int(obj["tax"])
    amounts = obj.get("total_taxes") or obj.get("total_tax_amounts") or []
    return sum(_int(a.get("amount")) for a in amounts if isinstance(a, dict))


def _credited_by_line(s: Services, obj: dict[str, Any], line: dict[str, Any],
                      meta: dict[str, Any]) -> tuple[str, int]:
    """(kind, ledger units) a line credits, by the webhook's rules."""
    catalog = s.policy.document.catalog
    lookup = _dig(line, "price", "lookup_key") or _dig(line, "pricing", "price_details",
                                                          "lookup_key")
    subs = {x.key: x for x in catalog.subscriptions}
    is_subscription_line = (line.get("type") == "subscription" or _dig(
        line, "parent", "type") == "subscription_item_details" or lookup in subs)
    if subscription_id(obj) is not None and is_subscription_line:
        sub = subs.get(str(lookup)) or subs.get(str(meta.get("subscription_key")))
        if sub is not None and obj.get("billing_reason") in _CREDITING_REASONS \
                and not line.get("proration"):
            return "subscription", sub.minutes * MS_PER_MINUTE
        return "subscription", 0
    package = next((p for p in catalog.packages if p.key == meta.get("package_key")), None)
    if package is not None:
        return "package", package.minutes * MS_PER_MINUTE
    return "other", 0


def to_mirror(s: Services, obj: dict[str, Any], account_id: str,
              event_ms: int) -> MirroredInvoice:
    """The mirror of a Stripe invoice object for `account_id`, delivered by an event created
    at `event_ms` (0 when read from the API). Raises ValueError when the object is not an
    invoice Stripe could send (no id or status of its lifecycle)."""
    invoice_id, status = obj.get("id"), obj.get("status")
    if not isinstance(invoice_id, str) or not isinstance(status, str):
        raise ValueError("not a Stripe invoice")
    transitions = {k: _ms(v) for k, v in (obj.get("status_transitions") or {}).items()}
    meta = invoice_metadata(obj)
    lines = []
    for line in (_dig(obj, "lines", "data") or [])[:100]:
        if not isinstance(line, dict):
            continue
        kind, credited = _credited_by_line(s, obj, line, meta)
        lines.append(InvoiceLine(
            description=_text(line.get("description"), 500) or "",
            amount_cents=_int(line.get("amount")), quantity=_int(line.get("quantity")) or 1,
            kind=kind, credited=credited,
            period_start_ms=_ms(_dig(line, "period", "start")),
            period_end_ms=_ms(_dig(line, "period", "end"))))
    starts = [x.period_start_ms for x in lines if x.period_start_ms]
    ends = [x.period_end_ms for x in lines if x.period_end_ms]
    discounts = sum(_int(d.get("amount")) for d in obj.get("total_discount_amounts") or []
                    if isinstance(d, dict))
    return MirroredInvoice(
        invoice_id=invoice_id, account_id=account_id, number=_text(obj.get("number"), 64),
        status=seed_status(status), stripe_status=status,
        currency=str(obj.get("currency") or "usd").upper()[:3],
        subtotal_cents=_int(obj.get("subtotal")), tax_cents=_tax(obj), discount_cents=discounts,
        total_cents=_int(obj.get("total")),
        credits_applied_cents=max(0, _int(obj.get("ending_balance"))
                                  - _int(obj.get("starting_balance"))),
        amount_due_cents=_int(obj.get("amount_due")),
        amount_paid_cents=_int(obj.get("amount_paid")),
        created_at_ms=_ms(obj.get("created")) or event_ms,
        version=version_of(status, transitions, _int(obj.get("attempt_count")), event_ms),
        lines=tuple(lines),
        period_start_ms=min(starts) if starts else _ms(obj.get("period_start")),
        period_end_ms=max(ends) if ends else _ms(obj.get("period_end")),
        description=_text(obj.get("description"), 1000), due_date_ms=_ms(obj.get("due_date")),
        finalized_at_ms=transitions.get("finalized_at"), paid_at_ms=transitions.get("paid_at"),
        hosted_invoice_url=_text(obj.get("hosted_invoice_url"), 2000),
        invoice_pdf=_text(obj.get("invoice_pdf"), 2000),
        subscription_id=subscription_id(obj), billing_reason=_text(obj.get("billing_reason"), 64))


async def invoice_account(s: Services, obj: dict[str, Any]) -> str | None:
    """The account an invoice belongs to: `metadata.account_id` (the gateway's Checkout and
    subscriptions set it), else the account linked to its Stripe customer."""
    account_id = invoice_metadata(obj).get("account_id")
    if isinstance(account_id, str) and account_id:
        return account_id
    customer = _ref(obj.get("customer"))
    return await s.payments.account_for_customer(customer) if customer else None


async def mirror(s: Services, obj: dict[str, Any], event_ms: int) -> str | None:
    """Store Stripe's state of an invoice (unless a newer one is stored): `created`,
    `updated`, `stale`; None when the invoice cannot be attributed to a known account or is
    malformed (nothing stored). Raises StoreUnavailable."""
    if s.records is None:
        return None
    account_id = await invoice_account(s, obj)
    if account_id is None:
        return None
    try:
        return await s.records.mirror_invoice(to_mirror(s, obj, account_id, event_ms))
    except (ValueError, UnknownAccount) as exc:
        log.warning("stripe invoice not mirrored", extra={"invoice": obj.get("id"),
                                                          "reason": str(exc)})
        return None


def failure_reason(obj: dict[str, Any]) -> str:
    """The reason an invoice's payment failed, as Stripe gives it on the invoice's
    `last_finalization_error` or its payment intent's `last_payment_error` (when expanded),
    else a generic one; at most 200 characters."""
    for path in (("last_payment_error", "message"), ("payment_intent", "last_payment_error",
                                                     "message"),
                 ("last_finalization_error", "message")):
        text = _text(_dig(obj, *path), 200)
        if text:
            return text
    return "invoice payment failed"


async def mirror_event(s: Services, obj: dict[str, Any], event_id: str, kind: str,
                       event_ms: int, at_ms: int) -> str | None:
    """Mirror the invoice of Stripe event `event_id` (one of MIRRORED_EVENTS but
    `invoice.paid`) and record the event in one transaction; `invoice.payment_failed` also
    emits `payment.failed` there (so it lands in the outgoing-webhook outbox), once per Stripe
    event. Returns `mirrored` or `duplicate`; None when the invoice cannot be attributed to a
    known account or is malformed (nothing stored). Raises StoreUnavailable."""
    if s.records is None:
        return None
    account_id = await invoice_account(s, obj)
    if account_id is None:
        return None
    failure = failure_reason(obj) if kind == "invoice.payment_failed" else None
    try:
        outcome = await s.records.mirror_invoice_event(
            to_mirror(s, obj, account_id, event_ms), event_id, kind, failure, at_ms)
    except (ValueError, UnknownAccount) as exc:
        log.warning("stripe invoice not mirrored", extra={"invoice": obj.get("id"),
                                                          "reason": str(exc)})
        return None
    return "duplicate" if outcome == "duplicate" else "mirrored"


def subscription_units(s: Services, obj: dict[str, Any]) -> int | None:
    """The ledger units a paid invoice credits by itself — a subscription invoice of a period
    (`subscription_create`/`subscription_cycle`) its subscription's minutes, as the webhook
    credits them; None for any other invoice (prorations, Checkout purchases' invoices, an
    unknown plan)."""
    if subscription_id(obj) is None or obj.get("billing_reason") not in _CREDITING_REASONS:
        return None
    subs = {x.key: x for x in s.policy.document.catalog.subscriptions}
    keys = [_dig(line, "price", "lookup_key") for line in _dig(obj, "lines", "data") or []]
    keys.append(invoice_metadata(obj).get("subscription_key"))
    sub = next((subs[k] for k in keys if isinstance(k, str) and k in subs), None)
    return None if sub is None else sub.minutes * MS_PER_MINUTE
