"""Issue 10 end to end through the official SDKs: a USD-credits deployment charging provider list
prices (genai-prices) × markup for the tokens the upstream reported, and a token-balance
deployment charging tokens; both speak their unit on every surface (headers, 402, balance,
usage, events, grants, catalog)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import ROUND_CEILING, Decimal
from pathlib import Path

import anthropic
import genai_prices
import httpx
import openai
import pytest

from gateway.cli import main as gateway_main
from tests.e2e.helpers import assert_problem, auth, chat_body, post, wait_for_usage
from tests.fakes.upstream import prompt_tokens_for
from tests.support import RunningGateway, start_gateway

HERE = Path(__file__).parent
USD_POLICY = HERE / "policies_usd.yaml"
TOKENS_POLICY = HERE / "policies_tokens.yaml"
ADMIN = "b" * 40
PINNED_PRICE_DATA = "0.2.3"  # the genai-prices version these expectations were checked with


@pytest.fixture
def usd(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[RunningGateway]:
    gw = start_gateway(tmp_path, {**upstream_env, "GATEWAY_ADMIN_TOKEN": ADMIN}, [USD_POLICY])
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def tokens(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[RunningGateway]:
    gw = start_gateway(tmp_path, {**upstream_env, "GATEWAY_ADMIN_TOKEN": ADMIN},
                       [TOKENS_POLICY])
    try:
        yield gw
    finally:
        gw.stop()


def list_price_micros(model: str, provider: str, input_tokens: int, output_tokens: int,
                      markup_percent: int = 25) -> int:
    """The expected charge, computed with the library itself: list price × (1 + markup),
    rounded up to the micro-USD."""
    calc = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=input_tokens, output_tokens=output_tokens), model,
        provider_id=provider)
    usd = calc.total_price * (100 + markup_percent) / 100
    return int((usd * 1_000_000).to_integral_value(rounding=ROUND_CEILING))


def test_the_price_data_is_the_pinned_version() -> None:
    assert genai_prices.__version__ == PINNED_PRICE_DATA


# ---- USD credits -----------------------------------------------------------------------------


def test_usd_chat_charges_list_price_times_markup_for_the_reported_tokens(usd, upstream):
    account, key = usd.ledger.funded(5_000_000)  # 5.00 USD
    body = chat_body("What is the capital of France? Answer briefly.", max_tokens=11,
                     model="gpt-4o-mini")
    with openai.OpenAI(base_url=usd.url + "/v1", api_key=key, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(**body)
        completion = raw.parse()
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens == prompt_tokens_for(body)
    expected = list_price_micros("gpt-4o-mini", "openai", usage.prompt_tokens,
                                 usage.completion_tokens)
    assert expected > 0
    assert raw.headers["x-gateway-unit"] == "USD"
    assert Decimal(raw.headers["x-gateway-charged"]) * 1_000_000 == expected
    assert Decimal(raw.headers["x-gateway-remaining"]) * 1_000_000 == 5_000_000 - expected
    assert "x-gateway-charged-ms" not in raw.headers
    [record] = wait_for_usage(usd.ledger, account)
    assert record["charged"] == expected
    assert usd.ledger.balance(account).available == 5_000_000 - expected


def test_usd_stream_and_anthropic_are_priced_at_their_providers(usd, upstream):
    account, key = usd.ledger.funded(5_000_000)
    with anthropic.Anthropic(base_url=usd.url, api_key=key, max_retries=0) as client:
        message = client.messages.create(
            model="claude-3-5-haiku-latest", max_tokens=9,
            messages=[{"role": "user", "content": "Stream a few words"}])
    expected = list_price_micros("claude-3-5-haiku-latest", "anthropic",
                                 message.usage.input_tokens, message.usage.output_tokens)
    with openai.OpenAI(base_url=usd.url + "/v1", api_key=key, max_retries=0) as client:
        body = chat_body("stream please", max_tokens=6, model="gpt-4o")
        chunks = list(client.chat.completions.create(**body, stream=True,
                                                     stream_options={"include_usage": True}))
    [usage] = [c.usage for c in chunks if c.usage is not None]
    expected += list_price_micros("gpt-4o", "openai", usage.prompt_tokens,
                                  usage.completion_tokens)
    records = wait_for_usage(usd.ledger, account, 2)
    assert sum(r["charged"] for r in records) == expected
    assert usd.ledger.balance(account).available == 5_000_000 - expected


def test_usd_explicit_model_prices_override_provider_prices(usd, upstream):
    _, key = usd.ledger.funded(1_000_000)
    body = chat_body("house", max_tokens=5, model="house-model")
    resp = post(usd, "/v1/chat/completions", key, body)
    assert resp.status_code == 200
    prompt = prompt_tokens_for(body)
    # 1.00 USD / 1M input tokens = 1 micro-USD per token; 2.00 USD / 1M output = 2 per token
    assert int(Decimal(resp.headers["x-gateway-charged"]) * 1_000_000) == prompt + 2 * 5


def test_a_model_the_price_source_does_not_know_is_denied_never_free(usd, upstream):
    account, key = usd.ledger.funded(1_000_000)
    before = len(upstream.requests.snapshot())
    resp = post(usd, "/v1/chat/completions", key, chat_body(model="gpt-nonexistent-model"))
    assert_problem(resp, 400, "unpriced-model")
    assert len(upstream.requests.snapshot()) == before
    assert usd.ledger.balance(account).available == 1_000_000


def test_usd_402_names_credits_balance_required_and_suggests_a_package(usd, upstream):
    _, key = usd.ledger.funded(10)  # 0.00001 USD
    resp = post(usd, "/v1/chat/completions", key, chat_body(model="gpt-4o", max_tokens=4000))
    doc = assert_problem(resp, 402, "insufficient-credits")
    assert doc["error"] == "INSUFFICIENT_CREDITS" and doc["unit"] == "USD"
    assert doc["balance_micros"] == 10 and doc["balance"] == 0.00001
    assert doc["required_micros"] > 10
    assert Decimal(str(doc["required"])) * 1_000_000 == doc["required_micros"]
    assert doc["breakdown"]["paid_micros"] + doc["breakdown"]["bonus_daily_micros"] == 10
    assert doc["suggestions"][0] == {"type": "package", "key": "ten", "credits": 10,
                                     "credits_micros": 10_000_000}
    assert doc["resume_token"] and "balance_seconds" not in doc


def test_usd_surfaces_balance_usage_events_catalog_and_grants(usd, upstream, monkeypatch):
    with httpx.Client(base_url=usd.url, headers=auth(ADMIN), timeout=10) as admin:
        _usd_surfaces(usd, admin, monkeypatch)


def _usd_surfaces(usd: RunningGateway, admin: httpx.Client, monkeypatch) -> None:
    account = admin.post("/v1/admin/accounts", json={"plan": "payg"}).json()["account_id"]
    key = admin.post(f"/v1/admin/accounts/{account}/keys").json()["key"]
    granted = admin.post(f"/v1/admin/accounts/{account}/grants",
                         json={"amount": "2.50", "idempotency_key": "ticket-0001"})
    assert granted.status_code == 201, granted.text
    assert granted.json()["amount_micros"] == 2_500_000 and granted.json()["unit"] == "USD"
    wrong = admin.post(f"/v1/admin/accounts/{account}/grants",
                       json={"minutes": 3, "idempotency_key": "ticket-0002"})
    assert_problem(wrong, 400, "bad-request")
    monkeypatch.setenv("GATEWAY_DATABASE_URL", usd.settings.database_url)
    monkeypatch.setenv("GATEWAY_POLICY_PATH", str(USD_POLICY))
    assert gateway_main(["grant", account, "--amount", "5.00"]) == 0
    assert gateway_main(["grant", account, "--minutes", "5"]) == 2
    assert gateway_main(["grant", account, "--amount", "0.0000001"]) == 2
    assert post(usd, "/v1/chat/completions", key, chat_body(model="gpt-4o-mini")).status_code \
        == 200
    [record] = wait_for_usage(usd.ledger, account)
    balance = httpx.get(f"{usd.url}/v1/billing/balance/{account}", headers=auth(key)).json()
    assert balance["unit"] == "USD"
    assert balance["totals"]["available_micros"] == 7_500_000 - record["charged"]
    assert balance["totals"]["total_micros"] == sum(
        b["amount_micros"] for b in balance["buckets"]["paid"] + balance["buckets"]["daily"])
    usage = httpx.get(f"{usd.url}/v1/billing/usage/{account}", headers=auth(key)).json()
    assert usage["unit"] == "USD" and usage["total_micros"] == record["charged"]
    events = httpx.get(f"{usd.url}/v1/billing/events/{account}", headers=auth(key)).json()
    assert {e["unit"] for e in events["events"]} == {"USD"}
    assert sorted(e["amount_micros"] for e in events["events"]) == sorted(
        [2_500_000, 5_000_000, -record["charged"]])
    catalog = httpx.get(f"{usd.url}/v1/billing/catalog").json()
    assert [(p["key"], p["credits"], p["unit"]) for p in catalog["packages"]] == [
        ("ten", 10, "USD"), ("fifty", 50, "USD")]
    assert catalog["subscriptions"][0]["credits"] == 20
    preflight = httpx.post(f"{usd.url}/v1/billing/check-sufficient-batch", headers=auth(key),
                           json={"operations": [{"operation": "image"},
                                                {"operation": "chat", "estimate": "100"}]})
    first, second = preflight.json()
    assert first["ok"] and first["estimate_micros"] == 40_000 and first["unit"] == "USD"
    assert not second["ok"] and second["suggestions"][0]["key"] == "fifty"


# ---- tokens ---------------------------------------------------------------------------------


def test_tokens_deployment_charges_reported_tokens_one_for_one(tokens, upstream):
    account, key = tokens.ledger.funded(100_000)
    with anthropic.Anthropic(base_url=tokens.url, api_key=key, max_retries=0) as client:
        raw = client.messages.with_raw_response.create(
            model="claude-anything", max_tokens=12,
            messages=[{"role": "user", "content": "count my tokens"}])
        message = raw.parse()
    spent = message.usage.input_tokens + message.usage.output_tokens
    assert raw.headers["x-gateway-unit"] == "tokens"
    assert int(raw.headers["x-gateway-charged"]) == spent
    assert int(raw.headers["x-gateway-remaining"]) == 100_000 - spent
    assert tokens.ledger.balance(account).available == 100_000 - spent


def test_tokens_deployment_weights_a_model_the_policy_weights(tokens, upstream):
    account, key = tokens.ledger.funded(100_000)
    with openai.OpenAI(base_url=tokens.url + "/v1", api_key=key, max_retries=0) as client:
        completion = client.chat.completions.create(**chat_body("weigh me", max_tokens=10,
                                                                model="gpt-big-1"))
    assert completion.usage is not None
    expected = completion.usage.prompt_tokens + 4 * completion.usage.completion_tokens
    [record] = wait_for_usage(tokens.ledger, account)
    assert record["charged"] == expected


def test_tokens_402_and_grant(tokens, upstream, monkeypatch):
    account, key = tokens.ledger.funded(50)
    resp = post(tokens, "/v1/messages", key,
                {"model": "claude-x", "max_tokens": 500,
                 "messages": [{"role": "user", "content": "hi"}]},
                headers={"anthropic-version": "2023-06-01"})
    doc = assert_problem(resp, 402, "insufficient-tokens")
    assert doc["error"] == "INSUFFICIENT_TOKENS" and doc["unit"] == "tokens"
    assert doc["balance"] == 50 and doc["required"] > 50 and "balance_micros" not in doc
    assert doc["suggestions"][0] == {"type": "package", "key": "million", "tokens": 1_000_000}
    monkeypatch.setenv("GATEWAY_DATABASE_URL", tokens.settings.database_url)
    monkeypatch.setenv("GATEWAY_POLICY_PATH", str(TOKENS_POLICY))
    assert gateway_main(["grant", account, "--tokens", "1000"]) == 0
    assert gateway_main(["grant", account, "--amount", "1.00"]) == 2
    assert tokens.ledger.balance(account).available == 1050
    balance = httpx.get(f"{tokens.url}/v1/billing/balance/{account}", headers=auth(key)).json()
    assert balance["unit"] == "tokens" and balance["totals"]["available"] == 1050
