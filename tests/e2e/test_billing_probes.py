"""Issue 11's new endpoints probed as an attacker would: another account's ids on every one
(payment methods, invoices, statements, alerts, subscription, portal, checkout) with a valid
key of one's own, another customer's card under one's own account, and huge or malformed
bodies and parameters. Each is a problem document, Stripe is never called for it (the respx
double asserts every call), and nothing is written."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.billing_surface_support import card, mock_customer, stripe_calls
from tests.e2e.helpers import auth
from tests.e2e.stripe_support import STRIPE_BASE, _deliver, stripe_gateway
from tests.e2e.test_invoices import _invoice, _payload


def _problem(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json"


def test_another_accounts_ids_are_404s_everywhere_and_reach_nothing(shop) -> None:
    gw, router = shop
    mine, key = gw.ledger.funded(1_000)
    other, other_key = gw.ledger.funded(1_000)
    now = int(time.time())
    assert _deliver(gw, _payload("evt_probe_fin", "invoice.finalized",
                                 _invoice("in_probe", other, "open", now), now)).status_code == 200
    assert httpx.put(f"{gw.url}/v1/billing/alerts/{other}", headers=auth(other_key),
                     json={"low_balance_threshold": 7}).status_code == 200
    before = httpx.get(f"{gw.url}/v1/billing/alerts/{other}", headers=auth(other_key)).json()
    probes = [
        ("GET", f"/v1/billing/payment-methods/{other}", None),
        ("POST", f"/v1/billing/payment-methods/{other}", {"payment_method_id": "pm_x"}),
        ("POST", f"/v1/billing/payment-methods/{other}/setup-intent", None),
        ("POST", f"/v1/billing/payment-methods/{other}/pm_x/default", None),
        ("DELETE", f"/v1/billing/payment-methods/{other}/pm_x", None),
        ("POST", f"/v1/billing/portal/{other}", None),
        ("GET", f"/v1/billing/account/{other}", None),
        ("GET", f"/v1/billing/subscription/{other}", None),
        ("POST", f"/v1/billing/subscription/{other}/cancel", None),
        ("POST", f"/v1/billing/subscription/{other}/reactivate", None),
        ("POST", f"/v1/billing/subscription/{other}/change", {"subscription_key": "pro"}),
        ("GET", f"/v1/billing/invoices/{other}", None),
        ("GET", f"/v1/billing/invoices/{other}/in_probe", None),
        ("GET", f"/v1/billing/invoices/{other}/in_probe/pdf", None),
        ("POST", f"/v1/billing/invoices/{other}/in_probe/pay", None),
        ("GET", f"/v1/billing/invoices/{mine}/in_probe", None),  # its id under my account
        ("GET", f"/v1/billing/invoices/{mine}/in_probe/pdf", None),
        ("POST", f"/v1/billing/invoices/{mine}/in_probe/pay", None),
        ("GET", f"/v1/billing/statements/{other}/2026-01.pdf", None),
        ("GET", f"/v1/billing/alerts/{other}", None),
        ("PUT", f"/v1/billing/alerts/{other}", {"low_balance_threshold": 1}),
        ("POST", "/v1/billing/credits/checkout", {"amount": 5, "currency": "USD",
                                                  "userId": other}),
        ("POST", "/v1/billing/packages/purchase", {"package_key": "mini", "userId": other}),
    ]
    for method, path, body in probes:
        r = httpx.request(method, gw.url + path, headers=auth(key), json=body)
        assert r.status_code in (400, 404), (method, path, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    assert not stripe_calls(router)
    assert httpx.get(f"{gw.url}/v1/billing/alerts/{other}",
                     headers=auth(other_key)).json() == before
    assert httpx.get(f"{gw.url}/v1/billing/invoices/{other}/in_probe",
                     headers=auth(other_key)).json()["status"] == "open"


def test_another_customers_card_under_ones_own_account_is_a_404(shop) -> None:
    gw, router = shop
    mine, key = gw.ledger.funded(0)
    mock_customer(router, "cus_mine")
    router.post(f"{STRIPE_BASE}/v1/setup_intents").mock(return_value=httpx.Response(
        200, json={"id": "seti_1", "object": "setup_intent", "client_secret": "seti_1_secret"}))
    assert httpx.post(f"{gw.url}/v1/billing/payment-methods/{mine}/setup-intent",
                      headers=auth(key)).status_code == 200  # links cus_mine
    router.get(f"{STRIPE_BASE}/v1/payment_methods/pm_theirs").mock(
        return_value=httpx.Response(200, json=card("pm_theirs", "cus_theirs")))
    update = router.post(f"{STRIPE_BASE}/v1/customers/cus_mine").mock(
        return_value=httpx.Response(200, json={"id": "cus_mine", "object": "customer"}))
    detach = router.post(f"{STRIPE_BASE}/v1/payment_methods/pm_theirs/detach").mock(
        return_value=httpx.Response(200, json=card("pm_theirs", None)))
    for method, path in (("POST", f"/v1/billing/payment-methods/{mine}/pm_theirs/default"),
                         ("DELETE", f"/v1/billing/payment-methods/{mine}/pm_theirs")):
        _problem(httpx.request(method, gw.url + path, headers=auth(key)), 404)
    assert update.call_count == 0 and detach.call_count == 0


@pytest.mark.parametrize("body", [
    b'{"low_balance_threshold": -1}', b'{"low_balance_threshold": 1e400}',
    b'{"low_balance_threshold": "NaN"}', b'{"low_balance_threshold": "Infinity"}',
    b'{"low_balance_threshold": 10000000000}', b'{"low_balance_threshold": true}',
    b'{"low_balance_threshold": [1]}', b'{"low_balance_threshold": 1, "extra": 2}',
    b'[]', b'"x"', b'{', b'{"low_balance_threshold": 1' + b' ' * 10 + b'}}',
    b'{"low_balance_threshold": 0.' + b'1' * 5000 + b'}',
])
def test_malformed_alert_settings_are_400s_and_change_nothing(shop, body: bytes) -> None:
    gw, _router = shop
    mine, key = gw.ledger.funded(0)
    base = f"{gw.url}/v1/billing/alerts/{mine}"
    before = httpx.get(base, headers=auth(key)).json()
    r = httpx.put(base, content=body,
                  headers={**auth(key), "content-type": "application/json"})
    _problem(r, 400)
    assert httpx.get(base, headers=auth(key)).json() == before


def test_huge_bodies_and_odd_parameters_are_problems_and_write_nothing(shop) -> None:
    gw, router = shop
    mine, key = gw.ledger.funded(0)
    huge = json.dumps({"low_balance_threshold": 1, "pad": "x" * 5_000_000}).encode()
    r = httpx.put(f"{gw.url}/v1/billing/alerts/{mine}", content=huge,
                  headers={**auth(key), "content-type": "application/json"})
    assert r.status_code in (400, 413), r.status_code
    assert httpx.get(f"{gw.url}/v1/billing/alerts/{mine}",
                     headers=auth(key)).json()["default"] is True
    for month in ("2026-13", "2026-00", "0000-01", "99999-01", "2026-1", "2026-01%00",
                  "..%2F..%2Fetc", "2026-01.pdf"):
        r = httpx.get(f"{gw.url}/v1/billing/statements/{mine}/{month}.pdf", headers=auth(key))
        assert r.status_code in (400, 404), (month, r.status_code)
        assert r.headers["content-type"] == "application/problem+json"
    for invoice in ("in_" + "a" * 5000, "in_%00", "%2E%2E", "in_' OR 1=1 --"):
        r = httpx.get(f"{gw.url}/v1/billing/invoices/{mine}/{invoice}", headers=auth(key))
        assert r.status_code in (400, 404, 414), (invoice, r.status_code)
    for pm in ("card_1", "pm_" + "a" * 500, "pm_%2F..", "pm_x%00"):
        r = httpx.delete(f"{gw.url}/v1/billing/payment-methods/{mine}/{pm}", headers=auth(key))
        assert r.status_code in (400, 404), (pm, r.status_code)
    for body in ({"payment_method_id": "pm_" + "a" * 500}, {"payment_method_id": 5},
                 {"payment_method_id": "pm_x", "set_as_default": "yes please"}, {}):
        r = httpx.post(f"{gw.url}/v1/billing/payment-methods/{mine}", headers=auth(key),
                       json=body)
        _problem(r, 400)
    for body in ({"subscription_key": "x" * 10_000}, {"subscription_key": None}, {}):
        r = httpx.post(f"{gw.url}/v1/billing/subscription/{mine}/change", headers=auth(key),
                       json=body)
        assert r.status_code in (400, 404), r.text
    for body in ({"amount": 0.001, "currency": "USD"}, {"amount": "1e9", "currency": "USD"},
                 {"amount": -5, "currency": "USD"}, {"amount": 5, "currency": "US"},
                 {"amount": "NaN", "currency": "USD"}):
        r = httpx.post(f"{gw.url}/v1/billing/credits/checkout", headers=auth(key), json=body)
        _problem(r, 400)
    assert not stripe_calls(router)


ADMIN = "admin-token-for-billing-probes-0123456789"


@pytest.fixture
def ops_shop(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[Any]:
    with stripe_gateway(tmp_path, upstream_env, {"GATEWAY_ADMIN_TOKEN": ADMIN}) as shop:
        yield shop


def test_a_replayed_invoice_payment_failure_is_one_outgoing_payment_failed(ops_shop) -> None:
    """Stripe's `invoice.payment_failed` → `payment.failed` in the outgoing-webhook outbox,
    once per Stripe event: the same event delivered three times (and its older `finalized`
    after it) is one delivery; a later failed attempt (a new event) is another."""
    gw, _router = ops_shop
    account, key = gw.ledger.funded(0)
    made = httpx.post(gw.url + "/v1/admin/webhook-endpoints", headers=auth(ADMIN), json={
        "url": "https://ops.example/pay", "event_types": ["payment.failed"]})
    assert made.status_code == 201, made.text
    now = int(time.time())
    failed = _invoice("in_fail", account, "open", now, attempts=1)
    event = _payload("evt_in_fail_1", "invoice.payment_failed", failed, now + 2)
    outcomes = [_deliver(gw, event).json()["outcome"] for _ in range(3)]
    assert outcomes == ["mirrored", "duplicate", "duplicate"]
    assert _deliver(gw, _payload("evt_in_fin", "invoice.finalized",
                                 _invoice("in_fail", account, "open", now), now + 1)
                    ).json()["outcome"] == "mirrored"
    url = f"{gw.url}/v1/admin/webhook-endpoints/{made.json()['id']}/deliveries"
    rows = httpx.get(url, headers=auth(ADMIN)).json()["deliveries"]
    assert [r["event_type"] for r in rows] == ["payment.failed"]
    again = _payload("evt_in_fail_2", "invoice.payment_failed",
                     _invoice("in_fail", account, "open", now, attempts=2), now + 3)
    assert _deliver(gw, again).json()["outcome"] == "mirrored"
    assert len(httpx.get(url, headers=auth(ADMIN)).json()["deliveries"]) == 2
    mirrored = httpx.get(f"{gw.url}/v1/billing/invoices/{account}/in_fail",
                         headers=auth(key)).json()
    assert mirrored["status"] == "open"
