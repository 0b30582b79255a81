"""Subscription management (seed 002's SubscriptionResponse; seed 004's "current usage").

- `GET /v1/billing/subscription/{userId}`: plan, status and period — Stripe's subscription when
  one is linked (status, `current_period_*`, `cancel_at_period_end`, `canceled_at`, trial),
  else what the webhooks recorded — and the period's allowance from the ledger: `included`,
  `used`, `remaining` (the live subscription buckets, proration credits included) in the unit.
- `POST …/cancel`: cancel at the period end (Stripe `cancel_at_period_end`); the answer carries
  the rollover-at-risk warning of the downgrade to the default plan (as the balance's
  `scheduled_change` will once Stripe's event arrives).
- `POST …/reactivate`: undo a cancellation (and release a scheduled plan change) before the
  period ends.
- `POST …/change {subscription_key}`: an upgrade (more included) takes effect now with
  proration — Stripe invoices the price difference at once (`proration_behavior:
  always_invoice`) and that invoice's `invoice.paid` credits the prorated extra allowance
  (storage.engine.proration); a downgrade takes effect at the period end through a subscription
  schedule whose next phase names the new key (the webhook records the scheduled downgrade and
  its rollover warning).

The ledger moves only by Stripe's events (gateway/api/stripe_webhooks.py): these endpoints ask
Stripe and answer what Stripe answered. The subscription's metadata carries `account_id`,
`subscription_key`, and after a change `previous_subscription_key`, `gw_period_start`,
`gw_period_end` (UTC epoch seconds), which the proration credit is computed from.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.edge import json_body, json_response, own_account, services_for
from gateway.api.operations import (
    ACCOUNT_OR_SIGNED,
    USER_ERRORS,
    USER_ID,
    Operation,
    Reply,
    web_routes,
)
from gateway.api.shapes import DATE_TIME, ScheduledChange, Shape
from gateway.api.stripe_calls import as_dict, client_of, request_key, stripe_errors
from gateway.api.stripe_webhooks import included_units
from gateway.problems import (
    BadRequest,
    NotFound,
    PaymentProviderError,
    PaymentsNotConfigured,
)
from gateway.services import Services
from storage.clock import MS_PER_SECOND, iso_utc
from storage.engine import expiry
from storage.engine.buckets import Source
from storage.ports import BalanceSnapshot, BillingProfile

_AMOUNT = "In the unit of account (`unit`)."


class ChangeRequest(BaseModel):
    """A catalog subscription to move to."""

    model_config = ConfigDict(extra="forbid")
    subscription_key: str = Field(min_length=1, max_length=64)


class Subscription(Shape):
    """Seed 002's SubscriptionResponse (its field names; `agents_limit` and `storage_*` are
    left out: this gateway meters neither), the period's allowance in the unit, and a
    scheduled change."""

    id: str | None = Field(description="The Stripe subscription (`sub_…`), or null.")
    organization_id: str
    billing_account_id: str
    tier: str = Field(description="The plan key the account is on.")
    plan: str | None = Field(description="The catalog subscription key, or null.")
    status: str = Field(description="Stripe's status (`active`, `trialing`, `past_due`, "
                                    "`canceled`, …), or `none` without a subscription.")
    current_period_start: str | None = Field(json_schema_extra=DATE_TIME)
    current_period_end: str | None = Field(json_schema_extra=DATE_TIME)
    cancel_at_period_end: bool
    canceled_at: str | None = Field(json_schema_extra=DATE_TIME)
    trial_start: str | None = Field(json_schema_extra=DATE_TIME)
    trial_end: str | None = Field(json_schema_extra=DATE_TIME)
    included: int | float = Field(ge=0, description="Credited for the current period "
                                                    "(proration credits included). " + _AMOUNT)
    used: int | float = Field(ge=0, description="Spent of it. " + _AMOUNT)
    remaining: int | float = Field(ge=0, description="Left of it. " + _AMOUNT)
    workflows_limit: int | float = Field(ge=0, description="= included (seed 002's name).")
    workflows_used: int | float = Field(ge=0, description="= used.")
    workflows_remaining: int | float = Field(ge=0, description="= remaining.")
    unit: str = Field(description="`s`, a currency code or `tokens`.")
    is_lifetime: bool = Field(description="Always false: this gateway sells no lifetime plan.")
    lifetime_purchase_date: str | None = Field(description="Always null (no lifetime plan).")
    lifetime_purchase_amount: int | None = Field(description="Always null (no lifetime plan).")
    is_byo: bool = Field(description="Always false: the gateway's upstreams are its own.")
    byo_providers_configured: list[str] | None = Field(description="Always null.")
    created_at: str | None = Field(json_schema_extra=DATE_TIME,
                                   description="When Stripe created the subscription, or null.")
    updated_at: str | None = Field(json_schema_extra=DATE_TIME,
                                   description="Always null: Stripe does not say.")
    scheduled_change: ScheduledChange | None = Field(
        description="A downgrade at the period end and the rollover it will discard, or null.")


def _seconds(value: Any) -> str | None:
    return iso_utc(int(value) * MS_PER_SECOND) if isinstance(value, int) and value else None


def _period(sub: dict[str, Any]) -> tuple[int | None, int | None]:
    """(start, end) in epoch s: top-level, or on the items (Stripe API ≥ 2025-03)."""
    items = (sub.get("items") or {}).get("data") or []
    start = sub.get("current_period_start") or min(
        (int(i["current_period_start"]) for i in items if i.get("current_period_start")),
        default=None)
    end = sub.get("current_period_end") or max(
        (int(i["current_period_end"]) for i in items if i.get("current_period_end")),
        default=None)
    return start, end


def _allowance(snap: BalanceSnapshot) -> tuple[int, int]:
    """(included, remaining) of the live subscription buckets, in ledger units."""
    subs = [b for b in snap.buckets if b.source == Source.SUBSCRIPTION.value]
    return sum(b.amount for b in subs), sum(b.remaining for b in subs)


def _warning(s: Services, snap: BalanceSnapshot, plan_key: str,
             effective_ms: int) -> ScheduledChange:
    """The seeds' downgrade warning of a move to `plan_key` at `effective_ms`: the live
    rollover it will discard (storage.engine.expiry's rule, as the webhook records it)."""
    at_risk = sum(b.remaining for b in snap.buckets if b.source == Source.ROLLOVER.value)
    warning = expiry.downgrade_warning(plan_key, effective_ms, at_risk)
    return ScheduledChange.model_validate(
        {k: v for k, v in warning.items() if k in ScheduledChange.model_fields})


def _document(s: Services, account_id: str, snap: BalanceSnapshot, profile: BillingProfile,
              sub: dict[str, Any] | None,
              change: ScheduledChange | None = None) -> dict[str, Any]:
    unit = s.policy.unit
    included, remaining = _allowance(snap)
    start, end = _period(sub) if sub else (None, None)
    if end is None:
        ends = [b.expires_at_ms for b in snap.buckets
                if b.source == Source.SUBSCRIPTION.value and b.expires_at_ms is not None]
        end = max(ends) // MS_PER_SECOND if ends else None
    if change is None and snap.pending_plan_key and snap.pending_effective_at_ms:
        change = _warning(s, snap, snap.pending_plan_key, snap.pending_effective_at_ms)
    meta = (sub or {}).get("metadata") or {}
    amounts = {name: unit.to_json(v) for name, v in (
        ("included", included), ("used", included - remaining), ("remaining", remaining))}
    return Subscription(
        id=(sub or {}).get("id") or profile.subscription_id, organization_id=account_id,
        billing_account_id=account_id, tier=snap.plan_key,
        plan=meta.get("subscription_key") or profile.subscription_key,
        status=str((sub or {}).get("status") or snap.subscription_status),
        current_period_start=_seconds(start), current_period_end=_seconds(end),
        cancel_at_period_end=bool((sub or {}).get("cancel_at_period_end")),
        canceled_at=_seconds((sub or {}).get("canceled_at")),
        trial_start=_seconds((sub or {}).get("trial_start")),
        trial_end=_seconds((sub or {}).get("trial_end")),
        workflows_limit=amounts["included"], workflows_used=amounts["used"],
        workflows_remaining=amounts["remaining"], unit=unit.api_name, is_lifetime=False,
        lifetime_purchase_date=None, lifetime_purchase_amount=None, is_byo=False,
        byo_providers_configured=None, created_at=_seconds((sub or {}).get("created")),
        updated_at=None, scheduled_change=change, **amounts).wire()


async def _state(request: Request) -> tuple[Services, str, BalanceSnapshot, BillingProfile]:
    s = services_for(request)
    account_id = await own_account(request)
    return (s, account_id, await s.ledger.balance(account_id),
            await s.payments.billing_profile(account_id))


async def _stripe_subscription(s: Services, profile: BillingProfile) -> dict[str, Any]:
    """Stripe's subscription of the account. Raises NotFound without one."""
    client = client_of(s)
    if profile.subscription_id is None:
        raise NotFound("This account has no subscription; start one with "
                       "POST /v1/billing/subscriptions/checkout.")
    with stripe_errors("read the subscription"):
        return as_dict(await client.v1.subscriptions.retrieve_async(profile.subscription_id))


def _live(sub: dict[str, Any]) -> None:
    if sub.get("status") in ("canceled", "incomplete_expired"):
        raise BadRequest("The subscription has ended; start a new one with "
                         "POST /v1/billing/subscriptions/checkout.")


async def read(request: Request) -> Response:
    """`GET /v1/billing/subscription/{userId}`."""
    s, account_id, snap, profile = await _state(request)
    sub = None
    if profile.subscription_id is not None and s.stripe is not None:
        sub = await _stripe_subscription(s, profile)
    return json_response(_document(s, account_id, snap, profile, sub))


async def cancel(request: Request) -> Response:
    """`POST /v1/billing/subscription/{userId}/cancel`: at the period end."""
    s, account_id, snap, profile = await _state(request)
    sub = await _stripe_subscription(s, profile)
    _live(sub)
    with stripe_errors("cancel the subscription"):
        sub = as_dict(await client_of(s).v1.subscriptions.update_async(
            sub["id"], params={"cancel_at_period_end": True},
            options={"idempotency_key": request_key("sub_cancel", account_id)}))
    _start, end = _period(sub)
    change = None if end is None else _warning(
        s, snap, s.policy.document.default_plan, int(end) * MS_PER_SECOND)
    return json_response(_document(s, account_id, snap, profile, sub, change))


async def reactivate(request: Request) -> Response:
    """`POST /v1/billing/subscription/{userId}/reactivate`: keep it past the period end."""
    s, account_id, snap, profile = await _state(request)
    sub = await _stripe_subscription(s, profile)
    _live(sub)
    client = client_of(s)
    schedule = sub.get("schedule")
    schedule = schedule.get("id") if isinstance(schedule, dict) else schedule
    with stripe_errors("reactivate the subscription"):
        if schedule:  # a scheduled plan change is undone too
            await client.v1.subscription_schedules.release_async(
                schedule, options={"idempotency_key": f"gw_sched_release:{schedule}"})
        sub = as_dict(await client.v1.subscriptions.update_async(
            sub["id"], params={"cancel_at_period_end": False},
            options={"idempotency_key": request_key("sub_reactivate", account_id)}))
    return json_response(_document(s, account_id, snap, profile, sub))


async def change(request: Request) -> Response:
    """`POST /v1/billing/subscription/{userId}/change`: upgrade now, downgrade at period end."""
    s, account_id, snap, profile = await _state(request)
    body = json_body(ChangeRequest, await request.body())
    catalog = {x.key: x for x in s.policy.document.catalog.subscriptions}
    new = catalog.get(body.subscription_key)
    if new is None:
        raise BadRequest(f"subscription_key: no subscription {body.subscription_key!r} in "
                         "the catalog")
    sub = await _stripe_subscription(s, profile)
    _live(sub)
    old = catalog.get(str((sub.get("metadata") or {}).get("subscription_key")
                          or profile.subscription_key))
    if old is None:
        raise BadRequest("The current subscription is not in the catalog; change it in the "
                         "customer portal.")
    if old.key == new.key:
        raise BadRequest(f"subscription_key: the account is already on {new.key!r}")
    currency = str(sub.get("currency") or "usd").upper()
    cents = new.prices.get(currency)  # type: ignore[call-overload]
    if cents is None:
        raise BadRequest(f"subscription_key: {new.key!r} has no {currency} price, the "
                         "subscription's currency")
    items = (sub.get("items") or {}).get("data") or []
    if len(items) != 1:
        raise BadRequest("The subscription has several items; change it in the customer "
                         "portal.")
    item = items[0]
    price = item.get("price") or {}
    product = price.get("product")
    product = product.get("id") if isinstance(product, dict) else product
    start, end = _period(sub)
    new_price = {"currency": currency.lower(), "unit_amount": cents, "product": product,
                 "recurring": {"interval": "month"},
                 "tax_behavior": "inclusive" if new.tax_inclusive else "exclusive"}
    client = client_of(s)
    if included_units(new, s.policy.unit) > included_units(old, s.policy.unit):
        with stripe_errors("upgrade the subscription"):
            sub = as_dict(await client.v1.subscriptions.update_async(sub["id"], params={
                "items": [{"id": item["id"], "price_data": new_price}],
                "proration_behavior": "always_invoice",
                "metadata": {"account_id": account_id, "subscription_key": new.key,
                             "previous_subscription_key": old.key,
                             "gw_period_start": str(start or ""),
                             "gw_period_end": str(end or "")}},
                options={"idempotency_key": request_key("sub_upgrade", account_id)}))
        return json_response(_document(s, account_id, snap, profile, sub))
    if start is None or end is None:
        raise PaymentProviderError("Stripe's subscription has no current period.")
    schedule = sub.get("schedule")
    schedule = schedule.get("id") if isinstance(schedule, dict) else schedule
    with stripe_errors("schedule the downgrade"):
        if not schedule:
            created = as_dict(await client.v1.subscription_schedules.create_async(
                params={"from_subscription": sub["id"]},
                options={"idempotency_key": request_key("sched", account_id)}))
            schedule = created["id"]
        await client.v1.subscription_schedules.update_async(schedule, params={
            "end_behavior": "release", "metadata": {"account_id": account_id},
            "phases": [
                {"items": [{"price": price.get("id"), "quantity": 1}], "start_date": start,
                 "end_date": end, "metadata": {"account_id": account_id,
                                               "subscription_key": old.key}},
                {"items": [{"price_data": new_price, "quantity": 1}], "iterations": 1,
                 "metadata": {"account_id": account_id, "subscription_key": new.key}},
            ]}, options={"idempotency_key": request_key("sched_update", account_id)})
    warning = _warning(s, snap, new.plan, int(end) * MS_PER_SECOND)
    return json_response(_document(s, account_id, snap, profile, sub, warning))


_ERRORS = (*USER_ERRORS, PaymentProviderError, PaymentsNotConfigured)
_PATH = "/v1/billing/subscription/{userId}"
_DOC = Reply(200, "The subscription as Stripe answered it, and the period's allowance.",
             Subscription)
OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", _PATH, "getSubscription", "An account's subscription and allowance",
              "payments", ACCOUNT_OR_SIGNED, (_DOC,), _ERRORS, params=(USER_ID,),
              description="Without a linked subscription: status `none` (or what the "
                          "webhooks recorded) and the allowance of any live subscription "
                          "bucket.", endpoint=read),
    Operation("POST", _PATH + "/cancel", "cancelSubscription", "Cancel at the period end",
              "payments", ACCOUNT_OR_SIGNED, (_DOC,), _ERRORS, params=(USER_ID,),
              description="`scheduled_change` warns of the rollover the downgrade to the "
                          "default plan will discard. No subscription: 404; an ended one: 400.",
              endpoint=cancel),
    Operation("POST", _PATH + "/reactivate", "reactivateSubscription",
              "Undo a cancellation before the period end", "payments", ACCOUNT_OR_SIGNED,
              (_DOC,), _ERRORS, params=(USER_ID,), endpoint=reactivate),
    Operation("POST", _PATH + "/change", "changeSubscription", "Change the plan", "payments",
              ACCOUNT_OR_SIGNED, (_DOC,), _ERRORS, params=(USER_ID,), body=ChangeRequest,
              description="More included time: now, Stripe invoicing the prorated price at "
                          "once; the paid invoice credits (new − old included) × remaining / "
                          "period, rounded down. Less: at the period end (a subscription "
                          "schedule); `scheduled_change` warns of the rollover it will discard.",
              endpoint=change),
)
SUBSCRIPTION_ROUTES = web_routes(OPERATIONS)



