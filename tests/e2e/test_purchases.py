"""Package purchase through Stripe Checkout (Stripe's API mocked with respx) and the webhook that
credits it exactly once (signed with stripe-python's own helper) — the loop a 402 starts."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.helpers import auth, chat_body
from tests.e2e.stripe_support import _deliver, _event, _mock_checkout


def test_purchase_creates_a_checkout_session_with_account_and_operation(shop):
    gw, router = shop
    account, key = gw.ledger.funded(0)
    route = _mock_checkout(router, "cs_test_a")
    r = httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(key),
                   json={"package_key": "mini", "currency": "USD",
                         "operation_id": "urn:op:req_abc123"})
    assert r.status_code == 200, r.text
    assert r.json() == {"checkout_url": "https://checkout.stripe.com/c/pay/cs_test_a",
                        "session_id": "cs_test_a", "currency": "USD", "unit_amount_cents": 500,
                        "price": 5.0, "display_price": 5.0, "display_price_text": "$5.00",
                        "package_minutes": 60, "currency_fallback_from": None}
    from urllib.parse import parse_qs

    sent = parse_qs(route.calls.last.request.content.decode())
    assert sent["metadata[account_id]"] == [account]
    assert sent["metadata[operation_id]"] == ["req_abc123"]
    assert sent["client_reference_id"] == [account]
    assert sent["line_items[0][price_data][unit_amount]"] == ["500"]
    assert sent["line_items[0][price_data][currency]"] == ["usd"]


def test_a_package_is_sold_in_the_currency_the_catalog_shows(shop):
    # `mini` has a EUR price, but `max` and `pro` do not, so the catalog is in USD for EUR
    # (every card "Charged in USD"): checkout charges what the buyer was shown.
    gw, router = shop
    _, key = gw.ledger.funded(0)
    route = _mock_checkout(router, "cs_test_eur")
    catalog = httpx.get(gw.url + "/v1/billing/catalog?currency=EUR").json()
    shown = next(p for p in catalog["packages"] if p["key"] == "mini")
    doc = httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(key),
                     json={"package_key": "mini", "currency": "EUR"}).json()
    assert (doc["currency"], doc["unit_amount_cents"], doc["display_price"]) == (
        shown["currency"], shown["unit_amount_cents"], shown["display_price"]) == ("USD", 500, 5.0)
    assert doc["currency_fallback_from"] == catalog["currency_fallback_from"] == "EUR"
    from urllib.parse import parse_qs

    sent = parse_qs(route.calls.last.request.content.decode())
    assert sent["line_items[0][price_data][currency]"] == ["usd"]


def test_a_package_without_a_price_in_the_currency_is_sold_in_usd(shop):
    gw, router = shop
    _, key = gw.ledger.funded(0)
    _mock_checkout(router, "cs_test_b")
    doc = httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(key),
                     json={"package_key": "max", "currency": "GBP"}).json()
    assert doc["currency"] == "USD" and doc["currency_fallback_from"] == "GBP"
    assert doc["unit_amount_cents"] == 6900


def test_bad_purchase_requests_are_problems_and_create_nothing(shop):
    gw, router = shop
    _, key = gw.ledger.funded(0)
    route = _mock_checkout(router, "cs_never")
    for body in ({"package_key": "nope"}, {"package_key": "mini", "currency": "XYZ"},
                 {"currency": "USD"}, {"package_key": "mini", "operation_id": "bad id"}):
        r = httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(key), json=body)
        assert r.status_code == 400, body
        assert r.headers["content-type"] == "application/problem+json"
    assert not route.called


def test_the_webhook_credits_the_package_once_even_when_redelivered(shop):
    gw, router = shop
    account, key = gw.ledger.funded(0)
    _mock_checkout(router, "cs_test_c")
    httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(key),
               json={"package_key": "mini"})
    payload = _event("evt_1", "cs_test_c")
    first = _deliver(gw, payload)
    assert first.status_code == 200 and first.json()["outcome"] == "credited"
    assert _deliver(gw, payload).json()["outcome"] == "duplicate"
    assert _deliver(gw, _event("evt_2", "cs_test_c")).json()["outcome"] == "duplicate"
    snap = gw.ledger.balance(account)
    assert [(b.source, b.remaining) for b in snap.buckets] == [("package", 3_600_000)]
    expires_in_days = (snap.buckets[0].expires_at_ms - snap.now_ms) / 86_400_000
    assert 89.9 < expires_in_days <= 90


def test_a_bad_signature_is_rejected_and_applies_nothing(shop):
    gw, router = shop
    account, key = gw.ledger.funded(0)
    _mock_checkout(router, "cs_test_d")
    httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(key),
               json={"package_key": "mini"})
    r = _deliver(gw, _event("evt_3", "cs_test_d"), secret="whsec_wrong")
    assert r.status_code == 400 and r.json()["type"].endswith("/problems/bad-webhook-signature")
    assert gw.ledger.balance(account).buckets == []
    unpaid = _deliver(gw, _event("evt_4", "cs_test_d", paid=False))
    assert unpaid.json()["outcome"] == "awaiting_payment"
    assert gw.ledger.balance(account).buckets == []


def test_402_then_purchase_then_webhook_then_the_resumed_retry_succeeds(shop):
    gw, router = shop
    account, key = gw.ledger.funded(0)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    body = chat_body("the blocked operation", max_tokens=50)
    with pytest.raises(openai.APIStatusError) as blocked:
        client.chat.completions.create(**body)
    problem = blocked.value.response.json()
    assert blocked.value.status_code == 402
    _mock_checkout(router, "cs_test_loop")
    bought = httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(key),
                        json={"package_key": problem["suggestions"][0]["key"],
                              "operation_id": problem["instance"]})
    assert bought.status_code == 200
    assert _deliver(gw, _event("evt_loop", "cs_test_loop")).json()["outcome"] == "credited"
    raw = client.chat.completions.with_raw_response.create(
        **body, extra_headers={"X-Resume-Token": problem["resume_token"]})
    assert raw.status_code == 200
    assert raw.headers["x-resume-token-status"] == "consumed"
    [entry] = [e for e in gw.ledger.balance(account).buckets if e.source == "package"]
    assert entry.amount == 3_600_000
