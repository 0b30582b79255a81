"""Issue 10 items 3–5 end to end, on a real socket with the official SDKs: every call's provider
cost is genai-prices' price of the tokens the upstream reported, and the cost records and
summaries add up to the calls; key and end-user limits hold under 50 concurrent calls (never
exceeded, the refusals say which limit); provider cost is hidden from API keys unless the
policy exposes it; the admin statistics and cost summary count the same calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from policies.provider_prices import TokenUsage, quote
from tests.e2e.helpers import auth, chat_body
from tests.support import RunningGateway, start_gateway

TOKEN = "admin-token-for-costs-" + "x" * 20
POLICY = Path(__file__).with_name("policies.yaml")
FUNDS = 10_000_000


@pytest.fixture
def costs_gw(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[RunningGateway]:
    """The test policy with real model names priced, provider cost exposed to API keys and
    an end-user limit of 0.3 s per UTC day."""
    text = POLICY.read_text()
    text = text.replace('{ "gpt-fake*": { input: 1000000, output: 2000000 } }',
                        '{ "gpt-fake*": { input: 1000000, output: 2000000 },'
                        ' "gpt-4o-mini*": { input: 1000000, output: 2000000 } }')
    text = text.replace('{ "claude-fake*": { input: 1000000, output: 2000000 } }',
                        '{ "claude-sonnet*": { input: 1000000, output: 2000000 } }')
    text += "\nexpose_provider_cost: true\nend_user_limits: { day: 0.3 }\n"
    path = tmp_path / "costs.yaml"
    path.write_text(text)
    gw = start_gateway(tmp_path, {**upstream_env, "GATEWAY_ADMIN_TOKEN": TOKEN}, [path])
    try:
        yield gw
    finally:
        gw.stop()


ADMIN = {"authorization": f"Bearer {TOKEN}"}


def get(gw: RunningGateway, path: str, headers: dict[str, str], **params: Any) -> Any:
    resp = httpx.get(gw.url + path, headers=headers, params=params, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_cost_records_and_summaries_equal_the_sum_of_the_calls(costs_gw: RunningGateway):
    account, key = costs_gw.ledger.funded(FUNDS)
    with openai.OpenAI(base_url=costs_gw.url + "/v1", api_key=key, max_retries=0) as oa:
        for text in ("one", "two words"):
            oa.chat.completions.create(**chat_body(text, model="gpt-4o-mini"), user="alice")
        stream = oa.chat.completions.create(**chat_body("streamed", model="gpt-4o-mini"),
                                            stream=True, user="alice")
        for _ in stream:
            pass
    with anthropic.Anthropic(base_url=costs_gw.url, api_key=key, max_retries=0) as an:
        for text in ("bonjour", "hallo welt"):
            an.messages.create(model="claude-sonnet-4-6", max_tokens=9,
                               messages=[{"role": "user", "content": text}],
                               metadata={"user_id": "bob"})

    page = get(costs_gw, f"/v1/billing/costs/{account}", auth(key))
    records = page["records"]
    assert len(records) == 5 and page["next_cursor"] is None
    for r in records:
        provider = "anthropic" if r["model"].startswith("claude") else "openai"
        expected = quote(provider, r["model"], TokenUsage(
            input_tokens=r["prompt_tokens"], output_tokens=r["completion_tokens"]))
        assert r["provider"] == provider and r["billing_account_id"] == account
        assert r["total_cost_micros"] == expected.total_micros > 0
        assert r["total_cost"] == pytest.approx(expected.total_micros / 1e6, abs=1e-9)
        assert r["task_id"] == r["id"] and r["key_id"].startswith("key_")
        assert r["end_user"] == ("bob" if provider == "anthropic" else "alice")
        assert r["price_version"] == "0.2.3"

    summary = get(costs_gw, f"/v1/billing/costs/{account}/summary", auth(key))
    assert summary["scope_type"] == "account" and summary["record_count"] == 5
    assert summary["total_cost_micros"] == sum(r["total_cost_micros"] for r in records)
    assert summary["total_tokens"] == sum(r["total_tokens"] for r in records)
    assert {(b["provider"], b["model"], b["records"]) for b in summary["breakdown"]} == {
        ("openai", "gpt-4o-mini", 3), ("anthropic", "claude-sonnet-4-6", 2)}
    bob = get(costs_gw, f"/v1/billing/costs/{account}/summary", auth(key), end_user="bob")
    assert bob["scope_type"] == "end_user" and bob["record_count"] == 2
    assert bob["total_cost_micros"] == sum(r["total_cost_micros"] for r in records
                                           if r["end_user"] == "bob")

    charged = sum(u["charged"] for u in costs_gw.ledger.usage(account))
    admin = get(costs_gw, "/v1/admin/costs/summary", ADMIN, period="day")
    assert admin["unit"] == "s" and admin["charged_usd"] is None
    assert sum(g["charged_units"] for g in admin["by_model"]) == charged
    assert round(admin["provider_cost_usd"] * 1e6) == summary["total_cost_micros"]
    stats = get(costs_gw, "/v1/admin/stats/tokens", ADMIN, period="day")
    assert stats["totals"]["calls"] == 5 and stats["totals"]["charged_units"] == charged
    assert {(g["key"], g["calls"]) for g in stats["by_end_user"]} == {("alice", 3), ("bob", 2)}
    assert [g["calls"] for g in stats["by_key"]] == [5]
    daily = get(costs_gw, "/v1/admin/costs/daily", ADMIN, period="month")
    days = [d["day"] for d in daily["days"]]  # every day of the month so far, none skipped
    assert days[0] == daily["from"][:10] and len(days) == len(set(days))
    assert [date.fromisoformat(d).toordinal() for d in days] == list(range(
        date.fromisoformat(days[0]).toordinal(), date.fromisoformat(days[-1]).toordinal() + 1))
    assert sum(d["calls"] for d in daily["days"]) == daily["days"][-1]["calls"] == 5


async def _burst(gw: RunningGateway, key: str, n: int,
                 headers: dict[str, str] | None = None) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(*(
            client.post(gw.url + "/v1/chat/completions",
                        json=chat_body(f"call {i}", model="gpt-4o-mini"),
                        headers={**auth(key), **(headers or {})}) for i in range(n)))


def test_a_key_limit_holds_under_50_concurrent_calls(costs_gw: RunningGateway):
    account, _ = costs_gw.ledger.funded(FUNDS)
    created = httpx.post(f"{costs_gw.url}/v1/admin/accounts/{account}/keys", headers=ADMIN,
                         json={"limit_day": 0.2}, timeout=10)
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["key_id"]
    replies = asyncio.run(_burst(costs_gw, key, 50))
    ok = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code == 402]
    assert len(ok) + len(refused) == 50 and ok and refused
    assert {r.json()["limit_source"] for r in refused} == {"key"}
    assert all(r.json()["suggestions"] == [] for r in refused)  # buying credit would not help
    usage = [u for u in costs_gw.ledger.usage(account) if u["key_id"] == key_id]
    assert sum(u["charged"] for u in usage) <= 200  # 0.2 s, never exceeded
    # raised later: the same key is admitted again
    patched = httpx.patch(f"{costs_gw.url}/v1/admin/keys/{key_id}", headers=ADMIN,
                          json={"limit_day": 100}, timeout=10)
    assert patched.status_code == 200 and patched.json()["limit_day"] == 100
    assert asyncio.run(_burst(costs_gw, key, 1))[0].status_code == 200


def test_an_end_user_limit_holds_under_50_concurrent_calls(costs_gw: RunningGateway):
    account, key = costs_gw.ledger.funded(FUNDS)
    replies = asyncio.run(_burst(costs_gw, key, 50, {"x-gateway-end-user": "carol"}))
    refused = [r for r in replies if r.status_code == 402]
    assert refused and {r.json()["limit_source"] for r in refused} == {"end_user"}
    usage = [u for u in costs_gw.ledger.usage(account) if u["end_user"] == "carol"]
    assert usage and sum(u["charged"] for u in usage) <= 300  # 0.3 s per end user and day
    # another end user of the same account is not limited by carol's spend
    other = asyncio.run(_burst(costs_gw, key, 1, {"x-gateway-end-user": "dave"}))
    assert other[0].status_code == 200


def test_provider_cost_is_hidden_from_api_keys_unless_exposed(tmp_path: Path,
                                                              upstream_env: dict[str, str]):
    gw = start_gateway(tmp_path, {**upstream_env, "GATEWAY_ADMIN_TOKEN": TOKEN})
    try:
        account, key = gw.ledger.funded(FUNDS)
        hidden = httpx.get(f"{gw.url}/v1/billing/costs/{account}", headers=auth(key))
        assert hidden.status_code == 404
        assert get(gw, f"/v1/billing/costs/{account}/summary", ADMIN)["record_count"] == 0
        too_long = httpx.post(gw.url + "/v1/chat/completions", headers=auth(key),
                              json=chat_body("x", user="u" * 300))
        assert too_long.status_code == 400
    finally:
        gw.stop()
