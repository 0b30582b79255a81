"""SPEC §7: the 402 problem document and the resume-token retry contract, end to end."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import anthropic
import httpx
import openai

from tests.e2e.helpers import (
    REQUEST_ID_RE,
    TOKEN_RE,
    assert_consistent,
    assert_nothing_written,
    assert_problem,
    chat_body,
    encode,
    estimate_for,
    post,
    price,
    snapshot,
)

CHAT = "/v1/chat/completions"
SPEC_FIELDS = {
    "type", "title", "status", "detail", "instance", "error", "http_status", "balance_seconds",
    "required_seconds", "breakdown_seconds", "suggestions", "catalog_version", "resume_token",
    "resume_expires_at",
    "limit_source",  # issue 10: what refused (account, key or end_user)
}
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def ceil_s(units: int) -> int:
    return -(-units // 1000)


def big_request(max_tokens: int = 15_000, text: str = "please write a long essay") -> bytes:
    """A chat request whose hold estimate is about 2 × max_tokens units."""
    return encode(chat_body(text, max_tokens=max_tokens))


def blocked(gateway, key: str, raw: bytes, token: str | None = None) -> tuple[httpx.Response,
                                                                              dict]:
    headers = {"x-resume-token": token} if token else None
    resp = post(gateway, CHAT, key, raw, headers)
    return resp, assert_problem(resp, 402, "insufficient-ai-time")


# ---- the document -------------------------------------------------------------------------


def test_a_drained_balance_gets_402_with_floor_balance_and_ceil_required(gateway, upstream):
    account, key = gateway.ledger.funded(3_000)
    raw = encode(chat_body("drain me", max_tokens=200))
    est = estimate_for(raw, 200)
    statuses = []
    for _ in range(20):
        resp = post(gateway, CHAT, key, raw)
        statuses.append(resp.status_code)
        if resp.status_code == 402:
            break
    assert statuses[-1] == 402 and set(statuses[:-1]) == {200}, statuses
    available = gateway.ledger.balance(account).available
    assert 0 <= available < est
    doc = resp.json()
    assert doc["balance_seconds"] == available // 1000
    assert doc["required_seconds"] == ceil_s(est)
    assert_consistent(gateway.ledger, account)


def test_402_body_and_headers_match_the_spec_exactly(gateway, upstream):
    account, key = gateway.ledger.funded(12_500)
    raw = big_request(15_000)
    est = estimate_for(raw, 15_000)
    before = snapshot(gateway, upstream, account)
    resp, doc = blocked(gateway, key, raw)
    assert_nothing_written(gateway, upstream, account, before)

    assert set(doc) == SPEC_FIELDS, set(doc) ^ SPEC_FIELDS
    assert doc["type"].endswith("/problems/insufficient-ai-time")
    assert doc["title"] == "Insufficient AI time"
    assert doc["status"] == 402 and doc["http_status"] == 402
    assert doc["error"] == "INSUFFICIENT_AI_TIME"
    assert doc["limit_source"] == "account"
    assert isinstance(doc["detail"], str)
    assert str(ceil_s(est)) in doc["detail"] and "12" in doc["detail"]
    instance = doc["instance"]
    assert instance.startswith("urn:op:") and REQUEST_ID_RE.match(instance[len("urn:op:"):])
    assert instance == "urn:op:" + resp.headers["x-request-id"]
    for name in ("balance_seconds", "required_seconds"):
        assert type(doc[name]) is int
    assert doc["balance_seconds"] == 12
    assert doc["required_seconds"] == ceil_s(est)
    assert doc["breakdown_seconds"] == {"bonus_daily": 0, "paid": 12}
    assert all(type(v) is int for v in doc["breakdown_seconds"].values())
    assert doc["suggestions"] == [{"type": "package", "key": "mini", "minutes": 60},
                                  {"type": "upgrade", "plan": "pro"}]
    assert doc["catalog_version"] == "2025-09-01"
    assert TOKEN_RE.match(doc["resume_token"])
    assert RFC3339_Z.match(doc["resume_expires_at"])
    expires = datetime.strptime(doc["resume_expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=UTC)
    assert abs(expires.timestamp() - time.time() - 3600) < 60

    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["cache-control"] == "no-store"
    assert resp.headers["x-gateway-operation"] == "chat"
    assert "x-gateway-charged-ms" not in resp.headers


def test_openai_sdk_raises_api_status_error_402_and_nothing_is_written(gateway, upstream):
    account, key = gateway.ledger.funded(500)
    before = snapshot(gateway, upstream, account)
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as client:
        try:
            client.chat.completions.create(**chat_body("hi", max_tokens=1000))
        except openai.APIStatusError as exc:
            error = exc
        else:
            raise AssertionError("no 402")
    assert error.status_code == 402
    assert error.response.headers["content-type"] == "application/problem+json"
    doc = error.response.json()
    assert doc["error"] == "INSUFFICIENT_AI_TIME"
    assert doc["limit_source"] == "account"
    assert TOKEN_RE.match(doc["resume_token"])
    assert_nothing_written(gateway, upstream, account, before)
    assert gateway.ledger.usage(account) == []
    assert gateway.ledger.balance(account).available == 500


def test_anthropic_sdk_raises_api_status_error_402(gateway, upstream):
    account, key = gateway.ledger.funded(100)
    before = snapshot(gateway, upstream, account)
    with anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0) as client:
        try:
            client.messages.create(model="claude-fake", max_tokens=500,
                                   messages=[{"role": "user", "content": "hi"}])
        except anthropic.APIStatusError as exc:
            error = exc
        else:
            raise AssertionError("no 402")
    assert error.status_code == 402
    assert error.response.json()["instance"].startswith("urn:op:req_")
    assert error.response.headers["x-gateway-operation"] == "messages"
    assert_nothing_written(gateway, upstream, account, before)


def test_free_plan_breakdown_shows_daily_bonus(gateway, upstream):
    account = gateway.ledger.account("free")
    key = gateway.ledger.key(account)
    raw = big_request(1_400_000)  # estimate > 45 min = daily 15 + welcome 30
    est = estimate_for(raw, 1_400_000)
    assert est > 2_700_000
    _, doc = blocked(gateway, key, raw)
    assert doc["balance_seconds"] == 2_700
    assert doc["breakdown_seconds"] == {"bonus_daily": 900, "paid": 1_800}
    assert doc["required_seconds"] == ceil_s(est)
    assert doc["suggestions"][0] == {"type": "package", "key": "mini", "minutes": 60}
    assert {"type": "upgrade", "plan": "pro"} in doc["suggestions"]
    assert upstream.requests.snapshot() == []
    assert gateway.ledger.usage(account) == []


# ---- retry semantics ----------------------------------------------------------------------


def test_still_short_retry_gets_402_again_with_the_same_token(gateway, upstream):
    account, key = gateway.ledger.funded(1_000)
    raw = big_request(15_000)
    _first, doc = blocked(gateway, key, raw)
    token = doc["resume_token"]
    before = snapshot(gateway, upstream, account)
    _again, doc2 = blocked(gateway, key, raw, token)
    assert doc2["resume_token"] == token
    assert doc2["resume_expires_at"] == doc["resume_expires_at"]
    assert doc2["instance"] == doc["instance"]  # the same blocked operation
    assert_nothing_written(gateway, upstream, account, before)
    # a retry without the token is a new operation with a new token
    _, doc3 = blocked(gateway, key, raw)
    assert doc3["resume_token"] != token
    assert doc3["instance"] != doc["instance"]


def test_after_a_grant_the_retry_is_admitted_and_consumes_the_token(gateway, upstream):
    account, key = gateway.ledger.funded(1_000)
    body = chat_body("please write a long essay", max_tokens=15_000)
    raw = encode(body)
    _, doc = blocked(gateway, key, raw)
    token = doc["resume_token"]
    gateway.ledger.grant(account, 100_000)
    ok = post(gateway, CHAT, key, raw, {"x-resume-token": token})
    assert ok.status_code == 200, ok.text
    assert ok.headers["x-resume-token-status"] == "consumed"
    charged = int(ok.headers["x-gateway-charged-ms"])
    assert charged == price(body, 200)  # the fake caps output at 200 tokens
    assert gateway.ledger.balance(account).available == 101_000 - charged
    forwarded = upstream.requests.snapshot()
    assert len(forwarded) == 1
    assert "x-resume-token" not in forwarded[0]["headers"]

    # the same token on the same request again: proceeds (enough balance), not admitted twice
    replay = post(gateway, CHAT, key, raw, {"x-resume-token": token})
    assert replay.status_code == 200
    assert replay.headers["x-resume-token-status"] == "invalid"
    assert len(gateway.ledger.usage(account)) == 2
    assert_consistent(gateway.ledger, account)


def test_token_bound_to_another_request_gets_422_and_writes_nothing(gateway, upstream):
    account, key = gateway.ledger.funded(1_000)
    raw = big_request(15_000)
    _, doc = blocked(gateway, key, raw)
    token = doc["resume_token"]
    gateway.ledger.grant(account, 100_000)
    before = snapshot(gateway, upstream, account)
    other = encode(chat_body("a different question", max_tokens=5))
    resp = post(gateway, CHAT, key, other, {"x-resume-token": token})
    problem = assert_problem(resp, 422, "resume-token-mismatch")
    assert problem["instance"].startswith("urn:op:req_")
    # same body on another route is another request too
    resp = post(gateway, "/v1/responses", key,
                encode({"model": "gpt-fake", "input": "x"}), {"x-resume-token": token})
    assert_problem(resp, 422, "resume-token-mismatch")
    assert_nothing_written(gateway, upstream, account, before)
    # the token is still good for the request it was issued for
    ok = post(gateway, CHAT, key, raw, {"x-resume-token": token})
    assert ok.status_code == 200
    assert ok.headers["x-resume-token-status"] == "consumed"


def test_malformed_token_gets_400_and_writes_nothing(gateway, upstream):
    account, key = gateway.ledger.funded(100_000)
    raw = encode(chat_body())
    before = snapshot(gateway, upstream, account)
    for bad in ("rt_short", "not-a-token", "rt_" + "!" * 22, "rt_" + "A" * 23,
                "RT_" + "A" * 22):
        resp = post(gateway, CHAT, key, raw, {"x-resume-token": bad})
        assert_problem(resp, 400, "malformed-resume-token")
    assert_nothing_written(gateway, upstream, account, before)


def test_unknown_or_another_accounts_token_proceeds_with_status_invalid(gateway, upstream):
    owner, owner_key = gateway.ledger.funded(1_000)
    raw = big_request(15_000)
    _, doc = blocked(gateway, owner_key, raw)
    token = doc["resume_token"]

    _stranger, stranger_key = gateway.ledger.funded(100_000)
    resp = post(gateway, CHAT, stranger_key, raw, {"x-resume-token": token})
    assert resp.status_code == 200
    assert resp.headers["x-resume-token-status"] == "invalid"

    unknown = "rt_" + "A" * 22
    resp = post(gateway, CHAT, stranger_key, raw, {"x-resume-token": unknown})
    assert resp.status_code == 200
    assert resp.headers["x-resume-token-status"] == "invalid"

    # an unknown token while still short: a 402 with a fresh token, nothing leaks
    _, doc2 = blocked(gateway, owner_key, raw, unknown)
    assert doc2["resume_token"] not in (unknown, token)

    # the stranger's use did not spend the owner's token
    gateway.ledger.grant(owner, 100_000)
    resp = post(gateway, CHAT, owner_key, raw, {"x-resume-token": token})
    assert resp.status_code == 200
    assert resp.headers["x-resume-token-status"] == "consumed"


def test_concurrent_retries_of_one_token_consume_it_exactly_once(gateway, upstream):
    account, key = gateway.ledger.funded(1_000)
    raw = big_request(15_000)
    _, doc = blocked(gateway, key, raw)
    token = doc["resume_token"]
    est = estimate_for(raw, 15_000)
    gateway.ledger.grant(account, 10 * est)
    barrier = threading.Barrier(10)

    def retry(_: int) -> httpx.Response:
        barrier.wait()
        return post(gateway, CHAT, key, raw, {"x-resume-token": token})

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(retry, range(10)))
    assert [r.status_code for r in results] == [200] * 10
    statuses = sorted(r.headers["x-resume-token-status"] for r in results)
    assert statuses == ["consumed"] + ["invalid"] * 9
    assert len(gateway.ledger.usage(account)) == 10
    assert_consistent(gateway.ledger, account)
