"""Admin API: accounts, keys, grants, signed adjustments, usage statistics; the credential."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import assert_problem, auth, chat_body, encode
from tests.support import RunningGateway, start_gateway

TOKEN = "a" * 40


@pytest.fixture
def admin(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[tuple[RunningGateway,
                                                                          httpx.Client]]:
    gw = start_gateway(tmp_path, {**upstream_env, "GATEWAY_ADMIN_TOKEN": TOKEN})
    with httpx.Client(base_url=gw.url, headers=auth(TOKEN), timeout=10) as client:
        yield gw, client
    gw.stop()


def test_an_operator_creates_an_account_and_key_and_the_key_serves_calls(admin):
    gw, client = admin
    r = client.post("/v1/admin/accounts", json={"plan": "payg"})
    assert r.status_code == 201
    account = r.json()["account_id"]
    key = client.post(f"/v1/admin/accounts/{account}/keys").json()["key"]
    grant = client.post(f"/v1/admin/accounts/{account}/grants",
                        json={"minutes": 2, "idempotency_key": "support-ticket-1"})
    assert grant.status_code == 201 and grant.json()["amount_ms"] == 120_000
    again = client.post(f"/v1/admin/accounts/{account}/grants",
                        json={"minutes": 2, "idempotency_key": "support-ticket-1"})
    assert again.status_code == 200 and again.json()["replayed"] is True
    call = httpx.post(gw.url + "/v1/chat/completions", content=encode(chat_body()),
                      headers={**auth(key), "content-type": "application/json"})
    assert call.status_code == 200
    doc = client.get(f"/v1/admin/accounts/{account}").json()
    assert doc["balance"]["totals"]["paid_seconds"] < 120
    assert [k["prefix"] for k in doc["api_keys"]] == [key[:10]]
    assert key not in r.text + str(doc)


def test_revoking_a_key_stops_it_at_once(admin):
    gw, client = admin
    account = client.post("/v1/admin/accounts", json={"plan": "payg"}).json()["account_id"]
    created = client.post(f"/v1/admin/accounts/{account}/keys").json()
    assert client.delete(f"/v1/admin/keys/{created['key_id']}").status_code == 200
    r = httpx.post(gw.url + "/v1/chat/completions", content=encode(chat_body()),
                   headers={**auth(created["key"]), "content-type": "application/json"})
    assert r.status_code == 401
    assert client.delete(f"/v1/admin/keys/{created['key_id']}").status_code == 404


def test_adjustments_credit_or_take_back_never_below_zero(admin):
    gw, client = admin
    account, _ = gw.ledger.funded(10_000)
    up = client.post(f"/v1/admin/accounts/{account}/adjustments",
                     json={"seconds": 5, "reason": "goodwill", "idempotency_key": "adj-00001"})
    assert up.status_code == 201 and up.json()["amount_ms"] == 5_000
    down = client.post(f"/v1/admin/accounts/{account}/adjustments",
                       json={"seconds": -20, "reason": "clawback", "idempotency_key": "adj-00002"})
    assert down.status_code == 201
    assert down.json() == {"amount_ms": -15_000, "replayed": False, "unrecovered_ms": 5_000}
    totals = gw.ledger.totals(account)
    assert totals["remaining"] == 0 and totals["remaining"] - totals["debt"] == totals["deltas"]
    events = [e for e in gw.ledger.usage(account)]
    assert events == []  # adjustments are ledger entries, not usage


def test_usage_statistics_group_by_model_and_operation(admin):
    gw, client = admin
    _, key = gw.ledger.funded(100_000)
    for model in ("gpt-fake", "gpt-fake", "gpt-fake-2"):
        httpx.post(gw.url + "/v1/chat/completions", content=encode(chat_body(model=model)),
                   headers={**auth(key), "content-type": "application/json"})
    doc = client.get("/v1/admin/stats/usage", params={"period": "day"}).json()
    by_model = {row["key"]: row for row in doc["by_model"]}
    assert by_model["gpt-fake"]["calls"] == 2 and by_model["gpt-fake-2"]["calls"] == 1
    assert {row["key"] for row in doc["by_operation"]} == {"chat"}
    assert sum(r["charged_ms"] for r in doc["by_model"]) == sum(
        r["charged_ms"] for r in doc["by_operation"]) > 0


def test_the_admin_api_needs_its_credential_and_validates_bodies(admin):
    gw, client = admin
    _, user_key = gw.ledger.funded(1_000)
    gw.ledger.funded(1_000)
    assert httpx.get(gw.url + "/v1/admin/accounts").status_code == 401
    assert httpx.get(gw.url + "/v1/admin/accounts", headers=auth(user_key)).status_code == 401
    page = client.get("/v1/admin/accounts", params={"limit": 1})
    assert page.status_code == 200 and page.json()["next_cursor"] is not None
    rest = client.get("/v1/admin/accounts", params={"limit": 5,
                                                    "cursor": page.json()["next_cursor"]}).json()
    assert len(rest["accounts"]) == 1 and rest["next_cursor"] is None
    for body in ({"minutes": 1}, {"minutes": 1, "seconds": 1, "idempotency_key": "k" * 10},
                 {"minutes": -1, "idempotency_key": "k" * 10}):
        r = client.post("/v1/admin/accounts/acct_x/grants", json=body)
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    r = client.post("/v1/admin/accounts/acct_missing/grants",
                    json={"minutes": 1, "idempotency_key": "k" * 10})
    assert r.status_code == 404
    assert client.post("/v1/admin/accounts", json={"plan": "nope"}).status_code == 400


def test_without_a_configured_token_the_admin_api_is_absent(gateway):
    r = httpx.get(gateway.url + "/v1/admin/accounts", headers=auth("a" * 40))
    assert r.status_code == 404


def test_an_idempotency_key_reused_with_another_body_is_a_422_that_applies_nothing(admin):
    gw, client = admin
    account = client.post("/v1/admin/accounts", json={"plan": "payg"}).json()["account_id"]
    grants = f"/v1/admin/accounts/{account}/grants"
    first = client.post(grants, json={"minutes": 2, "idempotency_key": "ticket-0042"})
    assert first.status_code == 201
    same = client.post(grants, json={"minutes": 2, "idempotency_key": "ticket-0042"})
    assert same.status_code == 200 and same.json() == {**first.json(), "replayed": True}
    for body in ({"minutes": 3}, {"seconds": 1}, {"minutes": 2, "source": "package"},
                 {"minutes": 2, "reason": "another ticket"}):
        r = client.post(grants, json={**body, "idempotency_key": "ticket-0042"})
        doc = assert_problem(r, 422, "idempotency-key-reused")
        assert "replayed" not in doc
    adjust = f"/v1/admin/accounts/{account}/adjustments"
    r = client.post(adjust, json={"seconds": 120, "reason": "admin grant",
                                  "idempotency_key": "ticket-0042"})
    assert_problem(r, 422, "idempotency-key-reused")  # a grant's key is not an adjustment's
    down = {"seconds": -30, "reason": "clawback", "idempotency_key": "adj-0042"}
    assert client.post(adjust, json=down).status_code == 201
    again = client.post(adjust, json=down)
    assert again.status_code == 200
    assert again.json() == {"amount_ms": -30_000, "replayed": True, "unrecovered_ms": 0}
    assert_problem(client.post(adjust, json={**down, "seconds": -60}), 422,
                   "idempotency-key-reused")
    assert gw.ledger.balance(account).spendable == 120_000 - 30_000
