"""The dashboard's billing parts in a real browser against the real endpoints (issue 12 with
issues 10 and 11): a USD deployment's balance in USD and its cost breakdown; saved cards and
the portal link; invoices with their PDFs; the subscription; the low-balance alert settings;
in the console, key limits, cost and margin by model, and outgoing webhook deliveries.

Each test fails when its part is hidden or empty. Stripe is the respx double
(tests/e2e/stripe_support.py); Stripe events are signed with stripe-python's helper."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from policies.compiled import Policy
from policies.units import UnitKind, UnitOfAccount
from tests.dashboard.support import ADMIN_TOKEN, new_account
from tests.dashboard.test_browser import sign_in
from tests.e2e.billing_surface_support import (
    BILLING_POLICY,
    card,
    deliver,
    mock_customer,
    payload,
    subscription,
)
from tests.e2e.helpers import auth, chat_body, encode
from tests.e2e.stripe_support import STRIPE_BASE, stripe_gateway
from tests.support import TEST_POLICY, RunningGateway

Shop = tuple[RunningGateway, respx.MockRouter]
ENV = {"GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
       "GATEWAY_POLICY_PATH": f"{TEST_POLICY},{BILLING_POLICY}"}
DAY = 86_400


def _in_usd(policy: Policy) -> Policy:
    """The policy in USD, its provider costs readable with the account's key (policy
    `expose_provider_cost: true`: without it the account's cost part stays hidden)."""
    document = policy.document.model_copy(update={"expose_provider_cost": True})
    return dataclasses.replace(policy, unit=UnitOfAccount(UnitKind.CURRENCY, "USD"),
                               document=document)


@pytest.fixture
def shop(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[Shop]:
    with stripe_gateway(tmp_path, upstream_env, ENV) as gw_and_router:
        yield gw_and_router


@pytest.fixture
def usd_shop(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[Shop]:
    with stripe_gateway(tmp_path, upstream_env, ENV, policy_transform=_in_usd) as gw_and_router:
        yield gw_and_router


@pytest.fixture
def priced_usd_shop(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[Shop]:
    """The USD shop with gpt-4o-mini served, so calls carry a provider cost (genai-prices)."""
    policy = tmp_path / "priced.yaml"
    policy.write_text(TEST_POLICY.read_text().replace(
        '{ "gpt-fake*": { input: 1000000, output: 2000000 } }',
        '{ "gpt-fake*": { input: 1000000, output: 2000000 },'
        ' "gpt-4o-mini*": { input: 1000000, output: 2000000 } }'))
    env = {**ENV, "GATEWAY_POLICY_PATH": f"{policy},{BILLING_POLICY}"}
    with stripe_gateway(tmp_path, upstream_env, env, policy_transform=_in_usd) as gw_and_router:
        yield gw_and_router


def _admin() -> httpx.Client:
    return httpx.Client(headers=auth(ADMIN_TOKEN), timeout=10)


def _usd_account(gw: RunningGateway, amount: str) -> tuple[str, str]:
    with _admin() as client:
        account = client.post(f"{gw.url}/v1/admin/accounts", json={}).json()["account_id"]
        key = client.post(f"{gw.url}/v1/admin/accounts/{account}/keys").json()["key"]
        r = client.post(f"{gw.url}/v1/admin/accounts/{account}/grants",
                        json={"amount": amount, "idempotency_key": f"usd-{account}"})
        assert r.status_code == 201, r.text
    return account, key


def _calls(gw: RunningGateway, key: str, n: int, model: str = "gpt-fake") -> None:
    for _ in range(n):
        r = httpx.post(gw.url + "/v1/chat/completions", content=encode(chat_body(model=model)),
                       headers={**auth(key), "content-type": "application/json"})
        assert r.status_code == 200, r.text


def test_a_usd_deployment_shows_the_balance_in_usd_and_the_cost_breakdown(
        usd_shop: Shop, page: Any) -> None:
    gw, _ = usd_shop
    account, key = _usd_account(gw, "25")
    _calls(gw, key, 2)
    sign_in(page, gw, key)

    api = httpx.get(f"{gw.url}/v1/billing/balance/{account}", headers=auth(key)).json()
    assert api["unit"] == "USD" and "total_seconds" not in api["totals"]
    total = page.get_by_test_id("balance-total")
    assert total.get_attribute("data-unit") == "USD"
    assert float(total.get_attribute("data-value")) == pytest.approx(api["totals"]["total"])
    assert float(page.get_by_test_id("balance-available").get_attribute("data-value")) == (
        pytest.approx(api["totals"]["available"]))
    assert total.inner_text().endswith(" USD") and " s" not in total.inner_text()
    usage = httpx.get(f"{gw.url}/v1/billing/usage/{account}?period=month",
                      headers=auth(key)).json()
    assert usage["unit"] == "USD" and usage["total"] > 0  # the two calls were charged in USD
    chart = page.get_by_test_id("usage-chart")
    assert float(chart.get_attribute("data-total")) == pytest.approx(usage["total"])
    assert "USD" in page.locator("#usage-total").inner_text()
    assert page.get_by_test_id("bucket-row").first.inner_text().count("USD") == 1
    assert "USD" in page.get_by_test_id("event-row").first.inner_text()

    costs = httpx.get(f"{gw.url}/v1/billing/costs/{account}/summary",
                      headers=auth(key)).json()
    assert costs["record_count"] == 2 and costs["breakdown"]
    page.get_by_test_id("costs").wait_for(state="visible")
    rows = page.get_by_test_id("cost-row")
    assert rows.count() == len(costs["breakdown"])
    first = costs["breakdown"][0]
    shown = rows.first.inner_text()
    assert first["provider"] in shown and first["model"] in shown
    assert float(page.get_by_test_id("costs-total").get_attribute("data-value")) == (
        pytest.approx(costs["total_cost"]))
    assert "USD" in page.get_by_test_id("costs-total").inner_text()


def test_saved_cards_and_the_portal_link_render_from_the_stripe_double(
        shop: Shop, page: Any) -> None:
    gw, router = shop
    account, key = new_account(gw.url, minutes=10)
    mock_customer(router, "cus_dash")
    router.post(url__regex=rf"{STRIPE_BASE}/v1/payment_methods/pm_\w+/attach$").mock(
        side_effect=lambda req: httpx.Response(200, json=card(req.url.path.split("/")[3],
                                                              "cus_dash")))
    router.post(f"{STRIPE_BASE}/v1/customers/cus_dash").mock(
        return_value=httpx.Response(200, json={"id": "cus_dash", "object": "customer"}))
    r = httpx.post(f"{gw.url}/v1/billing/payment-methods/{account}", headers=auth(key),
                   json={"payment_method_id": "pm_visa"})
    assert r.status_code == 200, r.text
    router.get(f"{STRIPE_BASE}/v1/customers/cus_dash").mock(return_value=httpx.Response(
        200, json={"id": "cus_dash", "object": "customer",
                   "invoice_settings": {"default_payment_method": "pm_visa"}}))
    router.get(f"{STRIPE_BASE}/v1/customers/cus_dash/payment_methods").mock(
        return_value=httpx.Response(200, json={
            "object": "list", "has_more": False, "url": "/v1/customers/cus_dash/payment_methods",
            "data": [card("pm_mc", "cus_dash", "mastercard", "4444"),
                     card("pm_visa", "cus_dash")]}))
    portal_url = "https://billing.stripe.com/p/session/bps_dash"
    portal = router.post(f"{STRIPE_BASE}/v1/billing_portal/sessions").mock(
        return_value=httpx.Response(200, json={"id": "bps_dash", "object":
                                               "billing_portal.session", "url": portal_url}))
    page.route("https://billing.stripe.com/**", lambda route: route.fulfill(
        status=200, content_type="text/html", body="<title>Portal double</title>"))

    sign_in(page, gw, key)
    assert page.get_by_test_id("payment-methods").is_visible()
    rows = page.get_by_test_id("pm-row")
    assert rows.count() == 2
    assert "visa •••• 4242" in rows.nth(0).inner_text() and "default" in rows.nth(0).inner_text()
    assert "mastercard •••• 4444" in rows.nth(1).inner_text()
    page.get_by_test_id("portal").click()
    page.wait_for_url(portal_url)
    assert portal.call_count == 1


def _invoice(invoice_id: str, account: str, start: int) -> dict[str, Any]:
    return {
        "id": invoice_id, "object": "invoice", "customer": "cus_inv", "number": "DASH-0001",
        "status": "open", "billing_reason": "subscription_cycle", "currency": "usd",
        "created": start, "subtotal": 2900, "total": 2900, "total_taxes": [],
        "total_discount_amounts": [], "starting_balance": 0, "ending_balance": 0,
        "amount_due": 2900, "amount_paid": 0, "attempt_count": 0,
        "status_transitions": {"finalized_at": start}, "invoice_pdf": None,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/{invoice_id}",
        "description": "Pro plan", "due_date": None,
        "parent": {"type": "subscription_details", "subscription_details": {
            "subscription": "sub_inv",
            "metadata": {"account_id": account, "subscription_key": "pro"}}},
        "lines": {"object": "list", "data": [{
            "id": "il_1", "object": "line_item", "description": "Pro", "amount": 2900,
            "quantity": 1, "period": {"start": start, "end": start + 30 * DAY},
            "parent": {"type": "subscription_item_details"}}]},
    }


def test_invoices_render_with_their_pdfs(shop: Shop, page: Any) -> None:
    gw, _ = shop
    account, key = new_account(gw.url)
    now = int(time.time())
    assert deliver(gw, payload("evt_dash_inv", "invoice.finalized",
                               _invoice("in_dash1", account, now - 60), now)) == "mirrored"
    listed = httpx.get(f"{gw.url}/v1/billing/invoices/{account}", headers=auth(key)).json()
    assert len(listed["invoices"]) == 1
    sign_in(page, gw, key)
    rows = page.get_by_test_id("invoice-row")
    assert rows.count() == 1
    assert "DASH-0001" in rows.first.inner_text() and "29.00 USD" in rows.first.inner_text()
    link = page.get_by_test_id("invoice-pdf").first
    assert link.get_attribute("href") == listed["invoices"][0]["pdf_url"]
    # The PDF is served to the session (same origin, the cookie) as a PDF.
    got = page.evaluate("""async (href) => { const r = await fetch(href);
        const head = new Uint8Array(await r.arrayBuffer()).slice(0, 5);
        return [r.status, r.headers.get('content-type'), String.fromCharCode(...head)]; }""",
                        link.get_attribute("href"))
    assert got == [200, "application/pdf", "%PDF-"]


def test_the_subscription_part_shows_the_stripe_subscription(shop: Shop, page: Any) -> None:
    gw, router = shop
    account, key = new_account(gw.url)
    start = int(time.time()) - DAY
    sub = subscription(account, "pro", start=start, end=start + 30 * DAY)
    router.get(url__regex=rf"{STRIPE_BASE}/v1/subscriptions/sub_m").mock(
        return_value=httpx.Response(200, json=sub))
    assert deliver(gw, payload("evt_dash_co", "checkout.session.completed", {
        "id": "cs_m", "object": "checkout.session", "mode": "subscription",
        "customer": "cus_m", "subscription": "sub_m", "client_reference_id": account,
        "metadata": {"account_id": account, "subscription_key": "pro"}},
        created=start)) == "applied"
    api = httpx.get(f"{gw.url}/v1/billing/subscription/{account}", headers=auth(key))
    assert api.status_code == 200, api.text
    sign_in(page, gw, key)
    assert page.get_by_test_id("subscription").is_visible()
    assert "pro" in page.get_by_test_id("subscription-plan").inner_text()
    assert "active" in page.get_by_test_id("subscription-plan").inner_text()
    assert page.get_by_test_id("subscription-remaining").inner_text().strip() != ""


def test_the_alert_settings_show_the_threshold_in_force_and_save(shop: Shop, page: Any) -> None:
    gw, _ = shop
    account, key = new_account(gw.url, minutes=10)
    sign_in(page, gw, key)
    api = httpx.get(f"{gw.url}/v1/billing/alerts/{account}", headers=auth(key)).json()
    assert page.get_by_test_id("alerts").is_visible()
    assert float(page.input_value("#alert-threshold")) == api["low_balance_threshold"]
    assert page.get_by_test_id("alert-state").get_attribute("data-state") == api["state"]
    page.fill("#alert-threshold", "120")
    page.locator("#alerts-form button[type=submit]").click()
    page.wait_for_selector("#alerts-status:has-text('Saved')")
    after = httpx.get(f"{gw.url}/v1/billing/alerts/{account}", headers=auth(key)).json()
    assert after["low_balance_threshold"] == 120 and after["default"] is False


def _open_in_console(page: Any, gw: RunningGateway, account: str) -> None:
    sign_in(page, gw, ADMIN_TOKEN, "/admin")
    page.fill("#search", account)
    page.locator("#search-form button").click()
    page.locator(f"button[data-account='{account}']").click()
    page.wait_for_selector("#account:not([hidden])")


def test_the_console_creates_a_key_with_limits_and_lists_them(shop: Shop, page: Any) -> None:
    gw, _ = shop
    account, _key = new_account(gw.url)
    _open_in_console(page, gw, account)
    page.get_by_test_id("admin-key-limit-day").fill("600")
    page.get_by_test_id("admin-key-limit-month").fill("6000")
    page.get_by_test_id("admin-key-create").click()
    page.get_by_test_id("admin-new-key").wait_for()
    with _admin() as client:
        keys = client.get(f"{gw.url}/v1/admin/accounts/{account}").json()["api_keys"]
    limited = [k for k in keys if k["limit_day"] is not None]
    assert len(limited) == 1 and (limited[0]["limit_day"], limited[0]["limit_month"]) == (600, 6000)
    row = page.locator(f"[data-testid=admin-key-row][data-key-id='{limited[0]['key_id']}']")
    assert row.get_by_test_id("admin-key-limits").inner_text() == "10 min/day, 1 h 40 min/month"

    page.get_by_test_id("admin-key-limit-day").fill("")  # no daily limit any more
    page.get_by_test_id("admin-key-limit-month").fill("3600")
    row.get_by_test_id("admin-key-set-limits").click()
    row.get_by_test_id("admin-key-limits").filter(has_text="1 h 00 min/month").wait_for()
    assert row.get_by_test_id("admin-key-limits").inner_text() == "1 h 00 min/month"
    with _admin() as client:
        keys = client.get(f"{gw.url}/v1/admin/accounts/{account}").json()["api_keys"]
    changed = next(k for k in keys if k["key_id"] == limited[0]["key_id"])
    assert (changed["limit_day"], changed["limit_month"]) == (None, 3600)


def test_the_console_shows_cost_and_margin_in_a_usd_deployment(usd_shop: Shop, page: Any) -> None:
    gw, _ = usd_shop
    _account, key = _usd_account(gw, "10")
    _calls(gw, key, 2)
    with _admin() as client:
        doc = client.get(f"{gw.url}/v1/admin/costs/summary?period=month").json()
    assert doc["by_model"] and doc["unit"] == "USD"
    sign_in(page, gw, ADMIN_TOKEN, "/admin")
    page.get_by_test_id("admin-costs").wait_for(state="visible")
    rows = page.get_by_test_id("admin-cost-row")
    assert rows.count() == len(doc["by_model"])
    assert doc["by_model"][0]["model"] in rows.first.inner_text()
    assert "USD" in rows.first.inner_text()
    assert "margin" in page.get_by_test_id("admin-costs-total").inner_text()


def test_the_console_charts_cost_and_margin_by_day_as_the_api_reports(
        priced_usd_shop: Shop, page: Any) -> None:
    gw, _ = priced_usd_shop
    _account, key = _usd_account(gw, "10")
    _calls(gw, key, 2, model="gpt-4o-mini")  # priced by genai-prices' data
    with _admin() as client:
        doc = client.get(f"{gw.url}/v1/admin/costs/daily?period=month").json()
    assert doc["unit"] == "USD" and doc["days"]
    today = doc["days"][-1]
    assert today["calls"] >= 2 and today["provider_cost_usd"] > 0
    assert today["margin_usd"] == pytest.approx(today["charged_usd"] - today["provider_cost_usd"])
    sign_in(page, gw, ADMIN_TOKEN, "/admin")
    chart = page.get_by_test_id("cost-chart")
    chart.locator("canvas").wait_for()
    assert chart.get_attribute("data-points") == str(len(doc["days"]))
    assert float(chart.get_attribute("data-last") or "nan") == today["provider_cost_usd"]
    assert "Margin (USD)" in chart.inner_text()


def test_the_console_lists_outgoing_webhook_deliveries(shop: Shop, page: Any) -> None:
    gw, _ = shop
    account, _key = new_account(gw.url)
    with _admin() as client:
        made = client.post(f"{gw.url}/v1/admin/webhook-endpoints", json={
            "url": "https://hooks.example/gateway", "event_types": ["credit.applied"],
            "description": "ops"})
        assert made.status_code == 201, made.text
        r = client.post(f"{gw.url}/v1/admin/accounts/{account}/grants",
                        json={"minutes": 5, "idempotency_key": f"hook-{account}"})
        assert r.status_code == 201
        deliveries = client.get(f"{gw.url}/v1/admin/webhook-endpoints/{made.json()['id']}"
                                "/deliveries").json()["deliveries"]
    assert deliveries and deliveries[0]["event_type"] == "credit.applied"
    sign_in(page, gw, ADMIN_TOKEN, "/admin")
    page.get_by_test_id("admin-webhooks").wait_for(state="visible")
    assert "https://hooks.example/gateway" in page.get_by_test_id("hook-endpoint").inner_text()
    rows = page.get_by_test_id("hook-delivery")
    assert rows.count() == len(deliveries)
    assert "credit.applied" in rows.first.inner_text()


def test_a_usd_grant_made_elsewhere_appears_live_in_usd(usd_shop: Shop, page: Any) -> None:
    gw, _ = usd_shop
    account, key = _usd_account(gw, "3")
    sign_in(page, gw, key)
    page.wait_for_selector("#live-status.ok")  # the stream is open
    page.evaluate("window.__same_document = true")
    before = float(page.get_by_test_id("balance-total").get_attribute("data-value"))
    with _admin() as client:
        r = client.post(f"{gw.url}/v1/admin/accounts/{account}/grants",
                        json={"amount": "1.25", "idempotency_key": f"live-{account}"})
    assert r.status_code == 201, r.text
    expected = round(before + 1.25, 6)
    # The stream's totals are seconds; a currency page refetches the balance document instead.
    page.wait_for_function(
        "(v) => Math.abs(Number(document.querySelector('[data-testid=balance-total]')"
        ".dataset.value) - v) < 1e-9", arg=expected, timeout=2_000)
    api = httpx.get(f"{gw.url}/v1/billing/balance/{account}", headers=auth(key)).json()
    assert api["totals"]["total"] == pytest.approx(expected)
    assert page.evaluate("window.__same_document") is True  # no reload happened
