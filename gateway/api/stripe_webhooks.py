"""Applying verified Stripe events to the ledger (SPEC §8), each exactly once.

Every handler's storage transaction records the event id in `stripe_events` together with its
effect, so redelivered and concurrent deliveries apply once; effects are keyed by the Stripe
object they come from (session, invoice, payment intent, refund total), so two different events
about one object apply once too; and none depends on another having arrived first
(out-of-order delivery is normal for Stripe):

| event | effect |
| --- | --- |
| checkout.session.completed (payment) | package bucket, 90 days; package.fulfilled, resume.ready |
| checkout.session.completed (subscription) | links the Stripe customer/subscription; plan, status |
| invoice.paid (subscription create/cycle) | subscription bucket until the period end |
| invoice.paid (subscription_update: a proration) | the prorated extra allowance of an upgrade, until the period end |
| customer.subscription.updated | status; plan change; `cancel_at_period_end` → scheduled downgrade |
| customer.subscription.deleted | status `canceled`, default plan, rollover discarded |
| subscription_schedule.created/updated/released/canceled | scheduled downgrade set or cleared |
| charge.refunded | clawback of what remains of that purchase |
| payment_intent.succeeded (auto top-up) | the top-up's package bucket |
| payment_intent.payment_failed (auto top-up) | attempt cleared, backoff |
| invoice.finalized/paid/payment_failed/voided/marked_uncollectible | invoice mirrored (gateway.invoicing.mirror) |
| invoice.payment_failed | also `payment.failed` (outgoing webhooks), in the mirror's transaction |

A subscription maps to a catalog subscription by `metadata.subscription_key` (set by the
gateway's subscription checkout on the subscription) or its price's `lookup_key`; the account
by `metadata.account_id` or the linked Stripe customer. Other event types are acknowledged
and recorded as `ignored`. Stripe payloads are read as plain dicts of the documented fields.
"""  # noqa: E501 - a Markdown table

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from gateway.invoicing import mirror as invoice_mirror
from gateway.problems import BadRequest
from policies.units import UnitKind, UnitOfAccount
from storage.clock import MS_PER_DAY, MS_PER_SECOND, now_ms
from storage.engine.proration import proration_credit
from storage.ports import Invoice, PlanRules, UnknownAccount

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger("gateway.stripe")


def plan_rules(s: Services) -> PlanRules:
    """The policy's rollover caps, rollover lifetime and default plan, for period ends."""
    doc = s.policy.document
    return PlanRules(
        rollover_caps={key: plan.rollover_cap for key, plan in s.policy.plans.items()},
        rollover_ms=doc.catalog.rollover_policy.days * MS_PER_DAY,
        default_plan=doc.default_plan)


def _dig(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _id(value: Any) -> str | None:
    """A Stripe reference that may be an id string or an expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


async def apply_event(s: Services, event: Any) -> str:
    """Apply one signature-verified event; returns its outcome. Raises StoreUnavailable (the
    app answers 503, so Stripe redelivers later) when the store is down, BadRequest (and records
    nothing) when it is not a Stripe event: `id` and `type` strings, a `data.object` object."""
    data = getattr(getattr(event, "data", None), "object", None)
    created = getattr(event, "created", 0) or 0
    if not (data is not None and hasattr(data, "to_dict")
            and isinstance(getattr(event, "id", None), str)
            and isinstance(getattr(event, "type", None), str) and isinstance(created, int)):
        raise BadRequest("The body is not a Stripe event.")
    obj = data.to_dict()
    if not isinstance(obj.get("id"), str) or "\x00" in event.id + str(obj["id"]):
        raise BadRequest("The event's object has no id.")
    kind = str(event.type)
    created_ms = created * MS_PER_SECOND
    outcome = await _dispatch(s, str(event.id), kind, created_ms, obj)
    s.metrics.stripe_events.labels(kind, outcome).inc()
    return outcome


async def apply_object(s: Services, event_id: str, kind: str, created_ms: int,
                       obj: dict[str, Any]) -> str:
    """Apply a Stripe object as if an event `kind` with id `event_id` (created at
    `created_ms`) had delivered it — what reconciliation does for a payment whose event never
    arrived: the same effects, idempotent by the same keys. Returns the outcome."""
    outcome = await _dispatch(s, event_id, kind, created_ms, obj)
    s.metrics.stripe_events.labels(kind, outcome).inc()
    return outcome


async def _dispatch(s: Services, event_id: str, kind: str, created_ms: int,
                    obj: dict[str, Any]) -> str:
    at = now_ms()
    if kind in invoice_mirror.MIRRORED_EVENTS and kind != "invoice.paid":
        outcome = await invoice_mirror.mirror_event(s, obj, event_id, kind, created_ms, at)
        if outcome is None:
            return await _unattributed(s, event_id, kind, "unknown_account")
        return outcome
    if kind == "invoice.paid":  # mirrored, then goes on to credit a subscription period
        await invoice_mirror.mirror(s, obj, created_ms)
    if kind == "checkout.session.completed":
        if obj.get("mode") == "subscription":
            return await _subscription_checkout(s, event_id, kind, created_ms, obj)
        if obj.get("payment_status") not in ("paid", "no_payment_required"):
            return await _record(s, event_id, kind, "awaiting_payment")
        expires = at + s.policy.document.catalog.package_expiry_days * MS_PER_DAY
        outcome, _grant, _purchase = await s.payments.fulfil_checkout(
            event_id, kind, obj["id"], expires, _id(obj.get("payment_intent")), at)
        return str(outcome)
    if kind == "invoice.paid":
        return await _invoice_paid(s, event_id, kind, created_ms, obj)
    if kind in ("customer.subscription.updated", "customer.subscription.deleted",
                "customer.subscription.created"):
        return await _subscription_changed(s, event_id, kind, created_ms, obj)
    if kind.startswith("subscription_schedule."):
        return await _schedule_changed(s, event_id, kind, created_ms, obj)
    if kind == "charge.refunded":
        pi = _id(obj.get("payment_intent"))
        if pi is None:
            return await _record(s, event_id, kind, "ignored")
        return str(await s.payments.refund(event_id, kind, pi, obj["id"],
                                           int(obj.get("amount") or 0),
                                           int(obj.get("amount_refunded") or 0), at))
    if kind in ("payment_intent.succeeded", "payment_intent.payment_failed"):
        meta = obj.get("metadata") or {}
        if not meta.get("auto_topup_attempt"):
            return await _record(s, event_id, kind, "ignored")
        return await _topup_result(s, event_id, kind, obj, meta)
    return await _record(s, event_id, kind, "ignored")


async def _record(s: Services, event_id: str, kind: str, outcome: str) -> str:
    recorded = await s.payments.record_event(event_id, kind, outcome, now_ms())
    return outcome if recorded else "duplicate"


async def _account(s: Services, meta: dict[str, Any], customer: str | None) -> str | None:
    account_id = meta.get("account_id")
    if account_id:
        return str(account_id)
    if customer:
        return await s.payments.account_for_customer(customer)
    return None


def _subscription_key(s: Services, obj: dict[str, Any], meta: dict[str, Any]) -> str | None:
    """The catalog subscription an object is for: its price's lookup_key (current item,
    follows plan changes made in Stripe) or metadata.subscription_key."""
    known = {sub.key for sub in s.policy.document.catalog.subscriptions}
    for item in _dig(obj, "items", "data") or _dig(obj, "lines", "data") or []:
        lookup = _dig(item, "price", "lookup_key")
        if lookup in known:
            return str(lookup)
    key = meta.get("subscription_key")
    return str(key) if key in known else None


def _catalog_subscription(s: Services, key: str | None) -> Any:
    return next((x for x in s.policy.document.catalog.subscriptions if x.key == key), None)


async def _unattributed(s: Services, event_id: str, kind: str, why: str) -> str:
    # Not recorded as processed: once the account is linked, a redelivery applies it.
    log.error("stripe event not applied", extra={"event_id": event_id, "type": kind,
                                                 "reason": why})
    return why


async def _subscription_checkout(s: Services, event_id: str, kind: str, created_ms: int,
                                 obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    account_id = meta.get("account_id") or obj.get("client_reference_id")
    sub = _catalog_subscription(s, meta.get("subscription_key"))
    if not account_id or sub is None:
        return await _unattributed(s, event_id, kind, "unknown_account")
    try:
        return str(await s.payments.subscription_changed(
            event_id, kind, created_ms, str(account_id), "active",
            sub.plan, sub.key, None, plan_rules(s), at_ms=now_ms(),
            stripe_ids=(_id(obj.get("customer")), _id(obj.get("subscription")))))
    except UnknownAccount:
        return await _unattributed(s, event_id, kind, "unknown_account")


async def _invoice_paid(s: Services, event_id: str, kind: str, created_ms: int,
                        obj: dict[str, Any]) -> str:
    details = _dig(obj, "parent", "subscription_details") or obj.get("subscription_details") or {}
    subscription_id = _id(details.get("subscription")) or _id(obj.get("subscription"))
    if subscription_id is None:
        return await _record(s, event_id, kind, "ignored")  # not a subscription invoice
    if obj.get("billing_reason") == "subscription_update":
        return await _proration_paid(s, event_id, kind, created_ms, obj, subscription_id,
                                     details.get("metadata") or {})
    if obj.get("billing_reason") not in (None, "subscription_create", "subscription_cycle"):
        return await _record(s, event_id, kind, "ignored")
    meta = details.get("metadata") or {}
    customer = _id(obj.get("customer"))
    account_id = await _account(s, meta, customer)
    sub = _catalog_subscription(s, _subscription_key(s, obj, meta))
    if account_id is None or sub is None:
        return await _unattributed(s, event_id, kind,
                                   "unknown_account" if account_id is None else "unknown_plan")
    lines = _dig(obj, "lines", "data") or []
    period = next((line.get("period") for line in lines if line.get("period")), None) or {
        "start": obj.get("period_start"), "end": obj.get("period_end")}
    invoice = Invoice(
        invoice_id=obj["id"], subscription_id=subscription_id, customer_id=customer,
        subscription_key=sub.key, plan_key=sub.plan, units=included_units(sub, s.policy.unit),
        period_start_ms=int(period["start"]) * MS_PER_SECOND,
        period_end_ms=int(period["end"]) * MS_PER_SECOND)
    try:
        return str(await s.payments.invoice_paid(event_id, kind, created_ms,
                                                 account_id, invoice, plan_rules(s), now_ms()))
    except UnknownAccount:
        return await _unattributed(s, event_id, kind, "unknown_account")


async def _proration_paid(s: Services, event_id: str, kind: str, created_ms: int,
                          obj: dict[str, Any], subscription_id: str,
                          meta: dict[str, Any]) -> str:
    """A paid proration invoice of a plan change made through the gateway
    (gateway/api/subscriptions.py put the previous key and the period on the subscription's
    metadata): credit the prorated difference of the included amounts (storage.engine.proration)
    as a subscription bucket until the period end, once per invoice. A change made elsewhere
    (no such metadata) or one that credits nothing is recorded `ignored`."""
    account_id = await _account(s, meta, _id(obj.get("customer")))
    new = _catalog_subscription(s, meta.get("subscription_key"))
    old = _catalog_subscription(s, meta.get("previous_subscription_key"))
    periods = [line.get("period") for line in _dig(obj, "lines", "data") or []
               if isinstance(line.get("period"), dict)]
    if account_id is None:
        return await _unattributed(s, event_id, kind, "unknown_account")
    try:
        start_ms = int(meta["gw_period_start"]) * MS_PER_SECOND
        end_ms = int(meta["gw_period_end"]) * MS_PER_SECOND
        change_ms = min(int(p["start"]) for p in periods) * MS_PER_SECOND
        line_end_ms = max(int(p["end"]) for p in periods) * MS_PER_SECOND
    except (KeyError, TypeError, ValueError):
        return await _record(s, event_id, kind, "ignored")
    if new is None or old is None or line_end_ms != end_ms:
        return await _record(s, event_id, kind, "ignored")
    unit = s.policy.unit
    units = proration_credit(included_units(old, unit), included_units(new, unit), change_ms,
                             start_ms, end_ms)
    if units <= 0:
        return await _record(s, event_id, kind, "ignored")
    invoice = Invoice(invoice_id=obj["id"], subscription_id=subscription_id,
                      customer_id=_id(obj.get("customer")), subscription_key=new.key,
                      plan_key=new.plan, units=units, period_start_ms=change_ms,
                      period_end_ms=end_ms)
    try:
        return str(await s.payments.invoice_paid(event_id, kind, created_ms, account_id,
                                                 invoice, plan_rules(s), now_ms()))
    except UnknownAccount:
        return await _unattributed(s, event_id, kind, "unknown_account")


def included_units(sub: Any, unit: UnitOfAccount) -> int:
    """Ledger units a catalog subscription includes per period, in the deployment's `unit`
    (ms of AI time, currency micro-units or tokens)."""
    return int(sub.ledger_units(unit))


async def _subscription_changed(s: Services, event_id: str, kind: str, created_ms: int,
                                obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    customer = _id(obj.get("customer"))
    account_id = await _account(s, meta, customer)
    if account_id is None:
        return await _unattributed(s, event_id, kind, "unknown_account")
    status = "canceled" if kind.endswith(".deleted") else str(obj.get("status") or "active")
    sub = _catalog_subscription(s, _subscription_key(s, obj, meta))
    pending = None
    if obj.get("cancel_at_period_end"):
        items = _dig(obj, "items", "data") or []
        # API ≥ 2025-03 moved current_period_end onto the items
        end = obj.get("current_period_end") or max(
            (int(i.get("current_period_end") or 0) for i in items), default=0) \
            or obj.get("cancel_at")
        if end:
            pending = (s.policy.document.default_plan, int(end) * MS_PER_SECOND)
    try:
        return str(await s.payments.subscription_changed(
            event_id, kind, created_ms, account_id, status,
            sub.plan if sub else None, sub.key if sub else None, pending, plan_rules(s),
            at_ms=now_ms(), stripe_ids=(customer, _id(obj.get("id")))))
    except UnknownAccount:
        return await _unattributed(s, event_id, kind, "unknown_account")


async def _schedule_changed(s: Services, event_id: str, kind: str, created_ms: int,
                            obj: dict[str, Any]) -> str:
    """A schedule whose next phase (metadata.subscription_key) includes fewer minutes than the
    current phase is a scheduled downgrade; a released or canceled schedule clears it."""
    meta = obj.get("metadata") or {}
    account_id = await _account(s, meta, _id(obj.get("customer")))
    if account_id is None:
        return await _unattributed(s, event_id, kind, "unknown_account")
    pending = None
    if obj.get("status") in (None, "not_started", "active"):
        phases = obj.get("phases") or []
        now_s = created_ms // MS_PER_SECOND
        current = next((p for p in phases if int(p.get("start_date") or 0) <= now_s
                        < int(p.get("end_date") or 2**62)), None)
        current_sub = _catalog_subscription(s, _dig(current, "metadata", "subscription_key"))
        for phase in phases:
            nxt = _catalog_subscription(s, _dig(phase, "metadata", "subscription_key"))
            if (int(phase.get("start_date") or 0) > now_s and nxt is not None
                    and current_sub is not None
                    and nxt.ledger_units(s.policy.unit) < current_sub.ledger_units(s.policy.unit)):
                pending = (nxt.plan, int(phase["start_date"]) * MS_PER_SECOND)
                break
    try:
        return str(await s.payments.pending_change(event_id, kind, created_ms,
                                                   account_id, pending, now_ms()))
    except UnknownAccount:
        return await _unattributed(s, event_id, kind, "unknown_account")


async def _topup_result(s: Services, event_id: str, kind: str, obj: dict[str, Any],
                        meta: dict[str, Any]) -> str:
    account_id = meta.get("account_id")
    attempt = str(meta["auto_topup_attempt"])
    if not account_id:
        return await _unattributed(s, event_id, kind, "unknown_account")
    at = now_ms()
    if kind == "payment_intent.payment_failed":
        error = str(_dig(obj, "last_payment_error", "message") or "payment failed")
        await s.payments.topup_failed(str(account_id), attempt, error, at)
        s.metrics.auto_topups.labels("declined").inc()
        return await _record(s, event_id, kind, "backoff")
    package = next((p for p in s.policy.document.catalog.packages
                    if p.key == meta.get("package_key")), None)
    if package is None:
        return await _unattributed(s, event_id, kind, "unknown_package")
    expires = at + s.policy.document.catalog.package_expiry_days * MS_PER_DAY
    outcome = await s.payments.credit_topup(
        event_id, kind, obj["id"], str(account_id), attempt,
        package.key, package.minutes, str(obj.get("currency") or "usd").upper(),
        int(obj.get("amount_received") or obj.get("amount") or 0), expires, at,
        None if s.policy.unit.kind is UnitKind.TIME else package.ledger_units(s.policy.unit))
    if outcome == "credited":
        s.metrics.auto_topups.labels("credited").inc()
    return str(outcome)
