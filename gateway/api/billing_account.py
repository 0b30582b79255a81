"""Seed 002's billing account and customer portal.

`GET /v1/billing/account/{userId}` answers BillingAccountResponse with this gateway's account
behind each field (amounts in the unit of account, `Policy.unit`): `credit_balance` is what a
call can use now; `free_workflows_remaining` the day's bonus left and `free_workflows_reset_at`
when the next one is granted; `total_workflows_completed` / `total_amount_spent` the calls
settled and what they were charged (from the daily usage rollup); `billing_email` and
`tax_exempt` are the Stripe customer's, read from Stripe when one is linked.

`POST /v1/billing/portal/{userId}` opens a Stripe customer portal session (the customer is
created on first need) returning to GATEWAY_PORTAL_RETURN_URL.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.edge import json_response, own_account, services_for
from gateway.api.operations import (
    ACCOUNT_OR_SIGNED,
    USER_ERRORS,
    USER_ID,
    Operation,
    Reply,
    web_routes,
)
from gateway.api.shapes import DATE_TIME, Shape
from gateway.api.stripe_calls import as_dict, client_of, request_key, stripe_errors
from gateway.problems import BadRequest, PaymentProviderError, PaymentsNotConfigured
from storage.clock import iso_utc, now_ms, to_datetime, to_ms
from storage.engine import bonus
from storage.engine.buckets import Source

_AMOUNT = "In the unit of account (`unit`): seconds, a currency or tokens."


class BillingAccount(Shape):
    """Seed 002's BillingAccountResponse, mapped to this gateway's account."""

    id: str = Field(description="The account id.")
    organization_id: str = Field(description="The account id (an account is the seed's "
                                             "organization).")
    stripe_customer_id: str | None
    has_payment_method: bool = Field(description="A default card is saved (or auto top-up "
                                                 "names one).")
    status: Literal["active"] = Field(description="Every existing account is active: the "
                                                  "gateway does not suspend accounts (a call "
                                                  "beyond the balance is a 402).")
    free_workflows_remaining: int | float = Field(ge=0, description="The day's bonus left. "
                                                  + _AMOUNT)
    free_workflows_reset_at: str | None = Field(
        description="Next UTC midnight when the plan grants a daily bonus, else null.",
        json_schema_extra=DATE_TIME)
    credit_balance: int | float = Field(description="Available now (after holds and debt; "
                                                    "negative after an overdraft). " + _AMOUNT)
    auto_billing_enabled: bool = Field(description="Auto top-up is on.")
    billing_email: str | None = Field(description="The Stripe customer's email, or null.")
    tax_exempt: bool = Field(description="The Stripe customer's `tax_exempt` is `exempt` or "
                                         "`reverse`.")
    total_workflows_completed: int = Field(ge=0, description="Calls settled, all time.")
    total_amount_spent: int | float = Field(ge=0, description="Charged, all time. " + _AMOUNT)
    unit: str = Field(description="The unit of the amounts: `s`, a currency code, `tokens`.")
    created_at: str | None = Field(json_schema_extra=DATE_TIME)
    updated_at: str | None = Field(description="The newest ledger entry's time.",
                                   json_schema_extra=DATE_TIME)


class PortalSession(Shape):
    """Seed 002's PortalResponse."""

    portal_url: str = Field(description="Stripe's customer portal; send the customer there.",
                            json_schema_extra={"format": "uri"})


async def account(request: Request) -> Response:
    """`GET /v1/billing/account/{userId}`: the seed's billing account."""
    s = services_for(request)
    account_id = await own_account(request)
    unit, at = s.policy.unit, now_ms()
    tomorrow = to_ms(bonus.day_end(to_datetime(at)))
    snap = await s.ledger.balance(account_id)
    profile = await s.payments.billing_profile(account_id)
    topup = await s.payments.topup_settings(account_id)
    rollup = await s.ledger.usage_summary(account_id, 0, tomorrow)
    newest = await s.ledger.events(account_id, 1, None)
    email, exempt = None, False
    if profile.customer_id is not None and s.stripe is not None:
        with stripe_errors("read the customer"):
            customer = as_dict(await s.stripe.v1.customers.retrieve_async(profile.customer_id))
        email = customer.get("email")
        exempt = customer.get("tax_exempt") in ("exempt", "reverse")
    plan = s.policy.plans.get(snap.plan_key)
    daily = sum(b.remaining for b in snap.buckets if b.source == Source.DAILY.value)
    doc = BillingAccount(
        id=account_id, organization_id=account_id, stripe_customer_id=profile.customer_id,
        has_payment_method=bool(profile.default_payment_method_id
                                or (topup and topup["payment_method_id"])),
        status="active", free_workflows_remaining=unit.to_json(daily),
        free_workflows_reset_at=iso_utc(tomorrow)
        if plan is not None and plan.daily_bonus > 0 else None,
        credit_balance=unit.to_json(snap.available),
        auto_billing_enabled=bool(topup and topup["enabled"]),
        billing_email=email, tax_exempt=exempt,
        total_workflows_completed=sum(calls for *_rest, calls in rollup),
        total_amount_spent=unit.to_json(sum(charged for _op, _day, charged, _c in rollup)),
        unit=unit.api_name, created_at=iso_utc(profile.created_at_ms),
        updated_at=iso_utc(int(newest[0]["created_at_ms"])) if newest else None)
    return json_response(doc.wire())


async def portal(request: Request) -> Response:
    """`POST /v1/billing/portal/{userId}`: a Stripe customer portal session."""
    s = services_for(request)
    account_id = await own_account(request)
    client = client_of(s)
    customer = await s.customers.ensure(account_id)
    with stripe_errors("open the customer portal"):
        session = as_dict(await client.v1.billing_portal.sessions.create_async(
            params={"customer": customer, "return_url": s.settings.portal_return_url},
            options={"idempotency_key": request_key("portal", account_id)}))
    if not session.get("url"):
        raise PaymentProviderError("Stripe answered a portal session without a URL.")
    return json_response(PortalSession(portal_url=session["url"]).wire())


OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/v1/billing/account/{userId}", "getBillingAccount",
              "An account's billing account (seed 002)", "billing", ACCOUNT_OR_SIGNED,
              (Reply(200, "The billing account.", BillingAccount),),
              (*USER_ERRORS, PaymentProviderError), params=(USER_ID,), endpoint=account),
    Operation("POST", "/v1/billing/portal/{userId}", "openCustomerPortal",
              "Open Stripe's customer portal", "payments", ACCOUNT_OR_SIGNED,
              (Reply(200, "Where to send the customer.", PortalSession),),
              (*USER_ERRORS, PaymentProviderError, PaymentsNotConfigured, BadRequest),
              params=(USER_ID,),
              description="The account's Stripe customer is created on first need; the portal "
                          "returns to GATEWAY_PORTAL_RETURN_URL.",
              endpoint=portal),
)
BILLING_ACCOUNT_ROUTES = web_routes(OPERATIONS)
