"""Billing read API: the public catalog (currencies, fallback, ETag) and the own-account balance."""

from __future__ import annotations

import httpx

from tests.e2e.helpers import auth


def test_catalog_in_usd_lists_packages_and_subscriptions_with_integer_prices(gateway):
    r = httpx.get(gateway.url + "/v1/billing/catalog?currency=USD")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "public, max-age=300"
    doc = r.json()
    assert doc["version"] == "2025-09-01" and doc["currency"] == "USD"
    assert doc["rollover_policy"] == {"days": 90}
    mini = next(p for p in doc["packages"] if p["key"] == "mini")
    assert mini == {"key": "mini", "name": "Mini", "minutes": 60, "taxInclusive": False,
                    "currency": "USD", "unit_amount_cents": 500, "price": 5.0,
                    "display_price": "$5.00"}
    pro = doc["subscriptions"][0]
    assert pro["key"] == "pro" and pro["minutes"] == 1200 and pro["rolloverCap"] == 600
    assert "currency_fallback_from" not in doc


def test_an_item_without_a_price_in_the_currency_falls_back_to_usd(gateway):
    doc = httpx.get(gateway.url + "/v1/billing/catalog?currency=EUR").json()
    mini = next(p for p in doc["packages"] if p["key"] == "mini")
    big = next(p for p in doc["packages"] if p["key"] == "max")
    assert mini["currency"] == "EUR" and mini["display_price"] == "€5.00"
    assert big["currency"] == "USD" and big["currency_fallback_from"] == "EUR"


def test_an_unknown_currency_is_a_400_problem(gateway):
    r = httpx.get(gateway.url + "/v1/billing/catalog?currency=XYZ")
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert "XYZ" in r.json()["detail"]


def test_catalog_etag_is_per_currency_and_revalidates_to_304(gateway):
    usd = httpx.get(gateway.url + "/v1/billing/catalog?currency=USD")
    gbp = httpx.get(gateway.url + "/v1/billing/catalog?currency=GBP")
    assert usd.headers["etag"] != gbp.headers["etag"]
    again = httpx.get(gateway.url + "/v1/billing/catalog?currency=USD",
                      headers={"if-none-match": usd.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == usd.headers["etag"]


def test_balance_is_the_enhanced_balance_of_the_own_account(gateway):
    account, key = gateway.ledger.funded(90_000)
    r = httpx.get(f"{gateway.url}/v1/billing/balance/{account}", headers=auth(key))
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    doc = r.json()
    assert doc["plan_key"] == "payg" and doc["catalog_version"] == "2025-09-01"
    assert doc["totals"]["total_seconds"] == 90 and doc["totals"]["paid_seconds"] == 90
    assert doc["buckets"]["paid"] == [{"seconds": 90, "expires_at": None, "source": "gift"}]
    assert set(doc["bonus"]) == {"daily_minutes", "used_this_month_minutes",
                                 "monthly_cap_minutes"}


def test_another_accounts_balance_is_a_404_and_no_key_a_401(gateway):
    mine, key = gateway.ledger.funded(1_000)
    other, _ = gateway.ledger.funded(1_000)
    r = httpx.get(f"{gateway.url}/v1/billing/balance/{other}", headers=auth(key))
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert httpx.get(f"{gateway.url}/v1/billing/balance/{mine}").status_code == 401
