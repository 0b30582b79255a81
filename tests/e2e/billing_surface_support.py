"""Helpers of the billing-surface end-to-end tests (issue 11 items 1–4): Stripe object doubles
for respx, webhook payloads, form-body decoding of what the gateway sent Stripe."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import respx

from tests.e2e.stripe_support import STRIPE_BASE, _deliver
from tests.support import RunningGateway

DAY = 86_400
BILLING_POLICY = Path(__file__).parent / "billing_policy.yaml"


def sent(route: respx.Route, index: int = -1) -> dict[str, list[str]]:
    """The form parameters of a call the gateway made to the Stripe double."""
    return parse_qs(route.calls[index].request.content.decode())


def stripe_calls(router: respx.MockRouter) -> list[Any]:
    """The calls the gateway made to the Stripe double (not the test's own to the gateway)."""
    return [c for c in router.calls if str(c.request.url).startswith(STRIPE_BASE)]


def key_of(route: respx.Route, index: int = -1) -> str:
    """The Idempotency-Key of a call to the Stripe double."""
    return str(route.calls[index].request.headers["idempotency-key"])


def payload(event_id: str, kind: str, obj: dict[str, Any], created: int | None = None) -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": kind,
                       "created": created or int(time.time()), "livemode": False,
                       "api_version": "2025-03-31.basil", "data": {"object": obj}}).encode()


def deliver(gw: RunningGateway, body: bytes) -> str:
    """Deliver a signed event; its outcome."""
    r = _deliver(gw, body)
    assert r.status_code == 200, r.text
    return str(r.json()["outcome"])


def card(pm_id: str, customer: str | None, brand: str = "visa",
         last4: str = "4242") -> dict[str, Any]:
    return {"id": pm_id, "object": "payment_method", "type": "card", "customer": customer,
            "card": {"brand": brand, "last4": last4, "exp_month": 12, "exp_year": 2030}}


def mock_customer(router: respx.MockRouter, customer: str = "cus_new") -> respx.Route:
    return router.post(f"{STRIPE_BASE}/v1/customers").mock(return_value=httpx.Response(
        200, json={"id": customer, "object": "customer"}))


def subscription(account: str, key: str = "pro", status: str = "active", *,
                 start: int, end: int, cancel: bool = False,
                 schedule: str | None = None, sub_id: str = "sub_m") -> dict[str, Any]:
    """A subscription in the current API shape (periods on the item)."""
    return {"id": sub_id, "object": "subscription", "customer": "cus_m", "status": status,
            "currency": "usd", "cancel_at_period_end": cancel, "canceled_at": None,
            "trial_start": None, "trial_end": None, "schedule": schedule,
            "metadata": {"account_id": account, "subscription_key": key},
            "items": {"object": "list", "data": [{
                "id": "si_m", "object": "subscription_item", "current_period_start": start,
                "current_period_end": end,
                "price": {"id": f"price_{key}", "object": "price", "product": "prod_m",
                          "lookup_key": None}}]}}


def subscribe(gw: RunningGateway, account: str, start: int, end: int, key: str = "pro") -> None:
    """Link the account to `sub_m` (checkout completed) and credit its period (invoice paid)."""
    assert deliver(gw, payload("evt_m_checkout", "checkout.session.completed", {
        "id": "cs_m", "object": "checkout.session", "mode": "subscription",
        "customer": "cus_m", "subscription": "sub_m", "client_reference_id": account,
        "metadata": {"account_id": account, "subscription_key": key}},
        created=start)) == "applied"
    assert deliver(gw, payload("evt_m_inv", "invoice.paid", invoice(
        "in_m_1", account, "subscription_create", start, end, {"subscription_key": key}),
        created=start + 1)) == "credited"


def invoice(invoice_id: str, account: str, reason: str, start: int, end: int,
            meta: dict[str, str]) -> dict[str, Any]:
    return {"id": invoice_id, "object": "invoice", "customer": "cus_m",
            "billing_reason": reason, "status": "paid",
            "parent": {"type": "subscription_details", "subscription_details": {
                "subscription": "sub_m", "metadata": {"account_id": account, **meta}}},
            "lines": {"object": "list", "data": [
                {"id": "il_m", "object": "line_item", "period": {"start": start, "end": end}}]}}
