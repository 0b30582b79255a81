"""Auto top-up (SPEC §8): when a settlement leaves an account below its threshold, charge its
saved payment method off-session for the chosen package.

`AutoTopUps.trigger(account_id)` is called from the request path (non-blocking: it schedules a
background task, at most one per account per process); the claim under the account lock makes
it at most one pending attempt per account across processes (Payments.claim_topup). The
PaymentIntent is created with `off_session=True, confirm=True` and the attempt id as Stripe
idempotency key; the credit waits for `payment_intent.succeeded` (gateway.api.stripe_webhooks).
A decline (`CardError`, e.g. authentication_required) or any Stripe error backs off.

Routes: `GET|PUT /v1/billing/auto-topup/{userId}` (own key or HMAC) read and set
{enabled, threshold_minutes, package_key, currency, payment_method_id, customer_id}. The
threshold is in the deployment's unit of account (issue 10): whole `threshold_minutes` of AI
time (seed field, time deployments), else a decimal `threshold` in the currency or tokens
(replies add `threshold_micros` for a currency, and `unit`).
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

import stripe
from pydantic import BaseModel, ConfigDict, Field, ValidationError
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
from gateway.api.shapes import DATE_TIME, Shape, omitted
from gateway.problems import BadRequest, validation_problem
from gateway.services import Services
from policies.catalog import effective_currency
from policies.schema import Currency
from policies.units import UnitKind, UnitOfAccount
from storage.clock import MS_PER_MINUTE, iso_utc, now_ms
from storage.ports import Attempt, StoreUnavailable

log = logging.getLogger("gateway.auto_topup")


class AutoTopUps:
    """Starts auto top-up attempts in the background for accounts that fell below threshold."""

    def __init__(self, services: Services) -> None:
        self._s = services
        self._running: dict[str, asyncio.Task[str]] = {}

    def trigger(self, account_id: str) -> None:
        """Schedule an attempt for the account unless one is already running here."""
        if account_id in self._running or self._s.stripe is None:
            return
        task = asyncio.get_running_loop().create_task(self.attempt(account_id))
        self._running[account_id] = task
        task.add_done_callback(lambda _t: self._running.pop(account_id, None))

    async def attempt(self, account_id: str) -> str:
        """Claim and charge once; returns `skipped`, `charged` (credit follows by webhook),
        `declined` or `error`. Never raises for Stripe or store trouble (logged, counted)."""
        s = self._s
        try:
            claim = await s.payments.claim_topup(account_id, now_ms())
        except StoreUnavailable:
            return "error"
        if claim is None:
            return "skipped"
        package = next((p for p in s.policy.document.catalog.packages
                        if p.key == claim.package_key), None)
        if package is None:
            return await self._failed(claim, "the package is no longer in the catalog")
        # Charged as the catalog shows it (a catalog missing the currency anywhere is in USD).
        currency = effective_currency(s.policy.document.catalog, claim.currency)
        cents = package.prices[currency]
        assert s.stripe is not None
        try:
            await s.stripe.v1.payment_intents.create_async(params={
                "amount": cents, "currency": currency.lower(), "customer": claim.customer_id,
                "payment_method": claim.payment_method_id, "off_session": True,
                "confirm": True, "description": f"Auto top-up: {package.name}",
                "metadata": {"account_id": account_id, "auto_topup_attempt": claim.attempt_id,
                             "package_key": package.key},
            }, options={"idempotency_key": f"gw_auto_topup:{claim.attempt_id}"})
        except stripe.CardError as exc:
            s.metrics.auto_topups.labels("declined").inc()
            await self._failed(claim, f"declined: {exc.code or exc.user_message or exc}")
            return "declined"
        except stripe.StripeError as exc:
            s.metrics.auto_topups.labels("error").inc()
            await self._failed(claim, f"stripe error: {exc.user_message or exc}")
            return "error"
        s.metrics.auto_topups.labels("charged").inc()
        log.info("auto top-up charged", extra={"account_id": account_id,
                                               "attempt": claim.attempt_id})
        return "charged"

    async def _failed(self, claim: Attempt, error: str) -> str:
        log.warning("auto top-up failed", extra={"account_id": claim.account_id,
                                                 "attempt": claim.attempt_id, "error": error})
        try:
            await self._s.payments.topup_failed(claim.account_id, claim.attempt_id, error,
                                                now_ms())
        except StoreUnavailable:
            pass  # the attempt stays pending and is retried once stale
        return "declined"

    async def retry_due(self, limit: int = 100) -> int:
        """Attempt top-ups for accounts whose backoff ended (maintenance). Returns attempts."""
        if self._s.stripe is None:
            return 0
        due = await self._s.payments.due_topups(limit, now_ms())
        for account_id in due:
            await self.attempt(account_id)
        return len(due)

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)


class AutoTopUpSettings(BaseModel):
    """`PUT /v1/billing/auto-topup/{userId}` body. The payment method must be saved on the
    customer for off-session use (a SetupIntent or Checkout in setup mode)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool
    threshold_minutes: int | None = Field(None, ge=1, le=1_000_000,
                                          description="Time deployments: whole minutes.")
    threshold: Decimal | None = Field(None, gt=0, le=10**9, allow_inf_nan=False,
                                      description="Currency and tokens deployments: an amount "
                                                  "of the unit (at most 6 decimals; whole "
                                                  "tokens).")
    package_key: str = Field(min_length=1, max_length=64)
    currency: str = Field("USD", pattern=r"^[A-Za-z]{3}$")
    payment_method_id: str | None = Field(None, pattern=r"^pm_[A-Za-z0-9_]{1,200}$")
    customer_id: str | None = Field(None, pattern=r"^cus_[A-Za-z0-9_]{1,200}$")


class AutoTopUp(Shape):
    """An account's auto top-up settings and state. Before the first PUT only `enabled` (false)
    and `configured` (false) are sent; afterwards every member is."""

    configured: bool = Field(description="Settings were saved at least once.")
    enabled: bool
    threshold_minutes: int | None = omitted("Top up when a settlement leaves fewer minutes "
                                            "(time deployments).", ge=1)
    threshold: int | float | None = omitted("Top up when a settlement leaves less than this amount "
                                      "of `unit` (currency and tokens deployments).", gt=0)
    threshold_micros: int | None = omitted("`threshold` in micro-units (currency units).")
    unit: str | None = omitted("`USD` or `tokens` (currency and tokens deployments).")
    package_key: str | None = omitted("The catalog package bought each time.")
    currency: Currency | None = omitted("A catalog currency; the charge falls back to USD when "
                                        "the package has no price in it.")
    payment_method_id: str | None = Field(
        None, description="Saved off-session payment method (`pm_…`) these settings name; "
                          "null: the account's default card is charged.")
    customer_id: str | None = Field(
        None, description="The Stripe customer (`cus_…`) owning it; null: the account's "
                          "linked customer.")
    pending: bool | None = omitted("A charge was started; its credit waits for Stripe's "
                                   "`payment_intent.succeeded`.")
    consecutive_failures: int | None = omitted("Declines or errors since the last success.",
                                               ge=0)
    next_attempt_at: str | None = Field(
        None, description="Backoff after failures: no attempt before this time; null when "
                          "none is pending.", json_schema_extra=DATE_TIME)
    last_error: str | None = Field(None, description="Why the last attempt failed, or null.")


def threshold_units(body: AutoTopUpSettings, unit: UnitOfAccount) -> int:
    """Ledger units of the settings' threshold: `threshold_minutes` in a time deployment, the
    decimal `threshold` in the others. Raises BadRequest for the other unit's field, a missing
    one, or an amount finer than the ledger unit."""
    if unit.kind is UnitKind.TIME:
        if body.threshold is not None or body.threshold_minutes is None:
            raise BadRequest("this deployment counts AI time: give threshold_minutes")
        return body.threshold_minutes * MS_PER_MINUTE
    if body.threshold_minutes is not None or body.threshold is None:
        raise BadRequest(f"this deployment counts {unit.api_name}: give threshold")
    try:
        return unit.from_api(body.threshold)
    except ValueError as exc:
        raise BadRequest(f"threshold: {exc}") from None


def _threshold_fields(ledger_units: int, unit: UnitOfAccount) -> dict[str, Any]:
    if unit.kind is UnitKind.TIME:
        return {"threshold_minutes": ledger_units // MS_PER_MINUTE}
    return {**unit.json_fields("threshold", ledger_units), "unit": unit.api_name}


def _view(row: dict[str, Any] | None, unit: UnitOfAccount) -> dict[str, Any]:
    if row is None:
        return AutoTopUp(enabled=False, configured=False).wire()
    next_at = int(row["next_attempt_at_ms"])
    return AutoTopUp(
        configured=True, enabled=bool(row["enabled"]),
        **_threshold_fields(int(row["threshold"]), unit),
        package_key=row["package_key"], currency=row["currency"],
        payment_method_id=row["payment_method_id"], customer_id=row["stripe_customer_id"],
        pending=row["pending_attempt"] is not None,
        consecutive_failures=int(row["failures"]),
        next_attempt_at=iso_utc(next_at) if next_at > now_ms() else None,
        last_error=row["last_error"],
    ).wire()


async def read(request: Request) -> Response:
    """`GET /v1/billing/auto-topup/{userId}`: the account's auto top-up settings."""
    s = services_for(request)
    account_id = await own_account(request)
    return json_response(_view(await s.payments.topup_settings(account_id), s.policy.unit))


async def write(request: Request) -> Response:
    """`PUT /v1/billing/auto-topup/{userId}`: set them (enabling needs a saved payment
    method); an account already below the new threshold is topped up at once."""
    s = services_for(request)
    account_id = await own_account(request)
    try:
        body = AutoTopUpSettings.model_validate_json(await request.body())
    except ValidationError as exc:
        raise validation_problem(exc) from None
    threshold = threshold_units(body, s.policy.unit)
    catalog = s.policy.document.catalog
    if not any(p.key == body.package_key for p in catalog.packages):
        raise BadRequest(f"package_key: no package {body.package_key!r} in the catalog")
    currency = body.currency.upper()
    if currency not in catalog.currencies:
        raise BadRequest(f"currency: {currency} is not offered by the catalog")
    current = await s.payments.topup_settings(account_id)
    profile = await s.payments.billing_profile(account_id)
    has_pm = (body.payment_method_id or (current and current["payment_method_id"])
              or profile.default_payment_method_id)
    has_customer = (body.customer_id or (current and current["stripe_customer_id"])
                    or profile.customer_id)
    if body.enabled and not (has_pm and has_customer):
        raise BadRequest("Enabling auto top-up needs a card: save a default payment method "
                         "(POST /v1/billing/payment-methods/{userId}) or give "
                         "payment_method_id and customer_id of one saved for off-session "
                         "use.")
    row = await s.payments.configure_topup(
        account_id, body.enabled,
        threshold, body.package_key, currency, body.customer_id, body.payment_method_id,
        now_ms())
    if body.enabled:
        s.topups.trigger(account_id)  # already below the new threshold? top up now
    return json_response(_view(row, s.policy.unit))


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET", "/v1/billing/auto-topup/{userId}", "getAutoTopUp",
        "An account's auto top-up settings", "payments", ACCOUNT_OR_SIGNED,
        (Reply(200, "The settings and the state of the last attempt.", AutoTopUp),),
        USER_ERRORS, params=(USER_ID,), endpoint=read),
    Operation(
        "PUT", "/v1/billing/auto-topup/{userId}", "setAutoTopUp",
        "Set an account's auto top-up", "payments", ACCOUNT_OR_SIGNED,
        (Reply(200, "The saved settings.", AutoTopUp),),
        USER_ERRORS, params=(USER_ID,), body=AutoTopUpSettings,
        description="When a settlement leaves the account below `threshold_minutes` (time; "
                    "`threshold` in the unit of a currency or tokens deployment), the "
                    "gateway charges the saved payment method off-session for `package_key` "
                    "(one pending attempt per account; the credit follows Stripe's "
                    "`payment_intent.succeeded`; declines back off). `package_key` must be in "
                    "the catalog and `currency` offered by it (else 400). The card charged is "
                    "`payment_method_id` (with `customer_id`) when given here or earlier, else "
                    "the account's default card (POST /v1/billing/payment-methods/{userId}); "
                    "enabling without either is a 400. Omitted ones keep their saved values. "
                    "An enabled account already below its threshold is topped up at once.",
        endpoint=write),
)
AUTO_TOPUP_ROUTES = web_routes(OPERATIONS)
