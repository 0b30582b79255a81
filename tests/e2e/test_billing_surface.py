"""Issue 11 items 1–3 end to end: Stripe config, feature flags and gateway info; the billing
kill-switch; the seed's billing account; credit purchases; saved cards (the Stripe customer
created once, also under 50 concurrent first calls); the customer portal. Stripe is the respx
double: every call is asserted (path, parameters, idempotency key); webhooks are signed with
stripe-python's helper and delivered twice."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from gateway.hmac_auth import header_for
from policies.compiled import Policy
from policies.units import UnitKind, UnitOfAccount
from tests.e2e.billing_surface_support import (
    BILLING_POLICY,
    card,
    deliver,
    key_of,
    mock_customer,
    payload,
    sent,
    stripe_calls,
)
from tests.e2e.helpers import auth, chat_body
from tests.e2e.stripe_support import STRIPE_BASE, _event, _mock_checkout, stripe_gateway
from tests.support import TEST_POLICY, RunningGateway
from tests.unit.test_issue11_paths import ISSUE_PATHS

HMAC_SECRET = "g" * 40
ENV = {"STRIPE_PUBLISHABLE_KEY": "pk_test_abc", "GATEWAY_HMAC_KEYS": f"k1:{HMAC_SECRET}",
       "GATEWAY_POLICY_PATH": f"{TEST_POLICY},{BILLING_POLICY}",
       "GATEWAY_PORTAL_RETURN_URL": "https://app.example/settings/billing"}
Shop = tuple[RunningGateway, respx.MockRouter]


@pytest.fixture
def surface(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[Shop]:
    with stripe_gateway(tmp_path, upstream_env, ENV) as shop:
        yield shop


def _in_usd(policy: Policy) -> Policy:
    # The YAML `unit:` key arrives with issue 10 (h10a); until then the unit is set here.
    return dataclasses.replace(policy, unit=UnitOfAccount(UnitKind.CURRENCY, "USD"))


@pytest.fixture
def usd_shop(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[Shop]:
    with stripe_gateway(tmp_path, upstream_env, ENV, policy_transform=_in_usd) as shop:
        yield shop


def test_config_features_and_info_describe_this_gateway(surface: Shop) -> None:
    gw, _router = surface
    config = httpx.get(gw.url + "/v1/billing/config")
    assert config.status_code == 200
    assert config.json() == {"publishable_key": "pk_test_abc", "is_configured": True}
    features = httpx.get(gw.url + "/v1/meta/features").json()["features"]
    assert features == {"billing": True, "payments": True, "subscriptions": True,
                        "auto_topup": True, "credit_purchase": False, "stream": True,
                        "webhooks": True, "stripe_webhooks": True}
    info = httpx.get(gw.url + "/v1/meta/info").json()
    assert info["catalog_version"] == "2025-09-01" and info["version"]
    assert info["unit"] == {"name": "s", "kind": "time", "currency": None}


def test_a_currency_deployment_says_so_in_info_and_features(usd_shop: Shop) -> None:
    gw, _router = usd_shop
    assert httpx.get(gw.url + "/v1/meta/info").json()["unit"] == {
        "name": "USD", "kind": "currency", "currency": "USD"}
    assert httpx.get(gw.url + "/v1/meta/features").json()["features"]["credit_purchase"]


def test_billing_disabled_answers_503_but_the_webhook_and_the_proxy_keep_working(
        tmp_path: Path, upstream_env: dict[str, str]) -> None:
    with stripe_gateway(tmp_path, upstream_env, {**ENV, "GATEWAY_BILLING_ENABLED": "false"}) \
            as (gw, router):
        account, key = gw.ledger.funded(600_000)
        for method, path in (("GET", "/v1/billing/config"), ("GET", "/v1/billing/catalog"),
                             ("GET", f"/v1/billing/balance/{account}"),
                             ("GET", f"/v1/billing/account/{account}"),
                             ("POST", "/v1/billing/packages/purchase"),
                             ("GET", f"/v1/billing/payment-methods/{account}"),
                             ("POST", f"/v1/billing/subscription/{account}/cancel"),
                             ("GET", "/v1/billing/anything/at/all"),
                             *((m, p.replace("{userId}", account).replace("{month}", "2026-01")
                                .replace("{", "x").replace("}", ""))
                               for m, p in ISSUE_PATHS if p.startswith("/v1/billing/"))):
            r = httpx.request(method, gw.url + path, headers=auth(key), json={})
            assert r.status_code == 503, (method, path, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["type"].endswith("/problems/billing-disabled")
        assert httpx.get(gw.url + "/v1/meta/features").json()["features"]["billing"] is False
        # The proxy keeps metering and enforcing balances.
        call = httpx.post(gw.url + "/v1/chat/completions", headers=auth(key),
                          json=chat_body("still metered"))
        assert call.status_code == 200 and int(call.headers["x-gateway-charged-ms"]) > 0
        _broke, broke_key = gw.ledger.funded(0)
        assert httpx.post(gw.url + "/v1/chat/completions", headers=auth(broke_key),
                          json=chat_body("no credit")).status_code == 402
        # Payments already made keep settling: the webhook still credits.
        gw.ledger._run(lambda lg: _record_purchase(lg, account))
        assert deliver(gw, _event("evt_off_1", "cs_off")) == "credited"
        assert deliver(gw, _event("evt_off_1", "cs_off")) == "duplicate"
        assert not stripe_calls(router)


async def _record_purchase(ledger: Any, account: str) -> None:
    from storage.ports import Purchase
    from storage.sql.payments import SqlPayments

    await SqlPayments(ledger).record_purchase(Purchase("cs_off", account, "mini", 60, "USD",
                                                       500, None))


def test_the_billing_account_is_the_seeds_document_of_this_account(surface: Shop) -> None:
    gw, router = surface
    account, key = gw.ledger.funded(90_500)
    other, _ = gw.ledger.funded(0)
    doc = httpx.get(f"{gw.url}/v1/billing/account/{account}", headers=auth(key))
    assert doc.status_code == 200 and doc.headers["cache-control"] == "no-store"
    body = doc.json()
    assert body["id"] == body["organization_id"] == account
    assert (body["stripe_customer_id"], body["has_payment_method"], body["status"],
            body["credit_balance"], body["unit"], body["auto_billing_enabled"],
            body["billing_email"], body["tax_exempt"], body["total_workflows_completed"],
            body["total_amount_spent"]) == (None, False, "active", 90.5, "s", False, None,
                                            False, 0, 0)
    assert body["created_at"].endswith("Z") and body["updated_at"].endswith("Z")
    assert not stripe_calls(router)  # no customer yet: Stripe is not asked
    charged = int(httpx.post(gw.url + "/v1/chat/completions", headers=auth(key),
                             json=chat_body("count me")).headers["x-gateway-charged-ms"])
    body = httpx.get(f"{gw.url}/v1/billing/account/{account}", headers=auth(key)).json()
    assert body["total_workflows_completed"] == 1
    assert body["total_amount_spent"] == charged / 1000
    assert body["credit_balance"] == (90_500 - charged) / 1000
    assert httpx.get(f"{gw.url}/v1/billing/account/{other}",
                     headers=auth(key)).status_code == 404


def test_cards_attach_default_list_and_detach_on_one_customer(surface: Shop) -> None:
    gw, router = surface
    account, key = gw.ledger.funded(0)
    base = f"{gw.url}/v1/billing/payment-methods/{account}"
    assert httpx.get(base, headers=auth(key)).json() == []  # no customer: nothing asked
    assert not stripe_calls(router)
    customers = mock_customer(router, "cus_cards")
    attach = router.post(url__regex=rf"{STRIPE_BASE}/v1/payment_methods/pm_\w+/attach$").mock(
        side_effect=lambda req: httpx.Response(200, json=card(req.url.path.split("/")[3],
                                                              "cus_cards")))
    update = router.post(f"{STRIPE_BASE}/v1/customers/cus_cards").mock(
        return_value=httpx.Response(200, json={"id": "cus_cards", "object": "customer"}))
    first = httpx.post(base, headers=auth(key), json={"payment_method_id": "pm_one"})
    assert first.status_code == 200, first.text
    assert first.json() == {"id": "pm_one", "type": "card", "card_brand": "visa",
                            "card_last4": "4242", "exp_month": 12, "exp_year": 2030,
                            "is_default": True}  # the first card becomes the default
    assert customers.call_count == 1 and key_of(customers) == f"gw_customer:{account}"
    assert sent(customers)["metadata[account_id]"] == [account]
    assert sent(attach) == {"customer": ["cus_cards"]}
    assert key_of(attach) == "gw_pm_attach:cus_cards:pm_one"
    assert sent(update) == {"invoice_settings[default_payment_method]": ["pm_one"]}
    assert key_of(update).startswith(f"gw_pm_default:{account}:")
    second = httpx.post(base, headers=auth(key), json={"payment_method_id": "pm_two"})
    assert second.json()["is_default"] is False and update.call_count == 1
    assert customers.call_count == 1  # linked once
    router.get(f"{STRIPE_BASE}/v1/customers/cus_cards").mock(return_value=httpx.Response(
        200, json={"id": "cus_cards", "object": "customer",
                   "invoice_settings": {"default_payment_method": "pm_one"}}))
    listed = router.get(f"{STRIPE_BASE}/v1/customers/cus_cards/payment_methods").mock(
        return_value=httpx.Response(200, json={
            "object": "list", "has_more": False, "url": "/v1/customers/cus_cards/payment_methods",
            "data": [card("pm_two", "cus_cards", "mastercard", "4444"),
                     card("pm_one", "cus_cards")]}))
    cards = httpx.get(base, headers=auth(key)).json()
    assert [(c["id"], c["card_brand"], c["is_default"]) for c in cards] == [
        ("pm_one", "visa", True), ("pm_two", "mastercard", False)]
    assert dict(listed.calls.last.request.url.params) == {"type": "card", "limit": "100"}
    router.get(url__regex=rf"{STRIPE_BASE}/v1/payment_methods/pm_\w+$").mock(
        side_effect=lambda req: httpx.Response(
            200, json=card(req.url.path.split("/")[3],
                           "cus_cards" if "stranger" not in req.url.path else "cus_other")))
    made = httpx.post(f"{base}/pm_two/default", headers=auth(key))
    assert made.status_code == 200 and made.json()["is_default"] is True
    assert sent(update) == {"invoice_settings[default_payment_method]": ["pm_two"]}
    assert httpx.post(f"{base}/pm_stranger/default", headers=auth(key)).status_code == 404
    assert httpx.post(f"{base}/not-a-card/default", headers=auth(key)).status_code == 400
    detach = router.post(url__regex=rf"{STRIPE_BASE}/v1/payment_methods/pm_\w+/detach$").mock(
        side_effect=lambda req: httpx.Response(200, json=card(req.url.path.split("/")[3], None)))
    gone = httpx.delete(f"{base}/pm_two", headers=auth(key))
    assert gone.status_code == 204 and key_of(detach) == "gw_pm_detach:pm_two"
    assert gw.ledger._run(lambda lg: lg.account_row(account))[
        "default_payment_method_id"] is None  # the detached default is no default any more
    assert httpx.delete(f"{base}/pm_stranger", headers=auth(key)).status_code == 404
    assert detach.call_count == 1


def test_stripe_refusing_a_card_is_a_problem_not_a_half_attached_card(surface: Shop) -> None:
    gw, router = surface
    account, key = gw.ledger.funded(0)
    mock_customer(router, "cus_refuse")
    router.post(f"{STRIPE_BASE}/v1/payment_methods/pm_taken/attach").mock(
        return_value=httpx.Response(400, json={"error": {
            "type": "invalid_request_error", "code": "resource_already_exists",
            "message": "The payment method is attached to another customer."}}))
    router.post(f"{STRIPE_BASE}/v1/payment_methods/pm_broken/attach").mock(
        return_value=httpx.Response(500, json={"error": {"type": "api_error",
                                                         "message": "boom"}}))
    r = httpx.post(f"{gw.url}/v1/billing/payment-methods/{account}", headers=auth(key),
                   json={"payment_method_id": "pm_taken", "set_as_default": True})
    assert r.status_code == 400 and "another customer" in r.json()["detail"]
    r = httpx.post(f"{gw.url}/v1/billing/payment-methods/{account}", headers=auth(key),
                   json={"payment_method_id": "pm_broken"})
    assert r.status_code == 502 and r.json()["type"].endswith("/payment-provider-error")
    assert gw.ledger._run(lambda lg: lg.account_row(account))[
        "default_payment_method_id"] is None


def test_fifty_concurrent_first_calls_create_one_customer(surface: Shop) -> None:
    gw, router = surface
    account, key = gw.ledger.funded(0)
    created = asyncio.Event()

    async def slow_customer(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)  # widen the race: callers arrive while the create is out
        created.set()
        return httpx.Response(200, json={"id": "cus_once", "object": "customer"})

    customers = router.post(f"{STRIPE_BASE}/v1/customers").mock(side_effect=slow_customer)
    intents = router.post(f"{STRIPE_BASE}/v1/setup_intents").mock(
        side_effect=lambda req: httpx.Response(200, json={
            "id": f"seti_{len(intents.calls)}", "object": "setup_intent",
            "client_secret": f"seti_{len(intents.calls)}_secret_x"}))

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(
                client.post(f"{gw.url}/v1/billing/payment-methods/{account}/setup-intent",
                            headers=auth(key)) for _ in range(50)))

    answers = asyncio.run(burst())
    assert [r.status_code for r in answers] == [200] * 50
    assert {r.json()["customer_id"] for r in answers} == {"cus_once"}
    assert customers.call_count == 1 and key_of(customers) == f"gw_customer:{account}"
    assert intents.call_count == 50
    assert len({key_of(intents, i) for i in range(50)}) == 50  # one key per request
    assert sent(intents, 0) == {"customer": ["cus_once"], "usage": ["off_session"],
                                "payment_method_types[0]": ["card"],
                                "metadata[account_id]": [account]}
    doc = answers[0].json()
    assert doc["publishable_key"] == "pk_test_abc" and doc["client_secret"].startswith("seti_")
    assert gw.ledger._run(lambda lg: lg.account_row(account))["stripe_customer_id"] == \
        "cus_once"


def test_the_portal_opens_on_the_accounts_customer_and_returns_to_the_setting(
        surface: Shop) -> None:
    gw, router = surface
    account, key = gw.ledger.funded(0)
    customers = mock_customer(router, "cus_portal")
    portal = router.post(f"{STRIPE_BASE}/v1/billing_portal/sessions").mock(
        return_value=httpx.Response(200, json={
            "id": "bps_1", "object": "billing_portal.session",
            "url": "https://billing.stripe.com/p/session/bps_1"}))
    for _ in range(2):
        r = httpx.post(f"{gw.url}/v1/billing/portal/{account}", headers=auth(key))
        assert r.status_code == 200, r.text
        assert r.json() == {"portal_url": "https://billing.stripe.com/p/session/bps_1"}
    assert customers.call_count == 1 and portal.call_count == 2
    assert sent(portal) == {"customer": ["cus_portal"],
                            "return_url": ["https://app.example/settings/billing"]}
    assert key_of(portal, 0) != key_of(portal, 1)
    assert key_of(portal).startswith(f"gw_portal:{account}:")


def test_a_credit_purchase_in_a_currency_deployment_credits_the_amount_once(
        usd_shop: Shop) -> None:
    gw, router = usd_shop
    account, key = gw.ledger.funded(0)
    route = _mock_checkout(router, "cs_credit")
    r = httpx.post(gw.url + "/v1/billing/credits/checkout", headers=auth(key),
                   json={"amount": 12.34, "currency": "usd"})
    assert r.status_code == 200, r.text
    assert r.json() == {"checkout_url": "https://checkout.stripe.com/c/pay/cs_credit",
                        "session_id": "cs_credit", "currency": "USD", "amount": 12.34,
                        "unit_amount_cents": 1234, "display_price_text": "$12.34"}
    form = sent(route)
    assert (form["mode"], form["line_items[0][price_data][unit_amount]"],
            form["line_items[0][price_data][currency]"], form["metadata[account_id]"],
            form["metadata[package_key]"]) == (["payment"], ["1234"], ["usd"], [account],
                                               ["credit"])
    done = json.loads(_event("evt_credit", "cs_credit"))
    body = json.dumps(done).encode()
    assert deliver(gw, body) == "credited"
    assert deliver(gw, body) == "duplicate"
    assert gw.ledger.balance(account).spendable == 12_340_000  # micro-USD
    doc = httpx.get(f"{gw.url}/v1/billing/account/{account}", headers=auth(key)).json()
    assert (doc["credit_balance"], doc["unit"]) == (12.34, "USD")


def test_credit_purchases_need_a_currency_unit_and_stay_within_the_policys_bounds(
        usd_shop: Shop, surface: Shop) -> None:
    gw, router = usd_shop
    _account, key = gw.ledger.funded(0)
    for body in ({"amount": 4.99, "currency": "USD"}, {"amount": 500.01, "currency": "USD"},
                 {"amount": 10, "currency": "EUR"}, {"amount": 1.001, "currency": "USD"},
                 {"amount": -5, "currency": "USD"}, {"amount": "NaN", "currency": "USD"}):
        r = httpx.post(gw.url + "/v1/billing/credits/checkout", headers=auth(key), json=body)
        assert r.status_code == 400, (body, r.text)
    time_gw, _ = surface
    _acct, time_key = time_gw.ledger.funded(0)
    r = httpx.post(time_gw.url + "/v1/billing/credits/checkout", headers=auth(time_key),
                   json={"amount": 10, "currency": "USD"})
    assert r.status_code == 400 and "currency unit" in r.json()["detail"]
    assert not stripe_calls(router)


def test_auto_topup_without_a_card_of_its_own_charges_the_default_card(surface: Shop) -> None:
    gw, router = surface
    account, key = gw.ledger.funded(5 * 60_000)
    no_card = httpx.put(f"{gw.url}/v1/billing/auto-topup/{account}", headers=auth(key),
                        json={"enabled": True, "threshold_minutes": 10, "package_key": "mini"})
    assert no_card.status_code == 400
    mock_customer(router, "cus_auto")
    router.post(f"{STRIPE_BASE}/v1/payment_methods/pm_auto/attach").mock(
        return_value=httpx.Response(200, json=card("pm_auto", "cus_auto")))
    router.post(f"{STRIPE_BASE}/v1/customers/cus_auto").mock(
        return_value=httpx.Response(200, json={"id": "cus_auto", "object": "customer"}))
    intents = router.post(f"{STRIPE_BASE}/v1/payment_intents").mock(
        return_value=httpx.Response(200, json={"id": "pi_auto_d", "object": "payment_intent",
                                               "status": "succeeded"}))
    assert httpx.post(f"{gw.url}/v1/billing/payment-methods/{account}", headers=auth(key),
                      json={"payment_method_id": "pm_auto"}).status_code == 200
    r = httpx.put(f"{gw.url}/v1/billing/auto-topup/{account}", headers=auth(key),
                  json={"enabled": True, "threshold_minutes": 10, "package_key": "mini"})
    assert r.status_code == 200, r.text
    assert r.json()["payment_method_id"] is None  # the settings name none: the default
    _wait(lambda: intents.called)
    form = sent(intents)
    assert form["payment_method"] == ["pm_auto"] and form["customer"] == ["cus_auto"]
    assert key_of(intents) == f"gw_auto_topup:{account}:1"
    router.get(f"{STRIPE_BASE}/v1/customers/cus_auto").mock(return_value=httpx.Response(
        200, json={"id": "cus_auto", "object": "customer", "email": "a@example.com",
                   "tax_exempt": "exempt"}))
    account_doc = httpx.get(f"{gw.url}/v1/billing/account/{account}", headers=auth(key)).json()
    assert (account_doc["billing_email"], account_doc["tax_exempt"],
            account_doc["stripe_customer_id"]) == ("a@example.com", True, "cus_auto")
    assert account_doc["has_payment_method"] and account_doc["auto_billing_enabled"]


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _signed(method: str, path: str, body: bytes = b"") -> dict[str, str]:
    return {"x-hmac-signature": header_for("k1", HMAC_SECRET, method, path, "", body,
                                           secrets.token_urlsafe(16))}


def test_a_product_backend_signs_for_any_account_and_strangers_are_refused(
        surface: Shop) -> None:
    gw, router = surface
    account, _key = gw.ledger.funded(1_000)
    _other, other_key = gw.ledger.funded(0)
    path = f"/v1/billing/account/{account}"
    signed = httpx.get(gw.url + path, headers=_signed("GET", path))
    assert signed.status_code == 200 and signed.json()["id"] == account
    assert httpx.get(gw.url + path).status_code == 401
    assert httpx.get(gw.url + path, headers=auth(other_key)).status_code == 404
    mock_customer(router, "cus_signed")
    router.post(f"{STRIPE_BASE}/v1/billing_portal/sessions").mock(return_value=httpx.Response(
        200, json={"id": "bps_s", "object": "billing_portal.session",
                   "url": "https://billing.stripe.com/p/session/bps_s"}))
    portal = f"/v1/billing/portal/{account}"
    r = httpx.post(gw.url + portal, headers=_signed("POST", portal))
    assert r.status_code == 200 and r.json()["portal_url"].endswith("bps_s")
    sub = f"/v1/billing/subscription/{account}"
    assert httpx.get(gw.url + sub, headers=_signed("GET", sub)).json()["status"] == "none"


def test_checkout_pays_with_the_linked_customer_and_a_webhook_never_relinks_it(
        surface: Shop) -> None:
    """An account with a Stripe customer (made for its portal) buys on that customer, for a
    package and a subscription alike (`customer=` sent to Checkout, so Stripe creates no second
    customer); a checkout.session.completed naming another customer keeps the first link."""
    gw, router = surface
    account, key = gw.ledger.funded(0)
    fresh = _mock_checkout(router, "cs_nolink")
    r = httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(key),
                   json={"package_key": "mini"})
    assert r.status_code == 200, r.text
    assert "customer" not in sent(fresh)  # no customer yet: none is invented
    customers = mock_customer(router, "cus_first")
    portal = router.post(f"{STRIPE_BASE}/v1/billing_portal/sessions").mock(
        return_value=httpx.Response(200, json={"id": "bps_1", "object": "billing_portal.session",
                                               "url": "https://billing.stripe.com/p/bps_1"}))
    assert httpx.post(f"{gw.url}/v1/billing/portal/{account}", headers=auth(key)).status_code \
        == 200
    checkout = _mock_checkout(router, "cs_linked")
    bought = httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(key),
                        json={"package_key": "mini"})
    assert bought.status_code == 200, bought.text
    assert sent(checkout)["customer"] == ["cus_first"]
    sub = httpx.post(gw.url + "/v1/billing/subscriptions/checkout", headers=auth(key),
                     json={"subscription_key": "pro"})
    assert sub.status_code == 200, sub.text
    assert sent(checkout)["customer"] == ["cus_first"] and sent(checkout)["mode"] == [
        "subscription"]
    completed = payload("evt_relink", "checkout.session.completed", {
        "id": "cs_linked_sub", "object": "checkout.session", "mode": "subscription",
        "customer": "cus_second", "subscription": "sub_relink", "client_reference_id": account,
        "metadata": {"account_id": account, "subscription_key": "pro"}})
    assert deliver(gw, completed) == "applied"
    assert deliver(gw, completed) == "duplicate"
    assert httpx.post(f"{gw.url}/v1/billing/portal/{account}", headers=auth(key)).status_code \
        == 200
    assert sent(portal)["customer"] == ["cus_first"] and customers.call_count == 1
