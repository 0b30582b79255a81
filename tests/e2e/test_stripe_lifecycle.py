"""Stripe subscriptions, refunds and auto top-up end to end: Stripe's API mocked with respx,
webhooks signed with stripe-python's own helper, each event delivered twice and out of order."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs

import httpx
import respx

from storage.engine.buckets import Source
from tests.e2e.helpers import auth, chat_body
from tests.e2e.stripe_support import STRIPE_BASE, _deliver, _event, _mock_checkout

DAY = 86_400


def _payload(event_id: str, kind: str, obj: dict[str, Any], created: int | None = None) -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": kind,
                       "created": created or int(time.time()), "livemode": False,
                       "api_version": "2025-03-31.basil", "data": {"object": obj}}).encode()


def _invoice(invoice_id: str, account: str, start: int, end: int,
             reason: str = "subscription_cycle") -> dict[str, Any]:
    """An invoice.paid object in the current API shape (parent.subscription_details)."""
    return {"id": invoice_id, "object": "invoice", "customer": "cus_e2e",
            "billing_reason": reason, "status": "paid",
            "parent": {"type": "subscription_details", "subscription_details": {
                "subscription": "sub_e2e",
                "metadata": {"account_id": account, "subscription_key": "pro"}}},
            "lines": {"object": "list", "data": [
                {"id": "il_1", "object": "line_item", "period": {"start": start, "end": end}}]}}


def _subscription(account: str, status: str = "active", cancel_at_period_end: bool = False,
                  period_end: int | None = None) -> dict[str, Any]:
    return {"id": "sub_e2e", "object": "subscription", "customer": "cus_e2e", "status": status,
            "cancel_at_period_end": cancel_at_period_end,
            "metadata": {"account_id": account, "subscription_key": "pro"},
            "items": {"object": "list", "data": [{
                "id": "si_1", "object": "subscription_item",
                "current_period_end": period_end or int(time.time()) + 20 * DAY,
                "price": {"id": "price_1", "object": "price", "lookup_key": None}}]}}


def _events(gw: Any, key: str, account: str) -> list[dict[str, Any]]:
    return httpx.get(f"{gw.url}/v1/billing/events/{account}?limit=50",
                     headers=auth(key)).json()["events"]


def test_subscription_checkout_carries_account_and_plan(shop):
    gw, router = shop
    account, key = gw.ledger.funded(0)
    route = _mock_checkout(router, "cs_sub_1")
    r = httpx.post(gw.url + "/v1/billing/subscriptions/checkout", headers=auth(key),
                   json={"subscription_key": "pro", "currency": "EUR"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["currency"], doc["currency_fallback_from"], doc["unit_amount_cents"],
            doc["minutes_per_period"]) == ("USD", "EUR", 2900, 1200)
    sent = parse_qs(route.calls.last.request.content.decode())
    assert sent["mode"] == ["subscription"]
    assert sent["subscription_data[metadata][account_id]"] == [account]
    assert sent["subscription_data[metadata][subscription_key]"] == ["pro"]
    assert sent["line_items[0][price_data][recurring][interval]"] == ["month"]
    bad = httpx.post(gw.url + "/v1/billing/subscriptions/checkout", headers=auth(key),
                     json={"subscription_key": "gold"})
    assert bad.status_code == 400 and route.call_count == 1


def test_invoice_paid_twice_and_a_late_older_event_credit_once_and_keep_the_newest_status(shop):
    gw, _router = shop
    account, key = gw.ledger.funded(0)
    now = int(time.time())
    invoice = _payload("evt_inv_1", "invoice.paid",
                       _invoice("in_e2e_1", account, now - DAY, now + 29 * DAY,
                                "subscription_create"), created=now)
    assert _deliver(gw, invoice).json()["outcome"] == "credited"
    assert _deliver(gw, invoice).json()["outcome"] == "duplicate"
    # An older subscription.updated (past_due) delivered after the invoice changes no status.
    older = _payload("evt_sub_old", "customer.subscription.updated",
                     _subscription(account, status="past_due"), created=now - 60)
    assert _deliver(gw, older).json()["outcome"] == "stale"
    balance = httpx.get(f"{gw.url}/v1/billing/balance/{account}", headers=auth(key)).json()
    assert (balance["plan_key"], balance["subscription_status"]) == ("pro", "active")
    assert [(b["source"], b["seconds"]) for b in balance["buckets"]["paid"]] == [
        ("subscription", 72_000)]
    assert [e["type"] for e in _events(gw, key, account)] == ["subscription_credit"]


def test_cancel_at_period_end_warns_then_deletion_discards_rollover(shop):
    gw, _router = shop
    account, key = gw.ledger.funded(0)
    now = int(time.time())
    _deliver(gw, _payload("evt_inv_2", "invoice.paid",
                          _invoice("in_e2e_2", account, now - DAY, now + 29 * DAY),
                          created=now - 10))
    gw.ledger.grant(account, 300_000, source=Source.ROLLOVER,
                    expires_at_ms=(now + 60 * DAY) * 1000)
    cancel = _payload("evt_cancel", "customer.subscription.updated",
                      _subscription(account, cancel_at_period_end=True,
                                    period_end=now + 29 * DAY), created=now)
    assert _deliver(gw, cancel).json()["outcome"] == "applied"
    assert _deliver(gw, cancel).json()["outcome"] == "duplicate"
    balance = httpx.get(f"{gw.url}/v1/billing/balance/{account}", headers=auth(key)).json()
    change = balance["scheduled_change"]
    assert change["new_plan"] == "free" and change["will_discard_rollover"] is True
    assert change["minutes_to_discard"] == 5
    pending = [e for e in _events(gw, key, account) if e["type"] == "rollover_discard_pending"]
    assert len(pending) == 1 and pending[0]["metadata"]["minutes_to_discard"] == 5
    deleted = _payload("evt_deleted", "customer.subscription.deleted",
                       _subscription(account, status="canceled"), created=now + 1)
    assert _deliver(gw, deleted).json()["outcome"] == "applied"
    balance = httpx.get(f"{gw.url}/v1/billing/balance/{account}", headers=auth(key)).json()
    assert (balance["plan_key"], balance["subscription_status"],
            balance["scheduled_change"]) == ("free", "canceled", None)
    assert [b["source"] for b in balance["buckets"]["paid"]] == ["subscription"]
    assert "rollover_discard" in [e["type"] for e in _events(gw, key, account)]
    t = gw.ledger.totals(account)
    assert t["remaining"] - t["debt"] == t["deltas"]


def _charge(pi: str, amount: int, refunded: int) -> dict[str, Any]:
    return {"id": "ch_e2e", "object": "charge", "payment_intent": pi, "amount": amount,
            "amount_refunded": refunded, "refunded": refunded >= amount}


def _completed(session_id: str, pi: str) -> bytes:
    doc = json.loads(_event(f"evt_done_{session_id}", session_id))
    doc["data"]["object"]["payment_intent"] = pi
    return json.dumps(doc).encode()


def test_a_refund_delivered_before_its_checkout_claws_back_once_the_credit_lands(shop):
    gw, router = shop
    account, key = gw.ledger.funded(0)
    _mock_checkout(router, "cs_refund")
    httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(key),
               json={"package_key": "mini"})
    refund = _payload("evt_refund", "charge.refunded", _charge("pi_refund", 500, 500))
    assert _deliver(gw, refund).json()["outcome"] == "pending"
    assert _deliver(gw, refund).json()["outcome"] == "duplicate"
    assert _deliver(gw, _completed("cs_refund", "pi_refund")).json()["outcome"] == "credited"
    assert gw.ledger.balance(account).buckets == []
    kinds = [e["type"] for e in _events(gw, key, account)]
    assert kinds == ["adjustment", "package_credit"]


def test_a_refund_after_use_takes_back_only_what_remains(shop):
    gw, router = shop
    account, key = gw.ledger.funded(0)
    _mock_checkout(router, "cs_used")
    httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(key),
               json={"package_key": "mini"})
    _deliver(gw, _completed("cs_used", "pi_used"))
    charged = int(httpx.post(gw.url + "/v1/chat/completions", headers=auth(key),
                             json=chat_body("spend some")).headers["x-gateway-charged-ms"])
    assert _deliver(gw, _payload("evt_ref_used", "charge.refunded",
                                 _charge("pi_used", 500, 500))).json()["outcome"] == "clawed_back"
    [adjustment] = [e for e in _events(gw, key, account) if e["type"] == "adjustment"]
    assert adjustment["amount_ms"] == -(3_600_000 - charged)
    assert gw.ledger.balance(account).spendable == 0


def _topup_settings(gw: Any, key: str, account: str, **body: Any) -> httpx.Response:
    doc = {"enabled": True, "threshold_minutes": 10, "package_key": "mini",
           "payment_method_id": "pm_card_visa", "customer_id": "cus_e2e", **body}
    return httpx.put(f"{gw.url}/v1/billing/auto-topup/{account}", headers=auth(key), json=doc)


def _wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _mock_payment_intent(router: respx.MockRouter, status: int = 200) -> respx.Route:
    body: dict[str, Any] = {"id": "pi_auto_1", "object": "payment_intent", "status": "succeeded"}
    if status != 200:
        body = {"error": {"type": "card_error", "code": "card_declined",
                          "message": "Your card was declined."}}
    return router.post(f"{STRIPE_BASE}/v1/payment_intents").mock(
        return_value=httpx.Response(status, json=body))


def test_auto_topup_charges_once_below_the_threshold_and_credits_on_success(shop):
    gw, router = shop
    account, key = gw.ledger.funded(10 * 60_000 + 500)
    route = _mock_payment_intent(router)
    r = _topup_settings(gw, key, account)
    assert r.status_code == 200 and r.json()["enabled"] is True
    time.sleep(0.2)
    assert not route.called  # 10 min 0.5 s available ≥ the 10 min threshold
    for _ in range(4):  # each call settles below the threshold; one top-up only
        httpx.post(gw.url + "/v1/chat/completions", headers=auth(key),
                   json=chat_body("x" * 4000))
    _wait_for(lambda: route.called)
    time.sleep(0.3)
    assert route.call_count == 1
    request = route.calls.last.request
    sent = parse_qs(request.content.decode())
    assert sent["off_session"] == ["true"] and sent["confirm"] == ["true"]
    assert sent["payment_method"] == ["pm_card_visa"] and sent["customer"] == ["cus_e2e"]
    assert sent["amount"] == ["500"] and sent["metadata[auto_topup_attempt]"] == [f"{account}:1"]
    assert request.headers["idempotency-key"] == f"gw_auto_topup:{account}:1"
    assert "package_credit" not in [e["type"] for e in _events(gw, key, account)]
    settings = httpx.get(f"{gw.url}/v1/billing/auto-topup/{account}", headers=auth(key)).json()
    assert settings["pending"] is True
    succeeded = _payload("evt_pi_ok", "payment_intent.succeeded", {
        "id": "pi_auto_1", "object": "payment_intent", "amount": 500, "amount_received": 500,
        "currency": "usd", "metadata": {"account_id": account, "package_key": "mini",
                                        "auto_topup_attempt": f"{account}:1"}})
    assert _deliver(gw, succeeded).json()["outcome"] == "credited"
    assert _deliver(gw, succeeded).json()["outcome"] == "duplicate"
    kinds = [e["type"] for e in _events(gw, key, account)]
    assert kinds.count("auto_topup_triggered") == 1 and kinds.count("package_credit") == 1
    settings = httpx.get(f"{gw.url}/v1/billing/auto-topup/{account}", headers=auth(key)).json()
    assert settings["pending"] is False and settings["consecutive_failures"] == 0


def test_a_declined_auto_topup_backs_off(shop):
    gw, router = shop
    account, key = gw.ledger.funded(5 * 60_000)
    route = _mock_payment_intent(router, status=402)
    assert _topup_settings(gw, key, account).status_code == 200  # already below: tries now
    _wait_for(lambda: httpx.get(f"{gw.url}/v1/billing/auto-topup/{account}",
                                headers=auth(key)).json()["consecutive_failures"] == 1)
    settings = httpx.get(f"{gw.url}/v1/billing/auto-topup/{account}", headers=auth(key)).json()
    assert settings["next_attempt_at"] is not None and "declined" in settings["last_error"]
    httpx.post(gw.url + "/v1/chat/completions", headers=auth(key), json=chat_body("more"))
    time.sleep(0.3)
    assert route.call_count == 1  # no retry during the backoff


def test_bad_auto_topup_settings_are_problems_and_store_nothing(shop):
    gw, _router = shop
    account, key = gw.ledger.funded(0)
    for body in ({"package_key": "nope"}, {"threshold_minutes": 0}, {"currency": "XYZ"},
                 {"payment_method_id": "card_123"}, {"surprise": 1}):
        r = _topup_settings(gw, key, account, **body)
        assert r.status_code == 400, body
        assert r.headers["content-type"] == "application/problem+json"
    no_card = httpx.put(f"{gw.url}/v1/billing/auto-topup/{account}", headers=auth(key),
                        json={"enabled": True, "threshold_minutes": 10, "package_key": "mini"})
    assert no_card.status_code == 400
    assert httpx.get(f"{gw.url}/v1/billing/auto-topup/{account}",
                     headers=auth(key)).json() == {"enabled": False, "configured": False}
