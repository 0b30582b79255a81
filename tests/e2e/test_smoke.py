"""The shortest end-to-end proof: an OpenAI SDK call through the gateway is metered exactly."""

from __future__ import annotations

import openai

from tests.fakes.upstream import prompt_tokens_for


def test_chat_completion_is_debited_by_reported_usage(gateway, upstream):
    account, key = gateway.ledger.funded(10_000)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    body = {"model": "gpt-fake", "messages": [{"role": "user", "content": "hello there"}],
            "max_tokens": 7}
    raw = client.chat.completions.with_raw_response.create(**body)
    completion = raw.parse()
    assert completion.usage.completion_tokens == 7
    expected = prompt_tokens_for(body) * 1 + 7 * 2
    assert int(raw.headers["x-gateway-charged-ms"]) == expected
    assert gateway.ledger.balance(account).available == 10_000 - expected
    forwarded = upstream.requests.snapshot()[-1]
    assert forwarded["headers"]["authorization"] == "Bearer sk-upstream-openai"
