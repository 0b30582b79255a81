"""Issue 10 item 1 on the billing surfaces still written in time before: admin adjustments, the
auto top-up threshold, checkout replies (and Stripe's product line) and the `package.fulfilled`
event speak the unit of a USD and a tokens deployment — amounts with their exact integer twins —
and refuse the time fields there (time deployments keep theirs: test_admin_api,
test_stripe_lifecycle, test_purchases)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from tests.e2e.helpers import auth, chat_body
from tests.e2e.stripe_support import _deliver, _event, _mock_checkout, stripe_gateway
from tests.e2e.test_billing_stream import open_stream
from tests.support import RunningGateway

HERE = Path(__file__).parent
ADMIN = "c" * 40
Shop = tuple[RunningGateway, respx.MockRouter]


def _shop(tmp_path: Path, upstream_env: dict[str, str], policy: str) -> Iterator[Shop]:
    env = {**upstream_env, "GATEWAY_POLICY_PATH": str(HERE / policy),
           "GATEWAY_ADMIN_TOKEN": ADMIN}
    with stripe_gateway(tmp_path, env) as shop:
        yield shop


@pytest.fixture
def usd_shop(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[Shop]:
    yield from _shop(tmp_path, upstream_env, "policies_usd.yaml")


@pytest.fixture
def tokens_shop(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[Shop]:
    yield from _shop(tmp_path, upstream_env, "policies_tokens.yaml")


def _adjust(gw: RunningGateway, account: str, key: str, **amount: Any) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/admin/accounts/{account}/adjustments",
                      headers={"Authorization": f"Bearer {ADMIN}"},
                      json={"reason": "support", "idempotency_key": key, **amount})


def _topup(gw: RunningGateway, account: str, key: str, **threshold: Any) -> httpx.Response:
    return httpx.put(f"{gw.url}/v1/billing/auto-topup/{account}", headers=auth(key), json={
        "enabled": False, "package_key": _package(gw), **threshold})


def _package(gw: RunningGateway) -> str:
    return "ten" if "usd" in str(gw.settings.policy_paths[0]) else "million"


def _fulfilled(gw: RunningGateway, router: respx.MockRouter, account: str, key: str,
               session: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[str]]]:
    """(checkout reply, package.fulfilled data, form Stripe received) of a package purchase."""
    stripe_route = _mock_checkout(router, session)
    reply = httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(key),
                       json={"package_key": _package(gw)})
    assert reply.status_code == 200, reply.text
    assert _deliver(gw, _event("evt_" + session, session)).json()["outcome"] == "credited"
    with open_stream(gw, account, key, "0") as reader:
        event = reader.until("package.fulfilled").data
    return reply.json(), event, parse_qs(stripe_route.calls.last.request.content.decode())


def test_a_usd_deployment_speaks_usd_on_adjustments_topups_checkouts_and_fulfilment(usd_shop):
    gw, router = usd_shop
    account, key = gw.ledger.funded(1_000_000)  # 1.00 USD
    up = _adjust(gw, account, "adjust-up", amount="2.500001")
    assert up.status_code == 201, up.text
    assert up.json() | {"unit": "USD"} == {
        "amount_ms": 2_500_001, "amount": 2.500001, "amount_micros": 2_500_001,
        "unrecovered_ms": 0, "unrecovered": 0, "unrecovered_micros": 0, "replayed": False,
        "unit": "USD"}
    down = _adjust(gw, account, "adjust-down", amount=-4).json()
    assert (down["amount_micros"], down["amount"]) == (-3_500_001, -3.500001)
    assert (down["unrecovered_micros"], down["unrecovered"]) == (499_999, 0.499999)
    assert gw.ledger.balance(account).spendable == 0
    for wrong, message in (({"seconds": 5}, "give amount"), ({"amount": "0"}, "not be zero"),
                           ({"amount": "0.0000001"}, "precision")):
        r = _adjust(gw, account, "adjust-bad", **wrong)
        assert r.status_code == 400 and message in r.json()["detail"], r.text

    topup = _topup(gw, account, key, threshold="2.50")
    assert topup.status_code == 200, topup.text
    assert {k: topup.json()[k] for k in ("threshold", "threshold_micros", "unit")} == {
        "threshold": 2.5, "threshold_micros": 2_500_000, "unit": "USD"}
    assert "threshold_minutes" not in topup.json()
    assert httpx.get(f"{gw.url}/v1/billing/auto-topup/{account}",
                     headers=auth(key)).json()["threshold_micros"] == 2_500_000
    assert _topup(gw, account, key, threshold_minutes=10).status_code == 400

    reply, event, sent = _fulfilled(gw, router, account, key, "cs_usd_1")
    assert (reply["package_credits"], reply["package_credits_micros"], reply["unit"]) == (
        10, 10_000_000, "USD")
    assert "package_minutes" not in reply
    assert sent["line_items[0][price_data][product_data][name]"] == ["Ten dollars (10 USD)"]
    assert (event["amount"], event["amount_micros"], event["unit"]) == (10, 10_000_000, "USD")
    assert "minutes" not in event and event["package_key"] == "ten"

    _mock_checkout(router, "cs_usd_sub")
    sub = httpx.post(gw.url + "/v1/billing/subscriptions/checkout", headers=auth(key),
                     json={"subscription_key": "pro"})
    assert sub.status_code == 200, sub.text
    assert (sub.json()["credits_per_period"], sub.json()["credits_per_period_micros"],
            sub.json()["unit"]) == (20, 20_000_000, "USD")
    assert "minutes_per_period" not in sub.json()


def test_a_tokens_deployment_speaks_tokens_on_the_same_surfaces(tokens_shop):
    gw, router = tokens_shop
    account, key = gw.ledger.funded(1_000)
    up = _adjust(gw, account, "adjust-up", tokens=2_000).json()
    assert (up["amount"], up["amount_ms"], up["unit"]) == (2_000, 2_000, "tokens")
    assert "amount_micros" not in up
    down = _adjust(gw, account, "adjust-down", tokens=-3_500).json()
    assert (down["amount"], down["unrecovered"]) == (-3_000, 500)
    assert _adjust(gw, account, "adjust-bad", amount="5").status_code == 400
    assert _adjust(gw, account, "adjust-bad", seconds=5).status_code == 400

    topup = _topup(gw, account, key, threshold=20_000).json()
    assert (topup["threshold"], topup["unit"]) == (20_000, "tokens")
    assert "threshold_micros" not in topup and "threshold_minutes" not in topup
    assert _topup(gw, account, key, threshold="0.5").status_code == 400  # finer than 1 token

    reply, event, sent = _fulfilled(gw, router, account, key, "cs_tok_1")
    assert (reply["package_tokens"], reply["unit"]) == (1_000_000, "tokens")
    assert "package_minutes" not in reply
    assert sent["line_items[0][price_data][product_data][name]"] == [
        "One million tokens (1000000 tokens)"]
    assert (event["amount"], event["unit"]) == (1_000_000, "tokens")
    assert "minutes" not in event
    # whole tokens are JSON integers on every surface (`1000000`, never `1000000.0`)
    balance = httpx.get(f"{gw.url}/v1/billing/balance/{account}", headers=auth(key)).json()
    usage = httpx.get(f"{gw.url}/v1/billing/usage/{account}", headers=auth(key)).json()
    amounts = [up["amount"], down["unrecovered"], topup["threshold"], reply["package_tokens"],
               event["amount"], *balance["totals"].values(), *balance["bonus"].values(),
               *(b["amount"] for b in balance["buckets"]["paid"]), usage["total"]]
    assert balance["totals"]["available"] == 1_000_000
    assert [a for a in amounts if isinstance(a, float)] == [], amounts


def test_admin_usage_stats_speak_the_unit(usd_shop):
    gw, _router = usd_shop
    _account, key = gw.ledger.funded(1_000_000)
    r = httpx.post(gw.url + "/v1/chat/completions", headers=auth(key),
                   json=chat_body("Hi", model="gpt-4o-mini"))
    assert r.status_code == 200, r.text
    charged = int(Decimal(r.headers["x-gateway-charged"]) * 1_000_000)
    doc = httpx.get(gw.url + "/v1/admin/stats/usage", params={"period": "day"},
                    headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert doc["unit"] == "USD"
    [group] = doc["by_model"]
    assert group["key"] == "gpt-4o-mini" and group["charged_micros"] == charged > 0
    assert group["charged"] == float(Decimal(charged) / 1_000_000)
    assert (group["unbilled"], group["unbilled_micros"]) == (0, 0)
