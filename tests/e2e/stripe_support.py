"""Stripe test doubles of the end-to-end tests: the Checkout mock (respx) and webhook delivery
signed with stripe-python's own `WebhookSignature.generate_signature_header`."""

from __future__ import annotations

import json
import time

import httpx
import respx
import stripe

from tests.support import RunningGateway

STRIPE_BASE = "http://stripe.test"
WEBHOOK_SECRET = "whsec_test_secret"


def _mock_checkout(router: respx.MockRouter, session_id: str) -> respx.Route:
    return router.post(f"{STRIPE_BASE}/v1/checkout/sessions").mock(
        return_value=httpx.Response(200, json={
            "id": session_id, "object": "checkout.session",
            "url": f"https://checkout.stripe.com/c/pay/{session_id}"}))


def _event(event_id: str, session_id: str, paid: bool = True) -> bytes:
    return json.dumps({
        "id": event_id, "object": "event", "type": "checkout.session.completed",
        "created": int(time.time()), "livemode": False, "api_version": "2024-06-20",
        "data": {"object": {"id": session_id, "object": "checkout.session",
                            "payment_status": "paid" if paid else "unpaid"}},
    }).encode()


def _deliver(gw: RunningGateway, payload: bytes, secret: str = WEBHOOK_SECRET) -> httpx.Response:
    header = stripe.WebhookSignature.generate_signature_header(payload.decode(), secret)
    return httpx.post(gw.url + "/v1/billing/webhooks/stripe", content=payload,
                      headers={"stripe-signature": header, "content-type": "application/json"})
