"""An account's saved cards (seed 002's payment methods): list, attach, make default, detach,
and the SetupIntent a frontend confirms with Stripe.js to save a new card for off-session use.

The cards live at Stripe, on the account's customer (created on first need:
gateway.api.stripe_calls.StripeCustomers). The default card is Stripe's
`invoice_settings.default_payment_method` of that customer, mirrored in the store: it is what
auto top-up charges when its settings name no card. Listing re-reads Stripe's default (a
customer may change it in the portal) and mirrors it.

Routes (own key or HMAC):
`GET|POST /v1/billing/payment-methods/{userId}`, `POST …/{userId}/setup-intent`,
`POST …/{userId}/{paymentMethodId}/default`, `DELETE …/{userId}/{paymentMethodId}`.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.edge import json_body, json_response, own_account, services_for
from gateway.api.operations import (
    ACCOUNT_OR_SIGNED,
    NO_STORE,
    USER_ERRORS,
    USER_ID,
    Operation,
    Param,
    Reply,
    web_routes,
)
from gateway.api.shapes import Shape
from gateway.api.stripe_calls import (
    as_dict,
    client_of,
    request_key,
    stripe_errors,
)
from gateway.problems import (
    BadRequest,
    NotFound,
    PaymentProviderError,
    PaymentsNotConfigured,
)
from gateway.services import Services

_PM = r"^pm_[A-Za-z0-9_]{1,200}$"
PM_ID = Param("paymentMethodId", "path", {"type": "string", "pattern": _PM},
              "A Stripe payment method id (`pm_…`) saved on the account's customer; any other "
              "is a 404.", required=True)


class AttachRequest(BaseModel):
    """Seed 002's PaymentMethodRequest: a payment method from Stripe.js."""

    model_config = ConfigDict(extra="forbid")
    payment_method_id: str = Field(pattern=_PM)
    set_as_default: bool = False


class PaymentMethod(Shape):
    """Seed 002's PaymentMethodResponse (with the card's expiry)."""

    id: str
    type: str = Field(description="Stripe's payment method type, e.g. `card`.")
    card_brand: str | None = Field(description="e.g. `visa`; null for non-card methods.")
    card_last4: str | None
    exp_month: int | None = Field(ge=1, le=12)
    exp_year: int | None
    is_default: bool = Field(description="The customer's default: what auto top-up charges "
                                         "when its settings name no card.")


class PaymentMethods(RootModel[list[PaymentMethod]]):
    """The account's saved payment methods, default first."""


class SetupIntent(Shape):
    """What a frontend needs to save a card with Stripe.js (`stripe.confirmCardSetup`)."""

    client_secret: str = Field(description="The SetupIntent's client secret (give it to "
                                           "Stripe.js only; do not log it).")
    setup_intent_id: str
    customer_id: str = Field(description="The account's Stripe customer (`cus_…`).")
    publishable_key: str | None = Field(description="STRIPE_PUBLISHABLE_KEY, or null.")


def _view(pm: dict[str, Any], default_id: str | None) -> PaymentMethod:
    card = pm.get("card") or {}
    return PaymentMethod(id=pm["id"], type=str(pm.get("type") or "card"),
                         card_brand=card.get("brand"), card_last4=card.get("last4"),
                         exp_month=card.get("exp_month"), exp_year=card.get("exp_year"),
                         is_default=pm["id"] == default_id)


def _pm_param(request: Request) -> str:
    pm = str(request.path_params["paymentMethodId"])
    if re.fullmatch(_PM, pm) is None:
        raise BadRequest("paymentMethodId must be a Stripe payment method id (pm_…).")
    return pm


async def _owned(s: Services, account_id: str, pm_id: str) -> tuple[str, dict[str, Any]]:
    """(customer, payment method) when `pm_id` is saved on the account's customer; else
    NotFound (no customer yet, no such method, or another customer's)."""
    client = client_of(s)
    customer = await s.customers.linked(account_id)
    if customer is None:
        raise NotFound(f"No payment method {pm_id!r} on this account.")
    with stripe_errors("read the payment method"):
        pm = as_dict(await client.v1.payment_methods.retrieve_async(pm_id))
    owner = pm.get("customer")
    if (owner.get("id") if isinstance(owner, dict) else owner) != customer:
        raise NotFound(f"No payment method {pm_id!r} on this account.")
    return customer, pm


async def _make_default(s: Services, account_id: str, customer: str, pm_id: str) -> None:
    with stripe_errors("set the default payment method"):
        await client_of(s).v1.customers.update_async(
            customer, params={"invoice_settings": {"default_payment_method": pm_id}},
            options={"idempotency_key": request_key("pm_default", account_id)})
    await s.payments.set_default_payment_method(account_id, pm_id)


async def list_methods(request: Request) -> Response:
    """`GET /v1/billing/payment-methods/{userId}`: the saved cards, default first."""
    s = services_for(request)
    account_id = await own_account(request)
    client = client_of(s)
    profile = await s.payments.billing_profile(account_id)
    if profile.customer_id is None:
        return json_response(PaymentMethods([]).model_dump(mode="json"))
    with stripe_errors("list payment methods"):
        customer = as_dict(await client.v1.customers.retrieve_async(profile.customer_id))
        listed = as_dict(await client.v1.customers.payment_methods.list_async(
            profile.customer_id, params={"type": "card", "limit": 100}))
    default = (customer.get("invoice_settings") or {}).get("default_payment_method")
    default = default.get("id") if isinstance(default, dict) else default
    if default != profile.default_payment_method_id:  # changed at Stripe (e.g. in the portal)
        await s.payments.set_default_payment_method(account_id, default)
    views = sorted((_view(pm, default) for pm in listed.get("data") or []),
                   key=lambda v: not v.is_default)
    return json_response(PaymentMethods(views).model_dump(mode="json"))


async def attach(request: Request) -> Response:
    """`POST /v1/billing/payment-methods/{userId}`: attach a card to the account's customer."""
    s = services_for(request)
    account_id = await own_account(request)
    body = json_body(AttachRequest, await request.body())
    client = client_of(s)
    customer = await s.customers.ensure(account_id)
    with stripe_errors("attach the payment method"):
        pm = as_dict(await client.v1.payment_methods.attach_async(
            body.payment_method_id, params={"customer": customer},
            options={"idempotency_key": f"gw_pm_attach:{customer}:{body.payment_method_id}"}))
    profile = await s.payments.billing_profile(account_id)
    default = profile.default_payment_method_id
    if body.set_as_default or default is None:  # the first card becomes the default
        await _make_default(s, account_id, customer, body.payment_method_id)
        default = body.payment_method_id
    return json_response(_view(pm, default).wire())


async def setup_intent(request: Request) -> Response:
    """`POST /v1/billing/payment-methods/{userId}/setup-intent`: a SetupIntent to save a card
    for off-session use (auto top-up)."""
    s = services_for(request)
    account_id = await own_account(request)
    client = client_of(s)
    customer = await s.customers.ensure(account_id)
    with stripe_errors("create the setup intent"):
        intent = as_dict(await client.v1.setup_intents.create_async(
            params={"customer": customer, "usage": "off_session",
                    "payment_method_types": ["card"], "metadata": {"account_id": account_id}},
            options={"idempotency_key": request_key("setup_intent", account_id)}))
    if not intent.get("client_secret"):
        raise PaymentProviderError("Stripe answered a SetupIntent without a client secret.")
    doc = SetupIntent(client_secret=intent["client_secret"], setup_intent_id=intent["id"],
                      customer_id=customer, publishable_key=s.settings.stripe_publishable_key)
    return json_response(doc.wire())


async def set_default(request: Request) -> Response:
    """`POST /v1/billing/payment-methods/{userId}/{paymentMethodId}/default`."""
    s = services_for(request)
    account_id = await own_account(request)
    customer, pm = await _owned(s, account_id, _pm_param(request))
    await _make_default(s, account_id, customer, pm["id"])
    return json_response(_view(pm, pm["id"]).wire())


async def detach(request: Request) -> Response:
    """`DELETE /v1/billing/payment-methods/{userId}/{paymentMethodId}`: remove a card (no
    longer the default; auto top-up without a card of its own then has none)."""
    s = services_for(request)
    account_id = await own_account(request)
    _customer, pm = await _owned(s, account_id, _pm_param(request))
    with stripe_errors("detach the payment method"):
        await client_of(s).v1.payment_methods.detach_async(
            pm["id"], options={"idempotency_key": f"gw_pm_detach:{pm['id']}"})
    await s.payments.set_default_payment_method(account_id, None, only_if=pm["id"])
    return Response(status_code=204, headers={"cache-control": "no-store"})


_ERRORS = (*USER_ERRORS, PaymentProviderError, PaymentsNotConfigured)
OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/v1/billing/payment-methods/{userId}", "listPaymentMethods",
              "An account's saved payment methods", "payments", ACCOUNT_OR_SIGNED,
              (Reply(200, "The cards, default first (empty before the first is saved).",
                     PaymentMethods),),
              _ERRORS, params=(USER_ID,), endpoint=list_methods),
    Operation("POST", "/v1/billing/payment-methods/{userId}", "attachPaymentMethod",
              "Attach a payment method", "payments", ACCOUNT_OR_SIGNED,
              (Reply(200, "The attached method.", PaymentMethod),), _ERRORS,
              params=(USER_ID,), body=AttachRequest,
              description="Attaches a payment method created by Stripe.js to the account's "
                          "customer (created on first need). It becomes the default with "
                          "`set_as_default`, or when the account has no default yet. Stripe "
                          "refusing it (e.g. attached to another customer) is a 400; an "
                          "unknown id a 404.",
              endpoint=attach),
    Operation("POST", "/v1/billing/payment-methods/{userId}/setup-intent", "createSetupIntent",
              "Start saving a card (SetupIntent)", "payments", ACCOUNT_OR_SIGNED,
              (Reply(200, "The SetupIntent's client secret.", SetupIntent),), _ERRORS,
              params=(USER_ID,),
              description="A SetupIntent for off-session use on the account's customer "
                          "(created on first need). Confirm it with Stripe.js; the saved card "
                          "then shows in the list.",
              endpoint=setup_intent),
    Operation("POST", "/v1/billing/payment-methods/{userId}/{paymentMethodId}/default",
              "setDefaultPaymentMethod", "Make a card the default", "payments",
              ACCOUNT_OR_SIGNED, (Reply(200, "The new default.", PaymentMethod),), _ERRORS,
              params=(USER_ID, PM_ID), endpoint=set_default),
    Operation("DELETE", "/v1/billing/payment-methods/{userId}/{paymentMethodId}",
              "detachPaymentMethod", "Remove a card", "payments", ACCOUNT_OR_SIGNED,
              (Reply(204, "Detached.", headers=NO_STORE),), _ERRORS,
              params=(USER_ID, PM_ID), endpoint=detach),
)
PAYMENT_METHOD_ROUTES = web_routes(OPERATIONS)
