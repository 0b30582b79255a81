"""The billing kill-switch (issue 11, seeds 004): with GATEWAY_BILLING_ENABLED=false every
`/v1/billing/*` path answers the `503 billing-disabled` problem — whatever its method, before
routing, authentication or the body is read — except the Stripe webhook receiver, so payments
already made keep settling. Metered calls never reach this (the gateway hands policy routes to
the proxy first), so the proxy keeps metering and enforcing balances.

One pure ASGI middleware in front of the billing/admin app (STYLE: middleware is a plain class
that validates its options once), not a check in each handler.
"""

from __future__ import annotations

from typing import Any

from gateway.problems import BillingDisabled, send_problem

BILLING_PREFIX = "/v1/billing/"
STRIPE_WEBHOOK_PATH = "/v1/billing/webhooks/stripe"


def switched_off(path: str) -> bool:
    """True for the paths the switch turns off: `/v1/billing` and everything under it but the
    Stripe webhook receiver."""
    return (path == BILLING_PREFIX.rstrip("/") or path.startswith(BILLING_PREFIX)) \
        and path != STRIPE_WEBHOOK_PATH


class BillingSwitch:
    """ASGI middleware: `enabled=False` answers every switched-off path with
    `503 billing-disabled` (problem `type` under `base_url`); other paths, and every path when
    enabled, pass through to `app` untouched."""

    def __init__(self, app: Any, *, enabled: bool, base_url: str) -> None:
        self.app = app
        self.enabled = enabled
        self.base_url = base_url

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not self.enabled and scope["type"] == "http" and switched_off(scope["path"]):
            await send_problem(send, BillingDisabled(
                "The billing API is turned off on this gateway (GATEWAY_BILLING_ENABLED=false); "
                "metered calls keep working."), self.base_url)
            return
        await self.app(scope, receive, send)
