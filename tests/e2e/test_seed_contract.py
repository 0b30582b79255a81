"""Seed 001's frontend integration guide, played against a real gateway: each client call of
its TypeScript (`getPricingCatalog`, `getEnhancedBalance` + `formatBalanceDisplay`,
`getUsageAnalytics` + `formatUsageForChart`, `getBillingEvents` + `formatBillingEvent`,
`purchasePackage`, `checkBatchOperations` + `.filter`, `handleInsufficientFunds`) made as the
guide makes it (HMAC-signed where it signs), and what its types and helpers read asserted on the
reply — field names and JSON types — so a frontend built from the guide works unedited."""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from gateway.hmac_auth import header_for
from tests.e2e.helpers import auth, chat_body
from tests.e2e.stripe_support import _deliver, _event, _mock_checkout, stripe_gateway
from tests.support import RunningGateway

SECRET = "g" * 40
# seed 001: BillingEventType, plus the credits and expiry the gateway also records.
BILLING_EVENT_TYPES = {"subscription_credit", "package_credit", "daily_bonus", "consumption",
                       "rollover_created", "rollover_discard", "rollover_discard_pending",
                       "auto_topup_triggered", "adjustment",
                       "welcome_bonus", "gift_credit", "expiry"}


@pytest.fixture
def guide(tmp_path: Path, upstream_env: dict[str, str]
          ) -> Iterator[tuple[RunningGateway, respx.MockRouter]]:
    with stripe_gateway(tmp_path, upstream_env, {"GATEWAY_HMAC_KEYS": f"k1:{SECRET}"}) as pair:
        yield pair


def number(x: Any) -> bool:
    """A TypeScript `number` (JSON number; not a bool, not a string)."""
    return type(x) in (int, float)


def date(x: Any) -> datetime:
    """`new Date(x)` of an ISO string the guide parses."""
    assert isinstance(x, str)
    return datetime.fromisoformat(x)


class Backend:
    """The product backend of the guide: `generateHMAC(method, endpoint, body)` on each call."""

    def __init__(self, gw: RunningGateway) -> None:
        self.gw = gw

    def _signed(self, method: str, path: str, query: str, body: bytes) -> dict[str, str]:
        return {"x-hmac-signature": header_for("k1", SECRET, method, path, query, body,
                                               secrets.token_urlsafe(16))}

    def get(self, path: str, **params: Any) -> httpx.Response:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return httpx.get(self.gw.url + path + ("?" + query if query else ""),
                         headers=self._signed("GET", path, query, b""))

    def post(self, path: str, body: bytes) -> httpx.Response:
        return httpx.post(self.gw.url + path, content=body,
                          headers={"content-type": "application/json",
                                   **self._signed("POST", path, "", body)})


def test_the_guides_client_calls_get_the_shapes_its_typescript_reads(guide):
    gw, router = guide
    backend = Backend(gw)
    user_id = gw.ledger.account("free")  # welcome bonus; the day's bonus comes with a call
    key = gw.ledger.key(user_id)
    for text in ("plan the app", "build it"):
        r = httpx.post(gw.url + "/v1/chat/completions", headers=auth(key), json=chat_body(text))
        assert r.status_code == 200, r.text

    # 1. getPricingCatalog(currency, lastETag): 304 on a match; the fallback notice and the
    # "Charged in USD" label on every card both come from the top-level field.
    r = httpx.get(gw.url + "/v1/billing/catalog?currency=EUR")
    assert r.status_code == 200
    catalog = r.json()
    assert catalog["currency_fallback_from"] == "EUR"
    assert isinstance(catalog["version"], str) and number(catalog["rollover_policy"]["days"])
    for item in catalog["subscriptions"] + catalog["packages"]:
        assert isinstance(item["key"], str) and isinstance(item["name"], str)
        assert number(item["minutes"]) and number(item["price"])
        assert isinstance(item["taxInclusive"], bool)
        assert item["currency"] == "USD"  # the card's "Charged in USD" is true
    for plan in catalog["subscriptions"]:
        assert isinstance(plan["advisor"]["eligible"], bool)
    cached = httpx.get(gw.url + "/v1/billing/catalog?currency=EUR",
                       headers={"If-None-Match": r.headers["etag"]})
    assert cached.status_code == 304

    # 2. getEnhancedBalance(userId) + formatBalanceDisplay(balance)
    r = backend.get(f"/v1/billing/balance/{user_id}")
    assert r.status_code == 200, r.text
    balance = r.json()
    assert backend.get(f"/v1/billing/enhanced-balance/{user_id}").json() == balance
    totals, buckets = balance["totals"], balance["buckets"]
    assert all(number(totals[k]) for k in ("total_seconds", "paid_seconds", "bonus_seconds"))
    assert totals["next_expiry_at"] is None or date(totals["next_expiry_at"])
    assert balance["plan_key"] == "free" and isinstance(balance["subscription_status"], str)
    assert isinstance(balance["catalog_version"], str)
    bonus = balance["bonus"]
    assert all(number(bonus[k]) for k in ("daily_minutes", "used_this_month_minutes",
                                          "monthly_cap_minutes"))
    for b in buckets["daily"]:
        assert number(b["seconds"]) and date(b["expires_at"])
    for b in buckets["paid"]:
        assert number(b["seconds"]) and isinstance(b["source"], str)
        assert b["expires_at"] is None or date(b["expires_at"])
    daily_seconds = sum(b["seconds"] for b in buckets["daily"])
    paid_seconds = sum(b["seconds"] for b in buckets["paid"])
    # formatBalanceDisplay shows totals.* beside the buckets' sums: they must agree.
    assert (daily_seconds, paid_seconds) == (totals["bonus_seconds"], totals["paid_seconds"])
    assert totals["total_seconds"] == daily_seconds + paid_seconds
    assert [b["source"] for b in buckets["paid"]] == ["welcome"]
    assert math.floor(totals["paid_seconds"] / 60) == 30  # the welcome bonus is paid time

    # 3. getUsageAnalytics(userId, period) + formatUsageForChart(analytics)
    for period in ("day", "week", "month"):
        r = backend.get(f"/v1/billing/usage/{user_id}", period=period)
        assert r.status_code == 200, r.text
        usage = r.json()
        assert number(usage["total_seconds"]) and usage["total_seconds"] > 0
        for operation, seconds in usage["by_operation"].items():
            assert isinstance(operation, str) and number(seconds)
            assert 0 <= round(seconds / usage["total_seconds"] * 100) <= 100
        assert usage["count_by_operation"] == {"chat": 2}
        for day in usage["daily_trend"]:
            assert date(day["date"]) and number(day["seconds"])

    # 4. getBillingEvents(userId, 50) + formatBillingEvent(event)
    r = backend.get(f"/v1/billing/events/{user_id}", limit=50)
    assert r.status_code == 200, r.text
    events = r.json()["events"]
    assert {e["type"] for e in events} == {"welcome_bonus", "daily_bonus", "consumption"}
    for event in events:
        assert event["type"] in BILLING_EVENT_TYPES
        assert number(event["seconds"]) and isinstance(event["reason"], str)
        assert date(event["timestamp"]) and isinstance(event["metadata"], dict)

    # 5. purchasePackage({package_key, currency}) → PurchaseResponse
    _mock_checkout(router, "cs_guide")
    r = httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(key),
                   json={"package_key": "mini", "currency": "EUR"})
    assert r.status_code == 200, r.text
    bought = r.json()
    assert isinstance(bought["checkout_url"], str) and isinstance(bought["session_id"], str)
    assert isinstance(bought["currency"], str) and type(bought["unit_amount_cents"]) is int
    assert number(bought["display_price"]) and number(bought["package_minutes"])
    assert bought["currency_fallback_from"] == "EUR" and bought["currency"] == "USD"
    assert _deliver(gw, _event("evt_guide", "cs_guide")).json()["outcome"] == "credited"

    # 6. checkBatchOperations(userId, operations) → BatchOperationResult[]; `.filter` on it
    operations = [{"operation": "build", "estimate_seconds": 120},
                  {"operation": "plan", "estimate_seconds": 30},
                  {"operation": "export", "estimate_seconds": 45 * 3600}]
    r = backend.post("/v1/billing/check-sufficient-batch",
                     json.dumps({"userId": user_id, "operations": operations}).encode())
    assert r.status_code == 200, r.text
    batch_check = r.json()
    failed_operations = [result for result in batch_check if not result["ok"]]
    assert [op["operation"] for op in failed_operations] == ["export"]
    for op in failed_operations:
        assert number(op["deficit_seconds"]) and math.ceil(op["deficit_seconds"] / 60) > 0
        assert {s["type"] for s in op["suggestions"]} <= {"package", "upgrade"}

    # 7. handleInsufficientFunds(error) of a 402
    _poor, poor_key = gw.ledger.funded(951)
    r = httpx.post(gw.url + "/v1/chat/completions", headers=auth(poor_key),
                   json=chat_body("too much", max_tokens=1000))
    assert r.status_code == 402
    error = r.json()
    assert error["error"] == "INSUFFICIENT_AI_TIME" and error["http_status"] == 402
    assert number(error["balance_seconds"]) and isinstance(error["catalog_version"], str)
    breakdown = error["breakdown_seconds"]
    assert number(breakdown["bonus_daily"]) and number(breakdown["paid"])
    for suggestion in error["suggestions"]:
        assert suggestion["type"] in ("package", "upgrade")
        assert isinstance(suggestion["key"] if suggestion["type"] == "package"
                          else suggestion["plan"], str)
    assert isinstance(error["resume_token"], str)
    assert "less than 1 s" in error["detail"]
