"""Package purchases through Stripe Checkout and the Stripe webhook (SPEC §8).

`POST /v1/billing/packages/purchase` creates a Checkout Session for a catalog package in the
requested currency (USD fallback) carrying the account and, when given, the blocked operation
(`operation_id`, the id in a 402's `instance`). `POST /v1/billing/subscriptions/checkout`
creates a monthly subscription Checkout Session whose subscription carries the account and the
catalog subscription key. `POST /v1/billing/webhooks/stripe` verifies the signature on the raw
body with stripe-python's own `Webhook.construct_event` and applies each event exactly once
(gateway.api.stripe_webhooks). Stripe is reached with
stripe-python's HTTPX client; `STRIPE_API_BASE` points it at a test double.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson
import stripe
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.edge import body_and_account, json_response, services_for
from gateway.api.operations import (
    ACCOUNT_OR_SIGNED,
    PUBLIC,
    USER_ERRORS,
    Operation,
    Param,
    Reply,
    web_routes,
)
from gateway.api.shapes import Shape, omitted
from gateway.api.stripe_webhooks import apply_event
from gateway.problems import (
    BadRequest,
    BadWebhookSignature,
    NotFound,
    PaymentProviderError,
    PaymentsNotConfigured,
    StoreUnavailableProblem,
)
from policies.catalog import effective_currency, price_fields
from policies.schema import Currency, PackageSpec, SubscriptionSpec
from policies.units import UnitKind, UnitOfAccount
from storage.clock import now_ms
from storage.ports import Purchase, SessionConflict


class PurchaseRequest(BaseModel):
    """Body of the purchase endpoint (seeds: PackagePurchaseRequest + currency, operation)."""

    model_config = ConfigDict(extra="forbid")
    package_key: str = Field(min_length=1, max_length=64)
    currency: str = Field("USD", pattern=r"^[A-Za-z]{3}$")
    operation_id: str | None = Field(None, pattern=r"^(urn:op:)?req_[A-Za-z0-9_-]{4,60}$")
    userId: str | None = None


class SubscriptionCheckoutRequest(BaseModel):
    """Body of the subscription checkout: a catalog subscription key and a currency."""

    model_config = ConfigDict(extra="forbid")
    subscription_key: str = Field(min_length=1, max_length=64)
    currency: str = Field("USD", pattern=r"^[A-Za-z]{3}$")
    userId: str | None = None


class CheckoutSession(Shape):
    """A Stripe Checkout Session to redirect the buyer to, and the price it charges."""

    checkout_url: str = Field(description="Where to send the buyer.",
                              json_schema_extra={"format": "uri"})
    session_id: str
    currency: Currency
    unit_amount_cents: int = Field(ge=0, description="The price in minor units (cents; "
                                                     "monthly for a subscription).")
    price: float = Field(ge=0, description="The amount in major units, for display only.")
    display_price: float = Field(ge=0, description="The same number (seed 001's "
                                                   "PurchaseResponse).")
    display_price_text: str = Field(description="Formatted price, e.g. `€5.00`.")
    currency_fallback_from: str | None = Field(
        description="The requested currency when the catalog is in USD for it (it is not "
                    "offered, or some item has no price in it), else null.")


class PurchaseResult(CheckoutSession):
    """A Stripe Checkout Session for one package. What it grants: `package_minutes` (time
    deployments, seed field), else `package_credits` (+ `package_credits_micros`) or
    `package_tokens`, and `unit` (issue 10)."""

    package_minutes: int | None = omitted("Minutes of AI time the package grants (time "
                                          "deployments).", ge=0)
    package_credits: int | float | None = omitted("Credits the package grants, in `unit` (currency "
                                            "deployments).", ge=0)
    package_credits_micros: int | None = omitted("`package_credits` in micro-units.", ge=0)
    package_tokens: int | None = omitted("Tokens the package grants (tokens deployments).",
                                         ge=0)
    unit: str | None = omitted("`USD` or `tokens` (currency and tokens deployments).")


class SubscriptionCheckoutResult(CheckoutSession):
    """A Stripe Checkout Session (subscription mode) for one catalog subscription, monthly."""

    subscription_key: str
    plan_key: str = Field(description="The plan the account moves to once Stripe confirms.")
    minutes_per_period: int | None = omitted("Minutes of AI time credited per period (time "
                                             "deployments).", ge=0)
    credits_per_period: int | float | None = omitted("Credits per period, in `unit` (currency "
                                               "deployments).", ge=0)
    credits_per_period_micros: int | None = omitted("`credits_per_period` in micro-units.",
                                                    ge=0)
    tokens_per_period: int | None = omitted("Tokens per period (tokens deployments).", ge=0)
    unit: str | None = omitted("`USD` or `tokens` (currency and tokens deployments).")


def grants_fields(item: PackageSpec | SubscriptionSpec, unit: UnitOfAccount,
                  time_name: str, name: str) -> dict[str, Any]:
    """What a catalog item grants, for a checkout reply: `{time_name: minutes}` in a time
    deployment (seed fields `package_minutes`, `minutes_per_period`); else `name` with
    `credits`/`tokens` put for `{}` (+ its `_micros` twin for a currency) and `unit`."""
    if unit.kind is UnitKind.TIME:
        return {time_name: item.minutes}
    word = "credits" if unit.kind is UnitKind.CURRENCY else "tokens"
    return {**unit.json_fields(name.format(word), item.ledger_units(unit)),
            "unit": unit.api_name}


def item_label(item: PackageSpec | SubscriptionSpec, unit: UnitOfAccount) -> str:
    """The amount an item grants as Stripe's product line shows it: `10 min`, `10 USD`,
    `50000 tokens`."""
    if unit.kind is UnitKind.TIME:
        return f"{item.minutes} min"
    return f"{unit.to_text(item.ledger_units(unit))} {unit.api_name}"


class StripeEvent(BaseModel):
    """The webhook's input: a Stripe Event object (https://docs.stripe.com/api/events/object),
    verified on the raw bytes; `checkout.session.completed` is applied, others are recorded."""

    model_config = ConfigDict(extra="allow")
    id: str
    type: str
    data: dict[str, Any]


class WebhookAck(Shape):
    received: Literal[True]
    outcome: str = Field(description="What the event did, e.g. `fulfilled`, `duplicate`, "
                                     "`awaiting_payment`, `ignored`.")


def stripe_client(settings: Any) -> stripe.StripeClient | None:
    """A StripeClient on stripe-python's HTTPX client, or None without STRIPE_SECRET_KEY."""
    if not settings.stripe_secret_key:
        return None
    return stripe.StripeClient(settings.stripe_secret_key, http_client=stripe.HTTPXClient(),
                               base_addresses={"api": settings.stripe_api_base})


async def purchase(request: Request) -> Response:
    """`POST /v1/billing/packages/purchase`: a Checkout Session for a catalog package."""
    s = services_for(request)
    body, account_id = await body_and_account(request, PurchaseRequest)
    catalog = s.policy.document.catalog
    package = next((p for p in catalog.packages if p.key == body.package_key), None)
    if package is None:
        raise BadRequest(f"package_key: no package {body.package_key!r} in the catalog")
    currency, cents, fallback = _currency(body.currency, catalog, package.prices)
    operation_id = body.operation_id.removeprefix("urn:op:") if body.operation_id else None
    metadata = {"account_id": account_id, "package_key": package.key,
                **({"operation_id": operation_id} if operation_id else {})}
    session = await _open_checkout(
        s, account_id, "payment", package, currency, cents,
        f"{package.name} ({item_label(package, s.policy.unit)})", metadata,
        {"payment_intent_data": {"metadata": metadata}})
    try:
        unit = s.policy.unit
        await s.payments.record_purchase(Purchase(
            session.id, account_id, package.key, package.minutes, currency, cents,
            operation_id, None if unit.kind is UnitKind.TIME else package.ledger_units(unit)),
            now_ms())
    except SessionConflict:
        raise PaymentProviderError(
            "Stripe returned a Checkout Session that belongs to another purchase; "
            "retry.") from None
    doc = PurchaseResult(checkout_url=session.url, session_id=session.id, currency=currency,
                         **price_fields(cents, currency), currency_fallback_from=fallback,
                         **grants_fields(package, s.policy.unit, "package_minutes",
                                         "package_{}"))
    return json_response(doc.wire())


async def subscribe(request: Request) -> Response:
    """`POST /v1/billing/subscriptions/checkout`: a monthly subscription Checkout Session."""
    s = services_for(request)
    body, account_id = await body_and_account(request, SubscriptionCheckoutRequest)
    catalog = s.policy.document.catalog
    sub = next((x for x in catalog.subscriptions if x.key == body.subscription_key), None)
    if sub is None:
        raise BadRequest(f"subscription_key: no subscription {body.subscription_key!r} in "
                         "the catalog")
    currency, cents, fallback = _currency(body.currency, catalog, sub.prices)
    metadata = {"account_id": account_id, "subscription_key": sub.key, "plan_key": sub.plan}
    session = await _open_checkout(
        s, account_id, "subscription", sub, currency, cents,
        f"{sub.name} ({item_label(sub, s.policy.unit)} / month)", metadata,
        {"subscription_data": {"metadata": metadata}})
    doc = SubscriptionCheckoutResult(
        checkout_url=session.url, session_id=session.id, currency=currency,
        **price_fields(cents, currency), subscription_key=sub.key, plan_key=sub.plan,
        currency_fallback_from=fallback,
        **grants_fields(sub, s.policy.unit, "minutes_per_period", "{}_per_period"))
    return json_response(doc.wire())


async def webhook(request: Request) -> Response:
    """`POST /v1/billing/webhooks/stripe`: verify the signature, apply the event once."""
    s = services_for(request)
    if not s.settings.stripe_webhook_secret:
        raise PaymentsNotConfigured("Set STRIPE_WEBHOOK_SECRET to receive Stripe events.")
    payload = await request.body()
    try:
        event = stripe.Webhook.construct_event(
            payload, request.headers.get("stripe-signature"), s.settings.stripe_webhook_secret)
    except (stripe.SignatureVerificationError, ValueError):
        raise BadWebhookSignature("The Stripe-Signature header does not match the body.") \
            from None
    except (AttributeError, TypeError, KeyError):
        # Signed, but stripe-python cannot read it as an event (e.g. a JSON array).
        raise BadRequest("The body is not a Stripe event.") from None
    outcome = await apply_event(s, event)
    return Response(orjson.dumps(WebhookAck(received=True, outcome=outcome).wire()),
                    media_type="application/json")


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST", "/v1/billing/packages/purchase", "purchasePackage",
        "Start a Stripe Checkout for a package", "payments", ACCOUNT_OR_SIGNED,
        (Reply(200, "The Checkout Session to redirect the buyer to.", PurchaseResult),),
        (*USER_ERRORS, PaymentProviderError, PaymentsNotConfigured),
        body=PurchaseRequest,
        description="`package_key` must be in the catalog and `currency` one of USD EUR GBP "
                    "EGP SAR AED (case-insensitive; else 400); the charge is in the currency "
                    "the catalog shows for it (USD with `currency_fallback_from` when the "
                    "catalog falls back). `operation_id` (a 402's "
                    "`instance`) lets the live stream announce the blocked call as resumable "
                    "once the webhook credits the package.",
        endpoint=purchase),
    Operation(
        "POST", "/v1/billing/webhooks/stripe", "stripeWebhook", "Stripe event receiver",
        "payments", PUBLIC,
        (Reply(200, "Acknowledged (also for duplicates and event types not handled).",
               WebhookAck, headers={}),),
        (BadRequest, BadWebhookSignature, PaymentsNotConfigured, StoreUnavailableProblem),
        params=(Param("Stripe-Signature", "header", {"type": "string"},
                      "Stripe's signature (`t=…,v1=…`) of the raw body with "
                      "STRIPE_WEBHOOK_SECRET.", required=True),),
        body=StripeEvent,
        description="Called by Stripe. `checkout.session.completed` (paid) credits the "
                    "package exactly once, also when redelivered or out of order; a 503 makes "
                    "Stripe redeliver later. A correctly signed body that is not an event (no "
                    "`id`, `type` or `data.object`) is a 400 and records nothing.",
        endpoint=webhook),
    Operation(
        "POST", "/v1/billing/subscriptions/checkout", "subscriptionCheckout",
        "Start a Stripe Checkout for a monthly subscription", "payments", ACCOUNT_OR_SIGNED,
        (Reply(200, "The Checkout Session to redirect the buyer to.",
               SubscriptionCheckoutResult),),
        (*USER_ERRORS, PaymentProviderError, PaymentsNotConfigured),
        body=SubscriptionCheckoutRequest,
        description="`subscription_key` must be in the catalog and `currency` one of USD EUR "
                    "GBP EGP SAR AED (case-insensitive; else 400). The plan changes, and the "
                    "period's minutes are credited, when Stripe's `checkout.session.completed` "
                    "and `invoice.paid` arrive at the webhook.",
        endpoint=subscribe),
)
PAYMENTS_ROUTES = web_routes(OPERATIONS)


async def _open_checkout(s: Any, account_id: str, mode: str, item: Any, currency: str,
                         cents: int, name: str, metadata: dict[str, str],
                         extra: dict[str, Any]) -> Any:
    """Create a Checkout Session (`mode` payment, or subscription billed monthly) selling one
    catalog `item` at `cents` in `currency`, carrying the account in `metadata`; `extra` adds
    mode-specific parameters; the account's linked Stripe customer, if any, is the session's
    `customer`. Raises PaymentsNotConfigured (no STRIPE_SECRET_KEY), NotFound
    (unknown account), PaymentProviderError (Stripe refused), StoreUnavailable (answered 503)."""
    if s.stripe is None:
        raise PaymentsNotConfigured("Set STRIPE_SECRET_KEY to sell packages and subscriptions.")
    price: dict[str, Any] = {
        "currency": currency.lower(), "unit_amount": cents, "product_data": {"name": name},
        "tax_behavior": "inclusive" if item.tax_inclusive else "exclusive"}
    if mode == "subscription":
        price["recurring"] = {"interval": "month"}
    elif s.settings.checkout_invoices:
        # Opt-in (Stripe charges per invoice): a Stripe invoice for the one-time purchase,
        # carrying the account so its webhooks mirror it (gateway.invoicing.mirror).
        extra = {**extra, "invoice_creation": {"enabled": True,
                                               "invoice_data": {"metadata": metadata}}}
    try:
        if not await s.accounts.account_exists(account_id):
            raise NotFound(f"No account {account_id!r}.")
        # The account's linked Stripe customer pays (else Stripe would create a second one,
        # whose id the webhook could not link: the first link wins).
        customer = (await s.payments.billing_profile(account_id)).customer_id
        return await s.stripe.v1.checkout.sessions.create_async(params={
            "mode": mode, "client_reference_id": account_id,
            **({"customer": customer} if customer else {}),
            "line_items": [{"quantity": 1, "price_data": price}], "metadata": metadata,
            "success_url": s.settings.checkout_success_url,
            "cancel_url": s.settings.checkout_cancel_url, **extra})
    except stripe.StripeError as exc:
        raise PaymentProviderError(f"Stripe refused the checkout: {exc.user_message or exc}") \
            from None


def _currency(requested: str, catalog: Any,
              prices: Mapping[Currency, int]) -> tuple[str, int, str | None]:
    """(currency charged, unit amount in cents, currency_fallback_from or None) for a requested
    code, by the catalog's rule (policies.catalog.effective_currency): the buyer pays in the
    currency the catalog showed — USD when the catalog does not offer the code or any of its
    items lacks a price in it. Raises BadRequest for a code outside USD EUR GBP EGP SAR AED."""
    code = requested.upper()
    if code not in ("USD", "EUR", "GBP", "EGP", "SAR", "AED"):
        raise BadRequest(f"currency: unknown currency {code}")
    currency = effective_currency(catalog, code)
    return currency, prices[currency], code if currency != code else None
