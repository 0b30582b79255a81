"""Invoices and usage statements end to end on a real socket: Stripe invoice webhooks (signed
with stripe-python's helper, each delivered twice and out of order) mirrored into seed 002's
InvoiceResponse, the PDF redirect or rendered receipt (parsed back), paying an open invoice
(Stripe mocked with respx: path and idempotency key asserted), the monthly usage statement,
and Checkout's opt-in invoice creation."""

from __future__ import annotations

import io
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
from pypdf import PdfReader

from tests.e2e.helpers import auth, chat_body
from tests.e2e.stripe_support import STRIPE_BASE, _deliver, _mock_checkout, stripe_gateway

DAY = 86_400


def _payload(event_id: str, kind: str, obj: dict[str, Any], created: int) -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": kind, "created": created,
                       "livemode": False, "api_version": "2025-03-31.basil",
                       "data": {"object": obj}}).encode()


def _invoice(invoice_id: str, account: str, status: str, start: int, *, attempts: int = 0,
             transitions: dict[str, int] | None = None, pdf: str | None = None,
             reason: str = "subscription_cycle") -> dict[str, Any]:
    """A subscription invoice as Stripe sends it (API 2025-03: parent.subscription_details,
    total_taxes), in `status`."""
    paid = status == "paid"
    return {
        "id": invoice_id, "object": "invoice", "customer": "cus_inv", "number": "GW-0007",
        "status": status, "billing_reason": reason, "currency": "usd", "created": start,
        "subtotal": 2900, "total": 3190, "total_taxes": [{"amount": 290}],
        "total_discount_amounts": [], "starting_balance": -190, "ending_balance": 0,
        "amount_due": 3000, "amount_paid": 3000 if paid else 0, "attempt_count": attempts,
        "status_transitions": {"finalized_at": start, **(transitions or {})},
        "invoice_pdf": pdf, "hosted_invoice_url": f"https://invoice.stripe.com/i/{invoice_id}",
        "description": "Pro plan", "due_date": None,
        "parent": {"type": "subscription_details", "subscription_details": {
            "subscription": "sub_inv",
            "metadata": {"account_id": account, "subscription_key": "pro"}}},
        "lines": {"object": "list", "data": [{
            "id": "il_1", "object": "line_item", "description": "Pro (1200 min / month)",
            "amount": 2900, "quantity": 1, "period": {"start": start, "end": start + 30 * DAY},
            "parent": {"type": "subscription_item_details"}}]},
    }


def _lifecycle(account: str, invoice_id: str, start: int) -> list[bytes]:
    """finalized → payment_failed → marked_uncollectible → paid, as four events."""
    return [
        _payload(f"evt_{invoice_id}_fin", "invoice.finalized",
                 _invoice(invoice_id, account, "open", start), start + 1),
        _payload(f"evt_{invoice_id}_fail", "invoice.payment_failed",
                 _invoice(invoice_id, account, "open", start, attempts=1), start + 2),
        _payload(f"evt_{invoice_id}_unc", "invoice.marked_uncollectible",
                 _invoice(invoice_id, account, "uncollectible", start, attempts=1,
                          transitions={"marked_uncollectible_at": start + 3}), start + 3),
        _payload(f"evt_{invoice_id}_paid", "invoice.paid",
                 _invoice(invoice_id, account, "paid", start, attempts=2,
                          transitions={"marked_uncollectible_at": start + 3,
                                       "paid_at": start + 4}), start + 4),
    ]


def _get(gw: Any, path: str, key: str, **headers: str) -> httpx.Response:
    return httpx.get(gw.url + path, headers={**auth(key), **headers})


def _pdf_text(content: bytes) -> str:
    return "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(content)).pages)


def test_invoice_events_twice_and_out_of_order_converge_and_credit_once(shop):
    gw, _router = shop
    account, key = gw.ledger.funded(0)
    now = int(time.time())
    fin, fail, unc, paid = _lifecycle(account, "in_life", now - 10)
    for payload in (paid, fin, unc, paid, fail, fin, unc, fail):
        r = _deliver(gw, payload)
        assert r.status_code == 200, r.text
    listed = _get(gw, f"/v1/billing/invoices/{account}", key)
    assert listed.status_code == 200 and listed.headers["cache-control"] == "no-store"
    [doc] = listed.json()["invoices"]
    assert (doc["id"], doc["stripe_invoice_id"], doc["invoice_number"], doc["status"],
            doc["billing_account_id"]) == ("in_life", "in_life", "GW-0007", "paid", account)
    assert (doc["subtotal"], doc["tax_amount"], doc["discount_amount"], doc["total"],
            doc["credits_applied"], doc["amount_due"], doc["amount_paid"], doc["currency"]) == (
        29.0, 2.9, 0.0, 31.9, 1.9, 30.0, 30.0, "USD")
    assert doc["amounts_minor"]["total"] == 3190
    [line] = doc["line_items"]
    assert (line["kind"], line["credited"], line["amount"], doc["unit"]) == (
        "subscription", 72_000, 29.0, "s")
    assert doc["paid_at"] == datetime.fromtimestamp(now - 6, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    balance = _get(gw, f"/v1/billing/balance/{account}", key).json()
    assert [(b["source"], b["seconds"]) for b in balance["buckets"]["paid"]] == [
        ("subscription", 72_000)]  # invoice.paid delivered twice credited once
    assert _get(gw, f"/v1/billing/invoices/{account}/in_life", key).json() == doc


def test_a_voided_invoice_filters_pages_and_other_accounts_see_nothing(shop):
    gw, _router = shop
    account, key = gw.ledger.funded(0)
    other, other_key = gw.ledger.funded(0)
    now = int(time.time())
    for i in range(3):
        _deliver(gw, _payload(f"evt_open_{i}", "invoice.finalized",
                              _invoice(f"in_p{i}", account, "open", now - 100 + i), now))
    void = _payload("evt_void", "invoice.voided", _invoice(
        "in_p1", account, "void", now - 99, transitions={"voided_at": now}), now + 1)
    assert _deliver(gw, void).json()["outcome"] == "mirrored"
    assert _deliver(gw, void).json()["outcome"] == "duplicate"
    page = _get(gw, f"/v1/billing/invoices/{account}?limit=2", key).json()
    assert [x["id"] for x in page["invoices"]] == ["in_p2", "in_p1"]
    rest = _get(gw, f"/v1/billing/invoices/{account}?limit=2&cursor={page['next_cursor']}",
                key).json()
    assert [x["id"] for x in rest["invoices"]] == ["in_p0"] and rest["next_cursor"] is None
    voided = _get(gw, f"/v1/billing/invoices/{account}?status=void", key).json()
    assert [(x["id"], x["status"]) for x in voided["invoices"]] == [("in_p1", "void")]
    assert _get(gw, f"/v1/billing/invoices/{account}?status=uncollectible",
                key).status_code == 400
    # another account's key: its own list is empty, this account's invoice is a 404
    assert _get(gw, f"/v1/billing/invoices/{other}", other_key).json()["invoices"] == []
    for path in (f"/v1/billing/invoices/{other}/in_p1", f"/v1/billing/invoices/{other}/in_p1/pdf",
                 f"/v1/billing/invoices/{account}/in_p1"):
        r = _get(gw, path, other_key)
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = httpx.post(f"{gw.url}/v1/billing/invoices/{other}/in_p0/pay", headers=auth(other_key))
    assert r.status_code == 404


def test_pdf_redirects_to_stripes_or_renders_a_receipt_with_an_etag(shop):
    gw, _router = shop
    account, key = gw.ledger.funded(0)
    now = int(time.time())
    stripe_pdf = "https://pay.stripe.com/invoice/acct_x/in_pdf/pdf"
    _deliver(gw, _payload("evt_pdf", "invoice.finalized",
                          _invoice("in_pdf", account, "open", now, pdf=stripe_pdf), now))
    _deliver(gw, _payload("evt_nopdf", "invoice.finalized",
                          _invoice("in_nopdf", account, "open", now), now))
    r = _get(gw, f"/v1/billing/invoices/{account}/in_pdf/pdf", key)
    assert (r.status_code, r.headers["location"]) == (302, stripe_pdf)
    r = _get(gw, f"/v1/billing/invoices/{account}/in_nopdf/pdf", key)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    tag = r.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', tag)
    text = _pdf_text(r.content)
    assert "Receipt GW-0007" in text and "in_nopdf" in text and account in text
    assert re.search(r"Pro \(1200 min / month\)\s+1\s+29\.00 USD\s+72,000 s", text)
    assert re.search(r"^Total\s+31\.90 USD$", text, re.M)
    assert re.search(r"^Amount due\s+30\.00 USD$", text, re.M)
    again = _get(gw, f"/v1/billing/invoices/{account}/in_nopdf/pdf", key, **{
        "if-none-match": tag})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", tag)
    # the invoice changes (paid): another document, another ETag
    _deliver(gw, _payload("evt_nopdf_paid", "invoice.paid", _invoice(
        "in_nopdf", account, "paid", now, transitions={"paid_at": now + 1},
        reason="manual"), now + 1))
    changed = _get(gw, f"/v1/billing/invoices/{account}/in_nopdf/pdf", key,
                   **{"if-none-match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    assert re.search(r"^Amount paid\s+30\.00 USD$", _pdf_text(changed.content), re.M)


def test_paying_an_open_invoice_calls_stripe_once_per_attempt(shop):
    gw, router = shop
    account, key = gw.ledger.funded(0)
    now = int(time.time())
    _deliver(gw, _payload("evt_due_fail", "invoice.payment_failed",
                          _invoice("in_due", account, "open", now, attempts=1), now))
    paid = _invoice("in_due", account, "paid", now, attempts=2,
                    transitions={"paid_at": now + 5})
    route = router.post(f"{STRIPE_BASE}/v1/invoices/in_due/pay").mock(
        return_value=httpx.Response(200, json=paid))
    r = httpx.post(f"{gw.url}/v1/billing/invoices/{account}/in_due/pay", headers=auth(key))
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["amount_paid"]) == ("paid", 30.0)
    assert route.call_count == 1
    sent = route.calls.last.request
    assert sent.headers["idempotency-key"] == "gw-invoice-pay:in_due:1"
    assert sent.headers["authorization"] == "Bearer sk_test_123"
    assert _get(gw, f"/v1/billing/invoices/{account}/in_due", key).json()["status"] == "paid"
    again = httpx.post(f"{gw.url}/v1/billing/invoices/{account}/in_due/pay", headers=auth(key))
    assert again.status_code == 409 and again.json()["type"].endswith("/invoice-not-payable")
    assert route.call_count == 1
    # the webhook of the same payment, arriving after, changes nothing
    late = _payload("evt_due_paid", "invoice.paid", paid, now + 6)
    assert _deliver(gw, late).status_code == 200
    assert _get(gw, f"/v1/billing/invoices/{account}/in_due", key).json()["status"] == "paid"


def test_a_declined_payment_is_a_payment_provider_problem(shop):
    gw, router = shop
    account, key = gw.ledger.funded(0)
    now = int(time.time())
    _deliver(gw, _payload("evt_decl", "invoice.finalized",
                          _invoice("in_decl", account, "open", now), now))
    router.post(f"{STRIPE_BASE}/v1/invoices/in_decl/pay").mock(return_value=httpx.Response(
        402, json={"error": {"type": "card_error", "code": "card_declined",
                             "message": "Your card was declined."}}))
    r = httpx.post(f"{gw.url}/v1/billing/invoices/{account}/in_decl/pay", headers=auth(key))
    assert r.status_code == 502 and "declined" in r.json()["detail"]
    assert _get(gw, f"/v1/billing/invoices/{account}/in_decl", key).json()["status"] == "open"


def test_monthly_usage_statement_lists_what_was_consumed(shop):
    gw, _router = shop
    account, key = gw.ledger.funded(600_000)
    for text in ("one", "two two"):
        r = httpx.post(gw.url + "/v1/chat/completions", headers=auth(key),
                       json=chat_body(text), timeout=10)
        assert r.status_code == 200, r.text
    charged = sum(u["charged"] for u in gw.ledger.usage(account))
    month = datetime.now(UTC).strftime("%Y-%m")
    path = f"/v1/billing/statements/{account}/{month}.pdf"
    r = _get(gw, path, key)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    text = _pdf_text(r.content)
    assert f"Usage statement {month}" in text and account in text
    assert re.search(r"chat\s+gpt-fake\s+2\s", text), text
    total = f"{charged / 1000:f}".rstrip("0").rstrip(".")
    assert re.search(rf"^Total charged\s+{re.escape(total)} s$", text, re.M), (total, text)
    assert _get(gw, path, key, **{"if-none-match": r.headers["etag"]}).status_code == 304
    assert _get(gw, f"/v1/billing/statements/{account}/2026-13.pdf", key).status_code == 400
    other, other_key = gw.ledger.funded(0)
    assert _get(gw, path, other_key).status_code == 404
    empty = _pdf_text(_get(gw, f"/v1/billing/statements/{other}/{month}.pdf",
                           other_key).content)
    assert re.search(r"^Calls\s+0$", empty, re.M)


def test_checkout_creates_no_invoice_by_default(shop):
    gw, router = shop
    _account, key = gw.ledger.funded(0)
    route = _mock_checkout(router, "cs_noinv")
    assert httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(key),
                      json={"package_key": "mini"}).status_code == 200
    assert not any(k.startswith("invoice_creation") for k in
                   parse_qs(route.calls.last.request.content.decode()))


def test_checkout_creates_invoices_when_the_operator_opts_in(
        tmp_path: Path, upstream_env: dict[str, str]) -> None:
    with stripe_gateway(tmp_path / "opt", upstream_env,
                        {"GATEWAY_CHECKOUT_INVOICES": "true"}) as (opt, opt_router):
        account, okey = opt.ledger.funded(0)
        route = _mock_checkout(opt_router, "cs_inv")
        assert httpx.post(opt.url + "/v1/billing/packages/purchase", headers=auth(okey),
                          json={"package_key": "mini"}).status_code == 200
        sent = parse_qs(route.calls.last.request.content.decode())
        assert sent["invoice_creation[enabled]"] == ["true"]
        assert sent["invoice_creation[invoice_data][metadata][account_id]"] == [account]
        assert sent["invoice_creation[invoice_data][metadata][package_key]"] == ["mini"]
        # Stripe's invoice of that purchase: mirrored, its line credited the package
        now = int(time.time())
        obj = {"id": "in_co", "object": "invoice", "customer": None, "status": "paid",
               "number": "GW-0100", "billing_reason": "manual", "currency": "usd",
               "created": now, "subtotal": 500, "total": 500, "amount_due": 500,
               "amount_paid": 500, "status_transitions": {"finalized_at": now, "paid_at": now},
               "metadata": {"account_id": account, "package_key": "mini"},
               "lines": {"object": "list", "data": [{"id": "il_co", "description": "Mini",
                                                     "amount": 500, "quantity": 1}]}}
        payload = _payload("evt_co_paid", "invoice.paid", obj, now)
        assert _deliver(opt, payload).status_code == 200
        assert _deliver(opt, payload).json()["outcome"] == "duplicate"
        doc = _get(opt, f"/v1/billing/invoices/{account}/in_co", okey).json()
        assert (doc["status"], doc["line_items"][0]["kind"],
                doc["line_items"][0]["credited"]) == ("paid", "package", 3600)
