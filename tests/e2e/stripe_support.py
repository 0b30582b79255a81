"""Stripe test doubles of the end-to-end tests: the Checkout mock (respx) and webhook delivery
signed with stripe-python's own `WebhookSignature.generate_signature_header`."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import respx
import stripe

from tests.support import RunningGateway, start_gateway

STRIPE_BASE = "http://stripe.test"
WEBHOOK_SECRET = "whsec_test_secret"


@contextlib.contextmanager
def stripe_gateway(tmp_path: Path, upstream_env: Mapping[str, str],
                   extra_env: Mapping[str, str] | None = None, policy_transform: Any = None,
                   ) -> Iterator[tuple[RunningGateway, respx.MockRouter]]:
    """A gateway configured for Stripe (its API at the respx double `STRIPE_BASE`) and the
    respx router that mocks it; calls to the gateway and the fake upstream pass through."""
    gw = start_gateway(tmp_path, {**upstream_env, **(extra_env or {}),
                                  "STRIPE_SECRET_KEY": "sk_test_123",
                                  "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                                  "STRIPE_API_BASE": STRIPE_BASE},
                       policy_transform=policy_transform)
    try:
        with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
            router.route(url__startswith=gw.url).pass_through()
            router.route(url__startswith=upstream_env["ANTHROPIC_BASE_URL"]).pass_through()
            yield gw, router
    finally:
        gw.stop()


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
