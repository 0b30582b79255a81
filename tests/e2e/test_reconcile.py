"""Reconciliation of the ledger with Stripe end to end: Stripe's list APIs mocked with respx
(paths, filters, pagination asserted), the admin API and `gateway reconcile --stripe`, reports
stored, `apply` crediting what was paid and never credited exactly once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from gateway.cli import main
from storage.engine.buckets import Source
from tests.e2e.helpers import auth
from tests.e2e.stripe_support import STRIPE_BASE, _deliver, _mock_checkout, stripe_gateway
from tests.support import RunningGateway

ADMIN = "admin-token-for-reconciliation-tests-0123456789"
NOW = int(time.time())
FROM, TO = NOW - 86_400, NOW + 3_600


@pytest.fixture
def admin_shop(tmp_path: Path,
               upstream_env: dict[str, str]) -> Iterator[tuple[RunningGateway, respx.MockRouter]]:
    with stripe_gateway(tmp_path, upstream_env, {"GATEWAY_ADMIN_TOKEN": ADMIN}) as pair:
        yield pair


def _completed(event_id: str, session: str, pi: str) -> bytes:
    return json.dumps({
        "id": event_id, "object": "event", "type": "checkout.session.completed",
        "created": NOW - 50, "livemode": False, "api_version": "2025-03-31.basil",
        "data": {"object": {"id": session, "object": "checkout.session", "mode": "payment",
                            "payment_status": "paid", "payment_intent": pi}}}).encode()


def _buy(gw: RunningGateway, router: respx.MockRouter, key: str, session: str) -> None:
    _mock_checkout(router, session)
    r = httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(key),
                   json={"package_key": "mini"})
    assert r.status_code == 200, r.text


def _charge(cid: str, pi: str, amount: int = 500, refunded: int = 0,
            invoice: str | None = None) -> dict[str, Any]:
    return {"id": cid, "object": "charge", "status": "succeeded", "paid": True,
            "payment_intent": pi, "amount": amount, "amount_refunded": refunded,
            "currency": "usd", "invoice": invoice, "created": NOW - 100}


def _listing(data: list[dict[str, Any]], more: bool = False) -> httpx.Response:
    return httpx.Response(200, json={"object": "list", "data": data, "has_more": more,
                                     "url": "/v1/x"})


def _mock_stripe(router: respx.MockRouter, account: str) -> dict[str, respx.Route]:
    """Stripe's side of the period: a subscription invoice and a Checkout payment never
    delivered, a charge of another amount than the purchase's, a refund the ledger never saw,
    and no trace of `in_ghost`."""
    invoice = {
        "id": "in_miss", "object": "invoice", "status": "paid", "customer": "cus_r",
        "billing_reason": "subscription_cycle", "currency": "usd", "created": NOW - 100,
        "amount_paid": 2900, "total": 2900, "subtotal": 2900, "amount_due": 2900,
        "status_transitions": {"finalized_at": NOW - 100, "paid_at": NOW - 99},
        "parent": {"type": "subscription_details", "subscription_details": {
            "subscription": "sub_r", "metadata": {"account_id": account,
                                                  "subscription_key": "pro"}}},
        "lines": {"object": "list", "data": [{
            "id": "il_r", "object": "line_item", "amount": 2900, "quantity": 1,
            "period": {"start": NOW - 100, "end": NOW + 30 * 86_400}}]}}
    pages = {None: ([_charge("ch_ok", "pi_ok", refunded=500), _charge("ch_miss", "pi_miss")],
                    True),
             "ch_miss": ([_charge("ch_mm", "pi_mm", amount=900),
                          _charge("ch_inv", "pi_inv", 2900, invoice="in_miss")], False)}

    def charges(request: httpx.Request) -> httpx.Response:
        data, more = pages[request.url.params.get("starting_after")]
        return _listing(data, more)

    session = {"id": "cs_miss", "object": "checkout.session", "mode": "payment",
               "payment_status": "paid", "payment_intent": "pi_miss", "created": NOW - 100,
               "client_reference_id": account, "metadata": {"account_id": account}}
    return {
        "invoices": router.get(f"{STRIPE_BASE}/v1/invoices").mock(
            return_value=_listing([invoice])),
        "charges": router.get(f"{STRIPE_BASE}/v1/charges").mock(side_effect=charges),
        "refunds": router.get(f"{STRIPE_BASE}/v1/refunds").mock(return_value=_listing([
            {"id": "re_1", "object": "refund", "status": "succeeded", "charge": "ch_ok",
             "payment_intent": "pi_ok", "amount": 500, "created": NOW - 90}])),
        "sessions": router.get(f"{STRIPE_BASE}/v1/checkout/sessions").mock(
            return_value=_listing([session])),
        "ghost": router.get(f"{STRIPE_BASE}/v1/invoices/in_ghost").mock(
            return_value=httpx.Response(404, json={"error": {
                "type": "invalid_request_error", "code": "resource_missing",
                "message": "No such invoice: 'in_ghost'"}})),
    }


def _prepare(gw: RunningGateway, router: respx.MockRouter) -> tuple[str, str]:
    account, key = gw.ledger.funded(0)
    for session, pi in (("cs_ok", "pi_ok"), ("cs_mm", "pi_mm")):
        _buy(gw, router, key, session)
        assert _deliver(gw, _completed(f"evt_{session}", session, pi)).json()["outcome"] \
            == "credited"
    _buy(gw, router, key, "cs_miss")  # paid at Stripe; its webhook never came
    gw.ledger.grant(account, 60_000, Source.GIFT, key="stripe_invoice:in_ghost")
    return account, key


def _reconcile(gw: RunningGateway, apply: bool = False) -> httpx.Response:
    return httpx.post(gw.url + "/v1/admin/reconcile", headers=auth(ADMIN), json={
        "from": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(FROM)),
        "to": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(TO)), "apply": apply})


def _findings(report: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "paid_not_credited": [(x["kind"], x["object_id"], x["account_id"], x["amount_cents"],
                               x["applied"]) for x in report["paid_not_credited"]],
        "credited_not_paid": [(x["kind"], x["object_id"], x["stripe_status"])
                              for x in report["credited_not_paid"]],
        "amount_mismatches": [(x["kind"], x["object_id"], x["what"], x["stripe"], x["ledger"])
                              for x in report["amount_mismatches"]],
    }


def test_reconcile_reports_differences_and_apply_credits_them_once(admin_shop):
    gw, router = admin_shop
    account, key = _prepare(gw, router)
    routes = _mock_stripe(router, account)
    r = _reconcile(gw)
    assert r.status_code == 201, r.text
    report = r.json()
    assert _findings(report) == {
        "paid_not_credited": [("invoice", "in_miss", account, 2900, None),
                              ("checkout", "cs_miss", account, 500, None)],
        "credited_not_paid": [("invoice", "in_ghost", None)],
        "amount_mismatches": [("checkout", "cs_mm", "amount_cents", 900, 500),
                              ("refund", "cs_ok", "refunded_cents", 500, 0)]}
    assert (report["matched"], report["stripe"], report["applied"]) == (
        2, {"paid_invoices": 1, "charges": 4, "refunds": 1}, False)
    # Stripe was asked for the period, every page of it
    created = {"created[gte]": str(FROM), "created[lt]": str(TO), "limit": "100"}
    params = routes["invoices"].calls.last.request.url.params
    assert {k: params[k] for k in created} == created and params["status"] == "paid"
    pages = [dict(c.request.url.params) for c in routes["charges"].calls[-2:]]
    assert "starting_after" not in pages[0] and pages[1]["starting_after"] == "ch_miss"
    assert routes["sessions"].calls.last.request.url.params["payment_intent"] == "pi_miss"
    stored = httpx.get(f"{gw.url}/v1/admin/reconcile/{report['id']}", headers=auth(ADMIN))
    assert stored.status_code == 200 and stored.json() == report
    # nothing moved yet
    paid = httpx.get(f"{gw.url}/v1/billing/balance/{account}", headers=auth(key)).json()
    assert len(paid["buckets"]["paid"]) == 3

    applied = _reconcile(gw, apply=True).json()
    assert [x[4] for x in _findings(applied)["paid_not_credited"]] == ["credited", "credited"]
    balance = httpx.get(f"{gw.url}/v1/billing/balance/{account}", headers=auth(key)).json()
    assert sorted((b["source"], b["seconds"]) for b in balance["buckets"]["paid"]) == [
        ("gift", 60), ("package", 3600), ("package", 3600), ("package", 3600),
        ("subscription", 72_000)]
    # applied once: the next run finds them credited, the late webhook is a duplicate
    after = _reconcile(gw, apply=True).json()
    assert after["paid_not_credited"] == [] and after["matched"] == 4
    late = _deliver(gw, _completed("evt_late", "cs_miss", "pi_miss")).json()
    assert late["outcome"] == "duplicate"
    again = httpx.get(f"{gw.url}/v1/billing/balance/{account}", headers=auth(key)).json()
    assert again["totals"] == balance["totals"]
    listed = httpx.get(f"{gw.url}/v1/admin/reconcile?limit=2", headers=auth(ADMIN)).json()
    assert [x["id"] for x in listed["reports"]] == [after["id"], applied["id"]]
    assert listed["next_cursor"] == applied["id"]


def test_reconcile_refuses_bad_periods_and_needs_the_admin_credential(admin_shop):
    gw, _router = admin_shop
    bad = httpx.post(gw.url + "/v1/admin/reconcile", headers=auth(ADMIN),
                     json={"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"})
    assert bad.status_code == 400
    naive = httpx.post(gw.url + "/v1/admin/reconcile", headers=auth(ADMIN),
                       json={"from": "2026-01-01T00:00:00", "to": "2026-02-01T00:00:00"})
    assert naive.status_code == 400
    assert httpx.post(gw.url + "/v1/admin/reconcile", json={}).status_code == 401
    assert httpx.get(gw.url + "/v1/admin/reconcile/rcn_nope",
                     headers=auth(ADMIN)).status_code == 404


def test_a_stripe_failure_stores_no_report(admin_shop):
    gw, router = admin_shop
    router.get(f"{STRIPE_BASE}/v1/invoices").mock(return_value=httpx.Response(
        500, json={"error": {"type": "api_error", "message": "boom"}}))
    r = _reconcile(gw)
    assert r.status_code == 502 and r.json()["type"].endswith("/payment-provider-error")
    listed = httpx.get(f"{gw.url}/v1/admin/reconcile", headers=auth(ADMIN)).json()
    assert listed["reports"] == []


def test_cli_reconcile_stripe_stores_the_report_and_applies(admin_shop, monkeypatch, capsys):
    gw, router = admin_shop
    account, _key = _prepare(gw, router)
    _mock_stripe(router, account)
    for name, value in (("GATEWAY_DATABASE_URL", gw.settings.database_url),
                        ("GATEWAY_POLICY_PATH", ",".join(map(str, gw.settings.policy_paths))),
                        ("STRIPE_SECRET_KEY", "sk_test_123"), ("STRIPE_API_BASE", STRIPE_BASE),
                        ("GATEWAY_REDIS_URL", "")):
        monkeypatch.setenv(name, value)
    period = ["--from", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(FROM)),
              "--to", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(TO))]
    assert main(["reconcile", "--stripe", *period, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [x[1] for x in _findings(report)["paid_not_credited"]] == ["in_miss", "cs_miss"]
    stored = httpx.get(f"{gw.url}/v1/admin/reconcile/{report['id']}", headers=auth(ADMIN))
    assert stored.json() == report
    assert main(["reconcile", "--stripe", *period, "--apply"]) == 0
    out = capsys.readouterr().out
    assert "paid_not_credited: 2" in out and "in_miss" in out and "-> credited" in out
    assert main(["reconcile", "--stripe", "--from", "2026-01-02", "--to", "2026-01-01"]) == 2
    assert main(["reconcile", "--from", "2026-01-01"]) == 2
    assert "go with --stripe" in capsys.readouterr().err
