"""Low-balance alert settings, webhook endpoint registration and the 402's payment challenge
over a real socket (issue 11 items 7–9)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.proxy.payment_challenge import challenge_id
from tests.e2e.helpers import assert_problem, auth, chat_body, encode, post
from tests.support import TEST_POLICY, RunningGateway, start_gateway

ADMIN = "admin-token-for-e2e-tests-0123456789abcdef"
SECRET = "challenge-secret-for-e2e-tests-0123456789"


@pytest.fixture
def gw(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[RunningGateway]:
    doc: dict[str, Any] = yaml.safe_load(TEST_POLICY.read_text())
    doc["plans"]["payg"] = {"low_balance_threshold": 2.5}
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(doc))
    g = start_gateway(tmp_path, {**upstream_env, "GATEWAY_ADMIN_TOKEN": ADMIN,
                                 "GATEWAY_PAYMENT_CHALLENGE": "true",
                                 "GATEWAY_PAYMENT_CHALLENGE_SECRET": SECRET}, [policy])
    try:
        yield g
    finally:
        g.stop()


def alert_events(gw: RunningGateway, account: str) -> list[str]:
    events = gw.ledger._run(lambda lg: lg.events_after(account, 0, 100))
    return [e.type for e in events if e.type.startswith("balance.")
            and e.type != "balance.updated"]


def test_alert_threshold_defaults_to_the_plan_and_is_changed_by_the_account(
        gw: RunningGateway) -> None:
    account, key = gw.ledger.funded(10_000)
    url = f"{gw.url}/v1/billing/alerts/{account}"
    got = httpx.get(url, headers=auth(key))
    assert got.status_code == 200 and got.headers["cache-control"] == "no-store"
    assert got.json() == {"low_balance_threshold": 2.5, "unit": "s", "default": True,
                          "state": "ok"}
    put = httpx.put(url, headers=auth(key), json={"low_balance_threshold": 12})
    assert put.json() == {"low_balance_threshold": 12, "unit": "s", "default": False,
                          "state": "low"}
    assert alert_events(gw, account) == ["balance.low"]
    reset = httpx.put(url, headers=auth(key), json={"low_balance_threshold": None})
    assert reset.json()["default"] is True and reset.json()["state"] == "ok"
    assert alert_events(gw, account) == ["balance.low", "balance.recovered"]

    for bad in ({"low_balance_threshold": -1}, {"low_balance_threshold": "0.0001"},
                {"low_balance_threshold": 5, "extra": 1}, {}):
        assert_problem(httpx.put(url, headers=auth(key), json=bad), 400, "bad-request")
    other, _ = gw.ledger.funded(0)
    assert_problem(httpx.get(f"{gw.url}/v1/billing/alerts/{other}", headers=auth(key)), 404,
                   "not-found")


def test_webhook_endpoints_are_validated_and_their_secret_is_shown_once(
        gw: RunningGateway) -> None:
    base = gw.url + "/v1/admin/webhook-endpoints"
    assert httpx.get(base).status_code == 401
    for url in ("ftp://ops.example/hook", "https://user:pw@ops.example/hook",
                "https://ops.example/hook#x", "javascript:alert(1)", "https:///nohost"):
        resp = httpx.post(base, headers=auth(ADMIN),
                          json={"url": url, "event_types": ["balance.low"]})
        assert_problem(resp, 400, "bad-request")
    assert_problem(httpx.post(base, headers=auth(ADMIN), json={
        "url": "https://ops.example/hook", "event_types": ["balance.updated"]}), 400,
        "bad-request")
    made = httpx.post(base, headers=auth(ADMIN), json={
        "url": "https://ops.example/hook", "event_types": ["balance.low", "refund.applied"],
        "description": "ops"})
    assert made.status_code == 201
    secret = made.json()["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    listing = httpx.get(base, headers=auth(ADMIN))
    assert secret not in listing.text
    assert listing.json()["endpoints"][0]["event_types"] == ["balance.low", "refund.applied"]
    deliveries = httpx.get(f"{base}/{made.json()['id']}/deliveries", headers=auth(ADMIN))
    assert deliveries.json() == {"deliveries": []}
    assert_problem(httpx.get(f"{base}/whe_nope/deliveries", headers=auth(ADMIN)), 404,
                   "not-found")


def _params(header: str) -> dict[str, str]:
    scheme, _, rest = header.partition(" ")
    assert scheme == "Payment"
    return dict(re.findall(r'(\w+)="([^"]*)"', rest))


def test_the_402_carries_a_payment_challenge_bound_by_hmac(gw: RunningGateway) -> None:
    account, key = gw.ledger.funded(1_000)
    resp = post(gw, "/v1/chat/completions", key, encode(chat_body("hi", max_tokens=15_000)))
    doc = assert_problem(resp, 402, "insufficient-ai-time")
    params = _params(resp.headers["www-authenticate"])
    assert params["realm"] == gw.url and params["method"] == "stripe"
    assert params["intent"] == "charge" and params["expires"] == doc["resume_expires_at"]
    padded = params["request"] + "=" * (-len(params["request"]) % 4)
    request = json.loads(base64.urlsafe_b64decode(padded))
    assert request == {"amount": "500", "currency": "usd", "description": "Mini (60 min)",
                       "operation_id": doc["instance"].removeprefix("urn:op:"),
                       "package_key": "mini",
                       "purchase_endpoint": gw.url + "/v1/billing/packages/purchase"}
    assert params["id"] == challenge_id(SECRET.encode(), params["realm"], "stripe", "charge",
                                        params["request"], params["expires"])
    tampered = challenge_id(SECRET.encode(), params["realm"], "stripe", "charge",
                            params["request"][:-2] + "AA", params["expires"])
    assert tampered != params["id"]
    # the gateway's own key stays a bearer credential: the retry with it and the token works
    gw.ledger.grant(account, 3_000_000)
    again = post(gw, "/v1/chat/completions", key, encode(chat_body("hi", max_tokens=15_000)),
                 {"x-resume-token": doc["resume_token"]})
    assert again.status_code == 200 and "www-authenticate" not in again.headers
