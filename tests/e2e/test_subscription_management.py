"""Issue 11 item 4 end to end: read, cancel, reactivate and change a subscription against the
respx Stripe double (every call asserted: path, parameters, idempotency key), and the webhooks
that keep the ledger right — signed with stripe-python's helper, each delivered twice and out
of order — including the proration credit of an upgrade."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from storage.engine.buckets import Source
from tests.e2e.billing_surface_support import (
    BILLING_POLICY,
    DAY,
    deliver,
    invoice,
    key_of,
    payload,
    sent,
    stripe_calls,
    subscribe,
    subscription,
)
from tests.e2e.helpers import auth, chat_body
from tests.e2e.stripe_support import STRIPE_BASE, stripe_gateway
from tests.support import TEST_POLICY, RunningGateway

Shop = tuple[RunningGateway, respx.MockRouter]
MIN_MS = 60_000


@pytest.fixture
def shop2(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[Shop]:
    env = {"GATEWAY_POLICY_PATH": f"{TEST_POLICY},{BILLING_POLICY}"}
    with stripe_gateway(tmp_path, upstream_env, env) as shop:
        yield shop


def _retrieve(router: respx.MockRouter, doc: dict[str, Any]) -> respx.Route:
    return router.get(f"{STRIPE_BASE}/v1/subscriptions/sub_m").mock(
        return_value=httpx.Response(200, json=doc))


def _sub(gw: RunningGateway, key: str, account: str, action: str = "",
         body: dict[str, Any] | None = None) -> httpx.Response:
    url = f"{gw.url}/v1/billing/subscription/{account}" + (f"/{action}" if action else "")
    if action:
        return httpx.post(url, headers=auth(key), json=body)
    return httpx.get(url, headers=auth(key))


def test_the_subscription_is_stripes_and_the_allowance_the_ledgers(shop2: Shop) -> None:
    gw, router = shop2
    account, key = gw.ledger.funded(0)
    none = _sub(gw, key, account).json()
    assert (none["id"], none["status"], none["tier"], none["included"], none["unit"]) == (
        None, "none", "payg", 0, "s")
    assert not stripe_calls(router)
    now = int(time.time())
    start, end = now - 10 * DAY, now + 20 * DAY
    subscribe(gw, account, start, end)
    retrieve = _retrieve(router, subscription(account, start=start, end=end))
    charged = int(httpx.post(gw.url + "/v1/chat/completions", headers=auth(key),
                             json=chat_body("use the plan")).headers["x-gateway-charged-ms"])
    doc = _sub(gw, key, account).json()
    assert retrieve.call_count == 1
    assert {k: doc[k] for k in ("id", "tier", "plan", "status", "cancel_at_period_end",
                                "canceled_at", "included", "workflows_limit")} == {
        "id": "sub_m", "tier": "pro", "plan": "pro", "status": "active",
        "cancel_at_period_end": False, "canceled_at": None, "included": 72_000,
        "workflows_limit": 72_000}
    assert doc["used"] == charged / 1000 and doc["remaining"] == (72_000_000 - charged) / 1000
    assert doc["current_period_start"] == time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                        time.gmtime(start))
    assert doc["current_period_end"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end))


def test_cancel_warns_of_rollover_reactivate_undoes_it_and_webhooks_follow(shop2: Shop) -> None:
    gw, router = shop2
    account, key = gw.ledger.funded(0)
    assert _sub(gw, key, account, "cancel").status_code == 404  # no subscription
    now = int(time.time())
    start, end = now - 5 * DAY, now + 25 * DAY
    subscribe(gw, account, start, end)
    gw.ledger.grant(account, 5 * MIN_MS, source=Source.ROLLOVER,
                    expires_at_ms=(now + 60 * DAY) * 1000)
    _retrieve(router, subscription(account, start=start, end=end))
    update = router.post(f"{STRIPE_BASE}/v1/subscriptions/sub_m").mock(
        side_effect=lambda req: httpx.Response(200, json=subscription(
            account, start=start, end=end,
            cancel="cancel_at_period_end=true" in req.content.decode())))
    r = _sub(gw, key, account, "cancel")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["cancel_at_period_end"] is True
    assert doc["scheduled_change"] == {
        "new_plan": "free", "effective_date": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                           time.gmtime(end)),
        "will_discard_rollover": True, "minutes_to_discard": 5}
    assert sent(update) == {"cancel_at_period_end": ["true"]}
    assert key_of(update).startswith(f"gw_sub_cancel:{account}:")
    canceled = payload("evt_m_cancel", "customer.subscription.updated",
                       subscription(account, start=start, end=end, cancel=True), created=now)
    assert deliver(gw, canceled) == "applied" and deliver(gw, canceled) == "duplicate"
    balance = httpx.get(f"{gw.url}/v1/billing/balance/{account}", headers=auth(key)).json()
    assert balance["scheduled_change"]["new_plan"] == "free"
    r = _sub(gw, key, account, "reactivate")
    assert r.status_code == 200 and r.json()["cancel_at_period_end"] is False
    assert sent(update) == {"cancel_at_period_end": ["false"]}
    assert key_of(update).startswith(f"gw_sub_reactivate:{account}:")
    kept = payload("evt_m_keep", "customer.subscription.updated",
                   subscription(account, start=start, end=end), created=now + 1)
    assert deliver(gw, kept) == "applied"
    assert deliver(gw, canceled) == "duplicate" and deliver(gw, kept) == "duplicate"
    late = payload("evt_m_cancel_late", "customer.subscription.updated",
                   subscription(account, start=start, end=end, cancel=True), created=now - 1)
    assert deliver(gw, late) == "stale"  # an older event delivered late changes nothing
    balance = httpx.get(f"{gw.url}/v1/billing/balance/{account}", headers=auth(key)).json()
    assert balance["scheduled_change"] is None and balance["subscription_status"] == "active"
    ended = subscription(account, "pro", "canceled", start=start, end=end)
    router.get(f"{STRIPE_BASE}/v1/subscriptions/sub_m").mock(
        return_value=httpx.Response(200, json=ended))
    assert _sub(gw, key, account, "reactivate").status_code == 400
    assert update.call_count == 2


def test_an_upgrade_prorates_now_and_its_invoice_credits_the_difference_once(
        shop2: Shop) -> None:
    gw, router = shop2
    account, key = gw.ledger.funded(0)
    now = int(time.time())
    start, end = now - 10 * DAY - 7, now + 20 * DAY - 7  # a 30-day period, 20 d − 7 s left
    subscribe(gw, account, start, end)
    _retrieve(router, subscription(account, start=start, end=end))
    upgraded = subscription(account, "team", start=start, end=end)
    update = router.post(f"{STRIPE_BASE}/v1/subscriptions/sub_m").mock(
        return_value=httpx.Response(200, json=upgraded))
    r = _sub(gw, key, account, "change", {"subscription_key": "team"})
    assert r.status_code == 200, r.text
    assert r.json()["plan"] == "team"
    form = sent(update)
    assert form == {
        "items[0][id]": ["si_m"], "items[0][price_data][currency]": ["usd"],
        "items[0][price_data][unit_amount]": ["5900"],
        "items[0][price_data][product]": ["prod_m"],
        "items[0][price_data][recurring][interval]": ["month"],
        "items[0][price_data][tax_behavior]": ["exclusive"],
        "proration_behavior": ["always_invoice"], "metadata[account_id]": [account],
        "metadata[subscription_key]": ["team"], "metadata[previous_subscription_key]": ["pro"],
        "metadata[gw_period_start]": [str(start)], "metadata[gw_period_end]": [str(end)]}
    assert key_of(update).startswith(f"gw_sub_upgrade:{account}:")
    meta = {"subscription_key": "team", "previous_subscription_key": "pro",
            "gw_period_start": str(start), "gw_period_end": str(end)}
    proration = payload("evt_m_prorate", "invoice.paid", invoice(
        "in_m_prorate", account, "subscription_update", now, end, meta), created=now)
    plan_changed = payload("evt_m_team", "customer.subscription.updated", upgraded,
                           created=now + 1)
    # Out of order: the subscription's update overtakes its proration invoice; each twice.
    assert deliver(gw, plan_changed) == "applied"
    assert deliver(gw, proration) == "credited"
    assert deliver(gw, proration) == "duplicate" and deliver(gw, plan_changed) == "duplicate"
    extra = (3000 - 1200) * MIN_MS * (20 * DAY - 7) // (30 * DAY)
    assert extra == 71_999_708  # 1800 min × (20 d − 7 s) / 30 d, rounded down to the ms
    subs = [b for b in gw.ledger.balance(account).buckets if b.source == "subscription"]
    assert sorted(b.amount for b in subs) == [extra, 72_000_000]
    assert all(b.expires_at_ms == end * 1000 for b in subs)
    balance = httpx.get(f"{gw.url}/v1/billing/balance/{account}", headers=auth(key)).json()
    assert balance["plan_key"] == "team"
    totals = gw.ledger.totals(account)
    assert totals["remaining"] - totals["debt"] == totals["deltas"]


def test_a_proration_without_the_gateways_metadata_credits_nothing(shop2: Shop) -> None:
    gw, _router = shop2
    account, _key = gw.ledger.funded(0)
    now = int(time.time())
    subscribe(gw, account, now - DAY, now + 29 * DAY)
    foreign = payload("evt_m_foreign", "invoice.paid", invoice(
        "in_m_foreign", account, "subscription_update", now, now + 29 * DAY,
        {"subscription_key": "team"}))
    assert deliver(gw, foreign) == "ignored" and deliver(gw, foreign) == "duplicate"
    assert [b.amount for b in gw.ledger.balance(account).buckets] == [72_000_000]


def test_a_downgrade_is_scheduled_for_the_period_end_with_its_rollover_warning(
        shop2: Shop) -> None:
    gw, router = shop2
    account, key = gw.ledger.funded(0)
    now = int(time.time())
    start, end = now - 3 * DAY, now + 27 * DAY
    subscribe(gw, account, start, end, key="team")
    gw.ledger.grant(account, 7 * MIN_MS, source=Source.ROLLOVER,
                    expires_at_ms=(now + 60 * DAY) * 1000)
    _retrieve(router, subscription(account, "team", start=start, end=end))
    create = router.post(f"{STRIPE_BASE}/v1/subscription_schedules").mock(
        return_value=httpx.Response(200, json={"id": "sub_sched_m",
                                               "object": "subscription_schedule"}))
    update = router.post(f"{STRIPE_BASE}/v1/subscription_schedules/sub_sched_m").mock(
        return_value=httpx.Response(200, json={"id": "sub_sched_m",
                                               "object": "subscription_schedule"}))
    for bad in ({"subscription_key": "team"}, {"subscription_key": "gold"}, {}):
        assert _sub(gw, key, account, "change", bad).status_code == 400
    r = _sub(gw, key, account, "change", {"subscription_key": "pro"})
    assert r.status_code == 200, r.text
    assert r.json()["scheduled_change"] == {
        "new_plan": "pro", "effective_date": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                          time.gmtime(end)),
        "will_discard_rollover": True, "minutes_to_discard": 7}
    assert sent(create) == {"from_subscription": ["sub_m"]}
    assert key_of(create).startswith(f"gw_sched:{account}:")
    phases = sent(update)
    assert (phases["end_behavior"], phases["phases[0][items][0][price]"],
            phases["phases[0][start_date]"], phases["phases[0][end_date]"],
            phases["phases[0][metadata][subscription_key]"],
            phases["phases[1][items][0][price_data][unit_amount]"],
            phases["phases[1][metadata][subscription_key]"]) == (
        ["release"], ["price_team"], [str(start)], [str(end)], ["team"], ["2900"], ["pro"])
    schedule = payload("evt_m_sched", "subscription_schedule.updated", {
        "id": "sub_sched_m", "object": "subscription_schedule", "customer": "cus_m",
        "status": "active", "metadata": {"account_id": account},
        "phases": [{"start_date": start, "end_date": end,
                    "metadata": {"subscription_key": "team"}},
                   {"start_date": end, "end_date": end + 30 * DAY,
                    "metadata": {"subscription_key": "pro"}}]}, created=now)
    assert deliver(gw, schedule) == "applied" and deliver(gw, schedule) == "duplicate"
    balance = httpx.get(f"{gw.url}/v1/billing/balance/{account}", headers=auth(key)).json()
    assert balance["scheduled_change"]["new_plan"] == "pro"
    assert balance["scheduled_change"]["minutes_to_discard"] == 7
    assert balance["plan_key"] == "team"  # until the period end
