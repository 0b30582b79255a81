"""A credit purchase of any amount (seed 002's CreditPurchaseRequest), beside the packages:
`POST /v1/billing/credits/checkout {amount, currency}` opens a Stripe Checkout Session for
`amount` of the unit of account's currency. Only where the unit of account is a currency
(Policy.unit); bounds and tax behaviour from the policy's `catalog.credit_purchase`.

The purchase is recorded with the exact ledger units it credits (`Purchase.units`:
amount × 1,000,000 micro-units); the Stripe webhook's `checkout.session.completed` credits
them once as a `package` bucket (the catalog's package expiry), exactly as a package purchase,
refunds included.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.edge import body_and_account, json_response, services_for
from gateway.api.operations import ACCOUNT_OR_SIGNED, USER_ERRORS, Operation, Reply, web_routes
from gateway.api.payments import _open_checkout
from gateway.api.shapes import Shape
from gateway.problems import BadRequest, PaymentProviderError, PaymentsNotConfigured
from policies.catalog import price_fields
from policies.units import UnitKind
from storage.clock import now_ms
from storage.ports import Purchase, SessionConflict

CREDIT_KEY = "credit"  # the purchase's package key: not a catalog package


class CreditPurchaseRequest(BaseModel):
    """An amount of the unit's currency to buy (major units, at most 2 decimals)."""

    model_config = ConfigDict(extra="forbid")
    amount: Decimal = Field(gt=0, le=10**7, decimal_places=2, allow_inf_nan=False)
    currency: str = Field(pattern=r"^[A-Za-z]{3}$")
    operation_id: str | None = Field(None, pattern=r"^(urn:op:)?req_[A-Za-z0-9_-]{4,60}$")
    userId: str | None = None


class CreditCheckout(Shape):
    """Seed 002's CheckoutResponse, with the price charged."""

    checkout_url: str = Field(json_schema_extra={"format": "uri"})
    session_id: str
    currency: str
    amount: float = Field(gt=0, description="The credit bought, in the unit's currency.")
    unit_amount_cents: int = Field(gt=0)
    display_price_text: str


async def checkout(request: Request) -> Response:
    """`POST /v1/billing/credits/checkout`: a Checkout Session for `amount` of credit."""
    s = services_for(request)
    body, account_id = await body_and_account(request, CreditPurchaseRequest)
    unit = s.policy.unit
    if unit.kind is not UnitKind.CURRENCY or unit.currency is None:
        raise BadRequest("Credit purchases need a currency unit of account; this gateway "
                         f"counts {unit.api_name}: buy a package instead.")
    currency = body.currency.upper()
    if currency != unit.currency:
        raise BadRequest(f"currency: credit is sold in {unit.currency}, the unit of account")
    bounds = s.policy.document.catalog.credit_purchase
    if not bounds.min <= body.amount <= bounds.max:
        raise BadRequest(f"amount: must be within {bounds.min}..{bounds.max} {currency}")
    cents = int(body.amount * 100)
    units = unit.from_api(body.amount)
    operation_id = body.operation_id.removeprefix("urn:op:") if body.operation_id else None
    metadata = {"account_id": account_id, "package_key": CREDIT_KEY,
                **({"operation_id": operation_id} if operation_id else {})}
    session = await _open_checkout(
        s, account_id, "payment", bounds, currency, cents, f"{body.amount} {currency} of credit",
        metadata, {"payment_intent_data": {"metadata": metadata}})
    try:
        await s.payments.record_purchase(Purchase(
            session.id, account_id, CREDIT_KEY, 0, currency, cents, operation_id, units),
            now_ms())
    except SessionConflict:
        raise PaymentProviderError("Stripe returned a Checkout Session that belongs to "
                                   "another purchase; retry.") from None
    doc = CreditCheckout(checkout_url=session.url, session_id=session.id, currency=currency,
                         amount=float(body.amount), unit_amount_cents=cents,
                         display_price_text=price_fields(cents, currency)["display_price_text"])
    return json_response(doc.wire())


OPERATIONS: tuple[Operation, ...] = (
    Operation("POST", "/v1/billing/credits/checkout", "creditCheckout",
              "Start a Stripe Checkout for an amount of credit", "payments", ACCOUNT_OR_SIGNED,
              (Reply(200, "The Checkout Session to redirect the buyer to.", CreditCheckout),),
              (*USER_ERRORS, PaymentProviderError, PaymentsNotConfigured),
              body=CreditPurchaseRequest,
              description="Only when the unit of account is a currency (else 400); `currency` "
                          "must be it and `amount` within the policy's "
                          "`catalog.credit_purchase` bounds (else 400). The webhook credits the "
                          "amount once payment completes.",
              endpoint=checkout),
)
CREDIT_ROUTES = web_routes(OPERATIONS)
