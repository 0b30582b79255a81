"""The billing kill-switch (gateway/billing_switch.py) and its settings: which paths it turns
off, how GATEWAY_BILLING_ENABLED / STRIPE_PUBLISHABLE_KEY / GATEWAY_PORTAL_RETURN_URL read, and
that the middleware answers the problem without calling the app."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.billing_switch import BillingSwitch, switched_off
from gateway.settings import Settings, SettingsError


@pytest.mark.parametrize(("path", "off"), [
    ("/v1/billing/config", True), ("/v1/billing/balance/acct_1", True), ("/v1/billing", True),
    ("/v1/billing/webhooks/stripe", False), ("/v1/billing/webhooks/stripe/x", True),
    ("/v1/meta/features", False), ("/v1/chat/completions", False), ("/v1/billingx", False),
    ("/v1/admin/accounts", False),
])
def test_every_billing_path_but_the_stripe_webhook_is_switched_off(path: str,
                                                                   off: bool) -> None:
    assert switched_off(path) is off


def _run(app: Any, path: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "http", "path": path, "method": "GET"}, receive, send))
    return sent


def test_switched_off_paths_get_the_problem_and_never_reach_the_app() -> None:
    reached: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    off = BillingSwitch(inner, enabled=False, base_url="https://gw.example/problems/")
    start, body = _run(off, "/v1/billing/catalog")
    assert start["status"] == 503 and reached == []
    doc = json.loads(body["body"])
    assert doc["type"] == "https://gw.example/problems/billing-disabled"
    assert (b"content-type", b"application/problem+json") in start["headers"]
    _run(off, "/v1/billing/webhooks/stripe")
    on = BillingSwitch(inner, enabled=True, base_url="https://gw.example/problems/")
    _run(on, "/v1/billing/catalog")
    assert reached == ["/v1/billing/webhooks/stripe", "/v1/billing/catalog"]


def test_billing_settings_read_and_bound() -> None:
    s = Settings.from_env({})
    assert (s.billing_enabled, s.stripe_publishable_key, s.portal_return_url) == (
        True, None, "http://localhost:8080/billing")
    s = Settings.from_env({"GATEWAY_BILLING_ENABLED": "false",
                           "STRIPE_PUBLISHABLE_KEY": "pk_live_1",
                           "GATEWAY_PUBLIC_URL": "https://gw.example"})
    assert (s.billing_enabled, s.stripe_publishable_key, s.portal_return_url) == (
        False, "pk_live_1", "https://gw.example/billing")
    with pytest.raises(SettingsError, match="GATEWAY_BILLING_ENABLED"):
        Settings.from_env({"GATEWAY_BILLING_ENABLED": "maybe"})
    with pytest.raises(SettingsError, match="STRIPE_PUBLISHABLE_KEY"):
        Settings.from_env({"STRIPE_PUBLISHABLE_KEY": "sk_live_secret"})
    with pytest.raises(SettingsError, match="GATEWAY_PORTAL_RETURN_URL"):
        Settings.from_env({"GATEWAY_PORTAL_RETURN_URL": "javascript:alert(1)"})
