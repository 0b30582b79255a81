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
                    "display_price": 5.0, "display_price_text": "$5.00"}
    pro = doc["subscriptions"][0]
    assert pro["key"] == "pro" and pro["minutes"] == 1200 and pro["rolloverCap"] == 600
    assert "currency_fallback_from" not in doc


def test_a_currency_some_item_has_no_price_in_serves_the_whole_catalog_in_usd(gateway):
    # `mini` has a EUR price, `max` and `pro` do not: the guide shows one notice from the
    # top-level field and labels every card "Charged in USD", so every item is in USD.
    r = httpx.get(gateway.url + "/v1/billing/catalog?currency=EUR")
    doc = r.json()
    assert doc["currency"] == "USD" and doc["currency_fallback_from"] == "EUR"
    items = doc["packages"] + doc["subscriptions"]
    assert {i["currency"] for i in items} == {"USD"}
    assert not any("currency_fallback_from" in i for i in items)
    mini = next(p for p in doc["packages"] if p["key"] == "mini")
    assert (mini["unit_amount_cents"], mini["display_price_text"]) == (500, "$5.00")
    usd = httpx.get(gateway.url + "/v1/billing/catalog?currency=USD")
    assert r.headers["etag"] != usd.headers["etag"]  # one ETag per resulting document
    again = httpx.get(gateway.url + "/v1/billing/catalog?currency=EUR",
                      headers={"if-none-match": r.headers["etag"]})
    assert again.status_code == 304


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
    [gift] = doc["buckets"]["paid"]
    assert gift == {"id": gift["id"], "source": "gift", "type": "paid", "seconds": 90,
                    "expires_at": None, "priority": 1, "status": "active"}
    assert set(doc["bonus"]) == {"daily_minutes", "used_this_month_minutes",
                                 "monthly_cap_minutes"}


def test_the_decided_enhanced_balance_path_serves_the_same_document(gateway):
    # Seed 000 decides `/v1/billing/enhanced-balance/{userId}`; the guide calls /balance.
    account, key = gateway.ledger.funded(90_000)
    other, _ = gateway.ledger.funded(1_000)
    enhanced = httpx.get(f"{gateway.url}/v1/billing/enhanced-balance/{account}",
                         headers=auth(key))
    assert enhanced.status_code == 200 and enhanced.headers["cache-control"] == "no-store"
    plain = httpx.get(f"{gateway.url}/v1/billing/balance/{account}", headers=auth(key))
    assert enhanced.json() == plain.json()
    assert httpx.get(f"{gateway.url}/v1/billing/enhanced-balance/{other}",
                     headers=auth(key)).status_code == 404


def test_another_accounts_balance_is_a_404_and_no_key_a_401(gateway):
    mine, key = gateway.ledger.funded(1_000)
    other, _ = gateway.ledger.funded(1_000)
    r = httpx.get(f"{gateway.url}/v1/billing/balance/{other}", headers=auth(key))
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert httpx.get(f"{gateway.url}/v1/billing/balance/{mine}").status_code == 401


def _spend(gateway, key, n):
    from tests.e2e.helpers import chat_body, encode

    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        for i in range(n):
            r = client.post("/v1/chat/completions", content=encode(chat_body(f"call {i}")),
                            headers={**auth(key), "content-type": "application/json"})
            assert r.status_code == 200


def test_events_are_newest_first_and_page_with_a_cursor(gateway):
    account, key = gateway.ledger.funded(100_000)
    _spend(gateway, key, 5)
    url = f"{gateway.url}/v1/billing/events/{account}"
    first = httpx.get(url, params={"limit": 4}, headers=auth(key))
    assert first.status_code == 200 and first.headers["cache-control"] == "no-store"
    page1 = first.json()
    assert [e["type"] for e in page1["events"]] == ["consumption"] * 4
    assert all(e["amount_ms"] < 0 and e["seconds"] == e["amount_ms"] / 1000
               for e in page1["events"])
    page2 = httpx.get(url, params={"limit": 4, "cursor": page1["next_cursor"]},
                      headers=auth(key)).json()
    assert [e["type"] for e in page2["events"]] == ["consumption", "gift_credit"]
    assert page2["next_cursor"] is None
    ids = [e["id"] for e in page1["events"] + page2["events"]]
    assert len(set(ids)) == 6
    assert page2["events"][-1]["amount_ms"] == 100_000
    bad = httpx.get(url, params={"cursor": "nope"}, headers=auth(key))
    assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"


def test_usage_analytics_sum_charges_and_count_calls_by_operation_and_day(gateway):
    account, key = gateway.ledger.funded(100_000)
    _spend(gateway, key, 3)
    charged = sum(r["charged"] for r in gateway.ledger.usage(account))
    for period in ("day", "week", "month"):
        r = httpx.get(f"{gateway.url}/v1/billing/usage/{account}", params={"period": period},
                      headers=auth(key))
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        doc = r.json()
        assert doc["total_seconds"] == charged / 1000
        assert doc["by_operation"] == {"chat": charged / 1000}
        assert doc["count_by_operation"] == {"chat": 3}
        assert sum(d["seconds"] for d in doc["daily_trend"]) == charged / 1000
    assert len(httpx.get(f"{gateway.url}/v1/billing/usage/{account}", params={"period": "day"},
                         headers=auth(key)).json()["daily_trend"]) == 1
    assert len(httpx.get(f"{gateway.url}/v1/billing/usage/{account}", params={"period": "week"},
                         headers=auth(key)).json()["daily_trend"]) == 7
    assert httpx.get(f"{gateway.url}/v1/billing/usage/{account}", params={"period": "year"},
                     headers=auth(key)).status_code == 400


def test_batch_preflight_is_cumulative_with_per_operation_deficits(gateway):
    account, key = gateway.ledger.funded(100_000)  # 100 s
    body = {"operations": [{"operation": "build", "estimate_seconds": 60},
                           {"operation": "plan", "estimate_seconds": 30},
                           {"operation": "image"},  # fixed route estimate: 5,000 ms
                           {"operation": "export", "estimate_seconds": 20}]}
    r = httpx.post(f"{gateway.url}/v1/billing/check-sufficient-batch", json=body,
                   headers=auth(key))
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    doc = r.json()
    assert isinstance(doc, list)  # seed 001's BatchOperationResult[]: the client calls .filter
    assert [d["operation"] for d in doc if not d["ok"]] == ["export"]
    assert {(d["balance_seconds"], d["unit"]) for d in doc} == {(100, "seconds")}
    assert [d["required_seconds"] for d in doc] == [60, 90, 95, 115]
    build, plan, image, export = doc
    assert build["ok"] and plan["ok"] and image["ok"]
    assert image["estimate_seconds"] == 5 and image["estimate_source"] == "fixed"
    assert not export["ok"] and export["deficit_seconds"] == 15
    assert export["suggestions"][0] == {"type": "package", "key": "mini", "minutes": 60}
    assert gateway.ledger.totals(account)["holds"] == 0  # a preflight holds nothing


def test_batch_preflight_rejects_bad_bodies_with_problems(gateway):
    _account, key = gateway.ledger.funded(1_000)
    url = f"{gateway.url}/v1/billing/check-sufficient-batch"
    cases = [
        {"operations": []},
        {"operations": [{"operation": "x", "estimate_seconds": 1}] * 11},
        {"operations": [{"operation": "x", "estimate_seconds": -1}]},
        {"operations": [{"operation": "chat"}]},  # request-based estimate needs the request
        {"operations": [{"operation": "x", "estimate_seconds": 1}], "extra": 1},
    ]
    for body in cases:
        r = httpx.post(url, json=body, headers=auth(key))
        assert r.status_code == 400, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    r = httpx.post(url, content=b"{not json", headers=auth(key))
    assert r.status_code == 400
    other, _ = gateway.ledger.funded(1_000)
    r = httpx.post(url, json={"userId": other, "operations": [{"operation": "x",
                                                                 "estimate_seconds": 1}]},
                   headers=auth(key))
    assert r.status_code == 404
